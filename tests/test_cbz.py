"""ID.cbz with its ComicInfo.xml, and folder.jpg, through a real FUSE mount
and real WebDAV of an archive synced from the stand-in."""

from __future__ import annotations

import io
import os
import re
import shutil
import sqlite3
import subprocess
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from pbe_fs import config as config_mod
from pbe_fs.tree import Tree
from tests.conftest import Mount, http_request, pbe, write_config
from tests.fakepixiv import FakePixiv

needs_fuse = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse")

MANGA, UGOIRA, R18, R18G, BELL = 93012350, 93012346, 93012351, 93012352, 93012359

# -- ComicInfo 2.0, as the Anansi schema (ComicInfo.xsd v2.0) states it ------------------------------------
SEQUENCE = ("Title", "Series", "Number", "Count", "Volume", "AlternateSeries", "AlternateNumber", "AlternateCount",
            "Summary", "Notes", "Year", "Month", "Day", "Writer", "Penciller", "Inker", "Colorist", "Letterer",
            "CoverArtist", "Editor", "Publisher", "Imprint", "Genre", "Web", "PageCount", "LanguageISO", "Format",
            "BlackAndWhite", "Manga", "Characters", "Teams", "Locations", "ScanInformation", "StoryArc",
            "SeriesGroup", "AgeRating", "Pages", "CommunityRating")
INTS = {"Count", "Volume", "AlternateCount", "Year", "Month", "Day", "PageCount"}
ENUMS = {
    "BlackAndWhite": {"Unknown", "No", "Yes"},
    "Manga": {"Unknown", "No", "Yes", "YesAndRightToLeft"},
    "AgeRating": {"Unknown", "Adults Only 18+", "Early Childhood", "Everyone", "Everyone 10+", "G", "Kids to Adults",
                  "M", "MA15+", "Mature 17+", "PG", "R18+", "Rating Pending", "Teen", "X18+"},
}
PAGE_TYPES = {"FrontCover", "InnerCover", "Roundup", "Story", "Advertisement", "Editorial", "Letters", "Preview",
              "BackCover", "Other", "Deleted"}
PAGE_ATTRS = {"Image": "int", "Type": "types", "DoublePage": "bool", "ImageSize": "long", "Key": "str",
              "Bookmark": "str", "ImageWidth": "int", "ImageHeight": "int"}
_INT = re.compile(r"^[+-]?\d+$")


def check_comicinfo(data: bytes) -> dict[str, str]:
    """Every rule of the 2.0 schema; the elements' text by name."""
    root = ET.fromstring(data)
    assert root.tag == "ComicInfo" and not root.text.strip()
    names = [child.tag for child in root]
    assert len(names) == len(set(names)), f"an element twice: {names}"
    assert all(n in SEQUENCE for n in names), names
    assert names == sorted(names, key=SEQUENCE.index), f"out of the schema's order: {names}"
    values = {}
    for child in root:
        if child.tag == "Pages":
            continue
        assert len(child) == 0 and not child.attrib, child.tag
        text = child.text or ""
        if child.tag in INTS:
            assert _INT.match(text) and -2**31 <= int(text) < 2**31, (child.tag, text)
        if child.tag in ENUMS:
            assert text in ENUMS[child.tag], (child.tag, text)
        if child.tag == "CommunityRating":
            assert 0 <= float(text) <= 5
        values[child.tag] = text
    for page in root.findall("Pages/Page"):
        assert "Image" in page.attrib
        for attr, value in page.attrib.items():
            kind = PAGE_ATTRS[attr]
            if kind in ("int", "long"):
                assert _INT.match(value), (attr, value)
            elif kind == "bool":
                assert value in ("true", "false", "1", "0")
            elif kind == "types":
                assert set(value.split()) <= PAGE_TYPES
    assert all(child.tag == "Page" for child in root.findall("Pages/*"))
    return values


def comicinfo_of(data: bytes) -> tuple[dict[str, str], list[dict[str, str]]]:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        xml = zf.read("ComicInfo.xml")
    return check_comicinfo(xml), [dict(p.attrib) for p in ET.fromstring(xml).findall("Pages/Page")]


def index_of(config: Path) -> sqlite3.Connection:
    db = sqlite3.connect(config.parent / "data/.pbe/index.sqlite3")
    db.row_factory = sqlite3.Row
    return db


@pytest.fixture(scope="module")
def mounted(synced, tmp_path_factory):
    config, _ = synced
    m = Mount(config, tmp_path_factory.mktemp("cbz") / "mnt")
    yield m
    m.stop()


def _books(mounted: Mount) -> list[Path]:
    """Every CBZ of every work, at the top and in each size folder."""
    found = []
    for aid in os.listdir(mounted.path("by-id")):
        for folder, _, files in os.walk(mounted.path("by-id", aid)):
            found += [Path(folder, n) for n in files if n.endswith(".cbz")]
    return found


