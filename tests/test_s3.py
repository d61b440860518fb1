"""The archive in a real S3 server (SeaweedFS): sync, mount, serve, reindex,
migrate, redirects. The stand-in pixiv is the only fake."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import resource
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import zipfile
import zlib
from pathlib import Path
from typing import Any

import pytest

from bench.common import forget
from pbe_fs.config import load
from pbe_fs.fuse import BUCKET_READERS
from pbe_fs.index import Index
from pbe_fs.storage.readcache import BLOCK, ReadCache
from tests.conftest import GONE, LOST, ROOT, Mount, Server, pbe, write_config
from tests.fakepixiv import FakePixiv, Work
from tests.helpers import archive_files, expected_ids
from tests.s3rig import Proxy, SeaweedS3

PREFIX = "pbe/archive"
BIG = 95500000  # a work whose original is a 9 MB PNG of noise: two upload parts, nine read blocks


@pytest.fixture(scope="module")
def weed(tmp_path_factory):
    server = SeaweedS3(tmp_path_factory.mktemp("s3"))
    try:
        yield server
    finally:
        server.stop()


def s3_config(folder: Path, fake: FakePixiv | None, endpoint: str, bucket: str, **overrides: Any) -> Path:
    options = {"path": "./state", "endpoint_url": endpoint, "bucket": bucket, "prefix": PREFIX,
               "region": "us-east-1", "access_key": "test", "secret_key": "s3-secret-value"}
    options.update(overrides.pop("filesystem_options", {}))
    overrides.setdefault("filesystem", "s3")
    return write_config(folder, fake, filesystem_options=options, **overrides)


def bucket_files(weed: SeaweedS3, bucket: str) -> dict[str, bytes]:
    """Every object under artworks/, by path relative to it (as archive_files)."""
    base = f"{PREFIX}/artworks/"
    return {k[len(base):]: weed.get(bucket, k) for k in weed.keys(bucket, base)}


def assert_bucket_exact(weed: SeaweedS3, bucket: str, fake: FakePixiv, ids: set[int]) -> None:
    """Each complete work has exactly its recorded files, equal to what pixiv served."""
    files = bucket_files(weed, bucket)
    works = {int(k.split("/")[0]) for k in files if k.endswith("/pbe.json")}
    assert works == ids
    for aid in works:
        record = json.loads(files[f"{aid}/pbe.json"])
        held = {k.split("/", 1)[1] for k in files if k.startswith(f"{aid}/")} - {"pbe.json", "pixiv.json"}
        assert held == {f["path"] for f in record["files"]}, aid
        for f in record["files"]:
            data = files[f"{aid}/{f['path']}"]
            served = fake.file_bytes(f["url"])  # None once a work is gone from pixiv
            assert served is None or data == served, (aid, f["path"])
            assert hashlib.sha256(data).hexdigest() == f["sha256"] and zlib.crc32(data) == f["crc32"]


def assert_no_half_works(weed: SeaweedS3, bucket: str) -> None:
    """A work with a record has every file it names, whole."""
    files = bucket_files(weed, bucket)
    for key in [k for k in files if k.endswith("/pbe.json")]:
        aid = key.split("/")[0]
        for f in json.loads(files[key])["files"]:
            assert len(files.get(f"{aid}/{f['path']}", b"")) == f["size"], (aid, f["path"])


@pytest.fixture(scope="module")
def s3_synced(weed, tmp_path_factory):
    """One archive synced into a bucket: every kind of work, a big one, one gone, one lost."""
    folder = tmp_path_factory.mktemp("s3archive")
    bucket = weed.bucket("synced")
    with FakePixiv() as fake:
        fake.add(Work(BIG, "big noise", (7, "n", "n"), ext="png", size=(1800, 1300), noise=True))
        config = s3_config(folder, fake, weed.endpoint, bucket)
        pbe(config, "sync", "--no-progress", check=True)
        fake.works[GONE].state = "deleted"
        fake.add(Work(LOST, "lost", (7, "x", "x"), state="limit_unviewable"))
        pbe(config, "sync", "--full", "--no-progress", check=True)
        yield config, fake, bucket


def test_sync_puts_the_archive_layout_in_the_bucket(weed, s3_synced) -> None:
    config, fake, bucket = s3_synced
    assert_bucket_exact(weed, bucket, fake, expected_ids(fake) | {GONE})
    keys = weed.keys(bucket)
    assert f"{PREFIX}/lost/{LOST}.json" in keys and all(k.startswith(PREFIX + "/") for k in keys)
    record = json.loads(weed.get(bucket, f"{PREFIX}/artworks/{GONE}/pbe.json"))
    assert record["gone"]["reason"]
    state = config.parent / "state"
    assert not (state / "artworks").exists()  # only the index and works in progress are local
    assert not list((state / ".pbe" / "incoming").iterdir()) and not list((config.parent / "tmp").iterdir())
    head = weed.client.head_object(Bucket=bucket, Key=f"{PREFIX}/artworks/{BIG}/{BIG}_p0.png")
    assert head["ETag"].strip('"').endswith("-2")  # multipart
    assert "s3-secret-value" not in (config.parent / "state").joinpath(".pbe", "index.sqlite3").read_bytes().decode("latin-1")


def test_reindex_from_the_bucket_alone(weed, s3_synced, tmp_path) -> None:
    """A second machine: its own config and index, the same bucket."""
    config, fake, bucket = s3_synced
    other = s3_config(tmp_path, None, weed.endpoint, bucket)
    assert pbe(other, "reindex", check=True).returncode == 0
    original, rebuilt = Index(config.parent / "state/.pbe/index.sqlite3"), Index(tmp_path / "state/.pbe/index.sqlite3")
    try:
        assert rebuilt.dump() == original.dump()
    finally:
        original.close()
        rebuilt.close()
    status = json.loads(pbe(other, "status", "--json", check=True).stdout)
    assert status["artworks"] == len(expected_ids(fake)) + 1 and status["archive"].startswith("s3://synced/pbe/archive")


def test_lost_local_index_is_rebuilt_from_the_bucket_first(weed, s3_synced, tmp_path) -> None:
    """The machine that syncs loses its index: the next sync rebuilds it from
    the bucket and fetches nothing; a machine with no index just serves."""
    config, fake, bucket = s3_synced
    index_path = config.parent / "state/.pbe/index.sqlite3"
    before = Index(index_path)
    try:
        dumped = before.dump()
    finally:
        before.close()
    objects = bucket_files(weed, bucket)
    for suffix in ("", "-wal", "-shm"):
        Path(str(index_path) + suffix).unlink(missing_ok=True)
    fake.reset_counts()
    proc = pbe(config, "sync", "--no-progress")
    assert proc.returncode == 0 and "rebuilt it from the archive's files" in proc.stderr, proc.stderr
    assert fake.calls["image"] == 0 and bucket_files(weed, bucket) == objects
    after = Index(index_path)
    try:
        assert after.dump() == dumped
    finally:
        after.close()
    other = s3_config(tmp_path, None, weed.endpoint, bucket)
    status = json.loads(pbe(other, "status", "--json", check=True).stdout)
    assert status["artworks"] == len(dumped["artworks"]) and GONE in [g["id"] for g in status["gone"]]


def test_mount_reads_byte_exact_from_the_bucket(weed, s3_synced, tmp_path) -> None:
    config, fake, bucket = s3_synced
    mount = Mount(config, tmp_path / "mnt")
    try:
        for key, data in bucket_files(weed, bucket).items():
            aid, _, rest = key.partition("/")
            if rest in ("pbe.json", "pixiv.json") or int(aid) in (GONE,):
                continue
            if "/" not in rest:  # top quality files sit at the top of the artwork folder
                name = f"{aid}_ugoira.zip" if rest.endswith(".zip") else rest  # an archived frames zip
                assert mount.path("by-id", aid, name).read_bytes() == data, key
        manga = mount.path("by-id", "93012350")
        with zipfile.ZipFile(manga / "93012350.zip") as zf:
            assert zf.testzip() is None and len(zf.namelist()) == 12
            assert zf.read("93012350_p3.jpg") == (manga / "93012350_p3.jpg").read_bytes()
        info = subprocess.run(["pdfinfo", str(manga / "93012350.pdf")], capture_output=True, text=True, check=True)
        assert re.search(r"^Pages:\s+12$", info.stdout, re.M), info.stdout
        gif = mount.path("by-id", "93012346", "93012346.gif").read_bytes()
        assert gif.startswith(b"GIF89a")
        big = mount.path("by-id", str(BIG), f"{BIG}_p0.png")
        with open(big, "rb") as fh:
            fh.seek(5 * BLOCK + 17)
            part = fh.read(1000)
        assert part == fake.file_bytes_for(BIG)[5 * BLOCK + 17: 5 * BLOCK + 1017]
        assert os.statvfs(mount.mountpoint).f_bsize > 0
        # READs name a file by number alone, so the mount keeps the readers of the last files
        # read, a zip's and a PDF's with all their pages' cache files open (a data and a map
        # file each). Reading as many single-page files again (their pages dropped, so that
        # the READs reach the mount) leaves only theirs open.
        fds = Path(f"/proc/{mount.proc.pid}/fd")

        def cache_files() -> list[str]:
            links = []
            for fd in fds.iterdir():
                try:
                    links.append(os.readlink(fd))
                except FileNotFoundError:  # closed meanwhile (a reader let go of on a worker thread)
                    pass
            return [link for link in links if "/blocks/" in link]
        assert len(cache_files()) > 2 * BUCKET_READERS  # the zip's and the PDF's pages among them
        for path in (manga / f"93012350_p{n}.jpg" for n in range(BUCKET_READERS)):
            forget(path)
            path.read_bytes()
        deadline = time.monotonic() + 10  # a bucket's readers are closed on a worker thread
        while len(cache_files()) > 2 * BUCKET_READERS and time.monotonic() < deadline:
            time.sleep(0.1)
        assert 0 < len(cache_files()) <= 2 * BUCKET_READERS, cache_files()
        assert rlimit_nofile(mount.proc.pid) >= min(65536, resource.getrlimit(resource.RLIMIT_NOFILE)[1])
    finally:
        assert mount.stop() == 0, mount.stderr()


def rlimit_nofile(pid: int) -> int:
    """A process's soft limit of open files."""
    line = next(ln for ln in Path(f"/proc/{pid}/limits").read_text().splitlines() if ln.startswith("Max open files"))
    return int(line.split()[3])


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return resp.status, dict(resp.headers), resp.read()


