"""The FUSE adapter: the kernel's requests (``fusekernel``) over the shared tree.

It knows inodes, errnos and kernel caches, and nothing about names or
views: every answer comes from ``Tree``.

Inode numbers are computed from the entry and decoded back on every call,
so the mount keeps no table that grows with what was looked at (with
plenty of RAM the kernel never sends FORGET: a walk of 1.5 M entries would
otherwise stay in memory for good). An artwork folder's number is its view,
its work's id and which of the work's folders in that view it is (by-tag and
changes/ show a work more than once); an entry inside one adds its quality
folder and its place in the sorted listing. View and group folders (a few
per artist, tag and month, bounded by the archive) are numbered in a table.
Every entry keeps its number across syncs, and every entry is immutable
between index generations, so the kernel may cache entries and attributes
for long: a new generation invalidates precisely what changed. Files are
never opened here either (see fusekernel): a READ names the number, whose
reader is kept (the last ``_READERS`` files read), and the kernel keeps
the pages it was sent.

Deletion: ``rm -r`` of an artwork folder unlinks every file first and
rmdirs the folder last. Unlinks inside a deletable artwork folder are
accepted and hide the entry for a minute; the rmdir of the folder then
deletes the whole artwork. A lone ``rm`` of one file changes nothing in the
archive, and the file shows again once the minute is up.
"""

from __future__ import annotations

import errno
import functools
import threading
from array import array
from collections import OrderedDict
import logging
import os
import signal
import stat
import struct
import zlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar


from . import fusekernel, names
from .fusekernel import FuseError, Offload
from .artwork import QUALITIES
from .errors import PbeError
from .render.cache import renderers
from .render.segments import Reader
from .tree import VIEWS, Node, Tree, TreeError

log = logging.getLogger("pbe_fs.fuse")

ROOT = fusekernel.ROOT_INODE
_HIDE_SECONDS = 60.0
# Entries change only with the index generation, which invalidates them:
# the timeout is a backstop. meta.json also follows pixiv's counters.
_LONG, _SHORT = 24 * 3600.0, 1.0
# Files read lately, kept open by number: each holds the files it was read from open
# (a 200-page zip: 200, see cli._more_open_files), a bucket's an open GET too.
_READERS = 16
BUCKET_READERS = 8  # of which a bucket's
_LOAD_AFTER = 1.0  # seconds after the mount comes up (a listing that needs the works loads them itself)
# An artwork-folder inode: flag, view, which folder of the work in the view,
# artwork id, quality folder (0: top), place in the folder's listing + 1 (0: the folder).
_ART = 1 << 62
_VIEW, _NUMBER, _ID, _SUB, _ENTRY = 58, 47, 15, 12, 0
_NUMBER_MAX, _ID_MAX, _ENTRY_MAX = (1 << 11) - 1, (1 << 32) - 1, (1 << 12) - 1
_INSIDE = (1 << _ID) - 1  # the quality and entry bits
# what an artwork folder holds besides the archived files (zip, pdf, cbz, meta.json,
# animations, folder.jpg, quality folders...), at most: a changed work's entries are
# all re-read, since a number is a place in the listing and a page added or gone moves
# every place after it (the kernel must not keep one file's pages for another)
_GENERATED_ENTRIES = 24


# What readdir answers, kept compactly per folder and index generation, up to this many
# bytes: an artwork folder's listing once for all the views that show its work (only the
# numbers' prefix differs), so a walk of every view builds each work's listing once.
_LISTING_BYTES = 32 << 20
_FIELDS = 6  # per entry: number (or its low bits), mode (| _SHORT_BIT), st_nlink, st_size, st_mtime_ns, generation
_SIZE_TIME = struct.Struct("<qq")
_SHORT_BIT = 1 << 32  # in mode: the short timeout (an entry that may change within a generation)


class _Listing:
    """A folder's entries as readdir sends them: names and six numbers
    each (about 90 bytes an entry, where a tree Node and its attributes
    object take about 1 KB). A number >= 0 is ORed with the folder's own
    number (a child's low bits; a view folder's base is 0); < 0 is -number."""

    __slots__ = ("names", "fields", "size")

    def __init__(self, names: list[bytes], fields: array) -> None:
        self.names, self.fields = names, fields
        self.size = 120 + fields.itemsize * len(fields) + sum(len(n) + 41 for n in names)


