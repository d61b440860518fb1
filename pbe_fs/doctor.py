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

import logging
import sqlite3

from . import index as index_mod, ledger as ledger_mod, recovery, running
from .archive import RAW, Archive, artwork_key, dumps
from .config import Config, private_problem
from .errors import AuthError, PbeError, RecordError
from .index import Index
from .recovery import open_index

log = logging.getLogger("pbe_fs")

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
    index = open_index(archive)
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
    archive.store.check()  # a refused key or a missing bucket, said as it is (not "no archive yet")
    state, detail = index_mod.inspect(archive.index_path)
    if state == "missing" and next(archive.work_folders(), None) is None:
        return [Finding("archive", False, f"no archive at {archive.describe()} yet: run `pbe-fs sync`")]
    findings = [check_index_file(archive)]
    if state == "newer":
        return findings
    index = open_index(archive)  # rebuilt from the files first if it was missing or damaged
    try:
        indexed = index.archived_ids()
        files = index.db.execute("SELECT count(*) FROM files").fetchone()[0]
    finally:
        index.close()
    on_disk = set(archive.work_folders())
    findings.append(check_records(archive, on_disk))
    if indexed != on_disk:
        findings.append(Finding("works", False, f"{len(on_disk - indexed)} works on disk not indexed, "
                                                f"{len(indexed - on_disk)} indexed but missing: run `pbe-fs reindex`"))
    else:
        findings.append(Finding("works", True, f"{len(indexed)} works, as on disk"))
    bad = list(damaged_files(archive))
    if bad:
        shown = "; ".join(f"{aid}/{path} ({why})" for aid, path, why in bad[:5])
        more = f" and {len(bad) - 5} more" if len(bad) > 5 else ""
        findings.append(Finding("files", False, f"{len(bad)} damaged or missing: {shown}{more}; "
                                                "`pbe-fs doctor --repair` fetches them again"))
    else:
        findings.append(Finding("files", True, f"{files} files match their size and SHA-256"))
    return findings


def check_index_file(archive: Archive) -> Finding:
    """The index's header and schema, then SQLite's full integrity check."""
    state, detail = index_mod.inspect(archive.index_path)
    if state == "newer":
        return Finding("index", False, f"format {detail} is newer than this pbe-fs ({index_mod.SCHEMA_VERSION}): upgrade pbe-fs")
    if state in ("missing", "damaged"):
        return Finding("index", False, f"{state}{f' ({detail})' if detail else ''}: the next command rebuilds it from "
                                       "the archive's files (or run `pbe-fs reindex`)")
    if state == "older":
        return Finding("index", True, f"format {detail}: upgraded on the next command")
    try:
        conn = sqlite3.connect(f"file:{archive.index_path}?mode=ro", uri=True, timeout=30)
        try:
            verdict = [r[0] for r in conn.execute("PRAGMA integrity_check(5)")]
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        verdict = [str(exc)]
    if verdict != ["ok"]:
        return Finding("index", False, f"damaged ({'; '.join(verdict)[:200]}): run `pbe-fs reindex`")
    return Finding("index", True, f"format {index_mod.SCHEMA_VERSION}, integrity check passed")


def record_problems(archive: Archive, ids: set[int] | None = None) -> list[str]:
    """Every artwork record (and side record) that cannot be trusted, by name."""
    problems: list[str] = []
    for aid in sorted(ids if ids is not None else set(archive.work_folders())):
        try:
            archive.read_artwork(aid)
        except RecordError as exc:
            problems.append(str(exc))
    for kind in ("deleted", "lost"):
        for _ in archive.side_records(kind, problems):
            pass
    return problems


def check_records(archive: Archive, ids: set[int]) -> Finding:
    problems = record_problems(archive, ids)
    if problems:
        shown = "; ".join(problems[:3]) + (f" and {len(problems) - 3} more" if len(problems) > 3 else "")
        return Finding("records", False, f"{len(problems)} unreadable: {shown}; "
                                         "`pbe-fs doctor --repair` rebuilds them from what survives")
    return Finding("records", True, f"{len(ids)} artwork records read")


