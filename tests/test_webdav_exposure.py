"""The WebDAV server exposed beyond localhost: protocol edges and abuse.

Each case asserts what happened (bytes served, works still there, syncs
started, threads free), not just the status line.
"""

from __future__ import annotations

import base64
import http.client
import os
import shutil
import socket
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit


from tests.conftest import GONE, Server, http_request, pbe
from tests.helpers import descendants

TOKEN = {"Authorization": "Basic " + base64.b64encode(b"me:seed-ro-token").decode()}
META = "/by-id/93012350/meta.json"



def address(server: Server) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname, parts.port


def request(server: Server, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    return http_request(server.url, method, path, headers, body, timeout)


def rss_kb(pid: int) -> int:
    """The resident memory of a server: its process and its workers (webdav.workers)."""
    total = 0
    for one in [pid, *descendants(pid)]:
        for line in Path(f"/proc/{one}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def syncs_of(pid: int) -> list[int]:
    """The `pbe-fs sync` processes a server started (children of its workers)."""
    found = []
    for one in descendants(pid):
        try:
            argv = Path(f"/proc/{one}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"sync" in argv:
            found.append(one)
    return found


def test_ranges_follow_rfc_9110(server: Server) -> None:
    status, _, whole = request(server, "GET", META)
    assert status == 200 and len(whole) > 100
    for ignored in ("bytes=50-10", "bytes=abc", "items=0-1", "bytes=0-1,5-6", "bytes=", "bytes=--5"):
        status, headers, body = request(server, "GET", META, {"Range": ignored})
        assert (status, body) == (200, whole), ignored
        assert "content-range" not in headers, ignored
    status, headers, body = request(server, "GET", META, {"Range": "bytes=-0"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(whole)}"
    status, headers, body = request(server, "GET", META, {"Range": f"bytes={len(whole)}-"})
    assert status == 416 and headers["content-range"] == f"bytes */{len(whole)}"
    status, headers, body = request(server, "GET", META, {"Range": "bytes=-5"})
    assert status == 206 and body == whole[-5:] and headers["content-range"] == f"bytes {len(whole) - 5}-{len(whole) - 1}/{len(whole)}"
    status, _, body = request(server, "GET", META, {"Range": "bytes=10-19"})
    assert status == 206 and body == whole[10:20]
    status, _, body = request(server, "GET", META, {"Range": f"bytes=-{len(whole) * 2}"})
    assert status == 206 and body == whole
    status, _, body = request(server, "GET", META, {"Range": f"bytes=5-{len(whole) * 2}"})
    assert status == 206 and body == whole[5:]


def test_methods_answer_honestly(server: Server, synced) -> None:
    config, _ = synced
    artworks = config.parent / "data/artworks"
    before = sorted(os.listdir(artworks))
    _, options, _ = request(server, "OPTIONS", "/by-id/93012350")
    for method in ("LOCK", "UNLOCK", "PATCH"):
        status, headers, _ = request(server, method, "/by-id/93012350", {"Timeout": "Second-60"},
                                     body=b"<?xml version='1.0'?><D:lockinfo xmlns:D='DAV:'/>")
        assert status == 405 and headers["allow"] == options["allow"], method
    _, headers, _ = request(server, "LOCK", "/by-id/")
    assert headers["allow"] == "OPTIONS, HEAD, GET, PROPFIND"
    for method in ("PUT", "MKCOL", "MOVE", "COPY", "PROPPATCH"):
        status, _, _ = request(server, method, "/by-id/93012350/x", {"Destination": server.url + "/by-id/y"}, b"data")
        assert status == 403, method
    assert sorted(os.listdir(artworks)) == before


def test_propname_lists_properties(server: Server) -> None:
    body = b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:propname/></D:propfind>'
    status, _, answer = request(server, "PROPFIND", "/by-id/93012350/", {"Depth": "1"}, body)
    assert status == 207
    responses = ET.fromstring(answer).findall("{DAV:}response")
    assert len(responses) == 22  # the folder, its files, the generated ones (zip, pdf, cbz, folder.jpg...)
    for response in responses:
        names = {el.tag for el in response.find("{DAV:}propstat/{DAV:}prop")}
        assert {"{DAV:}resourcetype", "{DAV:}getlastmodified", "{DAV:}displayname"} <= names
        assert response.findtext("{DAV:}propstat/{DAV:}status") == "HTTP/1.1 200 OK"
        is_file = response.find("{DAV:}href").text.endswith((".jpg", ".json", ".zip", ".pdf", ".url", ".cbz"))
        assert ("{DAV:}getcontentlength" in names) == is_file
        assert not any(el.text for el in response.find("{DAV:}propstat/{DAV:}prop"))


def test_error_pages_and_bad_authorization(server: Server) -> None:
    for method, path, headers in (("GET", "/nope", {}), ("PROPFIND", "/nope", {"Depth": "0"}),
                                  ("GET", "/by-id/93012350/meta.json", {"Depth": "1"})):
        status, got, body = request(server, method, path, headers)
        assert 400 <= status < 500
        text = (body.decode(errors="replace") + got.get("server", "")).lower()
        assert "wsgidav" not in text and "cheroot" not in text and "python" not in text, text
    for value in ("Basic !!!", "Basic " + base64.b64encode(b"no-colon").decode(), "Basic " + base64.b64encode(b"\xff:\xfe").decode(),
                  "Digest", "Digest username=", 'Digest username="me", nonce="x"', "Basic", "Bearer abc"):
        for method in ("DELETE", "GET"):
            status, _, _ = request(server, method, "/by-id/93012349", {"Authorization": value})
            assert status in (400, 401) or (method == "GET" and status == 301), (value, method, status)
    assert "Traceback" not in server.stderr()


def test_big_bodies_are_refused_unread(server: Server) -> None:
    pid = server.proc.pid
    before = rss_kb(pid)
    sock = socket.create_connection(address(server), timeout=10)
    sock.sendall(b"PROPFIND /by-id/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\nContent-Type: application/xml\r\n"
                 b"Content-Length: 800000000\r\n\r\n")
    reply = sock.recv(4096)  # answered before a byte of the body was sent
    sock.close()
    assert reply.startswith(b"HTTP/1.1 413"), reply[:100]
    sock = socket.create_connection(address(server), timeout=10)
    sock.sendall(b"PROPFIND /by-id/ HTTP/1.1\r\nHost: x\r\nDepth: 1\r\nTransfer-Encoding: chunked\r\n\r\n")
    sock.settimeout(1)
    try:
        for _ in range(64):
            sock.sendall(b"100000\r\n" + b"<" * 0x100000 + b"\r\n")
    except OSError:
        pass  # the server stopped reading: fine
    sock.close()
    assert rss_kb(pid) - before < 50_000
    assert request(server, "PROPFIND", "/by-id/", {"Depth": "1"}, b"")[0] == 207


def _status_wait(server: Server) -> float:
    """How long a normal client waits for status.json (which it must get)."""
    started = time.monotonic()
    status, _, body = request(server, "GET", "/status.json", timeout=5)
    assert status == 200 and b"artworks" in body
    return time.monotonic() - started


def test_slow_clients_do_not_lock_others_out(server: Server) -> None:
    """256 connections sending a header line every second: a normal client
    is still answered within 2 s, and the slow ones are cut off (408) once
    their headers have taken longer than the server allows."""
    from pbe_fs.webdav import HEADER_SECONDS

    slow = []
    for _ in range(256):
        s = socket.create_connection(address(server), timeout=10)
        s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    stop = threading.Event()

    def dribble() -> None:
        n = 0
        while not stop.wait(1.0):
            n += 1
            for s in slow:
                try:
                    s.sendall(f"X-Slow-{n}: yes\r\n".encode())
                except OSError:
                    pass

    thread = threading.Thread(target=dribble, daemon=True)
    thread.start()
    try:
        worst = 0.0
        deadline = time.monotonic() + HEADER_SECONDS + 2
        while time.monotonic() < deadline:
            worst = max(worst, _status_wait(server))
            time.sleep(0.5)
        assert worst < 2.0, worst
    finally:
        stop.set()
        thread.join()
    cut = 0
    for s in slow:
        s.settimeout(2)
        try:
            cut += s.recv(100).startswith(b"HTTP/1.1 408")
        except OSError:
            pass
        s.close()
    assert cut == len(slow)


def _read_answers(sock: socket.socket, methods: list[str]) -> list[tuple[int, dict[str, str], bytes]]:
    """The answers to ``methods``, sent on ``sock`` one after another, read
    off the one stream in order (a HEAD's answer has no body)."""
    stream = sock.makefile("rb")
    answers = []
    for method in methods:
        status = int(stream.readline().split()[1])
        headers = {}
        while (line := stream.readline()) not in (b"\r\n", b""):
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        body = b""
        if method == "HEAD" or status in (204, 304):
            pass
        elif headers.get("transfer-encoding") == "chunked":
            while size := int(stream.readline().split(b";")[0], 16):
                body += stream.read(size)
                stream.readline()
            stream.readline()
        else:
            body = stream.read(int(headers["content-length"]))
        answers.append((status, headers, body))
    return answers


def test_kept_alive_requests_are_answered_in_order(server: Server) -> None:
    """Requests sent back to back on one connection, in one packet and then
    after a pause, are each answered whole and in order, whichever thread
    answers them (small archived files are answered on the server's
    selector thread, the rest by workers; every answer's headers leave with
    its body's first piece)."""
    jpeg = f"/by-id/{GONE}/{GONE}_p0.jpg"
    asked = [("HEAD", META, ""), ("GET", META, ""), ("GET", jpeg, ""), ("GET", "/nothing-here", ""),
             ("PROPFIND", "/by-id/", "Depth: 0\r\n"), ("HEAD", "/status.json", ""), ("GET", META, "Range: bytes=0-9\r\n")]
    expected = [request(server, method, path, dict([extra.strip().split(": ")]) if extra else None)
                for method, path, extra in asked]
    sock = socket.create_connection(address(server), timeout=10)
    with sock:
        sock.sendall(b"".join(f"{method} {path} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode()
                              for method, path, extra in asked))
        got = _read_answers(sock, [method for method, _, _ in asked])
        again = []
        for method, path in (("GET", META), ("HEAD", jpeg), ("GET", jpeg)):  # one at a time, the folder now known
            time.sleep(0.1)
            sock.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            again += _read_answers(sock, [method])
    for (method, path, _), (status, headers, body), (want_status, want_headers, want_body) in zip(asked, got, expected):
        assert status == want_status, (method, path)
        if method == "HEAD":
            assert headers["content-length"] == want_headers["content-length"]
        elif method != "PROPFIND":  # its answer names the moment it was made
            assert body == want_body, (method, path)
    assert got[1][2] == again[0][2] and got[1][0] == 200
    assert again[1][1]["content-length"] == got[2][1]["content-length"] and again[2][2] == got[2][2]
    assert got[6][0] == 206 and got[6][2] == got[1][2][:10]
    assert got[2][0] == 200 and got[2][2][:2] == b"\xff\xd8"


def test_kept_alive_clients_that_stall_do_not_lock_others_out(server: Server) -> None:
    """64 clients that were answered once (and kept alive, all of them),
    then send half of their next
    request and dribble the rest: each goes back to waiting without a
    thread, and a normal client is still answered within 2 s."""
    stalled = []
    for _ in range(64):
        s = socket.create_connection(address(server), timeout=10)
        s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = _read_answers(s, ["GET"])[0]
        assert status == 200 and headers.get("connection") != "close"  # every client is kept alive, not the first 10
        stalled.append(s)
    for s in stalled:
        s.sendall(b"GET /status.json HTTP/1.1\r\nHost: x\r\n")
    try:
        worst = 0.0
        for n in range(6):
            for s in stalled:
                s.sendall(f"X-Slow-{n}: yes\r\n".encode())
            worst = max(worst, _status_wait(server))
            time.sleep(0.5)
        assert worst < 2.0, worst
        for s in stalled[:4]:  # and a stalled request that is finished is answered
            s.sendall(b"\r\n")
            assert _read_answers(s, ["GET"])[0][0] == 200
    finally:
        for s in stalled:
            s.close()


def test_digest_replay_is_refused_for_writes(server: Server, synced) -> None:
    import requests
    from requests.auth import HTTPDigestAuth

    config, _ = synced
    session = requests.Session()
    session.auth = HTTPDigestAuth("me", "seed-ro-token")
    # authenticated, then refused for its own reason: a gone work is not deleted through the tree
    first = session.delete(server.url + f"/by-id/{GONE}", timeout=10)
    assert first.status_code == 403
    captured = first.request.headers["Authorization"]
    assert captured.startswith("Digest ")
    status, headers, _ = request(server, "DELETE", f"/by-id/{GONE}", {"Authorization": captured})
    assert status == 401 and headers["www-authenticate"].startswith("Digest")
    # a client counting nc upwards on the same nonce keeps working
    again = session.delete(server.url + f"/by-id/{GONE}", timeout=10)
    assert again.status_code == 403 and "nc=00000002" in again.request.headers["Authorization"]
    # a nonce the server never gave
    forged = captured.replace('nonce="', 'nonce="x', 1)
    assert request(server, "DELETE", f"/by-id/{GONE}", {"Authorization": forged})[0] == 401
    assert (config.parent / "data/artworks" / str(GONE)).is_dir()


def zombies_of(pid: int) -> list[str]:
    out = subprocess.run(["ps", "-o", "pid=,stat=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if line.split()[1].startswith("Z")]


def wait_unlocked(config: Path, timeout: float = 60) -> None:
    import fcntl

    lock = config.parent / "data/.pbe/sync.lock"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(lock, "a+") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                time.sleep(0.1)
    raise AssertionError("the archive stayed locked")


def test_refresh_burst_starts_one_sync(server: Server, synced) -> None:
    config, fake = synced
    wait_unlocked(config)
    fake.api_latency = 0.2  # a sync that lasts while the burst arrives
    try:
        results: list[tuple[int, bytes]] = []
        barrier = threading.Barrier(30)

        def post() -> None:
            barrier.wait()
            status, _, body = request(server, "POST", "/_pbe/refresh", TOKEN)
            results.append((status, body))

        threads = [threading.Thread(target=post) for _ in range(30)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        started = [body for status, body in results if status == 202]
        assert len(started) == 1 and sum(status == 409 for status, _ in results) == 29, results
        assert all(b"busy" in body for status, body in results if status == 409)
        assert len(syncs_of(server.proc.pid)) == 1
        wait_unlocked(config)
        time.sleep(0.3)
        assert all(zombies_of(pid) == [] for pid in [server.proc.pid, *descendants(server.proc.pid)])
        # a sync from the command line holds the archive: the server starts none
        cli = subprocess.Popen([*pbe_command(config), "sync", "--no-progress"], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=pbe_env())
        lock = config.parent / "data/.pbe/sync.lock"
        deadline = time.monotonic() + 30
        while lock.read_text().strip() != str(cli.pid):
            assert time.monotonic() < deadline and cli.poll() is None
            time.sleep(0.05)
        status, _, body = request(server, "POST", "/_pbe/refresh", TOKEN)
        assert status == 409 and str(cli.pid).encode() in body
        assert syncs_of(server.proc.pid) == []
        assert cli.wait(timeout=60) == 0
    finally:
        fake.api_latency = 0.0


def pbe_command(config: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "pbe_fs.cli", "-c", str(config)]


def pbe_env() -> dict[str, str]:
    from tests.conftest import ROOT

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_symlinks_are_never_followed(server: Server, synced, tmp_path: Path) -> None:
    config, _ = synced
    secret = Path("/etc/services").read_bytes()[:200]
    work = config.parent / "data/artworks/93012364"  # private manga, 3 pages
    page = work / "93012364_p1.jpg"
    page.unlink()
    page.symlink_to("/etc/services")
    status, _, body = request(server, "GET", "/by-id/93012364/93012364_p1.jpg")
    assert status >= 400 and secret not in body
    try:
        _, _, body = request(server, "GET", "/by-id/93012364/93012364.zip")
    except (http.client.IncompleteRead, ConnectionError) as exc:  # the zip stops where the link was
        body = getattr(exc, "partial", b"")
    assert secret not in body
    # a whole work folder that leads out of the archive
    outside = tmp_path / "elsewhere"
    shutil.copytree(config.parent / "data/artworks/93012348", outside)
    (outside / "93012348_p0.png").write_bytes(b"OUTSIDE" * 100)
    shutil.rmtree(config.parent / "data/artworks/93012348")
    (config.parent / "data/artworks/93012348").symlink_to(outside)
    status, _, body = request(server, "GET", "/by-id/93012348/93012348_p0.png")
    assert status >= 400 and b"OUTSIDE" not in body
    assert request(server, "GET", "/status.json")[0] == 200
    assert pbe(config, "status").returncode == 0


def test_refresh_burst_in_the_daemon(tmp_path: Path) -> None:
    """`pbe-fs run` answers the same: one sync woken, 409 for the rest and
    while a command-line sync holds the archive."""
    import re
    import sys

    from tests.conftest import ROOT, write_config
    from tests.fakepixiv import FakePixiv

    with FakePixiv() as fake:
        config = write_config(tmp_path, fake, sync={"interval_minutes": 600, "sizes": ["original"]},
                              webdav={"port": 0})
        log = tmp_path / "run.log"
        proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "run"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=open(log, "w"))
        try:
            deadline = time.monotonic() + 60
            while "sync done" not in log.read_text():
                assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
                time.sleep(0.1)
            server = Server.__new__(Server)
            server.url = re.search(r"serving WebDAV at (http://[\d.:]+)/", log.read_text()).group(1)
            fake.api_latency = 0.2
            barrier = threading.Barrier(30)
            results: list[int] = []

            def post() -> None:
                barrier.wait()
                results.append(request(server, "POST", "/_pbe/refresh", TOKEN)[0])

            threads = [threading.Thread(target=post) for _ in range(30)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(results) == [202] + [409] * 29
            deadline = time.monotonic() + 60
            while log.read_text().count("sync done") < 2:
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
            cli = subprocess.Popen([*pbe_command(config), "sync", "--no-progress"], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=pbe_env())
            lock = config.parent / "data/.pbe/sync.lock"
            while lock.read_text().strip() != str(cli.pid):
                assert time.monotonic() < deadline and cli.poll() is None
                time.sleep(0.05)
            assert request(server, "POST", "/_pbe/refresh", TOKEN)[0] == 409
            assert cli.wait(timeout=60) == 0
            time.sleep(0.5)
            assert log.read_text().count("sync done") == 2 and "sync skipped" not in log.read_text()
        finally:
            proc.terminate()
            proc.wait(timeout=20)
