"""The sync engine: walk the bookmarks, plan, download, commit.

A sync runs in four steps, each safe to interrupt with kill -9:

1. **Walk** the bookmark lists (public, then private), newest first, one API
   call at a time. New works go to the index's ``pending`` table with their
   raw JSON (and ugoira metadata), so memory stays flat however many there
   are. Placeholders mark archived works gone or record lost ones; an
   incremental sync stops at the first bookmark already archived.
2. **Number** the new works: ingress numbers are handed out oldest first,
   once, and never reused.
3. **Download** every file of every pending work, ``sync.concurrency`` at a
   time: into ``temp_path``, checked (length, decode), then moved into the
   work's folder under ``.pbe/incoming`` (local whatever the store). Files
   already there from an interrupted run are re-checked instead of fetched
   again.
4. **Commit** a work once all of its files are in: write ``pixiv.json`` and
   ``pbe.json``, publish the folder as ``artworks/<id>`` (a rename, or
   verified uploads with ``pbe.json`` last) and index it in one transaction.
   Until then nothing of it is visible.
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import shutil
import threading
import uuid
from collections import deque
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import artwork, illust, metadata
from .archive import (RECORD_FORMAT, Archive, DamagedFile, Digest, StoredFile, artwork_key, digest_file, move_into,
                      probe)
from .commit import commit_work, index_work
from .config import Config
from .errors import DiskFull, PbeError, RecordError, disk_full
from .illust import FileSpec
from .importing.found import ANIMATION_GAPS
from .importing.mark import walk_mark
from .index import Index
from .ledger import Ledger
from .pixiv import NotFound, PixivClient
from .progress import Progress
from .recovery import open_index
from .render.cache import Cache
from .storage import Store
from .storage.local import StagingStore

log = logging.getLogger("pbe_fs.sync")


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


@dataclass
class SyncResult:
    new: int = 0
    files: int = 0
    bytes: int = 0
    gone: int = 0
    lost: int = 0
    restored: int = 0
    repaired: int = 0
    scrubbed: int = 0
    changed: int = 0
    damaged: int = 0
    failed: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # records that could not be read

    def describe(self) -> str:
        parts = [f"{self.new} new works", f"{self.files} files", f"{self.bytes} bytes"]
        for name in ("gone", "lost", "restored", "changed", "repaired", "damaged"):
            if getattr(self, name):
                parts.append(f"{getattr(self, name)} {name}")
        if self.scrubbed:
            parts.append(f"{self.scrubbed} works re-read")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        if self.problems:
            parts.append(f"{len(self.problems)} unreadable records (`pbe-fs doctor`)")
        return ", ".join(parts)


def _resolve(record: dict[str, Any], gaps: tuple[str, ...]) -> list[str]:
    """Drop these reasons from the record's ``partial`` (an import's note of
    what it could not bring); the ones dropped, for the history."""
    partial = record.get("partial") or []
    resolved = [why for why in partial if why in gaps]
    if resolved:
        kept = [why for why in partial if why not in gaps]
        if kept:
            record["partial"] = kept
        else:
            record.pop("partial", None)
    return resolved


@dataclass
class _Job:
    """One work being fetched: a new one into incoming/, or repairs in place."""

    id: int
    folder: Path
    specs: list[FileSpec]
    repair: bool = False
    row: dict[str, Any] = field(default_factory=dict)
    outstanding: int = 0
    stored: dict[str, StoredFile] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    zip_fallback: bool = False
    keep_old: dict[str, str] = field(default_factory=dict)  # path -> dated name the replaced file moves to
    ugoira: dict[str, Any] | None = None  # a repair adding an animation's frames zip: its metadata


def _stored(spec: FileSpec, digest: Digest, image: tuple[int, int, str, str]) -> StoredFile:
    return StoredFile(spec.path, spec.role, spec.page, digest.size, digest.crc32, digest.sha256, *image, url=spec.url)


def dated_name(path: str, at: str) -> str:
    """``large/ID_p0.jpg`` -> ``large/ID_p0.2026-11-25.jpg``: where a file the
    artist replaced is kept."""
    folder, _, name = path.rpartition("/")
    stem, dot, ext = name.rpartition(".")
    dated = f"{stem}.{at[:10]}.{ext}" if dot else f"{name}.{at[:10]}"
    return f"{folder}/{dated}" if folder else dated


def _refetch(f: dict[str, Any], url: str = "") -> FileSpec:
    """The download that puts back an archived file (from its recorded URL,
    or the one pixiv serves it from now)."""
    return FileSpec(url or f["url"], f["path"], f["role"], f["page"], "zip" if f["role"] == "ugoira_zip" else "image")


def _temp_name(temp: Path, artwork_id: int) -> Path:
    return temp / f"pbe-{artwork_id}-{uuid.uuid4().hex}.part"


class Syncer:
    """One sync run over one archive."""

    def __init__(self, config: Config, client: PixivClient, *, full: bool = False, deep: bool | None = None,
                 progress: Progress | None = None, stop: threading.Event | None = None, scrub: bool = False) -> None:
        self.config = config
        self.deep = deep  # --full: read every byte of every file (None: on a folder yes, in a bucket no)
        self.settings = config.settings
        self.client = client
        self.full = full
        self.scrub = scrub  # the daemon re-reads a slice of the archive each run
        self.archive = Archive.open(config)
        self.temp = config.temp_path
        self.progress = progress or Progress(enabled=False)
        self.result = SyncResult()
        self.stop = stop or threading.Event()  # set: finish what is in flight, start nothing new
        self.index: Index | None = None
        self.ledger = Ledger(self.archive.store)
        self._seen: set[int] = set()
        self._walk_complete = True
        self._found = 0
        self._adopting = False
        self._kept_out: set[int] = set()
        self._pool: ThreadPoolExecutor | None = None
        self._prepared: list[Future[None]] = []
        self._replaced: dict[int, dict[str, str]] = {}  # works whose images the artist replaced: path -> new url
        self.cache = Cache(config.cache_path, int(self.settings.cache.max_gb * 1e9))

    # -- entry point -----------------------------------------------------------
    def run(self) -> SyncResult:
        # Authenticate before touching anything: a bad token changes nothing.
        self.client.authenticate()
        self.archive.store.check()
        self.archive.ensure()
        self.temp.mkdir(parents=True, exist_ok=True)
        with self.archive.lock():
            imported = walk_mark(self.archive)
            if imported.exists() and not self.full:  # works came in by import: every bookmark must be looked at once
                log.info("the first sync after an import walks every bookmark, as `sync --full` does")
                self.full = True
            self.index = open_index(self.archive, locked=True)
            run_id = self._start_run()
            status, message = "failed", ""
            try:
                try:
                    self._clean_temp()
                    self._recover()
                    self._walk_all()
                    self._number_new()
                    self._download(self._jobs())
                    if self.full:
                        self._download(self._repair_jobs())
                    if self.scrub and not self.stop.is_set():
                        self._refresh_slice()
                        self._scrub()
                except (OSError, sqlite3.OperationalError) as exc:
                    full = disk_full(exc, self.archive.root)
                    if full is None:
                        raise
                    raise full from None
                status = "partial" if self.result.failed else "ok"
                if self._walk_complete and not self.result.failed:
                    imported.unlink(missing_ok=True)
            except PbeError as exc:
                message = str(exc)
                raise
            except KeyboardInterrupt:
                status, message = "interrupted", "interrupted"
                raise
            finally:
                self._close_ledger()
                self._clean_temp()
                self.archive.empty_trash()
                self._finish_run(run_id, status, message)
                self.progress.close()
                self.index.close()
        if self.result.failed:
            raise PbeError(f"sync incomplete: {len(self.result.failed)} works could not be fetched "
                           f"({', '.join(map(str, self.result.failed[:10]))}); run `pbe-fs sync` again")
        return self.result

    @property
    def db(self) -> Any:
        assert self.index is not None
        return self.index.db

    def _start_run(self) -> int:
        with self.index.write() as db:  # type: ignore[union-attr]
            db.execute("UPDATE sync_runs SET status = 'interrupted' WHERE status = 'running'")
            cur = db.execute("INSERT INTO sync_runs (started_at, mode, status) VALUES (?, ?, 'running')",
                             (now(), "full" if self.full else "incremental"))
            return int(cur.lastrowid)

    def _finish_run(self, run_id: int, status: str, message: str) -> None:
        r = self.result
        try:
            with self.index.write() as db:  # type: ignore[union-attr]
                db.execute("UPDATE sync_runs SET finished_at=?, status=?, new_works=?, files=?, bytes=?, gone=?, lost=?,"
                           " message=? WHERE id=?", (now(), status, r.new, r.files, r.bytes, r.gone, r.lost, message, run_id))
        except sqlite3.OperationalError as exc:  # a full disk: `status` sees no holder of the lock and says so
            log.debug("sync run not recorded: %s", exc)

    def _close_ledger(self) -> None:
        try:
            self.ledger.close()
        except (OSError, PbeError) as exc:  # every entry is in a record too
            log.warning("ledger not written: %s", exc)

    def _clean_temp(self) -> None:
        """Downloads in temp_path belong to this process alone (we hold the
        lock): whatever is there was left by a killed sync."""
        for stray in self.temp.glob("pbe-*.part"):
            stray.unlink(missing_ok=True)

    def _recover(self) -> None:
        """Finish what a killed sync left between its steps."""
        pending = {row[0] for row in self.db.execute("SELECT id FROM pending")}
        for aid in pending:
            if self.archive.has_artwork(aid) and self.index.artwork(aid) is None:  # type: ignore[union-attr]
                if self._adopt(aid):
                    log.info("recovered %d from an interrupted sync", aid)
        if self.archive.incoming.is_dir():
            for folder in self.archive.incoming.iterdir():
                if not folder.name.isdigit() or int(folder.name) not in pending:
                    self.archive.discard(folder)

    # -- step 1: walk ------------------------------------------------------------
    def _walk_all(self) -> None:
        restricts = ["public"] + (["private"] if self.settings.sync.private else [])
        row = self.db.execute("SELECT coalesce(max(found), 0) FROM pending").fetchone()
        self._found = row[0]
        # An empty index over an archive holding works was rebuilt on open; an
        # index that holds some may still be an old copy missing others.
        self._adopting = self.db.execute("SELECT 1 FROM artworks LIMIT 1").fetchone() is not None
        if self.full:  # only --full fetches deleted works again: `delete --keep-out` tombstones, read once
            deleted = [r[0] for r in self.db.execute("SELECT id FROM deleted")]
            self._kept_out = {aid for aid in deleted if self._side("deleted", aid).get("keep_out")}
        for restrict in restricts:
            if self.stop.is_set():
                self._walk_complete = False
                return
            self._walk(restrict)
        if self.full and self._walk_complete:
            self._mark_unbookmarked()

    def _walk(self, restrict: str) -> None:
        archived = {r[0] for r in self.db.execute("SELECT id FROM artworks")}
        pending = {r[0] for r in self.db.execute("SELECT id FROM pending")}
        deleted = {r[0]: r[1] for r in self.db.execute("SELECT id, seq FROM deleted")}
        lost = {r[0] for r in self.db.execute("SELECT id FROM lost")}
        for page in self.client.bookmarks(restrict):
            for item in page:
                aid = int(item["id"])
                self._seen.add(aid)
                reason = illust.placeholder_reason(item)
                adopted = self._adopting and aid not in archived and aid not in pending and self._adopt(aid)
                if adopted:
                    archived.add(aid)  # the files had it, the index did not: look further for more
                if aid in archived:
                    if reason:
                        self._mark_gone(aid, reason)
                    else:
                        self._seen_again(aid, restrict)
                        if self.full:
                            self._refresh_metadata(aid, item)
                    if not self.full and not adopted:
                        return
                elif reason:
                    if aid in pending:
                        with self.index.write() as db:  # type: ignore[union-attr]
                            db.execute("DELETE FROM pending WHERE id = ?", (aid,))
                        pending.discard(aid)
                    if aid not in lost and aid not in deleted:
                        self._record_lost(aid, restrict, reason)
                        lost.add(aid)
                elif aid in pending or (aid in deleted and (not self.full or aid in self._kept_out)):
                    continue
                else:
                    self._queue(item, restrict, deleted.get(aid))
                    pending.add(aid)
        # Reaching the end of the list is what lets --full call a work unbookmarked.

    def _queue(self, item: dict[str, Any], restrict: str, tombstone_seq: int | None) -> None:
        aid = int(item["id"])
        ugoira = None
        if item.get("type") == "ugoira":
            ugoira = self.client.ugoira_metadata(aid)
            if ugoira is None:
                log.warning("%d: pixiv has no ugoira metadata for it; will retry next sync", aid)
                return
        history = [{"at": now(), "event": "bookmarked", "restrict": restrict}]
        if tombstone_seq is not None:
            old = self._side("deleted", aid)
            history = (old.get("history") or []) + [{"at": now(), "event": "refetched"}]
        self._found += 1
        with self.index.write() as db:  # type: ignore[union-attr]
            db.execute("INSERT INTO pending (id, found, seq, restrict, raw, ugoira, history) VALUES (?,?,?,?,?,?,?)",
                       (aid, self._found, tombstone_seq, restrict, json.dumps(item, ensure_ascii=False),
                        json.dumps(ugoira, ensure_ascii=False) if ugoira else None, json.dumps(history, ensure_ascii=False)))

    def _adopt(self, aid: int) -> bool:
        """Index a work the archive holds but the index lacks (an old copy of
        the index, a killed sync), instead of fetching and numbering it again."""
        if not self.archive.has_artwork(aid):
            return False
        try:
            record, raw = self.archive.read_artwork(aid)
        except RecordError as exc:
            self._problem(str(exc))
            return False
        self._index_artwork(record, raw)
        log.info("%d was in the archive but not in the index: indexed it from its record", aid)
        return True

    def _problem(self, problem: str) -> None:
        if problem not in self.result.problems:
            self.result.problems.append(problem)
            log.error("%s: the work is kept as it is; `pbe-fs doctor --repair` rebuilds its record", problem)

    def _side(self, kind: str, aid: int) -> dict[str, Any]:
        return self.archive.read_side(kind, aid)

    def _update_record(self, aid: int, change: Any) -> None:
        """Apply ``change(record)`` to pbe.json (atomically), then the index.
        ``change`` returns False when there is nothing to do. A record that
        cannot be read is reported and left alone: never guessed over."""
        try:
            record, raw = self.archive.read_artwork(aid)
        except RecordError as exc:
            self._problem(str(exc))
            return
        before = len(record["history"])
        if change(record) is False:
            return
        self.archive.update_record(aid, record)
        self._index_artwork(record, raw)
        for event in record["history"][before:]:
            if event.get("event") in ("gone", "restored", "restrict"):
                self.ledger.append({"id": aid, **event})

    def _index_artwork(self, record: dict[str, Any], raw: dict[str, Any]) -> None:
        index_work(self.index, record, raw)  # type: ignore[arg-type]

    def _mark_gone(self, aid: int, reason: str) -> None:
        def change(record: dict[str, Any]) -> bool:
            if record.get("gone"):
                return False
            at = now()
            record["gone"] = {"at": at, "reason": reason}
            record["history"].append({"at": at, "event": "gone", "reason": reason})
            return True
        before = self.result.gone
        self._update_record(aid, lambda r: change(r) and self._count("gone"))
        if self.result.gone > before:
            log.warning("%d is gone from pixiv (%s); the archived copy is kept", aid, reason)

    def _count(self, name: str) -> bool:
        setattr(self.result, name, getattr(self.result, name) + 1)
        return True

    def _seen_again(self, aid: int, restrict: str) -> None:
        def change(record: dict[str, Any]) -> bool:
            at, changed = now(), False
            if record.get("gone"):
                record["gone"] = None
                record["history"].append({"at": at, "event": "restored"})
                self._count("restored")
                changed = True
            if record.get("restrict") != restrict:
                record["history"].append({"at": at, "event": "restrict", "from": record.get("restrict"), "to": restrict})
                record["restrict"] = restrict
                changed = True
            if not record.get("bookmarked", True):
                record["bookmarked"] = True
                record["history"].append({"at": at, "event": "bookmarked", "restrict": restrict})
                changed = True
            return changed
        row = self.index.artwork(aid)  # type: ignore[union-attr]
        if row is not None and row["state"] == "live" and row["restrict"] == restrict and row["bookmarked"]:
            return  # the common case: nothing to read or write
        self._update_record(aid, change)

    def _refresh_metadata(self, aid: int, item: dict[str, Any]) -> None:
        """Bring an archived work's metadata up to what pixiv shows now,
        keeping what it showed before (see ``metadata``)."""
        try:
            record, raw = self.archive.read_artwork(aid)
        except RecordError as exc:
            self._problem(str(exc))
            return
        found = metadata.changes(raw, item)
        replaced = metadata.replaced_pages(raw, item, list(self.settings.sync.sizes))
        if not found and not replaced:
            if metadata.counts_differ(raw, item):
                self.archive.write_raw(aid, item)  # counts change daily: in place, no new version
            return
        at = now()
        record.setdefault("versions", []).append(self.archive.keep_raw_version(aid, at))
        record["format"] = max(record.get("format", 1), 2)
        if found:
            record["history"].append({"at": at, "event": "changed", "fields": found})
        pages = found.get("page_count")
        if pages and pages["to"] < pages["from"]:  # pages the artist removed stay here, marked
            for f in record["files"]:
                if f["page"] >= pages["to"] and f["role"] != "ugoira_zip":
                    f.setdefault("removed_on_pixiv", at)
        self.archive.update_record(aid, record)  # the event first: a crash repeats it, never loses it
        self.archive.write_raw(aid, item)
        self._index_artwork(record, item)
        if replaced:
            self._replaced[aid] = replaced
        self.result.changed += 1
        log.info("%d changed on pixiv: %s", aid, ", ".join([*found, *(["images"] if replaced else [])]))

    def _record_lost(self, aid: int, restrict: str, reason: str) -> None:
        data = {"id": aid, "restrict": restrict, "reason": reason, "first_seen": now()}
        self.archive.write_side("lost", aid, data)
        with self.index.write() as db:  # type: ignore[union-attr]
            Index.put_lost(db, data)
        self.result.lost += 1
        log.warning("%d was hidden or deleted on pixiv before it could be archived (%s): recorded as lost", aid, reason)

    def _mark_unbookmarked(self) -> None:
        rows = self.db.execute("SELECT id FROM artworks WHERE bookmarked = 1").fetchall()
        for (aid,) in rows:
            if aid in self._seen:
                continue

            def change(record: dict[str, Any]) -> None:
                record["bookmarked"] = False
                record["history"].append({"at": now(), "event": "unbookmarked"})
            self._update_record(aid, change)
            log.info("%d is no longer bookmarked on pixiv; the archived copy is kept", aid)

    # -- step 2: number ----------------------------------------------------------
    def _number_new(self) -> None:
        rows = self.db.execute("SELECT id, restrict, found FROM pending WHERE seq IS NULL").fetchall()
        if not rows:
            return
        # Oldest first within each list; the lists do not say how they interleave.
        order = sorted(rows, key=lambda r: (r["restrict"] != "public", -r["found"]))
        with self.index.write() as db:  # type: ignore[union-attr]
            first = Index.take_seqs(db, len(order))
            db.executemany("UPDATE pending SET seq = ? WHERE id = ?", [(first + n, r["id"]) for n, r in enumerate(order)])

    # -- step 3: download --------------------------------------------------------
    def _jobs(self) -> Iterator[_Job]:
        ids = [r[0] for r in self.db.execute("SELECT id FROM pending WHERE seq IS NOT NULL ORDER BY seq")]
        self.progress.add_works(len(ids))
        for aid in ids:
            row = dict(self.db.execute("SELECT * FROM pending WHERE id = ?", (aid,)).fetchone())
            raw = json.loads(row["raw"])
            ugoira = json.loads(row["ugoira"]) if row["ugoira"] else None
            try:
                specs = self._specs(raw, ugoira)
            except ValueError as exc:
                specs, error = [], str(exc)
            else:
                error = "pixiv lists no image for it"
            if not specs:
                log.error("%d: %s", aid, error)
                self.result.failed.append(aid)
                continue
            folder = self.archive.incoming_dir(aid)
            folder.mkdir(parents=True, exist_ok=True)
            self._prune(folder, {s.path for s in specs})
            yield _Job(aid, folder, specs, row=row)

    @staticmethod
    def _prune(folder: Path, keep: set[str]) -> None:
        """Drop what a killed run left in an incoming folder that is not one
        of its files: half-written records, temporary copies."""
        for path in sorted(folder.rglob("*"), reverse=True):
            rel = path.relative_to(folder).as_posix()
            if path.is_dir():
                if not any(k.startswith(rel + "/") for k in keep):
                    shutil.rmtree(path, ignore_errors=True)
            elif rel not in keep:
                path.unlink(missing_ok=True)

    def _specs(self, raw: dict[str, Any], ugoira: dict[str, Any] | None) -> list[FileSpec]:
        sizes = list(self.settings.sync.sizes)
        if ugoira is None:
            return illust.file_specs(raw, sizes)
        specs = illust.file_specs(raw, sizes, with_originals=False)
        if "original" in sizes:
            frames = illust.ugoira_frame_specs(raw, len(illust.ugoira_frames(ugoira)))
            fallback = illust.ugoira_zip_spec(ugoira)
            specs += frames or ([fallback] if fallback else [])
        return specs

    def _repair_jobs(self, ids: list[int] | None = None, deep: bool | None = None) -> Iterator[_Job]:
        """--full: every archived file is checked against its SHA-256, and
        sizes added to the config since are fetched. ``ids``: only these
        works (the scrub's damaged ones)."""
        # A bucket keeps each object's SHA-256 and checks uploads itself:
        # reading the whole bucket back on every --full is for `doctor`.
        if deep is None:
            deep = self.archive.store.kind == "local" if self.deep is None else self.deep
        if ids is None:
            ids = [r[0] for r in self.db.execute("SELECT id FROM artworks ORDER BY seq").fetchall()]
        for aid in ids:
            try:
                record, raw = self.archive.read_artwork(aid)
            except RecordError as exc:
                self._problem(str(exc))
                continue
            specs = []
            for f in record["files"]:  # a file damaged when it was imported is there only until pixiv's comes
                problem = f.get("damaged") or self.archive.file_problem(aid, f, deep=deep)
                if problem:
                    log.warning("%d: %s is %s", aid, f["path"], problem if problem == "missing" else f"damaged ({problem})")
                    specs.append(_refetch(f))
            keep_old = {}
            by_path = {f["path"]: f for f in record["files"]}
            damaged = {spec.path for spec in specs}
            for path, url in self._replaced.pop(aid, {}).items():
                if path in by_path and path not in damaged:
                    specs.append(_refetch(by_path[path], url))
                    keep_old[path] = dated_name(path, now())
            ugoira = None
            if not record.get("gone"):
                specs += [s for s in illust.file_specs(raw, list(self.settings.sync.sizes),
                                                       with_originals=raw.get("type") != "ugoira") if s.path not in by_path]
                zip_spec, ugoira = self._missing_frames(aid, record, raw)
                specs += [zip_spec] if zip_spec is not None else []
            if specs:
                if record.get("gone"):
                    log.error("%d: damaged, and it is gone from pixiv: cannot repair %d files", aid, len(specs))
                    continue
                self.progress.add_works(1)
                staging = self.archive.incoming_dir(aid)
                self.archive.discard(staging)
                staging.mkdir(parents=True)
                yield _Job(aid, staging, specs, repair=True, keep_old=keep_old, ugoira=ugoira)

    def _missing_frames(self, aid: int, record: dict[str, Any],
                        raw: dict[str, Any]) -> tuple[FileSpec | None, dict[str, Any] | None]:
        """The frames zip of an archived animation that has none (imported as
        a converted video or GIF), and its metadata, while pixiv serves it."""
        if (raw.get("type") != "ugoira" or record.get("ugoira") or "original" not in self.settings.sync.sizes
                or any(f["role"] in ("ugoira_zip", "original") for f in record["files"])):
            return None, None
        ugoira = self.client.ugoira_metadata(aid)
        spec = illust.ugoira_zip_spec(ugoira) if ugoira else None
        return (spec, ugoira) if spec is not None else (None, None)

    # -- the daemon's spread metadata refresh ------------------------------------------
    def _slice(self, days: float) -> int:
        """How many works one run handles so that all are done within ``days``."""
        total = self.db.execute("SELECT count(*) FROM artworks").fetchone()[0]
        return max(1, math.ceil(total * self.settings.sync.interval_minutes / (days * 24 * 60))) if total else 0

    def _refresh_slice(self) -> None:
        """What ``sync --full`` does for metadata, a slice per daemon run (one
        illust_detail call per work), so every work is compared with pixiv
        within ``sync.metadata_refresh_days`` and no run walks everything."""
        rows = self.db.execute(
            "SELECT w.id FROM artworks w LEFT JOIN refreshed r ON r.artwork_id = w.id WHERE w.state = 'live'"
            " ORDER BY coalesce(r.at, ''), w.seq LIMIT ?", (self._slice(self.settings.sync.metadata_refresh_days),)).fetchall()
        for (aid,) in rows:
            if self.stop.is_set():
                break
            item = self.client.illust_detail(aid)
            if item is not None and not illust.placeholder_reason(item):  # gone is the walk's to decide
                self._refresh_metadata(aid, item)
            with self.index.write() as db:  # type: ignore[union-attr]
                db.execute("INSERT OR REPLACE INTO refreshed VALUES (?, ?)", (aid, now()))
        if self._replaced:
            self._download(self._repair_jobs(sorted(self._replaced), deep=False))

    # -- scrub: silent damage is found ------------------------------------------------
    def _scrub(self) -> None:
        """Re-read a slice of the archive against its SHA-256s, so that every
        file is read within ``sync.scrub_days``; gone works first, since their
        files are the only copy. Damage is recorded (status, /_pbe/status);
        a work pixiv still has is fetched again."""
        per_run = self._slice(self.settings.sync.scrub_days)
        rows = self.db.execute(
            "SELECT w.id, w.state FROM artworks w LEFT JOIN scrubbed s ON s.artwork_id = w.id"
            " ORDER BY coalesce(s.at, ''), w.state != 'gone', w.seq LIMIT ?", (per_run,)).fetchall()
        damaged: list[int] = []
        for aid, state in rows:
            if self.stop.is_set():
                break
            problems = self._scrub_work(aid)
            self.result.scrubbed += 1
            if problems and state != "gone":
                damaged.append(aid)
        if damaged:
            self._download(self._repair_jobs(damaged, deep=True))

    def _scrub_work(self, aid: int) -> dict[str, str]:
        files = [dict(r) for r in self.index.files(aid)]  # type: ignore[union-attr]
        problems = {f["path"]: p for f in files if (p := self.archive.file_problem(aid, f, deep=True))}
        at = now()
        with self.index.write() as db:  # type: ignore[union-attr]
            db.execute("INSERT OR REPLACE INTO scrubbed VALUES (?, ?)", (aid, at))
            db.execute("DELETE FROM damage WHERE artwork_id = ?", (aid,))
            db.executemany("INSERT INTO damage VALUES (?, ?, ?, ?)", [(aid, p, why, at) for p, why in problems.items()])
        for path, why in problems.items():
            self.result.damaged += 1
            log.error("%d: %s is %s (found re-reading the archive)", aid, path,
                      why if why == "missing" else f"damaged: {why}")
        return problems

    def _download(self, jobs: Iterator[_Job]) -> None:
        window = self.settings.sync.concurrency * 2
        queue: deque[tuple[_Job, FileSpec]] = deque()
        inflight: dict[Future[StoredFile], tuple[_Job, FileSpec]] = {}
        jobs_left = True
        with ThreadPoolExecutor(self.settings.sync.concurrency, thread_name_prefix="download") as pool:
            self._pool = pool
            while True:
                while len(inflight) < window:
                    if self.stop.is_set():
                        jobs_left = False
                        queue.clear()  # its works stay pending for the next sync
                    if not queue and jobs_left:
                        job = next(jobs, None)
                        if job is None:
                            jobs_left = False
                        else:
                            job.outstanding = len(job.specs)
                            queue.extend((job, spec) for spec in job.specs)
                    if not queue:
                        break
                    job, spec = queue.popleft()
                    inflight[pool.submit(self._fetch, job, spec)] = (job, spec)
                if not inflight:
                    break
                done, _ = wait(inflight, return_when=FIRST_COMPLETED)
                for future in done:
                    job, spec = inflight.pop(future)
                    extra = self._collect(job, spec, future)
                    if extra:
                        job.outstanding += 1
                        queue.appendleft((job, extra))
                    job.outstanding -= 1
                    if job.outstanding == 0:
                        self._finish(job)
            self._pool = None
            for future in self._prepared:
                future.result()
            self._prepared.clear()

    def _prepare(self, aid: int, store: Store, record: dict[str, Any], raw: dict[str, Any]) -> None:
        """Make a new work's PDFs and animations; a failure only costs a
        render on first listing, so it is logged, not raised."""
        try:
            artwork.prepare(store, record, raw, self.cache, self.settings.display.artwork.image)
        except Exception as exc:  # a view can still make it on first need
            log.warning("%d: could not prepare its PDF or animation: %s", aid, exc)

    def _fetch(self, job: _Job, spec: FileSpec) -> StoredFile:
        """Runs in a download thread: get one file into the job's folder."""
        dest = job.folder / spec.path
        if not job.repair and dest.is_file():
            try:  # complete by construction; checked again all the same
                return _stored(spec, digest_file(dest), probe(dest, spec.kind))
            except (DamagedFile, OSError):
                dest.unlink(missing_ok=True)
        tmp = _temp_name(self.temp, job.id)
        try:
            digest, image = self.client.download(spec.url, tmp, lambda p: probe(p, spec.kind))
            move_into(tmp, dest)
        except OSError as exc:
            full = disk_full(exc, self.temp)
            if full is not None:
                self.stop.set()  # start nothing more: every write would fail the same way
                raise full from None
            raise
        finally:
            tmp.unlink(missing_ok=True)
        return _stored(spec, digest, image)

    def _collect(self, job: _Job, spec: FileSpec, future: Future[StoredFile]) -> FileSpec | None:
        """Record one finished file; return a file to fetch instead, if any."""
        try:
            stored = future.result()
        except DiskFull:
            raise
        except NotFound:
            if spec.role == "original" and "_ugoira" in spec.path and not job.zip_fallback:
                job.zip_fallback = True
                ugoira = json.loads(job.row["ugoira"])
                fallback = illust.ugoira_zip_spec(ugoira)
                if fallback is not None:
                    log.info("%d: original ugoira frames not served; archiving the frames zip", job.id)
                    return fallback
            if not job.zip_fallback or spec.role == "ugoira_zip":
                job.errors.append(f"{spec.path}: not found on pixiv")
            return None
        except PbeError as exc:
            job.errors.append(f"{spec.path}: {exc}")
            return None
        except OSError as exc:
            job.errors.append(f"{spec.path}: {exc}")
            return None
        job.stored[stored.path] = stored
        self.result.files += 1
        self.result.bytes += stored.size
        self.progress.file_done(stored.size)
        return None

    # -- step 4: commit ------------------------------------------------------------
    def _finish(self, job: _Job) -> None:
        self.progress.work_done()
        if job.errors:
            for error in job.errors[:3]:
                log.error("%d: %s", job.id, error)
            self.result.failed.append(job.id)
            return
        if job.repair:
            self._commit_repair(job)
        else:
            self._commit_new(job)

    def _commit_new(self, job: _Job) -> None:
        row = job.row
        raw = json.loads(row["raw"])
        ugoira = json.loads(row["ugoira"]) if row["ugoira"] else None
        files = job.stored
        if job.zip_fallback:  # frames that did answer are dropped in favour of the zip
            for path in [p for p, f in files.items() if f.role == "original"]:
                (job.folder / path).unlink(missing_ok=True)
                del files[path]
        record = {
            "format": RECORD_FORMAT,
            "id": job.id,
            "seq": row["seq"],
            "restrict": row["restrict"],
            "bookmarked": True,
            "archived_at": now(),
            "gone": None,
            "ugoira": ({"frames": illust.ugoira_frames(ugoira), "source": "zip" if job.zip_fallback else "frames"}
                       if ugoira else None),
            "files": [files[p].to_json() for p in sorted(files)],
            "history": json.loads(row["history"]),
        }
        remote = self.archive.store.blocking
        if remote:  # render from the local copies now, rather than download them again after the upload
            self._prepare(job.id, StagingStore(job.folder, artwork_key(job.id)), record, raw)
        commit_work(self.archive, self.index, self.ledger, job.folder, record, raw)  # type: ignore[arg-type]
        self.result.new += 1
        log.debug("archived %d (%d files)", job.id, len(files))
        if self._pool is not None and not remote:
            self._prepared.append(self._pool.submit(self._prepare, job.id, self.archive.store, record, raw))

    def _commit_repair(self, job: _Job) -> None:
        kept = {}
        for stored in job.stored.values():  # each file replaced whole, then the record
            if stored.path in job.keep_old:  # what the user saw before the artist replaced it
                kept[stored.path] = self.archive.copy_file(job.id, stored.path, job.keep_old[stored.path])
            self.archive.put_file(job.id, job.folder / stored.path, stored)
        self.archive.discard(job.folder)

        def change(record: dict[str, Any]) -> None:
            by_path = {f["path"]: f for f in record["files"]}
            at = now()
            for path, dated in kept.items():
                record.setdefault("replaced", []).append({**by_path[path], "path": dated, "replaced_at": at})
                record["format"] = max(record.get("format", 1), 2)
            for path, stored in job.stored.items():
                by_path[path] = stored.to_json()
            record["files"] = [by_path[p] for p in sorted(by_path)]
            resolved: list[str] = []
            if job.ugoira and any(f.role == "ugoira_zip" for f in job.stored.values()):
                record["ugoira"] = {"frames": illust.ugoira_frames(job.ugoira), "source": "zip"}
                resolved = _resolve(record, ANIMATION_GAPS)  # an import's converted animation, completed
            repaired = sorted(set(job.stored) - set(kept))
            if repaired:
                record["history"].append({"at": at, "event": "repaired", "files": repaired,
                                          **({"resolved": resolved} if resolved else {})})
            if kept:
                record["history"].append({"at": at, "event": "changed", "pages": {p: kept[p] for p in sorted(kept)}})
        self._update_record(job.id, change)
        with self.index.write() as db:  # type: ignore[union-attr]
            db.executemany("DELETE FROM damage WHERE artwork_id = ? AND path = ?", [(job.id, p) for p in job.stored])
        self.result.repaired += 1
        log.info("%d: fetched %d missing or damaged files", job.id, len(job.stored))
