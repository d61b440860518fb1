"""`pbe-fs run`: periodic sync, the WebDAV server and the FUSE mount in one
process, sharing one tree.

Threads: cheroot serves WebDAV from its pool, a sync thread wakes every
``sync.interval_minutes``, and the main thread reads the FUSE mount's requests
(or just waits for a signal when no ``mount.path`` is set). Every part
reads the same index; a sync's commits reach the mount and the server
through the index's generation counter.

Before any of that, everything that can be checked is (the mount point,
the port, the refresh token, the archive), so a mistake fails the start in
a second, not after a whole sync.

Signals: SIGTERM/SIGINT stop accepting, let in-flight downloads finish
(unstarted works stay pending for next time), unmount and exit 0. SIGHUP
re-reads the same config files: the NSFW policy and WebDAV credentials
change at once, everything the sync reads (tokens, interval, sizes,
private, concurrency, pixiv.*) from the next sync; what is bound at start
(webdav host, port and TLS, mount.path, the archive's location) needs a
restart, and the log says so.

While it runs, ``.pbe/daemon.json`` says so (pid, since, where, last and
next sync) for `pbe-fs status` and `pbe-fs doctor`.
"""

from __future__ import annotations

import logging
import os
import signal
import sqlite3
import threading
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from . import config as config_mod
from . import running
from .archive import Archive
from .errors import AuthError, ConfigError, LockedError, PbeError
from .index import is_corruption
from .recovery import after_corruption, open_index
from .tree import Tree, effective_ai, effective_policy

_REFRESH = threading.Lock()  # one refresh decision at a time

log = logging.getLogger("pbe_fs.daemon")
_MAX_BACKOFF = 6 * 3600.0


