"""Putting a new work into the archive: the one commit path.

A sync's new work and an imported one are committed the same way, so that
an imported work is an ordinary work: its folder is assembled under
``.pbe/incoming``, then ``pixiv.json`` and ``pbe.json`` are written, the
folder is published (a rename, or verified uploads with the record last),
the ledger learns its number and the index gets its rows in one
transaction. A kill before the publish leaves nothing visible; a kill
after it leaves a work the next run adopts from its record.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .archive import RAW, RECORD, Archive, write_json
from .index import Index
from .ledger import Ledger


def commit_work(archive: Archive, index: Index, ledger: Ledger, folder: Path, record: dict[str, Any],
                raw: dict[str, Any]) -> None:
    """Write the record and raw JSON into ``folder`` and make the work visible."""
    aid = int(record["id"])
    write_json(folder / RAW, raw)
    write_json(folder / RECORD, record)
    archive.publish(aid)
    ledger.archived(record)
    index_work(index, record, raw)
    archive.remove_side("lost", aid)
    archive.remove_side("deleted", aid)


def index_work(index: Index, record: dict[str, Any], raw: dict[str, Any]) -> None:
    """(Re)write a work's rows; it is no longer pending once it is there."""
    with index.write() as db:
        Index.put_artwork(db, record, raw)
        db.execute("DELETE FROM pending WHERE id = ?", (record["id"],))
