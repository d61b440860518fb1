"""The tree through a real FUSE mount of an archive synced from the stand-in."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import time
import unicodedata
import zipfile
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import GONE, LOST, Mount, pbe, write_config
from tests.fakepixiv import FakePixiv, Work

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse")





@pytest.fixture
def mounted(synced, tmp_path):
    config, _ = synced
    m = Mount(config, tmp_path / "mnt")
    yield m
    m.stop()


def index_rows(config: Path) -> list[sqlite3.Row]:
    db = sqlite3.connect(config.parent / "data/.pbe/index.sqlite3")
    db.row_factory = sqlite3.Row
    return db.execute("SELECT w.*, a.name AS artist_name FROM artworks w JOIN artists a ON a.id = w.artist_id").fetchall()


def ids_in(folder: Path) -> set[int]:
    return {int(re.search(r"(?:^|\s)(\d{7,})(?:\s|$)", n).group(1)) for n in os.listdir(folder)}


def ids_in_entries(folder: Path) -> set[int]:
    """ids of the artwork folders in a changes/ month (index.txt aside)."""
    return {int(n.split()[2]) for n in os.listdir(folder) if n != "index.txt"}


def walk_ids(folder: Path, depth: int) -> set[int]:
    found: set[int] = set()
    if depth == 1:
        return ids_in(folder)
    for sub in os.listdir(folder):
        found |= walk_ids(folder / sub, depth - 1)
    return found


@pytest.mark.parametrize("policy", ["enabled", "hidden", "required", "disabled"])
def test_every_view_matches_the_index(synced, tmp_path: Path, policy: str) -> None:
    config, _ = synced
    rows = index_rows(config)
    everything = {r["id"] for r in rows}
    sfw = {r["id"] for r in rows if r["x_restrict"] == 0}
    nsfw = everything - sfw
    gone = {r["id"] for r in rows if r["state"] == "gone"}
    listed = everything if policy == "enabled" else sfw
    m = Mount(config, tmp_path / "mnt", "--nsfw", policy)
    try:
        assert sorted(os.listdir(m.path())) == sorted(
            ["ai", "by-artist", "by-date", "by-id", "by-ingress", "by-tag", "changes", "gone", "private", "status.json"]
            + ([] if policy == "disabled" else ["nsfw"]))
        assert ids_in(m.path("private")) == {r["id"] for r in rows if r["restrict"] == "private"} & listed
        months = os.listdir(m.path("changes"))
        assert months and all(re.fullmatch(r"\d{4}-\d\d", month) for month in months)
        in_changes = {i for month in months for i in ids_in_entries(m.path("changes", month))}
        assert in_changes == listed  # every shown work was bookmarked; nothing hidden slips in
        lines = "".join((m.path("changes", month, "index.txt")).read_text() for month in months).splitlines()
        assert {int(line.split()[2]) for line in lines} == listed
        assert {line.split()[1] for line in lines} >= {"bookmarked", "gone"}
        assert ids_in(m.path("by-ingress")) == listed
        assert walk_ids(m.path("by-date"), 3) == listed
        assert walk_ids(m.path("by-artist"), 2) == listed
        assert walk_ids(m.path("by-tag"), 2) == listed
        assert ids_in(m.path("gone")) == gone & listed
        assert ids_in(m.path("by-id")) == (everything if policy in ("enabled", "hidden") else sfw)
        if policy != "disabled":
            assert ids_in(m.path("nsfw")) == nsfw
        # left out means absent from lookups too
        hidden_id = next(iter(nsfw))
        assert os.path.isdir(m.path("by-id", str(hidden_id))) == (policy in ("enabled", "hidden"))
        seq = next(r["seq"] for r in rows if r["id"] == hidden_id)
        title = next(r["title"] for r in rows if r["id"] == hidden_id)
        assert os.path.isdir(m.path("by-ingress", f"{seq:06d} {hidden_id} {title}")) == (policy == "enabled")
    finally:
        assert m.stop() == 0


def test_names_sorting_and_hostile_titles(mounted: Mount, synced) -> None:
    config, _ = synced
    rows = {r["id"]: r for r in index_rows(config)}
    ingress = sorted(os.listdir(mounted.path("by-ingress")))
    seqs = [int(n.split()[0]) for n in ingress]
    assert seqs == sorted(seqs) and all(len(n.split()[0]) == 6 for n in ingress)
    by_id = {int(n.split()[1]): n for n in ingress}
    assert by_id[93012353] == f"{rows[93012353]['seq']:06d} 93012353 a／b＼c：d＊e？f＂g＜h＞i｜j"
    assert by_id[93012354] == f"{rows[93012354]['seq']:06d} 93012354"  # title ".."
    assert by_id[93012356] == f"{rows[93012356]['seq']:06d} 93012356"  # empty title
    assert by_id[93012359].endswith("\ufffdbell\ufffd\ufffd")
    assert by_id[93012358].endswith("🎨🔥 fire")
    assert len(by_id[93012357].encode()) <= 255
    for name in ingress:
        assert not name.endswith((".", " ")) and "/" not in name and not any(ord(c) < 32 for c in name)
    assert {"同名 [5001]", "同名 [5002]", "AC／DC [5003]"} <= set(os.listdir(mounted.path("by-artist")))
    assert "a／b" in os.listdir(mounted.path("by-tag"))
    dates = sorted(os.listdir(mounted.path("by-date", "2020", "12")))
    assert all(re.match(r"2020-12-\d\d \d+", d) for d in dates) and dates == sorted(dates)


def test_nfd_lookups_work(mounted: Mount) -> None:
    tag = unicodedata.normalize("NFD", "オリジナル")
    assert tag != "オリジナル"
    assert os.path.isdir(mounted.path("by-tag", tag))
    assert os.listdir(mounted.path("by-tag", tag)) == os.listdir(mounted.path("by-tag", "オリジナル"))


def test_artwork_folder_contents_and_originals(mounted: Mount, synced) -> None:
    config, fake = synced
    folder = mounted.path("by-id", "93012350")
    names = sorted(os.listdir(folder))
    assert names == sorted([f"93012350_p{n}.jpg" for n in range(12)] + [
        "93012350.zip", "93012350.pdf", "93012350.cbz", "meta.json", "pixiv.url", "folder.jpg", "large", "medium",
        "square_medium"])
    archive = config.parent / "data/artworks/93012350"
    created = datetime.fromisoformat(fake.work_json(93012350)["create_date"]).timestamp()
    for name in names:
        st = os.stat(folder / name)
        assert st.st_mtime == created
        if name.endswith(".jpg") and name != "folder.jpg":
            assert (folder / name).read_bytes() == (archive / name).read_bytes()
            assert st.st_size == (archive / name).stat().st_size
    assert os.stat(folder).st_nlink == 5 and os.stat(folder).st_mtime == created
    assert sorted(os.listdir(folder / "large")) == sorted(
        [f"93012350_p{n}_master1200.jpg" for n in range(12)] + ["93012350.zip", "93012350.pdf", "93012350.cbz"])
    assert (folder / "pixiv.url").read_bytes() == b"[InternetShortcut]\r\nURL=https://www.pixiv.net/artworks/93012350\r\n"


def test_meta_json(mounted: Mount, synced) -> None:
    config, fake = synced
    data = json.loads(mounted.path("by-id", "93012345", "meta.json").read_bytes())
    assert data["id"] == 93012345 and data["state"] == "gone" and data["gone"]["reason"] == "limit_unknown"
    assert data["pixiv"]["title"] == "夕焼け" and data["tags"][0] == {"name": "風景", "translated_name": "landscape"}
    assert data["artist"]["name"] == "Artist" and data["ingress"] >= 1
    text = mounted.path("by-id", "93012345", "meta.json").read_text()
    for secret in ("good-refresh", "seed-ro-token", "seed-app-key"):
        assert secret not in text
    saved = json.loads(config.read_text())
    assert saved["pixiv"]["access"] and saved["pixiv"]["access"] not in text


def test_zip_is_exact_and_valid(mounted: Mount, synced) -> None:
    config, _ = synced
    archive = config.parent / "data/artworks/93012350"
    for sub, suffix in (("", ".jpg"), ("large", "_master1200.jpg")):
        path = mounted.path("by-id", "93012350", sub, "93012350.zip")
        with zipfile.ZipFile(path) as zf:
            assert zf.testzip() is None
            assert len(zf.namelist()) == 12
            for n in range(12):
                name = f"93012350_p{n}{suffix}"
                assert zf.read(name) == (archive / sub / name).read_bytes()
        assert os.stat(path).st_size == len(path.read_bytes())
        listing = subprocess.run(["bsdtar", "-tf", str(path)], capture_output=True, text=True, check=True).stdout
        assert len(listing.split()) == 12
        if shutil.which("7z"):
            out = subprocess.run(["7z", "t", str(path)], capture_output=True, text=True).stdout
            assert "Everything is Ok" in out
        assert subprocess.run(["unzip", "-tq", str(path)], capture_output=True).returncode == 0


def test_pdf_page_counts(mounted: Mount) -> None:
    for aid, pages in ((93012350, 12), (93012348, 1), (93012349, 1), (93012364, 3)):
        folder = next(p for p in (mounted.path("by-id", str(aid)), mounted.path("nsfw")) if p.exists())
        path = folder / f"{aid}.pdf"
        info = subprocess.run(["pdfinfo", str(path)], capture_output=True, text=True, check=True).stdout
        assert re.search(rf"^Pages:\s+{pages}$", info, re.M), (aid, info)
        assert os.stat(path).st_size == len(path.read_bytes())
    # the PNG with alpha, the GIF: converted, never fatal
    assert mounted.path("by-id", "93012348", "large", "93012348.pdf").stat().st_size > 0


def test_a_walk_makes_no_generated_file_and_a_stat_makes_the_one_asked_for(synced, tmp_path: Path) -> None:
    """A walk (find, a backup's scan, an indexer) lists every work's PDFs,
    zips and animations but reads none: they are made when stat'ed or opened."""
    config, _ = synced
    cache = config.parent / "cache"
    shutil.rmtree(cache, ignore_errors=True)  # as after a cache wipe: nothing made yet
    m = Mount(config, tmp_path / "mnt")
    try:
        listed = 0
        for folder, _dirs, files in os.walk(m.mountpoint):  # what find does: names and types, no stat of files
            listed += sum(name.endswith((".pdf", ".gif", ".webp")) for name in files)
        assert listed > 20
        made = [p for p in cache.rglob("*") if p.is_file() and p.suffix in (".skel", ".gif", ".webp")]
        assert made == []
        pdf = m.path("by-id", "93012350", "large", "93012350.pdf")
        size = pdf.stat().st_size
        assert len(list(cache.rglob("*.skel"))) == 1 and not list(cache.rglob("*.gif"))
        data = pdf.read_bytes()
        assert size == len(data) and data.startswith(b"%PDF")
        gif = m.path("by-id", "93012346", "93012346.gif")
        assert gif.stat().st_size == len(gif.read_bytes()) > 0
        assert len(list(cache.rglob("*.gif"))) == 1
        # what the walk listed without sizes, ls -l shows with them
        folder = m.path("by-id", "93012350")
        files = [folder / name for name in os.listdir(folder) if (folder / name).is_file()]
        assert len(files) > 12 and all(f.stat().st_size == len(f.read_bytes()) > 0 for f in files)
    finally:
        m.stop()


def test_a_file_read_again_is_the_kernels_to_serve(mounted: Mount, synced) -> None:
    """No OPEN reaches pbe-fs (see fusekernel): a file read once stays in
    the kernel's cache, and opening and reading it again, by any program,
    costs the mount nothing: with the mount's process stopped, `cat` still
    reads an original, a zip and a PDF read before (an OPEN would wait for
    the process). And with the work's archived files moved away behind
    pbe-fs's back, they still read their bytes; a file never read fails
    (its source is gone) rather than giving other bytes, and reads once it
    is back."""
    config, _ = synced
    folder = mounted.path("by-id", "93012350")
    paths = [folder / "93012350_p3.jpg", folder / "large" / "93012350.zip", folder / "93012350.pdf"]
    first = {p: p.read_bytes() for p in paths}
    os.kill(mounted.proc.pid, signal.SIGSTOP)
    try:
        again = subprocess.run(["cat", *map(str, paths)], capture_output=True, timeout=10)
    except subprocess.TimeoutExpired:
        pytest.fail("reading files read before waited for the mount's process")
    finally:
        os.kill(mounted.proc.pid, signal.SIGCONT)
    assert again.returncode == 0 and again.stdout == b"".join(first.values())
    archived = config.parent / "data/artworks/93012350"
    away = config.parent / "away"
    archived.rename(away)
    try:
        for _ in range(2):
            assert {p: p.read_bytes() for p in paths} == first
        with pytest.raises(OSError):
            (folder / "93012350_p4.jpg").read_bytes()
    finally:
        away.rename(archived)
    assert (folder / "93012350_p4.jpg").read_bytes() == (archived / "93012350_p4.jpg").read_bytes()
    assert "Traceback" not in mounted.stderr()


def test_ugoira_animations(mounted: Mount, synced) -> None:
    config, _ = synced
    for aid, delays in ((93012346, [100, 60, 200]), (93012347, [80, 80])):
        folder = mounted.path("by-id", str(aid))
        for fmt in ("gif", "webp"):
            with Image.open(folder / f"{aid}.{fmt}") as im:
                assert im.n_frames == len(delays)
                got = []
                for frame in range(im.n_frames):
                    im.seek(frame)
                    im.load()
                    got.append(im.info["duration"])
                assert got == delays
        with zipfile.ZipFile(folder / f"{aid}_ugoira.zip") as zf:
            assert zf.namelist() == [f"{n:06d}.jpg" for n in range(len(delays))]
    archive = config.parent / "data/artworks"
    with zipfile.ZipFile(mounted.path("by-id", "93012346", "93012346_ugoira.zip")) as zf:
        assert zf.read("000001.jpg") == (archive / "93012346/93012346_ugoira1.jpg").read_bytes()
    assert mounted.path("by-id", "93012347", "93012347_ugoira.zip").read_bytes() == \
        (archive / "93012347/93012347_ugoira1920x1080.zip").read_bytes()


def test_xattrs(synced, tmp_path: Path) -> None:
    config, _ = synced
    mounted = Mount(config, tmp_path / "mnt", "--xattrs")
    try:
        _check_xattrs(mounted)
    finally:
        mounted.stop()


def test_no_xattrs_by_default(mounted: Mount) -> None:
    with pytest.raises(OSError) as err:
        os.getxattr(mounted.path("by-id", "93012345"), "user.xdg.comment")
    assert err.value.errno in (errno.ENOTSUP, errno.ENODATA)


def _check_xattrs(mounted: Mount) -> None:
    out = subprocess.run(["getfattr", "-d", "--absolute-names", str(mounted.path("by-id", "93012345"))],
                         capture_output=True, text=True, check=True).stdout
    assert 'user.xdg.origin.url="https://www.pixiv.net/artworks/93012345"' in out
    assert 'user.pixiv.id="93012345"' in out and 'user.pixiv.artist="Artist [11223]"' in out
    path = str(mounted.path("by-id", "93012345", "93012345_p0.jpg"))
    assert os.getxattr(path, "user.xdg.tags").decode() == "風景,オリジナル"
    assert os.getxattr(path, "user.xdg.comment").decode() == "夕焼け"
    with pytest.raises(OSError) as err:
        os.getxattr(path, "user.nope")
    assert err.value.errno == errno.ENODATA


def test_writes_are_refused(mounted: Mount, synced) -> None:
    config, _ = synced
    before = sorted(p.name for p in (config.parent / "data/artworks").iterdir())
    folder = mounted.path("by-id", "93012350")
    attempts = [
        lambda: open(folder / "new.txt", "w"),
        lambda: open(folder / "meta.json", "a"),
        lambda: os.mkdir(folder / "x"),
        lambda: os.rename(folder, mounted.path("by-id", "x")),
        lambda: os.chmod(folder / "pixiv.url", 0o777),
        lambda: os.setxattr(folder, "user.x", b"1"),
        lambda: os.symlink("a", folder / "b"),
        lambda: os.unlink(folder / "pixiv.url"),
        lambda: os.rmdir(folder),
        lambda: os.truncate(folder / "meta.json", 0),
    ]
    for attempt in attempts:
        with pytest.raises(OSError) as err:
            attempt()
        assert err.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    assert sorted(p.name for p in (config.parent / "data/artworks").iterdir()) == before


def test_bad_input(mounted: Mount) -> None:
    for name in (".DS_Store", "._x", "Thumbs.db", "desktop.ini", "nope", "9" * 300, "..."):
        assert not os.path.exists(mounted.path("by-id", name))
    assert os.path.realpath(mounted.path("by-id", "..", "..")) == os.path.realpath(mounted.path().parent)
    path = mounted.path("by-id", "93012350", "93012350.zip")
    size = path.stat().st_size
    fd = os.open(path, os.O_RDONLY)
    try:
        assert os.pread(fd, 100, 10**15) == b""
        assert os.pread(fd, 100, size - 10) == path.read_bytes()[-10:]
    finally:
        os.close(fd)
    with pytest.raises(NotADirectoryError):
        os.listdir(mounted.path("status.json"))
    status = json.loads(mounted.path("status.json").read_text())
    assert status["artworks"] >= 40 and {g["id"] for g in status["gone"]} == {GONE}
    assert [l["id"] for l in status["lost"]] == [LOST]
    assert "Traceback" not in mounted.stderr()


def test_deletion(tmp_path: Path, fake: FakePixiv) -> None:
    config = write_config(tmp_path, fake, sync={"sizes": ["original", "large"]})
    pbe(config, "sync", "--no-progress", check=True)
    fake.works[GONE].state = "deleted"
    pbe(config, "sync", "--full", "--no-progress", check=True)
    data = tmp_path / "data/artworks"
    m = Mount(config, tmp_path / "mnt", "--allow-delete")
    try:
        victim = next(n for n in os.listdir(m.path("by-ingress")) if " 93012350 " in n)
        subprocess.run(["rm", "-r", str(m.path("by-ingress", victim))], check=True, timeout=20)
        assert not (data / "93012350").exists()
        assert not m.path("by-id", "93012350").exists()
        deadline = time.monotonic() + 5
        while victim in os.listdir(m.path("by-ingress")) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert victim not in os.listdir(m.path("by-ingress"))
        # a gone work keeps its only copy
        proc = subprocess.run(["rm", "-r", str(m.path("by-id", str(GONE)))], capture_output=True, text=True, timeout=20)
        assert proc.returncode != 0 and "Permission denied" in proc.stderr
        assert (data / str(GONE)).is_dir()
        # a writable mount passes writes to pbe-fs, which refuses them, the largest request too
        folder = m.path("by-id", str(GONE))
        for attempt in (lambda: os.setxattr(folder, "user.big", b"x" * 65536), lambda: os.mkdir(folder / "x"),
                        lambda: open(folder / "new.txt", "w"), lambda: os.rename(folder, m.path("by-id", "x"))):
            with pytest.raises(OSError) as err:
                attempt()
            assert err.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM, errno.E2BIG, errno.EIO)
        assert os.listdir(folder)  # still answering
    finally:
        assert m.stop() == 0
    # read_only is true in this config: without --allow-delete nothing can go
    m = Mount(config, tmp_path / "mnt")
    try:
        proc = subprocess.run(["rm", "-r", str(m.path("by-id", "93012346"))], capture_output=True, text=True, timeout=20)
        assert proc.returncode != 0 and "Read-only file system" in proc.stderr
        assert (data / "93012346").is_dir()
    finally:
        m.stop()


