"""What grids need about every work, read from the index once per
generation: ingress number, creation date, NSFW and the first page's file name
in each quality (so a 50- or 20,000-thumbnail grid builds its image links
without opening any work's record)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from ..artwork import top_quality
from ..tree import Tree


@dataclass(slots=True)
class Entry:
    seq: int
    date: str
    type: str
    pages: int
    nsfw: bool
    ai: bool
    first: dict[str, str] = field(default_factory=dict)  # role -> first page's file name


class Catalog:
    def __init__(self, tree: Tree) -> None:
        self.tree = tree
        self._generation = -2
        self._entries: dict[int, Entry] = {}
        self._seq: dict[int, int] = {}
        self._date: dict[int, tuple[str, int]] = {}
        self._safe: frozenset[int] = frozenset()
        self._ai: frozenset[int] = frozenset()
        self._lock = threading.Lock()

    def entries(self) -> dict[int, Entry]:
        self.tree.refresh()
        if self._generation != self.tree.generation:
            with self._lock:
                generation = self.tree.generation
                db = self.tree.index.db
                entries = {r[0]: Entry(r[1], r[2], r[3], r[4], r[5] > 0, r[6] == 2) for r in db.execute(
                    "SELECT id, seq, create_date, type, page_count, x_restrict, ai_type FROM artworks")}
                for aid, role, path in db.execute("SELECT artwork_id, role, path FROM files WHERE page = 0"):
                    entry = entries.get(aid)
                    if entry is not None and role not in entry.first:
                        entry.first[role] = PurePosixPath(path).name
                # sort keys and the NSFW-free set, so sorting and filtering thousands of search
                # results are C-level look-ups
                self._seq = {aid: e.seq for aid, e in entries.items()}
                self._date = {aid: (e.date, aid) for aid, e in entries.items()}
                self._safe = frozenset(aid for aid, e in entries.items() if not e.nsfw)
                self._ai = frozenset(aid for aid, e in entries.items() if e.ai)
                self._entries, self._generation = entries, generation
        return self._entries

    def safe(self) -> frozenset[int]:
        """Ids of the works that are not NSFW."""
        self.entries()
        return self._safe

    def get(self, artwork_id: int) -> Entry | None:
        return self.entries().get(artwork_id)

    def thumbnail(self, folder: tuple[str, ...], artwork_id: int, quality: str) -> tuple[str, ...] | None:
        """The tree path of a work's first page in a quality (the nearest
        archived one when that quality is not), given its folder's path."""
        entry = self.get(artwork_id)
        if entry is None or not entry.first:
            return None
        order = [quality] + [q for q in ("square_medium", "medium", "large", "original") if q != quality]
        role = next((q for q in order if q in entry.first), None)
        if role is None:
            return None
        top = top_quality(self.tree.top_quality, entry.first)
        return folder + ((entry.first[role],) if role == top else (role, entry.first[role]))

    def ai(self) -> frozenset[int]:
        """Ids of the AI-generated works."""
        self.entries()
        return self._ai

    def sort(self, ids: list[int], key: str, newest_first: bool) -> list[int]:
        """ids by ingress number ("seq") or creation date; ids the index
        does not know go last."""
        self.entries()
        keys = self._seq if key == "seq" else self._date
        known = [i for i in ids if i in keys]
        unknown = [i for i in ids if i not in keys] if len(known) != len(ids) else []
        return sorted(known, key=keys.__getitem__, reverse=newest_first) + unknown