@needs_fuse
def test_every_zip_has_a_cbz_with_the_same_pages_in_order(mounted: Mount) -> None:
    books = _books(mounted)
    assert len(books) > 40
    for book in books:
        data = book.read_bytes()
        assert len(data) == book.stat().st_size
        pages = (book.parent / book.name.replace(".cbz", ".zip")).read_bytes()
        with zipfile.ZipFile(io.BytesIO(data)) as cbz, zipfile.ZipFile(io.BytesIO(pages)) as plain:
            assert cbz.testzip() is None
            names = cbz.namelist()
            assert names[0] == "ComicInfo.xml"
            assert all(i.compress_type == zipfile.ZIP_STORED for i in cbz.infolist())
            images = names[1:]
            assert images == sorted(images), "readers sort by name: the name order must be the page order"
            assert [cbz.read(n) for n in images] == [plain.read(n) for n in plain.namelist()]
            width = max(3, len(str(len(images))))
            assert images == [f"{i + 1:0{width}d}{Path(n).suffix}" for i, n in enumerate(plain.namelist())]


@needs_fuse
def test_bsdtar_and_7z_read_the_manga_cbz(mounted: Mount, tmp_path: Path) -> None:
    book = mounted.path("by-id", str(MANGA), f"{MANGA}.cbz")
    listing = subprocess.run(["bsdtar", "-tf", str(book)], capture_output=True, text=True, check=True).stdout.split()
    assert listing == ["ComicInfo.xml"] + [f"{n:03d}.jpg" for n in range(1, 13)]
    subprocess.run(["bsdtar", "-xf", str(book), "-C", str(tmp_path)], check=True)
    originals = sorted(p for p in os.listdir(mounted.path("by-id", str(MANGA))) if p.endswith(".jpg") and "_p" in p)
    originals.sort(key=lambda n: int(re.search(r"_p(\d+)", n).group(1)))
    for n, name in enumerate(originals, 1):
        assert (tmp_path / f"{n:03d}.jpg").read_bytes() == mounted.path("by-id", str(MANGA), name).read_bytes()
    seven = shutil.which("7z") or shutil.which("7za")
    assert seven, "7z is a test dependency (.ci/run installs it)"
    tested = subprocess.run([seven, "t", str(book)], capture_output=True, text=True)
    assert tested.returncode == 0 and "Everything is Ok" in tested.stdout, tested.stdout + tested.stderr


@needs_fuse
def test_comicinfo_follows_the_schema_and_the_index(mounted: Mount, synced) -> None:
    config, fake = synced
    db = index_of(config)
    for book in _books(mounted):
        aid = int(book.name.split(".")[0])
        values, pages = comicinfo_of(book.read_bytes())
        work = db.execute("SELECT w.*, a.name AS artist FROM artworks w JOIN artists a ON a.id = w.artist_id "
                          "WHERE w.id = ?", (aid,)).fetchone()
        role = book.parent.name if book.parent.name in ("large", "medium", "square_medium") else "original"
        files = db.execute("SELECT * FROM files WHERE artwork_id = ? AND role = ? ORDER BY page, path",
                           (aid, role)).fetchall()
        assert values["Title"] == (work["title"] or str(aid)) or "\ufffd" in values["Title"]
        assert values["Writer"] == values["Penciller"] == work["artist"]
        assert (values["Year"], values["Month"], values["Day"]) == tuple(
            str(int(x)) for x in work["create_date"][:10].split("-"))
        assert values["Publisher"] == "pixiv" and values["Web"] == f"https://www.pixiv.net/artworks/{aid}"
        assert values["AgeRating"] == ("R18+" if work["x_restrict"] else "Everyone")
        assert values["Manga"] == ("YesAndRightToLeft" if work["type"] == "manga" else "No")
        assert int(values["PageCount"]) == len(files) == len(pages)
        tags = [t for row in db.execute("SELECT name, translated_name FROM tags WHERE artwork_id = ? ORDER BY position",
                                        (aid,)) for t in row if t]
        assert values["Genre"].split(", ") == list(dict.fromkeys(tags))
        for i, (page, f) in enumerate(zip(pages, files)):
            assert page["Image"] == str(i)
            assert (int(page["ImageSize"]), int(page["ImageWidth"]), int(page["ImageHeight"])) == (
                f["size"], f["width"], f["height"])
        assert pages[0].get("Type") == "FrontCover"
        assert "Number" not in values and "LanguageISO" not in values  # pixiv's app API says neither
        series = fake.work_json(aid).get("series")
        assert values["Series"] == (series["title"] if series else values["Title"])
        assert values["Summary"] == f"caption of {aid}"


