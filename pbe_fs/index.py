"""The SQLite index: fast answers about the archive, rebuildable from it.

Everything here is derived from the archive's files (``pbe.json`` and
``pixiv.json`` per artwork, ``lost/`` and ``deleted/`` records) by one
function, ``put_artwork``, which both a sync and ``reindex`` call: that is
what makes a reindexed archive equal to a synced one.

WAL mode lets any number of readers (a mount, a WebDAV server) read while a
sync writes. Every write transaction bumps ``generation``, a single integer
readers poll to learn that something changed.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from . import illust

# Version 2 added the scrub, refresh and problem tables (and the archive's ledger).
# Bump it, and add the step to ``UPGRADES`` in recovery.py, whenever the
# schema changes: an older pbe-fs then refuses the newer index in one line.
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS artists (
    id INTEGER PRIMARY KEY, name TEXT NOT NULL, account TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS artworks (
    id INTEGER PRIMARY KEY,
    seq INTEGER NOT NULL UNIQUE,          -- ingress number: 1 = oldest bookmark
    restrict TEXT NOT NULL,               -- public | private
    bookmarked INTEGER NOT NULL,
    state TEXT NOT NULL,                  -- live | gone
    state_reason TEXT,
    state_at TEXT,
    title TEXT NOT NULL,
    type TEXT NOT NULL,
    artist_id INTEGER NOT NULL REFERENCES artists(id),
    create_date TEXT NOT NULL,
    x_restrict INTEGER NOT NULL,
    sanity_level INTEGER NOT NULL,
    ai_type INTEGER NOT NULL,
    page_count INTEGER NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    archived_at TEXT NOT NULL,
    bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS artworks_artist ON artworks(artist_id);
CREATE INDEX IF NOT EXISTS artworks_date ON artworks(create_date);
CREATE TABLE IF NOT EXISTS files (
    artwork_id INTEGER NOT NULL, path TEXT NOT NULL, role TEXT NOT NULL, page INTEGER NOT NULL,
    size INTEGER NOT NULL, crc32 INTEGER NOT NULL, sha256 TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, format TEXT NOT NULL, mode TEXT NOT NULL, url TEXT NOT NULL,
    PRIMARY KEY (artwork_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS tags (
    artwork_id INTEGER NOT NULL, position INTEGER NOT NULL, name TEXT NOT NULL, translated_name TEXT,
    PRIMARY KEY (artwork_id, position)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS tags_name ON tags(name);
CREATE TABLE IF NOT EXISTS ugoira_frames (
    artwork_id INTEGER NOT NULL, idx INTEGER NOT NULL, file TEXT NOT NULL, delay INTEGER NOT NULL,
    PRIMARY KEY (artwork_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    artwork_id INTEGER NOT NULL, idx INTEGER NOT NULL, at TEXT NOT NULL, event TEXT NOT NULL, detail TEXT NOT NULL,
    PRIMARY KEY (artwork_id, idx)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lost (
    id INTEGER PRIMARY KEY, restrict TEXT NOT NULL, reason TEXT NOT NULL, first_seen TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS deleted (
    id INTEGER PRIMARY KEY, seq INTEGER NOT NULL, deleted_at TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pending (
    id INTEGER PRIMARY KEY, found INTEGER NOT NULL, seq INTEGER UNIQUE, restrict TEXT NOT NULL,
    raw TEXT NOT NULL, ugoira TEXT, history TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS sync_runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT, started_at TEXT NOT NULL, finished_at TEXT,
    mode TEXT NOT NULL, status TEXT NOT NULL, new_works INTEGER NOT NULL DEFAULT 0,
    files INTEGER NOT NULL DEFAULT 0, bytes INTEGER NOT NULL DEFAULT 0,
    gone INTEGER NOT NULL DEFAULT 0, lost INTEGER NOT NULL DEFAULT 0, message TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS scrubbed (
    artwork_id INTEGER PRIMARY KEY, at TEXT NOT NULL);  -- last time every file was re-read
CREATE TABLE IF NOT EXISTS refreshed (
    artwork_id INTEGER PRIMARY KEY, at TEXT NOT NULL);  -- last time its metadata was compared with pixiv's
CREATE TABLE IF NOT EXISTS damage (
    artwork_id INTEGER NOT NULL, path TEXT NOT NULL, problem TEXT NOT NULL, found_at TEXT NOT NULL,
    PRIMARY KEY (artwork_id, path)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS problems (                 -- records that could not be read as they are
    artwork_id INTEGER PRIMARY KEY, problem TEXT NOT NULL, source TEXT NOT NULL);
INSERT OR IGNORE INTO meta VALUES ('schema', 2), ('generation', 0), ('next_seq', 1);
"""

