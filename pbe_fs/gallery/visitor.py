"""What the gallery knows about one browser: display settings, the NSFW
toggle, the session (CSRF token, admin login) and a one-shot message.

Everything lives in cookies. Settings come from the query string first
(and are then remembered), the cookie next, config.json's ``display.*``
last. The session id is random; the CSRF token and the admin mark are
HMACs of it, so the server keeps no session table and a restart with the
same ``app_key`` keeps visitors logged in (a random key per process
otherwise). No cookie carries a secret: the admin mark depends on
``read_only_token`` but does not reveal it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from http.cookies import CookieError, SimpleCookie
from typing import Any
from urllib.parse import parse_qsl, quote, unquote

from ..artwork import QUALITIES

GRID_QUALITIES = QUALITIES + ("none",)
# order -> (what it sorts by, newest first?)
ORDERS = {"default": ("seq", True), "artwork": ("date", True), "desc": ("date", True), "asc": ("date", False)}
IPP_CHOICES = ("20", "50", "100", "200", "all")
_COOKIE = {"image": "pbe_image", "ipp": "pbe_ipp", "order": "pbe_order", "aimage": "pbe_aimage", "nsfw": "pbe_nsfw"}
_YEAR = 365 * 86400


@dataclass
class Visitor:
    image: str  # grid quality
    ipp: int  # 0 = all
    order: str
    aimage: str  # artwork page quality
    nsfw: bool  # asked to see NSFW works (the policy decides whether it may)
    sid: str
    query: dict[str, str]
    cookies: dict[str, str]
    set_cookies: list[str] = field(default_factory=list)
    flash: str = ""

    @property
    def ipp_label(self) -> str:
        return "all" if self.ipp == 0 else str(self.ipp)

    def remember(self, name: str, value: str, *, max_age: int | None = _YEAR, http_only: bool = False) -> None:
        parts = [f"{name}={quote(value, safe='')}", "Path=/", "SameSite=Lax"]
        if max_age is not None:
            parts.append(f"Max-Age={max_age}")
        if http_only:
            parts.append("HttpOnly")
        self.set_cookies.append("; ".join(parts))

    def say(self, message: str) -> None:
        """A message for the next page this browser shows."""
        self.remember("pbe_flash", message, max_age=60, http_only=True)


def _ipp(value: str | None) -> int | None:
    if value is None:
        return None
    if value.strip().lower() == "all":
        return 0
    try:
        number = int(value)
    except ValueError:
        return None
    return number if 1 <= number <= 1000 else None


def read(environ: dict[str, Any], defaults: Any, *, artwork_page: bool = False) -> Visitor:
    """The visitor behind a request. ``defaults`` is config's ``display``.

    On an artwork page ``?image=`` sets the artwork quality; on grids the
    grid quality (the old app's two separate settings)."""
    cookies: dict[str, str] = {}
    try:
        jar = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        cookies = {k: unquote(m.value) for k, m in jar.items()}
    except CookieError:
        pass
    query = {k: v for k, v in parse_qsl(environ.get("QUERY_STRING", ""), keep_blank_values=True)}
    v = Visitor(defaults.home.image, defaults.home.ipp, defaults.home.order, defaults.artwork.image, False,
                cookies.get("pbe_sid", ""), query, cookies)
    asked = dict(query)
    if artwork_page and "image" in asked:
        asked["aimage"] = asked.pop("image")

    def choose(key: str, allowed: Any) -> None:
        wanted = asked.get(key)
        if wanted is not None and wanted in allowed:
            setattr(v, key, wanted)
            v.remember(_COOKIE[key], wanted)
        elif cookies.get(_COOKIE[key]) in allowed:
            setattr(v, key, cookies[_COOKIE[key]])

    choose("image", GRID_QUALITIES)
    choose("order", ORDERS)
    choose("aimage", QUALITIES)
    asked_ipp, kept_ipp = _ipp(asked.get("ipp")), _ipp(cookies.get("pbe_ipp"))
    if asked_ipp is not None:
        v.ipp = asked_ipp
        v.remember("pbe_ipp", v.ipp_label)
    elif kept_ipp is not None:
        v.ipp = kept_ipp
    v.nsfw = cookies.get("pbe_nsfw") == "1"
    if not v.sid or len(v.sid) != 32 or not all(c in "0123456789abcdef" for c in v.sid):
        v.sid = secrets.token_hex(16)
        v.remember("pbe_sid", v.sid, max_age=None, http_only=True)  # a browser session
    if cookies.get("pbe_flash"):
        v.flash = cookies["pbe_flash"][:300]
        v.remember("pbe_flash", "", max_age=0, http_only=True)
    return v


class Keys:
    """CSRF tokens and admin marks, signed with one server secret."""

    def __init__(self, app_key: str, access: Any) -> None:
        self._secret = hashlib.sha256(app_key.encode()).digest() if app_key else secrets.token_bytes(32)
        self._access = access  # read_only_token is read at each use: SIGHUP may change it

    @property
    def _token(self) -> str:
        return str(self._access.token)

    def _sign(self, purpose: str, sid: str) -> str:
        return hmac.new(self._secret, f"{purpose}\0{sid}".encode(), hashlib.sha256).hexdigest()

    def csrf(self, visitor: Visitor) -> str:
        return self._sign("csrf", visitor.sid)

    def csrf_ok(self, visitor: Visitor, form: dict[str, str]) -> bool:
        return hmac.compare_digest(form.get("csrf", ""), self.csrf(visitor))

    def _admin_mark(self, visitor: Visitor) -> str:
        return self._sign("admin\0" + hashlib.sha256(self._token.encode()).hexdigest(), visitor.sid)

    def is_admin(self, visitor: Visitor) -> bool:
        return bool(self._token) and hmac.compare_digest(visitor.cookies.get("pbe_admin", ""), self._admin_mark(visitor))

    def log_in(self, visitor: Visitor, token: str) -> bool:
        if not self._token or not hmac.compare_digest(token.encode(), self._token.encode()):
            return False
        visitor.remember("pbe_admin", self._admin_mark(visitor), max_age=None, http_only=True)
        return True

    def log_out(self, visitor: Visitor) -> None:
        visitor.remember("pbe_admin", "", max_age=0, http_only=True)
