"""Load, validate and save config.json.

Where settings come from: with ``-c FILE``, exactly that file (read, and
written back to when tokens rotate). Without it, ``./config.json`` (the
repository's sample, or any shared settings) if there is one, with the
user's own file ``$XDG_CONFIG_HOME/pbe-fs/config.json`` read over it: that
file holds the tokens, is created 0600 and is the only one pbe-fs writes.

The seed app's file is accepted as it is: every key it knew keeps its meaning,
unknown keys are kept (and written back untouched) with a warning naming the
closest known key, and every key pbe-fs added has a default, so
``{"pixiv": {"refresh": "..."}}`` is a whole config. Validation is
pydantic's; this module turns all of its errors into one line a user can
act on ("sync.concurrency: must be at least 1"), never echoing a secret.
"""

from __future__ import annotations

import difflib
import json
import logging
import os
import re
import stat
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import ConfigError

log = logging.getLogger("pbe_fs")

DEFAULT_API_HOST = "https://app-api.pixiv.net"
NSFW_POLICIES = ("enabled", "hidden", "required", "disabled")
SIZES = ("original", "large", "medium", "square_medium")
SAMPLE_REFRESH = "PASTE-YOUR-REFRESH-TOKEN-HERE"  # the value in the repository's sample config.json
# keys whose values are secrets: never echoed in an error, and a file holding one must be private
SECRET_KEYS = frozenset({"access", "refresh", "read_only_token", "app_key", "secret_key", "access_key"})
# keys holding paths, resolved against the folder of the file that sets them
PATH_KEYS = (("temp_path",), ("filesystem_options", "path"), ("cache", "path"), ("mount", "path"),
             ("webdav", "ssl_certificate"), ("webdav", "ssl_private_key"))
MAX_DEPTH = 32  # a config is 3 levels deep; anything far deeper is a mistake, not a setting

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
    timeout: float = Field(10.0, gt=0, le=600, description="s3: seconds a read waits on the bucket, retries included")
    follow: bool = Field(False, description="s3: serve a bucket another machine syncs; never sync here")

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
    workers: int = Field(2, ge=1, le=32, description="`pbe-fs serve` processes sharing the port (SO_REUSEPORT)")


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
    """A validated config plus where it came from: ``path`` is the one file
    pbe-fs writes to (tokens, the storage switch), ``sources`` every file
    read, in order (later ones win), ``explicit`` whether ``-c`` named it."""

    path: Path
    settings: Settings
    sources: tuple[Path, ...] = ()
    explicit: bool = True

    def __post_init__(self) -> None:
        if not self.sources:
            self.sources = (self.path,)

    def resolve(self, value: str) -> Path:
        """Config paths are relative to the folder of the file that sets them."""
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

    def cli_args(self) -> list[str]:
        """What makes another `pbe-fs` process read the same files."""
        return ["-c", str(self.path)] if self.explicit else []

    def describe(self) -> str:
        return " over ".join(str(p) for p in reversed(self.sources))

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


def user_config_path() -> Path:
    """The user's own config file, where git and other users cannot reach it."""
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "pbe-fs" / "config.json"


SHARED_CONFIG = Path("config.json")  # read under the user's file when no -c is given


# -- reading ------------------------------------------------------------------------
def _is_secret(loc: tuple[Any, ...]) -> bool:
    return bool(loc) and (str(loc[-1]) in SECRET_KEYS or tuple(loc[:2]) == ("webdav", "users"))


def _describe(error: dict[str, Any]) -> str:
    loc = tuple(error["loc"])
    where = ".".join(str(part) for part in loc) or "(top level)"
    kind = error["type"]
    shown = None if _is_secret(loc) or isinstance(error.get("input"), (dict, list)) else error.get("input")
    if isinstance(shown, str) and len(shown) > 40:
        shown = shown[:40] + "…"
    if kind == "missing":
        reason = "missing"
        if loc in (("pixiv",), ("pixiv", "refresh")):
            reason = "missing: a refresh token is required (get one with `pbe-fs login`)"
    elif kind == "literal_error":
        expected = error.get("ctx", {}).get("expected", "")
        reason = (f"{shown!r} is not one of {expected}" if "input" in error and not _is_secret(loc)
                  else f"must be one of {expected}")
    elif kind == "value_error":
        reason = str(error.get("ctx", {}).get("error", error["msg"]))
    else:
        reason = error["msg"][0].lower() + error["msg"][1:]
        if "input" in error and shown is not None:
            reason += f" (got {shown!r})"
    return f"{where}: {reason}"


def _depth_problem(data: Any) -> str | None:
    """Where the JSON nests deeper than any config can (checked without recursion)."""
    stack: list[tuple[Any, int, str]] = [(data, 0, "")]
    while stack:
        value, depth, where = stack.pop()
        if depth > MAX_DEPTH:
            return f"{where.lstrip('.') or '(top level)'}: nested more than {MAX_DEPTH} levels deep"
        if isinstance(value, dict):
            stack.extend((v, depth + 1, f"{where}.{k}") for k, v in value.items())
        elif isinstance(value, list):
            stack.extend((v, depth + 1, f"{where}.{i}") for i, v in enumerate(value))
    return None


