"""FUSE's kernel protocol over /dev/fuse: mounting, requests, replies and
cache notifications, for a read-mostly tree.

Why not a binding (pyfuse3 was one): the speed of a mount is decided by
what the kernel may cache and by how many requests reach this process, and
both are set in the protocol itself. Speaking it directly lets the mount
answer OPENDIR and OPEN with ENOSYS, so the kernel never sends OPENDIR,
RELEASEDIR, OPEN or RELEASE again: it opens folders and files itself,
keeps every folder's entries and every file's pages in its own cache, and
names the folder or file by its number on READDIR and READ (it is in
every request's header; a binding left it out and passed the handle an
OPEN returned). Re-opening a file then costs no round trip at all. It also
spares each request a trip through an event loop. The whole protocol a
read-only tree needs is a few structs.

One thread (the caller of ``serve``) reads requests and answers those whose
answer is at hand. An operation that would wait on I/O raises ``Offload``
when it finds itself on that thread; the request then runs again, from the
start, on a worker thread, which answers it. Operations are synchronous.
"""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import os
import select
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from .colocate import Colocation

log = logging.getLogger("pbe_fs.fuse")

ROOT_INODE = 1
_MAJOR, _MINOR = 7, 40  # the structs below are those of protocol 7.40
_MAX_WRITE = 4096  # nothing is ever written; the kernel's minimum
_BUFFER = 64 * 1024 + 4096  # a request: header, arguments and a name, or an xattr value (64 KiB at most)
_MAX_PAGES = 256  # reads of up to 1 MiB
_SPIN = 100e-6  # seconds the request thread reads on before it sleeps (see Session.serve)

_HEADER = struct.Struct("<IIQQIIIHH")  # fuse_in_header
_ASKER = struct.Struct("<32xI")  # its pid field: the thread that asked
_OUT = struct.Struct("<IiQ")  # fuse_out_header
_ATTR = "QQQQQQIIIIIIIIII"  # fuse_attr
_ENTRY = struct.Struct("<QQQQII" + _ATTR)  # fuse_entry_out
_ATTR_OUT = struct.Struct("<QII" + _ATTR)  # fuse_attr_out
_DIRENT = struct.Struct("<QQII")  # fuse_dirent without its name
_ENTRY_PLUS = struct.Struct("<QQQQII" + _ATTR + "QQII")  # fuse_direntplus without its name
_READ_IN = struct.Struct("<QQII")  # fuse_read_in: fh, offset, size, read_flags (the rest unused)
_GETXATTR_IN = struct.Struct("<II")
_GETXATTR_OUT = struct.Struct("<II")
_STATFS_OUT = struct.Struct("<QQQQQIIII24x")
_INIT_IN = struct.Struct("<IIIII")  # major, minor, max_readahead, flags, flags2 (with _INIT_EXT)
_INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")
_INVAL_INODE = struct.Struct("<Qqq")
_INVAL_ENTRY = struct.Struct("<QII")
_RETRIEVE = struct.Struct("<QQQII")  # fuse_notify_retrieve_out: unique, nodeid, offset, size, padding

# opcodes
LOOKUP, FORGET, GETATTR, SETATTR, READLINK, SYMLINK = 1, 2, 3, 4, 5, 6
MKNOD, MKDIR, UNLINK, RMDIR, RENAME, LINK, OPEN, READ, WRITE, STATFS, RELEASE = 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18
SETXATTR, GETXATTR, LISTXATTR, REMOVEXATTR, INIT, OPENDIR, READDIR, RELEASEDIR = 21, 22, 23, 24, 26, 27, 28, 29
CREATE, INTERRUPT, DESTROY, NOTIFY_REPLY, BATCH_FORGET, FALLOCATE, READDIRPLUS = 35, 36, 38, 41, 42, 43, 44
RENAME2, TMPFILE = 45, 51
_NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}
_WRITES = {SETATTR, SYMLINK, MKNOD, MKDIR, RENAME, LINK, WRITE, SETXATTR, REMOVEXATTR, CREATE, FALLOCATE,
           RENAME2, TMPFILE}

