"""What pbe-fs reads from pixiv's illust object: fields, placeholders, files.

Pure functions over the decoded JSON, so the sync engine, reindex and tests
agree on one reading. pixiv adds, drops and nulls fields at will, so every
access here tolerates a missing or null value.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

REDUCED_SIZES = ("large", "medium", "square_medium")
_LIMIT_PATH = "/common/images/limit_"
_LIMIT_KIND = re.compile(r"/common/images/(limit_[a-z0-9_]+?)(?:_\d+)?\.\w+$")


@dataclass(frozen=True)
class FileSpec:
    """One file to fetch for an artwork, and where it goes in its folder."""

    url: str
    path: str  # relative to the artwork folder, posix separators
    role: str  # original | large | medium | square_medium | ugoira_zip
    page: int
    kind: str = "image"  # image | zip


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return default


def _image_urls(raw: dict[str, Any]) -> list[str]:
    urls: list[str] = []
    for block in [raw.get("image_urls"), raw.get("meta_single_page")]:
        if isinstance(block, dict):
            urls += [u for u in block.values() if isinstance(u, str)]
    for page in raw.get("meta_pages") or []:
        if isinstance(page, dict) and isinstance(page.get("image_urls"), dict):
            urls += [u for u in page["image_urls"].values() if isinstance(u, str)]
    return urls


def placeholder_reason(raw: dict[str, Any]) -> str | None:
    """Why this item is one of pixiv's stand-ins rather than a work, or None.

    A placeholder is what pixiv lists instead of a deleted, hidden or
    restricted work: ``visible: false``, a user id of 0, or any image under
    ``/common/images/limit_``. It must never be archived as if it were art.
    """
    for url in _image_urls(raw):
        if _LIMIT_PATH in url:
            match = _LIMIT_KIND.search(urlsplit(url).path)
            return match.group(1) if match else "limit"
    if raw.get("visible") is False:
        return "invisible"
    user = raw.get("user")
    if not isinstance(user, dict) or _int(user.get("id")) == 0:
        return "no_user"
    return None


def fields(raw: dict[str, Any]) -> dict[str, Any]:
    """The normalized columns pbe-fs indexes and shows."""
    user = raw.get("user") if isinstance(raw.get("user"), dict) else {}
    tags = []
    for tag in raw.get("tags") or []:
        if isinstance(tag, dict) and _str(tag.get("name")):
            tags.append((tag["name"], tag.get("translated_name") if isinstance(tag.get("translated_name"), str) else None))
    return {
        "id": _int(raw.get("id")),
        "title": _str(raw.get("title")),
        "type": _str(raw.get("type")) or "illust",
        "caption": _str(raw.get("caption")),
        "artist_id": _int(user.get("id")),
        "artist_name": _str(user.get("name")),
        "artist_account": _str(user.get("account")),
        "create_date": _str(raw.get("create_date")),
        "page_count": max(1, _int(raw.get("page_count"), 1)),
        "width": _int(raw.get("width")),
        "height": _int(raw.get("height")),
        "x_restrict": _int(raw.get("x_restrict")),
        "sanity_level": _int(raw.get("sanity_level")),
        "ai_type": _int(raw.get("illust_ai_type")),
        "tags": tags,
    }


def _basename(url: str) -> str:
    name = posixpath.basename(urlsplit(url).path)
    if not name or name in (".", "..") or "\\" in name:
        raise ValueError(f"unusable image URL {url!r}")
    return name


def page_urls(raw: dict[str, Any]) -> list[dict[str, str]]:
    """Per page, the URL of each size pixiv offers (original included)."""
    pages = []
    meta_pages = [p for p in raw.get("meta_pages") or [] if isinstance(p, dict)]
    if meta_pages:
        for page in meta_pages:
            urls = page.get("image_urls") if isinstance(page.get("image_urls"), dict) else {}
            pages.append({k: v for k, v in urls.items() if isinstance(v, str) and v})
    else:
        urls = dict(raw.get("image_urls") or {}) if isinstance(raw.get("image_urls"), dict) else {}
        single = raw.get("meta_single_page") if isinstance(raw.get("meta_single_page"), dict) else {}
        if isinstance(single.get("original_image_url"), str):
            urls["original"] = single["original_image_url"]
        pages.append({k: v for k, v in urls.items() if isinstance(v, str) and v})
    return pages


def file_specs(raw: dict[str, Any], sizes: list[str], *, with_originals: bool = True) -> list[FileSpec]:
    """The files to archive for a work: every page in every configured size.

    Originals keep pixiv's own names at the top of the folder; reduced sizes
    go to a folder named after the size. For ugoira the originals are the
    frames, which ``ugoira_specs`` adds separately.
    """
    specs: list[FileSpec] = []
    for number, urls in enumerate(page_urls(raw)):
        for size in sizes:
            url = urls.get(size)
            if not url:
                continue
            if size == "original":
                if with_originals:
                    specs.append(FileSpec(url, _basename(url), "original", number))
            else:
                specs.append(FileSpec(url, f"{size}/{_basename(url)}", size, number))
    return specs


def ugoira_frame_specs(raw: dict[str, Any], frame_count: int) -> list[FileSpec]:
    """The artist's original frames, served one by one beside frame 0."""
    first = page_urls(raw)[0].get("original", "")
    if "_ugoira0." not in first:
        return []
    return [
        FileSpec(first.replace("_ugoira0.", f"_ugoira{n}."), _basename(first.replace("_ugoira0.", f"_ugoira{n}.")), "original", n)
        for n in range(frame_count)
    ]


def ugoira_zip_spec(metadata: dict[str, Any]) -> FileSpec | None:
    """The largest frames zip pixiv serves: the fallback when frames 404."""
    urls = metadata.get("zip_urls") if isinstance(metadata.get("zip_urls"), dict) else {}
    url = next((u for u in urls.values() if isinstance(u, str) and u), None)
    if not url:
        return None
    url = url.replace("600x600", "1920x1080")
    return FileSpec(url, _basename(url), "ugoira_zip", 0, kind="zip")


def ugoira_frames(metadata: dict[str, Any]) -> list[dict[str, Any]]:
    """Frame names and delays (ms), as the ugoira metadata gives them."""
    frames = []
    for frame in metadata.get("frames") or []:
        if isinstance(frame, dict) and _str(frame.get("file")):
            frames.append({"file": frame["file"], "delay": max(0, _int(frame.get("delay"), 100))})
    return frames