def _read(path: Path) -> dict[str, Any]:
    """One config file, decoded: every way it can be malformed is one ConfigError line."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (leave out -c to use {user_config_path()}, "
                          "which `pbe-fs login` creates)") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a config file") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not UTF-8 text"
        raise ConfigError(f"{path}: cannot read: {reason}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid JSON: nested far too deeply") from None
    except ValueError as exc:  # e.g. an integer with thousands of digits
        raise ConfigError(f"{path}: invalid JSON: {str(exc).split(':')[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    problem = _depth_problem(data)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return data


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` read over ``base``: sections merge key by key, other values replace."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _absolute_paths(data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A copy of data whose relative paths are made absolute against folder."""
    data = json.loads(json.dumps(data))
    for keys in PATH_KEYS:
        holder = data
        for key in keys[:-1]:
            holder = holder.get(key) if isinstance(holder, dict) else None
        value = holder.get(keys[-1]) if isinstance(holder, dict) else None
        if isinstance(value, str) and value and not os.path.isabs(os.path.expanduser(value)):
            holder[keys[-1]] = str((folder / value).resolve())  # type: ignore[index]
    return data


def _known_keys(model: type[BaseModel]) -> dict[str, type[BaseModel] | None]:
    """A section's keys, each with its own section model when it is one."""
    keys: dict[str, type[BaseModel] | None] = {}
    for name, field in model.model_fields.items():
        kind = field.annotation
        keys[name] = kind if isinstance(kind, type) and issubclass(kind, BaseModel) else None
    return keys


def unknown_keys(data: dict[str, Any]) -> list[str]:
    """One warning per key pbe-fs does not know, naming the closest known one."""
    warnings = []
    stack: list[tuple[dict[str, Any], type[BaseModel], str]] = [(data, Settings, "")]
    while stack:
        section, model, prefix = stack.pop()
        known = _known_keys(model)
        for key, value in section.items():
            if key in known:
                if known[key] is not None and isinstance(value, dict):
                    stack.append((value, known[key], f"{prefix}{key}."))  # type: ignore[arg-type]
                continue
            close = difflib.get_close_matches(str(key), list(known), n=1, cutoff=0.6)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else ""
            warnings.append(f"unknown key {prefix}{key}{hint}: ignored")
    return sorted(warnings)


def _errors(data: dict[str, Any]) -> tuple[Settings | None, list[tuple[tuple[Any, ...], str]]]:
    """Validate; return the settings or every mistake, each with its key path."""
    mistakes: list[tuple[tuple[Any, ...], str]] = []
    settings = None
    try:
        settings = Settings.model_validate(data)
    except ValidationError as exc:
        mistakes = [(tuple(e["loc"]), _describe(e)) for e in exc.errors(include_url=False)]
    fs = data.get("filesystem_options")
    if data.get("filesystem") == "s3" and not (isinstance(fs, dict) and fs.get("bucket")):
        mistakes.append((("filesystem_options", "bucket"), 'filesystem_options.bucket: required when filesystem is "s3"'))
    web = data.get("webdav") if isinstance(data.get("webdav"), dict) else {}
    if bool(web.get("ssl_certificate")) != bool(web.get("ssl_private_key")):
        mistakes.append((("webdav", "ssl_certificate"),
                         "webdav.ssl_certificate and webdav.ssl_private_key go together: set both or neither"))
    return settings, mistakes


def _holder(loc: tuple[Any, ...], layers: list[tuple[Path, dict[str, Any]]]) -> Path:
    """The file a key comes from: the last one that sets (part of) it."""
    for path, data in reversed(layers):
        value: Any = data
        for part in loc:
            if not isinstance(value, dict) or part not in value:
                break
            value = value[part]
        else:
            return path
        if loc and isinstance(data, dict) and loc[0] in data:
            return path
    return layers[-1][0]


def _validate(layers: list[tuple[Path, dict[str, Any]]], merged: dict[str, Any]) -> Settings:
    for warning in unknown_keys(merged):
        log.warning("%s: %s", _holder(tuple(warning.split()[2].split(".")), layers), warning)
    settings, mistakes = _errors(merged)
    if mistakes:
        by_file: dict[Path, list[str]] = {}
        for loc, text in mistakes:
            by_file.setdefault(_holder(loc, layers), []).append(text)
        raise ConfigError("; ".join(f"{path}: {'; '.join(texts)}" for path, texts in by_file.items()))
    assert settings is not None
    return settings


_warned: set[Path] = set()


def private_problem(path: Path, data: dict[str, Any] | None = None) -> str | None:
    """Why this file must be made private (it holds a token and others can read it), or None."""
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
        if data is None:
            data = json.loads(path.read_text(encoding="utf-8-sig"))
    except (OSError, ValueError, RecursionError):
        return None
    if not mode & 0o077 or not _holds_secret(data):
        return None
    return f"{path} holds a token and can be read by {'others' if mode & 0o007 else 'its group'} " \
           f"(mode {mode:04o}): run `chmod 600 {path}`"


