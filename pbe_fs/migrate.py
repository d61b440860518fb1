"""`pbe-fs migrate --to s3|local`: copy the archive to the other store.

Works are copied several at a time, each with its files first and
``pbe.json`` last, so the target never holds a work that looks complete and
is not. Every object
is verified on arrival (S3: Content-MD5, ETag and size; a folder: SHA-256
of the bytes written), and objects already in the target with the same
size and SHA-256 are skipped: a migration that was interrupted resumes
where it stopped. The index describes the same works on both sides and
stays where it is (``filesystem_options.path``/.pbe); when all is copied,
``filesystem`` in config.json is switched to the target.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .archive import RAW, RECORD, Archive, artwork_ids, artwork_key, digest_file
from .config import Config, set_filesystem
from .errors import PbeError, RecordError
from .progress import Progress, human_bytes
from .storage import Store, open_store
from .storage.local import LocalStore

log = logging.getLogger("pbe_fs.migrate")
_PARALLEL = 8


@dataclass
class MigrateResult:
    works: int = 0
    copied: int = 0
    skipped: int = 0
    bytes: int = 0
    removed: int = 0

    def add(self, other: MigrateResult) -> None:
        for name in ("works", "copied", "skipped", "bytes", "removed"):
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def describe(self) -> str:
        return (f"{self.works} works: {self.copied} objects copied ({human_bytes(self.bytes)}), "
                f"{self.skipped} already there" + (f", {self.removed} deleted works removed" if self.removed else ""))


class Migration:
    def __init__(self, config: Config, to: str, progress: Progress | None = None) -> None:
        if to == config.settings.filesystem:
            raise PbeError(f"the archive is already on {to} (config.json says \"filesystem\": \"{to}\")")
        self.config = config
        self.to = to
        self.source = Archive.open(config)
        self.target: Store = open_store(config, to)
        self.temp = config.temp_path
        self.progress = progress or Progress(enabled=False)
        self.result = MigrateResult()

    def run(self) -> MigrateResult:
        self.source.ensure()
        self.temp.mkdir(parents=True, exist_ok=True)
        with self.source.lock():
            ids = sorted(self.source.work_folders())  # a work without a readable record stops us: see _artwork
            self.progress.add_works(len(ids))
            # A bucket costs a round trip per object: several works at once,
            # each still in its own order (files, then pixiv.json, pbe.json).
            pool = ThreadPoolExecutor(_PARALLEL, thread_name_prefix="migrate")
            try:
                for done in pool.map(self._artwork, ids):
                    self.result.add(done)
                    self.progress.file_done(done.bytes)
                    self.progress.work_done()
            finally:  # on a failure, works not started stay for the next run
                pool.shutdown(wait=True, cancel_futures=True)
            for kind in ("lost", "deleted", "ledger"):
                for key in self.source.store.keys(kind):
                    self._json(key, self.source.store.read_bytes(key), self.result)
            self._drop_deleted(set(ids))
            set_filesystem(self.config, self.to)
        self.progress.close()
        return self.result

    def _artwork(self, aid: int) -> MigrateResult:
        """Copy one work (in a worker thread); what was done is returned."""
        done = MigrateResult(works=1)
        try:
            record, _ = self.source.read_artwork(aid)
        except RecordError as exc:
            raise PbeError(f"{exc}: run `pbe-fs doctor --repair` before migrating") from None
        record_bytes = self.source.store.read_bytes(artwork_key(aid, RECORD))
        for f in record["files"] + record.get("replaced", []):  # replaced: what the artist drew before
            self._file(artwork_key(aid, f["path"]), f["size"], f["sha256"], done)
        for name in record.get("versions", []):  # earlier pixiv.json
            self._json(artwork_key(aid, name), self.source.store.read_bytes(artwork_key(aid, name)), done)
        self._json(artwork_key(aid, RAW), self.source.store.read_bytes(artwork_key(aid, RAW)), done)
        self._json(artwork_key(aid, RECORD), record_bytes, done)
        return done

    def _present(self, key: str, size: int, sha256: str) -> bool:
        """Already in the target, whole: by recorded SHA-256 (bucket) or by
        reading it (folder)."""
        found = self.target.stat(key)
        if found is None or found[0] != size:
            return False
        return (found[1] or self.target.sha256(key)) == sha256

    def _file(self, key: str, size: int, sha256: str, done: MigrateResult) -> None:
        if self._present(key, size, sha256):
            done.skipped += 1
            return
        source = self.source.store
        if isinstance(source, LocalStore):
            # a bucket reads the file where it is and checks it against the record
            self.target.put_file(key, source.path(key), size, sha256)
        else:
            tmp = self.temp / f"pbe-migrate-{uuid.uuid4().hex}.part"
            try:
                source.get_file(key, tmp)
                digest = digest_file(tmp)
                if digest.size != size or digest.sha256 != sha256:
                    raise PbeError(f"{source.describe()}{key} does not match its record (size or SHA-256): "
                                   "run `pbe-fs doctor --repair` before migrating")
                self.target.put_file(key, tmp, size, sha256)
            finally:
                tmp.unlink(missing_ok=True)
        done.copied += 1
        done.bytes += size

    def _json(self, key: str, data: bytes, done: MigrateResult) -> None:
        sha = hashlib.sha256(data).hexdigest()
        if self._present(key, len(data), sha):
            done.skipped += 1
            return
        self.target.write_bytes(key, data)
        if not self._present(key, len(data), sha):
            raise PbeError(f"{key}: written to {self.target.describe()} but does not read back the same")
        done.copied += 1
        done.bytes += len(data)

    def _drop_deleted(self, have: set[int]) -> None:
        """Works the target still has from before but that were deleted
        from the archive since (they have a tombstone) go from the target."""
        tombstones = {int(data["id"]) for data in self.source.side_records("deleted")}
        for aid in sorted(set(artwork_ids(self.target)) - have):
            if aid in tombstones:
                self.target.delete_tree(artwork_key(aid))
                self.result.removed += 1


def migrate(config: Config, to: str, progress: Progress | None = None) -> MigrateResult:
    return Migration(config, to, progress).run()