def test_sync_while_mounted(tmp_path: Path, fake: FakePixiv) -> None:
    config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
    pbe(config, "sync", "--no-progress", check=True)
    m = Mount(config, tmp_path / "mnt")
    try:
        before = set(os.listdir(m.path("by-ingress")))
        assert len(os.listdir(m.path("by-id"))) == len(before) + 3  # NSFW hidden from by-ingress
        for n in range(3):
            fake.add(Work(95000000 + n, f"fresh {n}", (8, "y", "y")))
        pbe(config, "sync", "--no-progress", check=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = set(os.listdir(m.path("by-ingress")))
            if len(now) == len(before) + 3:
                break
            time.sleep(0.2)
        added = sorted(set(os.listdir(m.path("by-ingress"))) - before)
        assert [n.split(" ", 1)[1] for n in added] == [f"{95000000 + n} fresh {n}" for n in range(3)]
        assert m.path("by-id", "95000001", "95000001_p0.jpg").read_bytes() == \
            (tmp_path / "data/artworks/95000001/95000001_p0.jpg").read_bytes()
        assert "Traceback" not in m.stderr()
    finally:
        assert m.stop() == 0


def send_to_thread(pid: int, tid: int, signum: int) -> None:
    """tgkill: a signal to one thread of a process, as the kernel may pick any
    thread that does not block it for a signal sent to the process."""
    import ctypes
    import platform

    number = {"x86_64": 234, "aarch64": 131}[platform.machine()]
    if ctypes.CDLL(None, use_errno=True).syscall(number, pid, tid, signum) != 0:
        raise OSError(ctypes.get_errno(), "tgkill")


def test_unmount_on_sigterm_sigint_and_fusermount(mounted: Mount, synced, tmp_path: Path) -> None:
    config, _ = synced
    # A signal caught anywhere but inside the request thread's read of /dev/fuse
    # (on another thread, or on it just before the read begins) must still
    # stop an idle mount: here a worker thread takes it.
    mounted.path("by-id", "93012350", "93012350.pdf").read_bytes()  # workers started
    pid = mounted.proc.pid
    workers = [int(t.name) for t in Path(f"/proc/{pid}/task").iterdir() if int(t.name) != pid]
    mounted.proc.send_signal(signal.SIGUSR1)  # where each thread is, for a report of a hang
    deadline = time.monotonic() + 5
    while " in serve" not in mounted.stderr() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert " in serve" in mounted.stderr() and os.path.ismount(mounted.mountpoint)
    time.sleep(0.5)  # idle: nothing else will wake the request thread
    send_to_thread(pid, workers[-1], signal.SIGTERM)
    assert mounted.proc.wait(timeout=10) == 0, mounted.stderr()
    assert "SIGTERM: unmounting" in mounted.stderr()
    assert not os.path.ismount(mounted.mountpoint)
    m = Mount(config, tmp_path / "mnt2")
    assert m.stop(signal.SIGINT) == 0 and not os.path.ismount(m.mountpoint)
    m = Mount(config, tmp_path / "mnt3")
    subprocess.run(["fusermount3", "-u", str(m.mountpoint)], check=True)
    assert m.proc.wait(timeout=10) == 0


def test_a_killed_mount_is_named_dead_and_can_be_mounted_again(synced, tmp_path: Path) -> None:
    """kill -9 leaves the mount point behind; the kernel may still answer a
    `stat` or an `ls` of it from its caches, but a new mount must say it is
    dead and how to clear it, and mount once it is cleared."""
    config, _ = synced
    m = Mount(config, tmp_path / "mnt")
    assert os.listdir(m.mountpoint) and os.stat(m.mountpoint).st_nlink  # both kept by the kernel now
    m.proc.kill()
    m.proc.wait(timeout=10)
    try:
        again = pbe(config, "mount", str(m.mountpoint))
        assert again.returncode != 0 and "Traceback" not in again.stderr
        assert "dead mount" in again.stderr and f"fusermount3 -u {m.mountpoint}" in again.stderr
        assert len(again.stderr.strip().splitlines()) == 1
    finally:
        subprocess.run(["fusermount3", "-u", str(m.mountpoint)], check=True)
    m = Mount(config, tmp_path / "mnt")
    try:
        assert "by-id" in os.listdir(m.mountpoint)
    finally:
        assert m.stop() == 0


def test_a_dead_mount_beside_a_live_one_is_named_dead(synced, tmp_path: Path) -> None:
    """With one pbe-fs mount alive elsewhere, a dead one is still called
    dead: not "in use" by the live one's process (which the user would be
    told to kill)."""
    config, _ = synced
    live = Mount(config, tmp_path / "live")
    dead = Mount(config, tmp_path / "dead")
    try:
        assert os.listdir(dead.mountpoint)
        dead.proc.kill()
        dead.proc.wait(timeout=10)
        again = pbe(config, "mount", str(dead.mountpoint))
        assert again.returncode != 0 and "dead mount" in again.stderr, again.stderr
        assert str(live.proc.pid) not in again.stderr
        assert "by-id" in os.listdir(live.mountpoint)
    finally:
        subprocess.run(["fusermount3", "-u", str(dead.mountpoint)], check=False)
        assert live.stop() == 0


def test_mount_refuses_bad_mountpoints(synced, tmp_path: Path) -> None:
    config, _ = synced
    proc = pbe(config, "mount", str(tmp_path / "missing"))
    assert proc.returncode == 1 and "is not a folder" in proc.stderr
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "file").write_text("x")
    proc = pbe(config, "mount", str(busy))
    assert proc.returncode == 1 and "is not empty" in proc.stderr
    proc = pbe(config, "mount", str(tmp_path), "--nsfw", "sometimes")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr


