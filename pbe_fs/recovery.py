"""Keeping the index honest: the files are the truth, the index follows.

Every command opens the index through ``open_index``. It checks the file
cheaply (header, schema version, tables); when the index is missing while
the archive holds works, damaged, or from an older pbe-fs, it is set aside
(kept, named with the time) and rebuilt from the archive's files under the
archive lock, before the command goes on. A rebuild never renumbers,
re-dates or drops a work that has files:

* a readable ``pbe.json`` is the work's truth;
* an unreadable or missing one is *salvaged*: from the old index if it
  still knows the work, else from the ledger (numbers, dates, gone state)
  and ``pixiv.json`` and the files themselves; the work is reported, and
  ``doctor --repair`` writes the salvaged record back;
* two works claiming one ingress number are settled deterministically (the
  earlier first bookmark keeps it, then the earlier ``archived_at``, then
  the lower id); the other gets a fresh number, written to its record and
  the ledger, and reported.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from . import illust, index as index_mod, ledger as ledger_mod
from .archive import RECORD_FORMAT, Archive, RecordError, StoredFile, artwork_key, digest_file, probe
from .errors import NewerFormat
from .index import Index

log = logging.getLogger("pbe_fs")
T = TypeVar("T")

_PAGE = re.compile(r"_(?:p|ugoira)(\d+)[._]")
_SIZES = ("large", "medium", "square_medium")
_OLD_LOCK = threading.Lock()


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# -- opening ------------------------------------------------------------------
def open_index(archive: Archive, *, locked: bool = False) -> Index:
    """The archive's index, checked and, if need be, rebuilt first.

    ``locked``: the caller holds the archive lock already (a sync, reindex
    or delete); otherwise a rebuild takes it, waiting for its holder.
    """
    state, detail = index_mod.inspect(archive.index_path)
    if state == "ok":
        return Index(archive.index_path)
    if state == "newer":
        raise NewerFormat(f"the index {archive.index_path} is format {detail}; this pbe-fs reads up to "
                          f"{index_mod.SCHEMA_VERSION}: upgrade pbe-fs")
    if state == "missing" and not _holds_anything(archive):
        return Index(archive.index_path)  # a new archive
    if locked:
        _repair_index(archive)
    else:
        with archive.lock(wait="rebuild the index"):
            _repair_index(archive)  # unless whoever held the lock did it meanwhile
    return Index(archive.index_path)


def _holds_anything(archive: Archive) -> bool:
    if next(archive.work_folders(), None) is not None:
        return True
    return any(next(archive.store.keys(kind), None) is not None for kind in ("deleted", "lost", ledger_mod.PREFIX))


def _repair_index(archive: Archive) -> None:
    """Under the lock: look again, set the file aside, rebuild."""
    state, detail = index_mod.inspect(archive.index_path)
    if state == "ok" or (state == "missing" and not _holds_anything(archive)):
        return
    kept = set_aside(archive, "damaged" if state == "damaged" else f"v{detail}" if state == "older" else "")
    why = {"missing": "the index is missing",
           "damaged": f"the index is damaged ({detail})",
           "older": f"the index is format {detail}, this pbe-fs writes {index_mod.SCHEMA_VERSION}"}[state]
    if getattr(archive.store, "follow", False):  # a follower goes on from the journal's head, not from scratch
        from .follow import rebuild_at_head
        report = rebuild_at_head(archive, old=kept)
    else:
        report = rebuild(archive, old=kept)
    log.warning("%s: rebuilt it from the archive's files (%s)%s", why, report.describe(),
                f"; the old one is kept as {kept.name}" if kept else "")


def set_aside(archive: Archive, label: str) -> Path | None:
    """Move the index (and its WAL) out of the way, keeping it; None if absent."""
    target = archive.index_path
    if not target.exists():
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        return None
    kept = target.with_name(f"{target.name}.{label or 'old'}-{_stamp()}")
    for suffix in ("-wal", "-shm", ""):
        src = Path(str(target) + suffix)
        if src.exists():
            os.replace(src, Path(str(kept) + suffix))
    return kept


def after_corruption(archive: Archive, exc: BaseException) -> None:
    """An SQLite corruption error met while using the index: set it aside and
    rebuild, whoever noticed (the caller then retries what it was doing)."""
    with archive.lock(wait="rebuild the damaged index"):
        if index_mod.inspect(archive.index_path)[0] == "ok":  # the header looks fine but pages are not
            kept = set_aside(archive, "damaged")
            report = rebuild(archive, old=kept)
            log.warning("the index is damaged (%s): rebuilt it from the archive's files (%s); the old one is kept as %s",
                        exc, report.describe(), kept.name if kept else "-")
        else:
            _repair_index(archive)


def retrying_corruption(archive: Archive, action: Callable[[], T]) -> T:
    """Run ``action``; if it meets a damaged index, rebuild it and run it once more."""
    try:
        return action()
    except sqlite3.DatabaseError as exc:
        if not index_mod.is_corruption(exc):
            raise
        after_corruption(archive, exc)
    return action()


# -- rebuilding ---------------------------------------------------------------
@dataclass
class Report:
    """What a rebuild found: the works, and everything it had to decide."""

    works: int = 0
    problems: list[str] = field(default_factory=list)  # by name, with what was done
    renumbered: list[tuple[int, int, int]] = field(default_factory=list)  # (id, old seq, new seq)

    def describe(self) -> str:
        parts = [f"{self.works} works"]
        if self.renumbered:
            parts.append(f"{len(self.renumbered)} renumbered")
        if self.problems:
            parts.append(f"{len(self.problems)} problem{'s' if len(self.problems) > 1 else ''} reported above")
        return ", ".join(parts)


@dataclass
class _Work:
    record: dict[str, Any]
    raw: dict[str, Any]
    problem: str = ""  # why the record was salvaged, if it was
    source: str = ""  # where the salvage came from


def rebuild(archive: Archive, old: Path | None = None) -> Report:
    """Build a new index from the archive's files and put it in place.

    The caller holds the archive lock. ``old``: a previous index to salvage
    from (records it still knows, sync history); it may be unreadable.
    The new index is written beside the live one and renamed over it, so a
    failure halfway changes nothing.
    """
    report = Report()
    target = archive.index_path
    fresh = target.with_name(target.name + ".new")
    for suffix in ("", "-wal", "-shm"):
        Path(str(fresh) + suffix).unlink(missing_ok=True)
    old_db = _open_old(old)
    entries = ledger_mod.fold(archive.store)
    side_problems: list[str] = []
    tombstones = list(archive.side_records("deleted", side_problems))
    lost = list(archive.side_records("lost", side_problems))
    report.problems += [f"{p}: skipped" for p in side_problems]

    works = _read_works(archive, old_db, entries, report)
    ledger = ledger_mod.Ledger(archive.store, f"{_stamp()}-rebuild")
    try:
        high = _settle_numbers(archive, works, tombstones, entries, ledger, report)
        for aid, work in works.items():  # the ledger learns what only the records knew
            known = entries.get(aid)
            if not work.problem and (known is None or known.seq != work.record["seq"]):
                ledger.archived(work.record)
    finally:
        ledger.close()

    index = Index(fresh)
    try:
        with index.write() as db:
            for aid in sorted(works):
                work = works[aid]
                Index.put_artwork(db, work.record, work.raw)
                if work.problem:
                    db.execute("INSERT OR REPLACE INTO problems VALUES (?, ?, ?)", (aid, work.problem, work.source))
            for data in lost:
                if data["id"] not in works:
                    Index.put_lost(db, data)
            for data in tombstones:
                if data["id"] not in works:
                    Index.put_deleted(db, data)
            # numbers only the ledger remembers (a work whose folder vanished) are never handed out again
            db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (high + 1,))
        if old is not None:
            _carry_over(index.db, old)
        index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        index.close()
        if old_db is not None:
            old_db.close()
    for suffix in ("-wal", "-shm"):
        Path(str(target) + suffix).unlink(missing_ok=True)
    os.replace(fresh, target)
    report.works = len(works)
    for problem in report.problems:
        log.warning("%s", problem)
    return report


def _open_old(old: Path | None) -> sqlite3.Connection | None:
    if old is None or not old.exists():
        return None
    try:
        conn = sqlite3.connect(f"file:{old}?mode=ro", uri=True, check_same_thread=False)  # used under _OLD_LOCK
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM artworks").fetchone()
        return conn
    except sqlite3.DatabaseError:
        return None


def _carry_over(db: sqlite3.Connection, old: Path) -> None:
    """Sync history and scrub dates are about this machine, not the archive:
    kept when the old file still reads, else started afresh."""
    try:
        db.execute("ATTACH DATABASE ? AS old", (f"file:{old}?mode=ro",))
    except sqlite3.DatabaseError as exc:
        log.info("previous sync history not kept: %s", exc)
        return
    try:
        for table in index_mod.KEPT_TABLES:
            try:
                columns = [r[1] for r in db.execute(f"PRAGMA old.table_info({table})")]
                if columns:
                    names = ", ".join(columns)
                    db.execute(f"INSERT OR IGNORE INTO main.{table} ({names}) SELECT {names} FROM old.{table}")
            except sqlite3.DatabaseError as exc:  # an unreadable old index is often why we rebuild
                log.info("previous %s not kept: %s", table, exc)
    finally:
        db.execute("DETACH DATABASE old")


def _read_works(archive: Archive, old_db: sqlite3.Connection | None, entries: dict[int, ledger_mod.Entry],
                report: Report) -> dict[int, _Work]:
    ids = sorted(set(archive.work_folders()))

    def read(aid: int) -> _Work | None:
        try:
            record, raw = archive.read_artwork(aid)
            return _Work(record, raw)
        except RecordError as exc:  # (a NewerFormat record is not one: it stops the rebuild)
            return salvage(archive, aid, str(exc), old_db, entries.get(aid))

    # A bucket answers each GET after a round trip: read several at once.
    workers = 16 if archive.store.blocking else 1
    works: dict[int, _Work] = {}
    with ThreadPoolExecutor(workers, thread_name_prefix="reindex") as pool:
        for aid, work in zip(ids, pool.map(read, ids)):
            if work is None:
                continue
            if work.problem:
                report.problems.append(f"{work.problem}: the work is kept, rebuilt from {work.source}; "
                                       "`pbe-fs doctor --repair` writes its record back")
            works[aid] = work
    return works


def _settle_numbers(archive: Archive, works: dict[int, _Work], tombstones: list[dict[str, Any]],
                    entries: dict[int, ledger_mod.Entry], ledger: ledger_mod.Ledger, report: Report) -> int:
    """Give every work a unique ingress number, changing as few as possible;
    return the highest number used or reserved."""
    claims: dict[int, list[int]] = {}
    for aid, work in works.items():
        if isinstance(work.record.get("seq"), int) and work.record["seq"] > 0:
            claims.setdefault(work.record["seq"], []).append(aid)
    taken = {t["seq"] for t in tombstones if t["id"] not in works}
    taken |= {e.seq for e in entries.values() if e.seq and e.id not in works}
    losers: list[int] = [aid for aid, w in works.items() if not (isinstance(w.record.get("seq"), int) and w.record["seq"] > 0)]
    for seq, aids in claims.items():
        aids.sort(key=lambda a: _precedence(works[a].record))
        if seq in taken:  # a deleted work keeps its number for when it comes back
            losers += aids
        else:
            losers += aids[1:]
    high = max([*claims, *taken, 0])
    for aid in sorted(losers, key=lambda a: _precedence(works[a].record)):
        high += 1
        record = works[aid].record
        old = record.get("seq")
        record["seq"] = high
        record["history"].append({"at": _now(), "event": "renumbered", "from": old, "to": high})
        ledger.append({"event": "renumbered", "id": aid, "seq": high, "from": old})
        if not works[aid].problem:
            archive.update_record(aid, record)
        report.renumbered.append((aid, old or 0, high))
        report.problems.append(f"artworks/{aid}: ingress number {old} was also another work's; it is now {high}"
                               if old else f"artworks/{aid}: its ingress number survived nowhere; it is now {high}")
    return high


def _precedence(record: dict[str, Any]) -> tuple[str, str, int]:
    first = next((h.get("at", "") for h in record.get("history", []) if h.get("event") == "bookmarked"), "") or "~"
    return first, record.get("archived_at") or "~", int(record["id"])


# -- salvage ------------------------------------------------------------------
def salvage(archive: Archive, aid: int, problem: str, old_db: sqlite3.Connection | None,
            entry: ledger_mod.Entry | None) -> _Work | None:
    """A record for a work whose pbe.json cannot be trusted, from whatever
    survives; None when nothing says this folder is a work (a bucket upload
    cut short before its record: the next sync finishes it)."""
    raw = _raw_or_none(archive, aid)
    if old_db is not None:
        with _OLD_LOCK:  # rebuilds read records from several threads
            built = record_from_index(old_db, aid, raw)
        if built is not None:
            return _Work(*built, problem=problem, source="the index")
    if archive.store.kind != "local" and entry is None:
        return None
    record = _from_files(archive, aid, raw, entry)
    if not record["files"]:
        return None
    return _Work(record, raw or _raw_from(record, aid), problem=problem,
                 source="the ledger and the files" if entry else "the files")


def _raw_or_none(archive: Archive, aid: int) -> dict[str, Any] | None:
    try:
        return archive.read_raw(aid)
    except RecordError:
        return None


def record_from_index(db: sqlite3.Connection, aid: int,
                      raw: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """(record, raw) as the index knows them, or None; a record that cannot be
    read must not hide its work, so views and rebuilds fall back on this."""
    try:
        row = db.execute("SELECT w.*, a.name AS artist_name, a.account AS artist_account FROM artworks w"
                         " JOIN artists a ON a.id = w.artist_id WHERE w.id = ?", (aid,)).fetchone()
        if row is None:
            return None
        files = [dict(f) for f in db.execute("SELECT * FROM files WHERE artwork_id = ? ORDER BY path", (aid,))]
        history = [{"at": h["at"], "event": h["event"], **_json(h["detail"])}
                   for h in db.execute("SELECT * FROM history WHERE artwork_id = ? ORDER BY idx", (aid,))]
        frames = [{"file": f["file"], "delay": f["delay"]}
                  for f in db.execute("SELECT * FROM ugoira_frames WHERE artwork_id = ? ORDER BY idx", (aid,))]
        tags = [{"name": t["name"], "translated_name": t["translated_name"]}
                for t in db.execute("SELECT * FROM tags WHERE artwork_id = ? ORDER BY position", (aid,))]
    except sqlite3.DatabaseError:
        return None
    for f in files:
        f.pop("artwork_id", None)
    record = {
        "format": RECORD_FORMAT, "id": aid, "seq": row["seq"], "restrict": row["restrict"],
        "bookmarked": bool(row["bookmarked"]), "archived_at": row["archived_at"],
        "gone": {"at": row["state_at"], "reason": row["state_reason"]} if row["state"] == "gone" else None,
        "ugoira": {"frames": frames, "source": "frames"} if frames else None,
        "files": files,
        "history": history + [{"at": _now(), "event": "record_rebuilt", "from": "index"}],
    }
    if raw is None:
        raw = {"id": aid, "title": row["title"], "type": row["type"], "create_date": row["create_date"],
               "user": {"id": row["artist_id"], "name": row["artist_name"], "account": row["artist_account"]},
               "x_restrict": row["x_restrict"], "sanity_level": row["sanity_level"], "illust_ai_type": row["ai_type"],
               "page_count": row["page_count"], "width": row["width"], "height": row["height"], "tags": tags}
    return record, raw


def _json(text: str) -> dict[str, Any]:
    try:
        data = json.loads(text)
        return data if isinstance(data, dict) else {}
    except ValueError:
        return {}


def _from_files(archive: Archive, aid: int, raw: dict[str, Any] | None,
                entry: ledger_mod.Entry | None) -> dict[str, Any]:
    """Read every file of the work back: sizes, checksums, pixels."""
    specs = {}
    if raw is not None:
        try:
            specs = {s.path: s for s in illust.file_specs(raw, ["original", *_SIZES])}
        except ValueError:
            specs = {}
    files = []
    oldest = ""
    for path in archive.file_keys(aid):
        key = artwork_key(aid, path)
        spec = specs.get(path)
        role = spec.role if spec else (path.split("/")[0] if path.split("/")[0] in _SIZES else
                                       "ugoira_zip" if path.endswith(".zip") else "original")
        if "/" in path and role == "original":
            continue  # not one of ours
        page = spec.page if spec else int(m.group(1)) if (m := _PAGE.search(path)) else 0
        with archive.local_copy(key) as (local, mtime):
            digest = digest_file(local)
            try:
                image = probe(local, "zip" if role == "ugoira_zip" else "image")
            except Exception:  # a damaged file is still the user's: keep it, recorded as it is
                image = (0, 0, "", "")
        stamp = datetime.fromtimestamp(mtime, timezone.utc).replace(microsecond=0).isoformat()
        oldest = min(oldest or stamp, stamp)
        files.append(StoredFile(path, role, page, digest.size, digest.crc32, digest.sha256, *image,
                                url=spec.url if spec else "").to_json())
    history = []
    if entry and entry.bookmarked_at:
        history.append({"at": entry.bookmarked_at, "event": "bookmarked", "restrict": entry.restrict or "public"})
    if entry and entry.gone:
        history.append({"at": entry.gone.get("at"), "event": "gone", "reason": entry.gone.get("reason")})
    history.append({"at": _now(), "event": "record_rebuilt", "from": "ledger" if entry else "files"})
    return {
        "format": RECORD_FORMAT, "id": aid, "seq": entry.seq if entry and entry.seq else 0,
        "restrict": (entry.restrict if entry else None) or "public", "bookmarked": True,
        "archived_at": (entry.archived_at if entry else None) or oldest or _now(),
        "gone": entry.gone if entry else None, "ugoira": None,
        "files": sorted(files, key=lambda f: f["path"]), "history": history,
    }


def _raw_from(record: dict[str, Any], aid: int) -> dict[str, Any]:
    """A minimal illust object when pixiv.json is lost too: enough for names."""
    pages = {f["page"] for f in record["files"] if f["role"] == "original"} or {0}
    return {"id": aid, "title": "", "type": "illust", "create_date": "", "user": {"id": 0, "name": "", "account": ""},
            "page_count": max(pages) + 1, "tags": []}