# Every table a current index must have: a file lacking one is not ours, or damaged.
TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", _SCHEMA))


def inspect(path: Path) -> tuple[str, str]:
    """What state the index file is in, cheaply: ("ok" | "missing" |
    "damaged" | "older" | "newer", detail).

    Reads the header and the schema, never the whole file: a full integrity
    check grows with the archive and belongs to ``doctor`` and ``reindex``.
    Everything goes through SQLite: opening and closing the file by hand
    would drop the POSIX locks of this process's live connections to it.
    """
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        return "missing", ""
    except OSError as exc:
        return "damaged", exc.strerror or str(exc)
    if size == 0:
        return "damaged", "empty file"
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
        try:
            names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone() if "meta" in names else None
            pages = conn.execute("PRAGMA page_count").fetchone()[0] * conn.execute("PRAGMA page_size").fetchone()[0]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        if is_corruption(exc):
            return "damaged", str(exc)
        raise
    if pages > size and _wal_size(path) == 0:  # with no WAL, every page must be in the file
        return "damaged", f"cut short: {size} of {pages} bytes"
    if row is None:
        return "damaged", "no schema version"
    version = int(row[0])
    if version > SCHEMA_VERSION:
        return "newer", str(version)
    if version < SCHEMA_VERSION:
        return "older", str(version)
    if not TABLES <= names:
        return "damaged", f"tables missing: {', '.join(sorted(TABLES - names))}"
    return "ok", ""


def _wal_size(path: Path) -> int:
    try:
        return os.stat(str(path) + "-wal").st_size
    except OSError:
        return 0


def is_corruption(exc: BaseException) -> bool:
    """An SQLite error that means the file is damaged (not busy, not full)."""
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in (sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB)
    return isinstance(exc, sqlite3.DatabaseError) and any(
        text in str(exc) for text in ("malformed", "not a database", "file is encrypted"))

# The tables that hold archive content; ``reindex`` must reproduce them exactly.
CONTENT_TABLES = ("artists", "artworks", "files", "tags", "ugoira_frames", "history", "lost", "deleted")
# Local bookkeeping a rebuild carries over when the old file can still be read.
KEPT_TABLES = ("sync_runs", "scrubbed", "damage", "refreshed")


