"""Reading pixiv's illust object: placeholders, fields and the files to fetch."""

from __future__ import annotations

from pbe_fs import illust
from tests.fakepixiv import Work

BASE = "https://i.pximg.net"
ARTIST = (1, "a", "a")


def test_live_work_is_not_a_placeholder() -> None:
    assert illust.placeholder_reason(Work(1, "t", ARTIST).to_json(BASE)) is None


def test_deleted_work_is_a_placeholder() -> None:
    raw = Work(1, "t", ARTIST, state="deleted").to_json(BASE)
    assert illust.placeholder_reason(raw) == "limit_unknown"


def test_every_limit_url_is_a_placeholder() -> None:
    for kind in ("limit_sanity_level", "limit_unviewable", "limit_mypixiv", "limit_r18", "limit_r18g"):
        raw = Work(1, "t", ARTIST, state=kind).to_json(BASE)
        assert raw["visible"] is True
        assert illust.placeholder_reason(raw) == kind


def test_invisible_or_userless_is_a_placeholder() -> None:
    raw = Work(1, "t", ARTIST).to_json(BASE)
    assert illust.placeholder_reason({**raw, "visible": False}) == "invisible"
    assert illust.placeholder_reason({**raw, "user": {"id": 0, "name": ""}}) == "no_user"
    assert illust.placeholder_reason({**raw, "user": None}) == "no_user"


def test_single_page_files() -> None:
    raw = Work(93012345, "t", ARTIST, ext="png").to_json(BASE)
    specs = illust.file_specs(raw, ["original", "large", "square_medium"])
    assert [(s.path, s.role, s.page) for s in specs] == [
        ("93012345_p0.png", "original", 0),
        ("large/93012345_p0_master1200.jpg", "large", 0),
        ("square_medium/93012345_p0_square1200.jpg", "square_medium", 0),
    ]


def test_manga_files_every_page_every_size() -> None:
    raw = Work(7, "t", ARTIST, pages=3).to_json(BASE)
    specs = illust.file_specs(raw, ["original", "large", "medium", "square_medium"])
    assert len(specs) == 12
    assert [s.path for s in specs if s.role == "original"] == ["7_p0.jpg", "7_p1.jpg", "7_p2.jpg"]
    assert len({s.path for s in specs}) == 12


def test_ugoira_frames_and_fallback_zip() -> None:
    work = Work(9, "t", ARTIST, type="ugoira", frames=[100, 60])
    raw, meta = work.to_json(BASE), work.ugoira_metadata(BASE)["ugoira_metadata"]
    frames = illust.ugoira_frame_specs(raw, len(illust.ugoira_frames(meta)))
    assert [s.path for s in frames] == ["9_ugoira0.jpg", "9_ugoira1.jpg"]
    zspec = illust.ugoira_zip_spec(meta)
    assert zspec is not None and zspec.path == "9_ugoira1920x1080.zip" and zspec.kind == "zip"
    assert illust.ugoira_frames(meta) == [{"file": "000000.jpg", "delay": 100}, {"file": "000001.jpg", "delay": 60}]


def test_fields_tolerate_nulls() -> None:
    f = illust.fields({"id": 5, "title": None, "user": None, "tags": [None, {"name": "x", "translated_name": None}],
                       "page_count": None})
    assert f["title"] == "" and f["artist_id"] == 0 and f["page_count"] == 1 and f["tags"] == [("x", None)]
