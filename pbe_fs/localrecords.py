"""Local copies of works' records, so artwork folders list with the bucket down.

An artwork folder's listing needs the work's ``pbe.json`` and
``pixiv.json``; on a bucket each is a round trip, and none at all when the
bucket does not answer. A copy is kept under ``cache.path/records`` once a
record has been read (or a follower applied it), stamped with the digest of
the work's index rows (``follow.fingerprints``): any commit that changes
the work changes the stamp, so a stale copy is never used, only replaced.
"""

from __future__ import annotations

import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

from .follow import fingerprints


class LocalRecords:
    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, aid: int) -> Path:
        return self.root / f"{aid % 256:02x}" / f"{aid}.json"

    @staticmethod
    def stamp(db: sqlite3.Connection, aid: int) -> str:
        return fingerprints(db, aid).get(aid, "")

    def get(self, aid: int, stamp: str) -> tuple[dict[str, Any], dict[str, Any]] | None:
        try:
            data = json.loads(self._path(aid).read_bytes())
        except (OSError, ValueError):
            return None
        if not stamp or data.get("stamp") != stamp:
            return None
        return data["record"], data["raw"]

    def put(self, aid: int, stamp: str, record: dict[str, Any], raw: dict[str, Any]) -> None:
        if not stamp:
            return
        path = self._path(aid)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
            tmp.write_text(json.dumps({"stamp": stamp, "record": record, "raw": raw}, ensure_ascii=False))
            os.replace(tmp, path)
        except OSError:
            pass  # a full or read-only cache: the bucket is asked next time
