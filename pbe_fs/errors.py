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
