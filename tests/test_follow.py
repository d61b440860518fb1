"""One bucket, two machines: a writer syncs, a follower serves and keeps up.

Both are real pbe-fs processes on one SeaweedFS bucket; the stand-in pixiv
is the only fake.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import Mount, Server, pbe
from tests.fakepixiv import FakePixiv, Work
from tests.helpers import descendants
from tests.s3rig import SeaweedS3
from tests.test_s3 import PREFIX, s3_config, weed  # noqa: F401 (weed: the module's SeaweedFS)

BOUND = 10.0  # seconds from the writer's commit to the follower showing it
ARTIST = (7100, "Follow Artist", "follow_artist")


def machines(tmp_path: Path, fake: FakePixiv, endpoint: str, bucket: str) -> tuple[Path, Path]:
    """(writer's config, follower's config): two folders, one bucket."""
    (tmp_path / "writer").mkdir()
    (tmp_path / "follower").mkdir()
    writer = s3_config(tmp_path / "writer", fake, endpoint, bucket, sync={"sizes": ["original"]})
    follower = s3_config(tmp_path / "follower", None, endpoint, bucket, filesystem_options={"follow": True})
    return writer, follower


def synced(weed: SeaweedS3, tmp_path: Path, name: str, fake: FakePixiv) -> tuple[Path, Path]:
    """A bucket the writer has synced once, and a follower's config for it."""
    writer, follower = machines(tmp_path, fake, weed.endpoint, weed.bucket(name))
    pbe(writer, "sync", "--no-progress", check=True)
    return writer, follower


def two_writers(tmp_path: Path, fake: FakePixiv, endpoint: str, bucket: str) -> tuple[Path, Path]:
    """Two machines that may both sync the bucket."""
    configs = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        configs.append(s3_config(tmp_path / name, fake, endpoint, bucket, sync={"sizes": ["original"]}))
    return configs[0], configs[1]


def listed(url: str, folder: str) -> set[str]:
    """Names in a folder, as the follower's server lists it (PROPFIND depth 1)."""
    req = urllib.request.Request(f"{url}/{folder}/", method="PROPFIND", headers={"Depth": "1"})
    with urllib.request.urlopen(req, timeout=15) as resp:
        body = resp.read().decode()
    import re
    hrefs = re.findall(r"<D:href>([^<]+)</D:href>", body, re.I) or re.findall(r"<href>([^<]+)</href>", body)
    return {urllib.request.unquote(h.rstrip("/").rsplit("/", 1)[-1]) for h in hrefs} - {folder}


def within(predicate, bound: float = BOUND) -> float:
    """Seconds until predicate holds; fails after ``bound``."""
    start = time.monotonic()
    while True:
        if predicate():
            return time.monotonic() - start
        if time.monotonic() - start > bound:
            raise AssertionError(f"not within {bound} s")
        time.sleep(0.1)


def small_pixiv(count: int) -> FakePixiv:
    return FakePixiv([(Work(96000000 + n, f"work {n}", ARTIST), "public") for n in range(count)])


