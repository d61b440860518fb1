"""The request thread follows the program it answers to its CPU, as
SCHED_IDLE, only while the machine is otherwise quiet, and never sleeps
in that policy."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.scale_bench import build_archive
from pbe_fs import colocate
from tests.conftest import Mount

SCHED_IDLE = 5

needs_mount = pytest.mark.skipif(not os.path.exists("/dev/fuse") or os.geteuid() != 0, reason="needs root and /dev/fuse")
needs_cpus = pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")


def test_cpu_of_reads_a_thread_whose_name_has_brackets_and_spaces(tmp_path: Path) -> None:
    odd = tmp_path / "a) 1 2 (b"  # the name comes first in /proc/PID/stat, in brackets
    shutil.copy("/bin/sleep", odd)
    proc = subprocess.Popen([str(odd), "5"])
    try:
        time.sleep(0.05)
        assert colocate.cpu_of(proc.pid) in os.sched_getaffinity(0)
    finally:
        proc.kill()
        proc.wait()
    assert colocate.cpu_of(proc.pid) is None  # gone


def test_a_busy_machine_is_not_quiet() -> None:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.2)
        assert not any(colocate.quiet() for _ in range(20))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()


def _policy_and_cpu(pid: int) -> tuple[int, int] | None:
    """The request thread's (the mount's main thread) policy and CPU."""
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_bytes().rpartition(b")")[2].split()
    except OSError:
        return None
    return int(fields[38]), int(fields[36])


def _walk_watching(m: Mount, cpu: int | None) -> list[tuple[int, int]]:
    """Walk the mount (find pinned to cpu, if given), sampling the request
    thread's policy and CPU until the walk ends. Without hogs of its own,
    the walk starts once nothing else runs (another test's server still
    going down, say), for up to 10 s."""
    deadline = time.monotonic() + 10
    while cpu is not None and not colocate.quiet() and time.monotonic() < deadline:
        time.sleep(0.05)
    cmd = ["find", str(m.mountpoint)]
    if cpu is not None:
        cmd = ["taskset", "-c", str(cpu), *cmd]
    walk = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    seen = []
    while walk.poll() is None:
        sample = _policy_and_cpu(m.proc.pid)
        if sample:
            seen.append(sample)
        time.sleep(0.0005)
    assert walk.wait() == 0
    return seen


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return build_archive(tmp_path_factory.mktemp("colocate"), 300, tags=1)


@needs_mount
@needs_cpus
def test_the_request_thread_runs_beside_the_walk_and_rests_normal(archive: Path, tmp_path: Path) -> None:
    cpus = sorted(os.sched_getaffinity(0))[:2]
    for cpu in cpus:  # a fresh mount each time: a walk's second pass never reaches it
        m = Mount(archive, tmp_path / f"mnt{cpu}")
        try:
            os.listdir(m.path())
            seen = []
            for _ in range(3):  # another program's moment on the CPU makes a look find the machine busy
                seen += _walk_watching(m, cpu)
                if (SCHED_IDLE, cpu) in seen:
                    break
                m.stop()
                m = Mount(archive, tmp_path / f"mnt{cpu}")
                os.listdir(m.path())
            assert (SCHED_IDLE, cpu) in seen, seen[-20:]
            time.sleep(0.05)  # its spin after the last request is 100 µs
            assert _policy_and_cpu(m.proc.pid)[0] == 0  # asleep as SCHED_OTHER
            assert "Traceback" not in m.stderr()
        finally:
            assert m.stop() == 0


@needs_mount
@needs_cpus
def test_on_a_busy_machine_the_request_thread_keeps_its_policy(archive: Path, tmp_path: Path) -> None:
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in os.sched_getaffinity(0)]
    m = Mount(archive, tmp_path / "mnt")
    try:
        os.listdir(m.path())
        seen = _walk_watching(m, None)
        assert len(seen) > 10
        assert all(policy == 0 for policy, _ in seen), seen  # SCHED_IDLE would wait behind the hogs
        assert sum(1 for _ in Path(m.mountpoint).rglob("*")) > 300 * 50  # the walk saw the whole tree
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
        assert m.stop() == 0


@needs_mount
@needs_cpus
def test_cpus_the_mount_was_narrowed_to_are_kept(archive: Path, tmp_path: Path) -> None:
    """`taskset -p` on the mount's request thread holds: the thread moves
    only within what it may use, and never widens it back."""
    first, second = sorted(os.sched_getaffinity(0))[:2]
    m = Mount(archive, tmp_path / "mnt")
    try:
        os.listdir(m.path())
        subprocess.run(["taskset", "-p", "-c", str(second), str(m.proc.pid)], check=True, stdout=subprocess.DEVNULL)
        _walk_watching(m, first)  # asks from the CPU the thread may not use
        assert os.sched_getaffinity(m.proc.pid) == {second}
        assert "Traceback" not in m.stderr()
    finally:
        assert m.stop() == 0
