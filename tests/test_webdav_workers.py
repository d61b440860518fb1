"""`pbe-fs serve` as several processes on one port (webdav.workers).

Connections are spread by the kernel (SO_REUSEPORT), so each check is made
over many fresh connections: with three workers, some land on each, and a
state kept by one worker alone (a nonce, a CSRF key, a stale tree) shows
up as a failure on the others.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import os
import re
import signal
import subprocess
import time
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import pytest

from tests.conftest import FakePixiv, Server, http_request, pbe, write_config
from tests.test_webdav_exposure import descendants

WORKERS = 3
FRESH = 30  # fresh connections per check: all on one worker of three has odds 3^-29


def workers_of(server: Server) -> list[int]:
    """The server's worker processes (its direct children)."""
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(server.proc.pid)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


def listening_pids(port: int) -> set[int]:
    out = subprocess.run(["ss", "-Hltnp", f"sport = :{port}"], capture_output=True, text=True).stdout
    return {int(pid) for pid in re.findall(r"pid=(\d+)", out)}


@pytest.fixture
def fake():
    with FakePixiv() as server:
        yield server


@pytest.fixture
def workers(tmp_path: Path, fake: FakePixiv):
    """A synced archive served by three workers; app_key empty, so the
    gallery's signing key is the one the supervisor picks for this run."""
    config = write_config(tmp_path, fake, app_key="", webdav={"workers": WORKERS})
    pbe(config, "sync", "--no-progress", check=True)
    server = Server(config)
    yield server, config, fake
    assert server.stop() in (0, -9)  # -9: the test that kills the supervisor


def test_every_worker_listens_and_follows_a_sync(workers) -> None:
    from tests.fakepixiv import Work

    server, config, fake = workers
    port = urlsplit(server.url).port
    pids = workers_of(server)
    assert len(pids) == WORKERS
    assert listening_pids(port) == set(pids)  # the supervisor itself takes no connection
    new = 95500001
    assert {http_request(server.url, "GET", f"/by-id/{new}/")[0] for _ in range(FRESH)} == {404}
    fake.add(Work(new, "arrives later", (8, "someone", "someone")))
    pbe(config, "sync", "--no-progress", check=True)
    deadline = time.monotonic() + 10  # each worker notices the commit within its poll interval
    while True:
        seen = [http_request(server.url, "GET", f"/by-id/{new}/", {"Depth": "0"})[0] for _ in range(FRESH)]
        if set(seen) == {200}:
            break
        assert time.monotonic() < deadline, seen
        time.sleep(0.2)
    status, headers, body = http_request(server.url, "PROPFIND", "/by-id/", {"Depth": "1"})
    assert status == 207 and f"/by-id/{new}/".encode() in body
    assert len(dates_of(server)) == 1
    # the file itself, over the direct path, from every worker alike
    names = [n for n in os.listdir(config.parent / "data/artworks" / str(new)) if n.endswith(".jpg")]
    expected = (config.parent / "data/artworks" / str(new) / names[0]).read_bytes()
    got = {http_request(server.url, "GET", f"/by-id/{new}/{names[0]}")[2] for _ in range(FRESH)}
    assert got == {expected}


def test_a_delete_is_seen_at_once_by_every_worker(workers) -> None:
    server, config, _ = workers
    token = {"Authorization": "Basic " + base64.b64encode(b"me:seed-ro-token").decode()}
    status, _, body = http_request(server.url, "PROPFIND", "/by-id/", {"Depth": "1"})
    victims = re.findall(rb"<D:href>/by-id/(\d+)/</D:href>", body)[:3]
    assert len(victims) == 3
    for victim in (v.decode() for v in victims):
        assert {http_request(server.url, "GET", f"/by-id/{victim}/")[0] for _ in range(FRESH)} == {200}
        assert http_request(server.url, "DELETE", f"/by-id/{victim}", token)[0] == 204
        # no waiting: the next request, on whichever worker, already misses it
        seen = [http_request(server.url, "PROPFIND", f"/by-id/{victim}", {"Depth": "0"})[0] for _ in range(FRESH)]
        assert set(seen) == {404}, seen
        assert not (config.parent / "data/artworks" / victim).exists()


