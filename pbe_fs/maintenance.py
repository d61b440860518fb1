"""Archive maintenance under the archive lock: reindex and delete."""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

from .archive import Archive
from .errors import NotArchived, PbeError
from .index import Index

log = logging.getLogger("pbe_fs")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def reindex(archive: Archive) -> int:
    """Rebuild the index from the archive's files alone; return the work count.

    The new index is built beside the old one and renamed over it, so a
    failure halfway leaves the old index in place. Sync history (which is
    about runs, not about the archive) is carried over when it can be read.
    """
    archive.ensure()
    with archive.lock():
        target = archive.index_path
        fresh = target.with_name(target.name + ".new")
        for suffix in ("", "-wal", "-shm"):
            Path(str(fresh) + suffix).unlink(missing_ok=True)
        index = Index(fresh)
        count = 0
        try:
            with index.write() as db:
                # A bucket answers each GET after a round trip: read several at once.
                workers = 16 if archive.store.blocking else 1
                with ThreadPoolExecutor(workers, thread_name_prefix="reindex") as pool:
                    for record, raw in pool.map(archive.read_artwork, sorted(archive.artwork_ids())):
                        Index.put_artwork(db, record, raw)
                        count += 1
                for data in archive.side_records("lost"):
                    Index.put_lost(db, data)
                for data in archive.side_records("deleted"):
                    Index.put_deleted(db, data)
                if target.exists():
                    db.execute("ATTACH DATABASE ? AS old", (str(target),))
                    try:
                        db.execute("INSERT INTO sync_runs SELECT * FROM old.sync_runs")
                    except Exception as exc:  # an unreadable old index is why one reindexes
                        log.warning("previous sync history not kept: %s", exc)
            try:
                index.db.execute("DETACH DATABASE old")
            except Exception:
                pass
            index.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            index.close()
        for suffix in ("-wal", "-shm"):
            Path(str(target) + suffix).unlink(missing_ok=True)
        os.replace(fresh, target)
        return count


def delete(archive: Archive, artwork_id: int, *, force: bool = False) -> None:
    """Remove one artwork from the archive, keeping its ingress number.

    A tombstone in ``deleted/`` remembers the number and history, so a later
    ``sync --full`` that fetches it again puts it back where it was.
    """
    with archive.lock():
        index = Index(archive.index_path)
        try:
            if not archive.has_artwork(artwork_id):
                raise NotArchived(f"{artwork_id} is not in the archive")
            record, _ = archive.read_artwork(artwork_id)
            if record.get("gone") and not force:
                raise PbeError(f"{artwork_id} is gone from pixiv: this archive holds its only copy; "
                               "use `pbe-fs delete --force` to delete it anyway")
            at = _now()
            tombstone = {"id": artwork_id, "seq": record["seq"], "deleted_at": at,
                         "history": record.get("history", []) + [{"at": at, "event": "deleted_from_archive"}]}
            archive.write_side("deleted", artwork_id, tombstone)
            archive.remove_artwork(artwork_id)
            with index.write() as db:
                Index.drop_artwork(db, artwork_id)
                Index.put_deleted(db, tombstone)
        finally:
            index.close()
