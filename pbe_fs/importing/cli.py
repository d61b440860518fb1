"""The `pbe-fs import` command: pick the source, run or plan, say what happened."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..config import Config
from ..errors import PbeError
from ..progress import Progress
from . import gallerydl, gdarchive, oldapp
from .engine import Importer
from .found import FoundWork, SourceError

log = logging.getLogger("pbe_fs.import")


def run_import(cfg: Config, args: argparse.Namespace, client: Callable[[], Any]) -> int:
    if cfg.settings.filesystem == "s3" and cfg.settings.filesystem_options.follow:
        raise PbeError("this machine follows the bucket (filesystem_options.follow): import on the machine that syncs it")
    root = Path(args.path).expanduser().resolve()
    if not root.is_dir():
        raise SourceError(f"{args.path} is not a folder")
    if root == cfg.archive_path.resolve() or cfg.archive_path.resolve() in root.parents:
        raise SourceError(f"{args.path} is inside the archive itself")
    works: Callable[[], Iterator[FoundWork]]
    notes = gallerydl.Notes()
    archives = _archives(args)
    if args.source == "old-app":
        works = lambda: oldapp.scan(root)  # noqa: E731
    else:
        works = lambda: gallerydl.scan(root, client, archives, notes)  # noqa: E731
    mode = "link" if args.link else "move" if args.move else "copy"
    progress = Progress(enabled=False if args.no_progress or args.dry_run else None, desc="import")
    importer = Importer(cfg, args.source, root, works, mode=mode, include_kept_out=args.include_kept_out,
                        progress=progress)
    if args.dry_run:
        plan = importer.plan()
        for kind, ids in plan.items():
            if ids:
                shown = ", ".join(map(str, ids[:10])) + (" …" if len(ids) > 10 else "")
                log.info("would %s %d works: %s", kind if kind != "kept out" else "skip (kept out)", len(ids), shown)
        if notes.missing:
            log.info("%d works gallery-dl's download archive records have no file here", len(notes.missing))
        log.info("dry run: %d would be imported, %d completed, %d skipped, %d kept out; nothing was changed",
                 len(plan["import"]), len(plan["complete"]), len(plan["skip"]), len(plan["kept out"]))
        return 0
    result = importer.run()
    result.missing = len(notes.missing)
    for path in notes.archives:
        log.info("read gallery-dl's download archive %s", path)
    if not result.found:
        log.warning("found no work in %s: is it %s's folder?", root, "the old app" if args.source == "old-app" else "gallery-dl")
    log.info("import done: %s", result.describe())
    if result.imported or result.completed:
        log.info("the next `pbe-fs sync` walks every bookmark (as --full does) to learn which of them pixiv still has")
    if result.missing:
        log.info("works recorded in gallery-dl's download archive but missing here are fetched by the next sync "
                 "while pixiv still has them and they are bookmarked")
    if result.failed:
        raise PbeError(f"import incomplete: {len(result.failed)} works could not be imported "
                       f"({'; '.join(result.failed[:3])}); run the same command again")
    return 0


def _archives(args: argparse.Namespace) -> list[Path] | None:
    """The download archives named with --archive, checked; None: look below the folder."""
    if not getattr(args, "archive", None):
        return None
    if args.source != "gallery-dl":
        raise SourceError("--archive is gallery-dl's download archive: the old app has none")
    paths = [Path(a).expanduser() for a in args.archive]
    for path in paths:
        if not path.is_file():
            raise SourceError(f"{path}: no such file (--archive names gallery-dl's --download-archive file)")
        if not gdarchive.is_archive(path):
            raise SourceError(f"{path}: not gallery-dl's download archive (an SQLite file with an 'archive' table)")
    return paths