def _holds_secret(data: Any) -> bool:
    stack = [(data, ())]
    while stack:
        value, loc = stack.pop()
        if isinstance(value, dict):
            stack.extend((v, (*loc, k)) for k, v in value.items())
        elif isinstance(value, str) and value.strip() and value != SAMPLE_REFRESH and _is_secret(loc):
            return True
    return False


def _warn_if_public(path: Path, data: dict[str, Any]) -> None:
    if path in _warned:
        return
    problem = private_problem(path, data)
    if problem:
        _warned.add(path)
        log.warning("%s", problem)


def parse(data: Any, path: Path) -> Config:
    """Validate an already-decoded config; raise ConfigError naming the keys."""
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a JSON object")
    problem = _depth_problem(data)
    if problem:
        raise ConfigError(f"{path}: {problem}")
    return Config(path=path.resolve(), settings=_validate([(path, data)], data))


def _layers(path: str | os.PathLike[str] | None) -> tuple[Path, list[tuple[Path, dict[str, Any]]]]:
    """(the file to write to, [(file, its data made ready to merge)]) for -c PATH or none."""
    if path is not None:
        p = Path(path)
        return p, [(p, _read(p))]
    user = user_config_path()
    layers = []
    if SHARED_CONFIG.is_file():
        shared = SHARED_CONFIG.resolve()
        layers.append((shared, _absolute_paths(_read(shared), shared.parent)))
    if user.exists():
        layers.append((user, _read(user)))
    return user, layers


def load(path: str | os.PathLike[str] | None = None) -> Config:
    """Read and validate the config (``-c path``, or ./config.json under the
    user's own file); every failure is one ConfigError line."""
    target, layers = _layers(path)
    if not layers:
        raise ConfigError(f"no config: run `pbe-fs login` to create {target} (or pass -c FILE)")
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _merge(merged, data)
    settings = _validate(layers, merged)
    for source, data in layers:
        _warn_if_public(source, data)
    return Config(path=target.resolve(), settings=settings,
                  sources=tuple(p.resolve() for p, _ in layers), explicit=path is not None)


def reload(cfg: Config) -> Config:
    """The same files read again (SIGHUP)."""
    return load(cfg.path if cfg.explicit else None)


def load_for_login(path: str | os.PathLike[str] | None) -> tuple[Path, Settings]:
    """(the file to write tokens to, the settings) for `pbe-fs login`: the
    refresh token may be missing or stale (that is why one logs in),
    everything else must be valid."""
    target, layers = _layers(path)
    if path is not None and not target.exists():
        layers = []
    merged: dict[str, Any] = {}
    for _, data in layers:
        merged = _merge(merged, data)
    merged.setdefault("pixiv", {})
    if isinstance(merged["pixiv"], dict):
        merged["pixiv"] = {**merged["pixiv"], "refresh": "login"}
    return target, _validate(layers or [(target, {})], merged)


# -- writing ------------------------------------------------------------------------
def write_tokens(path: Path, access: str, refresh: str) -> None:
    """Put tokens into the config file, creating it (0600) if need be."""
    _write_tokens(path, access, refresh)


def save_tokens(config: Config, access: str, refresh: str) -> None:
    """Write rotated tokens back into the file pbe-fs writes to."""
    _write_tokens(config.path, access, refresh)
    config.settings.pixiv.access = access
    config.settings.pixiv.refresh = refresh


def _write_tokens(path: Path, access: str, refresh: str) -> None:
    """Set the tokens in the file, and nothing else."""
    def change(data: dict[str, Any]) -> None:
        if not isinstance(data.get("pixiv"), dict):
            data["pixiv"] = {}
        data["pixiv"]["access"] = access
        data["pixiv"]["refresh"] = refresh
    _edit(path, change)


def set_filesystem(config: Config, kind: str) -> None:
    """Point the config at the other store (after `pbe-fs migrate`)."""
    _edit(config.path, lambda data: data.__setitem__("filesystem", kind))
    config.settings.filesystem = kind  # type: ignore[assignment]


def _edit(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply ``change`` to the config file and nothing else.

    Every other key and the key order stay as they were; the file holds
    secrets, so it is 0600 afterwards (created so, with its folder 0700,
    when missing). The write is atomic (a temporary file in the same
    folder, fsync, rename), so a crash leaves either the old file or the
    new one, never half of each.
    """
    if path.exists():
        data = _read(path)
        st: os.stat_result | None = path.stat()
    else:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        data, st = {}, None
    change(data)
    fd, tmp = tempfile.mkstemp(prefix=".config-", suffix=".json", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, ensure_ascii=False, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o600)
        if st is not None:
            try:
                os.chown(tmp, st.st_uid, st.st_gid)
            except PermissionError:
                pass
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _warned.discard(path)
