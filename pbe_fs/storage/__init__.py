"""Where the archive's files live: a local folder or an S3-compatible bucket.

The archive is the same tree of keys on either (``artworks/<id>/pbe.json``,
``lost/<id>.json``...); a store knows how to read, write, list and publish
keys, and nothing about artworks. Keys are relative POSIX paths.

Local state that is never shared (the SQLite index, the sync lock, works
being assembled) stays on local disk whatever the store: see
``Archive.private``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ..config import Config


class Handle(Protocol):
    """An open archived file, read at any offset."""

    def pread(self, offset: int, size: int) -> bytes: ...

    def ready(self, offset: int, size: int) -> bool: ...  # would pread answer without waiting?

    def close(self) -> None: ...


class Store(Protocol):
    kind: str  # "local" or "s3"
    blocking: bool  # reads may wait on the network: callers on an event loop hop to a thread

    def describe(self) -> str: ...

    def check(self) -> None: ...  # raise a one-line PbeError when the store cannot be used

    def read_bytes(self, key: str) -> bytes: ...

    def at_hand(self, key: str) -> bool: ...  # would read_bytes answer without waiting on a disk or network?

    def write_bytes(self, key: str, data: bytes) -> None: ...

    def exists(self, key: str) -> bool: ...

    def delete(self, key: str) -> None: ...

    def delete_tree(self, prefix: str) -> None: ...

    def keys(self, prefix: str) -> Iterator[str]: ...

    def stat(self, key: str) -> tuple[int, str] | None: ...

    def put_file(self, key: str, src: Path, size: int, sha256: str) -> None: ...

    def publish(self, src: Path, prefix: str, last: tuple[str, ...]) -> None: ...

    def open(self, key: str, size: int, version: str = "") -> Handle: ...

    def get_file(self, key: str, dest: Path) -> None: ...

    def sha256(self, key: str) -> str: ...  # of every byte, read past any cache

    def url(self, key: str, expires: int) -> str | None: ...


def read_all(store: Store, key: str, size: int, version: str = "") -> bytes:
    """A whole archived file, through the store's read cache (so bytes read
    to render a PDF are not fetched again when the file itself is read)."""
    handle = store.open(key, size, version)
    try:
        return handle.pread(0, size)
    finally:
        handle.close()


def open_store(config: Config, kind: str | None = None) -> Store:
    """The store ``config`` names (or the ``kind`` asked for, for migrate)."""
    kind = kind or config.settings.filesystem
    if kind == "s3":
        from .s3 import S3Store
        return S3Store.from_config(config)
    from .local import LocalStore
    return LocalStore(config.archive_path)
