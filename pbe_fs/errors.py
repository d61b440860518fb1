"""The exceptions a user can meet, each printed by the CLI as one line.

Anything that is not a PbeError is a bug and keeps its traceback.
"""


class PbeError(Exception):
    """A failure with a message fit for the user; exit code 1."""

    exit_code = 1


class ConfigError(PbeError):
    """config.json is missing, unreadable or invalid; exit code 2."""

    exit_code = 2


class AuthError(PbeError):
    """pixiv refused the refresh token: nothing can be synced until it is replaced."""


class LockedError(PbeError):
    """Another process holds the archive's sync lock."""


class PixivUnavailable(PbeError):
    """pixiv (or the configured api_host) kept failing after every retry."""


class NotArchived(PbeError):
    """An artwork id that the archive does not hold."""


class RecordError(PbeError):
    """An artwork's pbe.json or pixiv.json is missing, unreadable or incomplete."""


class NewerFormat(PbeError):
    """The archive or its index was written by a newer pbe-fs: reading it could misread it."""


class DiskFull(PbeError):
    """No room (or no quota, or a read-only file system) where pbe-fs writes:
    retrying cannot help, so the sync stops at once."""


_DISK_ERRNOS = {28, 122, 30}  # ENOSPC, EDQUOT, EROFS


def disk_full(exc: BaseException, where: object = "") -> DiskFull | None:
    """The DiskFull that ``exc`` means, or None when it is something else."""
    import shutil
    import sqlite3

    errno = getattr(exc, "errno", None)
    full_db = isinstance(exc, sqlite3.OperationalError) and (
        getattr(exc, "sqlite_errorcode", 0) & 0xFF == sqlite3.SQLITE_FULL or "disk is full" in str(exc))
    if errno not in _DISK_ERRNOS and not full_db:
        return None
    place = str(getattr(exc, "filename", None) or where or ".")
    try:
        free = f"{shutil.disk_usage(_existing(place)).free / 1e6:.1f} MB free on {_existing(place)}"
    except OSError:
        free = f"no room at {place}"
    if errno == 30:
        return DiskFull(f"read-only file system at {place}: make it writable and run pbe-fs sync again")
    return DiskFull(f"disk full: {free}; free space and run pbe-fs sync again")


def _existing(place: str) -> str:
    import os

    while place and not os.path.exists(place):
        place = os.path.dirname(place.rstrip("/")) or "/"
    return place or "."
