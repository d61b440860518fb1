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

import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from . import maintenance, names
from .archive import Archive
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


def _epoch(iso: str) -> float:
    try:
        return datetime.fromisoformat(iso).timestamp()
    except (ValueError, TypeError):
        return 0.0


class Tree:
    """The archive as folders, for one NSFW policy."""

    def __init__(self, config: Config, policy: str | None = None, *, ai: str | None = None,
                 cache_dirs: int = 512) -> None:
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
        self._works: dict[int, Work] = {}
        self._tags: dict[int, list[str]] | None = None
        self._changes: dict[str, list[tuple[str, str, Work, str]]] | None = None
        self._links: dict[tuple[str, ...], int] = {}
        self._dirs: OrderedDict[tuple[str, ...], dict[str, Node]] = OrderedDict()
        self._max_dirs = cache_dirs
        self.records = LocalRecords(config.cache_path / "records")
        self.follower = None  # filesystem_options.follow: another machine writes, we keep up
        if getattr(self.archive.store, "follow", False):
            from .follow import Follower
            self.follower = Follower(self.archive, on_record=self._keep_record).start()
        self.refresh(force=True)

    # -- generations -----------------------------------------------------------
    def refresh(self, force: bool = False, interval: float = 0.5) -> bool:
        """Notice a sync's commits; at most one index query per ``interval``."""
        now = time.monotonic()
        if not force and now - self._checked < interval:
            return False
        self._checked = now
        replaced = self.index.follow()  # a rebuild put a new file in place
        generation = self.index.generation()
        if generation == self._generation and not force and not replaced:
            return False
        with self._lock:
            self._generation = generation
            self._version += 1
            self._stamp = time.time()
            self._works = self._load_works()
            self._tags = None
            self._changes = None
            self._links = {}
            self._dirs.clear()
        return True

    @property
    def generation(self) -> int:
        """Changes whenever the tree reloads (a sync's commit, a rebuilt index)."""
        return self._version

    def _load_works(self) -> dict[int, Work]:
        db = self.index.db
        roles = {aid: set(found.split(",")) & set(QUALITIES) for aid, found in db.execute(
            "SELECT artwork_id, group_concat(DISTINCT role) FROM files GROUP BY artwork_id")}
        rows = db.execute(
            "SELECT w.id, w.seq, w.title, w.artist_id, a.name, w.create_date, w.x_restrict, w.state, w.restrict,"
            " w.ai_type FROM artworks w JOIN artists a ON a.id = w.artist_id ORDER BY w.seq")
        works = {}
        for r in rows:
            present = roles.get(r[0], set())
            subdirs = len(present - {self._top_of(present)})
            works[r[0]] = Work(r[0], r[1], r[2], r[3], r[4], r[5], _epoch(r[5]), r[6] > 0, r[7] == "gone", subdirs,
                               r[8] == "private", r[9] == 2)
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

    def list(self, path: tuple[str, ...]) -> list[tuple[str, Node]] | None:
        """A folder's entries sorted by name, or None if path is no folder."""
        self.refresh()
        entries = self._dir(path)
        return None if entries is None else sorted(entries.items())

    def is_cached(self, path: tuple[str, ...]) -> bool:
        """Whether listing or looking into path is a dict access (no I/O)."""
        return path in self._dirs

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
                "tags": self._all_tags().get(work.id, [])}

    def artist_folder(self, artwork_id: int) -> tuple[str, ...]:
        work = self._works[artwork_id]
        return ("by-artist", names.labelled(work.artist_name, f"[{work.artist_id}]"))

    def tag_folder(self, tag: str) -> tuple[str, ...]:
        return ("by-tag", names.segment(tag))

    def etag(self, path: tuple[str, ...], node: Node) -> str:
        """A strong validator: the same while the bytes are the same."""
        return node.etag or Cache.key(path, node.size, node.mtime)

    def reader(self, path: tuple[str, ...]) -> Reader:
        node = self.get(path)
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
    def _dir(self, path: tuple[str, ...]) -> dict[str, Node] | None:
        with self._lock:
            entries = self._dirs.get(path)
            if entries is not None:
                self._dirs.move_to_end(path)
                return entries
        entries = self._build(path)
        if entries is not None:
            with self._lock:
                self._dirs[path] = entries
                while len(self._dirs) > self._max_dirs:
                    self._dirs.popitem(last=False)
        return entries

    def _build(self, path: tuple[str, ...]) -> dict[str, Node] | None:
        if not path:
            root = {v: self._view_node() for v in self.views()}
            root["status.json"] = self._status_node()
            return root
        view = path[0]
        if view not in self.views():
            return None
        depth = _DEPTH[view]
        if len(path) <= depth:
            return self._view_dir(view, path[1:])
        folder = self.get(path[: depth + 1])
        if folder is None or not folder.is_artwork_root:
            return None
        return self._artwork_dir(folder.artwork, path[depth + 1:])

    def _view_node(self) -> Node:
        return Node(True, self._stamp, immutable=False)

    def _status_node(self) -> Node:
        data = json.dumps(status(self.archive), ensure_ascii=False, indent=2).encode() + b"\n"
        return Node(False, self._stamp, len(data), content=lambda: BytesContent(data), immutable=False,
                    etag=Cache.key(data))

    def _folder(self, work: Work) -> Node:
        return Node(True, work.mtime, artwork=work.id, is_artwork_root=True)

    def _works_in(self, view: str) -> list[Work]:
        works = [w for w in self._works.values() if self._shown(w, view)]
        if view == "nsfw":
            return [w for w in works if w.nsfw]
        if view == "gone":
            return [w for w in works if w.gone]
        if view == "private":
            return [w for w in works if w.private]
        if view == "ai":
            return [w for w in works if w.ai]
        return works

    def _view_dir(self, view: str, sub: tuple[str, ...]) -> dict[str, Node] | None:
        works = self._works_in(view)
        if view in ("by-ingress", "nsfw", "private", "ai") and not sub:
            return {names.join(f"{w.seq:06d}", str(w.id), w.title): self._folder(w) for w in works}
        if view == "by-id" and not sub:
            return {str(w.id): self._folder(w) for w in works}
        if view == "gone" and not sub:
            return {names.join(str(w.id), w.title): self._folder(w) for w in works}
        if view == "by-date":
            return self._by_date(works, sub)
        if view == "changes":
            return self._changes_dir(sub)
        if view == "by-artist":
            return self._grouped(works, sub, lambda w: [names.labelled(w.artist_name, f"[{w.artist_id}]")])
        if view == "by-tag":
            tags = self._all_tags()
            return self._grouped(works, sub, lambda w: [names.segment(t) for t in tags.get(w.id, [])])
        return None

    def _by_date(self, works: list[Work], sub: tuple[str, ...]) -> dict[str, Node] | None:
        def ym(w: Work) -> tuple[str, str]:
            d = w.create_date
            return (d[:4], d[5:7]) if len(d) >= 10 else ("0000", "00")
        if len(sub) == 0:
            return {y: self._view_node() for y in {ym(w)[0] for w in works}}
        if len(sub) == 1:
            months = {ym(w)[1] for w in works if ym(w)[0] == sub[0]}
            return {m: self._view_node() for m in months} if months else None
        chosen = [w for w in works if ym(w) == (sub[0], sub[1])]
        if not chosen:
            return None
        return {names.join(w.create_date[:10], str(w.id), w.title): self._folder(w) for w in chosen}

    def _grouped(self, works: list[Work], sub: tuple[str, ...], keys: Callable[[Work], list[str]]) -> dict[str, Node] | None:
        groups: dict[str, list[Work]] = {}
        for w in works:
            for key in keys(w):
                groups.setdefault(key, []).append(w)
        if not sub:
            return {k: self._view_node() for k in groups}
        members = groups.get(names.lookup_key(sub[0]))
        if members is None:
            return None
        return {names.join(str(w.id), w.title): self._folder(w) for w in members}

    def _changes_dir(self, sub: tuple[str, ...]) -> dict[str, Node] | None:
        """changes/YYYY-MM/: one artwork folder per event, and index.txt."""
        months = self._all_changes()
        if not sub:
            return {m: self._view_node() for m in months}
        events = months.get(sub[0])
        if events is None:
            return None
        entries: dict[str, Node] = {}
        for at, event, work, _ in events:
            entries.setdefault(names.join(at[:10], event, str(work.id), work.title), self._folder(work))
        lines = "".join(f"{at[:10]} {event} {work.id} {work.title}{f' ({what})' if what else ''}\n"
                        for at, event, work, what in events)
        data = lines.encode()
        entries["index.txt"] = Node(False, self._stamp, len(data), content=lambda: BytesContent(data), immutable=False,
                                    etag=Cache.key(data))
        return entries

    def _all_changes(self) -> dict[str, list[tuple[str, str, Work, str]]]:
        """Every shown work's events by month (UTC), newest first: loaded once per generation."""
        changes = self._changes
        if changes is None:
            changes = {}
            rows = self.index.db.execute(
                f"SELECT artwork_id, at, event, detail FROM history WHERE event IN ({','.join('?' * len(CHANGE_EVENTS))})"
                " ORDER BY at DESC, artwork_id", CHANGE_EVENTS)
            for aid, at, event, detail in rows:
                work = self._works.get(aid)
                if work is None or not self._shown(work, "changes") or len(at) < 10:
                    continue
                what = ", ".join(json.loads(detail).get("fields", {})) if event == "changed" else ""
                if event == "changed" and not what:
                    what = "images"
                changes.setdefault(at[:7], []).append((at, event, work, what))
            self._changes = changes
        return changes

    def _all_tags(self) -> dict[int, list[str]]:
        """Every work's tags, loaded once per generation (by-tag only)."""
        tags = self._tags
        if tags is None:
            tags = {}
            for aid, name in self.index.db.execute("SELECT artwork_id, name FROM tags ORDER BY artwork_id, position"):
                tags.setdefault(aid, []).append(name)
            self._tags = tags
        return tags


    # -- inside an artwork folder -------------------------------------------------------
    def _artwork_dir(self, aid: int, rest: tuple[str, ...]) -> dict[str, Node] | None:
        work = self._works.get(aid)
        if work is None:
            return None
        found = self.record(aid)
        if found is None:
            return None
        record, raw = found
        return ArtworkFolder(self.archive.store, record, raw, cache=self.cache,
                             top=self._top_of({f["role"] for f in record.get("files", [])}),
                             mtime=work.mtime).listing(rest)

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
