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
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=15)
        if os.path.ismount(mnt):
            subprocess.run(["fusermount3", "-uz", str(mnt)], check=False)
    assert code == 0 and not os.path.ismount(mnt)
