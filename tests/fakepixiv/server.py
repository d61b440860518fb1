"""A stand-in for pixiv's app API and image hosts, over real HTTP on 127.0.0.1.

It speaks the wire format of shared/pixiv-api.md: OAuth refresh, bookmarks
with next_url pagination (30 per page), illust detail, ugoira metadata, and
images that demand the app's Referer. Tests steer it directly (it runs in
their process) and can inject the faults pixiv is known for.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from .data import Work, default_works, image_for_path

PAGE_SIZE = 30
REFERER = "https://app-api.pixiv.net/"


@dataclass
class Fault:
    """Answer the next ``count`` requests whose path starts with ``prefix`` badly."""

    prefix: str
    kind: str  # 500 | 502html | ratelimit | expire | truncate | timeout | 404
    count: int = 1


class FakePixiv:
    def __init__(self, works: list[tuple[Work, str]] | None = None, *, api_latency: float = 0.0,
                 image_latency: float = 0.0) -> None:
        self.works: dict[int, Work] = {}
        self.bookmarks: dict[str, list[tuple[int, int]]] = {"public": [], "private": []}  # (bookmark id, work id), oldest first
        self._next_bookmark = 1000
        for work, restrict in works if works is not None else default_works():
            self.add(work, restrict)
        self.api_latency = api_latency
        self.image_latency = image_latency
        self.refresh_tokens = {"good-refresh"}
        self.rotate_refresh = False
        self.access_tokens: set[str] = set()
        self.user_id = "11223344"
        self.faults: list[Fault] = []
        self.calls: Counter[str] = Counter()
        self.paths: list[str] = []
        self.timeout_delay = 3.0
        self.login_codes: dict[str, str] = {}  # code -> PKCE challenge
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- steering ----------------------------------------------------------------
    def add(self, work: Work, restrict: str = "public") -> None:
        """Bookmark a work (it becomes the newest bookmark)."""
        self.works[work.id] = work
        self._next_bookmark += 7
        self.bookmarks[restrict].append((self._next_bookmark, work.id))

    def unbookmark(self, work_id: int) -> None:
        for restrict in self.bookmarks:
            self.bookmarks[restrict] = [b for b in self.bookmarks[restrict] if b[1] != work_id]

    def fail(self, prefix: str, kind: str, count: int = 1) -> None:
        with self.lock:
            self.faults.append(Fault(prefix, kind, count))

    def expire_tokens(self) -> None:
        with self.lock:
            self.access_tokens.clear()

    def reset_counts(self) -> None:
        with self.lock:
            self.calls.clear()
            self.paths.clear()

    def file_bytes(self, url: str) -> bytes | None:
        return image_for_path(urlsplit(url).path, self.works)

    def file_bytes_for(self, work_id: int, page: int = 0, size: str = "original") -> bytes:
        """What pixiv serves for one page of a work, in one size."""
        data = self.file_bytes(self.works[work_id].urls(self.url, page)[size])
        assert data is not None
        return data

    def work_json(self, work_id: int) -> dict[str, Any]:
        return self.works[work_id].to_json(self.url)

    # -- life cycle ----------------------------------------------------------------
    @property
    def url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakePixiv:
        fake = self

        class Handler(_Handler):
            pixiv = fake

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="fakepixiv", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FakePixiv:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- fault bookkeeping ----------------------------------------------------------------
    def take_fault(self, path: str) -> str | None:
        with self.lock:
            for fault in self.faults:
                if path.startswith(fault.prefix) and fault.count > 0:
                    fault.count -= 1
                    return fault.kind
        return None


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients that hang up (a killed sync) are part of the tests

    def get_request(self) -> tuple[socket.socket, Any]:
        conn, addr = super().get_request()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn, addr


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    pixiv: FakePixiv

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- replies ------------------------------------------------------------------
    def _send(self, status: int, body: bytes, content_type: str = "application/json", truncate: bool = False) -> None:
        head = (f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
                f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
                f"Connection: {'close' if truncate else 'keep-alive'}\r\n\r\n").encode()
        if truncate:
            self.wfile.write(head + body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            return
        self.wfile.write(head + body)  # one write: no Nagle/delayed-ACK stall

    def _json(self, status: int, data: Any, truncate: bool = False) -> None:
        self._send(status, json.dumps(data, ensure_ascii=False).encode(), truncate=truncate)

    def _error(self, status: int, message: str) -> None:
        self._json(status, {"error": {"user_message": "", "message": message, "reason": "", "user_message_details": {}}})

    # -- dispatch -----------------------------------------------------------------
    def _route(self, method: str) -> None:
        fake = self.pixiv
        split = urlsplit(self.path)
        path, query = split.path, {k: v[-1] for k, v in parse_qs(split.query).items()}
        body = b""
        if method == "POST":
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        is_image = not (path.startswith("/v1/") or path == "/auth/token")
        name = {"/auth/token": "auth", "/v1/user/bookmarks/illust": "bookmarks", "/v1/illust/detail": "detail",
                "/v1/ugoira/metadata": "ugoira"}.get(path, "image" if is_image else path)
        with fake.lock:
            fake.calls[name] += 1
            fake.paths.append(self.path)
        delay = fake.image_latency if is_image else fake.api_latency
        if delay:
            time.sleep(delay)
        fault = fake.take_fault(path)
        if fault == "timeout":
            time.sleep(fake.timeout_delay)
        elif fault == "500":
            return self._error(500, "Internal Server Error")
        elif fault == "502html":
            return self._send(502, b"<html><body>502 Bad Gateway</body></html>", "text/html")
        elif fault == "ratelimit":
            return self._error(403, "Rate Limit")
        elif fault == "404":
            return self._error(404, "Not Found")
        truncate = fault == "truncate"
        if fault == "expire":
            fake.expire_tokens()

        if path == "/auth/token" and method == "POST":
            form = parse_qs(body.decode())
            if (form.get("grant_type") or [""])[0] == "authorization_code":
                return self._code_login(form)
            return self._auth(form, truncate)
        if path == "/web/v1/login":
            return self._login_page(query)
        if is_image:
            return self._image(path, truncate)
        if self.headers.get("Authorization", "").removeprefix("Bearer ") not in fake.access_tokens:
            return self._error(400, "Error occurred at the OAuth process. Please check your Access Token to fix this."
                                    " Error Message: invalid_grant")
        if path == "/v1/user/bookmarks/illust":
            return self._bookmarks(query, truncate)
        if path == "/v1/illust/detail":
            work = fake.works.get(int(query.get("illust_id", "0") or 0))
            if work is None or work.state == "deleted":
                return self._error(404, "Work has been deleted or the ID does not exist.")
            return self._json(200, {"illust": work.to_json(fake.url)}, truncate)
        if path == "/v1/user/detail":  # gallery-dl names its bookmarks folder after the account
            if query.get("user_id") != fake.user_id:
                return self._error(404, "Not Found")
            return self._json(200, {"user": {"id": int(fake.user_id), "name": "me", "account": "me_acct",
                                             "profile_image_urls": {}, "comment": "", "is_followed": False},
                                    "profile": {}, "profile_publicity": {}, "workspace": {}})
        if path == "/v1/ugoira/metadata":
            work = fake.works.get(int(query.get("illust_id", "0") or 0))
            if work is None or work.type != "ugoira" or work.state != "live":
                return self._error(404, "Not Found")
            return self._json(200, work.ugoira_metadata(fake.url), truncate)
        return self._error(404, "Not Found")

    def _auth(self, form: dict[str, list[str]], truncate: bool) -> None:
        fake = self.pixiv
        token = (form.get("refresh_token") or [""])[0]
        if (form.get("grant_type") or [""])[0] != "refresh_token" or token not in fake.refresh_tokens:
            return self._json(400, {"has_error": True, "errors": {"system": {"message": "Invalid refresh token", "code": 1508}}})
        with fake.lock:
            access = f"access-{len(fake.access_tokens) + 1}-{time.monotonic_ns()}"
            fake.access_tokens.add(access)
            if fake.rotate_refresh:
                fake.refresh_tokens.discard(token)
                token = f"rotated-{time.monotonic_ns()}"
                fake.refresh_tokens.add(token)
        user = {"profile_image_urls": {}, "id": fake.user_id, "name": "me", "account": "me_acct",
                "mail_address": "me@example.invalid", "is_premium": False, "x_restrict": 2, "is_mail_authorized": True}
        answer = {"access_token": access, "expires_in": 3600, "token_type": "bearer", "scope": "",
                  "refresh_token": token, "user": user}
        self._json(200, {**answer, "response": answer}, truncate)

    def _login_page(self, query: dict[str, str]) -> None:
        """The browser login: a logged-in user is sent to pixiv://…?code=."""
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            return self._error(400, "code_challenge required")
        code = f"code-{len(self.pixiv.login_codes) + 1}"
        self.pixiv.login_codes[code] = query["code_challenge"]
        head = (f"HTTP/1.1 302 Found\r\nLocation: pixiv://account/login?code={code}&via=login\r\n"
                "Content-Length: 0\r\n\r\n").encode()
        self.wfile.write(head)

    def _code_login(self, form: dict[str, list[str]]) -> None:
        import base64
        import hashlib

        fake = self.pixiv
        code, verifier = (form.get("code") or [""])[0], (form.get("code_verifier") or [""])[0]
        challenge = fake.login_codes.pop(code, None)
        expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if challenge is None or challenge != expected:
            return self._json(400, {"has_error": True, "errors": {"system": {"message": "Invalid grant", "code": 1508}}})
        refresh = f"login-refresh-{time.monotonic_ns()}"
        fake.refresh_tokens.add(refresh)
        access = f"login-access-{time.monotonic_ns()}"
        fake.access_tokens.add(access)
        answer = {"access_token": access, "refresh_token": refresh, "expires_in": 3600, "token_type": "bearer",
                  "user": {"id": fake.user_id, "name": "me", "account": "me_acct"}}
        self._json(200, {**answer, "response": answer})

    def _bookmarks(self, query: dict[str, str], truncate: bool) -> None:
        fake = self.pixiv
        restrict = query.get("restrict", "public")
        if query.get("user_id") != fake.user_id or restrict not in fake.bookmarks:
            return self._error(400, "invalid user_id or restrict")
        newest_first = list(reversed(fake.bookmarks[restrict]))
        if "max_bookmark_id" in query:
            cap = int(query["max_bookmark_id"])
            newest_first = [b for b in newest_first if b[0] <= cap]
        page = newest_first[:PAGE_SIZE]
        next_url = None
        if len(newest_first) > PAGE_SIZE:
            next_url = (f"https://app-api.pixiv.net/v1/user/bookmarks/illust?user_id={fake.user_id}"
                        f"&restrict={restrict}&filter=for_ios&max_bookmark_id={page[-1][0] - 1}")
        illusts = [fake.works[wid].to_json(fake.url) for _, wid in page]
        self._json(200, {"illusts": illusts, "next_url": next_url}, truncate)

    def _image(self, path: str, truncate: bool) -> None:
        if self.headers.get("Referer") != REFERER:
            return self._send(403, b"<html>403 Forbidden</html>", "text/html")
        data = image_for_path(path, self.pixiv.works)
        if data is None:
            return self._send(404, b"<html>404 Not Found</html>", "text/html")
        ctype = "application/zip" if path.endswith(".zip") else f"image/{path.rsplit('.', 1)[-1].replace('jpg', 'jpeg')}"
        self._send(200, data, ctype, truncate)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")
