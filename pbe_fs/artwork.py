"""One artwork folder: originals, quality subfolders and generated files.

The same contents appear in every view; the tree decides where, this module
decides what. The sync uses it too, to make a new work's PDFs and
animations before anyone lists the folder.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

from . import illust
from .render import anim, cbz, comicinfo, meta
from .render import pdf as pdf_render
from .render import zip as zip_render
from .render.cache import Cache
from .archive import artwork_key
from .render.segments import BlobContent, BytesContent, CachedFile, Content, Segments
from .storage import Store

QUALITIES = ("original", "large", "medium", "square_medium")


def top_quality(configured: str, roles: Any) -> str:
    """The quality an artwork folder shows at its top level
    (``display.artwork.image``, or the originals when it lacks that size)."""
    return configured if configured in roles else "original"


def _once(make: Callable[[], Any]) -> Callable[[], Any]:
    """make's answer, made on the first call (functools.cache costs 30 µs to set up, per file listed)."""
    made: list[Any] = []

    def get() -> Any:
        if not made:
            made.append(make())
        return made[0]
    return get


def _basename(path: str) -> str:
    return path.rpartition("/")[2]


def prepare(store: Store, record: dict[str, Any], raw: dict[str, Any], cache: Cache, configured_top: str) -> None:
    """Make a freshly archived work's generated files (the sync calls this
    once the work is in), so that nobody opening one waits for a render."""
    roles = {f["role"] for f in record.get("files", [])}
    artwork = ArtworkFolder(store, record, raw, cache=cache, top=top_quality(configured_top, roles), mtime=0)
    for rest in [(), *((role,) for role in artwork.subfolders())]:
        for node in (artwork.listing(rest) or {}).values():
            if node.pending:
                node.size  # noqa: B018 - makes it


class Node:
    """What a path is. ``artwork`` is set for an artwork folder and all in it.

    A generated file (``Node.generated``) is made lazily: its size and ETag
    are worked out when first asked for, since that can mean reading a PDF
    skeleton from the cache or rendering it, and a walk (``find``, a
    backup's scan) lists a work's twelve generated files without wanting
    any of them. Two threads asking at once both make the same bytes.
    """

    __slots__ = ("is_dir", "mtime", "_size", "artwork", "is_artwork_root", "_given", "immutable", "_etag",
                 "blob", "revalidate", "_make", "_identity", "_made")

    def __init__(self, is_dir: bool, mtime: float, size: int = 0, artwork: int = 0, is_artwork_root: bool = False,
                 content: Callable[[], Content] | None = None, immutable: bool = True, etag: str = "",
                 blob: str = "", revalidate: bool = False) -> None:
        self.is_dir, self.mtime, self._size, self.artwork = is_dir, mtime, size, artwork
        self.is_artwork_root = is_artwork_root
        self._given = content
        self.immutable = immutable
        self._etag: str | None = etag  # changes exactly when the bytes do
        self.blob = blob  # an archived file as it is: its key in the store (for redirects)
        # its bytes follow metadata a sync may change under the same name (a CBZ's ComicInfo.xml):
        # the mount is told precisely, but an HTTP cache must ask again (its ETag) before reuse
        self.revalidate = revalidate
        self._make: Callable[[], Content] | None = None
        self._identity: object = None
        self._made: Content | None = None

    @classmethod
    def generated(cls, mtime: float, artwork: int, make: Callable[[], Content], identity: object, *,
                  immutable: bool = True, revalidate: bool = False) -> Node:
        """A file made from archived ones; ``identity`` (or what it returns, if
        callable) names its bytes: their ETag is made from it."""
        node = cls(False, mtime, -1, artwork, immutable=immutable, revalidate=revalidate)
        node._make, node._identity, node._etag = make, identity, None
        return node

    @property
    def content(self) -> Callable[[], Content] | None:
        """Files: how to get at the bytes. (A generated node answers its own
        method, not one kept in a slot: that would be a reference cycle, and
        nodes would wait for the garbage collector instead of going when a
        listing goes.)"""
        return self._made_content if self._make is not None else self._given

    def _made_content(self) -> Content:
        made = self._made
        if made is None:
            assert self._make is not None
            made = self._made = self._make()
            self._size = made.size
        return made

    @property
    def size(self) -> int:
        if self._size < 0:
            return self._made_content().size
        return self._size

    @property
    def etag(self) -> str:
        if self._etag is None:
            identity = self._identity
            self._etag = Cache.key(identity() if callable(identity) else identity)
        return self._etag

    @property
    def pending(self) -> bool:
        """Whether learning its size still means making it (reading the cache, maybe rendering)."""
        return self._size < 0

    def __repr__(self) -> str:
        kind = "folder" if self.is_dir else "file"
        return f"<Node {kind} artwork={self.artwork} size={'?' if self._size < 0 else self._size}>"