def test_follower_shows_new_gone_restored_and_deleted_works_within_the_bound(weed, tmp_path) -> None:
    with small_pixiv(3) as fake:
        writer, follower = synced(weed, tmp_path, "follow-live", fake)
        assert weed.keys("follow-live", f"{PREFIX}/journal/head.json")  # the writer published its first commits
        server = Server(follower)
        mount = Mount(follower, tmp_path / "mnt")
        try:
            by_id = mount.path("by-id")
            assert {p.name for p in by_id.iterdir()} == {str(w) for w in fake.works}
            # a new bookmark, synced by the writer
            fake.add(Work(96000100, "new one", ARTIST))
            pbe(writer, "sync", "--no-progress", check=True)
            within(lambda: "96000100" in listed(server.url, "by-id"))
            within(lambda: (by_id / "96000100").is_dir())
            assert (by_id / "96000100" / "96000100_p0.jpg").read_bytes() == fake.file_bytes_for(96000100, page=0)
            # gone, then restored
            fake.works[96000001].state = "deleted"
            pbe(writer, "sync", "--full", "--no-progress", check=True)
            within(lambda: any(n.startswith("96000001 ") for n in listed(server.url, "gone")))
            within(lambda: any(p.name.startswith("96000001 ") for p in mount.path("gone").iterdir()))
            fake.works[96000001].state = "live"
            pbe(writer, "sync", "--full", "--no-progress", check=True)
            within(lambda: not any(n.startswith("96000001 ") for n in listed(server.url, "gone")))
            # changed on pixiv: the new title reaches the follower's folder names
            fake.works[96000000].title = "renamed"
            pbe(writer, "sync", "--full", "--no-progress", check=True)
            within(lambda: any(n.endswith("96000000 renamed") for n in listed(server.url, "by-ingress")))
            # deleted from the archive on the writer
            pbe(writer, "delete", "96000002", check=True)
            within(lambda: "96000002" not in listed(server.url, "by-id"))
            within(lambda: not (by_id / "96000002").exists())
            # the follower is read-only, and says who writes
            req = urllib.request.Request(f"{server.url}/by-id/96000000/", method="DELETE")
            req.add_header("Authorization", "Basic " + __import__("base64").b64encode(b"x:seed-ro-token").decode())
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(req, timeout=10)
            assert refused.value.code == 403 and "follows the bucket" in refused.value.read().decode()
            req = urllib.request.Request(f"{server.url}/_pbe/refresh", method="POST", data=b"")
            req.add_header("Authorization", "Basic " + __import__("base64").b64encode(b"x:seed-ro-token").decode())
            with pytest.raises(urllib.error.HTTPError) as busy:
                urllib.request.urlopen(req, timeout=10)
            text = busy.value.read().decode()
            assert busy.value.code == 409 and "writer" in text, text
            assert pbe(follower, "sync", "--no-progress").returncode == 1
        finally:
            assert mount.stop() == 0, mount.log.read_text()
            assert server.stop() == 0, server.log.read_text()
        logs = server.log.read_text() + mount.log.read_text()
        assert "Traceback" not in logs and "follower: rebuilding" not in logs  # built once, at the journal's head


def test_follower_restarted_after_many_changes_catches_up(weed, tmp_path) -> None:
    with small_pixiv(2) as fake:
        writer, follower = synced(weed, tmp_path, "follow-later", fake)
        server = Server(follower)
        try:
            within(lambda: len(listed(server.url, "by-id")) == 2)
        finally:
            assert server.stop() == 0
        # many commits while the follower is away: each sync publishes at least one entry
        for n in range(6):
            fake.add(Work(96000200 + n, f"while away {n}", ARTIST))
            pbe(writer, "sync", "--no-progress", check=True)
        pbe(writer, "delete", "96000000", check=True)
        head = json.loads(weed.get("follow-later", f"{PREFIX}/journal/head.json"))
        assert head["serial"] >= 7
        server = Server(follower)
        try:
            want = {str(w) for w in fake.works} - {"96000000"}
            within(lambda: listed(server.url, "by-id") == want)
        finally:
            assert server.stop() == 0
        assert "rebuilding" not in server.log.read_text()  # caught up from the journal, not by a rebuild


def test_a_follower_too_far_behind_rebuilds_and_goes_on_from_the_head(weed, tmp_path) -> None:
    """Entries it needs were pruned (or the journal is another one): a
    rebuild from the bucket, then the journal's head is its place."""
    from pbe_fs.archive import Archive
    from pbe_fs.config import load
    from pbe_fs.follow import Follower, read_head

    with small_pixiv(3) as fake:
        writer, follower = synced(weed, tmp_path, "follow-behind", fake)
        pbe(writer, "delete", "96000001", check=True)
        archive = Archive.open(load(follower))
        head = read_head(archive.store)
        follow = Follower(archive)
        try:
            with follow.index.write() as db:  # a place before the oldest entry kept
                db.execute("INSERT OR REPLACE INTO meta VALUES ('follow_epoch', ?), ('follow_serial', ?)",
                           (head["epoch"], head["oldest"] - 5))
            follow.poll()
            assert follow.index.archived_ids() == {96000000, 96000002}
            assert follow._position() == (head["epoch"], head["serial"])
            assert follow.poll() == 0  # nothing new: one 304
        finally:
            follow.stop()