def test_top_quality_and_gone_updates(tmp_path: Path, fake: FakePixiv) -> None:
    config = write_config(tmp_path, fake, display={"artwork": {"image": "large"}}, sync={"sizes": ["original", "large"]})
    pbe(config, "sync", "--no-progress", check=True)
    m = Mount(config, tmp_path / "mnt")
    try:
        folder = m.path("by-id", "93012350")
        assert sorted(os.listdir(folder)) == sorted(
            [f"93012350_p{n}_master1200.jpg" for n in range(12)] + ["93012350.zip", "93012350.pdf", "93012350.cbz",
                                                                      "meta.json", "pixiv.url", "folder.jpg", "original"])
        assert len([n for n in os.listdir(folder / "original") if n.endswith(".jpg")]) == 12
        meta = folder / "meta.json"
        assert json.loads(meta.read_bytes())["state"] == "live"
        fake.works[93012350].state = "deleted"
        pbe(config, "sync", "--full", "--no-progress", check=True)
        deadline = time.monotonic() + 10
        while "93012350 manga" not in " ".join(os.listdir(m.path("gone"))) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert any(" 93012350 " in f" {n} " for n in os.listdir(m.path("gone")))
        while json.loads(meta.read_bytes())["state"] != "gone" and time.monotonic() < deadline:
            time.sleep(0.2)
        assert json.loads(meta.read_bytes())["state"] == "gone"
    finally:
        assert m.stop() == 0
