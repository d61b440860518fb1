"""Fixtures: a live stand-in pixiv server and a config pointing at it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.fakepixiv import FakePixiv

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake():
    with FakePixiv() as server:
        yield server


def write_config(folder: Path, fake: FakePixiv | None, **overrides: Any) -> Path:
    """A config.json for a test archive under folder; overrides are merged per section."""
    config: dict[str, Any] = {
        "pixiv": {"access": "", "refresh": "good-refresh", "api_host": fake.url if fake else "https://app-api.pixiv.net",
                  "timeout": 2, "retries": 4, "backoff": 0.01, "rate_limit_wait": 0.05},
        "display": {"home": {"image": "original", "ipp": "50", "order": "default"}, "artwork": {"image": "original"},
                    "nsfw": "hidden"},
        "app_key": "seed-app-key", "read_only": True, "read_only_token": "seed-ro-token",
        "temp_path": "./tmp", "filesystem": "local", "filesystem_options": {"path": "./data"},
        "sync": {"concurrency": 4},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(config.get(key), dict):
            config[key].update(value)
        else:
            config[key] = value
    path = folder / "config.json"
    path.write_text(json.dumps(config, ensure_ascii=False, indent=2))
    path.chmod(0o600)  # it holds tokens: pbe-fs warns about a config others can read
    return path


@pytest.fixture
def config(tmp_path: Path, fake: FakePixiv) -> Path:
    return write_config(tmp_path, fake)


GONE, LOST = 93012345, 94100000


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    """An archive with every kind of work, one of them gone, one lost
    (one per test module: the modules delete works from it)."""
    from tests.fakepixiv import Work

    folder = tmp_path_factory.mktemp("archive")
    with FakePixiv() as fake:
        config = write_config(folder, fake)
        pbe(config, "sync", "--no-progress", check=True)
        fake.works[GONE].state = "deleted"
        fake.add(Work(LOST, "lost", (7, "x", "x"), state="limit_unviewable"))
        pbe(config, "sync", "--full", "--no-progress", check=True)
        yield config, fake


def pbe(config: Path | None, *args: str, timeout: float = 120, check: bool = False) -> subprocess.CompletedProcess[str]:
    """Run the real `pbe-fs` command line in a subprocess."""
    cmd = [sys.executable, "-m", "pbe_fs.cli"] + (["-c", str(config)] if config else []) + list(args)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, stdin=subprocess.DEVNULL)
    if check and proc.returncode != 0:
        raise AssertionError(f"pbe-fs {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}")
    return proc


def wait_or_explain(proc: subprocess.Popen, log: Path, timeout: float = 15) -> int:
    """proc's exit status once it has stopped; if it does not within timeout,
    fail with where each of its threads is: Python's stacks (pbe-fs prints
    them on SIGUSR1) and the kernel's (what a thread waits for in a system call)."""
    import signal
    import time

    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass
    proc.send_signal(signal.SIGUSR1)
    time.sleep(1)
    kernel = []
    for task in sorted(Path(f"/proc/{proc.pid}/task").glob("*")):
        try:
            signals = "".join(line for line in (task / "status").read_text().splitlines(True)
                              if line.startswith(("Name", "Sig", "ShdPnd")))
            kernel.append(f"thread {task.name}: {(task / 'wchan').read_text()}\n{signals}{(task / 'stack').read_text()}")
        except OSError:
            pass
    tail = log.read_text(errors="replace")[-20000:]
    raise AssertionError(f"pid {proc.pid} did not stop within {timeout:g} s\n--- its log ---\n{tail}"
                         f"\n--- kernel stacks ---\n" + "\n".join(kernel))


class Mount:
    """`pbe-fs mount` running in a subprocess, for as long as a test needs it."""

    def __init__(self, config: Path, mountpoint: Path, *args: str) -> None:
        import time

        self.mountpoint = mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        cmd = [sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "mount", str(mountpoint), *args]
        self.log = mountpoint.parent / f"{mountpoint.name}.log"
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + 20
        while not os.path.ismount(mountpoint):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"mount did not come up: {self.log.read_text()}")
            time.sleep(0.05)

    def path(self, *parts: str) -> Path:
        return self.mountpoint.joinpath(*parts)

    def stop(self, sig: int | None = None) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(sig or signal.SIGTERM)
        try:
            return wait_or_explain(self.proc, self.log)
        finally:
            if os.path.ismount(self.mountpoint):
                subprocess.run(["fusermount3", "-uz", str(self.mountpoint)], check=False)
            if self.proc.poll() is None:
                self.proc.kill()

    def stderr(self) -> str:
        return self.log.read_text()


class Server:
    """`pbe-fs serve` on a free loopback port, in a subprocess."""

    def __init__(self, config: Path, *args: str) -> None:
        import re
        import time

        self.log = config.parent / "serve.log"
        cmd = [sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "serve", "--port", "0", *args]
        self.proc = subprocess.Popen(cmd, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=open(self.log, "w"))
        deadline = time.monotonic() + 20
        while True:
            match = re.search(r"at (https?://[\d.]+:\d+)/", self.log.read_text())
            if match:
                self.url = match.group(1)
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not come up: {self.log.read_text()}")
            time.sleep(0.05)

    def stop(self) -> int:
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return wait_or_explain(self.proc, self.log)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def stderr(self) -> str:
        return self.log.read_text()


@pytest.fixture(scope="module")
def server(synced):
    """`pbe-fs serve` over the module's synced archive (WebDAV and gallery tests)."""
    config, _ = synced
    s = Server(config)
    yield s
    assert s.stop() == 0


def http_request(url: str, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
    """One raw HTTP exchange (http.client sends the path exactly as given)."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()
