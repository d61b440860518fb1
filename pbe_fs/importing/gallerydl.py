"""A gallery-dl download folder: files recognised by name wherever they sit.

gallery-dl names pixiv files ``<id>_p<num>.<ext>`` (an animation is
``<id>_p0.zip``, or a converted ``.webm``/``.mp4``/``.gif``…), in folders
users often rename, so every file below the given folder is looked at. Its
``--write-metadata`` sidecars (``<file>.json``) hold the illust's fields in
gallery-dl's own shape: they are converted to pixiv's, and kept as
``import.gallery-dl.json``. Without them the metadata comes from pixiv when
it still has the work, else from the names (id, page; the artist from a
``<user id> <account>`` folder), and the record is marked partial. Works are
numbered by creation date: gallery-dl walks bookmarks newest first and its
download archive keeps no bookmark dates, so neither says the bookmark order.
Its download archive (``gdarchive``) says which pages were downloaded: a
page it records that the folder lacks marks the work partial, and a work it
records with no file left is reported.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .. import illust
from . import gdarchive
from .found import IMPORTED_MEDIA, WITHOUT_DELAYS, FoundFile, FoundWork

log = logging.getLogger("pbe_fs.import")

_NAME = re.compile(r"^(\d+)_p(\d+)\.([A-Za-z0-9]+)$")
_ARTIST_FOLDER = re.compile(r"^(\d+) (\S+)$")
_MEDIA = {"webm", "mp4", "mkv", "mov", "gif", "webp", "apng"}
_IMAGES = {"jpg", "jpeg", "png", "gif", "webp", "bmp"}
# Fields of gallery-dl's kwdict that are its own, not pixiv's.
_OWN = {"num", "date", "count", "rating", "suffix", "url", "category", "subcategory", "filename", "extension",
        "date_url", "hash", "frames", "user_bookmark", "tags_bookmark", "comments", "search", "ranking"}


@dataclass
class Notes:
    """What a scan learnt beside the works: gallery-dl's download archives
    read, and the works they record whose files are all gone from the folder."""

    archives: list[Path] = field(default_factory=list)
    missing: list[int] = field(default_factory=list)


def scan(root: Path, client: Callable[[], Any] | None = None, archives: list[Path] | None = None,
         notes: Notes | None = None) -> Iterator[FoundWork]:
    """Every work with a file below ``root``, with what is known of it.
    ``archives``: gallery-dl's download archives to read; None: those found
    below ``root``."""
    groups: dict[int, list[tuple[Path, int, str]]] = {}
    candidates: list[Path] = []
    for folder, dirs, names in os.walk(root):
        dirs.sort()
        for name in sorted(names):
            m = _NAME.match(name)
            if m:
                groups.setdefault(int(m.group(1)), []).append((Path(folder) / name, int(m.group(2)), m.group(3).lower()))
            elif not name.endswith(".json"):
                candidates.append(Path(folder) / name)
    if archives is None:
        archives = [path for path in candidates if gdarchive.is_archive(path)]
    recorded = gdarchive.read(archives, set(groups))
    notes = notes if notes is not None else Notes()
    notes.archives = recorded.paths
    notes.missing = sorted(set(recorded.pages) - set(groups))
    if notes.missing:
        log.warning("%d works gallery-dl's download archive records as downloaded have no file in %s: %s%s",
                    len(notes.missing), root, ", ".join(map(str, notes.missing[:10])),
                    " …" if len(notes.missing) > 10 else "")
    pixiv = _Pixiv(client)
    for aid in sorted(groups):
        work = _work(aid, groups[aid], pixiv)
        if work is None:
            continue
        lacking = sorted(recorded.pages.get(aid, set()) - {page for _, page, _ in groups[aid]})
        if lacking:
            work.partial.append("pages gallery-dl's download archive records but the folder lacks: "
                                + ", ".join(f"p{page}" for page in lacking))
        date = illust.fields(work.raw)["create_date"]
        # Without a date, the download order where the archive kept it: gallery-dl walks newest first.
        work.order = (date or "~", 0 if date else -recorded.order.get(aid, 0), aid)
        yield work


def _sidecar(path: Path) -> dict[str, Any] | None:
    side = path.with_name(path.name + ".json")
    try:
        data = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _work(aid: int, files: list[tuple[Path, int, str]], pixiv: _Pixiv) -> FoundWork | None:
    sidecars = {path.name: side for path, _, _ in files if (side := _sidecar(path)) is not None}
    first = next(iter(sidecars.values()), None)
    partial: list[str] = []
    ugoira = None
    if first is not None and int(first.get("id") or 0) == aid:
        raw = to_pixiv(first, [sidecars[p.name] for p, _, _ in files if p.name in sidecars])
        frames = illust.ugoira_frames({"frames": first.get("frames")}) if first.get("type") == "ugoira" else []
        if frames:
            ugoira = {"frames": frames, "source": "zip"}
        original: Any = {"sidecars": sidecars}
    else:
        raw, original = pixiv.detail(aid), None
        if raw is None:
            raw = from_names(aid, files)
            partial.append("no metadata: pixiv no longer has the work and gallery-dl wrote no sidecar")
    found = []
    for path, page, ext in sorted(files, key=lambda f: (f[1], f[0].name)):
        side = sidecars.get(path.name) or {}
        url = side.get("url") if isinstance(side.get("url"), str) else ""
        if ext == "zip":
            name = url.rsplit("/", 1)[-1] if url.endswith(".zip") else f"{aid}_ugoira.zip"
            found.append(FoundFile(str(path), name, "ugoira_zip", 0, url=url, kind="zip"))
            if ugoira is None:
                partial.append(WITHOUT_DELAYS)
        elif ext in _MEDIA and (ext not in _IMAGES or raw.get("type") == "ugoira"):  # a converted animation
            found.append(FoundFile(str(path), f"imported/{path.name}", IMPORTED_MEDIA, page, kind="media"))
        elif ext in _IMAGES:
            found.append(FoundFile(str(path), path.name, "original", page, url=url))
    if not found:
        return None
    work = FoundWork(aid, raw, found, order=(), original=original, partial=partial, ugoira=ugoira)
    work.bookmarked = any("bookmarks" in p.parts for p, _, _ in files)
    return work


def to_pixiv(side: dict[str, Any], pages: list[dict[str, Any]]) -> dict[str, Any]:
    """gallery-dl's metadata back in the shape of pixiv's illust object."""
    raw = {k: v for k, v in side.items() if k not in _OWN and not k.startswith("_")}
    raw["tags"] = [{"name": t, "translated_name": None} if isinstance(t, str) else t for t in side.get("tags") or []]
    urls: dict[int, str] = {}
    for page in pages:
        if isinstance(page.get("url"), str) and isinstance(page.get("num"), int) and not page["url"].endswith(".zip"):
            urls[page["num"]] = page["url"]
    count = max(1, int(side.get("page_count") or 1))
    raw["image_urls"] = {}
    if count > 1:
        raw["meta_single_page"] = {}
        raw["meta_pages"] = [{"image_urls": {"original": urls[n]} if n in urls else {}} for n in range(count)]
    else:
        raw["meta_single_page"] = {"original_image_url": urls[0]} if 0 in urls else {}
        raw["meta_pages"] = []
    return raw


def from_names(aid: int, files: list[tuple[Path, int, str]]) -> dict[str, Any]:
    """What the files alone tell: the id, the pages, the artist of a per-artist folder."""
    user = {"id": 0, "name": "", "account": ""}
    for path, _, _ in files:
        for part in reversed(path.parent.parts):
            m = _ARTIST_FOLDER.match(part)
            if m and "bookmarks" not in path.parts:
                user = {"id": int(m.group(1)), "name": m.group(2), "account": m.group(2)}
                break
    pages = max(page for _, page, _ in files) + 1
    return {"id": aid, "title": "", "type": "illust", "caption": "", "user": user, "tags": [], "create_date": "",
            "page_count": pages, "image_urls": {}, "meta_single_page": {}, "meta_pages": []}


class _Pixiv:
    """pixiv's own metadata for works without sidecars, when pixiv can be asked."""

    def __init__(self, factory: Callable[[], Any] | None) -> None:
        self.factory = factory
        self.client: Any = None
        self.failed = factory is None

    def detail(self, aid: int) -> dict[str, Any] | None:
        if self.failed:
            return None
        try:
            if self.client is None:
                self.client = self.factory()  # type: ignore[misc]
                self.client.authenticate()
            item = self.client.illust_detail(aid)
        except Exception as exc:  # offline, no token: the names are all there is
            log.warning("cannot ask pixiv for works without metadata (%s): their records are marked partial", exc)
            self.failed = True
            return None
        if item is None or illust.placeholder_reason(item):
            return None
        return item
