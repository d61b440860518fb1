"""`pbe-fs import`: an old app's folder and a gallery-dl folder become
ordinary works, byte-exact, numbered, with history; the next sync downloads
none of what was imported and shows what pixiv has since lost in gone/."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from pbe_fs.importing.found import WITHOUT_FRAMES
from tests.conftest import ROOT, pbe, write_config
from tests.fakepixiv import FakePixiv, Work
from tests.fakepixiv.data import default_works

GONE = 93012345  # deleted on pixiv after the old app saved it
DAMAGED_LIVE = 93012348  # its original is truncated in the old app's folder; pixiv still has it
DAMAGED_GONE = 93012345  # its large image is garbled too: the only copy, kept and marked
MISSING = (93012350, 3)  # manga: page 3's original never made it to the old app's folder
QUALITIES = ("original", "large", "medium", "square_medium")


def old_app_folder(fake: FakePixiv, folder: Path, ids: list[int] | None = None) -> dict[str, bytes]:
    """The old app's folder as it left it: artworks.json (oldest bookmark
    first; no ugoira, no private works) and data/<id>/<id>_p<N>_<quality>.<ext>.
    Returns every image file's bytes by path relative to data/."""
    if ids is None:
        ids = [wid for _, wid in fake.bookmarks["public"] if fake.works[wid].type != "ugoira"]
    artworks, files = {}, {}
    for wid in ids:
        raw = fake.work_json(wid)
        artworks[str(wid)] = raw
        for page in range(fake.works[wid].pages):
            for quality, url in fake.works[wid].urls(fake.url, page).items():
                name = f"{wid}/{wid}_p{page}_{quality}.{url.rsplit('.', 1)[-1]}"
                files[name] = fake.file_bytes(url)
    if MISSING[0] in ids:
        files.pop(f"{MISSING[0]}/{MISSING[0]}_p{MISSING[1]}_original.jpg")
    if DAMAGED_LIVE in ids:
        name = f"{DAMAGED_LIVE}/{DAMAGED_LIVE}_p0_original.png"
        files[name] = files[name][: len(files[name]) // 2]
    if DAMAGED_GONE in ids:
        name = f"{DAMAGED_GONE}/{DAMAGED_GONE}_p0_large.jpg"
        files[name] = files[name][:20] + bytes(200) + files[name][220:]
    (folder / "data").mkdir(parents=True)
    for name, data in files.items():
        (folder / "data" / name).parent.mkdir(exist_ok=True)
        (folder / "data" / name).write_bytes(data)
    (folder / "artworks.json").write_text(json.dumps(artworks, ensure_ascii=False))
    (folder / "config.json").write_text(json.dumps({"filesystem": "local", "filesystem_options": {"path": "./data"}}))
    return files


def tree_digest(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``folder``: SHA-256 and mtime, to prove nothing there changed."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def record(data: Path, wid: int) -> dict:
    return json.loads((data / f"artworks/{wid}/pbe.json").read_text())


def summary(proc: subprocess.CompletedProcess[str]) -> str:
    return next(line for line in proc.stderr.splitlines() if "import done" in line)


def archived_source_files(data: Path, wid: int, source: dict[str, bytes]) -> None:
    """Each of the work's files in the archive is its source file, byte for byte."""
    rec = record(data, wid)
    for f in rec["files"]:
        quality = f["role"]
        ext = f["path"].rsplit(".", 1)[-1]
        got = (data / f"artworks/{wid}" / f["path"]).read_bytes()
        assert got == source[f"{wid}/{wid}_p{f['page']}_{quality}.{ext}"], (wid, f["path"])
        assert len(got) == f["size"] and hashlib.sha256(got).hexdigest() == f["sha256"]


def test_old_app_import_then_sync(fake: FakePixiv, tmp_path: Path) -> None:
    old = tmp_path / "old"
    source = old_app_folder(fake, old)
    raws = json.loads((old / "artworks.json").read_text())
    order = [int(k) for k in raws]
    before = tree_digest(old)
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    fake.works[GONE].state = "deleted"

    dry = pbe(config, "import", "old-app", str(old), "--dry-run", check=True)
    assert f"{len(order)} would be imported" in dry.stderr and not (data / "artworks").exists()

    proc = pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
    assert f"{len(order)} imported, 0 skipped, 2 damaged, 0 partial" in summary(proc)
    assert "sync" in proc.stderr and "every bookmark" in proc.stderr
    assert tree_digest(old) == before  # nothing at the source changed
    for n, wid in enumerate(order, 1):
        rec = record(data, wid)
        assert rec["seq"] == n, wid  # the old app's order
        assert rec["history"][0]["event"] == "imported" and rec["history"][0]["source"] == "old-app"
        assert json.loads((data / f"artworks/{wid}/pixiv.json").read_text()) == raws[str(wid)]  # as found
        archived_source_files(data, wid, source)
    damaged = {(wid, f["path"]) for wid in order for f in record(data, wid)["files"] if f.get("damaged")}
    assert damaged == {(DAMAGED_LIVE, f"{DAMAGED_LIVE}_p0.png"), (GONE, f"large/{GONE}_p0_master1200.jpg")}
    assert f"{MISSING[0]}_p{MISSING[1]}.jpg" not in {f["path"] for f in record(data, MISSING[0])["files"]}
    # Ordinary works at once: every view, and the index a reindex builds agrees.
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert status["artworks"] == len(order), status
    assert {(d["id"], d["path"]) for d in status["import_damaged"]} == damaged and not status["partial"]
    assert all(d["problem"] for d in status["import_damaged"])

    again = pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
    assert f"0 imported, {len(order)} skipped" in summary(again)

    fake.reset_counts()
    pbe(config, "sync", "--no-progress", check=True)  # not --full: the import's mark makes it walk everything
    fetched = set(fake.paths)
    for wid in order:
        rec = record(data, wid)
        urls = {f["url"] for f in rec["files"]}
        wanted = set()
        if wid == DAMAGED_LIVE:
            wanted = {fake.works[wid].urls(fake.url, 0)["original"]}
        if wid == MISSING[0]:
            wanted = {fake.works[wid].urls(fake.url, MISSING[1])["original"]}
        got = {u for u in urls if u.removeprefix(fake.url) in fetched}
        assert got == {u for u in wanted}, (wid, got)
        if wid != GONE:  # pixiv's copy now, complete and checked
            assert not any(f.get("damaged") for f in rec["files"])
            for f in rec["files"]:
                assert (data / f"artworks/{wid}" / f["path"]).read_bytes() == fake.file_bytes(f["url"])
    gone = record(data, GONE)
    assert gone["gone"] and any(f.get("damaged") for f in gone["files"])  # the only copy, kept as it was
    assert {f["path"] for f in gone["files"]} == {f"{GONE}_p0.jpg", f"large/{GONE}_p0_master1200.jpg",
                                                   f"medium/{GONE}_p0_master1200.jpg",
                                                   f"square_medium/{GONE}_p0_square1200.jpg"}
    # what the old app skipped (ugoira, private bookmarks) was fetched
    skipped = {wid for _, wid in fake.bookmarks["private"]} | {w for w, _ in [(93012346, 0), (93012347, 0)]}
    assert all((data / f"artworks/{wid}/pbe.json").exists() for wid in skipped)
    assert not (data / ".pbe/walk-after-import").exists()
    fake.reset_counts()
    pbe(config, "sync", "--no-progress", check=True)
    assert fake.calls["bookmarks"] == 2  # incremental again: one page of each list
    db = sqlite3.connect(data / ".pbe/index.sqlite3")
    assert [r[0] for r in db.execute("SELECT mode FROM sync_runs ORDER BY id")] == ["full", "incremental"]
    db.close()
    listing = pbe(config, "status", "--json", check=True)
    assert json.loads(listing.stdout)["gone"], listing.stdout
    # pixiv's copy replaced the damaged file of the live work; the gone one's is still the one imported
    assert [(d["id"], d["path"]) for d in json.loads(listing.stdout)["import_damaged"]] == [
        (GONE, f"large/{GONE}_p0_master1200.jpg")]
    text = pbe(config, "status", check=True).stdout
    assert f"damaged    {GONE}/large/{GONE}_p0_master1200.jpg imported" in text and str(DAMAGED_LIVE) not in text


def left_in_session(sid: int) -> list[int]:
    """Live processes of a session (zombies are not running anything)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[3]) == sid and fields[0] != "Z":
                found.append(int(proc.name))
    return found


def test_kill_nine_then_the_same_command_finishes_byte_exact(tmp_path: Path) -> None:
    works = default_works() + [(Work(95000000 + n, f"many {n}", (7000 + n % 9, f"a{n % 9}", f"a{n % 9}")), "public")
                               for n in range(500)]
    with FakePixiv(works) as fake:
        old = tmp_path / "old"
        source = old_app_folder(fake, old)
        order = [int(k) for k in json.loads((old / "artworks.json").read_text())]
        config = write_config(tmp_path, fake)
        data = tmp_path / "data"
        cmd = [sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "import", "old-app", str(old), "--no-progress"]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        # how long a whole import takes on this machine (into another archive), so that the
        # kills land in its first half however fast the machine is
        (tmp_path / "probe").mkdir()
        started = time.monotonic()
        pbe(write_config(tmp_path / "probe", fake), "import", "old-app", str(old), "--no-progress", check=True)
        took = time.monotonic() - started
        rng = random.Random(15)
        kills = 0
        for attempt in range(12):
            proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                    start_new_session=True)
            time.sleep(took * (0.2 + rng.random() * 0.3))
            if proc.poll() is not None:
                break
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            kills += 1
            # its worker processes (and their forkserver) end with it
            deadline = time.monotonic() + 10
            while left_in_session(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not left_in_session(proc.pid), "an import killed with -9 left its workers running"
            # nothing half-visible: every folder under artworks/ is a whole work
            for folder in (data / "artworks").iterdir() if (data / "artworks").exists() else []:
                rec = json.loads((folder / "pbe.json").read_text())
                assert {f["path"] for f in rec["files"]} <= {str(p.relative_to(folder)) for p in folder.rglob("*")}
        assert kills >= 2, "the import finished before it could be interrupted: slow it down"
        pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
        again = pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
        assert f"0 imported, {len(order)} skipped" in summary(again)  # a second run imports nothing
        seqs = [record(data, wid)["seq"] for wid in order]
        assert seqs == list(range(1, len(order) + 1))  # every number once, in the old app's order, no gaps
        for wid in order:
            archived_source_files(data, wid, source)
        assert not any((data / ".pbe/incoming").iterdir())
        db = sqlite3.connect(data / ".pbe/index.sqlite3")
        assert db.execute("SELECT count(*) FROM artworks").fetchone()[0] == len(order)
        db.close()


def gallery_dl(fake: FakePixiv, base: Path, *args: str) -> Path:
    """Download the stand-in's public bookmarks with the real gallery-dl
    (tests/gallerydl_run.py points it at the stand-in); return its folder."""
    config = base.parent / f"{base.name}.gallery-dl.json"
    config.write_text(json.dumps({"extractor": {"base-directory": str(base), "pixiv": {"refresh-token": "good-refresh"}},
                                  "cache": {"file": None}}))
    proc = subprocess.run([sys.executable, "-m", "tests.gallerydl_run", fake.url, "--config-ignore", "-c", str(config),
                           *args, f"https://www.pixiv.net/en/users/{fake.user_id}/bookmarks/artworks"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return base / "pixiv" / "bookmarks" / f"{fake.user_id} me_acct"


def downloaded(folder: Path) -> dict[int, dict[str, bytes]]:
    """gallery-dl's files by work id and name (sidecars left out)."""
    works: dict[int, dict[str, bytes]] = {}
    for p in folder.rglob("*_p*"):
        if p.is_file() and not p.name.endswith(".json"):
            works.setdefault(int(p.name.split("_")[0]), {})[p.name] = p.read_bytes()
    return works


def test_gallery_dl_with_sidecars(fake: FakePixiv, tmp_path: Path) -> None:
    folder = gallery_dl(fake, tmp_path / "gdl", "--write-metadata")
    files = downloaded(folder)
    before = tree_digest(tmp_path / "gdl")
    fake.works[GONE].state = "deleted"
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    proc = pbe(config, "import", "gallery-dl", str(tmp_path / "gdl"), "--no-progress", check=True)
    assert f"{len(files)} imported, 0 skipped, 0 damaged, 0 partial" in summary(proc)
    assert tree_digest(tmp_path / "gdl") == before
    by_date = sorted(files, key=lambda wid: (fake.works[wid].created, wid))
    assert [record(data, wid)["seq"] for wid in by_date] == list(range(1, len(files) + 1))
    for wid, names in files.items():
        rec = record(data, wid)
        raw = json.loads((data / f"artworks/{wid}/pixiv.json").read_text())
        assert raw["tags"] and all(isinstance(t, dict) and t["name"] for t in raw["tags"])  # pixiv's shape
        assert raw["title"] == fake.works[wid].title and raw["user"]["id"] == fake.works[wid].artist[0]
        kept = json.loads((data / f"artworks/{wid}/import.gallery-dl.json").read_text())
        assert set(kept["sidecars"]) == set(names)  # gallery-dl's own metadata, kept as found
        assert rec["history"][0]["source"] == "gallery-dl"
        got = {Path(f["path"]).name: (data / f"artworks/{wid}" / f["path"]).read_bytes() for f in rec["files"]}
        if fake.works[wid].type == "ugoira":
            assert rec["ugoira"]["frames"] and [f["role"] for f in rec["files"]] == ["ugoira_zip"]
            assert list(got.values()) == list(names.values())
        else:
            assert got == names  # byte-exact, under pixiv's own names
    fake.reset_counts()
    pbe(config, "sync", "--no-progress", check=True)
    originals = {fake.works[wid].urls(fake.url, p)["original"].removeprefix(fake.url)
                 for wid in files for p in range(fake.works[wid].pages)}
    assert not originals & set(fake.paths)  # nothing imported was downloaded again
    assert record(data, GONE)["gone"] and record(data, GONE)["files"][0]["path"] == f"{GONE}_p0.jpg"
    live = [wid for wid in files if wid != GONE]
    assert all(not record(data, wid).get("gone") for wid in live)


def test_gallery_dl_without_sidecars(fake: FakePixiv, tmp_path: Path) -> None:
    folder = gallery_dl(fake, tmp_path / "gdl")
    files = downloaded(folder)
    # users move things around: an artist's folder in gallery-dl's per-artist layout
    artist = tmp_path / "gdl" / "pixiv" / "11223 artist_acct"
    artist.mkdir(parents=True)
    (folder / f"{GONE}_p0.jpg").rename(artist / f"{GONE}_p0.jpg")
    fake.works[GONE].state = "deleted"
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    proc = pbe(config, "import", "gallery-dl", str(tmp_path / "gdl" / "pixiv"), "--no-progress", check=True)
    ugoira = [wid for wid in files if fake.works[wid].type == "ugoira"]
    assert f"{len(files)} imported, 0 skipped, 0 damaged, {1 + len(ugoira)} partial" in summary(proc)
    gone = record(data, GONE)
    assert gone["partial"] and json.loads((data / f"artworks/{GONE}/pixiv.json").read_text())["user"]["id"] == 11223
    assert (data / f"artworks/{GONE}/{GONE}_p0.jpg").read_bytes() == files[GONE][f"{GONE}_p0.jpg"]
    for wid in files:
        if wid != GONE:  # pixiv still has it: its metadata came from pixiv, whole
            assert json.loads((data / f"artworks/{wid}/pixiv.json").read_text()) == fake.work_json(wid)
            assert ("partial" in record(data, wid)) == (wid in ugoira)
    fake.reset_counts()
    pbe(config, "sync", "--no-progress", check=True)
    originals = {fake.works[wid].urls(fake.url, p)["original"].removeprefix(fake.url)
                 for wid in files if wid not in ugoira for p in range(fake.works[wid].pages)}
    assert not originals & set(fake.paths)
    assert record(data, GONE)["gone"]


def test_link_move_and_kept_out(fake: FakePixiv, tmp_path: Path) -> None:
    ids = [93012348, 93012349, 93012350, 93012353]
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    pbe(config, "sync", "--no-progress", check=True)
    seqs = {wid: record(data, wid)["seq"] for wid in ids}
    pbe(config, "delete", "--keep-out", "93012353", check=True)  # the user wants this one out
    for wid in ids[:3]:
        pbe(config, "delete", str(wid), check=True)
    old = tmp_path / "old"
    old_app_folder(fake, old, ids)
    linked = pbe(config, "import", "old-app", str(old), "--link", "--no-progress", check=True)
    assert "3 imported, 1 skipped" in summary(linked) and "1 kept out" in summary(linked)
    assert not (data / "artworks/93012353").exists()
    f = record(data, 93012349)["files"][0]
    src = old / "data" / "93012349" / "93012349_p0_original.gif"
    assert os.stat(data / "artworks/93012349" / f["path"]).st_ino == os.stat(src).st_ino  # one file, two names
    assert {wid: record(data, wid)["seq"] for wid in ids[:3]} == {wid: seqs[wid] for wid in ids[:3]}  # numbers kept
    moved_from = tmp_path / "old2"
    old_app_folder(fake, moved_from, [93012353])
    moved = pbe(config, "import", "old-app", str(moved_from), "--move", "--include-kept-out", "--no-progress", check=True)
    assert "1 imported" in summary(moved)
    assert not list((moved_from / "data").rglob("*.jpg"))  # moved, now that the work is committed
    rec = record(data, 93012353)
    assert [h["event"] for h in rec["history"]][-1] == "imported" and "kept_out" in [h["event"] for h in rec["history"]]
    assert rec["seq"] == seqs[93012353]


def test_imported_works_appear_in_a_running_server(fake: FakePixiv, tmp_path: Path) -> None:
    from tests.conftest import Server, http_request

    config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
    old = tmp_path / "old"
    old_app_folder(fake, old, [GONE, 93012353])
    fake.works[GONE].state = "deleted"  # pixiv has lost it: the sync never saw it, the old app kept it
    pbe(config, "sync", "--no-progress", check=True)
    server = Server(config)
    try:
        assert http_request(server.url, "GET", f"/by-id/{GONE}/")[0] == 404
        pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
        deadline = time.monotonic() + 10
        while http_request(server.url, "GET", f"/by-id/{GONE}/")[0] != 200:
            assert time.monotonic() < deadline, "the imported work never appeared"
            time.sleep(0.2)
        status, _, body = http_request(server.url, "GET", f"/by-id/{GONE}/{GONE}_p0.jpg")
        assert status == 200 and body == (old / "data" / str(GONE) / f"{GONE}_p0_original.jpg").read_bytes()
    finally:
        assert server.stop() == 0


def test_into_a_bucket(fake: FakePixiv, tmp_path: Path) -> None:
    from tests.s3rig import SeaweedS3
    from tests.test_s3 import PREFIX, s3_config

    ids = [GONE, 93012350, 93012353]
    old = tmp_path / "old"
    source = old_app_folder(fake, old, ids)
    fake.works[GONE].state = "deleted"
    weed = SeaweedS3(tmp_path / "s3")
    try:
        bucket = weed.bucket("imported")
        config = s3_config(tmp_path, fake, weed.endpoint, bucket)
        proc = pbe(config, "import", "old-app", str(old), "--link", "--no-progress", check=True)
        assert "3 imported" in summary(proc)
        for wid in ids:
            rec = json.loads(weed.get(bucket, f"{PREFIX}/artworks/{wid}/pbe.json"))
            for f in rec["files"]:
                got = weed.get(bucket, f"{PREFIX}/artworks/{wid}/{f['path']}")
                ext = f["path"].rsplit(".", 1)[-1]
                assert got == source[f"{wid}/{wid}_p{f['page']}_{f['role']}.{ext}"]
        imported = {f["url"].removeprefix(fake.url) for wid in ids
                    for f in json.loads(weed.get(bucket, f"{PREFIX}/artworks/{wid}/pbe.json"))["files"]
                    if not f.get("damaged")}
        fake.reset_counts()
        pbe(config, "sync", "--no-progress", check=True)
        assert not imported & set(fake.paths)
        assert json.loads(weed.get(bucket, f"{PREFIX}/artworks/{GONE}/pbe.json"))["gone"]
    finally:
        weed.stop()


def test_remote_old_app_completes_archived_works(fake: FakePixiv, tmp_path: Path) -> None:
    """The old app's images on its HTTP server; works a sync archived in one
    size only are given the other sizes the old app has."""
    import functools
    import http.server
    import threading

    ids = [93012348, 93012349, 93012350]
    old = tmp_path / "old"
    source = old_app_folder(fake, old, ids)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(old / "data"))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        (old / "config.json").write_text(json.dumps({"filesystem": "remote", "filesystem_options": {
            "server": f"http://127.0.0.1:{httpd.server_address[1]}"}}))
        config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
        data = tmp_path / "data"
        pbe(config, "sync", "--no-progress", check=True)
        before = {wid: record(data, wid) for wid in ids}
        proc = pbe(config, "import", "old-app", str(old), "--no-progress", check=True)
        assert "0 imported" in summary(proc) and "3 archived works completed" in summary(proc)
        for wid in ids:
            rec = record(data, wid)
            assert rec["seq"] == before[wid]["seq"]
            added = {f["path"] for f in rec["files"]} - {f["path"] for f in before[wid]["files"]}
            assert added and all(p.split("/")[0] in QUALITIES[1:] for p in added)
            assert rec["history"][-1]["event"] == "imported" and sorted(rec["history"][-1]["files"]) == sorted(added)
            for f in rec["files"]:
                if f["path"] in added:
                    ext = f["path"].rsplit(".", 1)[-1]
                    assert (data / f"artworks/{wid}" / f["path"]).read_bytes() == \
                        source[f"{wid}/{wid}_p{f['page']}_{f['role']}.{ext}"]
        # the damaged original of 93012348 was not let in over the archived good one
        assert not any(f.get("damaged") for f in record(data, 93012348)["files"])
    finally:
        httpd.shutdown()


def test_bad_input_is_one_line_and_changes_nothing(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake)
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "artworks.json").write_text('{"1": ')
    for args, words in [(["old-app", str(tmp_path / "nope")], "is not a folder"),
                        (["old-app", str(tmp_path / "empty")], "artworks.json is missing"),
                        (["old-app", str(tmp_path / "broken")], "not readable JSON"),
                        (["gallery-dl", str(tmp_path / "data")], "inside the archive")]:
        proc = pbe(config, "import", *args, "--no-progress")
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
        assert len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "data" / "artworks").exists() or not any((tmp_path / "data" / "artworks").iterdir())
    proc = pbe(config, "import", "gallery-dl", str(tmp_path / "empty"), "--no-progress", check=True)
    assert "found no work" in proc.stderr


