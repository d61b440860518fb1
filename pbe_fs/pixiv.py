"""The pixiv client: auth, pagination, retries and image downloads.

API calls go through pixivpy3 (its request shapes, OAuth headers and
``api_host`` handling are the reference), one at a time from the sync's main
thread. Image downloads use a plain requests session per worker thread with
the Referer i.pximg.net demands, streamed straight to disk while hashing.

Every failure pixiv is known for is absorbed here: 5xx, timeouts, dropped
connections and truncated bodies are retried with exponential backoff and
jitter; 403 "Rate Limit" waits (gallery-dl's 300 s by default) and resumes;
an expired access token is refreshed and the call repeated. What reaches the
caller is a result, ``NotFound``, ``AuthError`` or ``PixivUnavailable``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import requests
from pixivpy3 import AppPixivAPI, PixivError

from .archive import Digest
from .config import DEFAULT_API_HOST, PixivSection
from .errors import AuthError, PixivUnavailable, disk_full

log = logging.getLogger("pbe_fs.pixiv")

IMAGE_REFERER = "https://app-api.pixiv.net/"
_USER_AGENT = "PixivIOSApp/7.13.3 (iOS 14.6; iPhone13,2)"
_MAX_BACKOFF = 120.0
T = TypeVar("T")


def _describe(exc: requests.RequestException) -> str:
    """A network failure in a few words, not urllib3's paragraph."""
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.ConnectionError) and exc.request is not None:
        host = urlsplit(exc.request.url or "").netloc
        if "refused" in str(exc).lower():
            return f"connection to {host} refused"
        if "reset" in str(exc).lower() or "aborted" in str(exc).lower():
            return f"connection to {host} dropped"
        return f"cannot reach {host}"
    if isinstance(exc, requests.exceptions.ChunkedEncodingError):
        return "truncated body"
    return f"{type(exc).__name__}: {str(exc)[:120]}"


class NotFound(Exception):
    """pixiv answered 404: the work or file is not there (any more)."""


class _Retry(Exception):
    """A transient failure worth another attempt."""


class _RateLimited(Exception):
    pass


class _TokenExpired(Exception):
    pass


