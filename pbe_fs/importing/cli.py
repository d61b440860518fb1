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
from . import gallerydl, oldapp
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
    if args.source == "old-app":
        works = lambda: oldapp.scan(root)  # noqa: E731
    else:
        works = lambda: gallerydl.scan(root, client)  # noqa: E731
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
        log.info("dry run: %d would be imported, %d completed, %d skipped, %d kept out; nothing was changed",
                 len(plan["import"]), len(plan["complete"]), len(plan["skip"]), len(plan["kept out"]))
        return 0
    result = importer.run()
    if not result.found:
        log.warning("found no work in %s: is it %s's folder?", root, "the old app" if args.source == "old-app" else "gallery-dl")
    log.info("import done: %s", result.describe())
    if result.imported or result.completed:
        log.info("the next `pbe-fs sync` walks every bookmark (as --full does) to learn which of them pixiv still has")
    if result.failed:
        raise PbeError(f"import incomplete: {len(result.failed)} works could not be imported "
                       f"({'; '.join(result.failed[:3])}); run the same command again")
    return 0