class Index:
    """One connection per thread to the index database."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = threading.local()
        self._epoch = 0  # bumped when the file is replaced: every thread reconnects
        self._inode = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self.db.executescript(_SCHEMA)

    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is not None and self._local.epoch != self._epoch:
            conn.close()
            conn = None
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=OFF")
            self._local.conn, self._local.epoch = conn, self._epoch
            self._inode = self._inode or _inode(self.path)
        return conn

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    @property
    def inode(self) -> int:
        """The index file this process reads (a rebuild puts a new one in place; ``follow`` notices)."""
        return self._inode or _inode(self.path)

    def follow(self) -> bool:
        """Reconnect if the file was replaced (a rebuild renames a new index
        over the old one); True when it was. Cheap enough to call per poll."""
        inode = _inode(self.path)
        if not inode or inode == self._inode:
            return False
        self._inode = inode
        self._epoch += 1
        return True

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction that bumps the change counter on commit."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("UPDATE meta SET value = value + 1 WHERE key = 'generation'")
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # SQLite rolls back by itself on a full disk
                db.execute("ROLLBACK")
            raise

    # -- reads ---------------------------------------------------------------
    def schema_version(self) -> int:
        return int(self.db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()[0])

    def generation(self) -> int:
        """Cheap to poll: readers compare it to learn the index changed."""
        return self.db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]

    def artwork(self, artwork_id: int) -> sqlite3.Row | None:
        return self.db.execute("SELECT * FROM artworks WHERE id = ?", (artwork_id,)).fetchone()

    def archived_ids(self) -> set[int]:
        return {row[0] for row in self.db.execute("SELECT id FROM artworks")}

    def files(self, artwork_id: int) -> list[sqlite3.Row]:
        return self.db.execute("SELECT * FROM files WHERE artwork_id = ? ORDER BY path", (artwork_id,)).fetchall()

    def dump(self, tables: tuple[str, ...] = CONTENT_TABLES) -> dict[str, list[tuple[Any, ...]]]:
        """Every row of the content tables, sorted: for equality checks."""
        return {t: sorted(tuple(r) for r in self.db.execute(f"SELECT * FROM {t}")) for t in tables}

    # -- writes (inside ``write()``) ------------------------------------------
    @staticmethod
    def put_artwork(db: sqlite3.Connection, record: dict[str, Any], raw: dict[str, Any]) -> None:
        """(Re)write every row of one artwork from its record and raw JSON."""
        f = illust.fields(raw)
        aid = int(record["id"])
        Index.drop_artwork(db, aid)
        db.execute(
            "INSERT INTO artists VALUES (?, ?, ?) ON CONFLICT(id) DO UPDATE SET name = excluded.name, account = excluded.account",
            (f["artist_id"], f["artist_name"], f["artist_account"]),
        )
        files = record.get("files", [])
        gone = record.get("gone") or {}
        db.execute(
            "INSERT INTO artworks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                aid, record["seq"], record["restrict"], int(record.get("bookmarked", True)),
                "gone" if gone else "live", gone.get("reason"), gone.get("at"),
                f["title"], f["type"], f["artist_id"], f["create_date"], f["x_restrict"], f["sanity_level"],
                f["ai_type"], f["page_count"], f["width"], f["height"], record["archived_at"],
                sum(int(x["size"]) for x in files),
            ),
        )
        db.executemany(
            "INSERT INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
            [(aid, x["path"], x["role"], x["page"], x["size"], x["crc32"], x["sha256"], x["width"], x["height"],
              x["format"], x.get("mode", ""), x.get("url", "")) for x in files],
        )
        db.executemany("INSERT INTO tags VALUES (?,?,?,?)", [(aid, n, name, tr) for n, (name, tr) in enumerate(f["tags"])])
        frames = (record.get("ugoira") or {}).get("frames") or []
        db.executemany("INSERT INTO ugoira_frames VALUES (?,?,?,?)", [(aid, n, x["file"], x["delay"]) for n, x in enumerate(frames)])
        db.executemany(
            "INSERT INTO history VALUES (?,?,?,?,?)",
            [(aid, n, h["at"], h["event"], json.dumps({k: v for k, v in h.items() if k not in ("at", "event")}, sort_keys=True, ensure_ascii=False))
             for n, h in enumerate(record.get("history", []))],
        )
        db.execute("DELETE FROM lost WHERE id = ?", (aid,))
        db.execute("DELETE FROM deleted WHERE id = ?", (aid,))
        db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (record["seq"] + 1,))

    @staticmethod
    def drop_artwork(db: sqlite3.Connection, artwork_id: int) -> None:
        row = db.execute("SELECT artist_id FROM artworks WHERE id = ?", (artwork_id,)).fetchone()
        for table, column in (("artworks", "id"), ("files", "artwork_id"), ("tags", "artwork_id"),
                              ("ugoira_frames", "artwork_id"), ("history", "artwork_id")):
            db.execute(f"DELETE FROM {table} WHERE {column} = ?", (artwork_id,))
        if row is not None:
            db.execute("DELETE FROM artists WHERE id = ?1 AND NOT EXISTS (SELECT 1 FROM artworks WHERE artist_id = ?1)",
                       (row[0],))

    @staticmethod
    def put_lost(db: sqlite3.Connection, data: dict[str, Any]) -> None:
        db.execute("INSERT OR REPLACE INTO lost VALUES (?,?,?,?)", (data["id"], data["restrict"], data["reason"], data["first_seen"]))

    @staticmethod
    def put_deleted(db: sqlite3.Connection, data: dict[str, Any]) -> None:
        db.execute("INSERT OR REPLACE INTO deleted VALUES (?,?,?)", (data["id"], data["seq"], data["deleted_at"]))
        db.execute("UPDATE meta SET value = max(value, ?) WHERE key = 'next_seq'", (data["seq"] + 1,))

    @staticmethod
    def take_seqs(db: sqlite3.Connection, count: int) -> int:
        """Reserve ``count`` ingress numbers; return the first. Never reused."""
        first = db.execute("SELECT value FROM meta WHERE key = 'next_seq'").fetchone()[0]
        db.execute("UPDATE meta SET value = ? WHERE key = 'next_seq'", (first + count,))
        return first


def _inode(path: Path) -> int:
    try:
        return os.stat(path).st_ino
    except OSError:
        return 0
