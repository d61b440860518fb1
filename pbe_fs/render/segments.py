"""Contents made of pieces: literal bytes and byte ranges of archived files.

A computed zip is headers between archived images; a PDF skeleton is the
PDF around them. Both are a ``Segments``: exact size known up front, any
offset readable without producing the rest, no second copy of the images.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


class Content(Protocol):
    """What the tree hands the adapters for a file: a size and a way in."""

    size: int

    def reader(self) -> Reader: ...


class Reader(Protocol):
    def read(self, offset: int, size: int) -> bytes: ...

    def close(self) -> None: ...


@dataclass(frozen=True, slots=True)
class FilePart:
    """``length`` bytes of ``path`` starting at ``offset``."""

    path: Path
    offset: int
    length: int


Part = bytes | FilePart
_READAHEAD = 16 << 20


class Segments:
    def __init__(self, parts: list[Part]) -> None:
        self.parts = [p for p in parts if (len(p) if isinstance(p, bytes) else p.length)]
        self.starts: list[int] = []
        pos = 0
        for part in self.parts:
            self.starts.append(pos)
            pos += len(part) if isinstance(part, bytes) else part.length
        self.size = pos

    def reader(self) -> SegmentsReader:
        return SegmentsReader(self)


class SegmentsReader:
    """Reads across parts; keeps the archived files it touched open."""

    def __init__(self, segments: Segments) -> None:
        self.segments = segments
        self._fds: dict[Path, int] = {}

    def _fd(self, path: Path) -> int:
        fd = self._fds.get(path)
        if fd is None:
            fd = self._fds[path] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            # Readers stream: start the disk early, so a cold read through
            # FUSE (one request at a time) does not wait for every block.
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            os.posix_fadvise(fd, 0, _READAHEAD, os.POSIX_FADV_WILLNEED)
        return fd

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
                chunk = os.pread(self._fd(part.path), want, part.offset + inner)
                if len(chunk) != want:
                    raise OSError(5, f"{part.path} is shorter than the index says")
            out.append(chunk)
            offset += len(chunk)
            i += 1
        return out[0] if len(out) == 1 else b"".join(out)

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()


class FileContent:
    """An archived file as it is."""

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = size

    def reader(self) -> SegmentsReader:
        return Segments([FilePart(self.path, 0, self.size)]).reader()


class BytesContent:
    """A small generated file held in memory (meta.json, pixiv.url)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.size = len(data)

    def reader(self) -> SegmentsReader:
        return Segments([self.data]).reader()