def test_webdav_reads_by_range_through_a_bounded_cache(weed, s3_synced, tmp_path) -> None:
    """Every byte the bucket sends is counted by a proxy in front of it."""
    config, fake, bucket = s3_synced
    proxy = Proxy(weed.endpoint)
    cfg = s3_config(tmp_path, None, proxy.endpoint, bucket, cache={"path": "./cache", "read_max_gb": 0.012})
    shutil.copytree(config.parent / "state", tmp_path / "state")
    # the PDFs and animations the sync prepared, but none of the read blocks
    shutil.copytree(config.parent / "cache", tmp_path / "cache", ignore=shutil.ignore_patterns("blocks"))
    server = Server(cfg)
    try:
        url = f"{server.url}/by-id/{BIG}/{BIG}_p0.png"
        whole = fake.file_bytes_for(BIG)
        before = proxy.down
        status, headers, body = _get(url, {"Range": "bytes=4500000-4500099"})
        assert status == 206 and body == whole[4500000:4500100]
        fetched = proxy.down - before
        assert fetched < BLOCK + 8192, fetched  # one block of a 9 MB file, not the file
        before = proxy.down
        assert _get(url)[2] == whole
        fetched = proxy.down - before
        assert len(whole) - BLOCK < fetched < len(whole) + 64 * 1024, fetched  # the rest, once
        time.sleep(0.5)  # the server closes its file just after the last byte left: let it
        before = proxy.down
        assert _get(url)[2] == whole
        assert proxy.down - before < 64 * 1024  # warm: from the local cache
        # every other file too, byte-exact; the cache stays under its 12 MB cap
        for key, data in bucket_files(weed, bucket).items():
            aid, _, rest = key.partition("/")
            if "/" in rest or rest in ("pbe.json", "pixiv.json") or int(aid) == GONE:
                continue
            name = f"{aid}_ugoira.zip" if rest.endswith(".zip") else rest
            assert _get(f"{server.url}/by-id/{aid}/{name}")[2] == data, key
        assert ReadCache(tmp_path / "cache/blocks", 0).usage() <= 12_000_000 + 2 * BLOCK
    finally:
        assert server.stop() == 0, server.stderr()
        proxy.close()


