"""The virtual tree: the one place that knows folder names, views and
generated files. FUSE and WebDAV are thin adapters over it.

A path is a tuple of names. ``get`` answers what a path is, ``list`` what a
folder holds, ``reader`` opens a file, ``xattrs`` and ``delete`` do the rest.
Every folder's contents are built once per index generation and kept, so a
listing of 20,000 works or a lookup inside it costs a dict access; a sync
that commits bumps the generation and the next call sees the new archive.

Views::

    status.json
    by-ingress/000001 93012345 Title/
    by-date/2024/05/2024-05-01 93012345 Title/
    by-artist/Artist Name [11223]/93012345 Title/
    by-tag/風景/93012345 Title/
    by-id/93012345/
    nsfw/000042 93012399 Title/
    gone/93012345 Title/
    private/000007 93012350 Title/
    ai/000012 93012360 Title/
    changes/2026-11/2026-11-25 changed 93012345 Title/   and changes/2026-11/index.txt
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import logging
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from . import maintenance, names
from .archive import RAW, RECORD, Archive, artwork_key
from .artwork import QUALITIES, ArtworkFolder, Node, top_quality
from .config import AI_POLICIES, NSFW_POLICIES, Config
from .errors import PbeError, RecordError
from .localrecords import LocalRecords
from .recovery import open_index, record_from_index
from .render import meta
from .render.cache import Cache
from .render.segments import BytesContent, Reader
from .status import status

log = logging.getLogger("pbe_fs.tree")

VIEWS = ("by-ingress", "by-date", "by-artist", "by-tag", "by-id", "nsfw", "gone", "private", "ai", "changes")
LISTING_VIEWS = ("by-ingress", "by-date", "by-artist", "by-tag", "gone", "private", "changes")
# how many names below the view an artwork folder sits
_DEPTH = {"by-ingress": 1, "by-date": 3, "by-artist": 2, "by-tag": 2, "by-id": 1, "nsfw": 1, "gone": 1,
          "private": 1, "ai": 1, "changes": 2}
# the events changes/ shows, as pbe.json's history names them
CHANGE_EVENTS = ("bookmarked", "gone", "restored", "changed", "unbookmarked")
# names clients probe for that never exist here: answered at once, never logged
PROBE_NOISE = frozenset({".DS_Store", ".Spotlight-V100", "Thumbs.db", "desktop.ini", ".hidden", ".directory",
                         ".Trashes", ".fseventsd", ".metadata_never_index", "autorun.inf", ".localized"})
_POLICY_RANK = {"disabled": 0, "required": 1, "hidden": 2, "enabled": 3}


class TreeError(PbeError):
    """A refusal an adapter turns into an errno or an HTTP status."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind  # notfound | readonly | forbidden | busy


def effective_ai(instance: str, requested: str | None) -> str:
    """The AI policy a mount or server may use: only ever stricter."""
    if requested is None or requested == instance:
        return instance
    if requested not in AI_POLICIES:
        raise PbeError(f"unknown AI policy {requested!r}: use one of {', '.join(AI_POLICIES)}")
    if requested == "hidden":
        return requested
    raise PbeError(f"--ai {requested} is looser than the instance policy {instance!r} (display.ai)")


def effective_policy(instance: str, requested: str | None) -> str:
    """The NSFW policy a mount or server may use.

    Stricter than the instance is always allowed; looser only when the
    instance says ``hidden`` or ``required`` (the seed let a visitor lift
    those, never ``enabled`` or ``disabled``).
    """
    if requested is None or requested == instance:
        return instance
    if requested not in NSFW_POLICIES:
        raise PbeError(f"unknown NSFW policy {requested!r}: use one of {', '.join(NSFW_POLICIES)}")
    if _POLICY_RANK[requested] < _POLICY_RANK[instance] or instance in ("hidden", "required"):
        return requested
    raise PbeError(f"--nsfw {requested} is looser than the instance policy {instance!r} (display.nsfw), "
                   "which only 'hidden' or 'required' allow")


def _etag(data: bytes) -> str:
    """A generated text file's ETag: its bytes' hash (no renderer versions to
    fold in, and asking for them imports img2pdf and Pillow's plugins)."""
    return hashlib.sha256(data).hexdigest()[:32]


def is_noise(name: str) -> bool:
    return name in PROBE_NOISE or name.startswith("._")


@dataclass(slots=True)
class Work:
    """One archived artwork, as much of it as the views need."""

    id: int
    seq: int
    title: str
    artist_id: int
    artist_name: str
    create_date: str
    mtime: float
    nsfw: bool
    gone: bool
    subdirs: int = 0  # quality folders in its artwork folder
    private: bool = False
    ai: bool = False  # illust_ai_type 2
    files: int = 0  # archived files: a new or re-uploaded page changes the folder's listing
    node: Node | None = field(default=None, compare=False, repr=False)  # its folder, one object for every view


