"""The import engine: check, number and commit what a source holds.

For each work a source yields, in the source's order:

1. **Place** its files in ``.pbe/incoming/<id>`` (a copy, a hard link, or a
   download from the old app's server), and check each as a sync checks a
   download: it decodes (zips open), its size, CRC-32 and SHA-256 are
   recorded. A damaged file is kept and marked (``damaged`` in its file
   entry): it may be the only copy, and the next ``sync --full`` fetches a
   fresh one while pixiv still has the work. Placing runs in a few worker processes;
   commits stay in order on the caller's.
2. **Write** its ``pixiv.json``, ``pbe.json`` (the next ingress number, a
   history starting with ``imported``) and the source's own metadata when
   it had to be converted, in the same worker: the files of the folder
   nobody sees yet are made where its images were checked, so the parent
   only numbers and publishes.
3. **Commit** it through the sync's own commit path (``commit.commit_works``),
   in order, many works per flush to disk. Only then, with ``--move``, are
   its source files removed.

Works already archived are skipped, or completed with the files they lack.
The archive lock is held throughout; a kill at any moment leaves nothing
half-visible, and the same command again finishes the job (a work published
but not yet indexed is adopted from its record).
"""

from __future__ import annotations

import errno
import io
import itertools
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
from concurrent.futures import Future, ProcessPoolExecutor, ThreadPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..archive import (RAW, RECORD, RECORD_FORMAT, Archive, DamagedFile, Digest, StoredFile, artwork_ids, digest_file, dumps,
                       probe)
from ..commit import Work, index_work, publish_works, record_works
from ..config import Config
from ..errors import PbeError, RecordError, disk_full
from ..index import Index
from ..ledger import Ledger
from ..progress import Progress
from ..recovery import open_index
from ..storage.local import discard
from ..sync import now
from .found import IMPORTED_MEDIA, WITHOUT_FRAMES, FoundFile, FoundWork
from .mark import walk_mark

log = logging.getLogger("pbe_fs.import")

MODES = ("copy", "link", "move")
# Works committed together (one flush to disk, one index transaction): a
# batch is shown at most this many works or seconds after its first is ready.
BATCH, BATCH_SECONDS = 500, 2.0
# Works handed to the workers ahead of the one committed next: enough that
# they keep placing while the parent flushes a batch to disk.
WINDOW = 2 * BATCH
# Works a worker is handed at a time: one task per work cost the parent's
# pool threads a wake-up, a pickle and a future per work, on the same two
# cores the workers need, and left workers waiting on the pool's short
# queue (workers + 1 tasks) whenever the parent was busy committing.
CHUNK = 16
# While a batch is being published the next one grows, up to this.
MAX_BATCH = 5 * BATCH
# Files up to this size are read once, hashed and decoded from memory.
_IN_MEMORY = 64 << 20