def test_gallery_dl_download_archive(fake: FakePixiv, tmp_path: Path) -> None:
    """gallery-dl's --download-archive database, made by gallery-dl itself:
    pages it records that the folder lacks mark the work partial, works it
    records with no file left are reported as missing; it is found below the
    folder, or named with --archive."""
    db = tmp_path / "gdl-archive.sqlite3"
    folder = gallery_dl(fake, tmp_path / "gdl", "--download-archive", str(db))
    entries = [e for (e,) in sqlite3.connect(db).execute("SELECT entry FROM archive")]
    assert f"pixivf_{fake.user_id}_{MISSING[0]}{MISSING[1]}.jpg" in entries  # gallery-dl's bookmark format
    files = downloaded(folder)
    gone_page = folder / f"{MISSING[0]}_p{MISSING[1]}.jpg"
    gone_page.unlink()  # lost after gallery-dl downloaded it
    lost = 93012349
    for name in files.pop(lost):
        (folder / name).unlink()
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    bad = pbe(config, "import", "gallery-dl", str(folder), "--archive", str(tmp_path / "nothing.db"))
    assert bad.returncode == 2 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
    bad = pbe(config, "import", "gallery-dl", str(folder), "--archive", str(config))
    assert bad.returncode == 2 and "not gallery-dl's download archive" in bad.stderr
    # found below the folder on its own
    (folder / "archive.sqlite3").write_bytes(db.read_bytes())
    dry = pbe(config, "import", "gallery-dl", str(folder), "--dry-run", check=True)
    assert "1 works gallery-dl's download archive records have no file here" in dry.stderr
    (folder / "archive.sqlite3").unlink()
    proc = pbe(config, "import", "gallery-dl", str(folder), "--archive", str(db), "--no-progress", check=True)
    ugoira = [wid for wid in files if fake.works[wid].type == "ugoira"]
    line = summary(proc)
    assert f"{len(files)} imported" in line and f"{1 + len(ugoira)} partial" in line and "1 missing" in line
    assert str(lost) in proc.stderr and not (data / f"artworks/{lost}").exists()
    rec = record(data, MISSING[0])
    assert any(f"p{MISSING[1]}" in why and "download archive" in why for why in rec["partial"])
    assert len(rec["files"]) == fake.works[MISSING[0]].pages - 1
    assert all("partial" not in record(data, wid) for wid in files if wid not in ugoira and wid != MISSING[0])


