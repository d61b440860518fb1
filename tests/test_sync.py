"""Sync against the stand-in pixiv server, through the real command line."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path


from pbe_fs.archive import Archive
from pbe_fs.config import load
from pbe_fs.index import Index
from tests.conftest import ROOT, pbe, write_config
from tests.fakepixiv import FakePixiv, Work
from tests.helpers import archive_files, assert_archive_exact, assert_clean, expected_ids


def sync(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return pbe(config, "sync", "--no-progress", *args, check=True)


def records(data: Path) -> dict[int, dict]:
    return {int(p.name): json.loads((p / "pbe.json").read_text()) for p in (data / "artworks").iterdir()}


def dump(data: Path) -> dict:
    index = Index(data / ".pbe" / "index.sqlite3")
    try:
        return index.dump()
    finally:
        index.close()


def test_full_sync_is_byte_exact(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    assert_archive_exact(data, fake, expected_ids(fake))
    assert_clean(data, config.parent / "tmp")
    recs = records(data)
    # raw JSON kept as served; ingress numbers 1..N, oldest bookmark first
    assert json.loads((data / "artworks/93012345/pixiv.json").read_text()) == fake.work_json(93012345)
    public_order = [wid for _, wid in fake.bookmarks["public"]]
    assert [recs[w]["seq"] for w in public_order] == list(range(1, len(public_order) + 1))
    assert sorted(r["seq"] for r in recs.values()) == list(range(1, len(recs) + 1))
    assert recs[93012362]["restrict"] == "private"
    # dimensions and formats recorded at ingest
    png = next(f for f in recs[93012348]["files"] if f["role"] == "original")
    assert (png["format"], png["mode"], png["width"], png["height"]) == ("PNG", "RGBA", 64, 48)
    gif = next(f for f in recs[93012349]["files"] if f["role"] == "original")
    assert gif["format"] == "GIF"
    assert len([f for f in recs[93012350]["files"] if f["role"] == "original"]) == 12
    # ugoira: original frames when served, the 1920x1080 zip when not; delays kept
    assert recs[93012346]["ugoira"] == {"frames": [{"file": "000000.jpg", "delay": 100}, {"file": "000001.jpg", "delay": 60},
                                                   {"file": "000002.jpg", "delay": 200}], "source": "frames"}
    assert [f["path"] for f in recs[93012346]["files"] if f["role"] == "original"] == [
        "93012346_ugoira0.jpg", "93012346_ugoira1.jpg", "93012346_ugoira2.jpg"]
    assert recs[93012347]["ugoira"]["source"] == "zip"
    assert [f["path"] for f in recs[93012347]["files"] if f["role"] in ("original", "ugoira_zip")] == ["93012347_ugoira1920x1080.zip"]
    # the index agrees with the files
    db = sqlite3.connect(data / ".pbe/index.sqlite3")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT count(*) FROM artworks").fetchone()[0] == len(recs)
    assert db.execute("SELECT count(*) FROM files").fetchone()[0] == sum(len(r["files"]) for r in recs.values())
    assert db.execute("SELECT count(DISTINCT id) FROM artists WHERE name = '同名'").fetchone()[0] == 2


def test_private_bookmarks_can_be_left_out(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, sync={"private": False, "sizes": ["original"]})
    sync(config)
    assert_archive_exact(tmp_path / "data", fake, expected_ids(fake, private=False))
    files = len(archive_files(tmp_path / "data")) - 2 * len(expected_ids(fake, private=False))
    assert files == 41 + 11 + 2  # one original each, but 12 for the manga and 3 frames for the ugoira
    assert fake.calls["image"] == files + 2  # the fallback work's 2 frames answered 404 first


def test_incremental_noop_makes_one_call_per_restrict(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    before = archive_files(data)
    generation = Index(data / ".pbe/index.sqlite3").generation()
    fake.reset_counts()
    sync(config)
    assert fake.calls["bookmarks"] == 2  # one page, public and private
    assert fake.calls["image"] == 0 and fake.calls["detail"] == 0 and fake.calls["ugoira"] == 0
    assert archive_files(data) == before
    # only the sync-run bookkeeping was written
    assert Index(data / ".pbe/index.sqlite3").generation() - generation == 2


def test_new_bookmarks_are_picked_up(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    top = max(r["seq"] for r in records(data).values())
    fake.add(Work(94000001, "new one", (7, "x", "x")))
    fake.add(Work(94000002, "newer", (7, "x", "x"), pages=2))
    fake.add(Work(94000003, "new private", (7, "x", "x")), "private")
    fake.reset_counts()
    sync(config)
    recs = records(data)
    assert [recs[i]["seq"] for i in (94000001, 94000002, 94000003)] == [top + 1, top + 2, top + 3]
    assert fake.calls["image"] == 4 + 8 + 4
    assert_archive_exact(data, fake, expected_ids(fake))


def test_faults_are_survived(fake: FakePixiv, config: Path) -> None:
    fake.fail("/v1/user/bookmarks", "500")
    fake.fail("/v1/user/bookmarks", "ratelimit")
    fake.fail("/v1/user/bookmarks", "truncate")
    fake.fail("/v1/user/bookmarks", "expire")
    fake.fail("/v1/user/bookmarks", "502html")
    fake.fail("/auth/token", "500")
    fake.fail("/v1/ugoira", "truncate")
    fake.fail("/img-original", "truncate", 3)
    fake.fail("/img-original", "502html", 2)
    fake.fail("/c/", "500", 3)
    fake.fail("/c/600x1200_90", "timeout")
    fake.timeout_delay = 2.5
    proc = sync(config)
    assert all(f.count == 0 for f in fake.faults)
    assert "rate limit" in proc.stderr and "retry" in proc.stderr
    data = config.parent / "data"
    assert_archive_exact(data, fake, expected_ids(fake))
    assert_clean(data, config.parent / "tmp")


def test_pixiv_down_fails_cleanly(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, pixiv={"retries": 2})
    fake.fail("/v1/user/bookmarks", "500", 100)
    proc = pbe(config, "sync")
    assert proc.returncode == 1
    assert "bookmarks failed 3 times" in proc.stderr.strip().splitlines()[-1]
    assert "Traceback" not in proc.stderr
    assert not list((tmp_path / "data/artworks").iterdir())
    assert "failed" in pbe(config, "status").stdout


def _published(data: Path) -> int:
    folder = data / "artworks"
    return len(list(folder.iterdir())) if folder.is_dir() else 0


def test_kill_9_at_any_moment_then_resume(tmp_path: Path) -> None:
    with FakePixiv(image_latency=0.02) as fake:
        config = write_config(tmp_path, fake)
        data, temp = tmp_path / "data", tmp_path / "tmp"
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # kill while the first download is in temp_path, then at growing numbers of published works
        for ready in (lambda: any(temp.glob("pbe-*.part")), lambda: _published(data) >= 8,
                      lambda: _published(data) >= 20, lambda: _published(data) >= 33):
            proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "sync", "--no-progress"],
                                    env=env, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
            deadline = time.monotonic() + 30
            while not ready() and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.002)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            # whatever is visible is complete
            for folder in (data / "artworks").glob("*"):
                assert (folder / "pbe.json").is_file()
        assert 0 < _published(data) < len(expected_ids(fake))  # the kills did land mid-sync
        sync(config)
        assert_archive_exact(data, fake, expected_ids(fake))
        assert_clean(data, temp)
        seqs = sorted(r["seq"] for r in records(data).values())
        assert len(set(seqs)) == len(seqs)


def test_bad_refresh_token_touches_nothing(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, pixiv={"refresh": "revoked"})
    before = config.read_bytes()
    proc = pbe(config, "sync")
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "pbe-fs: error: pixiv refused the refresh token (pixiv.refresh): get a new one with `pbe-fs login`"]
    assert config.read_bytes() == before
    assert not (tmp_path / "data").exists()


def test_rotated_tokens_are_saved_and_never_logged(fake: FakePixiv, config: Path) -> None:
    os.chmod(config, 0o640)
    fake.rotate_refresh = True
    proc = pbe(config, "-vv", "sync", "--no-progress", check=True)
    saved = json.loads(config.read_text())
    assert saved["pixiv"]["refresh"].startswith("rotated-") and saved["pixiv"]["refresh"] in fake.refresh_tokens
    assert saved["pixiv"]["access"] in fake.access_tokens
    assert saved["read_only_token"] == "seed-ro-token" and saved["display"]["home"]["ipp"] == "50"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600  # it holds secrets: private once pbe-fs writes it
    for secret in ("good-refresh", saved["pixiv"]["refresh"], saved["pixiv"]["access"]):
        assert secret not in proc.stderr
    # the next sync uses the rotated token
    sync(config)


def test_gone_and_lost(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    before = archive_files(data)
    fake.works[93012345].state = "deleted"
    fake.works[93012358].state = "limit_sanity_level"
    newcomer = Work(94100000, "hidden before we saw it", (7, "x", "x"), state="limit_unviewable")
    fake.add(newcomer)
    sync(config, "--full")
    recs = records(data)
    assert recs[93012345]["gone"]["reason"] == "limit_unknown"
    assert recs[93012358]["gone"]["reason"] == "limit_sanity_level"
    assert recs[93012345]["history"][-1]["event"] == "gone"
    assert 94100000 not in recs
    assert archive_files(data).keys() >= {k for k in before if not k.endswith("pbe.json")}
    for path, blob in before.items():
        if not path.endswith("pbe.json"):
            assert archive_files(data)[path] == blob
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert {g["id"] for g in status["gone"]} == {93012345, 93012358}
    assert [(l["id"], l["reason"]) for l in status["lost"]] == [(94100000, "limit_unviewable")]
    assert (data / "lost/94100000.json").is_file()
    text = pbe(config, "status", check=True).stdout
    assert "gone       93012345" in text and "lost       94100000" in text
    # it comes back: restored, with its files as they were
    fake.works[93012345].state = "live"
    sync(config, "--full")
    rec = records(data)[93012345]
    assert rec["gone"] is None and rec["history"][-1]["event"] == "restored"


def test_placeholder_at_the_top_marks_gone_incrementally(fake: FakePixiv, config: Path) -> None:
    sync(config)
    newest = fake.bookmarks["public"][-1][1]
    fake.works[newest].state = "deleted"
    fake.reset_counts()
    sync(config)
    assert records(config.parent / "data")[newest]["gone"]["reason"] == "limit_unknown"
    assert fake.calls["bookmarks"] == 2 and fake.calls["image"] == 0


def test_unbookmarked_works_are_kept(fake: FakePixiv, config: Path) -> None:
    sync(config)
    fake.unbookmark(93012350)
    sync(config, "--full")
    rec = records(config.parent / "data")[93012350]
    assert rec["bookmarked"] is False and rec["history"][-1]["event"] == "unbookmarked"
    assert_archive_exact(config.parent / "data", fake)


def test_full_sync_repairs_missing_and_damaged_files(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    (data / "artworks/93012350/93012350_p3.jpg").unlink()
    damaged = data / "artworks/93012345/large/93012345_p0_master1200.jpg"
    damaged.write_bytes(b"\xff\xd8 not the picture")
    fake.reset_counts()
    sync(config, "--full")
    assert fake.calls["image"] == 2
    assert_archive_exact(data, fake, expected_ids(fake))
    assert records(data)[93012350]["history"][-1] == {**records(data)[93012350]["history"][-1], "event": "repaired",
                                                       "files": ["93012350_p3.jpg"]}


def test_delete_refuses_gone_works_and_full_sync_refetches(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    seq = records(data)[93012350]["seq"]
    pbe(config, "delete", "93012350", check=True)
    assert not (data / "artworks/93012350").exists()
    assert (data / "deleted/93012350.json").is_file()
    sync(config)  # incremental: a deleted work stays deleted
    assert not (data / "artworks/93012350").exists()
    sync(config, "--full")  # still bookmarked: fetched again, same ingress number
    rec = records(data)[93012350]
    assert rec["seq"] == seq and rec["history"][-1]["event"] == "refetched"
    assert not (data / "deleted/93012350.json").exists()

    fake.works[93012345].state = "deleted"
    sync(config, "--full")
    proc = pbe(config, "delete", "93012345")
    assert proc.returncode == 1 and "--force" in proc.stderr and (data / "artworks/93012345").exists()
    pbe(config, "delete", "--force", "93012345", check=True)
    assert not (data / "artworks/93012345").exists()
    proc = pbe(config, "delete", "123")
    assert proc.returncode == 1 and "123 is not in the archive" in proc.stderr
    proc = pbe(config, "delete", "../etc")
    assert proc.returncode == 2 and "not an artwork id" in proc.stderr


def test_reindex_equals_the_synced_index(fake: FakePixiv, config: Path) -> None:
    data = config.parent / "data"
    sync(config)
    fake.works[93012345].state = "deleted"
    fake.add(Work(94100000, "lost", (7, "x", "x"), state="deleted"))
    fake.unbookmark(93012349)
    sync(config, "--full")
    pbe(config, "delete", "93012350", check=True)
    built = dump(data)
    assert built["lost"] and built["deleted"] and any(r[4] == "gone" for r in built["artworks"])
    runs = sqlite3.connect(data / ".pbe/index.sqlite3").execute("SELECT count(*) FROM sync_runs").fetchone()[0]
    pbe(config, "reindex", check=True)
    assert dump(data) == built
    assert sqlite3.connect(data / ".pbe/index.sqlite3").execute("SELECT count(*) FROM sync_runs").fetchone()[0] == runs
    # and from nothing at all
    for p in (data / ".pbe").glob("index.sqlite3*"):
        p.unlink()
    pbe(config, "reindex", check=True)
    assert dump(data) == built
    # the rebuilt index carries on: same numbering, nothing refetched
    fake.add(Work(94200000, "after reindex", (7, "x", "x")))
    fake.reset_counts()
    sync(config)
    assert records(data)[94200000]["seq"] == max(r[1] for r in built["artworks"] + built["deleted"]) + 1


def test_one_sync_at_a_time(fake: FakePixiv, config: Path) -> None:
    archive = Archive.open(load(config))
    with archive.lock():
        proc = pbe(config, "sync")
    assert proc.returncode == 1
    assert "the archive is busy" in proc.stderr and str(os.getpid()) in proc.stderr


def test_json_log_lines(fake: FakePixiv, config: Path) -> None:
    proc = pbe(config, "--log-format", "json", "sync", "--no-progress", check=True)
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    assert entries and all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert entries[-1]["message"].startswith("sync done: 44 new works")


def test_log_settings_from_config(fake: FakePixiv, tmp_path: Path) -> None:
    quiet = write_config(tmp_path, fake, log={"level": "warning"})
    assert "sync done" not in pbe(quiet, "sync", "--no-progress", check=True).stderr
    jsonish = write_config(tmp_path, fake, log={"format": "json"})
    lines = pbe(jsonish, "sync", "--no-progress", check=True).stderr.splitlines()
    assert lines and all(json.loads(line)["level"] for line in lines)
