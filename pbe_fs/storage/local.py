"""The archive as a plain folder: renames are atomic, reads are preads."""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

_CHUNK = 1 << 20
_READAHEAD = 16 << 20


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


def write_atomic(path: Path, data: bytes) -> None:
    """Readers see the old file or the new one, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def discard(path: Path, trash: Path) -> None:
    """Remove a folder without ever showing it half-deleted: one rename
    out of sight, then the slow part."""
    if not path.exists():
        return
    trash.mkdir(parents=True, exist_ok=True)
    target = trash / f"{path.name}.{uuid.uuid4().hex}"
    os.rename(path, target)
    shutil.rmtree(target, ignore_errors=True)


class LocalHandle:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        # Readers stream: start the disk early, so a cold read through
        # FUSE (one request at a time) does not wait for every block.
        os.posix_fadvise(self.fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
        os.posix_fadvise(self.fd, 0, _READAHEAD, os.POSIX_FADV_WILLNEED)

    def pread(self, offset: int, size: int) -> bytes:
        return os.pread(self.fd, size, offset)

    def ready(self, offset: int, size: int) -> bool:
        return True

    def close(self) -> None:
        os.close(self.fd)


class LocalStore:
    kind = "local"
    blocking = False

    def __init__(self, root: Path) -> None:
        self.root = root
        self.trash = root / ".pbe" / "trash"

    def check(self) -> None:
        pass

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def write_bytes(self, key: str, data: bytes) -> None:
        write_atomic(self.path(key), data)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def stat(self, key: str) -> tuple[int, str] | None:
        try:
            return self.path(key).stat().st_size, ""
        except (FileNotFoundError, NotADirectoryError):
            return None

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def delete_tree(self, prefix: str) -> None:
        discard(self.path(prefix), self.trash)

    def keys(self, prefix: str) -> Iterator[str]:
        """Every file under ``prefix`` (temporary files excluded), sorted."""
        base = self.path(prefix)
        if not base.is_dir():
            return
        for folder, dirs, files in os.walk(base):
            dirs.sort()
            rel = Path(folder).relative_to(self.root).as_posix()
            for name in sorted(files):
                if not name.startswith("."):
                    yield f"{rel}/{name}"

    def put_file(self, key: str, src: Path, size: int, sha256: str) -> None:
        """Move ``src`` (already checked by the caller) to ``key``."""
        if src.stat().st_size != size:
            raise OSError(errno.EIO, f"{src} is {src.stat().st_size} bytes, expected {size}")
        move_into(src, self.path(key))

    def publish(self, src: Path, prefix: str, last: tuple[str, ...] = ()) -> None:
        """Rename a complete folder into place in one step."""
        dst = self.path(prefix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            self.delete_tree(prefix)
        os.rename(src, dst)
        fsync_dir(dst.parent)

    def open(self, key: str, size: int, version: str = "") -> LocalHandle:
        return LocalHandle(self.path(key))

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with open(self.path(key), "rb") as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def get_file(self, key: str, dest: Path) -> None:
        shutil.copyfile(self.path(key), dest)

    def url(self, key: str, expires: int) -> str | None:
        return None


class StagingStore(LocalStore):
    """A work still in ``.pbe/incoming/<id>`` seen under its archive keys
    (``artworks/<id>/...``): the sync renders a work's PDFs and animations
    from these local files before uploading it, instead of downloading the
    images again from the bucket."""

    def __init__(self, folder: Path, prefix: str) -> None:
        super().__init__(folder)
        self.prefix = prefix.rstrip("/") + "/"

    def path(self, key: str) -> Path:
        if not key.startswith(self.prefix):
            raise FileNotFoundError(errno.ENOENT, f"{key} is not part of this work")
        return self.root / key[len(self.prefix):]
