"""`pbe-fs doctor`: is everything in order? One line per check, OK or what to do.

Checks change nothing; ``--repair`` then re-fetches damaged or missing
files from pixiv (through a full sync, which also notices anything else
that changed).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import running
from .archive import Archive
from .config import Config, private_problem
from .errors import AuthError, PbeError
from .index import Index

_LOW_DISK = 1_000_000_000


@dataclass
class Finding:
    check: str
    ok: bool
    message: str

    def line(self) -> str:
        return f"{self.check:<9} {'OK  ' if self.ok else 'FAIL'} {self.message}"


def check_token(cfg: Config, make_client: Callable[[Config], object]) -> Finding:
    try:
        make_client(cfg).authenticate()  # type: ignore[attr-defined]
    except AuthError:
        return Finding("token", False, "pixiv refused the refresh token: run `pbe-fs login`")
    except PbeError as exc:
        return Finding("token", False, f"pixiv unreachable ({exc}); check pixiv.api_host and the network")
    return Finding("token", True, "pixiv accepts the refresh token")


def damaged_files(archive: Archive) -> Iterator[tuple[int, str, str]]:
    """(artwork id, path, what is wrong) for every file that fails its record."""
    index = Index(archive.index_path)
    try:
        rows = index.db.execute("SELECT artwork_id, path, size, sha256 FROM files ORDER BY artwork_id, path").fetchall()
    finally:
        index.close()
    for aid, path, size, sha in rows:
        problem = archive.file_problem(aid, {"path": path, "size": size, "sha256": sha})
        if problem:
            yield aid, path, problem


def check_archive(archive: Archive) -> list[Finding]:
    try:
        return _check_archive(archive)
    except PbeError as exc:  # an unreachable bucket, a refused key
        return [Finding("archive", False, str(exc))]


def _check_archive(archive: Archive) -> list[Finding]:
    if not archive.index_path.exists():
        return [Finding("archive", False, f"no archive at {archive.describe()} yet: run `pbe-fs sync`")]
    index = Index(archive.index_path)
    try:
        indexed = index.archived_ids()
        files = index.db.execute("SELECT count(*) FROM files").fetchone()[0]
    finally:
        index.close()
    on_disk = set(archive.artwork_ids())
    findings = []
    if indexed != on_disk:
        findings.append(Finding("index", False, f"{len(on_disk - indexed)} works on disk not indexed, "
                                                f"{len(indexed - on_disk)} indexed but missing: run `pbe-fs reindex`"))
    else:
        findings.append(Finding("index", True, f"{len(indexed)} works, as on disk"))
    bad = list(damaged_files(archive))
    if bad:
        shown = "; ".join(f"{aid}/{path} ({why})" for aid, path, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        findings.append(Finding("files", False, f"{len(bad)} damaged or missing: {shown}{more}; "
                                                "`pbe-fs doctor --repair` fetches them again"))
    else:
        findings.append(Finding("files", True, f"{files} files match their size and SHA-256"))
    return findings


def check_disk(archive: Archive) -> Finding:
    folder = archive.root if archive.root.exists() else archive.root.parent
    free = shutil.disk_usage(folder).free
    if free < _LOW_DISK:
        return Finding("disk", False, f"only {free / 1e9:.1f} GB free at {folder}: make room before the next sync")
    return Finding("disk", True, f"{free / 1e9:.0f} GB free")


def check_fuse() -> Finding:
    if not os.path.exists("/dev/fuse"):
        return Finding("fuse", False, "/dev/fuse missing: `apt-get install fuse3` (mounting needs it)")
    if shutil.which("fusermount3") is None:
        return Finding("fuse", False, "fusermount3 missing: `apt-get install fuse3`")
    return Finding("fuse", True, "/dev/fuse and fusermount3 present")


def check_config(cfg: Config) -> Finding:
    """Every file the config came from; FAIL when one holding a token can be read by others."""
    problems = [problem for path in cfg.sources if (problem := private_problem(path))]
    if problems:
        return Finding("config", False, "; ".join(problems))
    return Finding("config", True, cfg.describe())


def check_port(host: str, port: int, archive: Archive | None = None) -> Finding:
    """The WebDAV port is free, or held by this archive's own healthy daemon."""
    state = running.read_state(archive.private) if archive is not None else None
    if state and state.get("port") == port and running.port_holder(port) == state.get("pid"):
        last = (f"last sync {running.local_time(state['last_sync'])} ({'ok' if state.get('last_sync_ok') else 'failed'})"
                if state.get("last_sync") else "first sync under way")
        upcoming = "syncing now" if state.get("sync_running") else f"next sync {running.local_time(state.get('next_sync'))}"
        return Finding("port", True, f"{host}:{port} is served by {running.describe(state['pid'])}, running since "
                                     f"{running.local_time(state['started_at'])}; {last}, {upcoming}")
    problem = running.port_problem(host, port)
    if problem:
        return Finding("port", False, problem)
    return Finding("port", True, f"{host}:{port} is free for WebDAV")


def run_checks(cfg: Config, make_client: Callable[[Config], object]) -> list[Finding]:
    archive = Archive.open(cfg)
    s = cfg.settings
    return [check_config(cfg), check_token(cfg, make_client), *check_archive(archive),
            check_disk(archive), check_fuse(), check_port(s.webdav.host, s.webdav.port, archive)]