class Daemon:
    def __init__(self, cfg: config_mod.Config, *, nsfw: str | None = None, ai: str | None = None,
                 make_client: Any = None) -> None:
        self.cfg = cfg
        self.nsfw = nsfw
        self.ai = ai
        self.make_client = make_client
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.mountpoint = cfg.resolve(cfg.settings.mount.path) if cfg.settings.mount.path else None
        # filesystem_options.follow: another machine syncs the bucket; we serve it and keep up
        self.follows = cfg.settings.filesystem == "s3" and cfg.settings.filesystem_options.follow
        self.preflight()
        self.syncing = True  # the loop's sync runs (or is about to): refresh answers 409
        Archive.open(cfg).ensure()
        open_index(Archive.open(cfg)).close()  # checked (rebuilt if need be) before any reader opens it
        self.tree = Tree(cfg, nsfw, ai=ai)
        self.access: Any = None
        self.server: Any = None
        self.ops: Any = None
        self.failures = 0
        self.state: dict[str, Any] = {}

    def preflight(self) -> None:
        """Fail now, in one line, for whatever would fail later: the mount
        point, the port, a refused refresh token. pixiv being unreachable
        is not a reason to refuse to serve the archive: that is retried."""
        if self.mountpoint is not None:
            from .fuse import check_mountpoint

            problem = running.mount_problem(self.mountpoint, running.read_state(Archive.open(self.cfg).private))
            if problem:
                raise PbeError(f"mount.path: {problem}")
            check_mountpoint(self.mountpoint)
        s = self.cfg.settings
        self.cfg.tls()
        running.check_port(s.webdav.host, s.webdav.port)
        if self.make_client is not None and not self.follows:
            try:
                self.make_client(self.cfg).authenticate()
            except AuthError:
                raise
            except PbeError as exc:
                log.warning("pixiv cannot be reached now (%s): serving the archive, the sync will retry", exc)

    # -- sync loop ---------------------------------------------------------------
    def _record_failure(self, message: str) -> None:
        """Make a failed sync visible in status.json and /_pbe/status."""
        try:
            index = open_index(Archive.open(self.cfg))
            try:
                last = index.db.execute("SELECT status, message FROM sync_runs ORDER BY id DESC LIMIT 1").fetchone()
                if last is not None and tuple(last) == ("failed", message):
                    return  # the sync recorded it itself
                now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
                with index.write() as db:
                    db.execute("INSERT INTO sync_runs (started_at, finished_at, mode, status, message) VALUES (?,?,?,?,?)",
                               (now, now, "incremental", "failed", message))
            finally:
                index.close()
        except (sqlite3.Error, OSError, PbeError) as exc:  # a full disk: the log line is all we can leave
            log.debug("failed sync not recorded: %s", exc)

    def sync_once(self) -> bool:
        from .progress import Progress
        from .sync import Syncer

        try:
            result = Syncer(self.cfg, self.make_client(self.cfg), progress=Progress(enabled=False),
                            stop=self.stop, scrub=True).run()
            log.info("sync done: %s", result.describe())
            return True
        except AuthError as exc:
            log.error("sync stopped: %s; the archive is still served", exc)
            self._record_failure(str(exc))
        except LockedError as exc:
            log.warning("sync skipped: %s", exc)
            return True
        except PbeError as exc:
            log.error("sync failed: %s; will retry", exc)
            self._record_failure(str(exc))
        except sqlite3.DatabaseError as exc:
            if not is_corruption(exc):
                log.exception("sync crashed; will retry")
                return False
            try:
                after_corruption(Archive.open(self.cfg), exc)
            except Exception:
                log.exception("the index is damaged and could not be rebuilt; will retry")
        except Exception:  # a bug must not take the servers down
            log.exception("sync crashed; will retry")
        return False

    def sync_loop(self) -> None:
        while not self.stop.is_set():
            self._save_state(sync_running=True)
            ok = self.sync_once()
            self.syncing = False
            self.failures = 0 if ok else self.failures + 1
            interval = self.cfg.settings.sync.interval_minutes * 60
            if self.failures > 3:  # pixiv keeps failing: wait longer each time, up to 6 h
                interval = min(_MAX_BACKOFF, max(interval, 60.0 * 2 ** min(self.failures, 8)))
            next_sync = datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=interval)
            self._save_state(sync_running=False, last_sync=running.now(), last_sync_ok=ok,
                             next_sync=next_sync.isoformat())
            self.wake.wait(interval)
            self.syncing = True
            self.wake.clear()

    # -- reload --------------------------------------------------------------------
    def reload(self) -> None:
        self.notify("RELOADING=1")
        try:
            fresh = config_mod.reload(self.cfg)
            policy = effective_policy(fresh.settings.display.nsfw, self.nsfw)
            ai_policy = effective_ai(fresh.settings.display.ai, self.ai)
        except (ConfigError, PbeError) as exc:
            log.error("config not reloaded: %s", exc)
            self.notify("READY=1")
            return
        old = self.cfg.settings
        for key, before, after in (("webdav.host", old.webdav.host, fresh.settings.webdav.host),
                                   ("webdav.port", old.webdav.port, fresh.settings.webdav.port),
                                   ("webdav TLS", (old.webdav.ssl_certificate, old.webdav.ssl_private_key),
                                    (fresh.settings.webdav.ssl_certificate, fresh.settings.webdav.ssl_private_key)),
                                   ("mount.path", old.mount.path, fresh.settings.mount.path),
                                   ("the archive's location", (old.filesystem, old.filesystem_options),
                                    (fresh.settings.filesystem, fresh.settings.filesystem_options))):
            if before != after:
                log.warning("config reloaded, but %s changed: restart pbe-fs run to apply it", key)
        self.cfg.settings = fresh.settings
        self.tree.policy, self.tree.ai_policy = policy, ai_policy
        self.tree.refresh(force=True)
        if self.access is not None:
            s = fresh.settings
            self.access.read_only, self.access.token, self.access.users = s.read_only, s.read_only_token, dict(s.webdav.users)
        log.info("config reloaded from %s: NSFW %s, sync every %g min", fresh.describe(), policy,
                 fresh.settings.sync.interval_minutes)
        self.notify("READY=1")
        self.wake.set()  # a new interval starts now

    # -- the whole thing ---------------------------------------------------------------
    def _start_webdav(self) -> None:
        from .webdav import Access, make_app, make_server

        s = self.cfg.settings
        self.access = Access(read_only=s.read_only, token=s.read_only_token, users=dict(s.webdav.users))
        app = make_app(self.tree, self.access, refresh=self._refresh_now)
        self.server = make_server(app, s.webdav.host, s.webdav.port, **self.cfg.tls())
        host, port = self.server.bind_addr[:2]
        log.info("serving WebDAV at %s://%s:%d/", "https" if s.webdav.ssl_certificate else "http", host, port)
        threading.Thread(target=self.server.serve, name="webdav", daemon=True).start()
        self.state = {"pid": os.getpid(), "started_at": running.now(), "url": f"{'https' if s.webdav.ssl_certificate else 'http'}://{host}:{port}/",
                      "host": host, "port": port, "mount": str(self.mountpoint or ""), "config": self.cfg.describe()}
        self._save_state()

    def _save_state(self, **changes: Any) -> None:
        self.state.update(changes)
        try:
            running.write_state(Archive.open(self.cfg).private, self.state)
        except OSError as exc:
            log.debug("daemon state not written: %s", exc)

    def _refresh_now(self) -> str:
        """POST /_pbe/refresh: 409 (not 202) while a sync is due or any sync holds the archive."""
        with _REFRESH:
            if self.syncing or self.wake.is_set():
                return "busy: the daemon's sync is running or about to start"
            try:
                with Archive.open(self.cfg).lock():
                    self.wake.set()
            except LockedError as exc:
                return str(exc)
        return "started sync (the daemon's next run starts now)"

    @staticmethod
    def notify(state: str) -> None:
        """Tell systemd (Type=notify) how we are: a datagram to $NOTIFY_SOCKET."""
        import os
        import socket

        address = os.environ.get("NOTIFY_SOCKET")
        if not address:
            return
        if address.startswith("@"):
            address = "\0" + address[1:]
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), address)
        except OSError as exc:
            log.debug("sd_notify: %s", exc)

    def shutdown(self, signum: int | None = None) -> None:
        if signum is not None:
            log.info("%s: shutting down", signal.Signals(signum).name)
        self.notify("STOPPING=1")
        self.stop.set()
        self.wake.set()

    def run(self) -> None:
        self._start_webdav()
        syncer = threading.Thread(target=self.sync_loop, name="sync", daemon=True)
        if not self.follows:
            syncer.start()
        try:
            if self.mountpoint is not None:
                self._run_mount(self.mountpoint)
            else:
                self.notify("READY=1")
                signal.signal(signal.SIGTERM, lambda n, f: self.shutdown(n))
                signal.signal(signal.SIGINT, lambda n, f: self.shutdown(n))
                signal.signal(signal.SIGHUP, lambda n, f: self.reload())
                while not self.stop.wait(0.5):
                    pass
        finally:
            self.stop.set()
            self.wake.set()
            if self.server is not None:
                self.server.stop()
            if syncer.is_alive():
                syncer.join(timeout=8)
            running.remove_state(Archive.open(self.cfg).private)
            self.tree.close()
        log.info("stopped")

    def _run_mount(self, mountpoint: Path) -> None:
        from .fuse import mount

        s = self.cfg.settings
        log.info("mounting at %s", mountpoint)
        mount(self.tree, mountpoint, allow_delete=not s.read_only, xattrs=s.mount.xattrs,
              on_stop=self.shutdown, on_hup=self.reload, on_ready=lambda: self.notify("READY=1"))
        log.info("unmounted %s", mountpoint)
