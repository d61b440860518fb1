"""Scale: the mount's memory does not grow with what was looked at, its
numbers are unique and stable, and long kernel caches still see a sync."""

from __future__ import annotations

import os
import subprocess
import time
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from bench.common import forget
from bench.scale_bench import build_archive
from tests.conftest import Mount, pbe, write_config
from tests.fakepixiv import FakePixiv, Work

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse")


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def walk(root: Path) -> int:
    """find's walk, stat included: how many entries."""
    out = subprocess.run(["find", str(root), "-printf", "%i\n"], capture_output=True, text=True, check=True, timeout=600)
    return len(out.stdout.splitlines())


def test_a_full_walk_keeps_memory_bounded(tmp_path: Path) -> None:
    works = 2000  # 5,000 take 10 minutes on a loaded 2-core machine, and grow the same per work
    config = build_archive(tmp_path, works, tags=1)  # one tag each: ~100 entries per work
    m = Mount(config, tmp_path / "mnt")
    try:
        os.listdir(m.path())
        before = rss_mb(m.proc.pid)
        entries = walk(m.mountpoint)
        after_one = rss_mb(m.proc.pid)
        assert entries > works * 80  # every view, every artwork folder, every file in them
        walk(m.path("by-ingress"))
        after_two = rss_mb(m.proc.pid)
        # A table per path looked up costs ~0.4 KB per entry: 90 MB here. What may grow
        # is the tree's listing cache (4,096 folders, ~10 KB each) and 4 KB per work.
        assert after_one - before < 48 + works * 4 / 1024, (before, after_one, entries)
        assert after_two - after_one < 8, (after_one, after_two)  # walking again adds nothing
        assert "Traceback" not in m.stderr()
    finally:
        assert m.stop() == 0


def test_large_answers_do_not_stay_in_the_server(tmp_path: Path) -> None:
    """16 PROPFINDs of a 4,000-work folder, answered in turn by the server's
    worker threads, leave its memory about where the first left it: the
    answer is encoded in pieces and its members listed one at a time, and
    the threads share two malloc arenas. (Each thread kept a whole
    answer's peak before: 6 MB a thread here, 65 MB at 50,000 works.)"""
    import json
    import urllib.request

    from tests.conftest import Server

    works = 4000
    config = build_archive(tmp_path, works, tags=1)
    data = json.loads(config.read_text())
    data["webdav"] = {"workers": 1}  # one process: its threads are what is measured
    config.write_text(json.dumps(data))
    server = Server(config)
    try:
        def propfind() -> int:
            request = urllib.request.Request(server.url + "/by-ingress/", method="PROPFIND", headers={"Depth": "1"})
            with urllib.request.urlopen(request, timeout=120) as answer:
                return answer.read().count(b"<D:response>")

        assert propfind() == works + 1
        first = rss_mb(server.proc.pid)
        for _ in range(15):
            assert propfind() == works + 1
        after = rss_mb(server.proc.pid)
        assert after - first < 16, (first, after)
    finally:
        assert server.stop() == 0