def test_proxy_false_redirects_to_a_presigned_url(weed, s3_synced, tmp_path) -> None:
    config, fake, bucket = s3_synced
    cfg = s3_config(tmp_path, None, weed.endpoint, bucket, filesystem_options={"proxy": False})
    shutil.copytree(config.parent / "state", tmp_path / "state")
    server = Server(cfg)
    try:
        class NoRedirect(urllib.request.HTTPRedirectHandler):
            def redirect_request(self, *args: Any) -> None:
                return None
        opener = urllib.request.build_opener(NoRedirect)
        with pytest.raises(urllib.error.HTTPError) as found:
            opener.open(f"{server.url}/by-id/93012350/93012350_p0.jpg", timeout=10)
        assert found.value.code == 302
        location = found.value.headers["Location"]
        assert location.startswith(weed.endpoint) and "Signature" in location and "Expires" in location
        with urllib.request.urlopen(location, timeout=10) as resp:
            assert resp.read() == fake.file_bytes_for(93012350, page=0)
        # generated files have no object to point at: served as before
        status, _, body = _get(f"{server.url}/by-id/93012350/93012350.zip")
        assert status == 200 and zipfile.ZipFile(io.BytesIO(body)).testzip() is None
    finally:
        assert server.stop() == 0, server.stderr()


