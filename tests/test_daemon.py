"""`pbe-fs run`: sync loop, WebDAV and the FUSE mount in one process."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT, write_config
from tests.fakepixiv import FakePixiv, Work

pytestmark = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse")


def wait(predicate, timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.2)
    return False


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.loads(resp.read())


def stop(proc: subprocess.Popen, mnt: Path) -> int:
    """SIGTERM the daemon; never leave its mount behind, even when it failed."""
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout=15)
    finally:
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)


def test_run_syncs_serves_mounts_reloads_and_stops(fake: FakePixiv, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    config = write_config(tmp_path, fake, sync={"interval_minutes": 0.03, "sizes": ["original"]},
                          webdav={"port": 0}, mount={"path": str(mnt)})
    log = tmp_path / "run.log"
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(20)
    proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "run"],
                            env={**os.environ, "PYTHONPATH": str(ROOT), "NOTIFY_SOCKET": str(tmp_path / "notify.sock")},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        assert notify.recv(100) == b"READY=1"  # systemd Type=notify
        assert os.path.ismount(mnt) and "serving WebDAV at" in log.read_text()
        url = re.search(r"serving WebDAV at (http://[\d.:]+)/", log.read_text()).group(1)
        # the first sync fills both front doors
        assert wait(lambda: len(os.listdir(mnt / "by-id")) == 44), log.read_text()
        assert get_json(url + "/_pbe/status")["artworks"] == 44
        status = subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "status", "--json"],
                                env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=30)
        assert status.returncode == 0 and json.loads(status.stdout)["artworks"] == 44
        # a new bookmark shows in both within an interval
        fake.add(Work(97000001, "daemon fresh", (9, "z", "z")))
        assert wait(lambda: (mnt / "by-id" / "97000001").is_dir())
        assert urllib.request.urlopen(url + "/by-id/97000001/97000001_p0.jpg", timeout=10).status == 200
        # pixiv down for a while: logged, retried, servers untouched
        fake.fail("/v1/user/bookmarks", "500", 30)
        assert wait(lambda: "sync failed" in log.read_text())
        assert os.listdir(mnt / "by-ingress") and get_json(url + "/_pbe/status")["artworks"] == 45
        fake.faults.clear()
        # SIGHUP: the NSFW policy changes live, the mount stays
        before = len(os.listdir(mnt / "by-ingress"))
        data = json.loads(config.read_text())
        data["display"]["nsfw"] = "enabled"
        config.write_text(json.dumps(data))
        proc.send_signal(signal.SIGHUP)
        assert wait(lambda: len(os.listdir(mnt / "by-ingress")) == before + 3), log.read_text()
        assert os.path.ismount(mnt)
        # a revoked token is reported loudly, and the archive is still served
        fake.refresh_tokens.clear()
        fake.expire_tokens()
        assert wait(lambda: "refused the refresh token" in (get_json(url + "/_pbe/status")["last_sync"] or {}).get("message", ""))
        assert len(os.listdir(mnt / "by-id")) == 45
        assert "Traceback" not in log.read_text()
    finally:
        code = stop(proc, mnt)
    assert code == 0 and not os.path.ismount(mnt)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cli(*args: str, cwd: Path, env: dict | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pbe_fs.cli", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


@pytest.mark.parametrize("problem", ["non-empty mount point", "refused token", "port taken", "not a folder"])
def test_run_checks_everything_up_front(fake: FakePixiv, tmp_path: Path, problem: str) -> None:
    """A mistake fails the start within seconds: no WebDAV, no sync, one line."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    port = free_port()
    holder = socket.socket()
    if problem == "non-empty mount point":
        (mnt / "something").write_text("x")
    elif problem == "refused token":
        fake.refresh_tokens.clear()
    elif problem == "port taken":
        holder.bind(("127.0.0.1", port))
        holder.listen()
    elif problem == "not a folder":
        mnt.rmdir()
        mnt.write_text("x")
    config = write_config(tmp_path, fake, webdav={"port": port}, mount={"path": str(mnt)})
    started = time.monotonic()
    proc = cli("-c", str(config), "run", cwd=tmp_path, timeout=30)
    elapsed = time.monotonic() - started
    holder.close()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert elapsed < 5 and fake.calls["bookmarks"] == 0 and fake.calls["image"] == 0
    assert "serving WebDAV" not in proc.stderr and not (tmp_path / "data" / "artworks").exists()
    expected = {"non-empty mount point": "is not empty", "refused token": "refused the refresh token",
                "port taken": f"cannot listen on 127.0.0.1:{port}: taken by pid {os.getpid()}",
                "not a folder": "is not a folder"}[problem]
    assert expected in lines[0]
    assert "No socket could be created" not in proc.stderr