def test_reindex_while_serving_is_seen_without_a_restart(weed, tmp_path) -> None:
    """`pbe-fs reindex` replaces the index file; a running server reads the new one."""
    bucket = weed.bucket("follow-reindex")
    with small_pixiv(2) as fake:
        first, second = two_writers(tmp_path, fake, weed.endpoint, bucket)
        pbe(first, "sync", "--no-progress", check=True)
        pbe(second, "reindex", check=True)
        server = Server(second)
        try:
            assert len(listed(server.url, "by-id")) == 2
            fake.add(Work(96000300, "after", ARTIST))
            pbe(first, "sync", "--no-progress", check=True)
            pbe(second, "reindex", check=True)
            within(lambda: "96000300" in listed(server.url, "by-id"))
            fds = [os.readlink(f"/proc/{pid}/fd/{fd}") for pid in [server.proc.pid, *descendants(server.proc.pid)]
                   for fd in os.listdir(f"/proc/{pid}/fd")]
            # the server (a worker of it) reads the new file (threads idle since drop the old one at their next request)
            assert [f for f in fds if f.endswith("/index.sqlite3")], fds
        finally:
            assert server.stop() == 0


def test_a_second_writer_is_refused_until_the_lease_is_broken(weed, tmp_path) -> None:
    bucket = weed.bucket("follow-lease")
    with small_pixiv(1) as fake:
        first, second = two_writers(tmp_path, fake, weed.endpoint, bucket)
        pbe(first, "sync", "--no-progress", check=True)
        assert not weed.keys(bucket, f"{PREFIX}/journal/lease.json")  # released at the end
        # a writer that died holding the lease: its object stays behind
        lease = {"owner": "elsewhere:/x", "machine": "elsewhere", "pid": 4242, "since": "2026-01-01T00:00:00+00:00",
                 "until": time.time() + 600}
        weed.client.put_object(Bucket=bucket, Key=f"{PREFIX}/journal/lease.json", Body=json.dumps(lease).encode())
        refused = pbe(second, "sync", "--no-progress")
        assert refused.returncode == 1 and "elsewhere (pid 4242" in refused.stderr, refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1 and "--break-lock" in refused.stderr
        fake.add(Work(96000400, "by the second writer", ARTIST))
        done = pbe(second, "sync", "--no-progress", "--break-lock")
        assert done.returncode == 0 and "elsewhere" in done.stderr, done.stderr
        assert weed.keys(bucket, f"{PREFIX}/artworks/96000400/pbe.json")


def _generated(root: Path) -> dict[str, bytes]:
    """Every generated file of the mixed works, read through a mount at root."""
    out = {}
    for aid in ("93012350", "93012348", "93012349", "93012346", "93012347", "93012364"):
        folder = root / "by-id" / aid
        for name in sorted(os.listdir(folder)):
            if name.endswith((".pdf", ".zip", ".gif", ".webp", ".json")):
                out[f"{aid}/{name}"] = (folder / name).read_bytes()
    return out


def _etags(url: str, keys: list[str]) -> dict[str, str]:
    tags = {}
    for key in keys:
        req = urllib.request.Request(f"{url}/by-id/{key}", method="HEAD")
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                tags[key] = resp.headers["ETag"]
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"HEAD {url}/by-id/{key}: {exc.code}") from None
    return tags