def test_kill_during_upload_then_resume(weed, tmp_path) -> None:
    bucket = weed.bucket("killed")
    proxy = Proxy(weed.endpoint)
    with FakePixiv() as fake:
        fake.add(Work(BIG, "big noise", (7, "n", "n"), ext="png", size=(1800, 1300), noise=True))
        config = s3_config(tmp_path, fake, proxy.endpoint, bucket, sync={"concurrency": 2})
        proxy.delay = 0.02  # slow uploads, so the kill lands in the middle of them
        proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "sync", "--no-progress"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while len(weed.keys(bucket)) < 25 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        keys = weed.keys(bucket)
        records = [k for k in keys if k.endswith("/pbe.json")]
        assert 0 < len(keys) and len(records) < len(expected_ids(fake)), "the kill came too late to test anything"
        assert_no_half_works(weed, bucket)
        index = Index(tmp_path / "state/.pbe/index.sqlite3")
        try:
            indexed = index.archived_ids()
        finally:
            index.close()
        assert {str(a) for a in indexed} <= {k.split("/")[-2] for k in records}
        proxy.delay = 0
        before = proxy.down
        pbe(config, "sync", "--no-progress", check=True)
        assert_bucket_exact(weed, bucket, fake, expected_ids(fake))
        uploaded = sum(len(v) for v in bucket_files(weed, bucket).values())
        # PDFs and animations were made from the local copies: nothing came back down but answers
        assert proxy.down - before < 1_000_000 < 9_000_000 < uploaded, (proxy.down - before, uploaded)
        assert not list((tmp_path / "state/.pbe/incoming").iterdir())
    proxy.close()


