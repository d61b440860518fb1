"""What changed in a work's metadata between two illust objects.

The archive is a history of what the user saw: when pixiv's object for an
archived work differs from the archived ``pixiv.json`` in a field a person
would notice (title, caption, tags, the artist's name or account, series,
age rating, AI flag, page count), the sync keeps the old object as
``pixiv.<date>.json``, writes the new one, and records one ``changed``
event with the old and new values. Counts (views, bookmarks, comments)
change every day: they are updated in place, never versioned.
"""

from __future__ import annotations

from typing import Any

from . import illust

# Counters pixiv updates continuously: kept current, never a change event.
COUNTS = ("total_view", "total_bookmarks", "total_comments", "is_bookmarked")


def tracked(raw: dict[str, Any]) -> dict[str, Any]:
    """The fields whose change is worth a new version, in a comparable form."""
    f = illust.fields(raw)
    series = raw.get("series") if isinstance(raw.get("series"), dict) else None
    return {
        "title": f["title"],
        "caption": f["caption"],
        "tags": [[name, translated] for name, translated in f["tags"]],
        "artist_name": f["artist_name"],
        "artist_account": f["artist_account"],
        "series": {"id": series.get("id"), "title": series.get("title")} if series else None,
        "x_restrict": f["x_restrict"],
        "illust_ai_type": f["ai_type"],
        "page_count": f["page_count"],
    }


def changes(old: dict[str, Any], new: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: {"from": old value, "to": new value}} for every tracked field that differs."""
    before, after = tracked(old), tracked(new)
    return {k: {"from": before[k], "to": after[k]} for k in before if before[k] != after[k]}


def counts_differ(old: dict[str, Any], new: dict[str, Any]) -> bool:
    return any(old.get(k) != new.get(k) for k in COUNTS if k in new)


def replaced_pages(old: dict[str, Any], new: dict[str, Any], sizes: list[str]) -> dict[str, str]:
    """{path: new url} of archived pages whose image pixiv now serves from
    another URL under the same file name: the artist replaced the image.
    (A page whose file name changed is simply a new file to fetch.)"""
    try:
        before = {s.path: s.url for s in illust.file_specs(old, sizes)}
        after = {s.path: s.url for s in illust.file_specs(new, sizes)}
    except ValueError:
        return {}
    return {path: url for path, url in after.items() if path in before and before[path] != url}