def test_generated_files_are_the_same_bytes_everywhere(weed, tmp_path) -> None:
    """PDF, zip, gif, webp and meta.json: equal after the cache is lost, and on
    a second machine; ETags equal too, and they follow the renderers' versions."""
    import shutil

    from pbe_fs.render.cache import Cache, renderers
    bucket = weed.bucket("follow-bytes")
    with FakePixiv() as fake:
        writer, follower = machines(tmp_path, fake, weed.endpoint, bucket)
        pbe(writer, "sync", "--no-progress", check=True)
        mount = Mount(writer, tmp_path / "mnt-w")
        try:
            first = _generated(mount.mountpoint)
        finally:
            assert mount.stop() == 0
        assert any(k.endswith(".pdf") for k in first) and any(k.endswith(".webp") for k in first)
        shutil.rmtree(writer.parent / "cache")  # every render and read block lost
        mount = Mount(writer, tmp_path / "mnt-w")
        try:
            again = _generated(mount.mountpoint)
        finally:
            assert mount.stop() == 0
        assert again.keys() == first.keys()
        assert [k for k in first if first[k] != again[k]] == []
        servers = [Server(writer), Server(follower)]
        try:
            within(lambda: "93012350" in listed(servers[1].url, "by-id"))
            mount = Mount(follower, tmp_path / "mnt-f")
            try:
                other = _generated(mount.mountpoint)
            finally:
                assert mount.stop() == 0
            assert [k for k in first if first[k] != other.get(k)] == []
            keys = sorted(first)
            assert _etags(servers[0].url, keys) == _etags(servers[1].url, keys)
        finally:
            for server in servers:
                assert server.stop() == 0
    # the renderers' versions are in every generated file's name and ETag
    assert len(renderers()) >= 4 and Cache.key("pdf", ["x"]) != __import__("hashlib").sha256(
        repr((("0",), ("pdf", ["x"]))).encode()).hexdigest()[:32]


def _timed(action) -> tuple[float, object]:
    start = time.monotonic()
    try:
        result: object = action()
    except Exception as exc:  # an error answer is what we expect from a silent bucket
        result = exc
    return time.monotonic() - start, result


def test_a_silent_bucket_never_holds_a_reader_past_the_timeout(weed, tmp_path) -> None:
    """An endpoint that accepts and never answers: listings, pages and reads
    answer within filesystem_options.timeout; a blocked `cat` ends on SIGINT."""
    import signal
    import subprocess

    from tests.s3rig import Proxy

    timeout = 4.0
    bound = timeout + 3.0  # the retry's backoff and a process's start on a busy machine
    bucket = weed.bucket("follow-silent")
    proxy = Proxy(weed.endpoint)
    with small_pixiv(4) as fake:
        config = s3_config(tmp_path, fake, proxy.endpoint, bucket, sync={"sizes": ["original"]},
                           filesystem_options={"timeout": timeout})
        pbe(config, "sync", "--no-progress", check=True)
        server, mount = Server(config), Mount(config, tmp_path / "mnt")
        try:
            listed(server.url, "by-id/96000000")  # listed once while the bucket answers
            proxy.stall = True
            # views and artwork folders list from the index and local state alone
            for folder in ("by-id/96000000", "by-id/96000001", "by-ingress"):
                took, names = _timed(lambda: listed(server.url, folder))
                assert took < bound and not isinstance(names, Exception), (folder, took, names)
            took, names = _timed(lambda: os.listdir(mount.path("by-id", "96000002")))
            assert took < bound and "96000002_p0.jpg" in names, (took, names)
            took, page = _timed(lambda: urllib.request.urlopen(f"{server.url}/by-id/96000003/", timeout=60).read())
            assert took < bound and b"96000003" in page, (took, page)
            # an uncached read fails within the bound, over WebDAV and through the mount
            took, got = _timed(lambda: urllib.request.urlopen(f"{server.url}/by-id/96000001/96000001_p0.jpg",
                                                              timeout=60).read())
            assert took < bound and isinstance(got, (urllib.error.HTTPError, OSError)), (took, got)
            took, got = _timed(lambda: mount.path("by-id", "96000002", "96000002_p0.jpg").read_bytes())
            assert took < bound and isinstance(got, OSError), (took, got)
            cat = subprocess.Popen(["cat", str(mount.path("by-id", "96000003", "96000003_p0.jpg"))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            time.sleep(0.5)
            cat.send_signal(signal.SIGINT)
            start = time.monotonic()
            cat.wait(timeout=bound + 5)
            assert time.monotonic() - start < bound
            proxy.stall = False
        finally:
            proxy.stall = False
            assert mount.stop() == 0, mount.log.read_text()
            assert server.stop() == 0, server.log.read_text()
            proxy.close()


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """SeaweedFS with one account: wrong signatures are really refused."""
    server = SeaweedS3(tmp_path_factory.mktemp("s3acct"), account=("pbe-key", "s3-secret-value"))
    try:
        yield server
    finally:
        server.stop()


def test_proxy_false_head_is_exact_and_redirects_are_sigv4(guarded, tmp_path) -> None:
    import urllib.parse

    bucket = guarded.bucket("follow-sigv4")
    with small_pixiv(1) as fake:
        config = s3_config(tmp_path, fake, guarded.endpoint, bucket, sync={"sizes": ["original"]},
                           filesystem_options={"proxy": False, "access_key": "pbe-key", "region": "eu-central-1"})
        pbe(config, "sync", "--no-progress", check=True)
        server = Server(config)
        try:
            url = f"{server.url}/by-id/96000000/96000000_p0.jpg"
            data = fake.file_bytes_for(96000000, page=0)
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=10) as resp:
                assert resp.status == 200 and int(resp.headers["Content-Length"]) == len(data)
                assert resp.headers["ETag"] and resp.headers["Last-Modified"]

            class NoRedirect(urllib.request.HTTPRedirectHandler):
                def redirect_request(self, *args):
                    return None
            with pytest.raises(urllib.error.HTTPError) as found:
                urllib.request.build_opener(NoRedirect).open(url, timeout=10)
            assert found.value.code == 302
            location = found.value.headers["Location"]
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(location).query)
            assert query["X-Amz-Algorithm"] == ["AWS4-HMAC-SHA256"] and query["X-Amz-Expires"] == ["900"]
            assert "/eu-central-1/s3/aws4_request" in query["X-Amz-Credential"][0]
            with urllib.request.urlopen(location, timeout=10) as resp:
                assert resp.read() == data
            # the bucket really checks: a changed signature is refused
            forged = location.replace(query["X-Amz-Signature"][0], "0" * 64)
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(forged, timeout=10)
            assert refused.value.code == 403
        finally:
            assert server.stop() == 0, server.log.read_text()
        # an expired URL is refused too
        from pbe_fs.config import load
        from pbe_fs.storage import open_store
        store = open_store(load(config))
        short = store.url("artworks/96000000/96000000_p0.jpg", 1)
        time.sleep(2.5)
        with pytest.raises(urllib.error.HTTPError) as expired:
            urllib.request.urlopen(short, timeout=10)
        assert expired.value.code == 403
        # and a wrong secret makes every command say so, in one line
        bad = s3_config(tmp_path, fake, guarded.endpoint, bucket,
                        filesystem_options={"access_key": "pbe-key", "secret_key": "wrong"})
        proc = pbe(bad, "status")
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "SignatureDoesNotMatch" in proc.stderr or "AccessDenied" in proc.stderr, proc.stderr


