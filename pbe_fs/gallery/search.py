"""Full-text search over the archive: SQLite FTS5 (trigram tokenizer, so
Japanese titles and tags match on any three characters, shorter terms by
substring) over title, tags with their translations, artist name and
account, and caption.

The table lives in its own file under ``cache.path``, built from the
index (titles, tags, artists) and each work's ``pixiv.json`` (captions),
and brought up to date when the index generation changes: only works
whose indexed fields changed are read again. The index's own schema is
left alone; this file can be deleted at any time and is rebuilt.
"""

from __future__ import annotations

import hashlib
import html
import logging
import re
import sqlite3
import threading
from pathlib import Path

from ..tree import Tree

log = logging.getLogger("pbe_fs.search")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS docs (id INTEGER PRIMARY KEY, sig TEXT NOT NULL);
CREATE VIRTUAL TABLE IF NOT EXISTS fts USING fts5(title, tags, artist, caption, tokenize='trigram');
"""
_TAG = re.compile(r"<[^>]*>")
MAX_TERMS = 8


def _plain(caption: str) -> str:
    return html.unescape(_TAG.sub(" ", caption or ""))


class Search:
    def __init__(self, tree: Tree, path: Path) -> None:
        self.tree = tree
        self.path = path
        self._generation = -2
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA journal_mode=WAL")
            db.executescript(_SCHEMA)
            self._db = db
        return self._db

    def update(self) -> sqlite3.Connection:
        """Bring the table up to the index's generation."""
        self.tree.refresh()
        with self._lock:
            db = self._open()
            if self._generation == self.tree.generation:
                return db
            generation = self.tree.generation
            index = self.tree.index.db
            tags: dict[int, list[str]] = {}
            for aid, name, translated in index.execute(
                    "SELECT artwork_id, name, translated_name FROM tags ORDER BY artwork_id, position"):
                tags.setdefault(aid, []).extend([name] + ([translated] if translated else []))
            wanted: dict[int, tuple[str, str, str, str]] = {}
            for aid, title, name, account in index.execute(
                    "SELECT w.id, w.title, a.name, a.account FROM artworks w JOIN artists a ON a.id = w.artist_id"):
                fields = (title, " ".join(tags.get(aid, [])), f"{name} {account}")
                sig = hashlib.sha256("\0".join(fields).encode()).hexdigest()[:32]
                wanted[aid] = (*fields, sig)
            have = dict(db.execute("SELECT id, sig FROM docs"))
            gone = [aid for aid in have if aid not in wanted]
            changed = [aid for aid, row in wanted.items() if have.get(aid) != row[3]]
            db.execute("BEGIN")
            try:
                for aid in gone + changed:
                    db.execute("DELETE FROM fts WHERE rowid = ?", (aid,))
                    db.execute("DELETE FROM docs WHERE id = ?", (aid,))
                for aid in changed:
                    title, tag_text, artist, sig = wanted[aid]
                    # the tree's record: on a bucket the local copy, when there is one
                    found = self.tree.record(aid)
                    caption = _plain(str(found[1].get("caption") or "")) if found else ""
                    db.execute("INSERT INTO fts (rowid, title, tags, artist, caption) VALUES (?,?,?,?,?)",
                               (aid, title, tag_text, artist, caption))
                    db.execute("INSERT INTO docs VALUES (?, ?)", (aid, sig))
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
            if gone or changed:
                log.info("search: %d works indexed, %d dropped", len(changed), len(gone))
            self._generation = generation
            return db

    def find(self, query: str) -> list[int]:
        """Ids of the works matching every term of query."""
        terms = [t for t in query.split() if t][:MAX_TERMS]
        if not terms:
            return []
        db = self.update()
        long_terms = [t for t in terms if len(t) >= 3]
        short_terms = [t for t in terms if len(t) < 3]
        where, args = [], []
        if long_terms:
            where.append("fts MATCH ?")
            args.append(" AND ".join('"' + t.replace('"', '""') + '"' for t in long_terms))
        for t in short_terms:  # trigram cannot match one or two characters: a substring test
            where.append("instr(lower(title || ' ' || tags || ' ' || artist || ' ' || caption), ?) > 0")
            args.append(t.lower())
        with self._lock:
            rows = db.execute(f"SELECT rowid FROM fts WHERE {' AND '.join(where)}", args).fetchall()
        return [r[0] for r in rows]

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