def test_every_entry_has_its_own_number_and_keeps_it(synced, tmp_path: Path) -> None:
    config, _ = synced
    m = Mount(config, tmp_path / "mnt", "--nsfw", "enabled")
    try:
        out = subprocess.run(["find", str(m.mountpoint), "-printf", "%i %p\n"], capture_output=True, text=True,
                             check=True).stdout.splitlines()
        numbers = Counter(line.split(" ", 1)[0] for line in out)
        assert len(out) > 1000 and numbers.most_common(1)[0][1] == 1  # no two paths share an inode
        some = [line.split(" ", 1)[1] for line in out[:: len(out) // 50]]
        first = {p: os.stat(p).st_ino for p in some}
        m.stop()
        m = Mount(config, tmp_path / "mnt", "--nsfw", "enabled")
        assert {p: os.stat(p).st_ino for p in some} == first  # the same numbers in a new mount, looked up directly
        deep = next(p for p in some if p.count("/") - str(m.mountpoint).count("/") >= 4)
        folder = deep if os.path.isdir(deep) else os.path.dirname(deep)
        assert os.stat(os.path.join(folder, "..")).st_ino == os.stat(os.path.dirname(folder)).st_ino
    finally:
        assert m.stop() == 0


def test_a_walk_lists_the_same_whether_records_wait_on_the_disk_or_not(tmp_path: Path) -> None:
    """A work's folder is listed on the request thread when its record files
    are in the page cache, on a worker when they are not: the same entries,
    numbers and sizes either way."""
    config = build_archive(tmp_path, 40, tags=1)
    records = list((tmp_path / "data" / "artworks").glob("*/p*.json"))
    assert len(records) >= 80
    os.sync()
    seen = []
    for cold in (True, False):
        for path in records:
            if cold:
                forget(path)
            else:
                path.read_bytes()
        m = Mount(config, tmp_path / "mnt")
        try:
            out = subprocess.run(["find", str(m.mountpoint), "-printf", "%P %i %s %y\n"], capture_output=True,
                                 text=True, check=True, timeout=120).stdout
            seen.append(sorted(out.splitlines()))
            assert "Traceback" not in m.stderr()
        finally:
            assert m.stop() == 0
    assert len(seen[0]) > 40 * 50 and seen[0] == seen[1]


RETITLED = 96000001


def test_long_kernel_caches_see_a_sync_within_the_poll(tmp_path: Path) -> None:
    works = [(Work(RETITLED, "old title", (51, "Al", "al")), "public"),
             (Work(96000002, "stays", (51, "Al", "al")), "public")]
    with FakePixiv(works) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
        pbe(config, "sync", "--no-progress", check=True)
        m = Mount(config, tmp_path / "mnt")
        try:
            old = {view: m.path(view, next(n for n in os.listdir(m.path(view)) if str(RETITLED) in n))
                   for view in ("by-ingress", "by-artist/Al [51]", "by-tag/オリジナル")}
            for path in old.values():  # in the kernel's caches now, for a day
                assert "old title" in path.name and (path / "meta.json").stat().st_size > 0
            stays = m.path("by-id", "96000002", "96000002_p0.jpg")
            stays_ino = stays.stat().st_ino
            fake.works[RETITLED].title = "new title"
            fake.add(Work(96000003, "fresh", (51, "Al", "al")))
            pbe(config, "sync", "--full", "--no-progress", check=True)
            time.sleep(1.5)  # the poll interval (1 s) and a little
            for view, path in old.items():
                assert not path.exists(), path
                assert any(n.endswith(f"{RETITLED} new title") for n in os.listdir(m.path(view))), view
                assert (path.parent / path.name.replace("old title", "new title") / "meta.json").stat().st_size > 0
            assert any(n.endswith("96000003 fresh") for n in os.listdir(m.path("by-ingress")))
            assert m.path("by-id", "96000003", "96000003_p0.jpg").stat().st_size > 0
            assert stays.stat().st_ino == stays_ino
            assert "Traceback" not in m.stderr()
        finally:
            assert m.stop() == 0


PAGED = 96000011


def test_a_page_added_by_a_sync_shows_in_every_view_of_the_work(tmp_path: Path) -> None:
    """An artwork folder's listing is kept once for all the views of its work:
    a sync that adds a page must reach each of them, within the poll."""
    with FakePixiv([(Work(PAGED, "pages", (52, "Bo", "bo"), type="manga", pages=2), "public")]) as fake:
        config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
        pbe(config, "sync", "--no-progress", check=True)
        m = Mount(config, tmp_path / "mnt")
        try:
            folders = [m.path("by-id", str(PAGED)),
                       m.path("by-ingress", next(n for n in os.listdir(m.path("by-ingress")) if str(PAGED) in n))]
            archived = tmp_path / "data/artworks" / str(PAGED)
            held = []
            for folder in folders:  # listed (and kept) from both views before the sync
                names = os.listdir(folder)
                assert f"{PAGED}_p1.jpg" in names and f"{PAGED}_p2.jpg" not in names
                for name in names:  # read once: the mount remembers what each number opened
                    if not (folder / name).is_dir():
                        (folder / name).read_bytes()
                held.append(open(folder / f"{PAGED}_p1.jpg", "rb"))  # open across the sync
            before = (archived / f"{PAGED}_p1.jpg").read_bytes()
            # after the sync the zip's number names the new three-page zip: other bytes
            zip_before = (folders[0] / f"{PAGED}.zip").read_bytes()
            zips = [open(folder / f"{PAGED}.zip", "rb", buffering=0) for folder in folders]
            fake.works[PAGED].pages = 3
            fake.works[PAGED].revision = 1
            pbe(config, "sync", "--full", "--no-progress", check=True)
            time.sleep(1.5)  # the poll interval (1 s) and a little
            for fh in zips:  # READs of the zip's old number, before the kernel has seen the new listing
                with fh:
                    assert fh.read() == zip_before  # what it opened, never the new zip's bytes
            for folder, fh in zip(folders, held):
                assert f"{PAGED}_p2.jpg" in os.listdir(folder), folder
                # every number now names another place in the listing: each file reads its own bytes
                for page in range(3):
                    name = f"{PAGED}_p{page}.jpg"
                    assert (folder / name).read_bytes() == (archived / name).read_bytes(), (folder, name)
                assert zipfile.ZipFile(folder / f"{PAGED}.zip").testzip() is None
                with fh:
                    assert fh.read() == before  # what was open still reads what it opened
            assert "Traceback" not in m.stderr()
        finally:
            assert m.stop() == 0