def test_migrate_local_to_s3_and_back(weed, tmp_path) -> None:
    bucket = weed.bucket("migrated")
    proxy = Proxy(weed.endpoint)
    with FakePixiv() as fake:
        config = s3_config(tmp_path, fake, proxy.endpoint, bucket, filesystem="local",
                           filesystem_options={"path": "./data"})
        pbe(config, "sync", "--no-progress", check=True)
        pbe(config, "delete", "93012349", check=True)  # a tombstone travels too
        local = archive_files(tmp_path / "data")
        ids = expected_ids(fake) - {93012349}
        # the line drops halfway: a clear error, nothing switched, then it resumes
        proxy.cut_after = sum(map(len, local.values())) // 2
        failed = pbe(config, "migrate", "--to", "s3", "--no-progress")
        assert failed.returncode == 1 and "Traceback" not in failed.stderr, failed.stderr
        assert len(failed.stderr.strip().splitlines()) == 1 and "s3://migrated/" in failed.stderr
        assert load(config).settings.filesystem == "local"
        assert_no_half_works(weed, bucket)
        proxy.restore()
        done = pbe(config, "migrate", "--to", "s3", "--no-progress", check=True)
        assert "already there" in done.stderr and " 0 already there" not in done.stderr, done.stderr
        assert load(config).settings.filesystem == "s3"
        assert_bucket_exact(weed, bucket, fake, ids)
        assert f"{PREFIX}/deleted/93012349.json" in weed.keys(bucket)
        assert {k: v for k, v in bucket_files(weed, bucket).items()} == local
        # served from the bucket now, the same tree
        server = Server(config)
        try:
            assert _get(f"{server.url}/by-id/93012350/93012350_p2.jpg")[2] == local["93012350/93012350_p2.jpg"]
        finally:
            server.stop()
        # and back to a folder that lost everything
        shutil.rmtree(tmp_path / "data" / "artworks")
        pbe(config, "migrate", "--to", "local", "--no-progress", check=True)
        assert load(config).settings.filesystem == "local"
        assert archive_files(tmp_path / "data") == local
        assert pbe(config, "doctor").stdout.count("files") >= 1
        again = pbe(config, "migrate", "--to", "local", "--no-progress")
        assert again.returncode == 1 and "already on local" in again.stderr
    proxy.close()


def test_bad_s3_settings_are_one_line_errors(weed, fake, tmp_path) -> None:
    cfg = s3_config(tmp_path, None, weed.endpoint, "")
    proc = pbe(cfg, "status")
    assert proc.returncode == 2 and "filesystem_options.bucket" in proc.stderr and "Traceback" not in proc.stderr
    cfg = s3_config(tmp_path, None, "http://127.0.0.1:9", "nowhere")
    proc = pbe(cfg, "reindex")
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and "s3://nowhere/" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    cfg = s3_config(tmp_path, None, weed.endpoint, "no-such-bucket")
    proc = pbe(cfg, "reindex")
    assert proc.returncode == 1 and "NoSuchBucket" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    cfg = s3_config(tmp_path, fake, weed.endpoint, "no-such-bucket")
    proc = pbe(cfg, "sync", "--no-progress")
    assert proc.returncode == 1 and "no such bucket" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    assert not (tmp_path / "tmp").exists() or not list((tmp_path / "tmp").iterdir())
    proc = pbe(cfg, "serve", "--port", "0")
    assert proc.returncode == 1 and "no such bucket" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    cfg = s3_config(tmp_path, None, weed.endpoint, "no-such-bucket", filesystem_options={"access_key": "", "secret_key": ""})
    proc = subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(cfg), "reindex"], capture_output=True, text=True,
                          env={k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | {
                              "PYTHONPATH": str(ROOT), "AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
                              "AWS_EC2_METADATA_DISABLED": "true"}, timeout=60)
    assert proc.returncode == 1 and "no credentials" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_read_cache_evicts_least_recently_used(tmp_path) -> None:
    cache = ReadCache(tmp_path, max_bytes=3 * BLOCK)
    for n in range(6):
        entry = cache.entry(ReadCache.ident(str(n)), BLOCK)
        entry.fill(0, os.urandom(BLOCK))
        entry.close()
        os.utime(next(tmp_path.rglob(f"{ReadCache.ident(str(n))}.map")), (n, n))
    cache.trim()
    kept = sorted(p.name.split(".")[0] for p in tmp_path.rglob("*.map"))
    assert kept == sorted(ReadCache.ident(str(n)) for n in (3, 4, 5))
    # a kept entry still knows its block; a new one starts empty
    assert cache.entry(ReadCache.ident("5"), BLOCK).has(0) and not cache.entry(ReadCache.ident("9"), BLOCK).has(0)


