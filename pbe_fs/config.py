"""Load, validate and save config.json.

The seed app's file is accepted as it is: every key it knew keeps its meaning,
unknown top-level keys are kept (and written back untouched), and every key
pbe-fs added has a default, so ``{"pixiv": {"refresh": "..."}}`` is a whole
config. Validation is pydantic's; this module only turns its errors into one
line a user can act on ("sync.concurrency: must be at least 1").
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

DEFAULT_API_HOST = "https://app-api.pixiv.net"
NSFW_POLICIES = ("enabled", "hidden", "required", "disabled")
SIZES = ("original", "large", "medium", "square_medium")
SAMPLE_REFRESH = "PASTE-YOUR-REFRESH-TOKEN-HERE"  # the value in the README's sample config.json

Size = Literal["original", "large", "medium", "square_medium"]
NsfwPolicy = Literal["enabled", "hidden", "required", "disabled"]
AI_POLICIES = ("shown", "hidden")
AiPolicy = Literal["shown", "hidden"]


class _Section(BaseModel):
    # Seed files may carry keys we do not know yet; keep them rather than refuse.
    model_config = ConfigDict(extra="allow")


class PixivSection(_Section):
    access: str = ""
    refresh: str
    api_host: str = DEFAULT_API_HOST
    timeout: float = Field(30.0, gt=0, description="seconds per HTTP request")
    retries: int = Field(6, ge=0, description="attempts after the first for a failing request")
    backoff: float = Field(1.0, ge=0, description="first retry delay in seconds, doubled each time")
    rate_limit_wait: float = Field(300.0, ge=0, description="seconds to wait on 403 Rate Limit")

    @field_validator("refresh")
    @classmethod
    def _refresh_present(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("empty: a refresh token is required (get one with `pbe-fs login`)")
        if value == SAMPLE_REFRESH:
            raise ValueError("still the sample value: put your refresh token here (get one with `pbe-fs login`)")
        return value

    @field_validator("api_host")
    @classmethod
    def _api_host_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value.rstrip("/")


class HomeSection(_Section):
    image: Size = "original"
    ipp: int = Field(50, ge=1, le=1000)
    order: Literal["default", "asc", "desc"] = "default"


class ArtworkSection(_Section):
    image: Size = "original"


class DisplaySection(_Section):
    home: HomeSection = HomeSection()
    artwork: ArtworkSection = ArtworkSection()
    nsfw: NsfwPolicy = "hidden"
    ai: AiPolicy = Field("shown", description="hidden: AI-generated works only in by-id/ and ai/")


class FilesystemOptions(_Section):
    path: str = "./data"  # local: the archive; s3: where the index and works in progress live
    endpoint_url: str = ""  # s3: empty means AWS
    bucket: str = ""
    prefix: str = ""
    region: str = ""
    access_key: str = ""  # s3: empty means the AWS environment/credential chain
    secret_key: str = ""
    proxy: bool = True  # s3: False answers a WebDAV GET of an archived file with a presigned redirect

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if value and not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError("not a valid bucket name (3-63 lowercase letters, digits, dots, hyphens)")
        return value


class CacheSection(_Section):
    path: str = "./cache"
    max_gb: float = Field(5.0, gt=0)
    read_max_gb: float = Field(5.0, gt=0, description="s3: local cache of read blocks")


class SyncSection(_Section):
    interval_minutes: float = Field(60.0, gt=0)
    private: bool = True
    concurrency: int = Field(4, ge=1, le=64)
    sizes: list[Size] = Field(default_factory=lambda: list(SIZES), min_length=1)
    scrub_days: float = Field(30.0, gt=0, description="the daemon re-reads every archived file within this many days")
    metadata_refresh_days: float = Field(7.0, gt=0, description="the daemon compares every work's metadata with pixiv's within this many days")


class WebdavSection(_Section):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=0, le=65535)
    users: dict[str, str] = Field(default_factory=dict, description="user name -> password, for reading")
    ssl_certificate: str = ""
    ssl_private_key: str = ""


class MountSection(_Section):
    path: str = ""
    xattrs: bool = False


class LogSection(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["human", "json"] = "human"


class Settings(_Section):
    pixiv: PixivSection
    display: DisplaySection = DisplaySection()
    app_key: str = ""
    read_only: bool = True
    read_only_token: str = ""
    temp_path: str = "./tmp"
    filesystem: Literal["local", "s3"] = "local"
    filesystem_options: FilesystemOptions = FilesystemOptions()
    cache: CacheSection = CacheSection()
    sync: SyncSection = SyncSection()
    webdav: WebdavSection = WebdavSection()
    mount: MountSection = MountSection()
    log: LogSection = LogSection()


@dataclass
class Config:
    """A validated config plus where it came from, so paths and token
    rotation are resolved against the file rather than the caller's cwd."""

    path: Path
    settings: Settings

    def resolve(self, value: str) -> Path:
        """Config paths are relative to the config file's folder."""
        p = Path(os.path.expanduser(value))
        return p if p.is_absolute() else (self.path.parent / p).resolve()

    @property
    def archive_path(self) -> Path:
        return self.resolve(self.settings.filesystem_options.path)

    @property
    def temp_path(self) -> Path:
        return self.resolve(self.settings.temp_path)

    @property
    def cache_path(self) -> Path:
        return self.resolve(self.settings.cache.path)

    def tls(self) -> dict[str, str]:
        """The WebDAV server's certificate and key, resolved: both or neither."""
        s = self.settings.webdav
        if bool(s.ssl_certificate) != bool(s.ssl_private_key):
            raise ConfigError("webdav.ssl_certificate and webdav.ssl_private_key go together: set both or neither")
        if not s.ssl_certificate:
            return {}
        return {"certificate": str(self.resolve(s.ssl_certificate)), "private_key": str(self.resolve(s.ssl_private_key))}

    def secrets(self) -> list[str]:
        """Every value that must never reach a log line or a file in the tree."""
        s = self.settings
        return [v for v in (s.pixiv.access, s.pixiv.refresh, s.read_only_token, s.app_key,
                            s.filesystem_options.secret_key,
                            *s.webdav.users.values()) if v]


