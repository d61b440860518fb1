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
    ledger/<time>-<pid>.jsonl         append-only log of numbers, dates, gone events
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
import logging
import os
import re
import shutil
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from .errors import LockedError, NewerFormat, RecordError
from .jsontext import dumps
from .storage import Store, open_store
from .storage.local import LocalStore, discard, move_into, write_atomic

if TYPE_CHECKING:
    from .config import Config

__all__ = ["Archive", "ArchiveLock", "StoredFile", "Digest", "DamagedFile", "digest_file", "probe", "write_json",
           "move_into", "artwork_key", "artwork_ids"]

RECORD = "pbe.json"
RAW = "pixiv.json"
# 2: records may list "versions" (earlier pixiv.json as pixiv.<date>.json) and
# "replaced" (images the artist replaced, kept under dated names). A format-1
# record is a valid format-2 record, so no upgrade step is needed.
RECORD_FORMAT = 2
# What a record must hold, with the type each field must have, to be trusted.
_RECORD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "id": int, "seq": int, "restrict": str, "archived_at": str, "files": list, "history": list}
_FILE_FIELDS: dict[str, type | tuple[type, ...]] = {
    "path": str, "role": str, "page": int, "size": int, "crc32": int, "sha256": str, "width": int, "height": int,
    "format": str}
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
        # Its fields are plain values: no need for asdict's deep copy, which
        # cost an import more than the rest of the record.
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

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




def artwork_key(artwork_id: int, path: str = "") -> str:
    return f"artworks/{artwork_id}/{path}" if path else f"artworks/{artwork_id}"


def check_record(artwork_id: int, record: Any) -> dict[str, Any]:
    """``record`` if it is a whole, current pbe.json of ``artwork_id``;
    otherwise RecordError saying what is wrong (NewerFormat for a record a
    newer pbe-fs wrote, which this one must not misread)."""
    where = artwork_key(artwork_id, RECORD)
    if not isinstance(record, dict):
        raise RecordError(f"{where}: not a JSON object")
    if isinstance(record.get("format"), int) and record["format"] > RECORD_FORMAT:
        raise NewerFormat(f"{where} is record format {record['format']}; this pbe-fs reads up to "
                          f"{RECORD_FORMAT}: upgrade pbe-fs")
    for name, kind in _RECORD_FIELDS.items():
        if not isinstance(record.get(name), kind) or isinstance(record.get(name), bool):
            raise RecordError(f"{where}: field {name!r} missing or not a {getattr(kind, '__name__', kind)}")
    if record["id"] != artwork_id:
        raise RecordError(f"{where}: holds the record of {record['id']}")
    for f in record["files"]:
        if not isinstance(f, dict) or any(not isinstance(f.get(k), t) for k, t in _FILE_FIELDS.items()):
            raise RecordError(f"{where}: a file entry is incomplete")
        if f["path"].startswith("/") or ".." in f["path"].split("/"):
            raise RecordError(f"{where}: file path {f['path']!r} leaves the work's folder")
    if any(not isinstance(h, dict) or not isinstance(h.get("at"), str) or not isinstance(h.get("event"), str)
           for h in record["history"]):
        raise RecordError(f"{where}: a history entry is incomplete")
    for name in record.get("versions") or []:
        if not isinstance(name, str) or not _is_version(name) or "/" in name:
            raise RecordError(f"{where}: version {name!r} is not a pixiv.<date>.json")
    for f in record.get("replaced") or []:
        if not isinstance(f, dict) or not isinstance(f.get("path"), str) or ".." in f["path"].split("/"):
            raise RecordError(f"{where}: a replaced file entry is incomplete")
    return record


def _is_version(path: str) -> bool:
    return path.startswith("pixiv.") and path.endswith(".json")


_DATED = re.compile(r"\.\d{4}-\d{2}-\d{2}\.[^./]+$")


def _is_kept(path: str) -> bool:
    """An earlier pixiv.json, an image the artist replaced (dated names), or
    the metadata an import found in its source (import.<source>.json)."""
    return _is_version(path) or bool(_DATED.search(path)) or (path.startswith("import.") and path.endswith(".json"))