def test_read_cache_flags_are_only_ever_set(tmp_path) -> None:
    """A reader checking the map while another thread fills a block must not
    undo the fill (that race once left a FUSE read waiting forever)."""
    cache = ReadCache(tmp_path, max_bytes=10 * BLOCK)
    ident = ReadCache.ident("k")
    first, second = cache.entry(ident, 2 * BLOCK), cache.entry(ident, 2 * BLOCK)
    assert not second.has(0)
    first.fill(0, b"a" * BLOCK)
    assert second.has(0) and second.read(0, 3) == b"aaa"  # shared between processes through the map
    os.pwrite(second.map, b"\0", 0)  # a stale view of the map...
    assert second.has(0)  # ...never clears what is known to be there
    first.close()
    second.close()


def test_daemon_syncs_into_a_bucket_and_serves_it(weed, fake, tmp_path) -> None:
    """`pbe-fs run` on an S3 archive: first sync, WebDAV and the mount, clean stop."""
    from tests.test_daemon import get_json, wait

    bucket = weed.bucket("daemon")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = s3_config(tmp_path, fake, weed.endpoint, bucket, sync={"sizes": ["original"]},
                       webdav={"port": 0}, mount={"path": str(mnt)})
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "run"],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        assert wait(lambda: "serving WebDAV at" in log.read_text() and os.path.ismount(mnt)), log.read_text()
        url = re.search(r"serving WebDAV at (http://[\d.:]+)/", log.read_text()).group(1)
        ids = expected_ids(fake)
        assert wait(lambda: get_json(url + "/_pbe/status")["artworks"] == len(ids), 60), log.read_text()
        assert_bucket_exact(weed, bucket, fake, ids)
        jpg = fake.file_bytes_for(93012350, page=4)
        assert _get(f"{url}/by-id/93012350/93012350_p4.jpg")[2] == jpg
        assert (mnt / "by-id" / "93012350" / "93012350_p4.jpg").read_bytes() == jpg
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
        unmounted = not os.path.ismount(mnt)
        if not unmounted:
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    assert unmounted and "Traceback" not in log.read_text()


def test_doctor_reads_every_object_and_repairs_it(weed, tmp_path) -> None:
    bucket = weed.bucket("doctored")
    with FakePixiv() as fake:
        config = s3_config(tmp_path, fake, weed.endpoint, bucket, sync={"sizes": ["original"]})
        pbe(config, "sync", "--no-progress", check=True)
        key = f"{PREFIX}/artworks/93012350/93012350_p1.jpg"
        good = weed.get(bucket, key)
        weed.client.put_object(Bucket=bucket, Key=key, Body=bytes(len(good)))  # same size, no recorded SHA-256
        report = pbe(config, "doctor")
        assert report.returncode == 1 and "93012350/93012350_p1.jpg (SHA-256 differs)" in report.stdout, report.stdout
        pbe(config, "doctor", "--repair", check=False)
        assert weed.get(bucket, key) == good
        assert "files match their size and SHA-256" in pbe(config, "doctor").stdout