def repair_records(archive: Archive) -> int:
    """Write back every artwork record that cannot be read, rebuilt from the
    index, the ledger and the files (with a history event saying so)."""
    with archive.lock(wait="repair records"):
        index = open_index(archive, locked=True)
        try:
            entries = ledger_mod.fold(archive.store)
            fixed = 0
            for aid in sorted(archive.work_folders()):
                try:
                    archive.read_artwork(aid)
                    continue
                except RecordError as exc:
                    problem = str(exc)
                work = recovery.salvage(archive, aid, problem, index.db, entries.get(aid))
                if work is None:
                    continue
                if not archive.store.exists(artwork_key(aid, RAW)):
                    archive.store.write_bytes(artwork_key(aid, RAW), dumps(work.raw))
                if not work.record.get("seq"):
                    continue  # numbered by the next reindex, which writes it
                archive.update_record(aid, work.record)
                with index.write() as db:
                    Index.put_artwork(db, work.record, work.raw)
                    db.execute("DELETE FROM problems WHERE artwork_id = ?", (aid,))
                log.warning("artworks/%d: record rebuilt from %s", aid, work.source)
                fixed += 1
        finally:
            index.close()
    if fixed:
        with archive.lock(wait="rebuild the index"):
            recovery.rebuild(archive, old=archive.index_path)  # numbers any record that had none
    return fixed


STALE_UPLOAD_SECONDS = 24 * 3600  # older than any upload of one file still under way


def check_uploads(archive: Archive, repair: bool = False, older_than: float = STALE_UPLOAD_SECONDS) -> Finding | None:
    """Multipart uploads a killed writer left in the bucket (their parts are
    stored, and billed, until aborted); ``repair`` aborts them."""
    store = archive.store
    if store.kind != "s3":
        return None
    try:
        stale = store.unfinished_uploads(older_than)  # type: ignore[attr-defined]
        if stale and repair:
            for key, upload_id, _ in stale:
                store.abort_upload(key, upload_id)  # type: ignore[attr-defined]
            return Finding("uploads", True, f"{len(stale)} unfinished uploads removed: "
                                            + ", ".join(key for key, _, _ in stale[:3]))
    except PbeError as exc:
        return Finding("uploads", False, str(exc))
    if stale:
        shown = ", ".join(f"{key} (since {started[:19]})" for key, _, started in stale[:3])
        return Finding("uploads", False, f"{len(stale)} unfinished uploads older than {older_than / 3600:g} h: {shown}; "
                                         "`pbe-fs doctor --repair` removes them")
    return Finding("uploads", True, "no unfinished uploads left behind")


def check_disk(archive: Archive) -> Finding:
    """Free space against what the next sync needs: the pending works (at the
    archive's average size per work), plus a margin."""
    folder = archive.root if archive.root.exists() else archive.root.parent
    free = shutil.disk_usage(folder).free
    need = 0
    if index_mod.inspect(archive.index_path)[0] == "ok":
        index = Index(archive.index_path)
        try:
            works, stored = index.db.execute("SELECT count(*), coalesce(sum(bytes), 0) FROM artworks").fetchone()
            pending = index.db.execute("SELECT count(*) FROM pending").fetchone()[0]
            need = pending * (stored // works if works else 5_000_000)
        finally:
            index.close()
    if free < _LOW_DISK + need:
        pending_part = f" ({need / 1e9:.1f} GB for the works waiting to be fetched)" if need else ""
        return Finding("disk", False, f"only {free / 1e9:.1f} GB free at {folder}, below "
                                      f"{(_LOW_DISK + need) / 1e9:.1f} GB{pending_part}: make room before the next sync")
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


def run_checks(cfg: Config, make_client: Callable[[Config], object], repair: bool = False) -> list[Finding]:
    archive = Archive.open(cfg)
    s = cfg.settings
    found = check_archive(archive)
    uploads = check_uploads(archive, repair) if all(f.ok for f in found) else None  # the bucket answers
    return [check_config(cfg), check_token(cfg, make_client), *found, *([uploads] if uploads else []),
            check_disk(archive), check_fuse(), check_port(s.webdav.host, s.webdav.port, archive)]