def test_a_running_daemon_is_known_to_its_friends(fake: FakePixiv, tmp_path: Path) -> None:
    """doctor, status, a second mount and a second server all recognise the
    running daemon; INFO tells what happened, not internal refreshes; SIGHUP
    re-reads the same files (the user's own one here), token included."""
    home, mnt, port = tmp_path / "home", tmp_path / "mnt", free_port()
    mnt.mkdir()
    shared = json.loads(write_config(tmp_path, fake, webdav={"port": port}, mount={"path": "./mnt"},
                                     sync={"sizes": ["original"], "interval_minutes": 60}).read_text())
    (tmp_path / "config.json").write_text(json.dumps({k: v for k, v in shared.items()
                                                      if k not in ("app_key", "read_only_token")}))
    user = home / "pbe-fs" / "config.json"
    user.parent.mkdir(parents=True)
    user.write_text(json.dumps({"pixiv": {"refresh": "good-refresh"}, "read_only_token": "seed-ro-token"}))
    user.chmod(0o600)
    env = {"XDG_CONFIG_HOME": str(home), "TZ": "Asia/Tokyo"}
    log = tmp_path / "run.log"
    proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "run"], cwd=tmp_path,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **env},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=open(log, "w"))
    try:
        assert wait(lambda: "sync done" in log.read_text(), 60), log.read_text()
        assert wait(lambda: "next_sync" in (tmp_path / "data/.pbe/daemon.json").read_text())
        # a CLI sync that finds nothing new
        assert cli("sync", "--no-progress", cwd=tmp_path, env=env).returncode == 0
        time.sleep(2.5)  # the mount notices the new generation within a second
        text = log.read_text()
        assert "sync done: 44 new works" in text and "refreshing the mount" not in text, text
        # doctor: the port is held by our own daemon, which is healthy
        doctor = cli("doctor", cwd=tmp_path, env=env)
        port_line = next(line for line in doctor.stdout.splitlines() if line.startswith("port"))
        assert doctor.returncode == 0, doctor.stdout
        assert f"served by pbe-fs's own daemon (`pbe-fs run`, pid {proc.pid}), running since" in port_line
        assert "next sync" in port_line and "JST" in port_line and "(ok)" in port_line
        # status: the daemon's state, local times
        status = cli("status", cwd=tmp_path, env=env)
        assert f"daemon     running (pid {proc.pid}) since " in status.stdout, status.stdout
        assert "next sync" in status.stdout and "JST" in status.stdout and "+00:00" not in status.stdout
        # a second mount and a second server name the holder rather than advise fusermount3 -u
        second = cli("mount", str(mnt), cwd=tmp_path, env=env)
        assert second.returncode == 1 and "fusermount3" not in second.stderr
        assert f"already mounted by pbe-fs's own daemon (`pbe-fs run`, pid {proc.pid})" in second.stderr
        served = cli("serve", "--port", str(port), cwd=tmp_path, env=env)
        assert served.stderr.strip() == (f"pbe-fs: error: cannot listen on 127.0.0.1:{port}: taken by pbe-fs's own "
                                         f"daemon (`pbe-fs run`, pid {proc.pid}); stop it, or pick another port "
                                         "(webdav.port or --port)")
        # SIGHUP re-reads the user's file: a new refresh token is used by the next sync
        fake.refresh_tokens = {"rotated-by-hand"}
        fake.expire_tokens()
        user.write_text(json.dumps({"pixiv": {"refresh": "rotated-by-hand"}, "read_only_token": "seed-ro-token",
                                    "webdav": {"port": port + 1}}))
        fake.add(Work(97000002, "after hup", (9, "z", "z")))
        proc.send_signal(signal.SIGHUP)
        assert wait(lambda: (mnt / "by-id" / "97000002").is_dir(), 30), log.read_text()
        assert "webdav.port changed: restart pbe-fs run to apply it" in log.read_text()
        assert "refused" not in log.read_text()
    finally:
        code = stop(proc, mnt)
    assert code == 0 and not (tmp_path / "data/.pbe/daemon.json").exists()
    assert "daemon     not running" in cli("status", cwd=tmp_path, env=env).stdout