class _Kept:
    """A file being read, by number: READs name the number alone (no OPEN
    gives a handle, see fusekernel), so the reader is kept across them and
    across opens. ``users``: READs in flight on it; one let go of (``gone``)
    is closed by the last of them."""

    __slots__ = ("reader", "identity", "users", "gone")

    def __init__(self, reader: Reader, identity: int) -> None:
        self.reader, self.identity = reader, identity
        self.users, self.gone = 0, False


def _artwork_inode(view: str, number: int | None, artwork_id: int) -> int:
    """An artwork folder's number; 0 when the fields cannot hold it."""
    if number is None or number > _NUMBER_MAX or artwork_id > _ID_MAX or view not in VIEWS:
        return 0
    return _ART | VIEWS.index(view) << _VIEW | number << _NUMBER | artwork_id << _ID


def _identity(node: Node) -> int:
    """The kernel's generation of a file's inode: from its bytes' ETag,
    so that other bytes under the same number get another inode."""
    return zlib.crc32(node.etag.encode() if node.etag else _SIZE_TIME.pack(node.size, int(node.mtime * 1e9)))


_ERRNO = {"notfound": errno.ENOENT, "readonly": errno.EROFS, "forbidden": errno.EACCES, "busy": errno.EBUSY}
F = TypeVar("F", bound=Callable[..., Any])


def _guard(handler: F) -> F:
    """Unexpected errors become EIO and one log line; the mount lives on."""
    @functools.wraps(handler)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except (FuseError, Offload):
            raise
        except TreeError as exc:
            raise FuseError(_ERRNO.get(exc.kind, errno.EIO)) from None
        except OSError as exc:
            log.error("%s: %s", handler.__name__, exc)
            raise FuseError(exc.errno or errno.EIO) from None
        except PbeError as exc:  # the bucket failed us: one line, not a traceback
            log.error("%s: %s", handler.__name__, exc)
            raise FuseError(errno.EIO) from None
        except Exception:
            log.exception("%s failed", handler.__name__)
            raise FuseError(errno.EIO) from None
    return wrapper  # type: ignore[return-value]


