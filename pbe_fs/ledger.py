"""The ledger: an append-only log of every work's number, dates and fate.

Each work's ``pbe.json`` is its record, and the index is built from the
records. The ledger is the copy of last resort for what no download can
bring back: the ingress number, when the work was archived and first
bookmarked, and when and why it went gone. It lives beside the records
(``ledger/*.jsonl`` in the folder or the bucket), one segment per writer
(a sync run, a reindex), one JSON object per line, never rewritten. A
bucket has no append, so there a writer puts its entries as numbered parts
(``<segment>.00001.jsonl`` …), one every ``_FLUSH_EVERY`` entries and one
when it closes: each object is written once.

``fold`` reads every segment and answers, for each work id, the last known
state: a rebuild uses it when a record is unreadable or gone.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from .storage import Store
from .storage.local import LocalStore

log = logging.getLogger("pbe_fs.ledger")

PREFIX = "ledger"
_FLUSH_EVERY = 200


@dataclass
class Entry:
    """What the ledger knows of one work."""

    id: int
    seq: int | None = None
    archived_at: str | None = None
    bookmarked_at: str | None = None
    restrict: str | None = None
    gone: dict[str, Any] | None = None
    deleted: bool = False


def _stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")


class Ledger:
    """One writer's segment. Thread-safe: a sync commits from several threads."""

    def __init__(self, store: Store, name: str | None = None) -> None:
        self.store = store
        self.key = f"{PREFIX}/{name or _stamp()}-{os.getpid()}.jsonl"
        self._lock = threading.Lock()
        self._lines: list[bytes] = []
        self._parts = 0

    # -- writing -------------------------------------------------------------
    def archived(self, *records: dict[str, Any]) -> None:
        """Works committed (a batch of them costs one append)."""
        entries = []
        for record in records:
            history = record.get("history") or []
            bookmarked = next((h["at"] for h in history if h.get("event") == "bookmarked"), None)
            entries.append({"event": "archived", "id": record["id"], "seq": record["seq"],
                            "archived_at": record.get("archived_at"), "bookmarked_at": bookmarked,
                            "restrict": record.get("restrict"), "gone": record.get("gone")})
        self.append(*entries)

    def append(self, *entries: dict[str, Any]) -> None:
        at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
        lines = [(json.dumps({"at": at, **entry}, ensure_ascii=False, sort_keys=True) + "\n").encode()
                 for entry in entries]
        if not lines:
            return
        with self._lock:
            if isinstance(self.store, LocalStore):
                path = self.store.root / self.key
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path, "ab") as fh:
                    fh.write(b"".join(lines))  # one write: whole lines, in order
                return
            self._lines.extend(lines)
            if len(self._lines) >= _FLUSH_EVERY:
                self._flush_locked()

    def close(self) -> None:
        """Put what is buffered (a bucket); a folder's segment is synced to disk."""
        with self._lock:
            if isinstance(self.store, LocalStore):
                path = self.store.root / self.key
                if path.exists():
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                return
            if self._lines:
                self._flush_locked()

    def _flush_locked(self) -> None:
        self._parts += 1
        self.store.write_bytes(f"{self.key[:-len('.jsonl')]}.{self._parts:05d}.jsonl", b"".join(self._lines))
        self._lines.clear()


def fold(store: Store) -> dict[int, Entry]:
    """Every work's last known number, dates and state, from all segments.

    Segments are read in name order (they start with their UTC time), lines
    in file order; a line that does not parse (a torn last write) is skipped.
    """
    entries: dict[int, Entry] = {}
    bad = 0
    for key in sorted(store.keys(PREFIX)):
        if not key.endswith(".jsonl"):
            continue
        try:
            data = store.read_bytes(key)
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            try:
                item = json.loads(line)
                aid = int(item["id"])
            except (ValueError, KeyError, TypeError):
                bad += 1
                continue
            _apply(entries.setdefault(aid, Entry(aid)), item)
    if bad:
        log.warning("ledger: %d unreadable lines skipped", bad)
    return entries


def _apply(entry: Entry, item: dict[str, Any]) -> None:
    event = item.get("event")
    if event == "archived":
        entry.seq = item.get("seq", entry.seq)
        entry.archived_at = entry.archived_at or item.get("archived_at")
        entry.bookmarked_at = entry.bookmarked_at or item.get("bookmarked_at")
        entry.restrict = item.get("restrict") or entry.restrict
        entry.gone = item.get("gone") if "gone" in item else entry.gone
        entry.deleted = False
    elif event == "renumbered":
        entry.seq = item["seq"]
    elif event == "gone":
        entry.gone = {"at": item.get("at"), "reason": item.get("reason")}
    elif event == "restored":
        entry.gone = None
    elif event == "restrict":
        entry.restrict = item.get("to") or entry.restrict
    elif event == "deleted":
        entry.deleted = True