@dataclass
class ImportResult:
    found: int = 0
    imported: int = 0
    skipped: int = 0  # already archived (nothing to add), or kept out
    completed: int = 0  # already archived, given files it lacked
    kept_out: int = 0
    damaged: int = 0  # files that do not decode
    partial: int = 0  # works whose record is incomplete
    missing: int = 0  # works the source's own records name that it holds no file of
    files: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)

    def describe(self) -> str:
        line = (f"{self.imported} imported, {self.skipped} skipped, {self.damaged} damaged, {self.partial} partial"
                f" ({self.files} files, {self.bytes} bytes)")
        if self.missing:
            line += f"; {self.missing} missing (recorded by the source, no file found)"
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
    # A new work's record without its files, its pixiv.json and the source's
    # own metadata (name, content): written with its files. None: a completion.
    record: dict[str, Any] | None = None
    raw: dict[str, Any] | None = None
    original: tuple[str, Any] | None = None


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
    record: dict[str, Any] | None = None  # as written in the folder (a new work with files)


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
        # Twice the cores: a worker spends much of its time waiting on the file
        # system (creating folders and files), when another can decode.
        self.workers = workers or min(4, 2 * (os.cpu_count() or 1))
        self.index: Index | None = None
        self._cross_device = False
        self._batch: list[tuple[FoundWork, _Placed, dict[str, Any]]] = []
        self._batch_started = 0.0
        self._archived: set[int] = set()
        self._tombstones: dict[int, dict[str, Any]] = {}
        self._seq: int | None = None  # the next ingress number, read once the last killed run's works are adopted
        self._seq_committed = 0  # the number the next new work committed gets
        self._publisher: ThreadPoolExecutor | None = None
        self._publishing: tuple[Future[None], list[tuple[FoundWork, _Placed, dict[str, Any]]]] | None = None

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
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload([__name__])  # workers start with this module imported, not each on its own
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=_follow_importer,
                                 initargs=(os.getpid(),)) as pool, ThreadPoolExecutor(1, "publish") as publisher:
            for _ in range(self.workers):
                pool.submit(int)  # the workers start while the source is read
            todo = self._todo()
            if todo:
                self._publisher = publisher
                self._place_all(pool, todo, ledger)

    def _todo(self) -> list[tuple[FoundWork, str, dict[str, Any] | None]]:
        """The source's works in its order, each with what to do; those to skip are counted."""
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
        return todo

    def _place_all(self, pool: ProcessPoolExecutor, todo: list[tuple[FoundWork, str, dict[str, Any] | None]],
                   ledger: Ledger) -> None:
        """Place and check in the workers, commit here in order, a window of works ahead."""
        # From the first commit on, the next sync must look at every bookmark.
        walk_mark(self.archive).touch()
        link = self.mode in ("link", "move")
        window: deque[tuple[Future[list[_Placed]], list[tuple[FoundWork, str, dict[str, Any] | None]]]] = deque()
        ahead = 0  # works in the window
        pending = iter(todo)
        while True:
            while ahead < max(WINDOW, self.workers * 4 * CHUNK):
                chunk = list(itertools.islice(pending, CHUNK))
                if not chunk:
                    break
                jobs = [self._job(work, kind, known, link) for work, kind, known in chunk]
                window.append((pool.submit(_place_chunk, jobs), chunk))
                ahead += len(chunk)
            if not window:
                break
            future, chunk = window.popleft()
            ahead -= len(chunk)
            for (work, kind, known), placed in zip(chunk, future.result()):
                self._placed(work, kind, known, placed, ledger)
                self._flush(ledger)
                self.progress.work_done()
        self._flush(ledger, wait=True)

    def _job(self, work: FoundWork, kind: str, known: dict[str, Any] | None, link: bool) -> _PlaceJob:
        """What a worker needs to place, check and (a new work) write one work."""
        job = _PlaceJob(work.id, self.archive.incoming_dir(work.id), self.archive.trash, work.files, set(),
                        link and not self._cross_device)
        if kind == "complete":
            job.have = {f["path"] for f in known["files"]} if known else set()
            return job
        job.record = self._record(work, known)
        job.raw = work.raw
        if work.original is not None:
            job.original = (f"import.{self.source}.json", work.original)
        return job

    def _placed(self, work: FoundWork, kind: str, known: dict[str, Any] | None, placed: _Placed,
                ledger: Ledger) -> None:
        """One work back from its worker, in the source's order."""
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
            if kind != "complete":
                self._unnumber(known)
            self.archive.discard(placed.folder)
        elif kind == "complete":
            self._complete(work, placed, ledger)
            if self.mode == "move":
                _remove_sources(placed.sources)
        else:
            self._commit(work, placed, known)

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
    def _record(self, work: FoundWork, tombstone: dict[str, Any] | None) -> dict[str, Any]:
        """A new work's record but its files (the worker adds them), with the
        number it gets if every work before it is committed."""
        at = now()
        history = list((tombstone or {}).get("history") or [])
        history.append({"at": at, "event": "imported", "source": self.source, "from": str(self.root)})
        record: dict[str, Any] = {
            "format": RECORD_FORMAT, "id": work.id,
            "seq": tombstone["seq"] if _numbered(tombstone) else self._number(),
            "restrict": work.restrict, "bookmarked": work.bookmarked, "archived_at": at, "gone": None,
            "ugoira": work.ugoira, "files": [], "history": history,
        }
        if work.partial:
            record["partial"] = list(work.partial)
        return record

    def _commit(self, work: FoundWork, placed: _Placed, tombstone: dict[str, Any] | None) -> None:
        """Join a placed work to the batch committed soon."""
        record = placed.record
        if not placed.stored or record is None:
            self.result.failed.append(f"{work.id}: no file of it found")
            log.error("%d: none of its files is in %s: not imported", work.id, self.root)
            self._unnumber(tombstone)
            self.archive.discard(placed.folder)
            return
        if not _numbered(tombstone) and record["seq"] != self._seq_committed:
            # A work before it failed and left its number unused: the number moves down, the record is rewritten.
            record["seq"] = self._seq_committed
            (placed.folder / RECORD).write_bytes(dumps(record))
        if not _numbered(tombstone):
            self._seq_committed += 1
        if not self._batch:
            self._batch_started = time.monotonic()
        self._batch.append((work, placed, record))
        self.result.damaged += sum(1 for f in record["files"] if f.get("damaged"))
        self.result.partial += bool(record.get("partial"))

    def _flush(self, ledger: Ledger, *, wait: bool = False) -> None:
        """Commit batches through the sync's commit path, in order. Making a
        batch visible and durable (one flush of the file system, which on a
        busy disk waits for everyone's writes) runs on a thread while works
        go on arriving; the batch after it grows meanwhile. Once a batch is
        published, the ledger and index learn it here, and with --move the
        source's files of it are removed. ``wait``: until nothing is left."""
        while True:
            if self._publishing is not None and (wait or self._publishing[0].done()
                                                 or len(self._batch) >= MAX_BATCH):
                future, batch = self._publishing
                self._publishing = None
                future.result()
                self._record_batch(ledger, batch)
            ready = self._batch and (wait or len(self._batch) >= BATCH
                                     or time.monotonic() - self._batch_started > BATCH_SECONDS)
            if ready and self._publishing is None:
                batch, self._batch = self._batch, []
                assert self._publisher is not None
                self._publishing = (self._publisher.submit(publish_works, self.archive, _works(batch), written=True),
                                    batch)
            if not wait or (self._publishing is None and not self._batch):
                return

    def _record_batch(self, ledger: Ledger, batch: list[tuple[FoundWork, _Placed, dict[str, Any]]]) -> None:
        assert self.index is not None
        record_works(self.archive, self.index, ledger, _works(batch))
        for work, placed, record in batch:
            log.debug("imported %d as %d (%d files)", work.id, record["seq"], len(record["files"]))
            if self.mode == "move":
                _remove_sources(placed.sources)
        self.result.imported += len(batch)

    def _number(self) -> int:
        """The ingress number of the next new work handed to a worker. Not
        reserved: the commit's index write moves it on, and a kill before
        that leaves it for the next run."""
        if self._seq is None:
            assert self.index is not None
            self._seq = int(self.index.db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0])
            self._seq_committed = self._seq
        self._seq += 1
        return self._seq - 1

    def _unnumber(self, tombstone: dict[str, Any] | None) -> None:
        """A new work that will not be committed gives its number back: the
        works handed out after it move down one (``_commit`` rewrites them)."""
        if not _numbered(tombstone) and self._seq is not None:
            self._seq -= 1

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


