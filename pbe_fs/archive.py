"""The archive on disk: the truth that outlives pixiv and pbe-fs alike.

Layout under ``filesystem_options.path`` (also in the README)::

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

A folder under ``artworks/`` exists only once it is complete: works are
assembled in ``.pbe/incoming`` and renamed into place in one step, and
``pbe.json`` is the last file written into them.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import os
import shutil
import uuid
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from .errors import LockedError

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


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def move_into(src: Path, dst: Path) -> None:
    """Atomically put a complete file at dst, across file systems too."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        tmp = dst.with_name(f".{dst.name}.{uuid.uuid4().hex}.tmp")
        try:
            with open(src, "rb") as fin, open(tmp, "wb") as fout:
                shutil.copyfileobj(fin, fout, _CHUNK)
                fout.flush()
                os.fsync(fout.fileno())
            os.replace(tmp, dst)
        finally:
            tmp.unlink(missing_ok=True)
        src.unlink(missing_ok=True)


def write_json(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=1, sort_keys=False)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_json(path: Path) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


class Archive:
    """Paths and atomic operations over one archive folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.artworks = root / "artworks"
        self.lost = root / "lost"
        self.deleted = root / "deleted"
        self.private = root / ".pbe"
        self.incoming = self.private / "incoming"
        self.trash = self.private / "trash"
        self.index_path = self.private / "index.sqlite3"

    def ensure(self) -> None:
        for folder in (self.artworks, self.lost, self.deleted, self.incoming, self.trash):
            folder.mkdir(parents=True, exist_ok=True)

    # -- artworks -----------------------------------------------------------
    def artwork_dir(self, artwork_id: int) -> Path:
        return self.artworks / str(artwork_id)

    def incoming_dir(self, artwork_id: int) -> Path:
        return self.incoming / str(artwork_id)

    def has_artwork(self, artwork_id: int) -> bool:
        return (self.artwork_dir(artwork_id) / RECORD).is_file()

    def read_artwork(self, artwork_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """(record, raw) of an archived work."""
        folder = self.artwork_dir(artwork_id)
        return read_json(folder / RECORD), read_json(folder / RAW)

    def artwork_ids(self) -> Iterator[int]:
        """Ids of complete artwork folders (those holding a record)."""
        if not self.artworks.is_dir():
            return
        with os.scandir(self.artworks) as entries:
            for entry in entries:
                if entry.name.isdigit() and os.path.isfile(os.path.join(entry.path, RECORD)):
                    yield int(entry.name)

    def write_record(self, folder: Path, record: dict[str, Any]) -> None:
        write_json(folder / RECORD, record)

    def publish(self, artwork_id: int) -> None:
        """Rename a complete incoming folder into artworks/ in one step."""
        src, dst = self.incoming_dir(artwork_id), self.artwork_dir(artwork_id)
        if dst.exists():
            self.discard(dst)
        os.rename(src, dst)
        fsync_dir(self.artworks)

    def discard(self, path: Path) -> None:
        """Remove a folder without ever showing it half-deleted."""
        if not path.exists():
            return
        self.trash.mkdir(parents=True, exist_ok=True)
        target = self.trash / f"{path.name}.{uuid.uuid4().hex}"
        os.rename(path, target)
        shutil.rmtree(target, ignore_errors=True)

    def empty_trash(self) -> None:
        if self.trash.is_dir():
            for entry in self.trash.iterdir():
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)

    # -- side records --------------------------------------------------------
    def write_side(self, kind: str, artwork_id: int, data: dict[str, Any]) -> None:
        write_json(getattr(self, kind) / f"{artwork_id}.json", data)

    def remove_side(self, kind: str, artwork_id: int) -> None:
        (getattr(self, kind) / f"{artwork_id}.json").unlink(missing_ok=True)

    def side_records(self, kind: str) -> Iterator[dict[str, Any]]:
        folder: Path = getattr(self, kind)
        if folder.is_dir():
            for path in sorted(folder.glob("*.json")):
                if path.stem.isdigit():
                    yield read_json(path)

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

    def __enter__(self) -> ArchiveLock:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
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