class _Folder(dict):
    """A folder's entries by name, with their names sorted once (not on
    every ``list``). Only the names: a list of (name, node) pairs kept as
    well took 80 bytes an entry, 16 MB for a 200,000-work view."""

    __slots__ = ("order",)

    def __init__(self, entries: dict[str, Node]) -> None:
        super().__init__(entries)
        self.order: list[str] | None = None

    def sorted_names(self) -> list[str]:
        if self.order is None:
            self.order = sorted(self)
        return self.order

    def position(self, name: str) -> int | None:
        order = self.sorted_names()
        i = bisect.bisect_left(order, name)
        return i if i < len(order) and order[i] == name else None


class _Sorted(Sequence[tuple[str, Node]]):
    """A folder's (name, node) pairs sorted by name, made as they are read."""

    __slots__ = ("_folder", "_names")

    def __init__(self, folder: _Folder) -> None:
        self._folder, self._names = folder, folder.sorted_names()

    def __len__(self) -> int:
        return len(self._names)

    def __getitem__(self, i):  # type: ignore[override]
        folder = self._folder
        if isinstance(i, slice):
            return [(name, folder[name]) for name in self._names[i]]
        name = self._names[i]
        return name, folder[name]

    def __iter__(self) -> Iterator[tuple[str, Node]]:
        folder = self._folder
        return ((name, folder[name]) for name in self._names)


class _Folders:
    """The listings kept between requests, least recently used out first.

    Bounded by entries as well as by folders: at 200,000 works one month of
    changes/ holds thousands of entries and by-ingress 200,000, so a bound
    by count alone let the listings of every view's top levels take
    hundreds of MB. The folder just kept stays, however large, and so does
    its parent: a walk looks each name up in the parent again (evicting a
    200,000-work view for each of its artwork folders would rebuild it
    200,000 times)."""

    def __init__(self, max_folders: int, max_entries: int) -> None:
        self._kept: OrderedDict[tuple[str | int, ...], _Folder] = OrderedDict()
        self._entries = 0
        self.max_folders, self.max_entries = max_folders, max_entries

    def __contains__(self, key: tuple[str | int, ...]) -> bool:
        return key in self._kept

    def get(self, key: tuple[str | int, ...]) -> _Folder | None:
        folder = self._kept.get(key)
        if folder is not None:
            self._kept.move_to_end(key)
        return folder

    def put(self, key: tuple[str | int, ...], folder: _Folder, parent: tuple[str | int, ...] = ()) -> None:
        old = self._kept.pop(key, None)
        self._entries += len(folder) - (len(old) if old is not None else 0)
        kept = 1
        if parent in self._kept:
            self._kept.move_to_end(parent)
            kept = 2
        self._kept[key] = folder
        while len(self._kept) > kept and (len(self._kept) > self.max_folders or self._entries > self.max_entries):
            self._entries -= len(self._kept.popitem(last=False)[1])

    def clear(self) -> None:
        self._kept.clear()
        self._entries = 0


class _Tags:
    """Every work's tags, in order: one flat array of tag numbers and one
    string per tag, rather than a list of strings per work. At 200,000
    works (two million tags) the lists took 44 MB."""

    __slots__ = ("_names", "_works", "_starts", "_tags")

    def __init__(self, rows: Iterable[tuple[int, str]]) -> None:
        """rows: (artwork id, tag), by artwork id, each work's in order."""
        numbers: dict[str, int] = {}
        self._names: list[str] = []
        self._works, self._starts, self._tags = array("q"), array("q"), array("l")
        for aid, name in rows:
            if not self._works or self._works[-1] != aid:
                self._works.append(aid)
                self._starts.append(len(self._tags))
            number = numbers.get(name)
            if number is None:
                number = numbers[name] = len(self._names)
                self._names.append(name)
            self._tags.append(number)
        self._starts.append(len(self._tags))

    def get(self, aid: int, default: Sequence[str] | None = None) -> Sequence[str] | None:
        i = bisect.bisect_left(self._works, aid)
        if i == len(self._works) or self._works[i] != aid:
            return default
        names = self._names
        return tuple(names[t] for t in self._tags[self._starts[i]:self._starts[i + 1]])


# a tag's folder name, worked out once per tag rather than once per work and listing
_segment = functools.lru_cache(maxsize=1 << 17)(names.segment)
_ONLY = {"nsfw": lambda w: w.nsfw, "gone": lambda w: w.gone, "private": lambda w: w.private, "ai": lambda w: w.ai}