def _load_json(store: Store, key: str) -> Any:
    try:
        return json.loads(store.read_bytes(key))
    except FileNotFoundError:
        raise RecordError(f"{key}: missing") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise RecordError(f"{key}: not valid JSON ({type(exc).__name__})") from None


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
        """(record, raw) of an archived work; RecordError when either cannot
        be trusted as it is (see ``recovery.salvage`` for what then)."""
        record = check_record(artwork_id, _load_json(self.store, artwork_key(artwork_id, RECORD)))
        return record, self.read_raw(artwork_id)

    def read_raw(self, artwork_id: int) -> dict[str, Any]:
        raw = _load_json(self.store, artwork_key(artwork_id, RAW))
        if not isinstance(raw, dict):
            raise RecordError(f"{artwork_key(artwork_id, RAW)}: not a JSON object")
        return raw

    def write_raw(self, artwork_id: int, raw: dict[str, Any]) -> None:
        self.store.write_bytes(artwork_key(artwork_id, RAW), dumps(raw))

    def keep_raw_version(self, artwork_id: int, at: str) -> str:
        """Keep the current pixiv.json as pixiv.<date>.json; return that name."""
        name = f"pixiv.{at[:10]}.json"
        if self.store.exists(artwork_key(artwork_id, name)):
            name = f"pixiv.{at[:19].replace(':', '')}.json"
        self.store.write_bytes(artwork_key(artwork_id, name), self.store.read_bytes(artwork_key(artwork_id, RAW)))
        return name

    def copy_file(self, artwork_id: int, path: str, new_path: str) -> str:
        """Copy one archived file to another name in its work; return that name."""
        src, dst = artwork_key(artwork_id, path), artwork_key(artwork_id, new_path)
        if isinstance(self.store, LocalStore):
            tmp = self.store.path(dst).with_name(f".{Path(dst).name}.copy")
            shutil.copyfile(self.store.path(src), tmp)
            os.replace(tmp, self.store.path(dst))
            return new_path
        with self.local_copy(src) as (tmp, _):
            digest = digest_file(tmp)
            self.store.put_file(dst, tmp, digest.size, digest.sha256)
        return new_path

    @contextmanager
    def local_copy(self, key: str) -> Iterator[tuple[Path, float]]:
        """The file behind ``key`` on local disk, with its modification time:
        a folder's own file, or a bucket's fetched to a temporary file
        (removed afterwards, so a consumer may move it away)."""
        if isinstance(self.store, LocalStore):
            path = self.store.path(key)
            yield path, path.stat().st_mtime
            return
        self.incoming.mkdir(parents=True, exist_ok=True)
        tmp = self.incoming / f".copy-{os.getpid()}-{threading.get_ident()}"
        try:
            self.store.get_file(key, tmp)
            yield tmp, time.time()
        finally:
            tmp.unlink(missing_ok=True)

    def work_folders(self) -> Iterator[int]:
        """Ids of every artwork folder that holds any file, record or not:
        a work whose record was lost is still a work while its files exist."""
        if isinstance(self.store, LocalStore):
            base = self.store.root / "artworks"
            if base.is_dir():
                with os.scandir(base) as entries:
                    for entry in entries:
                        if entry.name.isdigit() and entry.is_dir(follow_symlinks=False) and any(os.scandir(entry.path)):
                            yield int(entry.name)
            return
        last = None
        for key in self.store.keys("artworks"):
            part = key.split("/")[1] if key.count("/") >= 2 else ""
            if part.isdigit() and part != last:
                last = part
                yield int(part)

    def file_keys(self, artwork_id: int) -> list[str]:
        """Paths (relative to the work's folder) of its files other than the
        record and the raw JSON."""
        prefix = artwork_key(artwork_id) + "/"
        return [k[len(prefix):] for k in self.store.keys(artwork_key(artwork_id))
                if k.startswith(prefix) and k[len(prefix):] not in (RECORD, RAW) and not _is_kept(k[len(prefix):])]

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

    def side_records(self, kind: str, problems: list[str] | None = None) -> Iterator[dict[str, Any]]:
        """Every ``lost/`` or ``deleted/`` record; one that cannot be read is
        skipped and named in ``problems``, never a crash."""
        for key in self.store.keys(kind):
            name = key.rsplit("/", 1)[-1]
            if name.endswith(".json") and name[:-5].isdigit() and key.count("/") == 1:
                try:
                    data = _load_json(self.store, key)
                    if not isinstance(data, dict) or data.get("id") != int(name[:-5]):
                        raise RecordError(f"{key}: not a {kind} record")
                    if kind == "deleted" and not isinstance(data.get("seq"), int):
                        raise RecordError(f"{key}: no ingress number")
                except RecordError as exc:
                    if problems is not None:
                        problems.append(str(exc))
                    continue
                yield data

    # -- locking -------------------------------------------------------------
    def lock(self, *, wait: str = "") -> ArchiveLock:
        """The archive's writer lock. ``wait``: block until it is free, after
        one log line saying what we wait to do; otherwise fail at once."""
        self.private.mkdir(parents=True, exist_ok=True)
        if self.store.kind == "s3" and not getattr(self.store, "follow", False):
            from .follow import WriterLock  # a bucket's writer also holds its lease and publishes
            return WriterLock(self, self.private / "sync.lock", wait=wait)
        return ArchiveLock(self.private / "sync.lock", wait=wait)


class ArchiveLock:
    """One writer at a time: sync, reindex and delete take this flock.

    The kernel drops a flock when its holder dies, so a kill -9 never
    leaves a stale lock behind.
    """

    def __init__(self, path: Path, *, wait: str = "") -> None:
        self.path = path
        self.wait = wait
        self._fd: int | None = None

    HANDED = "PBE_ARCHIVE_LOCK_FD"  # a lock taken for us by the process that started us (see handover)

    def holder(self) -> int | None:
        """The pid holding the lock now, or None when it is free."""
        try:
            fd = os.open(self.path, os.O_RDWR)
        except FileNotFoundError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            text = os.read(fd, 64).decode(errors="replace").strip()
            return int(text) if text.isdigit() else -1
        finally:
            os.close(fd)
        return None

    def __enter__(self) -> ArchiveLock:
        fd = _handed_lock(self.path) or os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            if not self.wait:
                os.close(fd)
                raise LockedError(f"the archive is busy: a sync, reindex or delete is running (pid {holder}); "
                                  "try again when it ends") from None
            logging.getLogger("pbe_fs").warning("waiting for pid %s, which holds the archive, to %s", holder, self.wait)
            fcntl.flock(fd, fcntl.LOCK_EX)
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