def _describe(error: dict[str, Any]) -> str:
    loc = ".".join(str(part) for part in error["loc"]) or "(top level)"
    kind = error["type"]
    if kind == "missing":
        reason = "missing"
        if error["loc"] == ("pixiv",) or error["loc"] == ("pixiv", "refresh"):
            reason = "missing: a refresh token is required (get one with `pbe-fs login`)"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        reason = f"{error.get('input')!r} is not one of {expected}"
    elif kind == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        reason = error["msg"][0].lower() + error["msg"][1:]
        if "input" in error and not isinstance(error["input"], (dict, list)):
            reason += f" (got {error['input']!r})"
    return f"{loc}: {reason}"


def parse(data: Any, path: Path) -> Config:
    """Validate an already-decoded config; raise ConfigError naming the key."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ConfigError(f"{path}: {_describe(first)}") from None
    if settings.filesystem == "s3" and not settings.filesystem_options.bucket:
        raise ConfigError(f"{path}: filesystem_options.bucket: required when filesystem is \"s3\"")
    return Config(path=path.resolve(), settings=settings)


def load(path: str | os.PathLike[str]) -> Config:
    """Read and validate config.json; every failure is one ConfigError line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p}: not found (copy config.json from the README and add your refresh token)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p}: cannot read: {exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{p}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    return parse(data, p)


def load_for_login(path: str | os.PathLike[str]) -> tuple[Path, dict[str, Any], Settings]:
    """config.json for `pbe-fs login`: the refresh token may be missing or
    stale (that is why one logs in), everything else must be valid."""
    p = Path(path)
    data: dict[str, Any] = {}
    if p.exists():
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{p}: cannot read: {exc}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{p}: the top level must be a JSON object")
    probe = json.loads(json.dumps(data))
    probe.setdefault("pixiv", {})
    if isinstance(probe["pixiv"], dict):
        probe["pixiv"]["refresh"] = "login"
    return p, data, parse(probe, p).settings


def write_tokens(path: Path, access: str, refresh: str) -> None:
    """Put tokens into config.json, creating it if need be."""
    if not path.exists():
        path.write_text(json.dumps({"pixiv": {"access": access, "refresh": refresh}}, indent=2) + "\n")
        os.chmod(path, 0o600)  # it holds a secret
        return
    _write_tokens(path, access, refresh)


def save_tokens(config: Config, access: str, refresh: str) -> None:
    """Write rotated tokens back into the file the config came from."""
    _write_tokens(config.path, access, refresh)
    config.settings.pixiv.access = access
    config.settings.pixiv.refresh = refresh


def _write_tokens(path: Path, access: str, refresh: str) -> None:
    """Set the tokens in config.json, and nothing else."""
    def change(data: dict[str, Any]) -> None:
        data.setdefault("pixiv", {})
        data["pixiv"]["access"] = access
        data["pixiv"]["refresh"] = refresh
    _edit(path, change)


def set_filesystem(config: Config, kind: str) -> None:
    """Point config.json at the other store (after `pbe-fs migrate`)."""
    _edit(config.path, lambda data: data.__setitem__("filesystem", kind))
    config.settings.filesystem = kind  # type: ignore[assignment]


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to config.json and nothing else.

    Every other key, the key order and the file mode stay as they were. The
    write is atomic (a temporary file in the same folder, fsync, rename), so
    a crash leaves either the old file or the new one, never half of each.
    """
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data)
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, st.st_mode & 0o7777)
        try:
            os.chown(tmp, st.st_uid, st.st_gid)
        except PermissionError:
            pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