class _Api(AppPixivAPI):
    """pixivpy3 with a plain keep-alive session, a timeout, and HTTP status
    mapped to exceptions (pixivpy3 hands error bodies back as results)."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.requests = requests.Session()
        self._timeout = timeout

    def requests_call(self, method: str, url: str, headers: Any = None, params: Any = None,
                      data: Any = None, stream: bool = False) -> requests.Response:
        merged = self.additional_headers.copy()
        merged.update(headers or {})
        try:
            resp = self.requests.request(method, url, headers=merged, params=params, data=data,
                                         stream=stream, timeout=self._timeout)
        except requests.RequestException as exc:
            raise _Retry(_describe(exc)) from None
        if resp.status_code >= 500:
            raise _Retry(f"HTTP {resp.status_code}")
        if url.endswith("/auth/token"):
            return resp  # pixivpy3 judges the auth answer itself
        text = resp.text
        if resp.status_code == 403 and "Rate Limit" in text:
            raise _RateLimited()
        if resp.status_code == 400 and "invalid_grant" in text:
            raise _TokenExpired()
        if resp.status_code == 404:
            raise NotFound(url)
        if resp.status_code >= 400:
            raise _Retry(f"HTTP {resp.status_code}: {text[:200]}")
        return resp


class PixivClient:
    """pixiv as the sync engine sees it. Counts its requests (``calls``)."""

    def __init__(self, settings: PixivSection, on_tokens: Callable[[str, str], None] | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.settings = settings
        self._on_tokens = on_tokens
        self._sleep = sleep
        self._api = _Api(settings.timeout)
        if settings.api_host != DEFAULT_API_HOST:
            self._api.hosts = settings.api_host
        self._local = threading.local()
        self.calls: Counter[str] = Counter()
        self._calls_lock = threading.Lock()
        self.user_id: str = ""

    def _count(self, what: str) -> None:
        with self._calls_lock:
            self.calls[what] += 1

    # -- retry policy ----------------------------------------------------------
    def _backoff(self, attempt: int) -> float:
        base = self.settings.backoff * (2 ** attempt)
        return min(_MAX_BACKOFF, base) * random.uniform(0.5, 1.5)

    def _retrying(self, what: str, call: Callable[[], T]) -> T:
        failures = rate_limits = 0
        while True:
            try:
                return call()
            except _RateLimited:
                rate_limits += 1
                if rate_limits > self.settings.retries:
                    raise PixivUnavailable(f"pixiv kept answering 'Rate Limit' to {what}; try again later") from None
                log.warning("pixiv rate limit on %s: waiting %.0f s", what, self.settings.rate_limit_wait)
                self._sleep(self.settings.rate_limit_wait)
            except _TokenExpired:
                failures += 1
                if failures > self.settings.retries:
                    raise PixivUnavailable(f"pixiv kept refusing fresh access tokens for {what}") from None
                log.info("access token expired; refreshing")
                self.authenticate()
            except _Retry as exc:
                failures += 1
                if failures > self.settings.retries:
                    raise PixivUnavailable(f"{what} failed {failures} times, last: {exc}") from None
                delay = self._backoff(failures - 1)
                log.warning("%s failed (%s); retry %d/%d in %.1f s", what, exc, failures,
                            self.settings.retries, delay)
                self._sleep(delay)

    # -- auth ----------------------------------------------------------------
    def authenticate(self) -> None:
        """Trade the refresh token for an access token; report rotation."""
        def attempt() -> Any:
            self._count("auth")
            try:
                return self._api.auth(refresh_token=self.settings.refresh)
            except PixivError as exc:
                if "check refresh_token" in str(exc):
                    raise AuthError("pixiv refused the refresh token (pixiv.refresh): get a new one with `pbe-fs login`") from None
                raise _Retry(f"auth: {str(exc).splitlines()[0]}") from None
            except (AttributeError, KeyError, TypeError):
                raise _Retry("auth: malformed token response") from None

        self._retrying("login", attempt)
        self.user_id = str(self._api.user_id)
        access, refresh = self._api.access_token or "", self._api.refresh_token or self.settings.refresh
        if (access, refresh) != (self.settings.access, self.settings.refresh) and self._on_tokens:
            self._on_tokens(access, refresh)

    # -- API -----------------------------------------------------------------
    def _json(self, what: str, call: Callable[[], Any]) -> dict[str, Any]:
        def attempt() -> dict[str, Any]:
            self._count(what)
            try:
                result = call()
            except PixivError as exc:  # unparsable body: a truncated or garbled answer
                raise _Retry(str(exc).splitlines()[0][:200]) from None
            if not isinstance(result, dict):
                raise _Retry("answer is not a JSON object")
            return result
        return self._retrying(what, attempt)

    def bookmarks(self, restrict: str) -> Iterator[list[dict[str, Any]]]:
        """Pages of bookmarked illusts, newest first, following next_url."""
        params: dict[str, Any] | None = {"user_id": self.user_id, "restrict": restrict}
        while params:
            qs = params
            page = self._json("bookmarks", lambda: self._api.user_bookmarks_illust(**qs))
            items = [i for i in page.get("illusts") or [] if isinstance(i, dict) and i.get("id")]
            yield items
            params = self._api.parse_qs(page.get("next_url"))

    def illust_detail(self, illust_id: int) -> dict[str, Any] | None:
        try:
            return self._json("illust_detail", lambda: self._api.illust_detail(illust_id)).get("illust")
        except NotFound:
            return None

    def ugoira_metadata(self, illust_id: int) -> dict[str, Any] | None:
        try:
            answer = self._json("ugoira_metadata", lambda: self._api.ugoira_metadata(illust_id))
        except NotFound:
            return None
        meta = answer.get("ugoira_metadata")
        return meta if isinstance(meta, dict) else None

    # -- images ----------------------------------------------------------------
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.headers.update({"Referer": IMAGE_REFERER, "User-Agent": _USER_AGENT})
            self._local.session = session
        return session

    def download(self, url: str, dest: Path, check: Callable[[Path], T]) -> tuple[Digest, T]:
        """Fetch url into dest (overwritten), verify it, return its digest
        and what ``check`` (the decode test) made of it.

        The body must match Content-Length and pass ``check``; anything short
        of that is retried, then raised as PixivUnavailable.
        """
        def attempt() -> tuple[Digest, T]:
            self._count("image")
            try:
                with self._session().get(url, stream=True, timeout=self.settings.timeout) as resp:
                    if resp.status_code == 404:
                        raise NotFound(url)
                    if resp.status_code >= 400:
                        raise _Retry(f"HTTP {resp.status_code}")
                    expected = resp.headers.get("Content-Length")
                    digest = Digest()
                    with open(dest, "wb") as fh:
                        for chunk in resp.iter_content(1 << 18):
                            digest.update(chunk)
                            fh.write(chunk)
                        fh.flush()
                        os.fsync(fh.fileno())
            except requests.RequestException as exc:
                raise _Retry(_describe(exc)) from None
            except OSError as exc:
                if isinstance(exc, FileNotFoundError) or disk_full(exc):
                    raise  # retrying cannot make room
                raise _Retry(f"{type(exc).__name__}: {exc}") from None
            if expected is not None and expected.isdigit() and int(expected) != digest.size:
                raise _Retry(f"short body: {digest.size} of {expected} bytes")
            try:
                return digest, check(dest)
            except Exception as exc:
                raise _Retry(str(exc)) from None
        return self._retrying(f"download {url.rsplit('/', 1)[-1]}", attempt)