class ArtworkFolder:
    """The contents of one artwork folder, the same in every view.

    Built from the work's record alone; generated files (zip layouts, PDF
    skeletons, animations) come from the cache, made on first need.
    """

    def __init__(self, store: Store, record: dict[str, Any], raw: dict[str, Any], *, cache: Cache,
                 top: str, mtime: float) -> None:
        self.store, self.record, self.raw, self.cache = store, record, raw, cache
        self.id = int(record["id"])
        self.mtime = mtime
        create_date = illust.fields(raw)["create_date"]
        try:
            self.when = datetime.fromisoformat(create_date)
        except ValueError:
            self.when = datetime(1980, 1, 1)
        self.by_role: dict[str, list[dict[str, Any]]] = {}
        for f in sorted(record.get("files", []), key=lambda x: (x["page"], x["path"])):
            self.by_role.setdefault(f["role"], []).append(f)
        self.top = top

    def key(self, f: dict[str, Any]) -> str:
        return artwork_key(self.id, f["path"])

    def _file(self, f: dict[str, Any]) -> Node:
        key, size, sha, store = self.key(f), f["size"], f["sha256"], self.store
        return Node(False, self.mtime, size, self.id, content=lambda: BlobContent(store, key, size, sha),
                    etag=sha[:32], blob=key)

    def _generated(self, make: Callable[[], Content], identity: object, *, immutable: bool = True,
                   revalidate: bool = False) -> Node:
        return Node.generated(self.mtime, self.id, make, identity, immutable=immutable, revalidate=revalidate)

    def _zip(self, files: list[dict[str, Any]], member_names: list[str] | None = None) -> Segments:
        members = [zip_render.Member(member_names[i] if member_names else _basename(f["path"]),
                                     self.key(f), f["size"], f["crc32"], f["sha256"]) for i, f in enumerate(files)]
        return zip_render.layout(members, self.when, self.store)

    def _cbz(self, files: list[dict[str, Any]]) -> tuple[Segments, bytes]:
        """The pages as a CBZ, and its ComicInfo.xml (which the etag follows)."""
        members = [zip_render.Member(_basename(f["path"]), self.key(f), f["size"], f["crc32"], f["sha256"])
                   for f in files]
        pages = [comicinfo.PageInfo(f.get("width") or 0, f.get("height") or 0, f["size"]) for f in files]
        xml = comicinfo.comicinfo(self.raw, pages)
        return cbz.layout(members, xml, self.when, self.store), xml

    def _pdf(self, files: list[dict[str, Any]]) -> Segments:
        pages = [pdf_render.Page(self.key(f), f["format"], f.get("mode", ""), f["size"], f["sha256"]) for f in files]
        return pdf_render.pdf(self.cache, self.store, pages)

    def _quality(self, role: str) -> dict[str, Node]:
        """A quality's images with their zip and pdf (made when first asked for)."""
        files = self.by_role.get(role, [])
        entries = {_basename(f["path"]): self._file(f) for f in files}
        if files and not (role == "original" and self.ugoira):
            aid = self.id
            shas = [f["sha256"] for f in files]
            entries[f"{aid}.zip"] = self._generated(lambda: self._zip(files), ("zip", shas))
            if not any(f.get("damaged") for f in files):  # a page that does not decode makes no PDF page
                entries[f"{aid}.pdf"] = self._generated(lambda: self._pdf(files), ("pdf", shas))
            # its ComicInfo.xml follows the metadata, but only a sync changes that: the mount
            # invalidates a CBZ then (fuse.invalidate), so readers keep the page cache meanwhile
            book = _once(lambda: self._cbz(files))
            entries[f"{aid}.cbz"] = self._generated(lambda: book()[0], lambda: ("cbz", shas, book()[1]),
                                                    revalidate=True)
        return entries

    @property
    def ugoira(self) -> dict[str, Any] | None:
        return self.record.get("ugoira")

    def listing(self, rest: tuple[str, ...]) -> dict[str, Node] | None:
        if rest:
            if len(rest) == 1 and rest[0] in QUALITIES and rest[0] != self.top and rest[0] in self.by_role:
                return self._quality(rest[0])
            return None
        entries = self._quality(self.top)
        for role in self.subfolders():
            entries[role] = Node(True, self.mtime, 0, self.id)
        aid = self.id
        meta_json = _once(lambda: meta.meta_json(self.record, self.raw))
        # the work's state (gone, restrict, history) lives in it: it changes when a sync says so
        entries["meta.json"] = self._generated(lambda: BytesContent(meta_json()), meta_json, immutable=False)
        entries["pixiv.url"] = self._generated(lambda: BytesContent(meta.internet_shortcut(aid)), aid)
        cover = self.cover()
        if cover is not None:
            entries["folder.jpg"] = self._file(cover)
        if self.ugoira:
            entries.update(self._ugoira_entries())
        return entries

    def _ugoira_entries(self) -> dict[str, Node]:
        aid, ugoira = self.id, self.ugoira or {}
        frames = ugoira.get("frames") or []
        frame_names = [f["file"] for f in frames]
        delays = [f["delay"] for f in frames]
        entries: dict[str, Node] = {}
        archived_zip = self.by_role.get("ugoira_zip")
        if archived_zip:
            z = archived_zip[0]
            entries[f"{aid}_ugoira.zip"] = self._file(z)
            sources: list[str] | str = self.key(z)
            key: object = z["sha256"]
        else:
            originals = self.by_role.get("original", [])[: len(frames)]
            if not originals:
                return entries
            frame_names = frame_names[: len(originals)]
            sources = [self.key(f) for f in originals]
            key = [f["sha256"] for f in originals]
            entries[f"{aid}_ugoira.zip"] = self._generated(lambda: self._zip(originals, frame_names),
                                                           ("ugoira", key, frame_names))
        cache, store = self.cache, self.store
        for fmt in ("gif", "webp"):
            def make(fmt: str = fmt) -> Path:
                return anim.animation(cache, store, fmt, sources, frame_names, delays, key)
            entries[f"{aid}.{fmt}"] = self._generated(lambda make=make: CachedFile(make), (fmt, key, delays))
        return entries

    def cover(self) -> dict[str, Any] | None:
        """The first page at the smallest archived reduced size (a JPEG),
        which file managers and media servers show as the folder's picture.
        None when only originals are archived: they may be any format and
        many megabytes."""
        for role in reversed(QUALITIES[1:]):
            first = self.by_role.get(role, [])[:1]
            if first and first[0]["page"] == 0 and first[0].get("format", "JPEG") == "JPEG":
                return first[0]
        return None

    def subfolders(self) -> list[str]:
        return [role for role in QUALITIES if role != self.top and role in self.by_role]
