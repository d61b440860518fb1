"""gallery-dl's download archive (``--download-archive FILE``): what it says was downloaded.

An SQLite file with one table, ``archive(entry TEXT PRIMARY KEY)``, one row
per downloaded file. For pixiv the entry is the category ``pixiv`` and the
extractor's ``archive_fmt`` (gallery_dl/extractor/pixiv.py, 1.32):

* an artist's works, a single work: ``pixiv{id}{suffix}.{ext}``, the suffix
  ``""`` for a one-page work, ``_p00``, ``_p01`` … for each page of others;
* bookmarks: ``pixivf_{your id}_{id}{num}.{ext}``, followed artists:
  ``pixivF_{user}_{id}{num}.{ext}``, rankings ``pixivr_{mode}_{date}_{id}{num}``,
  searches ``pixivs_{word}_{id}{num}`` and pixivision ``pixivV{n}_{id}{suffix}``.

``{id}{num}`` runs the id and the page number together: the split is the one
whose id the folder holds, else the one with the shortest page number (most
works have few pages). Entries of other sites, or written with a changed
``archive-prefix``/``archive-format``, are not read.

The table is ``WITHOUT ROWID``: its rows come back sorted by entry, so it
keeps no download order. An archive made where SQLite lacked that (gallery-dl
then falls back to a plain table) keeps its rowids, which are that order.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .found import SourceError

_HEADER = b"SQLite format 3\x00"
_SUFFIXED = re.compile(r"^pixiv(?:V\d+_)?(\d+)(?:_p(\d+))?\.([A-Za-z0-9]+)$")
_JOINED = re.compile(r"^pixiv(?:f_\d+|F_\d+|r_.+?_\d{4}-\d{2}-\d{2}|s_.*)_(\d+)\.([A-Za-z0-9]+)$")
_MAX_PAGES = 200  # pixiv's own limit of pages per work


@dataclass
class DownloadArchive:
    """The pages each work had downloaded, and (when kept) the download order."""

    paths: list[Path] = field(default_factory=list)
    pages: dict[int, set[int]] = field(default_factory=dict)  # work id -> page numbers
    order: dict[int, int] = field(default_factory=dict)  # work id -> first download position (rowid tables only)

    def add(self, aid: int, page: int, position: int | None) -> None:
        self.pages.setdefault(aid, set()).add(page)
        if position is not None:
            self.order.setdefault(aid, position)


def is_archive(path: Path) -> bool:
    """An SQLite file with gallery-dl's ``archive`` table."""
    try:
        with open(path, "rb") as fh:
            if fh.read(16) != _HEADER:
                return False
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'archive'").fetchone() is not None
        finally:
            db.close()
    except (OSError, sqlite3.Error):
        return False


def read(paths: Iterable[Path], known: set[int]) -> DownloadArchive:
    """What the archives at ``paths`` recorded of pixiv works; ``known``: the
    ids the folder holds (they decide how an ``{id}{num}`` entry splits)."""
    found = DownloadArchive()
    for path in paths:
        found.paths.append(path)
        for position, entry in _entries(path):
            parsed = parse(entry, known)
            if parsed is not None:
                found.add(*parsed, position)
    return found


def _entries(path: Path) -> list[tuple[int | None, str]]:
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: cannot open gallery-dl's download archive ({exc})") from None
    try:
        try:
            return [(rowid, entry) for rowid, entry in db.execute("SELECT rowid, entry FROM archive ORDER BY rowid")]
        except sqlite3.OperationalError:  # WITHOUT ROWID: no order kept
            return [(None, entry) for (entry,) in db.execute("SELECT entry FROM archive")]
    except sqlite3.Error as exc:
        raise SourceError(f"{path}: not gallery-dl's download archive ({exc})") from None
    finally:
        db.close()


def parse(entry: str, known: set[int]) -> tuple[int, int] | None:
    """(work id, page) of one pixiv entry; None for anything else."""
    if not isinstance(entry, str):
        return None
    m = _SUFFIXED.match(entry)
    if m:
        return int(m.group(1)), int(m.group(2) or 0)
    m = _JOINED.match(entry)
    if not m:
        return None
    digits = m.group(1)
    splits = [(int(digits[:cut]), int(digits[cut:])) for cut in range(len(digits) - 1, 0, -1)
              if (digits[cut] != "0" or cut == len(digits) - 1) and int(digits[cut:]) < _MAX_PAGES]
    if not splits:
        return None
    return next((s for s in splits if s[0] in known), splits[0])
