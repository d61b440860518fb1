"""meta.json and pixiv.url: what an artwork folder says about its work."""

from __future__ import annotations

import json
from typing import Any

from .. import illust

PAGE_URL = "https://www.pixiv.net/artworks/{}"


def meta_json(record: dict[str, Any], raw: dict[str, Any]) -> bytes:
    """Normalized fields first, pbe-fs's record after, pixiv's raw JSON last.

    Built only from the archive files, which hold no secrets.
    """
    f = illust.fields(raw)
    data = {
        "id": f["id"],
        "title": f["title"],
        "type": f["type"],
        "url": PAGE_URL.format(f["id"]),
        "artist": {"id": f["artist_id"], "name": f["artist_name"], "account": f["artist_account"],
                   "url": f"https://www.pixiv.net/users/{f['artist_id']}"},
        "create_date": f["create_date"],
        "tags": [{"name": n, "translated_name": t} for n, t in f["tags"]],
        "caption": f["caption"],
        "page_count": f["page_count"],
        "width": f["width"],
        "height": f["height"],
        "x_restrict": f["x_restrict"],
        "sanity_level": f["sanity_level"],
        "ai_type": f["ai_type"],
        "ingress": record["seq"],
        "restrict": record["restrict"],
        "bookmarked": record.get("bookmarked", True),
        "state": "gone" if record.get("gone") else "live",
        "gone": record.get("gone"),
        "archived_at": record["archived_at"],
        "history": record.get("history", []),
        "ugoira": record.get("ugoira"),
        "files": [{k: x.get(k) for k in ("path", "role", "page", "size", "sha256", "width", "height", "format")}
                  for x in record.get("files", [])],
        "pixiv": raw,
    }
    return (json.dumps(data, ensure_ascii=False, indent=2) + "\n").encode("utf-8")


def internet_shortcut(artwork_id: int) -> bytes:
    return f"[InternetShortcut]\r\nURL={PAGE_URL.format(artwork_id)}\r\n".encode()
