"""Metadata that stays current, and a record of what changed (sync --full)."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from pbe_fs.metadata import changes, replaced_pages, tracked
from pbe_fs.sync import dated_name
from tests.conftest import Mount, pbe, write_config
from tests.fakepixiv import FakePixiv, Work

RETITLED, RETAGGED, RENAMED, RATED, AI, GROWN, REDRAWN, DELETED, SHRUNK = (
    98000001, 98000002, 98000003, 98000004, 98000005, 98000006, 98000007, 98000008, 98000009)


def test_changes_are_the_fields_a_person_notices() -> None:
    old = {"id": 1, "title": "a", "tags": [{"name": "x", "translated_name": None}], "user": {"id": 2, "name": "n"},
           "total_view": 5, "page_count": 1, "x_restrict": 0, "illust_ai_type": 1}
    assert changes(old, {**old, "total_view": 99, "total_bookmarks": 3}) == {}
    new = {**old, "title": "b", "user": {"id": 2, "name": "m"}, "illust_ai_type": 2}
    assert changes(old, new) == {"title": {"from": "a", "to": "b"}, "artist_name": {"from": "n", "to": "m"},
                                 "illust_ai_type": {"from": 1, "to": 2}}
    assert set(tracked(old)) == {"title", "caption", "tags", "artist_name", "artist_account", "series", "x_restrict",
                                 "illust_ai_type", "page_count"}
    assert dated_name("large/1_p0_master1200.jpg", "2026-11-25T10:00:00+00:00") == "large/1_p0_master1200.2026-11-25.jpg"
    single = {"meta_single_page": {"original_image_url": "http://h/img/2020/01/01/1_p0.png"}, "image_urls": {}}
    moved = {"meta_single_page": {"original_image_url": "http://h/img/2021/05/05/1_p0.png"}, "image_urls": {}}
    assert replaced_pages(single, moved, ["original"]) == {"1_p0.png": "http://h/img/2021/05/05/1_p0.png"}


def history(root: Path, aid: int) -> list[dict]:
    return json.loads((root / f"artworks/{aid}/pbe.json").read_text())["history"]


def test_sync_full_records_every_change_and_keeps_what_was_seen(tmp_path: Path) -> None:
    works = [(Work(RETITLED, "old title", (51, "Al", "al")), "public"),
             (Work(RETAGGED, "tagged", (51, "Al", "al"), tags=[("猫", "cat")]), "public"),
             (Work(RENAMED, "renamed artist", (52, "Bo", "bo")), "public"),
             (Work(RATED, "rated", (51, "Al", "al")), "public"),
             (Work(AI, "ai", (51, "Al", "al")), "public"),
             (Work(GROWN, "grown", (51, "Al", "al"), pages=2), "public"),
             (Work(REDRAWN, "redrawn", (51, "Al", "al")), "public"),
             (Work(DELETED, "deleted", (51, "Al", "al")), "public"),
             (Work(SHRUNK, "shrunk", (51, "Al", "al"), pages=3), "public")]
    with FakePixiv(works) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original", "medium"]})
        pbe(config, "sync", "--no-progress", check=True)
        root = tmp_path / "data"
        mount = Mount(config, tmp_path / "mnt", "--nsfw", "enabled")
        try:
            by_id = mount.path("by-id", str(RETITLED))
            held = open(by_id / f"{RETITLED}_p0.jpg", "rb")  # a file open across the change keeps reading
            old_bytes = (root / f"artworks/{REDRAWN}/{REDRAWN}_p0.jpg").read_bytes()
            fake.works[RETITLED].title = "new title"
            fake.works[RETAGGED].tags = [("猫", "cat"), ("犬", "dog")]
            fake.works[RENAMED].artist = (52, "Bo Renamed", "bo2")
            fake.works[RATED].x_restrict = 1
            fake.works[AI].ai_type = 2
            fake.works[GROWN].pages = 3
            fake.works[REDRAWN].revision, fake.works[REDRAWN].size = 1, (80, 60)
            fake.works[DELETED].state = "deleted"  # a placeholder is gone, never "changed"
            fake.works[SHRUNK].pages = 2
            fake.reset_counts()
            proc = pbe(config, "sync", "--full", "--no-progress")
            assert proc.returncode == 0, proc.stderr
            assert "8 changed" in proc.stderr and "1 gone" in proc.stderr, proc.stderr
            # history: one changed event each, old and new values
            assert history(root, RETITLED)[-1]["fields"] == {"title": {"from": "old title", "to": "new title"}}
            assert history(root, RETAGGED)[-1]["fields"]["tags"]["to"] == [["猫", "cat"], ["犬", "dog"]]
            assert history(root, RENAMED)[-1]["fields"].keys() == {"artist_name", "artist_account"}
            assert history(root, RATED)[-1]["fields"] == {"x_restrict": {"from": 0, "to": 1}}
            assert history(root, AI)[-1]["fields"] == {"illust_ai_type": {"from": 1, "to": 2}}
            assert history(root, GROWN)[-2]["fields"] == {"page_count": {"from": 2, "to": 3}}
            assert [h["event"] for h in history(root, DELETED)][-1] == "gone"
            shrunk = json.loads((root / f"artworks/{SHRUNK}/pbe.json").read_text())
            assert {f["path"] for f in shrunk["files"] if f.get("removed_on_pixiv")} == {
                f"{SHRUNK}_p2.jpg", f"medium/{SHRUNK}_p2_master1200.jpg"}  # kept, marked
            assert (root / f"artworks/{SHRUNK}/{SHRUNK}_p2.jpg").is_file()
            assert "changed" not in [h["event"] for h in history(root, DELETED)]
            # the old pixiv.json is kept as pixiv.<date>.json, the new one is current
            folder = root / f"artworks/{RETITLED}"
            versions = sorted(p.name for p in folder.glob("pixiv.*.json"))
            assert len(versions) == 1 and json.loads((folder / versions[0]).read_text())["title"] == "old title"
            assert json.loads((folder / "pixiv.json").read_text())["title"] == "new title"
            # the new page is downloaded; the replaced image is kept under a dated name, the new one fetched
            assert (root / f"artworks/{GROWN}/{GROWN}_p2.jpg").read_bytes() == fake.file_bytes_for(GROWN, 2)
            redrawn = root / f"artworks/{REDRAWN}"
            assert (redrawn / f"{REDRAWN}_p0.jpg").read_bytes() == fake.file_bytes_for(REDRAWN, 0)
            kept = [p for p in redrawn.glob(f"{REDRAWN}_p0.*.jpg")]
            assert len(kept) == 1 and kept[0].read_bytes() == old_bytes != fake.file_bytes_for(REDRAWN, 0)
            assert history(root, REDRAWN)[-1]["event"] == "changed" and "pages" in history(root, REDRAWN)[-1]
            assert fake.calls["image"] == 2 + 2  # the grown work's new page and the redrawn page, each in 2 sizes
            # the index and the views follow: the old name is gone, the id stays
            db = sqlite3.connect(root / ".pbe/index.sqlite3")
            assert db.execute("SELECT title FROM artworks WHERE id = ?", (RETITLED,)).fetchone()[0] == "new title"
            import time
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                names = os.listdir(mount.path("by-ingress"))
                if any(n.endswith(f"{RETITLED} new title") for n in names):
                    break
                time.sleep(0.2)
            assert any(n.endswith(f"{RETITLED} new title") for n in names)
            assert not any(n.endswith(f"{RETITLED} old title") for n in names)
            assert "Bo Renamed [52]" in os.listdir(mount.path("by-artist"))
            assert held.read() == fake.file_bytes_for(RETITLED, 0)
            held.close()
            meta = json.loads((mount.path("by-id", str(RETITLED), "meta.json")).read_text())
            assert any(h["event"] == "changed" for h in meta["history"])
            # changes/ tells what happened, by month; private/ and ai/ list their works
            month = [m for m in os.listdir(mount.path("changes"))][-1]
            entries = os.listdir(mount.path("changes", month))
            assert any(f" changed {RETITLED} new title" in n for n in entries)
            assert any(f" gone {DELETED} " in n for n in entries)
            index_txt = mount.path("changes", month, "index.txt").read_text()
            assert f"changed {RETITLED} new title (title)" in index_txt
            assert f"changed {REDRAWN} redrawn (images)" in index_txt
            assert [n.split()[1] for n in os.listdir(mount.path("ai"))] == [str(AI)]
            status = json.loads(mount.path("status.json").read_text())
            assert status["changes_in_last_sync"]["changed"] == 8 and status["changes_in_last_sync"]["gone"] == 1
            # nothing changes twice: a second --full finds nothing new
            proc = pbe(config, "sync", "--full", "--no-progress")
            assert proc.returncode == 0 and "changed" not in proc.stderr.split("sync done")[-1], proc.stderr
        finally:
            mount.stop()


def test_the_daemon_refreshes_a_share_per_run(tmp_path: Path) -> None:
    from pbe_fs import config as config_mod
    from pbe_fs.pixiv import PixivClient
    from pbe_fs.sync import Syncer

    works = [(Work(98100000 + n, f"work {n}", (51, "Al", "al")), "public") for n in range(10)]
    with FakePixiv(works) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original"], "interval_minutes": 60,
                                                    "metadata_refresh_days": 10 / 24 / 3})  # 10 works in 3.3 runs
        pbe(config, "sync", "--no-progress", check=True)
        fake.works[98100000].title = "retitled"  # the oldest: first in line
        cfg = config_mod.load(config)
        seen = set()
        for run in range(4):
            fake.reset_counts()
            result = Syncer(cfg, PixivClient(cfg.settings.pixiv), scrub=True).run()
            assert fake.calls["detail"] == 3, run  # its share: ceil(10 / 3.33), never the whole archive
            assert result.changed == (1 if run == 0 else 0)
            db = sqlite3.connect(tmp_path / "data/.pbe/index.sqlite3")
            seen |= {r[0] for r in db.execute("SELECT artwork_id FROM refreshed")}
        assert len(seen) == 10  # everything compared within the period
        assert history(tmp_path / "data", 98100000)[-1]["fields"]["title"]["to"] == "retitled"


def test_ai_policy_hides_ai_works_except_by_id_and_ai(tmp_path: Path) -> None:
    from pbe_fs import config as config_mod
    from pbe_fs.errors import PbeError
    from pbe_fs.tree import Tree

    works = [(Work(98200001, "made by hand", (51, "Al", "al")), "public"),
             (Work(98200002, "made by a model", (51, "Al", "al"), ai_type=2), "private")]
    with FakePixiv(works) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
        pbe(config, "sync", "--no-progress", check=True)
        cfg = config_mod.load(config)
        for ai, expected in (("shown", {98200001, 98200002}), ("hidden", {98200001})):
            tree = Tree(cfg, "enabled", ai=ai)
            try:
                def ids(*path: str) -> set[int]:
                    return {int(n.split()[1]) for n, _ in tree.list(path) or []}
                assert ids("by-ingress") == expected
                assert {int(n.split()[0]) for n, _ in tree.list(("by-id",))} == {98200001, 98200002}
                assert ids("ai") == {98200002}
                assert ids("private") == expected & {98200002}
                assert {int(n.split()[0]) for n, _ in tree.list(("by-artist", "Al [51]"))} == expected
            finally:
                tree.close()
        cfg.settings.display.ai = "hidden"
        try:
            Tree(cfg, "enabled", ai="shown")
        except PbeError as exc:
            assert "looser" in str(exc)
        else:
            raise AssertionError("--ai shown over display.ai hidden must be refused")
        proc = pbe(config, "serve", "--ai", "sometimes")
        assert proc.returncode == 2 and "--ai" in proc.stderr


def test_a_visitor_may_hide_ai_works_in_the_gallery(tmp_path: Path) -> None:
    import urllib.request

    from tests.conftest import Server

    works = [(Work(98300001, "made by hand", (51, "Al", "al")), "public"),
             (Work(98300002, "made by a model", (51, "Al", "al"), ai_type=2), "public")]
    with FakePixiv(works) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original"]}, read_only=False)
        pbe(config, "sync", "--no-progress", check=True)
        server = Server(config)
        try:
            def home(cookie: str = "", path: str = "/") -> str:
                request = urllib.request.Request(server.url + path, headers={"Cookie": cookie} if cookie else {})
                with urllib.request.urlopen(request, timeout=10) as answer:
                    return answer.read().decode()
            page = home()
            assert "98300001" in page and "98300002" in page and "/_pbe/ui/ai/hide" in page
            hidden = home("pbe_ai=hide")
            assert "98300001" in hidden and "98300002" not in hidden and "/_pbe/ui/ai/show" in hidden
            # search answers follow the toggle too
            found = home("", "/_pbe/ui/search?q=made")
            assert "98300001/" in found and "98300002/" in found and "2 works" in found
            found = home("pbe_ai=hide", "/_pbe/ui/search?q=made")
            assert "98300001/" in found and "98300002/" not in found and "1 works" in found
            request = urllib.request.Request(server.url + "/_pbe/ui/ai/hide?r=/")
            opener = urllib.request.build_opener(type("NoRedirect", (urllib.request.HTTPRedirectHandler,),
                                                      {"redirect_request": lambda *a, **k: None}))
            try:
                opener.open(request, timeout=10)
            except urllib.error.HTTPError as answer:
                assert answer.code == 303 and any("pbe_ai=hide" in c for c in answer.headers.get_all("Set-Cookie") or [])
            else:
                raise AssertionError("the toggle must redirect back")
            by_id = urllib.request.urlopen(server.url + "/by-id/", timeout=10).read().decode()
            assert "98300002" in by_id  # by-id/ keeps every work
        finally:
            server.stop()
