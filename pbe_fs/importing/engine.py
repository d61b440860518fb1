"""The import engine: check, number and commit what a source holds.

For each work a source yields, in the source's order:

1. **Place** its files in ``.pbe/incoming/<id>`` (a copy, a hard link, or a
   download from the old app's server), and check each as a sync checks a
   download: it decodes (zips open), its size, CRC-32 and SHA-256 are
   recorded. A damaged file is kept and marked (``damaged`` in its file
   entry): it may be the only copy, and the next ``sync --full`` fetches a
   fresh one while pixiv still has the work. Placing runs in a few worker processes;
   commits stay in order on the caller's.
2. **Commit** it through the sync's own commit path (``commit.commit_work``)
   with the next ingress number, a history starting with ``imported``, and
   the source's own metadata beside ``pixiv.json`` when it had to be
   converted. Only then, with ``--move``, are its source files removed.

Works already archived are skipped, or completed with the files they lack.
The archive lock is held throughout; a kill at any moment leaves nothing
half-visible, and the same command again finishes the job (a work published
but not yet indexed is adopted from its record).
"""

from __future__ import annotations

import errno
import logging
import os
import multiprocessing
import shutil
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..archive import (RECORD_FORMAT, Archive, DamagedFile, Digest, StoredFile, artwork_ids, digest_file, dumps,
                       probe)
from ..commit import commit_works, index_work
from ..config import Config
from ..errors import PbeError, RecordError, disk_full
from ..index import Index
from ..ledger import Ledger
from ..progress import Progress
from ..recovery import open_index
from ..storage.local import discard
from ..sync import now
from .found import FoundFile, FoundWork
from .mark import walk_mark

log = logging.getLogger("pbe_fs.import")

MODES = ("copy", "link", "move")
# Works committed together (one flush to disk, one index transaction): a
# batch is shown at most this many works or seconds after its first is ready.
BATCH, BATCH_SECONDS = 200, 1.0


@dataclass
class ImportResult:
    found: int = 0
    imported: int = 0
    skipped: int = 0  # already archived (nothing to add), or kept out
    completed: int = 0  # already archived, given files it lacked
    kept_out: int = 0
    damaged: int = 0  # files that do not decode
    partial: int = 0  # works whose record is incomplete
    files: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        line = (f"{self.imported} imported, {self.skipped} skipped, {self.damaged} damaged, {self.partial} partial"
                f" ({self.files} files, {self.bytes} bytes)")
        if self.completed:
            line += f"; {self.completed} archived works completed"
        if self.kept_out:
            line += f"; {self.kept_out} kept out (--include-kept-out imports them)"
        if self.failed:
            line += f"; {len(self.failed)} failed"
        return line


@dataclass
class _PlaceJob:
    """What a placing process needs to know about one work (picklable)."""

    id: int
    folder: Path
    trash: Path
    files: list[FoundFile]
    have: set[str]  # paths the archived work already has (a completion)
    link: bool  # hard-link first (--link, --move)


@dataclass
class _Placed:
    """A work's files, placed and checked in its incoming folder."""

    id: int
    folder: Path
    stored: list[StoredFile] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)  # what --move removes once committed
    warnings: list[str] = field(default_factory=list)  # damaged files: logged by the parent
    copied: str = ""  # why hard links could not be made, when they could not
    error: str = ""


