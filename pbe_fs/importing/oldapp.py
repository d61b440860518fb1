"""The old app's folder (pixiv-bookmarks-explorer): ``artworks.json`` and its images.

``artworks.json`` maps each id to the raw illust object from pixiv's app
API, oldest bookmark first (the old app's own order, which becomes the
ingress order). Images are ``<path>/<id>/<id>_p<N>_<quality>.<ext>``, in
a local folder (``filesystem_options.path``, default ``./data``) or at
``filesystem_options.server`` over HTTP. Each found file is given the
name a sync gives the same URL, so the next sync sees it as archived.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .. import illust
from .found import FoundFile, FoundWork, SourceError

QUALITIES = ("original", *illust.REDUCED_SIZES)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SourceError(f"{path} is missing: is this the old app's folder? ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise SourceError(f"{path}: not readable JSON ({type(exc).__name__}: {exc})") from None


def image_root(folder: Path) -> str:
    """Where the old app kept its images: a local folder, or an HTTP base URL."""
    config_path = folder / "config.json"
    config = _read_json(config_path, "its config.json") if config_path.exists() else {}
    options = config.get("filesystem_options") if isinstance(config, dict) else None
    options = options if isinstance(options, dict) else {}
    if isinstance(config, dict) and config.get("filesystem") == "remote":
        server = options.get("server")
        if not isinstance(server, str) or not server.startswith(("http://", "https://")):
            raise SourceError(f"{config_path}: filesystem is remote but filesystem_options.server is not an http(s) URL")
        return server.rstrip("/")
    path = options.get("path") if isinstance(options.get("path"), str) else "./data"
    return str((folder / path).resolve())


def scan(folder: Path) -> Iterator[FoundWork]:
    """Every work of ``artworks.json``, in the old app's order, with the files that exist."""
    works = _read_json(folder / "artworks.json", "artworks.json, the list of works")
    if not isinstance(works, dict):
        raise SourceError(f"{folder / 'artworks.json'}: not a JSON object of id -> artwork")
    root = image_root(folder)
    remote = root.startswith(("http://", "https://"))
    listing = _remote_listing if remote else _local_listing
    for position, (key, raw) in enumerate(works.items()):
        if not key.isdigit() or not isinstance(raw, dict) or str(raw.get("id")) != key:
            continue  # the caller counts what it skips by comparing with the file; nothing here to import
        aid = int(key)
        yield FoundWork(aid, raw, list(_files(aid, raw, root, listing(root, aid))), order=(position,))


def _local_listing(root: str, aid: int) -> set[str]:
    try:
        return set(os.listdir(os.path.join(root, str(aid))))
    except OSError:
        return set()


def _remote_listing(root: str, aid: int) -> set[str] | None:
    return None  # no listing over HTTP: every expected name is tried


def _files(aid: int, raw: dict[str, Any], root: str, present: set[str] | None) -> Iterator[FoundFile]:
    try:
        specs = illust.file_specs(raw, list(QUALITIES), with_originals=raw.get("type") != "ugoira")
    except ValueError:
        return
    for spec in specs:
        ext = spec.url.rsplit(".", 1)[-1]
        name = f"{aid}_p{spec.page}_{spec.role}.{ext}"
        if present is not None and name not in present:
            continue
        source = f"{root}/{aid}/{name}" if present is None else os.path.join(root, str(aid), name)
        yield FoundFile(source, spec.path, spec.role, spec.page, url=spec.url)
