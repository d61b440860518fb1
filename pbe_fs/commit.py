"""Putting new works into the archive: the one commit path.

A sync's new work and an imported one are committed the same way, so that
an imported work is an ordinary work: its folder is assembled under
``.pbe/incoming``, then ``pixiv.json`` and ``pbe.json`` are written, the
folder is published (a rename, or verified uploads with the record last),
the ledger learns its number and the index gets its rows in one
transaction. A kill before the publish leaves nothing visible; a kill
after it leaves a work the next run adopts from its record.

Several works may be committed at once (an import does): in a folder they
then cost one flush of the file system before the renames and one after,
instead of three per work, which on a real disk is the difference between
minutes and hours for ten thousand works.
"""

from __future__ import annotations

import ctypes
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .archive import RAW, RECORD, Archive, artwork_key, dumps, write_json
from .index import Index
from .ledger import Ledger
from .storage.local import LocalStore, fsync_dir

Work = tuple[Path, dict[str, Any], dict[str, Any]]  # (its incoming folder, record, raw)


def commit_work(archive: Archive, index: Index, ledger: Ledger, folder: Path, record: dict[str, Any],
                raw: dict[str, Any]) -> None:
    """Write the record and raw JSON into ``folder`` and make the work visible."""
    commit_works(archive, index, ledger, [(folder, record, raw)])


def commit_works(archive: Archive, index: Index, ledger: Ledger, works: list[Work], *, written: bool = False) -> None:
    """``commit_work`` for several works, with one index transaction.
    ``written``: their folders hold their record and raw JSON already (an
    import's workers write them beside the files they checked)."""
    publish_works(archive, works, written=written)
    record_works(archive, index, ledger, works)


def publish_works(archive: Archive, works: list[Work], *, written: bool = False) -> None:
    """The first half of a commit: the works' folders become visible, and
    stay so through a crash. Touches neither the index nor the ledger, so an
    import runs it on a thread while it goes on placing the next works; a
    kill after it leaves works the next run adopts from their records."""
    batch = len(works) > 1 and isinstance(archive.store, LocalStore)
    if not written:
        _write_json_files(works, batch)
    if batch:
        _flush(archive.root)
        for folder, record, _ in works:
            archive.store.publish(folder, artwork_key(int(record["id"])), durable=False)  # type: ignore[call-arg]
        fsync_dir(archive.root / "artworks")
    else:
        for _, record, _ in works:
            archive.publish(int(record["id"]))


def _write_json_files(works: list[Work], batch: bool) -> None:
    """Each work's raw and record JSON, into its unpublished folder."""
    if batch:  # unseen until published, and flushed before that; creating files is waiting, so side by side
        with ThreadPoolExecutor(4, thread_name_prefix="commit") as pool:
            list(pool.map(lambda w: _write(w[0] / RAW, dumps(w[2])) and _write(w[0] / RECORD, dumps(w[1])), works))
    else:
        for folder, record, raw in works:
            write_json(folder / RAW, raw)
            write_json(folder / RECORD, record)


def record_works(archive: Archive, index: Index, ledger: Ledger, works: list[Work]) -> None:
    """The second half of a commit: the ledger and the index learn the
    published works (one index transaction)."""
    ledger.archived(*(record for _, record, _ in works))
    index_works(index, [(record, raw) for _, record, raw in works])
    for _, record, _ in works:
        archive.remove_side("lost", int(record["id"]))
        archive.remove_side("deleted", int(record["id"]))


def index_work(index: Index, record: dict[str, Any], raw: dict[str, Any]) -> None:
    """(Re)write a work's rows; it is no longer pending once it is there."""
    index_works(index, [(record, raw)])


def index_works(index: Index, works: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    with index.write() as db:
        for record, raw in works:
            Index.put_artwork(db, record, raw)
            db.execute("DELETE FROM pending WHERE id = ?", (record["id"],))


def _write(path: Path, data: bytes) -> bool:
    with open(path, "wb") as fh:
        fh.write(data)
    return True


def _flush(path: Path) -> None:
    """Everything written to the file system holding ``path`` reaches the
    disk (syncfs; a global sync where there is none)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if getattr(libc, "syncfs", None) is None or libc.syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