class Importer:
    """One import run of one source into the configured archive."""

    def __init__(self, config: Config, source: str, root: Path, works: Callable[[], Iterator[FoundWork]], *,
                 mode: str = "copy", include_kept_out: bool = False, progress: Progress | None = None,
                 workers: int = 0) -> None:
        self.config = config
        self.source = source  # old-app | gallery-dl
        self.root = root
        self.works = works
        self.mode = mode
        self.include_kept_out = include_kept_out
        self.archive = Archive.open(config)
        self.progress = progress or Progress(enabled=False, desc="import")
        self.result = ImportResult()
        self.workers = workers or min(4, os.cpu_count() or 1)
        self.index: Index | None = None
        self._cross_device = False
        self._batch: list[tuple[FoundWork, _Placed, dict[str, Any]]] = []
        self._batch_started = 0.0
        self._archived: set[int] = set()
        self._tombstones: dict[int, dict[str, Any]] = {}
        self._seq: int | None = None  # the next ingress number, read once the last killed run's works are adopted

    # -- what would happen ------------------------------------------------------------
    def plan(self) -> dict[str, list[int]]:
        """Which works would be imported, completed or skipped: reads, never writes."""
        plan: dict[str, list[int]] = {"import": [], "complete": [], "skip": [], "kept out": []}
        self._know_archive()
        for work in self.works():
            plan[self._classify(work)[0]].append(work.id)
        return plan

    def _know_archive(self) -> None:
        """What the archive holds, read once rather than asked per work."""
        self._archived = set(artwork_ids(self.archive.store))
        self._tombstones = {int(t["id"]): t for t in self.archive.side_records("deleted")}

    def _classify(self, work: FoundWork) -> tuple[str, dict[str, Any] | None]:
        """("import" | "complete" | "skip" | "kept out", the work's record or tombstone)."""
        if work.id in self._archived:
            try:
                record, _ = self.archive.read_artwork(work.id)
            except RecordError:
                return "skip", None  # its own problem, for doctor; never overwritten by an import
            have = {f["path"] for f in record["files"]}
            return ("complete" if any(f.path not in have for f in work.files) else "skip"), record
        tombstone = self._tombstones.get(work.id) or {}
        if tombstone.get("keep_out") and not self.include_kept_out:
            return "kept out", tombstone
        return "import", tombstone or None

    # -- the run ---------------------------------------------------------------------
    def run(self) -> ImportResult:
        self.archive.store.check()
        self.archive.ensure()
        with self.archive.lock(wait="import a collection"):
            self.index = open_index(self.archive, locked=True)
            ledger = Ledger(self.archive.store)
            try:
                self._run(ledger)
            except BrokenProcessPool:
                raise PbeError("a worker process of the import died (out of memory?): nothing half-imported is "
                               "visible; run the same command again") from None
            except OSError as exc:
                full = disk_full(exc, self.archive.root)
                if full is None:
                    raise
                raise full from None
            finally:
                ledger.close()
                self.progress.close()
                self.index.close()
                self.archive.empty_trash()
        return self.result

    def _run(self, ledger: Ledger) -> None:
        works = sorted(self.works(), key=lambda w: w.order)
        self.result.found = len(works)
        self.progress.add_works(len(works))
        todo: list[tuple[FoundWork, str, dict[str, Any] | None]] = []
        self._know_archive()
        assert self.index is not None
        indexed = self.index.archived_ids()
        for work in works:
            if work.id in self._archived and work.id not in indexed:
                self._adopt(work.id)
            kind, known = self._classify(work)
            if kind in ("skip", "kept out"):
                self.result.skipped += 1
                self.result.kept_out += kind == "kept out"
                self.progress.work_done()
                continue
            todo.append((work, kind, known))
        if not todo:
            return
        # From the first commit on, the next sync must look at every bookmark.
        walk_mark(self.archive).touch()
        link = self.mode in ("link", "move")
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                 initializer=_follow_importer, initargs=(os.getpid(),)) as pool:
            window: deque[tuple[Future[_Placed], FoundWork, str, dict[str, Any] | None]] = deque()
            pending = iter(todo)
            while True:
                while len(window) < self.workers * 4:
                    item = next(pending, None)
                    if item is None:
                        break
                    work, kind, known = item
                    have = {f["path"] for f in known["files"]} if kind == "complete" and known else set()
                    job = _PlaceJob(work.id, self.archive.incoming_dir(work.id), self.archive.trash, work.files, have,
                                    link and not self._cross_device)
                    window.append((pool.submit(_place, job), work, kind, known))
                if not window:
                    break
                future, work, kind, known = window.popleft()
                placed = future.result()
                for warning in placed.warnings:
                    log.warning("%s", warning)
                if placed.copied and not self._cross_device:
                    self._cross_device = True
                    log.warning("%s and the archive cannot share files (%s): copying instead", self.root, placed.copied)
                for stored in placed.stored:  # counted here: one place counts, whatever the workers
                    self.result.files += 1
                    self.result.bytes += stored.size
                    self.progress.file_done(stored.size)
                if placed.error:
                    self.result.failed.append(f"{work.id}: {placed.error}")
                    log.error("%d: %s", work.id, placed.error)
                    self.archive.discard(placed.folder)
                elif kind == "complete":
                    self._complete(work, placed, ledger)
                    if self.mode == "move":
                        _remove_sources(placed.sources)
                else:
                    self._commit(work, placed, known)
                if len(self._batch) >= BATCH or (self._batch and time.monotonic() - self._batch_started > BATCH_SECONDS):
                    self._flush(ledger)
                self.progress.work_done()
            self._flush(ledger)

    def _adopt(self, aid: int) -> None:
        """A work a killed import published but did not index: index it from
        its record, so it keeps the number it was given."""
        assert self.index is not None
        try:
            record, raw = self.archive.read_artwork(aid)
        except RecordError:
            return
        index_work(self.index, record, raw)
        log.info("%d was in the archive but not in the index: indexed it from its record", aid)

    # -- step 2: commit (in order) -------------------------------------------------------
    def _commit(self, work: FoundWork, placed: _Placed, tombstone: dict[str, Any] | None) -> None:
        """Make the work's record; the batch it joins is committed soon."""
        at = now()
        if not placed.stored:
            self.result.failed.append(f"{work.id}: no file of it found")
            log.error("%d: none of its files is in %s: not imported", work.id, self.root)
            self.archive.discard(placed.folder)
            return
        files = [f.to_json() for f in placed.stored]
        damaged = [f["path"] for f in files if f.get("damaged")]
        partial = list(work.partial)
        if any(f.role == "imported_media" for f in placed.stored):
            partial.append("animation imported as converted media, without its frames")
        history = list((tombstone or {}).get("history") or [])
        history.append({"at": at, "event": "imported", "source": self.source, "from": str(self.root)})
        record: dict[str, Any] = {
            "format": RECORD_FORMAT, "id": work.id,
            "seq": tombstone["seq"] if tombstone and isinstance(tombstone.get("seq"), int) else self._next_seq(),
            "restrict": work.restrict, "bookmarked": work.bookmarked, "archived_at": at, "gone": None,
            "ugoira": work.ugoira, "files": sorted(files, key=lambda f: f["path"]), "history": history,
        }
        if partial:
            record["partial"] = partial
        if work.original is not None:
            (placed.folder / f"import.{self.source}.json").write_bytes(dumps(work.original))
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append((work, placed, record))
        self.result.damaged += len(damaged)
        self.result.partial += bool(partial)

    def _flush(self, ledger: Ledger) -> None:
        """Commit the batch through the sync's commit path; then, with
        --move, remove what the source held of it."""
        if not self._batch:
            return
        assert self.index is not None
        commit_works(self.archive, self.index, ledger, [(p.folder, r, w.raw) for w, p, r in self._batch])
        for work, placed, record in self._batch:
            log.debug("imported %d as %d (%d files)", work.id, record["seq"], len(record["files"]))
            if self.mode == "move":
                _remove_sources(placed.sources)
        self.result.imported += len(self._batch)
        self._batch = []

    def _next_seq(self) -> int:
        """The next ingress number. Not reserved: the commit's index write
        moves it on, and a kill before that leaves it for the next run."""
        assert self.index is not None
        if self._seq is None:
            self._seq = int(self.index.db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
        self._seq += 1
        return self._seq - 1

    def _complete(self, work: FoundWork, placed: _Placed, ledger: Ledger) -> None:
        """Add to an archived work the files the import has and it lacks."""
        aid = work.id
        try:
            record, raw = self.archive.read_artwork(aid)
        except RecordError as exc:  # changed under us: left for doctor, never guessed over
            placed.stored = []
            log.error("%s: not completed", exc)
        if not placed.stored:
            self.result.skipped += 1
            self.archive.discard(placed.folder)
            return
        for stored in placed.stored:
            self.archive.put_file(aid, placed.folder / stored.path, stored)
        self.archive.discard(placed.folder)
        by_path = {f["path"]: f for f in record["files"]}
        by_path.update({f.path: f.to_json() for f in placed.stored})
        record["files"] = [by_path[p] for p in sorted(by_path)]
        record["history"].append({"at": now(), "event": "imported", "source": self.source, "from": str(self.root),
                                  "files": sorted(f.path for f in placed.stored)})
        self.archive.update_record(aid, record)
        assert self.index is not None
        index_work(self.index, record, raw)
        self.result.completed += 1
        log.info("%d was archived already: added %d files from %s", aid, len(placed.stored), self.root)


class _Damaged(StoredFile):
    """A file that does not decode, recorded as found with why."""

    def __init__(self, found: StoredFile, why: str) -> None:
        super().__init__(**found.__dict__)
        self.damaged = why

    def to_json(self) -> dict[str, Any]:
        return {**super().to_json(), "damaged": self.damaged}


# -- step 1: place and check (worker processes) ---------------------------------------
# Processes, not threads: linking, hashing and decoding thousands of small
# files from several threads spends more time handing the GIL around than
# doing the work.
def _follow_importer(importer: int) -> None:
    """Ends a worker once the import that started it is gone. After a
    kill -9 of the import a worker would wait forever on its job queue (it
    holds that pipe's other end itself), and keep the forkserver alive too."""
    def watch() -> None:
        while True:
            time.sleep(0.5)
            try:
                os.kill(importer, 0)
            except ProcessLookupError:
                os._exit(1)
    threading.Thread(target=watch, name="importer-watch", daemon=True).start()


def _place(job: _PlaceJob) -> _Placed:
    placed = _Placed(job.id, job.folder)
    try:
        discard(job.folder, job.trash)  # what a killed run left: placed again, never trusted
        job.folder.mkdir(parents=True)
        for sub in sorted({f.path.rpartition("/")[0] for f in job.files} - {""}):
            (job.folder / sub).mkdir(parents=True, exist_ok=True)
        for found in job.files:
            if found.path in job.have:
                continue
            stored = _place_file(job, placed, found, job.folder / found.path)
            if stored is None or (job.have and isinstance(stored, _Damaged)):
                continue  # a damaged file never replaces nothing in an archived work: pixiv may have it
            placed.stored.append(stored)
            placed.sources.append(found.source)
    except OSError as exc:
        full = disk_full(exc, job.folder)
        if full is not None:
            raise full from None
        placed.error = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    except PbeError as exc:
        placed.error = str(exc)
    return placed


def _place_file(job: _PlaceJob, placed: _Placed, found: FoundFile, dest: Path) -> StoredFile | None:
    """Put one source file at ``dest`` and check it; None when the source
    turns out not to have it (the old app's server answers 404)."""
    if found.source.startswith(("http://", "https://")):
        if not _download(found.source, dest):
            return None
    elif job.link and not placed.copied:
        try:
            os.link(found.source, dest)
        except OSError as exc:
            if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK):
                raise
            placed.copied = exc.strerror or str(exc)
            shutil.copyfile(found.source, dest)
    else:
        shutil.copyfile(found.source, dest)
    digest = digest_file(dest)
    if found.kind == "media":
        return _stored(found, digest, (0, 0, Path(found.path).suffix.lstrip(".").upper(), ""))
    try:
        return _stored(found, digest, probe(dest, found.kind))
    except DamagedFile as exc:
        placed.warnings.append(f"{job.id}: {found.source} is damaged ({exc}); kept, and marked so")
        return _Damaged(_stored(found, digest, (0, 0, "", "")), str(exc))


def _stored(found: FoundFile, digest: Digest, image: tuple[int, int, str, str]) -> StoredFile:
    return StoredFile(found.path, found.role, found.page, digest.size, digest.crc32, digest.sha256, *image, url=found.url)


def _download(url: str, dest: Path) -> bool:
    """GET one file of the old app's server; False when it has none (404)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as answer, open(dest, "wb") as out:
            shutil.copyfileobj(answer, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        dest.unlink(missing_ok=True)
        if exc.code == 404:
            return False
        raise PbeError(f"{url}: HTTP {exc.code}") from None
    except (urllib.error.URLError, TimeoutError) as exc:
        dest.unlink(missing_ok=True)
        raise PbeError(f"{url}: {getattr(exc, 'reason', exc)}") from None
    return True


def _remove_sources(sources: list[str]) -> None:
    for source in sources:
        if not source.startswith(("http://", "https://")):
            Path(source).unlink(missing_ok=True)