def _place_chunk(jobs: list[_PlaceJob]) -> list[_Placed]:
    """One task's works (``CHUNK``), in order. A work that fails is said in
    its ``_Placed``; what ``_place`` lets through (a full disk) ends the
    task and the run: the task's works before it stay unseen in incoming,
    and the next run places them again."""
    return [_place(job) for job in jobs]


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
        if job.record is not None and placed.stored:
            placed.record = _write_work(job, placed.stored)
    except OSError as exc:
        full = disk_full(exc, job.folder)
        if full is not None:
            raise full from None
        placed.error = f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": ")
    except PbeError as exc:
        placed.error = str(exc)
    return placed


def _write_work(job: _PlaceJob, stored: list[StoredFile]) -> dict[str, Any]:
    """Complete a new work's record with its checked files and write its
    JSON files beside them (flushed to disk by the commit, before it is
    published)."""
    assert job.record is not None
    record = job.record
    record["files"] = sorted((f.to_json() for f in stored), key=lambda f: f["path"])
    if any(f.role == IMPORTED_MEDIA for f in stored):
        record.setdefault("partial", []).append(WITHOUT_FRAMES)
    # What the import could not verify, said in its history event too: the index keeps that for `status`.
    event = record["history"][-1]
    damaged = [{"path": f["path"], "sha256": f["sha256"], "problem": f["damaged"]} for f in record["files"] if "damaged" in f]
    if damaged:
        event["damaged"] = damaged
    if record.get("partial"):
        event["partial"] = record["partial"]
    (job.folder / RAW).write_bytes(dumps(job.raw))
    if job.original is not None:
        (job.folder / job.original[0]).write_bytes(dumps(job.original[1]))
    (job.folder / RECORD).write_bytes(dumps(record))
    return record


def _works(batch: list[tuple[FoundWork, _Placed, dict[str, Any]]]) -> list[Work]:
    return [(placed.folder, record, work.raw) for work, placed, record in batch]


def _numbered(tombstone: dict[str, Any] | None) -> bool:
    """Whether the work comes back with the number it had (a deleted work)."""
    return bool(tombstone) and isinstance(tombstone.get("seq"), int)  # type: ignore[union-attr]


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
    digest, body = _read(dest)
    if found.kind == "media":
        return _stored(found, digest, (0, 0, Path(found.path).suffix.lstrip(".").upper(), ""))
    try:
        return _stored(found, digest, probe(dest if body is None else _Body(body, dest), found.kind))  # type: ignore[arg-type]
    except DamagedFile as exc:
        placed.warnings.append(f"{job.id}: {found.source} is damaged ({exc}); kept, and marked so")
        return _Damaged(_stored(found, digest, (0, 0, "", "")), str(exc))


class _Body(io.BytesIO):
    """A file's bytes, named as the file in what a failed decode says."""

    def __init__(self, body: bytes, path: Path) -> None:
        super().__init__(body)
        self.path = path

    def __repr__(self) -> str:
        return repr(str(self.path))


def _read(path: Path) -> tuple[Digest, bytes | None]:
    """The file's digest, and its bytes when small enough to decode from
    memory: one open and one read per file instead of one each for the hash
    and the decode. The decode is the same ``probe`` a sync runs."""
    with open(path, "rb") as fh:
        if os.fstat(fh.fileno()).st_size > _IN_MEMORY:
            return digest_file(path), None
        body = fh.read()
    digest = Digest()
    digest.update(body)
    return digest, body


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
