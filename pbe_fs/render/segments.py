"""Contents made of pieces: literal bytes and byte ranges of archived files.

A computed zip is headers between archived images; a PDF skeleton is the
PDF around them. Archived files are read through the archive's store (a
folder or a bucket); cached renders are local files. Both are a ``Segments``: exact size known up front, any
offset readable without producing the rest, no second copy of the images.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ..storage import Handle, Store
from ..storage.local import LocalHandle


class Content(Protocol):
    """What the tree hands the adapters for a file: a size and a way in."""

    size: int

    def reader(self) -> Reader: ...


class Reader(Protocol):
    blocking: bool

    def ready(self, offset: int, size: int) -> bool: ...

    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FilePart:
    """``length`` bytes of a local file (a cached render) from ``offset``."""

    path: Path
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class BlobPart:
    """A whole archived file, by its key in the archive's store. ``version``
    (its SHA-256) tells a read cache one content from another."""

    key: str
    length: int
    version: str = ""


Part = bytes | FilePart | BlobPart


def _length(part: Part) -> int:
    return len(part) if isinstance(part, bytes) else part.length


class Segments:
    def __init__(self, parts: list[Part], store: Store | None = None) -> None:
        self.parts = [p for p in parts if _length(p)]
        self.store = store
        self.starts: list[int] = []
        pos = 0
        for part in self.parts:
            self.starts.append(pos)
            pos += _length(part)
        self.size = pos

    def reader(self) -> SegmentsReader:
        return SegmentsReader(self)


class SegmentsReader:
    """Reads across parts; keeps the files it touched open."""

    def __init__(self, segments: Segments) -> None:
        self.segments = segments
        self._handles: dict[object, Handle] = {}
        store = segments.store
        # Reads that may wait on the network: an event loop should hop to a thread.
        self.blocking = bool(store and store.blocking and any(isinstance(p, BlobPart) for p in segments.parts))

    def _handle(self, part: FilePart | BlobPart) -> Handle:
        ident = part.key if isinstance(part, BlobPart) else part.path
        handle = self._handles.get(ident)
        if handle is None:
            if isinstance(part, BlobPart):
                assert self.segments.store is not None, "archived parts need the archive's store"
                handle = self.segments.store.open(part.key, part.length, part.version)
            else:
                handle = LocalHandle(part.path)
            self._handles[ident] = handle
        return handle

    def ready(self, offset: int, size: int) -> bool:
        """Would ``read`` answer without waiting on the network?"""
        if not self.blocking:
            return True
        seg = self.segments
        end = min(seg.size, offset + size)
        i = bisect.bisect_right(seg.starts, offset) - 1
        while 0 <= i < len(seg.parts) and offset < end:
            part, start = seg.parts[i], seg.starts[i]
            if isinstance(part, BlobPart):
                inner = offset - start
                if not self._handle(part).ready(inner, min(part.length - inner, end - offset)):
                    return False
            offset = start + _length(part)
            i += 1
        return True

    def read(self, offset: int, size: int) -> bytes:
        seg = self.segments
        if offset >= seg.size or size <= 0:
            return b""
        end = min(seg.size, offset + size)
        out = []
        i = bisect.bisect_right(seg.starts, offset) - 1
        while offset < end:
            part, start = seg.parts[i], seg.starts[i]
            inner = offset - start
            if isinstance(part, bytes):
                chunk = part[inner: inner + end - offset]
            else:
                want = min(part.length - inner, end - offset)
                chunk = self._handle(part).pread((part.offset if isinstance(part, FilePart) else 0) + inner, want)
                if len(chunk) != want:
                    name = part.key if isinstance(part, BlobPart) else part.path
                    raise OSError(5, f"{name} is shorter than the index says")
            out.append(chunk)
            offset += len(chunk)
            i += 1
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        for handle in self._handles.values():
            handle.close()
        self._handles.clear()


class CachedFile:
    """A file in the cache as it is (an animation): ``make`` gives its path,
    making it again if the cache dropped it since (its bytes are the same)."""

    def __init__(self, make: Callable[[], Path]) -> None:
        self.make = make
        self.size = make().stat().st_size

    def reader(self) -> SegmentsReader:
        return Segments([FilePart(self.make(), 0, self.size)]).reader()


class BlobContent:
    """An archived file as it is."""

    def __init__(self, store: Store, key: str, size: int, version: str = "") -> None:
        self.store, self.key, self.size, self.version = store, key, size, version

    def reader(self) -> SegmentsReader:
        return Segments([BlobPart(self.key, self.size, self.version)], self.store).reader()


class BytesContent:
    """A small generated file held in memory (meta.json, pixiv.url)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def reader(self) -> SegmentsReader:
        return Segments([self.data]).reader()
