"""A bounded local cache of remote files, in blocks, shared by processes.

Each remote file (one version of one key) is an entry: a sparse data file
the size of the object and a map with one byte per block (1 = present). A
block's bytes are written before its map byte, so a reader that sees the
byte sees the bytes; two processes filling the same block write the same
bytes. Opening an entry touches its map, and when the cache outgrows its
cap the least recently opened entries go first; a reader that still holds
an evicted entry open keeps reading it (the inode lives until closed).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

BLOCK = 1 << 20


class Entry:
    """One cached object: read what is present, fill what is not."""

    def __init__(self, cache: ReadCache, ident: str, size: int) -> None:
        self.cache = cache
        self.size = size
        self.blocks = (size + BLOCK - 1) // BLOCK
        base = cache.root / ident[:2] / ident
        base.parent.mkdir(parents=True, exist_ok=True)
        self.data = os.open(f"{base}.data", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.map = os.open(f"{base}.map", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        if os.fstat(self.data).st_size != size or os.fstat(self.map).st_size != self.blocks:
            # new, or left by a different object under the same name: start empty
            os.ftruncate(self.map, 0)
            os.ftruncate(self.data, size)
            os.ftruncate(self.map, self.blocks)
        os.utime(self.map)
        self.present = bytearray(os.pread(self.map, self.blocks, 0).ljust(self.blocks, b"\0"))

    def has(self, block: int) -> bool:
        # Another process may have fetched it since we looked. Only ever set
        # a flag here: a fill racing with this read must not be undone.
        if not self.present[block] and os.pread(self.map, 1, block)[:1] == b"\1":
            self.present[block] = 1
        return bool(self.present[block])

    def fill(self, block: int, data: bytes) -> None:
        os.pwrite(self.data, data, block * BLOCK)
        os.pwrite(self.map, b"\1", block)
        self.present[block] = 1
        self.cache.wrote(len(data))

    def read(self, offset: int, size: int) -> bytes:
        return os.pread(self.data, size, offset)

    def close(self) -> None:
        os.close(self.data)
        os.close(self.map)


class ReadCache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._written = 0
        self._guard = threading.Lock()

    @staticmethod
    def ident(*parts: str) -> str:
        return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:40]

    def entry(self, ident: str, size: int) -> Entry:
        return Entry(self, ident, size)

    def wrote(self, n: int) -> None:
        with self._guard:
            self._written += n
            over = self._written > max(self.max_bytes // 20, BLOCK)
            if over:
                self._written = 0
        if over:
            self.trim()

    def usage(self) -> int:
        return sum(size for _, size, _ in self._entries())

    def _entries(self) -> list[tuple[float, int, str]]:
        """(last opened, bytes on disk, base path) of every entry."""
        found = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                if not name.endswith(".map"):
                    continue
                base = os.path.join(folder, name[:-4])
                try:
                    used = os.stat(base + ".map").st_mtime
                    size = os.stat(base + ".data").st_blocks * 512
                except FileNotFoundError:
                    continue
                found.append((used, size, base))
        return found

    def trim(self) -> None:
        """Drop least recently opened entries until under the cap."""
        entries = sorted(self._entries())
        total = sum(e[1] for e in entries)
        for _, size, base in entries:
            if total <= self.max_bytes:
                break
            for suffix in (".map", ".data"):
                try:
                    os.unlink(base + suffix)
                except FileNotFoundError:
                    pass
            total -= size
