"""Keeping the mount's request thread on the CPU of the program it answers.

A walk of the mount is a ping-pong: `find` asks for a folder, waits for
the answer, asks for the next; 90,000 times for the whole tree of 1,000
works. Each time, one side wakes the other, and when they sit on two CPUs
that wake-up is an interrupt to a CPU that has gone idle, the dearest part
of the round trip (in a virtual machine, a trip through the host). Timed
on the 2-core development machine: `find` and the mount pinned to one CPU
walk those 1,000 works in 2.7 s; on two CPUs, 6.3 s, and 4.0 s with the
request thread spinning between requests so that only `find` is woken.

The scheduler does not put the two together by itself: it wakes a task on
an idle CPU when there is one, and the waker's CPU is busy with the waker
at that moment. But a CPU that runs nothing but SCHED_IDLE tasks counts as
idle for that choice. So while requests come back to back and nothing
else wants a CPU, the request thread moves to the asker's CPU and runs as
SCHED_IDLE: the asker is woken where it waited, takes the CPU from the
thread at once, and when it asks again the thread, still runnable there,
reads the request without having slept. Nobody is woken across CPUs, and
the other CPU stays free: the same walk takes 2.9 s and half the CPU time.

SCHED_IDLE gives way to every other task, so the thread takes it only
while nothing else is runnable (looked at every few requests), and gives
it back before it sleeps. Leaving SCHED_IDLE needs CAP_SYS_NICE (or an
RLIMIT_NICE of 20), so in practice this is for a mount run as root; one
that cannot leave it never enters it.
"""

from __future__ import annotations

import logging
import os
import threading

log = logging.getLogger("pbe_fs.fuse")

EVERY = 16  # requests between two looks at where the asker runs and whether the machine is quiet


def can_leave_idle() -> bool:
    """Whether a thread of this process may go back from SCHED_IDLE to the
    normal policy (tried on a throwaway thread: the policy is per thread)."""
    result: list[bool] = []

    def attempt() -> None:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
            result.append(True)
        except (OSError, AttributeError):
            result.append(False)

    probe = threading.Thread(target=attempt, name="sched-probe")
    probe.start()
    probe.join()
    return result == [True]


def _proc(path: str) -> bytes:
    """A small /proc file, in one read (b"" when it cannot be read: the
    thread is gone). os.open and os.read: no file object on this path."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return b""
    try:
        return os.read(fd, 1024)
    except OSError:
        return b""
    finally:
        os.close(fd)


def cpu_of(pid: int) -> int | None:
    """The CPU the thread pid last ran on (/proc/PID/stat, field 39)."""
    try:  # the name comes first, in brackets, and may hold spaces and brackets itself
        return int(_proc(f"/proc/{pid}/stat").rpartition(b")")[2].split()[36])
    except (ValueError, IndexError):
        return None


def quiet() -> bool:
    """Whether the caller is the only task running or runnable right now
    (/proc/loadavg's fourth field, "running/total")."""
    fields = _proc("/proc/loadavg").split()
    return len(fields) > 3 and fields[3].partition(b"/")[0] == b"1"


class Colocation:
    """Where the request thread runs, for the thread itself to call.

    ``asked(pid)`` with each request's asker while requests come back to
    back; ``resting()`` before the thread sleeps."""

    def __init__(self) -> None:
        self.enabled = len(os.sched_getaffinity(0)) > 1 and can_leave_idle()
        self.idle = False
        self._count = 0
        if not self.enabled:
            log.debug("the request thread stays where the scheduler puts it")

    def asked(self, pid: int) -> None:
        if not self.enabled:
            return
        self._count += 1
        if self._count % EVERY:
            return
        cpu = cpu_of(pid)
        allowed = os.sched_getaffinity(0)  # again each time: someone may have narrowed it (taskset -p)
        if cpu is None or cpu not in allowed or not quiet():
            self._policy(idle=False)
            return
        try:
            os.sched_setaffinity(0, {cpu})  # moves this thread there now...
            os.sched_setaffinity(0, allowed)  # ...and lets it go where it could again
        except OSError as exc:  # the CPUs changed meanwhile (a cgroup's cpuset)
            log.debug("the request thread stays where it is: %s", exc)
            self._policy(idle=False)
            return
        self._policy(idle=True)

    def resting(self) -> None:
        """The thread is about to sleep: woken later, it must not wait
        behind every other task on its CPU."""
        if self.idle:
            self._policy(idle=False)

    def _policy(self, idle: bool) -> None:
        if idle == self.idle:
            return
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE if idle else os.SCHED_OTHER, os.sched_param(0))
        except OSError as exc:  # not after can_leave_idle(), unless the limits changed since
            log.warning("the request thread's scheduling policy: %s", exc)
            if idle:
                self.enabled = False  # never entered: nothing to undo
            return  # still SCHED_IDLE: the next resting() or asked() tries again to leave it
        self.idle = idle