def _digest(challenge: str, method: str, uri: str, user: str, password: str, nc: int = 1) -> str:
    fields = dict(re.findall(r'(\w+)="?([^",]*)"?', challenge.partition(" ")[2]))
    ha1 = hashlib.md5(f"{user}:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    cnonce, count = "0a4f113b", f"{nc:08x}"
    response = hashlib.md5(f"{ha1}:{fields['nonce']}:{count}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="{fields["realm"]}", nonce="{fields["nonce"]}", uri="{uri}", '
            f'algorithm=MD5, qop=auth, nc={count}, cnonce="{cnonce}", response="{response}"')


def test_digest_challenge_and_answer_on_different_workers(workers) -> None:
    server, config, _ = workers
    path = "/by-id/1"  # no such work: authenticated, it answers 404; refused, 401
    for _ in range(10):
        status, headers, _ = http_request(server.url, "DELETE", path)  # one connection: the challenge
        assert status == 401
        answer = _digest(headers["www-authenticate"], "DELETE", path, "me", "seed-ro-token")
        # another connection, likely another worker
        assert http_request(server.url, "DELETE", path, {"Authorization": answer})[0] == 404
        # the same header again, on whichever worker: a replay
        assert http_request(server.url, "DELETE", path, {"Authorization": answer})[0] == 401
        later = _digest(headers["www-authenticate"], "DELETE", path, "me", "seed-ro-token", nc=2)
        assert http_request(server.url, "DELETE", path, {"Authorization": later})[0] == 404
    wrong = _digest(headers["www-authenticate"], "DELETE", path, "me", "not-the-token", nc=3)
    assert http_request(server.url, "DELETE", path, {"Authorization": wrong})[0] == 401


def test_gallery_login_holds_across_workers(workers) -> None:
    server, _, _ = workers
    host = urlsplit(server.url).netloc
    for n in range(8):
        sid = f"{n:032x}"
        cookie = {"Cookie": f"pbe_sid={sid}", "Accept": "text/html"}
        page = http_request(server.url, "GET", "/_pbe/ui/admin", cookie)[2].decode()
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', page).group(1)
        form = urlencode({"csrf": csrf, "token": "seed-ro-token"}).encode()
        conn = http.client.HTTPConnection(host, timeout=10)  # another connection, likely another worker
        try:
            conn.request("POST", "/_pbe/ui/admin", form, {
                **cookie, "Origin": f"http://{host}", "Content-Type": "application/x-www-form-urlencoded"})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 303
            cookies = " ".join(v for k, v in resp.getheaders() if k.lower() == "set-cookie")
        finally:
            conn.close()
        admin = re.search(r"pbe_admin=([0-9a-f]+)", cookies).group(1)
        logged = {**cookie, "Cookie": f"pbe_sid={sid}; pbe_admin={admin}"}
        pages = {b"You are logged in" in http_request(server.url, "GET", "/_pbe/ui/admin", logged)[2]
                 for _ in range(10)}
        assert pages == {True}


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_stops_every_worker(workers, sig: int) -> None:
    server, _, _ = workers
    family = [server.proc.pid, *descendants(server.proc.pid)]
    assert len(family) == WORKERS + 1
    server.proc.send_signal(sig)
    assert server.proc.wait(timeout=20) == 0
    assert [pid for pid in family if _alive(pid)] == []


def test_workers_die_with_a_killed_supervisor(workers) -> None:
    server, _, _ = workers
    children = workers_of(server)
    assert len(children) == WORKERS
    server.proc.kill()
    server.proc.wait(timeout=10)
    try:
        deadline = time.monotonic() + 20
        while [pid for pid in children if _alive(pid)]:
            assert time.monotonic() < deadline, "orphaned workers"
            time.sleep(0.1)
    finally:
        for pid in children:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def dates_of(server: Server) -> set[bytes]:
    """The view folders' and status.json's dates, as FRESH connections see them."""
    dates = {re.search(rb"<D:getlastmodified>([^<]+)<", http_request(server.url, "PROPFIND", "/by-id/",
                                                                     {"Depth": "0"})[2]).group(1)
             for _ in range(FRESH)}
    return dates | {http_request(server.url, "HEAD", "/status.json")[1]["last-modified"].encode()
                    for _ in range(FRESH)}


def etags_of(server: Server) -> set[str]:
    return {http_request(server.url, "HEAD", "/status.json")[1]["etag"] for _ in range(FRESH)}


def test_a_dead_worker_is_replaced(workers, tmp_path: Path) -> None:
    server, _, _ = workers
    dates = dates_of(server)
    assert len(dates) == 1  # a date per index generation, whichever worker answers
    etags = etags_of(server)
    assert len(etags) == 1  # and the same bytes of status.json
    (tmp_path / "filler").write_bytes(os.urandom(4 << 20))  # the disk's free space is not in it: it changes
    os.sync()
    before = workers_of(server)
    os.kill(before[0], signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:
        now = workers_of(server)
        if len(now) == WORKERS and before[0] not in now and all(_alive(pid) for pid in now):
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.2)
    port = urlsplit(server.url).port
    deadline = time.monotonic() + 30
    while listening_pids(port) != set(now):  # the new one listens once it has opened the index
        assert time.monotonic() < deadline, (listening_pids(port), now)
        time.sleep(0.2)
    assert {http_request(server.url, "GET", "/status.json")[0] for _ in range(FRESH)} == {200}
    assert "exited with -9; starting it again" in server.stderr()
    # the new worker loaded the same generation seconds later, and dates it as the others do
    assert dates_of(server) == dates
    assert etags_of(server) == etags


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