# init flags
_ASYNC_READ, _EXPORT_SUPPORT, _AUTO_INVAL_DATA = 1 << 0, 1 << 4, 1 << 12
_DO_READDIRPLUS, _READDIRPLUS_AUTO, _ASYNC_DIO = 1 << 13, 1 << 14, 1 << 15
_PARALLEL_DIROPS, _MAX_PAGES_FLAG, _INIT_EXT = 1 << 18, 1 << 22, 1 << 30
_WANTED = (_ASYNC_READ | _EXPORT_SUPPORT | _AUTO_INVAL_DATA | _DO_READDIRPLUS | _READDIRPLUS_AUTO | _ASYNC_DIO
           | _PARALLEL_DIROPS | _MAX_PAGES_FLAG)

_NOTIFY_INVAL_INODE, _NOTIFY_INVAL_ENTRY, _NOTIFY_RETRIEVE = 2, 3, 4
_ROOT = 1


class FuseError(Exception):
    """An answer of errno to the request being handled."""

    def __init__(self, code: int) -> None:
        super().__init__(os.strerror(code))
        self.errno = code


class _Stopped(BaseException):
    """Raised on the request thread to end ``serve``."""


class Offload(Exception):
    """Raised by an operation on the request thread when its answer needs
    I/O: the request is handled again on a worker thread."""


# An entry as the kernel is told of it: number, mode, links, size, modification
# time (ns), how long the kernel may keep it (s) and its generation (a number
# naming other bytes than before must come with another generation).
Entry = tuple[int, int, int, int, int, float, int]


class Operations(Protocol):
    def lookup(self, parent: int, name: bytes) -> Entry: ...
    def getattr(self, inode: int) -> Entry: ...
    def read(self, inode: int, offset: int, size: int) -> bytes: ...
    def readdir(self, inode: int, offset: int, out: "DirBuffer") -> None: ...
    def getxattr(self, inode: int, name: bytes) -> bytes: ...
    def listxattr(self, inode: int) -> list[bytes]: ...
    def statfs(self) -> os.statvfs_result: ...
    def unlink(self, parent: int, name: bytes) -> None: ...
    def rmdir(self, parent: int, name: bytes) -> None: ...


def _name(arg: memoryview) -> bytes:
    return bytes(arg).split(b"\0", 1)[0]


def _entry_fields(inode: int, mode: int, nlink: int, size: int, ns: int, timeout: float, generation: int,
                  uid: int, gid: int) -> tuple[int, ...]:
    """fuse_entry_out's fields (the head of fuse_direntplus too)."""
    secs, nsec = divmod(ns, 1_000_000_000)
    valid = int(timeout)
    valid_ns = int((timeout - valid) * 1e9)
    return (inode, generation, valid, valid, valid_ns, valid_ns,
            inode, size, (size + 511) // 512, secs, secs, secs, nsec, nsec, nsec, mode, nlink, uid, gid, 0,
            128 * 1024, 0)


_NO_ENTRY = (0,) * len(_entry_fields(0, 0, 0, 0, 0, 0.0, 0, 0, 0))  # node id 0: "no attributes given"


class DirBuffer:
    """A READDIR or READDIRPLUS answer, filled up to the size the kernel
    asked for. ``add`` says False when the entry did not fit."""

    __slots__ = ("_parts", "_room", "_plus", "_uid", "_gid")

    def __init__(self, size: int, plus: bool, uid: int, gid: int) -> None:
        self._parts: list[bytes] = []
        self._room = size
        self._plus = plus
        self._uid, self._gid = uid, gid

    def add(self, name: bytes, next_offset: int, inode: int, mode: int, nlink: int, size: int, ns: int,
            timeout: float, generation: int) -> bool:
        used = (_ENTRY_PLUS.size if self._plus else _DIRENT.size) + len(name)
        padded = (used + 7) & ~7
        if padded > self._room:
            return False
        self._room -= padded
        kind = (mode & 0o170000) >> 12
        if self._plus:
            # size < 0: attributes not worked out yet. Node id 0 gives the name alone (the kernel
            # makes no inode for it, and LOOKs it UP if someone stats it: a walk never does).
            head = _entry_fields(inode, mode, nlink, size, ns, timeout, generation, self._uid, self._gid) \
                if size >= 0 else _NO_ENTRY
            self._parts.append(_ENTRY_PLUS.pack(*head, inode, next_offset, len(name), kind))
        else:
            self._parts.append(_DIRENT.pack(inode, next_offset, len(name), kind))
        self._parts.append(name + b"\0" * (padded - used))
        return True

    @property
    def plus(self) -> bool:
        """Whether entries go with their attributes (READDIRPLUS)."""
        return self._plus

    def data(self) -> bytes:
        return b"".join(self._parts)


