"""The archive as a plain folder: renames are atomic, reads are preads."""

from __future__ import annotations

import errno
import hashlib
import io
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


def open_inside(root: str, path: Path | str) -> int:
    """A read-only descriptor of ``path``, refused (ELOOP/EACCES) when it is
    a symlink or when any folder on the way leads out of ``root`` (the
    real path of the archive).

    The archive is served to anyone the WebDAV server lets in: a recorded
    image replaced by a link to /etc/services must not serve that file,
    whole or inside a zip. O_NOFOLLOW refuses a link in the last component;
    the kernel's own idea of the opened file (/proc/self/fd) catches links
    in the folders above it, at the cost of one readlink.
    """
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    try:
        real = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        real = os.path.realpath(path)
    if not real.startswith(root):
        os.close(fd)
        raise OSError(errno.EACCES, f"{path} leads out of the archive")
    return fd


class LocalHandle:
    def __init__(self, path: Path, root: str | None = None) -> None:
        """``root``: the archive's real path, for a file of the archive;
        None for our own files (the cache of generated ones)."""
        self.path = path
        self.fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC) if root is None else open_inside(root, path)
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
        self._prefix = str(root) + "/"  # keys are joined to it as strings on the hot paths (pathlib: ~4 µs)
        self.trash = root / ".pbe" / "trash"
        self._real = os.path.realpath(root).rstrip("/") + "/"  # reads never leave this

    def _read(self, key: str) -> io.FileIO:
        return io.FileIO(open_inside(self._real, self._prefix + key), "rb")

    def check(self) -> None:
        pass

    def describe(self) -> str:
        return str(self.root)

    def path(self, key: str) -> Path:
        return self.root / key

    def read_bytes(self, key: str) -> bytes:
        with self._read(key) as fh:
            return fh.readall()

    def at_hand(self, key: str) -> bool:
        """Whether reading key's first page would not wait on the disk (it
        is in the page cache: preadv2 with RWF_NOWAIT). Opening the file may
        still read its inode, and a miss starts reading the file in (the
        kernel reads ahead without waiting), so whoever reads it next waits
        less. False for a file that is not there."""
        try:
            fd = os.open(self._prefix + key, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except OSError:
            return False
        try:
            return os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT) == 1
        except OSError:  # EAGAIN: not cached; EOPNOTSUPP: a file system that cannot tell
            return False
        finally:
            os.close(fd)

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

    def publish(self, src: Path, prefix: str, last: tuple[str, ...] = (), durable: bool = True) -> None:
        """Rename a complete folder into place in one step. ``durable=False``:
        the caller flushes the parent folder once for many (a batch)."""
        dst = self.path(prefix)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if dst.exists():
            self.delete_tree(prefix)
        os.rename(src, dst)
        if durable:
            fsync_dir(dst.parent)

    def open(self, key: str, size: int, version: str = "") -> LocalHandle:
        return LocalHandle(self.path(key), self._real)

    def sha256(self, key: str) -> str:
        digest = hashlib.sha256()
        with self._read(key) as fh:
            while chunk := fh.read(_CHUNK):
                digest.update(chunk)
        return digest.hexdigest()

    def get_file(self, key: str, dest: Path) -> None:
        with self._read(key) as fin, open(dest, "wb") as fout:
            shutil.copyfileobj(fin, fout, _CHUNK)

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
