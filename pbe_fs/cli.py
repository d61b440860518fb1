"""The `pbe-fs` command: argument parsing, logging and exit codes only.

Exit codes: 0 success, 1 the work failed (pixiv down, another sync running,
a work that could not be fetched), 2 bad usage or bad config.json, 130
interrupted. A user mistake is one line on stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from typing import Any, Callable

from . import __version__
from . import config as config_mod
from .archive import Archive
from .config import AI_POLICIES, NSFW_POLICIES
from .errors import PbeError
from .progress import human_bytes

log = logging.getLogger("pbe_fs")


class Redact(logging.Filter):
    """Replace every secret with *** in every record, whatever logged it.

    A secret is replaced where it stands as a value (between characters
    that cannot be part of a token), never as letters inside a word: a
    one-letter ``app_key`` must not turn "new works" into "new wor***s".
    """

    def __init__(self) -> None:
        super().__init__()
        self._secrets: list[str] = []
        self._pattern: re.Pattern[str] | None = None

    @property
    def secrets(self) -> list[str]:
        return self._secrets

    @secrets.setter
    def secrets(self, values: list[str]) -> None:
        self._secrets = sorted({v for v in values if v}, key=len, reverse=True)
        alternatives = "|".join(re.escape(v) for v in self._secrets)
        self._pattern = re.compile(rf"(?<![\w-])(?:{alternatives})(?![\w-])") if alternatives else None

    def redact(self, text: str) -> str:
        return self._pattern.sub("***", text) if self._pattern else text

    def filter(self, record: logging.LogRecord) -> bool:
        if self._pattern is not None:
            record.msg, record.args = self.redact(record.getMessage()), None
            if record.exc_info and not record.exc_text:
                record.exc_text = self.redact(logging.Formatter().formatException(record.exc_info))
        return True


_redact = Redact()


class _Handler(logging.StreamHandler):  # type: ignore[type-arg]
    """stderr, but above a live progress bar rather than through it."""

    def emit(self, record: logging.LogRecord) -> None:
        from .progress import active_bar

        if active_bar() is None:
            return super().emit(record)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


class _JsonFormatter(logging.Formatter):
    """One JSON object per line, for journald, Loki and friends."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {"time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"), "level": record.levelname.lower(),
                 "logger": record.name, "message": record.getMessage()}
        if record.exc_info:
            entry["exception"] = record.exc_text or self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _setup_logging(verbose: int, quiet: bool, fmt: str = "human") -> None:
    handler = _Handler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("pbe-fs: %(levelname)s: %(message)s" if verbose else "pbe-fs: %(message)s"))
    handler.addFilter(_redact)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
    logging.getLogger("pbe_fs").setLevel(logging.WARNING if quiet else (logging.DEBUG if verbose else logging.INFO))
    for noisy in ("urllib3", "requests", "PIL", "pixivpy3", "pikepdf"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


def _load(args: argparse.Namespace) -> config_mod.Config:
    cfg = config_mod.load(args.config)
    _redact.secrets = cfg.secrets()
    # config.json's log settings, unless the command line said otherwise
    if not (args.verbose or args.quiet or args.log_format):
        level = cfg.settings.log.level
        _setup_logging(1 if level == "debug" else 0, level in ("warning", "error"), cfg.settings.log.format)
        if level == "error":
            logging.getLogger("pbe_fs").setLevel(logging.ERROR)
    elif not args.log_format and cfg.settings.log.format == "json":
        _setup_logging(args.verbose, args.quiet, "json")
    return cfg


def _client(cfg: config_mod.Config) -> Any:
    from .pixiv import PixivClient

    def rotated(access: str, refresh: str) -> None:
        config_mod.save_tokens(cfg, access, refresh)
        _redact.secrets = cfg.secrets()

    return PixivClient(cfg.settings.pixiv, on_tokens=rotated)


def cmd_sync(args: argparse.Namespace) -> int:
    from .progress import Progress
    from .sync import Syncer

    cfg = _load(args)
    if cfg.settings.filesystem == "s3" and cfg.settings.filesystem_options.follow:
        raise PbeError("this machine follows the bucket (filesystem_options.follow): another machine syncs it")
    if args.break_lock:
        from .follow import break_lease
        held = break_lease(Archive.open(cfg)) if cfg.settings.filesystem == "s3" else None
        if held:
            log.warning("writer lease removed (it was held by %s)", held)
    progress = Progress(enabled=False if args.no_progress else None)
    result = Syncer(cfg, _client(cfg), full=args.full, progress=progress).run()
    log.info("sync done: %s", result.describe())
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    from .importing.cli import run_import

    cfg = _load(args)
    return run_import(cfg, args, lambda: _client(cfg))


def cmd_status(args: argparse.Namespace) -> int:
    from .keepout import kept_out
    from .running import local_time, read_state
    from .status import status

    cfg = _load(args)
    archive = Archive.open(cfg)
    data = status(archive)
    data["daemon"] = read_state(archive.private)
    data["kept_out"] = [{"id": t["id"], "deleted_at": t.get("deleted_at")} for t in kept_out(archive)]
    if args.json:
        json.dump(data, sys.stdout, ensure_ascii=False, indent=2)
        print()
        return 0
    print(f"archive    {data['archive']}")
    print(f"artworks   {data['artworks']} ({data.get('live', 0)} live, {len(data['gone'])} gone, "
          f"{data.get('nsfw', 0)} NSFW, {data.get('private', 0)} private)")
    print(f"files      {data['files']}, {human_bytes(data['bytes'])}"
          + (f" ({human_bytes(data['disk_free'])} free on disk)" if "disk_free" in data else ""))
    last = data["last_sync"]
    if last:
        print(f"last sync  {local_time(last['started_at'])} {last['mode']}: {last['status']}, {last['new_works']} new"
              + (f" ({last['message']})" if last["message"] else ""))
    else:
        print("last sync  never: run `pbe-fs sync`")
    changes = data.get("changes_in_last_sync") or {}
    if changes:
        print("changes    " + ", ".join(f"{n} {event}" for event, n in sorted(changes.items())) + " in the last sync")
    daemon = data["daemon"]
    if daemon:
        doing = "syncing now" if daemon.get("sync_running") else f"next sync {local_time(daemon.get('next_sync'))}"
        print(f"daemon     running (pid {daemon['pid']}) since {local_time(daemon['started_at'])}, serving "
              f"{daemon['url']}" + (f", mounted at {daemon['mount']}" if daemon.get("mount") else "") + f"; {doing}")
    else:
        print("daemon     not running (start it with `pbe-fs run`)")
    if data.get("pending"):
        print(f"pending    {data['pending']} works from an unfinished sync: run `pbe-fs sync`")
    for work in data["gone"]:
        print(f"gone       {work['id']} {work['title']!r} since {local_time(work['since'])} ({work['reason']})")
    for work in data["lost"]:
        print(f"lost       {work['id']} since {local_time(work['since'])} ({work['reason']}): never archived")
    for bad in data.get("damaged", []):
        print(f"damaged    {bad['id']}/{bad['path']} since {local_time(bad['since'])} ({bad['problem']}): `pbe-fs doctor --repair`")
    for bad in data.get("import_damaged", []):
        print(f"damaged    {bad['id']}/{bad['path']} imported {local_time(bad['since'])} ({bad['problem']}): kept as "
              "found; `pbe-fs sync --full` replaces it while pixiv has the work")
    partial = data.get("partial", [])
    if partial:
        shown = ", ".join(str(p["id"]) for p in partial[:10]) + (" …" if len(partial) > 10 else "")
        print(f"partial    {len(partial)} imported works with incomplete records (`status --json` says why): {shown}")
    for bad in data.get("problems", []):
        print(f"record     {bad['id']}: {bad['problem']}: `pbe-fs doctor --repair` rebuilds it")
    for tombstone in data["kept_out"]:
        print(f"kept out   {tombstone['id']} deleted {local_time(tombstone.get('deleted_at'))}: "
              f"`pbe-fs let-in {tombstone['id']}` lets sync --full fetch it again")
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    from .errors import NotArchived
    from .keepout import set_keep_out
    from .maintenance import delete

    cfg = _load(args)
    archive = Archive.open(cfg)
    try:
        delete(archive, args.id, force=args.force)
        log.info("deleted %d from the archive", args.id)
    except NotArchived:
        if not (args.keep_out and archive.read_side("deleted", args.id)):
            raise
    if args.keep_out:
        set_keep_out(archive, args.id, True)
        log.info("%d is kept out: `sync --full` will not fetch it again (`pbe-fs let-in %d` undoes that)", args.id, args.id)
    return 0


def cmd_let_in(args: argparse.Namespace) -> int:
    from .keepout import set_keep_out

    cfg = _load(args)
    changed = set_keep_out(Archive.open(cfg), args.id, False)
    log.info("%d %s: the next `pbe-fs sync --full` fetches it again while it is bookmarked", args.id,
             "is let back in" if changed else "was not kept out")
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    from .maintenance import reindex

    cfg = _load(args)
    report = reindex(Archive.open(cfg))
    log.info("index rebuilt: %s", report.describe())
    return 0


def _need_index(cfg: config_mod.Config) -> None:
    """Readers need an index: rebuilt from the files when it was lost."""
    from .recovery import open_index

    archive = Archive.open(cfg)
    archive.store.check()
    open_index(archive).close()
    if archive.index_path.exists():
        return
    if archive.store.kind == "s3":
        raise PbeError(f"no index of {archive.describe()} at {archive.index_path} yet: run `pbe-fs sync`, or "
                       "`pbe-fs reindex` to serve a bucket another machine fills")
    raise PbeError(f"no archive at {cfg.archive_path} yet: run `pbe-fs sync` first")


def cmd_migrate(args: argparse.Namespace) -> int:
    from .migrate import migrate
    from .progress import Progress

    cfg = _load(args)
    source = Archive.open(cfg).describe()
    result = migrate(cfg, args.to, Progress(enabled=False if args.no_progress else None, desc="migrate"))
    log.info("migrated %s to %s: %s, all verified", source, Archive.open(cfg).describe(), result.describe())
    log.info("%s now says \"filesystem\": \"%s\"%s", cfg.path, args.to,
             f"; the copy at {source} is left as it was: remove it when you no longer want it" if args.to == "s3"
             else f"; the bucket {source} is left as it was")
    return 0


def cmd_mount(args: argparse.Namespace) -> int:
    from pathlib import Path

    from .fuse import check_mountpoint, mount
    from .tree import Tree

    from .running import mount_problem, read_state

    cfg = _load(args)
    mountpoint = Path(args.mountpoint).resolve()
    problem = mount_problem(mountpoint, read_state(Archive.open(cfg).private))
    if problem:
        raise PbeError(problem)
    check_mountpoint(mountpoint)
    _need_index(cfg)
    # The mount answers before the works load; it keeps what readdir sends itself,
    # so the tree's cache of folders (with their records) can be smaller.
    tree = Tree(cfg, args.nsfw, ai=args.ai, defer=True, cache_dirs=1024)
    allow_delete = args.allow_delete or not cfg.settings.read_only
    log.info("mounted %s at %s (NSFW %s%s); unmount with Ctrl-C or `fusermount3 -u %s`", tree.archive.describe(),
             mountpoint, tree.policy, ", deletion allowed" if allow_delete else ", read-only", mountpoint)
    try:
        mount(tree, mountpoint, allow_delete=allow_delete, xattrs=args.xattrs or cfg.settings.mount.xattrs)
    finally:
        tree.close()
    log.info("unmounted %s", mountpoint)
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from .running import check_port
    from .tree import effective_policy

    cfg = _load(args)
    _need_index(cfg)
    s = cfg.settings
    host = args.host or s.webdav.host
    port = s.webdav.port if args.port is None else args.port
    policy = effective_policy(s.display.nsfw, args.nsfw)  # a wrong --nsfw: one line, before anything starts
    check_port(host, port)
    workers = 1 if s.filesystem_options.follow else s.webdav.workers  # a follower writes the local index

    def announce(bound_host: str, bound_port: int) -> None:
        log.info("serving %s over WebDAV at %s://%s:%d/ (NSFW %s%s%s); stop with Ctrl-C", cfg.archive_path,
                 "https" if s.webdav.ssl_certificate else "http", bound_host, bound_port, policy,
                 ", deletion needs the read-only token" if s.read_only else "",
                 f", {workers} processes" if workers > 1 else "")

    if workers == 1:
        return _serve_one(cfg, args, host, port, announce)
    return _serve_workers(cfg, args, host, port, workers, announce)


def _webdav_app(cfg: config_mod.Config, args: argparse.Namespace, nonces: str = ":memory:",
                peers: Any = None) -> tuple[Any, Any]:
    """One process's tree and WSGI app; POST /_pbe/refresh starts a sync in a
    child process (one at a time across every worker: the archive's lock)."""
    from .tree import Tree
    from .webdav import Access, SyncStarter, make_app

    s = cfg.settings
    tree = Tree(cfg, args.nsfw, ai=args.ai)
    refresh = SyncStarter(Archive.open(cfg), [sys.executable, "-m", "pbe_fs.cli", *cfg.cli_args(), "sync",
                                              "--no-progress"])
    access = Access(read_only=s.read_only, token=s.read_only_token, users=dict(s.webdav.users))
    return tree, make_app(tree, access, refresh=refresh, nonces=nonces, peers=peers)


def _serve_one(cfg: config_mod.Config, args: argparse.Namespace, host: str, port: int,
               announce: Callable[[str, int], None]) -> int:
    from .webdav import make_server, serve

    tree, app = _webdav_app(cfg, args)
    try:
        server = make_server(app, host, port, **cfg.tls())
        announce(*server.bind_addr[:2])
        serve(server)
    finally:
        tree.close()
    return 0


def _serve_workers(cfg: config_mod.Config, args: argparse.Namespace, host: str, port: int, count: int,
                   announce: Callable[[str, int], None]) -> int:
    """``webdav.workers`` processes on one port (webdav.Workers says why it is safe)."""
    import secrets
    import shutil
    import tempfile

    from .webdav import Shared, Workers, make_server, reserve_port, serve

    shared = tempfile.mkdtemp(prefix="pbe-fs-serve-")  # what the workers share for this run
    if not cfg.settings.app_key:  # one key for every worker's CSRF tokens and admin marks, new each run
        cfg.settings.app_key = secrets.token_hex(32)
    peers = Shared()  # made before forking: shared by every worker
    reserved = reserve_port(host, port)
    bound_host, bound_port = reserved.getsockname()[:2]

    def work(index: int, ready: Callable[[], None]) -> None:
        reserved.close()
        peers.install()
        tree, app = _webdav_app(cfg, args, nonces=os.path.join(shared, "nonces.sqlite"), peers=peers)
        try:
            server = make_server(app, host, bound_port, reuse_port=True, **cfg.tls())
            ready()
            serve(server)
        finally:
            tree.close()

    try:
        return Workers(count, work).run(lambda: announce(bound_host, bound_port))
    finally:
        reserved.close()
        shutil.rmtree(shared, ignore_errors=True)


def cmd_login(args: argparse.Namespace) -> int:
    from .login import exchange, extract_code, login_url, pkce_pair
    from .pixiv import PixivClient

    path, settings = config_mod.load_for_login(args.config)
    if args.refresh_token:
        refresh = args.refresh_token.strip()
        _redact.secrets = [refresh]
        check = settings.pixiv.model_copy(update={"refresh": refresh})
        tokens: list[tuple[str, str]] = []
        client = PixivClient(check, on_tokens=lambda a, r: tokens.append((a, r)))
        client.authenticate()  # AuthError: "pixiv refused the refresh token"
        access, refresh = tokens[-1] if tokens else ("", refresh)
    else:
        verifier, challenge = pkce_pair()
        print("1. Open this URL in a browser, with its developer tools open on the Network tab:")
        print(f"   {login_url(settings.pixiv.api_host, challenge)}")
        print("2. Log in. The last request goes to pixiv://account/login?code=...")
        print("3. Paste that code (or the whole pixiv:// URL) here within a minute.")
        try:
            pasted = input("code: ")
        except EOFError:
            raise PbeError("no code given") from None
        access, refresh = exchange(settings.pixiv.api_host, extract_code(pasted), verifier, settings.pixiv.timeout)
        _redact.secrets = [access, refresh]
    config_mod.write_tokens(path, access, refresh)
    log.info("logged in: the refresh token is saved in %s", path)
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    from .doctor import check_archive, repair_records, run_checks
    from .sync import Syncer

    cfg = _load(args)
    findings = run_checks(cfg, _client, repair=args.repair)
    for finding in findings:
        print(finding.line())
    archive_checks = ("archive", "index", "records", "works", "files")
    if args.repair and any(f.check in archive_checks and not f.ok for f in findings):
        if any(f.check == "records" and not f.ok for f in findings):
            log.info("repair: %d records rebuilt", repair_records(Archive.open(cfg)))
        if any(f.check == "files" and not f.ok for f in findings):
            result = Syncer(cfg, _client(cfg), full=True, deep=True).run()
            log.info("repair: %s", result.describe())
        findings = [f for f in findings if f.check not in archive_checks] + check_archive(Archive.open(cfg))
        for finding in findings:
            if finding.check in archive_checks:
                print(finding.line())
    return 0 if all(f.ok for f in findings) else 1


def cmd_run(args: argparse.Namespace) -> int:
    from .daemon import Daemon

    cfg = _load(args)
    Daemon(cfg, nsfw=args.nsfw, ai=args.ai, make_client=_client).run()
    return 0


def _port(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 65535:
        raise argparse.ArgumentTypeError(f"not a port number: {text!r}")
    return int(text)


def _artwork_id(text: str) -> int:
    if not text.isdigit() or int(text) <= 0:
        raise argparse.ArgumentTypeError(f"not an artwork id: {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pbe-fs", description="Back up your pixiv bookmarks and browse them as files.")
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="use exactly this config file (default: ./config.json, if any, under your own "
                             f"{config_mod.user_config_path()})")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv: HTTP too)")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    parser.add_argument("--log-format", choices=("human", "json"),
                        help="log lines for people (default, or log.format) or JSON lines for log collectors")
    parser.add_argument("--version", action="version", version=f"pbe-fs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("run", help="the daemon: periodic sync + WebDAV + the FUSE mount at mount.path")
    p.add_argument("--nsfw", choices=NSFW_POLICIES, help="NSFW policy (default: display.nsfw)")
    p.add_argument("--ai", choices=AI_POLICIES, help="AI-generated works: hidden keeps them to by-id/ and ai/ (default: display.ai)")
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("sync", help="fetch new bookmarks into the archive")
    p.add_argument("--full", action="store_true", help="walk every bookmark, re-fetch missing or damaged files, detect gone works")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.add_argument("--break-lock", action="store_true",
                   help="s3: remove the bucket's writer lease first (its holder died; never while it runs)")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("import", help="bring in an existing collection (the old app's folder, a gallery-dl folder)")
    p.add_argument("source", choices=["old-app", "gallery-dl"], help="what made the folder")
    p.add_argument("path", help="the old app's folder, or gallery-dl's base folder (or any folder below it)")
    how = p.add_mutually_exclusive_group()
    how.add_argument("--link", action="store_true", help="hard-link the files instead of copying them (same file system)")
    how.add_argument("--move", action="store_true", help="move the files: each work's are removed once it is committed")
    p.add_argument("--dry-run", action="store_true", help="say what would be imported, skipped or completed; change nothing")
    p.add_argument("--include-kept-out", action="store_true",
                   help="import works deleted with `delete --keep-out` too (they are skipped otherwise)")
    p.add_argument("--archive", metavar="FILE", action="append",
                   help="gallery-dl's --download-archive database (default: any found below PATH); repeatable")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(func=cmd_import)

    p = sub.add_parser("status", help="what is archived, last sync, gone and lost works")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("delete", help="remove one artwork from the archive")
    p.add_argument("id", type=_artwork_id)
    p.add_argument("--force", action="store_true", help="delete even a work that is gone from pixiv")
    p.add_argument("--keep-out", action="store_true",
                   help="and never fetch it again, even with sync --full while it is bookmarked (undo: let-in)")
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("let-in", help="let a work deleted with --keep-out be fetched again by sync --full")
    p.add_argument("id", type=_artwork_id)
    p.set_defaults(func=cmd_let_in)

    p = sub.add_parser("mount", help="show the archive as folders at MOUNTPOINT (FUSE), until Ctrl-C")
    p.add_argument("mountpoint")
    p.add_argument("--nsfw", choices=NSFW_POLICIES, help="NSFW policy for this mount (default: display.nsfw)")
    p.add_argument("--ai", choices=AI_POLICIES, help="AI-generated works: hidden keeps them to by-id/ and ai/ (default: display.ai)")
    p.add_argument("--allow-delete", action="store_true",
                   help="let `rm -r` of an artwork folder delete it even though read_only is true")
    p.add_argument("--xattrs", action="store_true",
                   help="serve user.xdg.* extended attributes (makes `ls -l` several times slower)")
    p.set_defaults(func=cmd_mount)

    p = sub.add_parser("serve", help="serve the archive's folders over WebDAV, until Ctrl-C")
    p.add_argument("--host", help="address to listen on (default: webdav.host, 127.0.0.1)")
    p.add_argument("--port", type=_port, help="port (default: webdav.port, 8080; 0 picks a free one)")
    p.add_argument("--nsfw", choices=NSFW_POLICIES, help="NSFW policy for this server (default: display.nsfw)")
    p.add_argument("--ai", choices=AI_POLICIES, help="AI-generated works: hidden keeps them to by-id/ and ai/ (default: display.ai)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("doctor", help="check config, token, archive integrity, disk, FUSE and the WebDAV port")
    p.add_argument("--repair", action="store_true", help="fetch damaged or missing files again")
    p.set_defaults(func=cmd_doctor)

    p = sub.add_parser("login", help="get a refresh token (pixiv's browser login) and save it in your config file (0600)")
    p.add_argument("--refresh-token", metavar="TOKEN", help="store a token obtained elsewhere, after checking it works")
    p.set_defaults(func=cmd_login)

    p = sub.add_parser("migrate", help="copy the archive to S3 or back to a local folder, then use it there")
    p.add_argument("--to", required=True, choices=["s3", "local"], help="the store to copy to (configured in filesystem_options)")
    p.add_argument("--no-progress", action="store_true", help="log lines instead of a progress bar")
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("reindex", help="rebuild the index from the archive files")
    p.set_defaults(func=cmd_reindex)
    return parser


def _run_command(args: argparse.Namespace) -> Any:
    """Run the command; if it meets a damaged index, rebuild the index from
    the archive's files and run it once more."""
    import sqlite3

    from .index import is_corruption
    from .recovery import after_corruption

    try:
        return args.func(args)
    except sqlite3.DatabaseError as exc:
        if not is_corruption(exc):
            raise
        after_corruption(Archive.open(config_mod.load(args.config)), exc)
    return args.func(args)


def _say(line: str) -> None:
    """One line on stderr, whatever characters a config file smuggled into it."""
    sys.stderr.write(line.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints where every thread of a running pbe-fs is,
    on stderr (its log): what a report of a mount or a sync that hangs needs."""
    import faulthandler
    import signal

    faulthandler.register(signal.SIGUSR1, all_threads=True)


def _few_malloc_arenas() -> None:
    """glibc gives threads malloc arenas of their own (up to eight a core),
    and what is freed in one stays with it: each of a server's 16 threads
    that once built a large answer kept that answer's size. Under one GIL
    two arenas are plenty."""
    import ctypes

    try:
        ctypes.CDLL(None).mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass  # not glibc: its own rules


def _more_open_files() -> None:
    """A mount keeps the files it read lately open (fuse._READERS), each
    with every archived file it was read from: a 200-page work's zip holds
    200. Debian's soft limit of 1,024 open files is a default, not a bound
    anyone chose; the hard one (often 524,288) is."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            pass  # as it was


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _stacks_on_sigusr1()
    if args.command in ("run", "serve", "mount"):  # long-lived and threaded
        _few_malloc_arenas()
        _more_open_files()
    _setup_logging(args.verbose, args.quiet, args.log_format or "human")
    try:
        return _run_command(args)
    except PbeError as exc:
        _say(f"pbe-fs: error: {exc}")
        return exc.exit_code
    except KeyboardInterrupt:
        print("pbe-fs: interrupted", file=sys.stderr)
        return 130
    except OSError as exc:  # disk full, permission denied: the user's to fix, not a bug
        _say(f"pbe-fs: error: {exc.strerror or exc}: {exc.filename or ''}".rstrip(": "))
        return 1


if __name__ == "__main__":
    sys.exit(main())
