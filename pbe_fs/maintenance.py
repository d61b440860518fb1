"""Archive maintenance under the archive lock: reindex and delete."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from typing import Any

from . import index as index_mod
from .archive import Archive, RecordError
from .errors import NotArchived, PbeError
from .index import Index
from .ledger import Ledger
from .recovery import Report, open_index, rebuild

log = logging.getLogger("pbe_fs")


def _now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def reindex(archive: Archive) -> Report:
    """Rebuild the index from the archive's files alone.

    The new index is built beside the old one and renamed over it, so a
    failure halfway leaves the old index in place; the old one still lends
    what it knows to records that cannot be read (see ``recovery``).
    """
    archive.ensure()
    with archive.lock():
        if index_mod.inspect(archive.index_path)[0] == "newer":
            open_index(archive, locked=True)  # refuses, in one line
        old = archive.index_path if archive.index_path.exists() else None
        if getattr(archive.store, "follow", False):  # a follower goes on from the journal's head
            from .follow import rebuild_at_head
            return rebuild_at_head(archive, old)
        return rebuild(archive, old=old)


def delete(archive: Archive, artwork_id: int, *, force: bool = False) -> None:
    """Remove one artwork from the archive, keeping its ingress number.

    A tombstone in ``deleted/`` remembers the number and history, so a later
    ``sync --full`` that fetches it again puts it back where it was.
    """
    with archive.lock():
        index = open_index(archive, locked=True)
        try:
            if index.artwork(artwork_id) is None and not archive.has_artwork(artwork_id):
                raise NotArchived(f"{artwork_id} is not in the archive")
            record = _record_or_indexed(archive, index, artwork_id)
            if record.get("gone") and not force:
                raise PbeError(f"{artwork_id} is gone from pixiv: this archive holds its only copy; "
                               "use `pbe-fs delete --force` to delete it anyway")
            at = _now()
            tombstone = {"id": artwork_id, "seq": record["seq"], "deleted_at": at,
                         "history": record.get("history", []) + [{"at": at, "event": "deleted_from_archive"}]}
            archive.write_side("deleted", artwork_id, tombstone)
            ledger = Ledger(archive.store)
            ledger.append({"event": "deleted", "id": artwork_id, "seq": record["seq"]})
            ledger.close()
            archive.remove_artwork(artwork_id)
            with index.write() as db:
                Index.drop_artwork(db, artwork_id)
                Index.put_deleted(db, tombstone)
        finally:
            index.close()


def _record_or_indexed(archive: Archive, index: Index, artwork_id: int) -> dict[str, Any]:
    """The work's record; when it cannot be read, what the index knows
    (its number, state and history must survive the deletion's tombstone)."""
    try:
        return archive.read_artwork(artwork_id)[0]
    except RecordError:
        row = index.artwork(artwork_id)
        if row is None:
            raise
        history = [{"at": h["at"], "event": h["event"]} for h in
                   index.db.execute("SELECT at, event FROM history WHERE artwork_id = ? ORDER BY idx", (artwork_id,))]
        return {"seq": row["seq"], "gone": {"reason": row["state_reason"]} if row["state"] == "gone" else None,
                "history": history}