@needs_fuse
def test_comicinfo_special_cases(mounted: Mount) -> None:
    manga, _ = comicinfo_of(mounted.path("by-id", str(MANGA), f"{MANGA}.cbz").read_bytes())
    assert manga["Series"] == "連載 & <series>" and manga["Title"] == "manga"
    assert manga["Manga"] == "YesAndRightToLeft" and manga["PageCount"] == "12"
    for aid in (R18, R18G):
        values, _ = comicinfo_of(mounted.path("by-id", str(aid), f"{aid}.cbz").read_bytes())
        assert values["AgeRating"] == "R18+"
    bell, _ = comicinfo_of(mounted.path("by-id", str(BELL), f"{BELL}.cbz").read_bytes())
    assert bell["Title"] == "\ufffdbell\ufffd\x7f"  # what XML 1.0 cannot hold is replaced, the rest kept
    first = mounted.path("by-id", "93012345", "93012345.cbz")
    values, _ = comicinfo_of(first.read_bytes())
    assert values["Genre"] == "風景, landscape, オリジナル"


@needs_fuse
def test_folder_jpg_is_the_first_square_page(mounted: Mount) -> None:
    for aid in os.listdir(mounted.path("by-id")):
        folder = mounted.path("by-id", aid)
        cover = folder / "folder.jpg"
        square = sorted(n for n in os.listdir(folder / "square_medium") if n.endswith(".jpg"))
        assert cover.read_bytes() == (folder / "square_medium" / square[0]).read_bytes()
        with Image.open(cover) as im:
            im.load()
            assert im.format == "JPEG" and im.width == im.height
    # an animation's cover is its first frame
    assert mounted.path("by-id", str(UGOIRA), "folder.jpg").read_bytes() == mounted.path(
        "by-id", str(UGOIRA), "square_medium", f"{UGOIRA}_p0_square1200.jpg").read_bytes()


def test_cbz_and_folder_jpg_over_webdav(server, mounted) -> None:
    path = f"/by-id/{MANGA}/{MANGA}.cbz"
    status, headers, body = http_request(server.url, "GET", path)
    assert status == 200 and headers["content-type"] == "application/vnd.comicbook+zip"
    assert body == mounted.path("by-id", str(MANGA), f"{MANGA}.cbz").read_bytes()
    assert int(headers["content-length"]) == len(body)
    # a retitle changes its ComicInfo.xml under the same name: browsers must ask again (ETag),
    # where a zip's bytes are fixed by its name and may be kept for a week
    assert headers["cache-control"] == "no-cache"
    status, _, _ = http_request(server.url, "GET", path, {"If-None-Match": headers["etag"]})
    assert status == 304  # the stored answer, with its no-cache, is used again
    zip_headers = http_request(server.url, "GET", f"/by-id/{MANGA}/{MANGA}.zip")[1]
    assert zip_headers["cache-control"].startswith("max-age=")
    status, headers, part = http_request(server.url, "GET", path, {"Range": "bytes=100-4099"})
    assert status == 206 and part == body[100:4100]
    status, _, listing = http_request(server.url, "PROPFIND", f"/by-id/{MANGA}/", {"Depth": "1"})
    assert status == 207
    sizes = {r.findtext("{DAV:}href"): r.findtext(".//{DAV:}getcontentlength") for r in ET.fromstring(listing)}
    assert sizes[path] == str(len(body))
    status, headers, cover = http_request(server.url, "GET", f"/by-id/{MANGA}/folder.jpg")
    assert status == 200 and headers["content-type"] == "image/jpeg"
    assert cover == mounted.path("by-id", str(MANGA), "folder.jpg").read_bytes()
    status, _, page = http_request(server.url, "GET", f"/by-id/{MANGA}/")  # the browser view's downloads
    assert status == 200 and f'href="{path}"'.encode() in page


def test_no_folder_jpg_when_only_originals_are_archived(tmp_path: Path, fake: FakePixiv) -> None:
    config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
    pbe(config, "sync", "--no-progress", check=True)
    tree = Tree(config_mod.load(config))
    try:
        names = [n for n, _ in tree.list(("by-id", str(MANGA))) or []]
        assert f"{MANGA}.cbz" in names and "folder.jpg" not in names
    finally:
        tree.close()


@needs_fuse
def test_a_new_title_reaches_the_mounted_cbz(mounted: Mount, synced) -> None:
    """The CBZ keeps the page cache, so the mount must drop it when a sync
    changes the metadata: the next open sees the new ComicInfo.xml, whole."""
    config, fake = synced
    aid = 93013003
    book = mounted.path("by-id", str(aid), f"{aid}.cbz")
    assert comicinfo_of(book.read_bytes())[0]["Title"] == "filler 3"
    fake.works[aid].title = "a much longer title than before, so the size changes"
    pbe(config, "sync", "--full", "--no-progress", check=True)
    deadline = time.monotonic() + 15
    while True:
        data = book.read_bytes()
        if comicinfo_of(data)[0]["Title"] != "filler 3":
            break
        assert time.monotonic() < deadline, "the mount kept the old CBZ"
        time.sleep(0.2)
    assert comicinfo_of(data)[0]["Title"] == "a much longer title than before, so the size changes"
    assert len(data) == book.stat().st_size
