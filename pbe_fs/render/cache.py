"""The on-disk cache of generated files: bounded, LRU, shared, crash-safe.

Entries are whole files named by a key that changes whenever their inputs
do, so an entry is never stale, only unused. Writes go to a temporary file
and are renamed into place, so two processes generating the same entry at
once both succeed and readers never see half of one. Use refreshes an
entry's mtime; when the cache outgrows ``cache.max_gb`` the least recently
used entries go first.
"""

from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path


class Cache:
    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._written = 0

    @staticmethod
    def key(*parts: object) -> str:
        return hashlib.sha256(repr(parts).encode()).hexdigest()[:32]

    def path(self, kind: str, key: str, suffix: str) -> Path:
        return self.root / kind / key[:2] / f"{key}{suffix}"

    def get(self, kind: str, key: str, suffix: str) -> Path | None:
        path = self.path(kind, key, suffix)
        try:
            os.utime(path)
        except FileNotFoundError:
            return None
        except OSError:
            pass  # a read-only cache still serves
        return path

    def get_or_make(self, kind: str, key: str, suffix: str, make: Callable[[Path], None]) -> Path:
        """The entry's path, generating it with ``make(tmp_path)`` if absent.

        One thread per entry generates; others wait for it rather than
        render the same thing twice.
        """
        found = self.get(kind, key, suffix)
        if found is not None:
            return found
        with self._guard:
            lock = self._locks.setdefault(key, threading.Lock())
        with lock:
            found = self.get(kind, key, suffix)
            if found is not None:
                return found
            path = self.path(kind, key, suffix)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            try:
                make(tmp)
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            with self._guard:
                self._locks.pop(key, None)
                self._written += path.stat().st_size
                over = self._written > self.max_bytes // 20
            if over:
                self.trim()
            return path

    def trim(self) -> None:
        """Drop least recently used entries until under the size cap."""
        with self._guard:
            self._written = 0
        entries = []
        for folder, _, files in os.walk(self.root):
            for name in files:
                p = os.path.join(folder, name)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                if name.endswith(".tmp"):
                    continue
                entries.append((st.st_mtime, st.st_size, p))
        total = sum(e[1] for e in entries)
        for _, size, p in sorted(entries):
            if total <= self.max_bytes:
                break
            try:
                os.unlink(p)
                total -= size
            except FileNotFoundError:
                pass