class Operations:
    """What the kernel asks, answered from the tree (see fusekernel.Operations).

    Answers are computed on the request thread when the tree has what they
    need at hand (``Tree.at_hand``); ``_io`` sends a request that may wait
    on the disk or a bucket to a worker thread instead."""

    def __init__(self, tree: Tree, *, allow_delete: bool, xattrs: bool = False) -> None:
        super().__init__()
        self.tree = tree
        self.allow_delete = allow_delete
        self.xattrs = xattrs
        # view and group folders, status.json, index.txt (and, as a fallback, anything
        # the artwork numbering cannot hold): bounded by the archive, not by lookups
        self._path_of: dict[int, tuple[str, ...]] = {ROOT: ()}
        self._inode_of: dict[tuple[str, ...], int] = {(): ROOT}
        self._next_inode = ROOT + 1
        tree.keep_previous = True  # invalidate() asks what the last generation showed
        self._readers: OrderedDict[int, _Kept] = OrderedDict()
        self._listings: OrderedDict[tuple[int, ...], _Listing] = OrderedDict()
        self._listings_bytes = 0
        self._listings_generation = tree.generation
        self._numbering = threading.Lock()  # listings are built in worker threads too
        self._keeping = threading.Lock()
        self._hidden: dict[tuple[str, ...], float] = {}
        self.session: fusekernel.Session | None = None
        self._told = tree.generation

    def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """fn's answer, which means I/O: on the request thread, hand the
        request to a worker (it runs again from the start there)."""
        if self.session is not None and self.session.on_loop:
            raise Offload
        return fn(*args)

    # -- inode numbers ------------------------------------------------------------
    def _numbered(self, path: tuple[str, ...]) -> int:
        inode = self._inode_of.get(path)
        if inode is None:
            with self._numbering:
                inode = self._inode_of.get(path)
                if inode is None:
                    inode = self._inode_of[path] = self._next_inode
                    self._path_of[inode] = path
                    self._next_inode += 1
        return inode

    def _child(self, parent_inode: int, parent: tuple[str, ...], name: str, node: Node,
               position: int | None = None) -> int:
        """The inode of parent/name; position: its place in list(parent), when known."""
        name = names.lookup_key(name)
        if parent_inode & _ART:
            sub, entry = (parent_inode >> _SUB) & 7, parent_inode & _ENTRY_MAX
            if not sub and not entry and node.is_dir and name in QUALITIES:
                return parent_inode | (QUALITIES.index(name) + 1) << _SUB
            if not entry and not node.is_dir:
                if position is None:
                    position = self.tree.position(parent, name)
                if position is not None and position < _ENTRY_MAX:
                    return parent_inode | (position + 1)
        elif node.is_artwork_root:
            path = parent + (name,)
            inode = _artwork_inode(path[0], self.tree.artwork_number(path, node), node.artwork)
            if inode:
                return inode
        return self._numbered(parent + (name,))

    def _encode(self, path: tuple[str, ...]) -> int:
        """The inode of a path (for ``..``): its parents' numbers first."""
        if not path:
            return ROOT
        node = self.tree.get(path)
        if node is None:
            raise FuseError(errno.ENOENT)
        return self._child(self._encode(path[:-1]), path[:-1], path[-1], node)

    def _decode(self, inode: int) -> tuple[str, ...]:
        if not inode & _ART:
            try:
                return self._path_of[inode]
            except KeyError:
                raise FuseError(errno.ESTALE) from None
        view = VIEWS[(inode >> _VIEW) & 15] if (inode >> _VIEW) & 15 < len(VIEWS) else ""
        path = self.tree.artwork_path((inode >> _ID) & _ID_MAX, view, (inode >> _NUMBER) & _NUMBER_MAX)
        if path is None:
            raise FuseError(errno.ENOENT)  # the work went, or left this view
        sub, entry = (inode >> _SUB) & 7, inode & _ENTRY_MAX
        if sub > len(QUALITIES):
            raise FuseError(errno.ENOENT)
        if sub:
            path += (QUALITIES[sub - 1],)
        if entry:
            entries = self.tree.list(path) or []
            if entry > len(entries):
                raise FuseError(errno.ENOENT)
            path += (entries[entry - 1][0],)
        return path

    def _path(self, inode: int) -> tuple[str, ...]:
        """The path an inode stands for; off the loop when that means I/O
        (an artwork folder's listing, a view's tags or events)."""
        if not inode & _ART:
            return self._decode(inode)
        view = (inode >> _VIEW) & 15
        if view < len(VIEWS) and self.tree.numbers_loaded(VIEWS[view]):
            if not inode & _INSIDE:
                return self._decode(inode)
            path = self._decode(inode & ~_INSIDE)
            sub = (inode >> _SUB) & 7
            if self.tree.at_hand(path + (QUALITIES[sub - 1],) if sub else path):
                return self._decode(inode)
        return self._io(self._decode, inode)

    def _is_hidden(self, path: tuple[str, ...]) -> bool:
        until = self._hidden.get(path)
        return until is not None and until >= time.monotonic()

    def show_unhidden(self) -> None:
        """Entries whose minute is up show again: the kernel kept their
        folders' listings without them, so those are invalidated."""
        now = time.monotonic()
        for path, until in list(self._hidden.items()):
            if until < now and self._hidden.pop(path, None) is not None and self.session is not None:
                try:
                    self.session.invalidate_inode(self._encode(path[:-1]))
                except FuseError:
                    pass  # the folder went meanwhile

    def _node(self, path: tuple[str, ...]) -> Node | None:
        if self._is_hidden(path):
            return None
        if self.tree.at_hand(path[:-1]):
            node = self.tree.get(path)
        else:
            node = self._io(self.tree.get, path)
        self.tell_kernel_if_changed()
        return node

    def tell_kernel_if_changed(self) -> None:
        """Whoever notices a new generation first (a request, or the poll
        loop) has the kernel's caches invalidated, after this request."""
        generation = self.tree.generation
        if generation != self._told and self.session is not None:
            self._told = generation
            log.debug("archive changed (generation %d): refreshing the mount", generation)
            self.session.submit(self.invalidate)

    def _fields(self, path: tuple[str, ...], node: Node) -> tuple[int, int, int, int, int]:
        """mode (with _SHORT_BIT when the entry may change within a generation),
        st_nlink, st_size, st_mtime_ns and the kernel's generation of an entry.

        A file's number is a place in its folder's listing, so after a sync
        it may name other bytes: the generation (from the bytes' ETag) then
        differs and the kernel starts a new inode, instead of mixing the two
        files' cached pages (see ``_reader`` for a file open across that)."""
        ns = int(node.mtime * 1e9)
        if node.is_dir:
            mode = stat.S_IFDIR | 0o555 | (0o200 if self.allow_delete else 0)
            return mode, self.tree.links(path, node), node.size, ns, 0
        mode = stat.S_IFREG | 0o444 | (_SHORT_BIT if not node.immutable and node.artwork else 0)
        if node.pending:  # a generated file not made yet: listed by name alone (see DirBuffer.add)
            return mode, 1, -1, ns, 0
        return mode, 1, node.size, ns, _identity(node)

    def _attrs(self, inode: int, path: tuple[str, ...], node: Node) -> fusekernel.Entry:
        if node.pending:  # making it may read the cache or render: not on the request thread
            self._io(lambda: node.size)
        mode, nlink, size, ns, generation = self._fields(path, node)
        return inode, mode & ~_SHORT_BIT, nlink, size, ns, _SHORT if mode & _SHORT_BIT else _LONG, generation

    # -- lookups ------------------------------------------------------------------
    @_guard
    def lookup(self, parent_inode: int, name: bytes) -> fusekernel.Entry:
        parent = self._path(parent_inode)
        text = os.fsdecode(name)
        if text == ".":
            path = parent
        elif text == "..":
            path = parent[:-1]
        else:
            path = parent + (text,)
        node = self._node(path) if path else self.tree.get(())
        if node is None:
            raise FuseError(errno.ENOENT)
        if text == ".":
            inode = parent_inode
        elif text == "..":
            inode = self._io(self._encode, path)
        else:  # what numbering needs (the folder's listing, its tags) was loaded to find node
            inode = self._child(parent_inode, parent, text, node)
        entry = self._attrs(inode, path, node)
        if self._readers:
            self.told(inode, entry[-1])
        return entry

    @_guard
    def getattr(self, inode: int) -> fusekernel.Entry:
        path = self._path(inode)
        node = self._node(path) if path else self.tree.get(())
        if node is None:
            raise FuseError(errno.ENOENT)
        return self._attrs(inode, path, node)

    # -- directories ----------------------------------------------------------------
    def _listing_key(self, inode: int) -> tuple[int, ...]:
        """Where a folder's listing is kept: inside an artwork folder, by work
        and quality folder (the same in every view), else by number."""
        generation = self.tree.generation
        if inode & _ART and not inode & _ENTRY_MAX:
            return generation, (inode >> _ID) & _ID_MAX, (inode >> _SUB) & 7
        return generation, -1, inode

    def _build_listing(self, inode: int, path: tuple[str, ...]) -> _Listing:
        """A folder's listing as readdir sends it (in a worker thread when
        the tree must read a record or the index for it)."""
        entries = self.tree.list(path)
        if entries is None:
            raise FuseError(errno.ENOTDIR)
        names: list[bytes] = []
        fields = array("q")
        base = inode if inode & _ART else 0
        for i, (name, node) in enumerate(entries):
            child = self._child(inode, path, name, node, i)
            low = child & ~base if base and child & base == base else -child
            names.append(os.fsencode(name))
            fields.append(low)
            fields.extend(self._fields(path + (name,), node))
        return _Listing(names, fields)

    def _keep_listing(self, key: tuple[int, ...], listing: _Listing) -> None:
        """Bounded by bytes, least recently listed out first; a new
        generation empties it."""
        with self._keeping:
            if key[0] != self._listings_generation:
                return
            if any(n < 0 for n in listing.fields[::_FIELDS]) and key[1] >= 0:
                return  # numbered from a table, by path: not the same in every view
            self._listings[key] = listing
            self._listings_bytes += listing.size
            while self._listings_bytes > _LISTING_BYTES and self._listings:
                self._listings_bytes -= self._listings.popitem(last=False)[1].size

    def _listing(self, inode: int) -> _Listing:
        """A folder's listing: kept, or built; on a worker when building it
        may wait on the disk (a record that is not in the page cache, the
        index) or a bucket."""
        with self._keeping:
            if self.tree.generation != self._listings_generation:
                self._listings.clear()
                self._listings_bytes = 0
                self._listings_generation = self.tree.generation
            key = self._listing_key(inode)
            listing = self._listings.get(key)
            if listing is not None:
                self._listings.move_to_end(key)
                return listing
        path = self._path(inode)
        if self.tree.at_hand(path):
            listing = self._build_listing(inode, path)
        else:
            listing = self._io(self._build_listing, inode, path)
        self._keep_listing(key, listing)
        return listing

    @_guard
    def readdir(self, inode: int, offset: int, out: fusekernel.DirBuffer) -> None:
        """The kernel keeps what this sends (no OPENDIR: see fusekernel) until
        a new generation invalidates the folder; it asks again from offset 0
        then, so offsets always count in one listing."""
        self.tell_kernel_if_changed()
        listing = self._listing(inode)
        names, fields = listing.names, listing.fields
        base = inode if inode & _ART else 0
        hidden = self._path(inode) if self._hidden else None
        add, readers = out.add, self._readers if out.plus else None
        for i in range(offset, len(names)):
            if hidden is not None and self._is_hidden(hidden + (os.fsdecode(names[i]),)):
                continue
            j = i * _FIELDS
            low, mode = fields[j], fields[j + 1]
            number = base | low if low >= 0 else -low
            if not add(names[i], i + 1, number, mode & ~_SHORT_BIT, fields[j + 2],
                       fields[j + 3], fields[j + 4], _SHORT if mode & _SHORT_BIT else _LONG, fields[j + 5]):
                break
            if readers and number in readers and fields[j + 3] >= 0:  # READDIRPLUS: the kernel now has its generation
                self.told(number, fields[j + 5])

    # -- files ----------------------------------------------------------------------
    @_guard
    def read(self, inode: int, off: int, size: int) -> bytes:
        """Bytes of the file numbered inode. The kernel keeps what this
        sends (its page cache) until a new generation invalidates it, so a
        file is read from here once, whoever opens it how often."""
        kept = self._reader(inode)
        try:
            reader = kept.reader
            if reader.blocking and not reader.ready(off, size):  # a bucket's miss waits on the network; the loop must not
                return self._io(reader.read, off, size)
            return reader.read(off, size)
        finally:
            self._let_go(kept)

    def _reader(self, inode: int) -> _Kept:
        """The kept reader of a number (one more user of it), or a new one.

        After a sync a number may name other bytes (a file's number is its
        place in the listing). The kernel learns that from a LOOKUP or a
        listing (see ``told``), starts a new inode and fails the old one's
        reads; until then a READ of the number comes from a file opened
        before, so a kept reader goes on serving the bytes it was opened on,
        whatever the generation."""
        with self._keeping:
            kept = self._readers.get(inode)
            if kept is not None:
                self._readers.move_to_end(inode)
                kept.users += 1
                return kept
        # not _node(): a file unlinked (hidden) while open is still read
        path = self._path(inode)
        at_hand = self.tree.at_hand(path[:-1])
        node = self.tree.get(path) if at_hand else self._io(self.tree.get, path)
        if node is None:
            raise FuseError(errno.ENOENT)
        if node.is_dir:
            raise FuseError(errno.EISDIR)
        if at_hand and not node.pending:
            reader = self.tree.reader(path, node)  # contents are ready: no thread hop
        else:
            reader = self._io(self.tree.reader, path, node)
        kept = _Kept(reader, _identity(node))
        with self._keeping:
            old = self._readers.pop(inode, None)
            if old is not None:
                self._drop(old)  # made meanwhile by another READ: one is enough
            self._readers[inode] = kept
            kept.users += 1
            while len(self._readers) > _READERS:
                self._drop(self._readers.popitem(last=False)[1])
            if kept.reader.blocking:
                bucket = [n for n, k in self._readers.items() if k.reader.blocking]
                for number in bucket[:max(0, len(bucket) - BUCKET_READERS)]:
                    self._drop(self._readers.pop(number))
        return kept

    def told(self, inode: int, identity: int) -> None:
        """The kernel was given a number's attributes: bytes other than the
        kept reader's belong to a new inode of the kernel's from now on."""
        kept = self._readers.get(inode)
        if kept is not None and kept.identity != identity:
            with self._keeping:
                if self._readers.get(inode) is kept:
                    del self._readers[inode]
                    self._drop(kept)

    def _drop(self, kept: _Kept) -> None:
        """Let go of a kept reader (holding ``_keeping``): closed now, or by
        its last READ in flight."""
        kept.gone = True
        if kept.users == 0:
            self._close(kept.reader)

    def _let_go(self, kept: _Kept) -> None:
        with self._keeping:
            kept.users -= 1
            if not (kept.gone and kept.users == 0):
                return
        self._close(kept.reader)

    def _close(self, reader: Reader) -> None:
        if reader.blocking and self.session is not None:  # may wait for a block in flight: not on the request thread
            self.session.submit(reader.close)
        else:
            reader.close()

    # -- extended attributes -----------------------------------------------------------
    @_guard
    def getxattr(self, inode: int, name: bytes) -> bytes:
        if not self.xattrs:
            # ENOSYS once and the kernel stops asking: without it, `ls -l`
            # costs three round trips per entry (SELinux label, two ACLs).
            raise FuseError(errno.ENOSYS)
        if not name.startswith(b"user."):  # ls -l asks every entry for ACLs and SELinux labels
            raise FuseError(errno.ENODATA)
        value = self.tree.xattrs(self._path(inode)).get(os.fsdecode(name))
        if value is None:
            raise FuseError(errno.ENODATA)
        return value

    @_guard
    def listxattr(self, inode: int) -> list[bytes]:
        if not self.xattrs:
            raise FuseError(errno.ENOSYS)
        return [n.encode() for n in self.tree.xattrs(self._path(inode))]

    @_guard
    def statfs(self) -> os.statvfs_result:
        return os.statvfs(self.tree.archive.root)

    # -- deletion ------------------------------------------------------------------------
    def _deletable(self, parent_inode: int, name: bytes) -> tuple[tuple[str, ...], Node]:
        path = self._path(parent_inode) + (os.fsdecode(name),)
        node = self._node(path)
        if node is None:
            raise FuseError(errno.ENOENT)
        if not self.allow_delete or not node.artwork:
            raise FuseError(errno.EROFS)
        if self.tree.is_gone(node.artwork):
            log.warning("refused to delete %s: the work is gone from pixiv, this is its only copy", "/".join(path))
            raise FuseError(errno.EACCES)
        return path, node

    @_guard
    def unlink(self, parent_inode: int, name: bytes) -> None:
        path, node = self._deletable(parent_inode, name)
        if node.is_dir:
            raise FuseError(errno.EISDIR)
        self._hidden[path] = time.monotonic() + _HIDE_SECONDS

    @_guard
    def rmdir(self, parent_inode: int, name: bytes) -> None:
        path, node = self._deletable(parent_inode, name)
        if not node.is_artwork_root:
            self._hidden[path] = time.monotonic() + _HIDE_SECONDS
            return
        self._io(self.tree.delete, path)
        self._hidden = {p: t for p, t in self._hidden.items() if p[: len(path)] != path}
        # On another worker: the kernel holds the parent's lock until this rmdir is answered.
        self.tell_kernel_if_changed()

    # -- cache invalidation ------------------------------------------------------------
    def invalidate(self, everything: bool = False) -> None:
        """Tell the kernel what a sync or a deletion changed.

        The artwork folders of works that changed or went are dropped from
        the kernel's dentry cache under their old names (with all below
        them), group folders left empty too, and every view and group
        folder's attributes are re-read. A view whose old contents are not
        known (or ``everything``: the policy changed) is dropped whole.
        """
        self.tree.refresh(interval=0)
        stale, unknown = self.tree.stale_since()
        if everything:
            unknown = set(VIEWS)
        entries = [(ROOT, os.fsencode(view)) for view in sorted(unknown)]
        # View and group folders, and what a changed work's folders held: the same
        # number may now be a file with other bytes (a CBZ's metadata) or another name.
        inodes = list(self._path_of)
        for path, view, number, aid, files in stale:
            parent = self._inode_of.get(path[:-1])
            if parent is not None and path[0] not in unknown:  # else the kernel never saw it
                entries.append((parent, os.fsencode(path[-1])))
            folder = _artwork_inode(view, number, aid) if view else 0
            if folder:
                inodes += [folder | sub << _SUB | entry for sub in range(len(QUALITIES) + 1)
                           for entry in range(min(_ENTRY_MAX, files + _GENERATED_ENTRIES) + 1)]

        assert self.session is not None
        for parent, name in entries:
            self.session.invalidate_entry(parent, name)
        for inode in inodes:  # its attributes, its pages and (a folder) its kept listing
            self.session.invalidate_inode(inode)