def _ym(work: Work) -> tuple[str, str]:
    d = work.create_date
    return (d[:4], d[5:7]) if len(d) >= 10 else ("0000", "00")


def _name(view: str, work: Work) -> str:
    """An artwork folder's name in a view (changes/ names its folders by event)."""
    if view in ("by-ingress", "nsfw", "private", "ai"):
        return names.join(f"{work.seq:06d}", str(work.id), work.title)
    if view == "by-id":
        return str(work.id)
    if view == "by-date":
        return names.join(work.create_date[:10], str(work.id), work.title)
    return names.join(str(work.id), work.title)


def _artist(work: Work) -> str:
    return names.labelled(work.artist_name, f"[{work.artist_id}]")


def _event_name(at: str, event: str, work: Work) -> str:
    return names.join(at[:10], event, str(work.id), work.title)


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, TypeError):
        return 0.0


class Tree:
    """The archive as folders, for one NSFW policy."""

    def __init__(self, config: Config, policy: str | None = None, *, ai: str | None = None,
                 cache_dirs: int = 4096, cache_entries: int = 100_000, defer: bool = False) -> None:
        """``defer``: load the works on first need (see ``load``), so a
        mount answers at once: its root and status.json need none, and
        loading 200,000 works takes seconds (and the GIL)."""
        self.config = config
        self.policy = effective_policy(config.settings.display.nsfw, policy)
        self.ai_policy = effective_ai(config.settings.display.ai, ai)
        self.archive = Archive.open(config)
        self.archive.store.check()
        self.index = open_index(self.archive)
        self.cache = Cache(config.cache_path, int(config.settings.cache.max_gb * 1e9))
        self.top_quality = config.settings.display.artwork.image
        self._lock = threading.RLock()
        self._generation = -1
        self._version = 0
        self._checked = 0.0
        self._stamp = time.time()
        self._loaded: dict[int, Work] = {}
        self._ready = threading.Event()
        self._load_lock = threading.Lock()
        self._tags: _Tags | None = None
        self._months: list[str] | None = None  # changes/: months with events, newest first
        self._events: dict[int, tuple[tuple[str, str], ...]] | None = None
        self._groups: dict[str, dict[str, list[Work]]] = {}  # by-artist, by-tag: built once per generation
        self._dates: dict[str, dict[str, list[Work]]] | None = None  # by-date: year, month, works
        # what the previous generation showed, kept (when asked) until stale_since() is called
        self.keep_previous = False
        self._previous: tuple[dict[int, Work], _Tags | None,
                              dict[int, tuple[tuple[str, str], ...]] | None] | None = None
        self._links: dict[tuple[str, ...], int] = {}
        # view folders by path, artwork folders by (id, *rest): one listing serves every view
        self._dirs = _Folders(cache_dirs, cache_entries)
        self.records = LocalRecords(config.cache_path / "records")
        self.follower = None  # filesystem_options.follow: another machine writes, we keep up
        if getattr(self.archive.store, "follow", False):
            from .follow import Follower
            self.follower = Follower(self.archive, on_record=self._keep_record).start()
        if not defer:
            self.load()

    def load(self) -> None:
        """Load the works (once; the first caller loads, others wait): a
        deferred tree does it on first need, or when its mount is idle."""
        if self._ready.is_set():
            return
        with self._load_lock:
            if not self._ready.is_set():
                self.refresh(force=True)
                self._ready.set()

    @property
    def _works(self) -> dict[int, Work]:
        """Every archived work by id (loaded on first need)."""
        if not self._ready.is_set():
            self.load()
        return self._loaded

    # -- generations -----------------------------------------------------------
    # When a generation of an index (inode, generation) was first loaded: the date of the
    # view folders and status.json. The processes of one server agree on it (webdav.Shared).
    stamp_of: Callable[[tuple[int, int]], float] = staticmethod(lambda key: time.time())

    def refresh(self, force: bool = False, interval: float = 0.5) -> bool:
        """Notice a sync's commits; at most one index query per ``interval``
        (none before the first load: it will see them)."""
        if not self._ready.is_set() and not force:
            return False
        now = time.monotonic()
        if not force and now - self._checked < interval:
            return False
        self._checked = now
        replaced = self.index.follow()  # a rebuild put a new file in place
        generation = self.index.generation()
        if generation == self._generation and not force and not replaced:
            return False
        with self._lock:
            if self.keep_previous and self._previous is None and self._loaded:
                self._previous = (self._loaded, self._tags, self._events)
            self._generation = generation
            self._version += 1
            self._stamp = self.stamp_of((self.index.inode, generation))
            self._loaded = self._load_works()
            self._tags = None
            self._months = None
            self._events = None
            self._groups = {}
            self._dates = None
            self._links = {}
            self._dirs.clear()
        return True

    def refresh_due(self, interval: float = 0.5) -> bool:
        """Whether the next look at the tree asks the index about a sync's
        commits (and may reload the works)."""
        return self._ready.is_set() and time.monotonic() - self._checked >= interval

    @property
    def index_generation(self) -> int:
        """The index's change counter as this tree last loaded it."""
        return self._generation

    @property
    def generation(self) -> int:
        """Changes whenever the tree reloads (a sync's commit, a rebuilt index)."""
        return self._version

    def _load_works(self) -> dict[int, Work]:
        db = self.index.db
        roles, counts = {}, {}
        for aid, found, count in db.execute(
                "SELECT artwork_id, group_concat(DISTINCT role), count(*) FROM files GROUP BY artwork_id"):
            roles[aid], counts[aid] = set(found.split(",")) & set(QUALITIES), count
        rows = db.execute(
            "SELECT w.id, w.seq, w.title, w.artist_id, a.name, w.create_date, w.x_restrict, w.state, w.restrict,"
            " w.ai_type FROM artworks w JOIN artists a ON a.id = w.artist_id ORDER BY w.seq")
        works = {}
        for r in rows:
            present = roles.get(r[0], set())
            subdirs = len(present - {self._top_of(present)})
            works[r[0]] = Work(r[0], r[1], r[2], r[3], r[4], r[5], _epoch(r[5]), r[6] > 0, r[7] == "gone", subdirs,
                               r[8] == "private", r[9] == 2, counts.get(r[0], 0))
        return works

    def _top_of(self, roles: set[str]) -> str:
        return top_quality(self.top_quality, roles)

    # -- policy ------------------------------------------------------------------
    def _shown(self, work: Work, view: str) -> bool:
        if work.ai and self.ai_policy == "hidden" and view not in ("by-id", "ai"):
            return False
        if not work.nsfw:
            return True
        if view == "nsfw":
            return self.policy != "disabled"
        if view == "by-id":
            return self.policy in ("enabled", "hidden")
        return self.policy == "enabled"

    def views(self) -> list[str]:
        return [v for v in VIEWS if v != "nsfw" or self.policy != "disabled"]

    # -- public API ----------------------------------------------------------------
    def get(self, path: tuple[str, ...]) -> Node | None:
        self.refresh()
        if not path:
            return Node(True, self._stamp, immutable=False)
        if is_noise(path[-1]):
            return None
        parent = self._dir(path[:-1])
        return None if parent is None else parent.get(names.lookup_key(path[-1]))

    def list(self, path: tuple[str, ...]) -> Sequence[tuple[str, Node]] | None:
        """A folder's entries sorted by name, or None if path is no folder."""
        self.refresh()
        entries = self._dir(path)
        return None if entries is None else _Sorted(entries)

    def is_cached(self, path: tuple[str, ...]) -> bool:
        """Whether listing or looking into path is a dict access (no I/O)."""
        key = self._key(path, build=False)
        return key is not None and key in self._dirs

    def at_hand(self, path: tuple[str, ...]) -> bool:
        """Whether listing or looking into path waits on nothing: it is
        kept, or it is in a work's folders on a local archive and the work's
        record files are in the page cache (a walk's usual case: what a sync
        wrote or a reader read lately)."""
        key = self._key(path, build=False)
        if key is None or key in self._dirs:
            return key is not None
        if key is path:  # a view's or group's folder: built from the index
            return False
        store = self.archive.store
        return not store.blocking and self._works.get(key[0]) is not None \
            and store.at_hand(artwork_key(key[0], RECORD)) and store.at_hand(artwork_key(key[0], RAW))

    def position(self, path: tuple[str, ...], name: str) -> int | None:
        """Where name sits in ``list(path)`` (None: not there)."""
        entries = self._dir(path)
        return None if entries is None else entries.position(names.lookup_key(name))

    def place(self, path: tuple[str, ...]) -> str:
        """Where a path sits, from its shape alone: "view" (a folder of
        views or groups), "artwork" (an artwork folder), "inside" (in one),
        or "other" (status.json, unknown)."""
        if not path:
            return "view"
        depth = _DEPTH.get(path[0])
        if depth is None:
            return "other"
        if len(path) <= depth:
            return "view"
        return "artwork" if len(path) == depth + 1 else "inside"

    def is_gone(self, artwork_id: int) -> bool:
        work = self._works.get(artwork_id)
        return bool(work and work.gone)

    def links(self, path: tuple[str, ...], node: Node) -> int:
        """st_nlink of a folder: 2 + its subfolders (find relies on it)."""
        if node.is_artwork_root:
            work = self._works.get(node.artwork)
            return 2 + (work.subdirs if work else 0)
        if node.artwork:
            return 2
        if not path:  # the views, without building the root (status.json's counts are a query)
            return 2 + len(self.views())
        links = self._links.get(path)
        if links is None:
            entries = self._dir(path)
            links = self._links[path] = 2 + sum(1 for n in (entries or {}).values() if n.is_dir)
        return links

    def artwork_info(self, artwork_id: int) -> dict[str, object]:
        """What a page about a work shows (the browser view)."""
        work = self._works[artwork_id]
        return {"id": work.id, "title": work.title, "artist_name": work.artist_name, "artist_id": work.artist_id,
                "create_date": work.create_date, "gone": work.gone, "nsfw": work.nsfw,
                "tags": list(self._all_tags().get(work.id, ()))}

    def artist_folder(self, artwork_id: int) -> tuple[str, ...]:
        work = self._works[artwork_id]
        return ("by-artist", names.labelled(work.artist_name, f"[{work.artist_id}]"))

    def tag_folder(self, tag: str) -> tuple[str, ...]:
        return ("by-tag", names.segment(tag))

    def etag(self, path: tuple[str, ...], node: Node) -> str:
        """A strong validator: the same while the bytes are the same."""
        return node.etag or Cache.key(path, node.size, node.mtime)

    def reader(self, path: tuple[str, ...], node: Node | None = None) -> Reader:
        """An open file; ``node``: what ``get(path)`` answered, when the caller
        has it."""
        node = node or self.get(path)
        if node is None or node.is_dir or node.content is None:
            raise TreeError("notfound", f"no such file: {'/'.join(path)}")
        return node.content().reader()

    def xattrs(self, path: tuple[str, ...]) -> dict[str, bytes]:
        """Desktop metadata of an artwork folder and everything in it."""
        node = self.get(path)
        if node is None or not node.artwork:
            return {}
        work = self._works.get(node.artwork)
        if work is None:
            return {}
        tags = self._all_tags().get(work.id, [])
        return {
            "user.xdg.origin.url": meta.PAGE_URL.format(work.id).encode(),
            "user.xdg.tags": ",".join(tags).encode(),
            "user.xdg.comment": work.title.encode(),
            "user.pixiv.id": str(work.id).encode(),
            "user.pixiv.artist": f"{work.artist_name} [{work.artist_id}]".encode(),
        }

    def delete(self, path: tuple[str, ...]) -> int:
        """Delete the artwork whose folder this is; return its id."""
        node = self.get(path)
        if node is None:
            raise TreeError("notfound", f"no such folder: {'/'.join(path)}")
        if not node.is_artwork_root:
            raise TreeError("readonly", "only a whole artwork folder can be deleted")
        if self.follower is not None:
            raise TreeError("forbidden", f"read-only: this machine follows the bucket; {self.writer()}")
        work = self._works[node.artwork]
        if work.gone:
            raise TreeError("forbidden", f"{work.id} is gone from pixiv: this archive holds its only copy "
                                         "(`pbe-fs delete --force` can still delete it)")
        try:
            maintenance.delete(self.archive, work.id)
        except PbeError as exc:
            raise TreeError("busy", str(exc)) from None
        log.info("deleted %d through the tree (%s)", work.id, "/".join(path))
        self.refresh(force=True)
        return work.id

    def writer(self) -> str:
        """Who syncs a followed bucket, for refusals (403 delete, 409 refresh)."""
        from .follow import writer
        return writer(self.archive.store)

    def close(self) -> None:
        if self.follower is not None:
            self.follower.stop()
        self.index.close()

    # -- folder contents -------------------------------------------------------------
    def _key(self, path: tuple[str, ...], *, build: bool = True) -> tuple[str | int, ...] | None:
        """Where a folder's listing is kept: a path inside an artwork folder
        becomes (id, *rest), the same from every view. None: no such folder
        (or, without build, not known without building a listing)."""
        depth = _DEPTH.get(path[0]) if path else None
        if depth is None or len(path) <= depth:
            return path
        if not build and path[:depth] not in self._dirs:
            return None
        folder = self.get(path[: depth + 1])
        if folder is None or not folder.is_artwork_root:
            return None
        return (folder.artwork, *path[depth + 1:])

    def _dir(self, path: tuple[str, ...]) -> _Folder | None:
        key = self._key(path)
        if key is None:
            return None
        with self._lock:
            entries = self._dirs.get(key)
            if entries is not None:
                return entries
        built = {key: self._build(path)} if key is path else self._artwork_dirs(key)  # type: ignore[arg-type]
        parent = path[:-1] if key is path else path[:_DEPTH[path[0]]]  # where a walk looks its names up
        entries = None
        with self._lock:
            for found, listing in built.items():
                if listing is not None and found != key:
                    self._dirs.put(found, _Folder(listing), parent)
            if built.get(key) is not None:  # last: the one asked for is the last one out
                entries = _Folder(built[key])
                self._dirs.put(key, entries, parent)
        return entries

    def _build(self, path: tuple[str, ...]) -> dict[str, Node] | None:
        if not path:
            root = {v: self._view_node() for v in self.views()}
            root["status.json"] = self._status_node()
            return root
        view = path[0]
        if view not in self.views():
            return None
        return self._view_dir(view, path[1:])  # _dir keeps what is inside artwork folders by id

    def _view_node(self) -> Node:
        return Node(True, self._stamp, immutable=False)

    def _status_node(self) -> Node:
        """status.json: the same bytes from every process of a server for one
        generation (its ETag and Range answers agree), so without the disk's
        free space, which changes all the time (`pbe-fs status` shows it)."""
        state = status(self.archive)
        state.pop("disk_free", None)
        data = json.dumps(state, ensure_ascii=False, indent=2).encode() + b"\n"
        return Node(False, self._stamp, len(data), content=lambda: BytesContent(data), immutable=False,
                    etag=_etag(data))

    def _folder(self, work: Work) -> Node:
        node = work.node
        if node is None:
            node = work.node = Node(True, work.mtime, artwork=work.id, is_artwork_root=True)
        return node

    def _in_view(self, work: Work, view: str) -> bool:
        only = _ONLY.get(view)
        return self._shown(work, view) and (only is None or only(work))

    def _works_in(self, view: str) -> list[Work]:
        return [w for w in self._works.values() if self._in_view(w, view)]

    def _view_dir(self, view: str, sub: tuple[str, ...]) -> dict[str, Node] | None:
        """A view folder or a group folder in it. Groups (years and months,
        artists, tags) are sorted out once per generation: a group folder is
        then its members alone, not a pass over every work (listing by-tag
        asks each of its tag folders for their size, and 50,000 tags times
        200,000 works never ended)."""
        if view in ("by-ingress", "nsfw", "private", "ai", "by-id", "gone") and not sub:
            return {_name(view, w): self._folder(w) for w in self._works_in(view)}
        if view == "by-date":
            return self._by_date(sub)
        if view == "changes":
            return self._changes_dir(sub)
        if view == "by-artist":
            return self._grouped(view, sub, lambda w: [_artist(w)])
        if view == "by-tag":
            tags = self._all_tags()
            return self._grouped(view, sub, lambda w: [_segment(t) for t in tags.get(w.id, [])])
        return None

    def _by_date(self, sub: tuple[str, ...]) -> dict[str, Node] | None:
        dates = self._dates
        if dates is None:
            dates = {}
            for w in self._works_in("by-date"):
                year, month = _ym(w)
                dates.setdefault(year, {}).setdefault(month, []).append(w)
            self._dates = dates
        if not sub:
            return {y: self._view_node() for y in dates}
        months = dates.get(sub[0])
        if months is None:
            return None
        if len(sub) == 1:
            return {m: self._view_node() for m in months}
        chosen = months.get(sub[1])
        if not chosen:
            return None
        return {_name("by-date", w): self._folder(w) for w in chosen}

    def _grouped(self, view: str, sub: tuple[str, ...], keys: Callable[[Work], list[str]]) -> dict[str, Node] | None:
        groups = self._groups.get(view)
        if groups is None:
            groups = {}
            for w in self._works_in(view):
                for key in keys(w):
                    groups.setdefault(key, []).append(w)
            self._groups[view] = groups
        if not sub:
            return {k: self._view_node() for k in groups}
        members = groups.get(names.lookup_key(sub[0]))
        if members is None:
            return None
        return {_name(view, w): self._folder(w) for w in members}

    def _changes_dir(self, sub: tuple[str, ...]) -> dict[str, Node] | None:
        """changes/YYYY-MM/: one artwork folder per event, and index.txt."""
        months = self._change_months()
        if not sub:
            return {m: self._view_node() for m in months}
        if sub[0] not in months:
            return None
        events = list(self._change_rows(sub[0]))
        entries: dict[str, Node] = {}
        for day, event, work, _ in events:
            entries.setdefault(_event_name(day, event, work), self._folder(work))

        def index() -> bytes:
            return "".join(f"{day} {event} {work.id} {work.title}{f' ({what})' if what else ''}\n"
                           for day, event, work, what in events).encode()
        # Made again when read, not kept: at 200,000 works the months' index.txt held 70 MB.
        data = index()
        entries["index.txt"] = Node(False, self._stamp, len(data), content=lambda: BytesContent(index()),
                                    immutable=False, etag=_etag(data))
        return entries

    def _change_rows(self, month: str = "") -> Iterator[tuple[str, str, Work, str]]:
        """Shown works' events as (day, event, work, what changed), newest
        first: every month's, or one month's (UTC). Read from the index
        when a month's folder is made, not kept for all: at 200,000 works
        the rows took 18 MB. One string per day and per kind of event."""
        rows = self.index.db.execute(
            f"SELECT artwork_id, at, event, detail FROM history WHERE event IN ({','.join('?' * len(CHANGE_EVENTS))})"
            + (" AND at >= ? AND at < ?" if month else "") + " ORDER BY at DESC, artwork_id, event DESC",
            (*CHANGE_EVENTS, *((month, month + "~") if month else ())))
        kinds = {e: e for e in CHANGE_EVENTS}
        days: dict[str, str] = {}
        for aid, at, event, detail in rows:
            work = self._works.get(aid)
            if work is None or not self._shown(work, "changes") or len(at) < 10:
                continue
            event = kinds.get(event, event)
            what = ", ".join(json.loads(detail).get("fields", {})) if event == "changed" else ""
            if event == "changed" and not what:
                what = "images"
            yield days.setdefault(at[:10], at[:10]), event, work, what

    def _change_months(self) -> list[str]:
        return self._changes_index()[1]

    def _all_tags(self) -> _Tags:
        """Every work's tags, loaded once per generation (by-tag only)."""
        tags = self._tags
        if tags is None:
            tags = self._tags = _Tags(self.index.db.execute(
                "SELECT artwork_id, name FROM tags ORDER BY artwork_id, position"))
        return tags

    def _events_by_work(self) -> dict[int, tuple[tuple[str, str], ...]]:
        return self._changes_index()[0]

    def _changes_index(self) -> tuple[dict[int, tuple[tuple[str, str], ...]], list[str]]:
        """Each work's folders in changes/ as (day, event), oldest first:
        history only grows, so a folder keeps its place. The folder's name is
        made from them when asked for (``_change_path``): at 200,000 works,
        names kept here took 105 MB. Most works share their events' shape
        (one bookmark, on one of a few thousand days), so each distinct
        tuple is kept once: a list per work took 34 MB more. And the months
        that have events, newest first."""
        events, months = self._events, self._months
        if events is None or months is None:
            found: dict[int, list[tuple[str, str]]] = {}
            seen: dict[str, None] = {}
            for day, event, work, _ in self._change_rows():  # newest first, as the index sorts them
                found.setdefault(work.id, []).append((day, event))
                seen[day[:7]] = None
            shared: dict[tuple, tuple] = {}
            events = {}
            for aid, newest_first in found.items():
                shape = tuple(dict.fromkeys(shared.setdefault(pair, pair) for pair in reversed(newest_first)))
                events[aid] = shared.setdefault(shape, shape)
            months = list(seen)
            self._events, self._months = events, months
        return events, months

    @staticmethod
    def _change_path(work: Work, day: str, event: str) -> tuple[str, str]:
        """(month, folder name) of a work's event in changes/."""
        return day[:7], _event_name(day, event, work)

    # -- where each work's folders are (the FUSE adapter numbers them) -----------------
    def _place(self, work: Work, view: str, number: int, tags: Sequence[str] | None,
               events: tuple[tuple[str, str], ...] | None) -> tuple[str, ...] | None:
        if not self._in_view(work, view):
            return None
        if view == "by-tag":
            if tags is None or number >= len(tags):
                return None
            group = _segment(tags[number])
            if any(_segment(t) == group for t in tags[:number]):
                return None  # two tags, one folder: the first one names it
            return (view, group, _name(view, work))
        if view == "changes":
            if events is None or number >= len(events):
                return None
            return (view, *self._change_path(work, *events[number]))
        if number:
            return None
        if view == "by-date":
            return (view, *_ym(work), _name(view, work))
        if view == "by-artist":
            return (view, _artist(work), _name(view, work))
        return (view, _name(view, work))

    def artwork_path(self, artwork_id: int, view: str, number: int) -> tuple[str, ...] | None:
        """The path of a work's artwork folder in a view; ``number`` tells its
        folders in by-tag (the tag's position) and changes/ (the event's) apart."""
        work = self._works.get(artwork_id)
        if work is None or view not in self.views():
            return None
        tags = self._all_tags().get(artwork_id) if view == "by-tag" else None
        events = self._events_by_work().get(artwork_id) if view == "changes" else None
        return self._place(work, view, number, tags, events)

    def numbers_loaded(self, view: str) -> bool:
        """Whether artwork_path and artwork_number answer for view without I/O."""
        return {"by-tag": self._tags, "changes": self._events}.get(view, True) is not None

    def artwork_number(self, path: tuple[str, ...], node: Node) -> int | None:
        """The inverse of artwork_path: which of its work's folders in the view path is."""
        view = path[0]
        if view == "by-tag":
            group = names.lookup_key(path[1])
            found = [i for i, t in enumerate(self._all_tags().get(node.artwork, [])) if _segment(t) == group]
            return found[0] if found else None
        if view == "changes":
            wanted = (path[1], names.lookup_key(path[-1]))
            work = self._works.get(node.artwork)
            if work is None:
                return None
            return next((i for i, (day, event) in enumerate(self._events_by_work().get(work.id, []))
                         if self._change_path(work, day, event) == wanted), None)
        return 0

    def stale_since(self) -> tuple[list[tuple[tuple[str, ...], str, int, int, int]], set[str]]:
        """What the previous generation showed that is no more: the artwork
        folders (as they were named; with view, number and id, as in
        artwork_path, and how many archived files the work had or has, the
        most) of every work that changed or went, and group folders left
        empty (view "", id 0, 0 files); and views whose old contents are not known
        (the tags or events of the previous generation were never loaded).
        Needs ``keep_previous``; answers once per change."""
        with self._lock:
            before, self._previous = self._previous, None
        if before is None:
            return [], set()
        works, tags, events = before
        new_tags = self._all_tags() if tags is not None else {}
        new_events = self._events_by_work() if events is not None else {}
        stale: list[tuple[tuple[str, ...], str, int, int, int]] = []
        unknown: set[str] = set()
        for aid, old in works.items():
            if (self._works.get(aid) == old and (tags is None or tags.get(aid) == new_tags.get(aid))
                    and (events is None or events.get(aid) == new_events.get(aid))):
                continue
            unknown |= {v for v, known in (("by-tag", tags), ("changes", events)) if known is None}
            for view in self.views():
                for number in range(len((tags or {}).get(aid, [])) if view == "by-tag" else
                                    len((events or {}).get(aid, [])) if view == "changes" else 1):
                    path = self._place(old, view, number, (tags or {}).get(aid), (events or {}).get(aid))
                    if path is not None:
                        now = self._works.get(aid)
                        stale.append((path, view, number, aid, max(old.files, now.files if now else 0)))
                        stale.extend((path[:n], "", 0, 0, 0) for n in range(2, len(path)) if self.get(path[:n]) is None)
        return stale, unknown


    # -- inside an artwork folder -------------------------------------------------------
    def _artwork_dirs(self, key: tuple[int, ...]) -> dict[tuple, dict[str, Node] | None]:
        """The listing of key = (id, *rest), and with it those of the work's
        folder and quality folders: one reading of its record for all (a
        walk opens each of them next)."""
        aid, rest = key[0], tuple(key[1:])
        work = self._works.get(aid)
        found = self.record(aid) if work is not None else None
        if work is None or found is None:
            return {key: None}
        record, raw = found
        folder = ArtworkFolder(self.archive.store, record, raw, cache=self.cache,
                               top=self._top_of({f["role"] for f in record.get("files", [])}), mtime=work.mtime)
        if len(rest) > 1:
            return {key: folder.listing(rest)}
        built: dict[tuple, dict[str, Node] | None] = {key: folder.listing(rest)}
        for sibling in [(aid,), *((aid, role) for role in folder.subfolders())]:
            if sibling not in built:
                try:
                    built[sibling] = folder.listing(sibling[1:])
                except Exception as exc:  # noqa: BLE001 - a sibling's trouble is its own: it fails when asked for
                    log.debug("%d: listing %s ahead failed: %s", aid, sibling[1:], exc)
        return built

    def record(self, aid: int) -> tuple[dict, dict] | None:
        """(record, raw) of an archived work, or None. On a bucket, from the
        local copy that matches the index, so pages and listings need no
        round trip (nor the bucket); when neither the copy nor the archive
        can be read, what the index knows, since the work is still archived."""
        try:
            if not self.archive.store.blocking:
                return self.archive.read_artwork(aid)
            stamp = LocalRecords.stamp(self.index.db, aid)
            found = self.records.get(aid, stamp)
            if found is None:
                found = self.archive.read_artwork(aid)
                self.records.put(aid, stamp, *found)
            return found
        except (OSError, ValueError, PbeError) as exc:
            salvaged = record_from_index(self.index.db, aid, None)
            if salvaged is None:
                log.warning("%d: archive folder unreadable: %s", aid, exc)
                return None
            if isinstance(exc, RecordError):  # the record is bad, not the bucket: its raw may still read
                try:
                    return salvaged[0], self.archive.read_raw(aid)
                except (OSError, PbeError):
                    pass
            return salvaged

    def _keep_record(self, aid: int, record: dict, raw: dict) -> None:
        self.records.put(aid, LocalRecords.stamp(self.index.db, aid), record, raw)
