"""The README's first lines, pasted verbatim into a fresh copy of the
repository as root with no sudo: install, login, run (against the stand-in),
and the test line's .ci/run (with apt stubbed, its own environment)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.fakepixiv import FakePixiv

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("git") is None, reason="needs root and git")


def readme_lines() -> dict[str, str]:
    """The commands of the README's first shell block, by what they do."""
    block = re.search(r"```sh\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    lines = [line for line in block.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    kinds = {"install": "pip install", "login": "pbe-fs login", "run": "pbe-fs run", "test": ".ci/run"}
    found = {kind: [line for line in lines if needle in line] for kind, needle in kinds.items()}
    assert all(len(v) == 1 for v in found.values()) and len(lines) == 4, lines
    return {kind: v[0] for kind, v in found.items()}


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository as a fresh clone has it: tracked and new files, nothing ignored."""
    target = tmp_path_factory.mktemp("clone") / "pbe-fs"
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, listing):
        if (ROOT / name).is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, target / name)
    return target


def environment(tmp: Path) -> dict[str, str]:
    """A root shell without sudo on PATH, with its own XDG config folder (pip's settings kept)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PBE_FS_", "VIRTUAL_ENV", "PYTHON"))}
    path = env.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
    if shutil.which("sudo", path=path):  # hide it: the lines must work where there is none
        shim = tmp / "no-sudo-bin"
        shim.mkdir(exist_ok=True)
        for folder in path.split(":"):
            for entry in Path(folder).glob("*") if Path(folder).is_dir() else []:
                if entry.name != "sudo" and not (shim / entry.name).exists():
                    (shim / entry.name).symlink_to(entry)
        path = str(shim)
    config_home = tmp / "xdg"
    real_pip = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "pip"
    if real_pip.is_dir() and not (config_home / "pip").exists():
        shutil.copytree(real_pip, config_home / "pip")
    config_home.mkdir(exist_ok=True)
    return {**env, "PATH": path, "XDG_CONFIG_HOME": str(config_home)}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_readme_install_login_run_verbatim_as_root_without_sudo(clone: Path, fake: FakePixiv, tmp_path: Path) -> None:
    lines = readme_lines()
    env = environment(tmp_path)
    assert shutil.which("sudo", path=env["PATH"]) is None
    sample = (clone / "config.json").read_bytes()
    proc = subprocess.run(["bash", "-c", lines["install"]], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    # the stand-in instead of pixiv, and a free port: the only settings a test needs of its own
    user = Path(env["XDG_CONFIG_HOME"]) / "pbe-fs" / "config.json"
    user.parent.mkdir(parents=True, exist_ok=True)
    port = free_port()
    user.write_text(json.dumps({"pixiv": {"api_host": fake.url, "timeout": 2, "backoff": 0.01},
                                "webdav": {"port": port}, "sync": {"sizes": ["original"]}}))
    proc = subprocess.run(["bash", "-c", lines["login"] + " --refresh-token good-refresh"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and str(user) in proc.stderr, proc.stderr
    assert json.loads(user.read_text())["pixiv"]["refresh"] == "good-refresh"
    assert oct(user.stat().st_mode & 0o777) == "0o600"
    log = tmp_path / "run.log"
    run = subprocess.Popen(["bash", "-c", lines["run"]], cwd=clone, env=env, stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=open(log, "w"), start_new_session=True)
    try:
        deadline, answered = time.monotonic() + 60, False
        while time.monotonic() < deadline and run.poll() is None and not answered:
            try:
                answered = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status == 200
            except OSError:
                time.sleep(0.3)
        assert answered, log.read_text()
    finally:
        os.killpg(run.pid, signal.SIGTERM)
        code = run.wait(timeout=30)
    assert code == 0, log.read_text()
    assert (clone / "config.json").read_bytes() == sample  # the sample is never written
    assert "Traceback" not in log.read_text()


def test_ci_run_has_its_own_environment_waits_for_apt_and_never_hides_failures(clone: Path, tmp_path: Path) -> None:
    env = environment(tmp_path)
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    calls = tmp_path / "apt-calls"
    # apt as a stub: every package is there but gvfs-fuse, and every call is written down
    (stubs / "dpkg-query").write_text('#!/bin/sh\nfor a; do p=$a; done\n'
                                      '[ "$p" = gvfs-fuse ] && { echo "deinstall ok config-files"; exit 0; }\n'
                                      'echo "install ok installed"\n')
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$*" >> {calls}\n')
    for stub in stubs.iterdir():
        stub.chmod(0o755)
    env["PATH"] = f"{stubs}:{env['PATH']}"
    (clone / ".venv").mkdir(exist_ok=True)  # the README's install (made by the test above, if it ran)
    (clone / ".venv" / "the-readme-install").write_text("untouched")
    before = {str(p): p.stat().st_mtime_ns for p in (clone / ".venv").rglob("*")}
    lines = readme_lines()
    assert lines["test"].endswith("bash .ci/run")
    proc = subprocess.run(["bash", "-c", lines["test"] + " tests/test_names.py"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0 and " passed" in proc.stdout, proc.stdout[-3000:] + proc.stderr[-3000:]
    update, install = calls.read_text().splitlines()
    assert "DPkg::Lock::Timeout=600" in update and update.endswith("update -qq")
    assert "DPkg::Lock::Timeout=600" in install and install.endswith("install -y -qq gvfs-fuse")
    assert {str(p): p.stat().st_mtime_ns for p in (clone / ".venv").rglob("*")} == before
    assert (clone / ".ci" / "venv" / "bin" / "pbe-fs").exists()
    # no test collected is a failure, and so is a failing test
    proc = subprocess.run(["bash", ".ci/run", "tests/test_names.py", "-k", "no_such_test"], cwd=clone, env=env,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 5, proc.stdout[-2000:]
    # inside the tests, the test line does not start the suite again
    proc = subprocess.run(["bash", "-c", lines["test"]], cwd=clone, env={**env, "PBE_FS_CI_RUN": "1"},
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.returncode == 3 and "not starting the tests inside the tests" in proc.stderr
