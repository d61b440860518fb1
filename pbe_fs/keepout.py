"""Keep a deleted work out of `sync --full`, or let it back in.

`pbe-fs delete` leaves a tombstone (``deleted/ID.json``) that keeps the
work's ingress number and history; a later ``sync --full`` fetches the work
again while it is still bookmarked. ``keep_out`` in that tombstone stops
that, until `pbe-fs let-in ID` clears it. Both are events in the work's
history, which the tombstone carries and a re-fetched work inherits.
"""

from __future__ import annotations

from datetime import datetime, timezone

from .archive import Archive
from .errors import NotArchived


def set_keep_out(archive: Archive, artwork_id: int, keep: bool) -> bool:
    """Mark the tombstone; False when it already said so."""
    with archive.lock():
        tombstone = archive.read_side("deleted", artwork_id)
        if not tombstone:
            raise NotArchived(f"{artwork_id} has not been deleted from the archive"
                              + (f": `pbe-fs delete --keep-out {artwork_id}` deletes it and keeps it out" if keep else ""))
        if bool(tombstone.get("keep_out")) == keep:
            return False
        at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        tombstone["keep_out"] = keep
        tombstone["history"] = list(tombstone.get("history") or []) + [{"at": at, "event": "kept_out" if keep else "let_in"}]
        archive.write_side("deleted", artwork_id, tombstone)
        return True


def kept_out(archive: Archive) -> list[dict]:
    """The tombstones that keep their work out, oldest deletion first."""
    return sorted((t for t in archive.side_records("deleted") if t.get("keep_out")), key=lambda t: t.get("deleted_at", ""))
