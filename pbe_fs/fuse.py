"""The FUSE adapter: pyfuse3 operations over the shared tree.

It knows inodes, errnos and kernel caches, and nothing about names or
views: every answer comes from ``Tree``. Inode numbers are handed out per
path on first sight and kept for the whole mount, so a path keeps its
number however often the kernel forgets it.

Deletion: ``rm -r`` of an artwork folder unlinks every file first and
rmdirs the folder last. Unlinks inside a deletable artwork folder are
accepted and hide the entry for a minute; the rmdir of the folder then
deletes the whole artwork. A lone ``rm`` of one file changes nothing in the
archive, and the file shows again once the minute is up.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import signal
import stat
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pyfuse3
import trio

from .errors import PbeError
from .render.segments import Reader
from .tree import Node, Tree, TreeError

log = logging.getLogger("pbe_fs.fuse")

ROOT = pyfuse3.ROOT_INODE
_HIDE_SECONDS = 60.0
_ERRNO = {"notfound": errno.ENOENT, "readonly": errno.EROFS, "forbidden": errno.EACCES, "busy": errno.EBUSY}
F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def _guard(handler: F) -> F:
    """Unexpected errors become EIO and one log line; the mount lives on."""
    @functools.wraps(handler)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await handler(*args, **kwargs)
        except pyfuse3.FUSEError:
            raise
        except TreeError as exc:
            raise pyfuse3.FUSEError(_ERRNO.get(exc.kind, errno.EIO)) from None
        except OSError as exc:
            log.error("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(exc.errno or errno.EIO) from None
        except PbeError as exc:  # the bucket failed us: one line, not a traceback
            log.error("%s: %s", handler.__name__, exc)
            raise pyfuse3.FUSEError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise pyfuse3.FUSEError(errno.EIO) from None
    return wrapper  # type: ignore[return-value]


def _refuse(*_: Any, **__: Any) -> Any:
    async def refuse(*args: Any, **kwargs: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)
    return refuse


class Operations(pyfuse3.Operations):
    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, tree: Tree, *, allow_delete: bool, xattrs: bool = False) -> None:
        super().__init__()
        self.tree = tree
        self.allow_delete = allow_delete
        self.xattrs = xattrs
        self._path_of: dict[int, tuple[str, ...]] = {ROOT: ()}
        self._inode_of: dict[tuple[str, ...], int] = {(): ROOT}
        self._lookups: Counter[int] = Counter()
        self._next_inode = ROOT + 1
        self._handles: dict[int, Reader] = {}
        self._dirs: dict[int, tuple[tuple[str, ...], list[tuple[str, Node]]]] = {}
        self._next_fh = 1
        self._hidden: dict[tuple[str, ...], float] = {}
        self._uid, self._gid = os.getuid(), os.getgid()
        self.nursery: trio.Nursery | None = None  # for work that must wait until a request is answered
        self._told = tree.generation

    # -- bookkeeping -----------------------------------------------------------
    def _inode(self, path: tuple[str, ...]) -> int:
        inode = self._inode_of.get(path)
        if inode is None:
            inode = self._inode_of[path] = self._next_inode
            self._path_of[inode] = path
            self._next_inode += 1
        return inode

    def _path(self, inode: int) -> tuple[str, ...]:
        try:
            return self._path_of[inode]
        except KeyError:
            raise pyfuse3.FUSEError(errno.ESTALE) from None

    def _is_hidden(self, path: tuple[str, ...]) -> bool:
        until = self._hidden.get(path)
        if until is None:
            return False
        if until < time.monotonic():
            del self._hidden[path]
            return False
        return True

    async def _node(self, path: tuple[str, ...]) -> Node | None:
        if self._is_hidden(path):
            return None
        if self.tree.is_cached(path[:-1]):
            node = self.tree.get(path)
        else:
            node = await trio.to_thread.run_sync(self.tree.get, path)
        self.tell_kernel_if_changed()
        return node

    def tell_kernel_if_changed(self) -> None:
        """Whoever notices a new generation first (a request, or the poll
        loop) has the kernel's caches invalidated, after this request."""
        generation = self.tree.generation
        if generation != self._told and self.nursery is not None:
            self._told = generation
            log.debug("archive changed (generation %d): refreshing the mount", generation)
            self.nursery.start_soon(self.invalidate)

    def _attrs(self, path: tuple[str, ...], node: Node) -> pyfuse3.EntryAttributes:
        a = pyfuse3.EntryAttributes()
        a.st_ino = self._inode(path)
        writable = 0o200 if self.allow_delete else 0
        if node.is_dir:
            a.st_mode = stat.S_IFDIR | 0o555 | writable
            a.st_nlink = self.tree.links(path, node)
        else:
            a.st_mode = stat.S_IFREG | 0o444
            a.st_nlink = 1
        a.st_size = node.size
        a.st_blksize = 128 * 1024
        a.st_blocks = (node.size + 511) // 512
        ns = int(node.mtime * 1e9)
        a.st_atime_ns = a.st_mtime_ns = a.st_ctime_ns = ns
        a.st_uid, a.st_gid = self._uid, self._gid
        # Artwork contents never change; views change when a sync commits,
        # and are invalidated then, so a short timeout is only a backstop.
        timeout = 300.0 if node.immutable else 1.0
        a.entry_timeout = a.attr_timeout = timeout
        return a

    # -- lookups ------------------------------------------------------------------
    @_guard
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        parent = self._path(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            path = parent
        elif text == "..":
            path = parent[:-1]
        else:
            path = parent + (text,)
        node = await self._node(path) if path else self.tree.get(())
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        attrs = self._attrs(path, node)
        self._lookups[attrs.st_ino] += 1
        return attrs

    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            left = self._lookups[inode] - count
            if left > 0:
                self._lookups[inode] = left
            else:
                self._lookups.pop(inode, None)  # the number stays with its path

    @_guard
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        path = self._path(inode)
        node = await self._node(path) if path else self.tree.get(())
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attrs(path, node)

    # -- directories ----------------------------------------------------------------
    @_guard
    async def opendir(self, inode: int, ctx: Any) -> int:
        path = self._path(inode)
        if self.tree.is_cached(path):
            entries = self.tree.list(path)
        else:
            entries = await trio.to_thread.run_sync(self.tree.list, path)
        if entries is None:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        fh = self._next_fh
        self._next_fh += 1
        # a snapshot: offsets stay meaningful while a sync changes the folder
        self._dirs[fh] = (path, entries)
        return fh

    @_guard
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        path, entries = self._dirs[fh]
        for i in range(start_id, len(entries)):
            name, node = entries[i]
            child = path + (name,)
            if self._hidden and self._is_hidden(child):
                continue
            attrs = self._attrs(child, node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, i + 1):
                break
            self._lookups[attrs.st_ino] += 1

    async def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    # -- files ----------------------------------------------------------------------
    @_guard
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT):
            raise pyfuse3.FUSEError(errno.EROFS)
        path = self._path(inode)
        node = await self._node(path)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        if self.tree.is_cached(path[:-1]):
            reader = self.tree.reader(path)  # contents are ready: no thread hop
        else:
            reader = await trio.to_thread.run_sync(self.tree.reader, path)
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = reader
        # Files that can change (status.json, meta.json) bypass the page cache:
        # a read must never mix old cached pages or an old size with new bytes.
        return pyfuse3.FileInfo(fh=fh, keep_cache=node.immutable, direct_io=not node.immutable)

    @_guard
    async def read(self, fh: int, off: int, size: int) -> bytes:
        reader = self._handles.get(fh)
        if reader is None:
            raise pyfuse3.FUSEError(errno.EBADF)
        if reader.blocking and not reader.ready(off, size):  # a bucket's miss waits on the network; the loop must not
            return await trio.to_thread.run_sync(reader.read, off, size)
        return reader.read(off, size)

    async def flush(self, fh: int) -> None:
        raise pyfuse3.FUSEError(errno.ENOSYS)  # nothing to flush: the kernel stops asking on every close

    async def release(self, fh: int) -> None:
        reader = self._handles.pop(fh, None)
        if reader is not None and reader.blocking:  # may wait for a block in flight: not on the loop
            await trio.to_thread.run_sync(reader.close)
        elif reader is not None:
            reader.close()

    # -- extended attributes -----------------------------------------------------------
    @_guard
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        if not self.xattrs:
            # ENOSYS once and the kernel stops asking: without it, `ls -l`
            # costs three round trips per entry (SELinux label, two ACLs).
            raise pyfuse3.FUSEError(errno.ENOSYS)
        if not name.startswith(b"user."):  # ls -l asks every entry for ACLs and SELinux labels
            raise pyfuse3.FUSEError(errno.ENODATA)
        value = self.tree.xattrs(self._path(inode)).get(os.fsdecode(name))
        if value is None:
            raise pyfuse3.FUSEError(errno.ENODATA)
        return value

    @_guard
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        if not self.xattrs:
            raise pyfuse3.FUSEError(errno.ENOSYS)
        return [n.encode() for n in self.tree.xattrs(self._path(inode))]

    async def setxattr(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def removexattr(self, *args: Any) -> None:
        raise pyfuse3.FUSEError(errno.EROFS)

    @_guard
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        st = os.statvfs(self.tree.archive.root)
        data = pyfuse3.StatvfsData()
        for attr in ("f_bsize", "f_frsize", "f_blocks", "f_bfree", "f_bavail", "f_files", "f_ffree", "f_favail"):
            setattr(data, attr, getattr(st, attr))
        data.f_namemax = 255
        return data

    # -- deletion ------------------------------------------------------------------------
    async def _deletable(self, parent_inode: int, name: bytes) -> tuple[tuple[str, ...], Node]:
        path = self._path(parent_inode) + (os.fsdecode(name),)
        node = await self._node(path)
        if node is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        if not self.allow_delete or not node.artwork:
            raise pyfuse3.FUSEError(errno.EROFS)
        if self.tree.is_gone(node.artwork):
            log.warning("refused to delete %s: the work is gone from pixiv, this is its only copy", "/".join(path))
            raise pyfuse3.FUSEError(errno.EACCES)
        return path, node

    @_guard
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path, node = await self._deletable(parent_inode, name)
        if node.is_dir:
            raise pyfuse3.FUSEError(errno.EISDIR)
        self._hidden[path] = time.monotonic() + _HIDE_SECONDS

    @_guard
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        path, node = await self._deletable(parent_inode, name)
        if not node.is_artwork_root:
            self._hidden[path] = time.monotonic() + _HIDE_SECONDS
            return
        await trio.to_thread.run_sync(self.tree.delete, path)
        self._hidden = {p: t for p, t in self._hidden.items() if p[: len(path)] != path}
        # After replying: the kernel holds the parent's lock until this rmdir returns.
        self.tell_kernel_if_changed()

    # every other write refuses: a read-only tree
    setattr = mkdir = mknod = symlink = link = rename = create = write = _refuse()  # type: ignore[assignment]

    # -- cache invalidation ------------------------------------------------------------
    async def invalidate(self) -> None:
        """Tell the kernel what a sync or a deletion changed.

        Folders outside artworks are re-read; entries that no longer exist
        are dropped from the kernel's dentry cache. Callers have refreshed
        the tree already (that is how they knew); only a generation that
        moved on since is picked up here.
        """
        self.tree.refresh(interval=0)
        stale_entries: list[tuple[int, bytes]] = []
        folders: list[int] = []
        for path, inode in list(self._inode_of.items()):
            place = self.tree.place(path)
            if place == "view" or (place == "inside" and (path[-1] == "meta.json" or path[-1].endswith(".cbz"))):
                folders.append(inode)  # meta.json tells the work's state, a CBZ its metadata: a sync may change
            elif place == "artwork" and self.tree.get(path) is None:
                parent = self._inode_of.get(path[:-1])
                if parent is not None:
                    stale_entries.append((parent, os.fsencode(path[-1])))

        def tell_kernel() -> None:
            for inode in folders:
                try:
                    pyfuse3.invalidate_inode(inode, attr_only=False)
                except OSError:
                    pass
            for parent, name in stale_entries:
                try:
                    pyfuse3.invalidate_entry(parent, name)
                except OSError:
                    pass
        await trio.to_thread.run_sync(tell_kernel)


async def _watch_generation(ops: Operations, interval: float) -> None:
    """Notice a sync's commits even when nobody is looking at the mount."""
    while True:
        await trio.sleep(interval)
        await trio.to_thread.run_sync(lambda: ops.tree.refresh(force=False, interval=0))
        ops.tell_kernel_if_changed()


async def _watch_signals(ops: Operations, on_stop: Callable[[int], None] | None,
                         on_hup: Callable[[], None] | None) -> None:
    watched = [signal.SIGINT, signal.SIGTERM] + ([signal.SIGHUP] if on_hup else [])
    with trio.open_signal_receiver(*watched) as signals:
        async for signum in signals:
            if signum == signal.SIGHUP and on_hup:
                await trio.to_thread.run_sync(on_hup)
                await ops.invalidate()  # the NSFW policy may have changed every listing
                continue
            log.info("%s: unmounting", signal.Signals(signum).name)
            if on_stop:
                on_stop(signum)
            pyfuse3.terminate()
            return


def check_mountpoint(mountpoint: Path) -> None:
    if not mountpoint.is_dir():
        raise PbeError(f"mount point {mountpoint} is not a folder (create it first)")
    if os.path.ismount(mountpoint):
        raise PbeError(f"{mountpoint} is already a mount point (unmount it with `fusermount3 -u {mountpoint}`)")
    if any(os.scandir(mountpoint)):
        raise PbeError(f"mount point {mountpoint} is not empty")
    if not os.path.exists("/dev/fuse"):
        raise PbeError("/dev/fuse is missing: install fuse3 (apt-get install fuse3) or load the fuse module")


READAHEAD_KB = 1024


def _widen_readahead(mountpoint: Path) -> None:
    """Let the kernel read ahead 1 MiB at a time instead of 128 KiB.

    Every FUSE request costs a round trip through the kernel and pyfuse3;
    a sequential read of a 5 MB original in 1 MiB requests instead of
    128 KiB ones is about 1.5× faster (measured here). Only root may write
    the setting; without it the mount works as before.
    """
    try:
        # Called from a worker thread once the loop runs: the stat is answered
        # by this very mount, after the kernel's INIT (which resets the value).
        dev = os.stat(mountpoint).st_dev
        Path(f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb").write_text(f"{READAHEAD_KB}\n")
    except OSError as exc:
        log.debug("read-ahead left at the kernel's default: %s", exc)


def mount(tree: Tree, mountpoint: Path, *, allow_delete: bool, xattrs: bool = False, poll_seconds: float = 1.0,
          on_stop: Callable[[int], None] | None = None, on_hup: Callable[[], None] | None = None,
          on_ready: Callable[[], None] | None = None) -> None:
    """Serve the tree at mountpoint until SIGINT/SIGTERM or `fusermount3 -u`.

    ``on_hup`` makes SIGHUP reload (the daemon's config) instead of being
    left to its default; ``on_stop`` hears of SIGINT/SIGTERM first.
    """
    check_mountpoint(mountpoint)
    ops = Operations(tree, allow_delete=allow_delete, xattrs=xattrs)
    options = set(pyfuse3.default_options)
    options |= {"fsname=pbe-fs", "subtype=pbe-fs", "default_permissions"}
    if not allow_delete:
        options.add("ro")
    try:
        pyfuse3.init(ops, str(mountpoint), options)
    except RuntimeError as exc:
        raise PbeError(f"cannot mount {mountpoint}: {exc}") from None
    if on_ready:
        on_ready()

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            ops.nursery = nursery
            nursery.start_soon(_watch_signals, ops, on_stop, on_hup)
            nursery.start_soon(_watch_generation, ops, poll_seconds)
            nursery.start_soon(trio.to_thread.run_sync, _widen_readahead, mountpoint)
            await pyfuse3.main()
            nursery.cancel_scope.cancel()

    try:
        trio.run(main)
    finally:
        try:
            pyfuse3.close(unmount=True)
        except Exception as exc:  # already unmounted by fusermount3 -u
            log.debug("close: %s", exc)
