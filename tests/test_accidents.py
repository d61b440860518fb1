"""Ordinary accidents never cost a work, its number, its dates or its history.

Each test causes one accident to a synced archive (the index deleted, cut
short or overwritten; a record garbled or deleted; two works claiming one
number; a full disk), runs the command a user would run next, and checks
that the archive's files are byte-identical, every work keeps its number and
dates, gone works stay in ``gone/``, and nothing was fetched again.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import GONE, pbe, write_config
from tests.fakepixiv import FakePixiv, Work
from tests.helpers import assert_archive_exact


def files_of(root: Path) -> dict[str, str]:
    """SHA-256 of every file a user would lose: works and side records."""
    out = {}
    for top in ("artworks", "lost", "deleted"):
        base = root / top
        for p in sorted(base.rglob("*")) if base.is_dir() else []:
            if p.is_file():
                out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def works_of(root: Path) -> dict[int, tuple]:
    """Per work, what must survive: number, dates, state and its history."""
    db = sqlite3.connect(root / ".pbe/index.sqlite3")
    try:
        rows = db.execute("SELECT id, seq, archived_at, state, state_at, state_reason FROM artworks").fetchall()
        history = {}
        for aid, at, event in db.execute("SELECT artwork_id, at, event FROM history ORDER BY artwork_id, idx"):
            if event not in ("record_rebuilt", "renumbered"):
                history.setdefault(aid, []).append((at, event))
        return {r[0]: (*r[1:], tuple(history.get(r[0], []))) for r in rows}
    finally:
        db.close()


@pytest.fixture
def archive(tmp_path: Path, fake: FakePixiv):
    """A synced archive with one work gone from pixiv (its only copy here)."""
    config = write_config(tmp_path, fake)
    pbe(config, "sync", "--no-progress", check=True)
    fake.works[GONE].state = "deleted"
    pbe(config, "sync", "--full", "--no-progress", check=True)
    root = tmp_path / "data"
    return config, root


def gone_listed(config: Path, tmp_path: Path) -> list[str]:
    """What `gone/` shows, through the tree as the mount and server see it."""
    from pbe_fs import config as config_mod
    from pbe_fs.tree import Tree

    tree = Tree(config_mod.load(config), "enabled")
    try:
        names = sorted(name for name, _ in tree.list(("gone",)) or [])
        for name in names:  # and each one's folder shows its files
            assert any(n.endswith((".jpg", ".png", ".gif")) for n, _ in tree.list(("gone", name)) or []), name
        return names
    finally:
        tree.close()


def one_line(stderr: str) -> bool:
    return "Traceback" not in stderr


@pytest.mark.parametrize("accident", ["deleted", "cut", "garbage", "empty", "pages"])
def test_lost_or_damaged_index_is_rebuilt_not_refetched(archive, fake: FakePixiv, tmp_path: Path, accident: str) -> None:
    config, root = archive
    before_files, before_works = files_of(root), works_of(root)
    index = root / ".pbe/index.sqlite3"
    pbe(config, "status", check=True)  # checkpoints the WAL, as any reader's close does
    if accident == "deleted":
        for suffix in ("", "-wal", "-shm"):
            Path(str(index) + suffix).unlink(missing_ok=True)
    elif accident == "cut":
        data = index.read_bytes()
        index.write_bytes(data[: len(data) // 2])
    elif accident == "garbage":
        index.write_bytes(os.urandom(index.stat().st_size))
    elif accident == "pages":  # the header and schema read fine: the damage shows only in use
        data = index.read_bytes()
        index.write_bytes(data[:16384] + os.urandom(len(data) - 16384))
    else:
        index.write_bytes(b"")
    fake.reset_counts()
    proc = pbe(config, "sync", "--no-progress")
    assert proc.returncode == 0 and one_line(proc.stderr), proc.stderr
    assert "rebuilt it from the archive's files" in proc.stderr
    assert len([line for line in proc.stderr.splitlines() if "rebuilt" in line]) == 1
    assert fake.calls["image"] == 0
    assert files_of(root) == before_files
    assert works_of(root) == before_works
    assert any(GONE == int(name.split()[0]) for name in gone_listed(config, tmp_path))
    if accident != "deleted":  # the damaged file is kept beside, named with the time
        assert [p.name for p in index.parent.glob("index.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm"))]
    # every other command copes too
    for args in (("status",), ("reindex",), ("doctor",)):
        proc = pbe(config, *args)
        assert one_line(proc.stderr), (args, proc.stderr)
    assert works_of(root) == before_works


def test_garbage_index_every_command_rebuilds(archive, fake: FakePixiv) -> None:
    config, root = archive
    before = works_of(root)
    index = root / ".pbe/index.sqlite3"
    for command in (("status",), ("reindex",), ("doctor",)):
        pbe(config, "status", check=True)
        index.write_bytes(os.urandom(8192))
        for suffix in ("-wal", "-shm"):
            Path(str(index) + suffix).unlink(missing_ok=True)
        proc = pbe(config, *command)
        assert one_line(proc.stderr), (command, proc.stderr)
        assert works_of(root) == before, command


def test_garbage_and_missing_records(archive, fake: FakePixiv, tmp_path: Path) -> None:
    config, root = archive
    before_works = works_of(root)
    live = 93012346
    (root / f"artworks/{live}/pbe.json").write_bytes(b"\xff\xfe not json at all")
    (root / f"artworks/{GONE}/pbe.json").unlink()  # the gone work: its files are the only copy
    (root / "deleted").mkdir(exist_ok=True)
    (root / "deleted/123.json").write_text("{")
    before_files = files_of(root)
    for args in (("reindex",), ("sync", "--full", "--no-progress"), ("sync", "--no-progress")):
        fake.reset_counts()
        proc = pbe(config, *args)
        assert proc.returncode == 0 and one_line(proc.stderr), (args, proc.stderr)
        assert f"artworks/{live}/pbe.json" in proc.stderr or args[0] == "sync" and "--full" not in args, (args, proc.stderr)
        assert works_of(root) == before_works, args
        assert fake.calls["image"] == 0
        assert files_of(root) == before_files
    assert any(GONE == int(name.split()[0]) for name in gone_listed(config, tmp_path))
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert GONE in [g["id"] for g in status["gone"]] and not status["lost"]
    proc = pbe(config, "doctor")
    records = next(line for line in proc.stdout.splitlines() if line.startswith("records"))
    assert proc.returncode == 1 and "FAIL" in records and f"artworks/{live}/pbe.json" in records
    assert f"artworks/{GONE}/pbe.json: missing" in proc.stdout and "deleted/123.json" in proc.stdout
    proc = pbe(config, "doctor", "--repair")
    assert one_line(proc.stderr), proc.stderr
    for aid in (live, GONE):
        record = json.loads((root / f"artworks/{aid}/pbe.json").read_text())
        assert record["history"][-1]["event"] == "record_rebuilt"
    assert works_of(root) == before_works
    gone = json.loads((root / f"artworks/{GONE}/pbe.json").read_text())
    assert gone["gone"]["reason"] and gone["seq"] == before_works[GONE][0]


def test_record_and_index_both_lost_the_ledger_keeps_numbers(archive, fake: FakePixiv, tmp_path: Path) -> None:
    config, root = archive
    before = works_of(root)
    (root / f"artworks/{GONE}/pbe.json").unlink()
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / ".pbe/index.sqlite3") + suffix).unlink(missing_ok=True)
    proc = pbe(config, "sync", "--full", "--no-progress")
    assert proc.returncode == 0 and one_line(proc.stderr), proc.stderr
    after = works_of(root)
    seq, archived_at, state = after[GONE][:3]
    assert (seq, archived_at, state) == before[GONE][:3]
    assert GONE in {g for g, w in after.items() if w[2] == "gone"}
    assert any(GONE == int(name.split()[0]) for name in gone_listed(config, tmp_path))


def test_duplicate_numbers_are_settled_not_crashed(archive, fake: FakePixiv) -> None:
    config, root = archive
    before = works_of(root)
    a, b = sorted(before, key=lambda aid: before[aid][0])[:2]
    record = json.loads((root / f"artworks/{b}/pbe.json").read_text())
    record["seq"] = before[a][0]  # b now claims a's number; a was bookmarked first
    (root / f"artworks/{b}/pbe.json").write_text(json.dumps(record))
    proc = pbe(config, "reindex")
    assert proc.returncode == 0 and one_line(proc.stderr), proc.stderr
    assert f"artworks/{b}: ingress number {before[a][0]}" in proc.stderr
    after = works_of(root)
    assert after[a][0] == before[a][0]
    assert after[b][0] == max(w[0] for w in before.values()) + 1
    assert json.loads((root / f"artworks/{b}/pbe.json").read_text())["seq"] == after[b][0]
    assert pbe(config, "reindex", check=True) and works_of(root) == after  # settled for good


def test_newer_index_and_record_are_refused(archive, fake: FakePixiv) -> None:
    config, root = archive
    db = sqlite3.connect(root / ".pbe/index.sqlite3")
    db.execute("UPDATE meta SET value = 99 WHERE key = 'schema'")
    db.commit()
    db.close()
    for args in (("status",), ("sync", "--no-progress"), ("reindex",)):
        proc = pbe(config, *args)
        assert proc.returncode == 1 and one_line(proc.stderr) and "upgrade pbe-fs" in proc.stderr, (args, proc.stderr)
    db = sqlite3.connect(root / ".pbe/index.sqlite3")
    db.execute("UPDATE meta SET value = 2 WHERE key = 'schema'")
    db.commit()
    db.close()
    record_path = root / "artworks/93012346/pbe.json"
    record = json.loads(record_path.read_text())
    record["format"] = 99
    record_path.write_text(json.dumps(record))
    proc = pbe(config, "reindex")
    assert proc.returncode == 1 and "upgrade pbe-fs" in proc.stderr and one_line(proc.stderr), proc.stderr


def test_older_index_is_upgraded_with_a_copy_kept(archive, fake: FakePixiv) -> None:
    config, root = archive
    before = works_of(root)
    index = root / ".pbe/index.sqlite3"
    db = sqlite3.connect(index)
    db.execute("UPDATE meta SET value = 1 WHERE key = 'schema'")
    db.execute("DROP TABLE scrubbed")
    db.commit()
    db.close()
    proc = pbe(config, "status")
    assert proc.returncode == 0 and "format 1" in proc.stderr, proc.stderr
    assert list(index.parent.glob("index.sqlite3.v1-*"))
    assert works_of(root) == before
    assert sqlite3.connect(index).execute("SELECT value FROM meta WHERE key='schema'").fetchone()[0] == 2


def test_scrub_finds_damage_gone_first_and_refetches_live(archive, fake: FakePixiv, tmp_path: Path) -> None:
    from pbe_fs import config as config_mod
    from pbe_fs.pixiv import PixivClient
    from pbe_fs.sync import Syncer

    config, root = archive
    live_file = root / "artworks/93012346/medium/93012346_p0_master1200.jpg"
    good = live_file.read_bytes()
    live_file.write_bytes(good[:-1] + b"\x00")
    gone_file = next(p for p in (root / f"artworks/{GONE}").iterdir() if p.suffix in (".jpg", ".png"))
    gone_file.write_bytes(gone_file.read_bytes()[:-1] + b"\x01")
    cfg = config_mod.load(config)
    cfg.settings.sync.scrub_days = cfg.settings.sync.interval_minutes / (24 * 60)  # everything in one run
    result = Syncer(cfg, PixivClient(cfg.settings.pixiv), scrub=True).run()
    assert result.damaged == 2 and result.repaired == 1
    assert live_file.read_bytes() == good
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert [(d["id"], d["path"]) for d in status["damaged"]] == [(GONE, gone_file.name)]
    # one work per run when the slice is small: gone works come first
    cfg.settings.sync.scrub_days = 10_000
    db = sqlite3.connect(root / ".pbe/index.sqlite3")
    db.execute("DELETE FROM scrubbed")
    db.commit()
    db.close()
    result = Syncer(cfg, PixivClient(cfg.settings.pixiv), scrub=True).run()
    assert result.scrubbed == 1
    db = sqlite3.connect(root / ".pbe/index.sqlite3")
    assert [r[0] for r in db.execute("SELECT artwork_id FROM scrubbed")] == [GONE]


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 12 MB file system (tmpfs): the archive and temp_path both on it."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=12m", "tmpfs", str(mnt)], check=True)
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_stops_cleanly_and_resumes(small_disk: Path, fake: FakePixiv, tmp_path: Path) -> None:
    from tests.fakepixiv.data import default_works

    for n in range(40):  # enough 1 MB works to fill 12 MB several times over
        fake.add(Work(95000000 + n, f"big {n}", (7, "big", "big"), pages=1, size=(1000, 1000), noise=True))
    config = write_config(tmp_path, fake, temp_path=str(small_disk / "tmp"),
                          filesystem_options={"path": str(small_disk / "data")}, sync={"sizes": ["original"]})
    started = time.monotonic()
    proc = pbe(config, "sync", "--no-progress", timeout=120)
    assert time.monotonic() - started < 60
    assert proc.returncode == 1 and one_line(proc.stderr), proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "disk full" in line]
    assert errors and "free space and run pbe-fs sync again" in errors[-1]
    assert proc.stderr.count("retry") == 0, proc.stderr
    assert len(proc.stderr.splitlines()) < 10, proc.stderr
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert status["last_sync"]["status"] in ("failed", "interrupted")
    disk = next(line for line in pbe(config, "doctor").stdout.splitlines() if line.startswith("disk"))
    assert "FAIL" in disk and "make room before the next sync" in disk  # doctor warned
    for folder in (small_disk / "data/artworks").iterdir():  # nothing half-written is visible
        assert (folder / "pbe.json").is_file()
    subprocess.run(["mount", "-o", "remount,size=200m", str(small_disk)], check=True)
    proc = pbe(config, "sync", "--no-progress", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert_archive_exact(small_disk / "data", fake)
    assert default_works  # the stand-in's own works are all there too


def test_one_process_rebuilds_the_other_waits(archive, fake: FakePixiv) -> None:
    from tests.conftest import ROOT
    import sys

    from pbe_fs import config as config_mod
    from pbe_fs.archive import Archive

    config, root = archive
    before = works_of(root)
    for suffix in ("", "-wal", "-shm"):
        Path(str(root / ".pbe/index.sqlite3") + suffix).unlink(missing_ok=True)
    held = Archive.open(config_mod.load(config)).lock()
    with held:  # as a sync or reindex running elsewhere would
        proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "status"], text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        time.sleep(2)
        assert proc.poll() is None  # it waits...
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"waiting for pid {os.getpid()}" in err and "rebuild the index" in err  # ...and says so, in one line
    assert len([line for line in err.splitlines() if "waiting" in line]) == 1
    assert works_of(root) == before


def test_an_old_copy_of_the_index_fetches_nothing_again(archive, fake: FakePixiv) -> None:
    """An index restored from yesterday's backup lacks today's works: the
    sync finds them in the archive instead of fetching and renumbering them."""
    import shutil

    config, root = archive
    index = root / ".pbe/index.sqlite3"
    pbe(config, "status", check=True)
    shutil.copy(index, root / "yesterday.sqlite3")
    fake.add(Work(97100001, "today", (9, "z", "z")))
    fake.add(Work(97100002, "today too", (9, "z", "z")))
    pbe(config, "sync", "--no-progress", check=True)
    before_works, before_files = works_of(root), files_of(root)
    for suffix in ("-wal", "-shm"):
        Path(str(index) + suffix).unlink(missing_ok=True)
    shutil.copy(root / "yesterday.sqlite3", index)
    fake.add(Work(97100003, "tomorrow", (9, "z", "z")))
    fake.reset_counts()
    proc = pbe(config, "sync", "--no-progress")
    assert proc.returncode == 0 and one_line(proc.stderr), proc.stderr
    assert fake.calls["image"] == 4  # the new work's four sizes, nothing of the two adopted ones
    after = works_of(root)
    assert {aid: after[aid] for aid in before_works} == before_works
    assert after[97100003][0] == max(w[0] for w in before_works.values()) + 1
    assert {k: v for k, v in files_of(root).items() if k in before_files} == before_files
