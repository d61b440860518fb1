"""`pbe-fs login`: a refresh token without the external gist the seed needed.

pixiv's app login is OAuth with PKCE: we make a verifier and its S256
challenge, the user logs in at the printed URL in a browser, pixiv
redirects to ``pixiv://account/login?code=…`` (visible in the browser's
developer tools), the user pastes the code, and we trade code + verifier
for tokens at the same endpoint pixivpy3 refreshes at.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from urllib.parse import urlencode

import requests

from .config import DEFAULT_API_HOST
from .errors import AuthError, PixivUnavailable

CLIENT_ID = "MOBrBDS8blbauoSck0ZfDbtuzpyT"
CLIENT_SECRET = "lsACyCD94FhDUtGTXi3QzcFE2uU1hqtDaKeqrdwj"
REDIRECT_URI = "https://app-api.pixiv.net/web/v1/users/auth/pixiv/callback"
USER_AGENT = "PixivAndroidApp/5.0.234 (Android 11; Pixel 5)"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def pkce_pair() -> tuple[str, str]:
    """(code_verifier, code_challenge) for S256."""
    verifier = _b64(secrets.token_bytes(32))
    return verifier, _b64(hashlib.sha256(verifier.encode()).digest())


def login_url(api_host: str, challenge: str) -> str:
    host = DEFAULT_API_HOST if api_host == DEFAULT_API_HOST else api_host
    return f"{host}/web/v1/login?" + urlencode({"code_challenge": challenge, "code_challenge_method": "S256",
                                                  "client": "pixiv-android"})


def extract_code(text: str) -> str:
    """The code from what the user pasted: the code itself or the whole pixiv:// URL."""
    text = text.strip()
    if "code=" in text:
        text = text.split("code=", 1)[1].split("&", 1)[0]
    return text


def exchange(api_host: str, code: str, verifier: str, timeout: float = 30) -> tuple[str, str]:
    """Trade the authorization code for (access token, refresh token)."""
    url = "https://oauth.secure.pixiv.net/auth/token" if api_host == DEFAULT_API_HOST else f"{api_host}/auth/token"
    data = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "code": code, "code_verifier": verifier,
            "grant_type": "authorization_code", "include_policy": "true", "redirect_uri": REDIRECT_URI}
    try:
        resp = requests.post(url, data=data, headers={"User-Agent": USER_AGENT}, timeout=timeout)
    except requests.RequestException as exc:
        raise PixivUnavailable(f"cannot reach pixiv's login service: {type(exc).__name__}") from None
    if resp.status_code >= 500:
        raise PixivUnavailable(f"pixiv's login service answered HTTP {resp.status_code}; try again later")
    try:
        answer = resp.json()
    except ValueError:
        answer = {}
    if resp.status_code != 200 or "refresh_token" not in answer:
        raise AuthError("pixiv refused the login code (they expire within a minute, and work once): "
                        "run `pbe-fs login` again")
    return answer.get("access_token", ""), answer["refresh_token"]