def test_converted_ugoira(fake: FakePixiv, tmp_path: Path) -> None:
    """An animation gallery-dl's ugoira post-processor converted (a GIF, an
    MP4) is kept as imported media: byte-exact, its length and SHA-256
    recorded, the record partial; the next sync fetches pixiv's frames zip."""
    from PIL import Image

    wid = 93012346  # an ugoira the stand-in still serves
    folder = tmp_path / "gdl" / "pixiv" / "bookmarks" / f"{fake.user_id} me_acct"
    folder.mkdir(parents=True)
    frames = [Image.new("RGB", (16, 16), colour) for colour in ("red", "green", "blue")]
    frames[0].save(folder / f"{wid}_p0.gif", save_all=True, append_images=frames[1:], duration=[100, 60, 200], loop=0)
    # no ffmpeg here: an MP4 made by hand (a file-type box and an empty media box), checked by length and hash only
    mp4 = (24).to_bytes(4, "big") + b"ftypisom" + (512).to_bytes(4, "big") + b"isomiso2" + (8).to_bytes(4, "big") + b"mdat"
    (folder / f"{wid}_p0.mp4").write_bytes(mp4)
    made = {name: (folder / name).read_bytes() for name in (f"{wid}_p0.gif", f"{wid}_p0.mp4")}
    config = write_config(tmp_path, fake)
    data = tmp_path / "data"
    proc = pbe(config, "import", "gallery-dl", str(tmp_path / "gdl"), "--no-progress", check=True)
    assert "1 imported, 0 skipped, 0 damaged, 1 partial" in summary(proc)
    rec = record(data, wid)
    assert any("converted media" in why for why in rec["partial"])
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert [p["id"] for p in status["partial"]] == [wid] and status["partial"][0]["why"] == rec["partial"]
    assert f"partial    1 imported works with incomplete records (`status --json` says why): {wid}" in \
        pbe(config, "status", check=True).stdout
    assert {f["path"]: f["role"] for f in rec["files"]} == {f"imported/{n}": "imported_media" for n in made}
    for f in rec["files"]:
        body = (data / f"artworks/{wid}" / f["path"]).read_bytes()
        assert body == made[Path(f["path"]).name]
        assert f["size"] == len(body) and f["sha256"] == hashlib.sha256(body).hexdigest()
    fake.reset_counts()
    pbe(config, "sync", "--full", "--no-progress", check=True)
    assert [p for p in fake.paths if p.endswith(f"/{wid}_ugoira1920x1080.zip")]  # pixiv's frames, fetched now
    rec = record(data, wid)
    roles = sorted(f["role"] for f in rec["files"])
    assert roles.count("imported_media") == 2 and roles.count("ugoira_zip") == 1
    assert [f["delay"] for f in rec["ugoira"]["frames"]] == fake.works[wid].frames
    # complete now: the record says so, and so do its history and `status`
    assert "partial" not in rec and rec["history"][-1]["resolved"] == [WITHOUT_FRAMES]
    status = json.loads(pbe(config, "status", "--json", check=True).stdout)
    assert status["partial"] == [] and "partial" not in pbe(config, "status", check=True).stdout
    for name, body in made.items():  # what was imported stays as it was
        assert (data / f"artworks/{wid}/imported/{name}").read_bytes() == body