class Session:
    """One mount: its /dev/fuse connection, the thread that reads it and the
    workers that answer what needs I/O."""

    def __init__(self, ops: Operations, mountpoint: Path, options: list[str], workers: int = 16) -> None:
        self.ops = ops
        self.mountpoint = mountpoint
        self.options = options
        self.uid, self.gid = os.getuid(), os.getgid()
        self._fd = -1
        self._loop_thread = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="fuse")
        self._stopping = False
        self._handlers: dict[int, Callable[[int, memoryview, int], bytes | None]] = {
            LOOKUP: self._lookup, GETATTR: self._getattr, OPEN: self._open, READ: self._read,
            RELEASE: lambda *_: b"", OPENDIR: self._open, READDIR: self._readdir,
            READDIRPLUS: self._readdirplus, RELEASEDIR: lambda *_: b"", STATFS: self._statfs,
            GETXATTR: self._getxattr, LISTXATTR: self._listxattr, UNLINK: self._unlink, RMDIR: self._rmdir,
            INIT: self._init, DESTROY: lambda *_: b"", NOTIFY_REPLY: self._woken,
        }

    # -- mounting -------------------------------------------------------------------
    def mount(self) -> None:
        """Mount through fusermount3 (as root too: one way for everyone),
        which hands the /dev/fuse connection back over a socket."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            env = {**os.environ, "_FUSE_COMMFD": str(theirs.fileno())}
            done = subprocess.run(["fusermount3", "-o", ",".join(self.options), "--", str(self.mountpoint)],
                                  env=env, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            theirs.close()
            if done.returncode != 0:
                raise OSError(errno.EIO, done.stderr.strip().removeprefix("fusermount3: ") or "fusermount3 failed")
            _, fds, _, _ = socket.recv_fds(ours, 1, 1)
        except FileNotFoundError:
            raise OSError(errno.ENOENT, "fusermount3 is missing: install fuse3 (apt-get install fuse3)") from None
        finally:
            ours.close()
            theirs.close()
        if not fds:
            raise OSError(errno.EIO, "fusermount3 did not hand over the connection")
        self._fd = fds[0]

    def _detach(self) -> None:
        """Unmount (quietly: it may be gone already)."""
        subprocess.run(["fusermount3", "-u", "-q", "-z", "--", str(self.mountpoint)],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def unmount(self) -> None:
        """Unmount and close the connection, once ``serve`` has returned."""
        self._detach()
        self._pool.shutdown(wait=False, cancel_futures=True)
        fd, self._fd = self._fd, -1  # -1 first: a late notification must not reach a reused number
        if fd >= 0:
            os.close(fd)  # what the kernel still waits for is answered with an error

    # -- the request loop --------------------------------------------------------------
    @property
    def on_loop(self) -> bool:
        return threading.get_ident() == self._loop_thread

    def stop(self) -> None:
        """End ``serve``, from any thread.

        The request thread may be asleep in a poll of the connection, and a
        signal cannot be relied on to interrupt that poll: one that arrives
        just before the poll begins is handled and the poll still sleeps.
        So the kernel itself is asked for a request: the answer to a
        retrieve of no bytes of the root, which ``serve`` reads, sees
        ``_stopping`` and returns. Without a connection (gone already, or
        too old a kernel) the mount is detached instead."""
        self._stopping = True
        if self.on_loop:
            raise _Stopped
        try:
            self._send_notification(_NOTIFY_RETRIEVE, _RETRIEVE.pack(0, _ROOT, 0, 0, 0))
        except OSError as exc:
            log.debug("waking the request thread: %s; detaching instead", exc)
            self._detach()

    def _woken(self, nodeid: int, arg: memoryview, unique: int) -> None:
        """The kernel's answer to the retrieve ``stop`` asks for (never answered back)."""
        if self._stopping:
            raise _Stopped

    def serve(self) -> None:
        """Answer requests until the mount goes away or ``stop`` is called.

        Requests come in bursts (a walk, an `ls -l`, a copy), one at a time
        from each program, and one arrives within some 40 µs of the answer
        to the last. So after each request the thread keeps reading for
        ``_SPIN`` seconds before it sleeps in ``poll``: a sleeping thread
        costs every request its wake-up, which was a third of a first
        walk's time (6.3 s against 4.0 s for 1,000 works' 45,000 folders).
        Not on one CPU, where the spinning would hold up the program that
        asks. While requests come back to back the thread also moves to
        the asker's CPU, where possible (see colocate)."""
        self._loop_thread = threading.get_ident()
        fd, handle = self._fd, self._handle
        spin = _SPIN if len(os.sched_getaffinity(0)) > 1 else 0.0
        near = Colocation()
        asked, asker = near.asked, _ASKER.unpack_from
        os.set_blocking(fd, False)
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        clock, until = time.perf_counter, 0.0
        try:
            while True:
                try:
                    data = os.read(fd, _BUFFER)
                except BlockingIOError:  # nothing yet: spin a little, then sleep until there is
                    if not until:
                        until = clock() + spin
                    elif clock() > until:
                        near.resting()
                        poller.poll()
                        until = 0.0
                    continue
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):  # interrupted before we read it
                        continue
                    if exc.errno == errno.EINVAL:  # a request larger than any we take: the kernel fails it
                        log.warning("the kernel sent a request larger than %d bytes; it was refused", _BUFFER)
                        continue
                    if exc.errno in (errno.ENODEV, errno.EBADF):  # unmounted
                        return
                    raise
                asked(asker(data)[0])
                # A request handed to a worker: its asker waits for that worker, and spinning
                # meanwhile only takes the GIL from it (a cold walk of 10,000 works: 1 s of CPU).
                until = -1.0 if handle(data, True) else 0.0
        except _Stopped:
            return
        finally:
            near.resting()
            self._loop_thread = 0

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run fn on a worker thread (invalidations, work after a reply)."""
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("%s failed", getattr(fn, "__name__", fn))
        try:
            self._pool.submit(run)
        except RuntimeError:  # shutting down
            pass

    def _handle(self, data: bytes, on_loop: bool) -> bool:
        """Answer one request; True if it went to a worker instead."""
        _, opcode, unique, nodeid, _, _, _, _, _ = _HEADER.unpack_from(data)
        if opcode in _NO_REPLY:
            return False
        handler = self._handlers.get(opcode)
        try:
            if handler is None:
                raise FuseError(errno.EROFS if opcode in _WRITES else errno.ENOSYS)
            reply = handler(nodeid, memoryview(data)[_HEADER.size:], unique)
        except Offload:
            if on_loop:
                self._pool.submit(self._handle, data, False)
                return True
            log.error("opcode %d: asked for a worker while on one", opcode)
            self._reply_error(unique, errno.EIO)
        except FuseError as exc:
            self._reply_error(unique, exc.errno)
        except Exception:
            log.exception("opcode %d failed", opcode)
            self._reply_error(unique, errno.EIO)
        else:
            if reply is not None:
                self._send(_OUT.pack(_OUT.size + len(reply), 0, unique), reply)
        return False

    def _send(self, *message: bytes) -> None:
        """One answer, in one write (a READ's MiB is not copied to join it to its header)."""
        try:
            os.writev(self._fd, message)
        except OSError as exc:  # ENOENT: the request was interrupted meanwhile; ENODEV: unmounted
            if exc.errno not in (errno.ENOENT, errno.ENODEV, errno.EBADF):
                log.error("answering the kernel: %s", exc)

    def _reply_error(self, unique: int, code: int) -> None:
        self._send(_OUT.pack(_OUT.size, -code, unique))

    # -- notifications ------------------------------------------------------------------
    def invalidate_entry(self, parent: int, name: bytes) -> None:
        """Forget parent/name (never from the request thread: the kernel may
        wait on a request that thread has still to answer)."""
        body = _INVAL_ENTRY.pack(parent, len(name), 0) + name + b"\0"
        self._notify(_NOTIFY_INVAL_ENTRY, body)

    def invalidate_inode(self, inode: int) -> None:
        """Forget an entry's attributes, cached pages and cached listing."""
        self._notify(_NOTIFY_INVAL_INODE, _INVAL_INODE.pack(inode, 0, 0))

    def _notify(self, code: int, body: bytes) -> None:
        try:
            self._send_notification(code, body)
        except OSError:
            pass  # ENOENT: the kernel does not have it cached

    def _send_notification(self, code: int, body: bytes) -> None:
        os.write(self._fd, _OUT.pack(_OUT.size + len(body), code, 0) + body)

    # -- requests ----------------------------------------------------------------------
    def _entry(self, entry: Entry) -> bytes:
        return _ENTRY.pack(*_entry_fields(*entry, self.uid, self.gid))

    def _init(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        major, minor, readahead, flags, _ = _INIT_IN.unpack_from(bytes(arg).ljust(_INIT_IN.size, b"\0"))
        if major != _MAJOR:
            log.error("the kernel speaks FUSE %d.%d, this mount %d.%d", major, minor, _MAJOR, _MINOR)
            raise FuseError(errno.EPROTO)
        return _INIT_OUT.pack(_MAJOR, _MINOR, readahead, flags & _WANTED, 0, 0, _MAX_WRITE, 1, _MAX_PAGES, 0, 0, 0)

    def _lookup(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        return self._entry(self.ops.lookup(nodeid, _name(arg)))

    def _getattr(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        fields = _entry_fields(*self.ops.getattr(nodeid), self.uid, self.gid)
        return _ATTR_OUT.pack(fields[3], fields[5], 0, *fields[6:])  # attr_valid, its ns, padding, fuse_attr

    def _open(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        # "Not implemented", to OPENDIR and to OPEN: from now on the kernel opens
        # folders and files itself, keeps their listings and pages (FOPEN_CACHE_DIR
        # and FOPEN_KEEP_CACHE are its defaults then) and sends READDIR and READ
        # with the number; a new index generation invalidates what changed. A
        # write is refused when it comes (SETATTR for O_TRUNC, WRITE).
        raise FuseError(errno.ENOSYS)

    def _readdir(self, nodeid: int, arg: memoryview, unique: int, plus: bool = False) -> bytes:
        _, offset, size, _ = _READ_IN.unpack_from(arg)
        out = DirBuffer(size, plus, self.uid, self.gid)
        self.ops.readdir(nodeid, offset, out)
        return out.data()

    def _readdirplus(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        return self._readdir(nodeid, arg, unique, plus=True)

    def _read(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        _, offset, size, _ = _READ_IN.unpack_from(arg)  # the handle is 0: no OPEN gave one
        return self.ops.read(nodeid, offset, size)

    def _statfs(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        st = self.ops.statfs()
        return _STATFS_OUT.pack(st.f_blocks, st.f_bfree, st.f_bavail, st.f_files, st.f_ffree, st.f_bsize, 255,
                                st.f_frsize, 0)

    def _sized(self, data: bytes, arg: memoryview) -> bytes:
        """getxattr/listxattr: the size when asked for 0 bytes, else the data if it fits."""
        size = _GETXATTR_IN.unpack_from(arg)[0]
        if size == 0:
            return _GETXATTR_OUT.pack(len(data), 0)
        if len(data) > size:
            raise FuseError(errno.ERANGE)
        return data

    def _getxattr(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        name = bytes(arg[_GETXATTR_IN.size:]).split(b"\0", 1)[0]
        return self._sized(self.ops.getxattr(nodeid, name), arg)

    def _listxattr(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        return self._sized(b"".join(n + b"\0" for n in self.ops.listxattr(nodeid)), arg)

    def _unlink(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        self.ops.unlink(nodeid, _name(arg))
        return b""

    def _rmdir(self, nodeid: int, arg: memoryview, unique: int) -> bytes:
        self.ops.rmdir(nodeid, _name(arg))
        return b""