def test_doctor_names_the_bucket_problem_and_clears_unfinished_uploads(guarded, tmp_path) -> None:
    from pbe_fs.archive import Archive
    from pbe_fs.config import load
    from pbe_fs.doctor import check_uploads

    bucket = guarded.bucket("follow-doctor")
    # no local index, a refused secret: the real reason, not "no archive yet"
    bad = s3_config(tmp_path, None, guarded.endpoint, bucket, filesystem_options={"access_key": "pbe-key",
                                                                                  "secret_key": "wrong"})
    out = pbe(bad, "doctor").stdout
    line = next(x for x in out.splitlines() if x.startswith("archive"))
    assert "FAIL" in line and "secret_key" in line and "no archive" not in line, out
    missing = s3_config(tmp_path, None, guarded.endpoint, "no-such-bucket", filesystem_options={"access_key": "pbe-key"})
    out = pbe(missing, "doctor").stdout
    assert "no such bucket" in next(x for x in out.splitlines() if x.startswith("archive")), out
    # an upload a killed writer left behind: reported, then removed by --repair
    config = s3_config(tmp_path, None, guarded.endpoint, bucket, filesystem_options={"access_key": "pbe-key"})
    key = f"{PREFIX}/artworks/96000500/96000500_p0.png"
    guarded.client.create_multipart_upload(Bucket=bucket, Key=key)
    archive = Archive.open(load(config))
    assert check_uploads(archive).ok  # too young to be abandoned: a writer may be at it
    found = check_uploads(archive, older_than=0)
    assert not found.ok and "96000500_p0.png" in found.message and "--repair" in found.message
    assert check_uploads(archive, repair=True, older_than=0).ok
    assert not guarded.client.list_multipart_uploads(Bucket=bucket, Prefix=PREFIX).get("Uploads")


