"""The archive: the truth that outlives pixiv and pbe-fs alike.

Layout, in a folder (``filesystem_options.path``) or a bucket under
``filesystem_options.prefix`` (also in the README)::

    artworks/<id>/pixiv.json          the raw illust object it was archived from
    artworks/<id>/pbe.json            pbe-fs's record: ingress number, restrict,
                                      state and its history, ugoira frame delays,
                                      size/CRC-32/SHA-256/pixels/format per file
    artworks/<id>/<id>_p0.png         originals, pixiv's own file names
    artworks/<id>/large/…             reduced sizes, one folder per size
    lost/<id>.json                    bookmarked works pixiv hid before we got them
    deleted/<id>.json                 works removed with `pbe-fs delete`
    .pbe/index.sqlite3                the index (rebuildable: `pbe-fs reindex`)
    .pbe/incoming/<id>/               a work being downloaded (never shown)

A work under ``artworks/`` counts only once its ``pbe.json`` is there: works
are assembled in ``.pbe/incoming`` (always local) and then renamed into place
in one step (a folder) or uploaded and verified with ``pbe.json`` last (a
bucket). ``.pbe`` stays local with an S3 store.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .errors import LockedError
from .storage import Store, open_store
from .storage.local import LocalStore, discard, move_into, write_atomic

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Archive", "ArchiveLock", "StoredFile", "Digest", "DamagedFile", "digest_file", "probe", "write_json",
           "move_into", "artwork_key", "artwork_ids"]

RECORD = "pbe.json"
RAW = "pixiv.json"
RECORD_FORMAT = 1
_CHUNK = 1 << 20


@dataclass
class StoredFile:
    """What is recorded at ingest about one archived file, so later
    features (zip layout, integrity checks, sizes) never re-read images."""

    path: str
    role: str
    page: int
    size: int
    crc32: int
    sha256: str
    width: int
    height: int
    format: str
    mode: str = ""  # Pillow's colour mode: RGB, RGBA, L, P, CMYK…
    url: str = ""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> StoredFile:
        return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})


class Digest:
    """Running size, CRC-32 and SHA-256 of a byte stream."""

    def __init__(self) -> None:
        self.size = 0
        self.crc32 = 0
        self._sha = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self.size += len(chunk)
        self.crc32 = zlib.crc32(chunk, self.crc32)
        self._sha.update(chunk)

    @property
    def sha256(self) -> str:
        return self._sha.hexdigest()


def digest_file(path: Path) -> Digest:
    digest = Digest()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest


class DamagedFile(Exception):
    """A downloaded file that is not what it claims to be."""


def probe(path: Path, kind: str) -> tuple[int, int, str, str]:
    """Check that a file decodes and return (width, height, format, mode).

    Images are fully decoded (JPEGs at 1/8 scale, which still reads every
    scan), so a truncated or garbled body is caught before it is archived.
    """
    if kind == "zip":
        try:
            with zipfile.ZipFile(path) as zf:
                bad = zf.testzip()
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise DamagedFile(f"not a valid zip: {exc}") from None
        if bad is not None:
            raise DamagedFile(f"zip member {bad!r} is corrupt")
        return 0, 0, "ZIP", ""
    try:
        with Image.open(path) as im:
            width, height, fmt, mode = im.width, im.height, im.format or "", im.mode
            if fmt == "JPEG":
                im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
            im.load()
            if getattr(im, "n_frames", 1) > 1:
                for frame in range(1, im.n_frames):
                    im.seek(frame)
                    im.load()
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DamagedFile(f"image does not decode: {exc}") from None
    return width, height, fmt, mode


def write_json(path: Path, data: Any) -> None:
    """Write a local JSON file so that readers see the old one or the new one."""
    write_atomic(path, dumps(data))


def dumps(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False) + "\n").encode()


def artwork_key(artwork_id: int, path: str = "") -> str:
    return f"artworks/{artwork_id}/{path}" if path else f"artworks/{artwork_id}"


def artwork_ids(store: Store) -> Iterator[int]:
    """Ids of complete artwork folders (those holding a record)."""
    if isinstance(store, LocalStore):  # a folder: one scandir, not a walk of every file
        base = store.root / "artworks"
        if base.is_dir():
            with os.scandir(base) as entries:
                for entry in entries:
                    if entry.name.isdigit() and os.path.isfile(os.path.join(entry.path, RECORD)):
                        yield int(entry.name)
        return
    for key in store.keys("artworks"):
        parts = key.split("/")
        if len(parts) == 3 and parts[2] == RECORD and parts[1].isdigit():
            yield int(parts[1])


class Archive:
    """The archive's keys in its store, plus the local state beside them.

    ``private`` (``.pbe`` under ``filesystem_options.path``) is never shared
    whatever the store: the index, the sync lock, and works being assembled.
    """

    def __init__(self, store: Store, private: Path) -> None:
        self.store = store
        self.private = private
        self.incoming = private / "incoming"
        self.trash = private / "trash"
        self.index_path = private / "index.sqlite3"

    @classmethod
    def open(cls, config: Config, kind: str | None = None) -> Archive:
        return cls(open_store(config, kind), config.archive_path / ".pbe")

    @property
    def root(self) -> Path:
        """The local folder holding the archive (local) or its state (s3)."""
        return self.private.parent

    def describe(self) -> str:
        return self.store.describe()

    def ensure(self) -> None:
        folders = [self.incoming, self.trash]
        if self.store.kind == "local":
            folders += [self.root / "artworks", self.root / "lost", self.root / "deleted"]
        for folder in folders:
            folder.mkdir(parents=True, exist_ok=True)

    # -- artworks -----------------------------------------------------------
    def incoming_dir(self, artwork_id: int) -> Path:
        return self.incoming / str(artwork_id)

    def has_artwork(self, artwork_id: int) -> bool:
        return self.store.exists(artwork_key(artwork_id, RECORD))

    def read_artwork(self, artwork_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(record, raw) of an archived work."""
        return (json.loads(self.store.read_bytes(artwork_key(artwork_id, RECORD))),
                json.loads(self.store.read_bytes(artwork_key(artwork_id, RAW))))

    def artwork_ids(self) -> Iterator[int]:
        return artwork_ids(self.store)

    def update_record(self, artwork_id: int, record: dict[str, Any]) -> None:
        self.store.write_bytes(artwork_key(artwork_id, RECORD), dumps(record))

    def publish(self, artwork_id: int) -> None:
        """Put a complete incoming folder in place; its record goes last."""
        self.store.publish(self.incoming_dir(artwork_id), artwork_key(artwork_id), last=(RAW, RECORD))

    def put_file(self, artwork_id: int, src: Path, f: StoredFile) -> None:
        """Put one checked file into an archived work (repairs)."""
        self.store.put_file(artwork_key(artwork_id, f.path), src, f.size, f.sha256)

    def remove_artwork(self, artwork_id: int) -> None:
        self.store.delete_tree(artwork_key(artwork_id))

    def file_problem(self, artwork_id: int, f: dict[str, Any], *, deep: bool = True) -> str | None:
        """What is wrong with an archived file, or None. ``deep`` reads it all
        and compares its SHA-256; otherwise size (and, where the store keeps
        it, the recorded SHA-256) decide."""
        key = artwork_key(artwork_id, f["path"])
        found = self.store.stat(key)
        if found is None:
            return "missing"
        size, sha = found
        if size != f["size"]:
            return f"size {size}, expected {f['size']}"
        if sha and sha != f["sha256"]:
            return "SHA-256 differs"
        if deep and self.store.sha256(key) != f["sha256"]:
            return "SHA-256 differs"
        return None

    def discard(self, path: Path) -> None:
        """Remove a local folder (works in progress) out of sight first."""
        discard(path, self.trash)

    def empty_trash(self) -> None:
        if self.trash.is_dir():
            for entry in self.trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    # -- side records --------------------------------------------------------
    def write_side(self, kind: str, artwork_id: int, data: dict[str, Any]) -> None:
        self.store.write_bytes(f"{kind}/{artwork_id}.json", dumps(data))

    def read_side(self, kind: str, artwork_id: int) -> dict[str, Any]:
        try:
            return json.loads(self.store.read_bytes(f"{kind}/{artwork_id}.json"))
        except FileNotFoundError:
            return {}

    def remove_side(self, kind: str, artwork_id: int) -> None:
        self.store.delete(f"{kind}/{artwork_id}.json")

    def side_records(self, kind: str) -> Iterator[dict[str, Any]]:
        for key in self.store.keys(kind):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit() and key.count("/") == 1:
                yield json.loads(self.store.read_bytes(key))

    # -- locking -------------------------------------------------------------
    def lock(self) -> ArchiveLock:
        self.private.mkdir(parents=True, exist_ok=True)
        return ArchiveLock(self.private / "sync.lock")


class ArchiveLock:
    """One writer at a time: sync, reindex and delete take this flock.

    The kernel drops a flock when its holder dies, so a kill -9 never
    leaves a stale lock behind.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    HANDED = "PBE_ARCHIVE_LOCK_FD"  # a lock taken for us by the process that started us (see handover)

    def __enter__(self) -> ArchiveLock:
        fd = _handed_lock(self.path) or os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise LockedError(f"the archive is busy: a sync, reindex or delete is running (pid {holder}); try again when it ends") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: object) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None

    def handover(self) -> int:
        """The held descriptor, for one child process to inherit (its number
        in HANDED): a flock belongs to the open file, so the lock lasts as
        long as the child, with no free moment between our check and its
        start. The caller closes its own copy."""
        fd, self._fd = self._fd, None
        assert fd is not None
        return fd


def _handed_lock(path: Path) -> int | None:
    """The inherited descriptor named in HANDED, if it is this lock file."""
    try:
        fd = int(os.environ.pop(ArchiveLock.HANDED, ""))
        return fd if os.path.samestat(os.fstat(fd), os.stat(path)) else None
    except (ValueError, OSError):
        return None
