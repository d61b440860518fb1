"""What the archive holds, as one JSON-able dict (`pbe-fs status`, status.json)."""

from __future__ import annotations

import json
import shutil
import sqlite3
from typing import Any

from .archive import Archive
from .recovery import open_index


def status(archive: Archive) -> dict[str, Any]:
    """Counts, bytes, last sync, and the works pixiv lost: read-only, lock-free."""
    if not archive.index_path.exists() and archive.store.kind == "local" and not (archive.root / "artworks").is_dir():
        return {"archive": archive.describe(), "artworks": 0, "files": 0, "bytes": 0, "live": 0,
                "gone": [], "lost": [], "damaged": [], "problems": [], "import_damaged": [], "partial": [],
                "last_sync": None, "pending": 0}
    index = open_index(archive)
    try:
        db = index.db
        counts = db.execute("SELECT count(*), coalesce(sum(bytes), 0), coalesce(sum(state = 'live'), 0),"
                            " coalesce(sum(x_restrict > 0), 0), coalesce(sum(restrict = 'private'), 0) FROM artworks").fetchone()
        files = db.execute("SELECT count(*) FROM files").fetchone()[0]
        gone = [dict(r) for r in db.execute(
            "SELECT id, title, state_reason AS reason, state_at AS since FROM artworks WHERE state = 'gone' ORDER BY state_at, id")]
        lost = [dict(r) for r in db.execute("SELECT id, reason, first_seen AS since FROM lost ORDER BY first_seen, id")]
        last = db.execute("SELECT * FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
        last = dict(last) if last else None
        if last and last["status"] == "running" and archive.lock().holder() is None:
            last["status"] = "interrupted"  # its process died before it could say so (a full disk, kill -9)
        damaged = [dict(r) for r in db.execute(
            "SELECT artwork_id AS id, path, problem, found_at AS since FROM damage ORDER BY found_at, artwork_id, path")]
        problems = [dict(r) for r in db.execute("SELECT artwork_id AS id, problem FROM problems ORDER BY artwork_id")]
        import_damaged, partial = _imported_gaps(db)
        since = last["started_at"] if last else ""
        changes = {event: count for event, count in db.execute(
            "SELECT event, count(*) FROM history WHERE at >= ? AND event IN"
            " ('bookmarked', 'gone', 'restored', 'changed', 'unbookmarked') GROUP BY event", (since,))}
        last_ok = db.execute("SELECT finished_at FROM sync_runs WHERE status = 'ok' ORDER BY id DESC LIMIT 1").fetchone()
        pending = db.execute("SELECT count(*) FROM pending").fetchone()[0]
        usage = shutil.disk_usage(archive.root if archive.root.exists() else archive.root.parent)
        return {
            "archive": archive.describe(),
            "artworks": counts[0], "live": counts[2], "nsfw": counts[3], "private": counts[4],
            "files": files, "bytes": counts[1], "pending": pending,
            "disk_free": usage.free,
            "last_sync": last,
            "last_successful_sync": last_ok[0] if last_ok else None,
            "gone": gone, "lost": lost, "damaged": damaged, "problems": problems,
            "import_damaged": import_damaged, "partial": partial,
            "changes_in_last_sync": changes,
            "generation": index.generation(),
        }
    finally:
        index.close()


def _imported_gaps(db: sqlite3.Connection) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """What imports could not verify, from their ``imported`` history events:
    files that did not decode and are still the ones archived (a sync that
    fetched pixiv's copy replaced them), and works whose records are partial
    (less what a later sync completed: its events say ``resolved``)."""
    damaged: list[dict[str, Any]] = []
    partial: list[dict[str, Any]] = []
    rows = db.execute("SELECT artwork_id, at, event, detail FROM history WHERE (event = 'imported'"
                      " AND (detail LIKE '%\"damaged\"%' OR detail LIKE '%\"partial\"%'))"
                      " OR detail LIKE '%\"resolved\"%' ORDER BY artwork_id, idx")
    for aid, at, kind, detail in rows.fetchall():
        try:
            event = json.loads(detail)
        except ValueError:
            continue
        if kind != "imported":
            resolved = event.get("resolved") or []
            if partial and partial[-1]["id"] == aid:
                partial[-1]["why"] = [why for why in partial[-1]["why"] if why not in resolved]
                if not partial[-1]["why"]:
                    partial.pop()
            continue
        for bad in event.get("damaged") or []:
            row = db.execute("SELECT sha256 FROM files WHERE artwork_id = ? AND path = ?", (aid, bad.get("path"))).fetchone()
            if row is not None and row[0] == bad.get("sha256"):
                damaged.append({"id": aid, "path": bad["path"], "problem": bad.get("problem", ""), "since": at})
        if event.get("partial"):
            partial.append({"id": aid, "why": list(event["partial"]), "since": at})
    damaged.sort(key=lambda d: (d["since"], d["id"]))
    partial.sort(key=lambda p: (p["since"], p["id"]))
    return damaged, partial