def test_a_writer_killed_before_it_published_publishes_on_its_next_run(weed, tmp_path) -> None:
    """kill -9 of the writer just after a commit: the next sync publishes what
    the killed one had not, and the running follower shows every work."""
    import signal
    import sqlite3
    import subprocess
    import sys

    from tests.conftest import ROOT

    with small_pixiv(2) as fake:
        writer, follower = synced(weed, tmp_path, "follow-killed", fake)
        server = Server(follower)
        try:
            within(lambda: len(listed(server.url, "by-id")) == 2)
            for n in range(6):
                fake.add(Work(96000600 + n, f"late {n}", ARTIST))
            fake.image_latency = 0.3
            proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(writer), "sync", "--no-progress"],
                                    env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            index = writer.parent / "state/.pbe/index.sqlite3"

            def committed() -> int:
                db = sqlite3.connect(f"file:{index}?mode=ro", uri=True)
                try:
                    return db.execute("SELECT count(*) FROM artworks").fetchone()[0]
                finally:
                    db.close()
            start = time.monotonic()
            while committed() < 3 and time.monotonic() - start < 60:
                time.sleep(0.02)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            killed_with = committed()
            assert 3 <= killed_with < 8
            fake.image_latency = 0
            pbe(writer, "sync", "--no-progress", "--break-lock", check=True)  # its own lease: taken over anyway
            within(lambda: listed(server.url, "by-id") == {str(w) for w in fake.works})
        finally:
            assert server.stop() == 0
        assert "follower: rebuilding" not in server.log.read_text()


def test_the_lease_is_renewed_while_its_writer_works_and_taken_by_one_machine_only(weed, tmp_path, monkeypatch) -> None:
    """Two machines' locks on one bucket, in this process: the holder's
    heartbeat keeps the other out past the lease's time; conditional writes
    let only one of two simultaneous takers win."""
    from pbe_fs import follow
    from pbe_fs.archive import Archive
    from pbe_fs.config import load
    from pbe_fs.errors import LockedError

    monkeypatch.setattr(follow, "LEASE_SECONDS", 1.5)  # renewed every 0.5 s
    bucket = weed.bucket("follow-heartbeat")
    with small_pixiv(1) as fake:
        first, second = two_writers(tmp_path, fake, weed.endpoint, bucket)
        one, two = Archive.open(load(first)), Archive.open(load(second))
        one.ensure()
        two.ensure()
        with one.lock():
            time.sleep(3.5)  # more than twice the lease: only the heartbeat keeps it
            with pytest.raises(LockedError) as refused:
                two.lock().__enter__()
            assert follow.machine() in str(refused.value)
        with two.lock():  # released: the other machine takes it at once
            pass
        # two takers at the same moment: the bucket lets one create the lease
        assert one.store.write_if("journal/race.json", b"1", None) is True
        assert two.store.write_if("journal/race.json", b"2", None) is False


def test_pbe_fs_run_on_a_follower_serves_and_keeps_up_without_syncing(weed, tmp_path) -> None:
    import re
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT
    from tests.test_daemon import get_json, wait

    bucket = weed.bucket("follow-daemon")
    with small_pixiv(2) as fake:
        writer, _ = machines(tmp_path, fake, weed.endpoint, bucket)
        follower = s3_config(tmp_path / "follower", None, weed.endpoint, bucket, webdav={"port": 0},
                             filesystem_options={"follow": True})
        pbe(writer, "sync", "--no-progress", check=True)
        log = tmp_path / "run.log"
        proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(follower), "run"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        try:
            assert wait(lambda: "serving WebDAV at" in log.read_text()), log.read_text()
            url = re.search(r"serving WebDAV at (http://[\d.:]+)/", log.read_text()).group(1)
            assert get_json(url + "/_pbe/status")["artworks"] == 2
            fake.add(Work(96000700, "seen by the daemon", ARTIST))
            pbe(writer, "sync", "--no-progress", check=True)
            within(lambda: get_json(url + "/_pbe/status")["artworks"] == 3)
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=30) == 0, log.read_text()
        text = log.read_text()
        assert "Traceback" not in text and "sync" not in text.replace("syncs", ""), text