def _watch_generation(ops: Operations, interval: float, stopped: threading.Event) -> None:
    """Notice a sync's commits even when nobody is looking at the mount."""
    while not stopped.wait(interval):
        try:
            ops.tree.refresh(force=False, interval=0)
            ops.tell_kernel_if_changed()
            ops.show_unhidden()
        except Exception:
            log.exception("watching the index")


def _load_soon(tree: Tree, stopped: threading.Event) -> None:
    """Load the works once the mount has answered its first requests: the
    load holds the GIL for a while (seconds at 200,000 works), and the
    kernel's INIT and the first `stat` should not wait for it. Then import
    the renderers whose versions every generated file's ETag names
    (img2pdf brings pikepdf: 60 ms the first `stat` of a zip would wait)."""
    if not stopped.wait(_LOAD_AFTER):
        tree.load()
        renderers()


def _on_signals(session: fusekernel.Session, ops: Operations, on_stop: Callable[[int], None] | None,
                on_hup: Callable[[], None] | None) -> Callable[[], None]:
    """SIGINT/SIGTERM unmount, SIGHUP reloads (when on_hup is given);
    returns what puts the previous handlers back.

    Python runs a signal's handler on the main thread, between two
    bytecodes, and the main thread here is the request thread, blocked
    reading /dev/fuse: a signal that lands on another thread, or on this
    one just before its read begins, would wait for the next request, and
    an idle mount would ignore SIGTERM. So the handlers do nothing, and a
    thread of ours acts on the signal numbers Python's own handler writes
    to a pipe (``set_wakeup_fd``), whichever thread caught them."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    wanted = (signal.SIGINT, signal.SIGTERM, *((signal.SIGHUP,) if on_hup else ()))
    readable, writable = os.pipe()
    os.set_blocking(writable, False)  # a signal never waits for the pipe
    previous_fd = signal.set_wakeup_fd(writable, warn_on_full_buffer=False)
    previous = {signum: signal.signal(signum, lambda *_: None) for signum in wanted}

    def reload() -> None:
        assert on_hup is not None
        on_hup()
        ops.invalidate(everything=True)  # the NSFW policy may have changed every listing

    def act() -> None:
        with open(readable, "rb", buffering=0) as pipe:
            while numbers := pipe.read(64):  # empty: the handlers are gone
                for signum in numbers:
                    if signum in (signal.SIGINT, signal.SIGTERM):
                        log.info("%s: unmounting", signal.Signals(signum).name)
                        try:
                            if on_stop:
                                on_stop(signum)
                        finally:
                            session.stop()
                    elif signum == signal.SIGHUP and on_hup:
                        session.submit(reload)

    threading.Thread(target=act, name="fuse-signals", daemon=True).start()

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        os.close(writable)
    return restore


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

    Every FUSE request costs a round trip through the kernel and this process;
    a sequential read of a 5 MB original in 1 MiB requests instead of
    128 KiB ones is about 1.5× faster (measured here). Only root may write
    the setting; without it the mount works as before.
    """
    try:
        # Called from a thread of its own: the stat is answered
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
    options = ["fsname=pbe-fs", "subtype=pbe-fs", "default_permissions", "ro" if not allow_delete else "rw",
               "nosuid", "nodev"]
    session = fusekernel.Session(ops, mountpoint, options)
    try:
        session.mount()
    except OSError as exc:
        raise PbeError(f"cannot mount {mountpoint}: {exc.strerror}") from None
    ops.session = session
    if on_ready:
        on_ready()
    stopped = threading.Event()
    restore = _on_signals(session, ops, on_stop, on_hup)
    for job in (lambda: _watch_generation(ops, poll_seconds, stopped), lambda: _load_soon(tree, stopped),
                lambda: _widen_readahead(mountpoint)):
        threading.Thread(target=job, name="fuse-watch", daemon=True).start()
    try:
        session.serve()
    finally:
        stopped.set()
        restore()
        session.unmount()
