"""Who is running what: the daemon's state file, and who holds a port or a mount point.

`pbe-fs run` keeps ``.pbe/daemon.json`` beside the index (its pid, since
when, where it serves and mounts, its last and next sync) so that
`status` and `doctor` can tell a healthy daemon from a stranger on its
port. When a port or a mount point is taken, the kernel's tables in
``/proc`` say which process holds it, so the message can name it instead
of advising a command that would pull a live mount from under its owner.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .errors import PbeError

STATE_FILE = "daemon.json"


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def local_time(iso: str | None) -> str:
    """An ISO time from the archive (UTC) as the reader's local time."""
    if not iso:
        return "never"
    try:
        moment = datetime.fromisoformat(iso)
    except ValueError:
        return iso
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.astimezone().strftime("%Y-%m-%d %H:%M:%S %Z")


# -- processes ----------------------------------------------------------------------
def _cmdline(pid: int) -> list[str]:
    try:
        return [a.decode(errors="replace") for a in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if a]
    except OSError:
        return []


def _is_pbe(args: list[str]) -> bool:
    return any(a.endswith("pbe-fs") or a == "pbe_fs.cli" or a.endswith("pbe_fs/cli.py") for a in args[:3])


def describe(pid: int) -> str:
    """`pbe-fs run (pid 123)`, or `pid 123 (nginx)` for a stranger."""
    args = _cmdline(pid)
    if _is_pbe(args):
        command = next((a for a in args if a in ("run", "serve", "mount")), "")
        if command == "run":
            return f"pbe-fs's own daemon (`pbe-fs run`, pid {pid})"
        return f"`pbe-fs {command}` (pid {pid})" if command else f"pbe-fs (pid {pid})"
    return f"pid {pid} ({Path(args[0]).name if args else 'unknown'})"


def _pids_with(target: str) -> list[int]:
    """Processes with an open file descriptor pointing at target."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            for fd in os.scandir(f"/proc/{entry.name}/fd"):
                if os.readlink(fd.path) == target:
                    pids.append(int(entry.name))
                    break
        except OSError:
            continue
    return pids


# -- ports ----------------------------------------------------------------------------
def port_holder(port: int) -> int | None:
    """The pid listening on a TCP port (any address), if /proc tells."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    for inode in inodes:
        pids = _pids_with(f"socket:[{inode}]")
        if pids:
            return pids[0]
    return None


def port_problem(host: str, port: int) -> str | None:
    """Why the WebDAV server could not listen on host:port, in one plain line, or None."""
    if port == 0:
        return None
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
    except OSError as exc:
        pid = port_holder(port)
        who = f"taken by {describe(pid)}" if pid else (exc.strerror or str(exc)).lower()
        return f"cannot listen on {host}:{port}: {who}; stop it, or pick another port (webdav.port or --port)"
    return None


def check_port(host: str, port: int) -> None:
    problem = port_problem(host, port)
    if problem:
        raise PbeError(problem)


# -- mount points ---------------------------------------------------------------------
def _mount_entry(mountpoint: Path) -> tuple[str, str] | None:
    """(file system type, source) of what is mounted at mountpoint, if anything."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) > 4 and fields[4].replace("\\040", " ") == str(mountpoint):
            kind, source = (right.split() + ["", ""])[:2]
            return kind, source
    return None


def mount_problem(mountpoint: Path, state: dict[str, Any] | None = None) -> str | None:
    """Who already holds a mount point, in one line (None when nothing is mounted there)."""
    entry = _mount_entry(mountpoint)
    if entry is None:
        return None
    kind, _ = entry
    if not kind.startswith("fuse"):
        return f"{mountpoint} is already a mount point ({kind}): mount on an empty folder of your own"
    holders = [pid for pid in _pids_with("/dev/fuse") if _is_pbe(_cmdline(pid))]
    named = [pid for pid in holders if str(mountpoint) in _cmdline(pid)]
    if state and state.get("mount") == str(mountpoint) and state.get("pid") in holders:
        named = [state["pid"]]
    if not named:
        if _answers(mountpoint) is False:
            return f"{mountpoint} is a dead mount (its process ended): `fusermount3 -u {mountpoint}`, then try again"
        if len(holders) == 1 and kind == "fuse.pbe-fs":  # alive, and only one pbe-fs holds a connection
            named = holders
    if named:
        return (f"{mountpoint} is already mounted by {describe(named[0])}: it is in use; stop that process "
                f"(`kill {named[0]}`, or `systemctl --user stop pbe-fs` for the service) to unmount it")
    return f"{mountpoint} is already mounted ({kind}) by a process pbe-fs cannot name: mount on another folder"


def _answers(mountpoint: Path, timeout: float = 2.0) -> bool | None:
    """Whether the server of the file system at mountpoint answers a statvfs
    (a stat may come from the kernel's caches): False when it is gone
    ("Transport endpoint is not connected"), None when it does not answer
    in time (stopped, or busy): the thread asking is left behind then."""
    result: list[bool] = []

    def ask() -> None:
        try:
            os.statvfs(mountpoint)
            result.append(True)
        except OSError:
            result.append(False)

    asking = threading.Thread(target=ask, name="statvfs", daemon=True)
    asking.start()
    asking.join(timeout)
    return result[0] if result else None


# -- the daemon's state file --------------------------------------------------------------
def state_path(private: Path) -> Path:
    return private / STATE_FILE


def write_state(private: Path, state: dict[str, Any]) -> None:
    private.mkdir(parents=True, exist_ok=True)
    tmp = private / f".{STATE_FILE}.{os.getpid()}"
    tmp.write_text(json.dumps(state, ensure_ascii=False, indent=2) + "\n")
    os.replace(tmp, state_path(private))


def read_state(private: Path) -> dict[str, Any] | None:
    """The running daemon's state, or None when no daemon of this archive runs."""
    try:
        state = json.loads(state_path(private).read_text())
        pid = int(state["pid"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not _is_pbe(_cmdline(pid)):
        return None  # it died without cleaning up (kill -9): stale
    return state


def remove_state(private: Path) -> None:
    try:
        if json.loads(state_path(private).read_text()).get("pid") == os.getpid():
            state_path(private).unlink()
    except (OSError, ValueError):
        pass
