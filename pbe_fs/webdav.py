"""The WebDAV adapter: a wsgidav provider over the shared tree, on cheroot.

Like the FUSE adapter it knows only its protocol: resources are small
objects built per request from ``Tree`` nodes; names, sizes, dates and
contents all come from the tree.

What wsgidav does not decide for a read-only tree is decided up front in
``custom_request_handler``: write methods are refused before a body is
read, DELETE is allowed on artwork folders only (with the read-only token
when ``read_only`` is true), PROPFIND with Depth infinity gets 403
``propfind-finite-depth``, and OPTIONS says honestly what each resource
allows.
"""

from __future__ import annotations

import hmac
import io
import logging
import posixpath
from typing import Any, Callable

from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.dc.base_dc import BaseDomainController

from . import multistatus, names
from .multistatus import content_type, quote_name
from .artwork import Node
from .render.segments import Reader
from .errors import PbeError
from .tree import Tree, TreeError, is_noise

log = logging.getLogger("pbe_fs.webdav")

_ALIGN = 1 << 20
PRESIGNED_SECONDS = 900  # how long a redirect to the bucket stays valid
_WRITE_METHODS = {"PUT", "MKCOL", "MOVE", "COPY", "PROPPATCH", "LOCK", "UNLOCK", "PATCH"}
def split(path: str) -> tuple[str, ...] | None:
    """A request path as tree parts; None for anything that escapes."""
    parts = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == ".." or "\x00" in part or len(part.encode("utf-8", "surrogateescape")) > 1024:
            return None
        parts.append(names.lookup_key(part))
    return tuple(parts)


class _Stream(io.RawIOBase):
    """A tree reader as the seekable file object wsgidav streams from."""

    def __init__(self, reader: Reader, size: int) -> None:
        self._reader, self._size, self._pos = reader, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def tell(self) -> int:
        return self._pos

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = self._size - self._pos
        # Stop at a 1 MiB boundary: a small Range read then touches one block
        # of a bucket's read cache, not two (the buffer above asks for 1 MiB).
        boundary = (self._pos // _ALIGN + 1) * _ALIGN
        if self._pos % _ALIGN and self._pos + size > boundary:
            size = boundary - self._pos
        data = self._reader.read(self._pos, size)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        if not self.closed:
            self._reader.close()
        super().close()


class _File(DAVNonCollection):
    def __init__(self, path: str, environ: dict[str, Any], tree: Tree, parts: tuple[str, ...], node: Node) -> None:
        super().__init__(path, environ)
        self.tree, self.parts, self.node = tree, parts, node

    def get_content_length(self) -> int:
        return self.node.size

    def get_content_type(self) -> str:
        return content_type(self.parts[-1])

    def get_creation_date(self) -> float:
        return self.node.mtime

    def get_last_modified(self) -> float:
        return self.node.mtime

    def get_display_name(self) -> str:
        return self.parts[-1]

    def get_etag(self) -> str | None:
        return self.tree.etag(self.parts, self.node)

    def support_etag(self) -> bool:
        return True

    def support_ranges(self) -> bool:
        return True

    def get_content(self) -> io.BufferedReader:
        return io.BufferedReader(_Stream(self.tree.reader(self.parts), self.node.size), 1 << 20)

    def begin_write(self, *, content_type: str | None = None) -> Any:
        raise DAVError(HTTP_FORBIDDEN)

    def delete(self) -> None:
        raise DAVError(HTTP_FORBIDDEN)

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> None:
        raise DAVError(HTTP_FORBIDDEN)


class _Folder(DAVCollection):
    def __init__(self, path: str, environ: dict[str, Any], tree: Tree, parts: tuple[str, ...], node: Node) -> None:
        super().__init__(path, environ)
        self.tree, self.parts, self.node = tree, parts, node

    def get_display_name(self) -> str:
        return self.parts[-1] if self.parts else ""

    def get_creation_date(self) -> float:
        return self.node.mtime

    def get_last_modified(self) -> float:
        return self.node.mtime

    def get_member_names(self) -> list[str]:
        return [name for name, _ in self.tree.list(self.parts) or []]

    def get_member(self, name: str) -> DAVCollection | DAVNonCollection | None:
        parts = self.parts + (name,)
        node = self.tree.get(parts)
        return None if node is None else _resource(posixpath.join(self.path, name), self.environ, self.tree, parts, node)

    def get_member_list(self) -> list[DAVCollection | DAVNonCollection]:
        # one listing, not one lookup per member: PROPFIND Depth 1 of 20,000 works
        base = self.path.rstrip("/")
        return [_resource(f"{base}/{name}", self.environ, self.tree, self.parts + (name,), node)
                for name, node in self.tree.list(self.parts) or []]

    def create_empty_resource(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN)

    def create_collection(self, name: str) -> Any:
        raise DAVError(HTTP_FORBIDDEN)

    def support_recursive_delete(self) -> bool:
        return True

    def delete(self) -> None:
        raise DAVError(HTTP_FORBIDDEN)  # deletion is handled before wsgidav sees it

    def set_property_value(self, name: str, value: Any, *, dry_run: bool = False) -> None:
        raise DAVError(HTTP_FORBIDDEN)


def _resource(path: str, environ: dict[str, Any], tree: Tree, parts: tuple[str, ...], node: Node) -> Any:
    return (_Folder if node.is_dir else _File)(path, environ, tree, parts, node)


REALM = "pbe-fs"
_GUARDED = {"DELETE", "POST"}  # the methods that change something


class Access:
    """Who may do what: anonymous reads unless ``webdav.users`` is set;
    DELETE and POST need ``read_only_token`` as the password (any user
    name) while ``read_only`` is true. Basic and Digest both work."""

    def __init__(self, *, read_only: bool, token: str, users: dict[str, str]) -> None:
        self.read_only, self.token, self.users = read_only, token, users

    def guarded(self, environ: dict[str, Any]) -> bool:
        return self.read_only and environ.get("REQUEST_METHOD") in _GUARDED

    def password_for(self, user: str, environ: dict[str, Any]) -> str | None:
        if self.guarded(environ):
            return self.token or None
        return self.users.get(user)


class _DomainController(BaseDomainController):
    def __init__(self, wsgidav_app: Any, config: dict[str, Any]) -> None:
        super().__init__(wsgidav_app, config)
        self.access: Access = config["pbe_access"]

    def get_domain_realm(self, path_info: str, environ: dict[str, Any]) -> str:
        return REALM

    def require_authentication(self, realm: str, environ: dict[str, Any] | None) -> bool:
        return bool(self.access.users) or (environ is not None and self.access.guarded(environ))

    def is_share_anonymous(self, path_info: str) -> bool:
        return not self.access.users

    def basic_auth_user(self, realm: str, user_name: str, password: str, environ: dict[str, Any]) -> bool:
        expected = self.access.password_for(user_name, environ)
        return expected is not None and hmac.compare_digest(password.encode(), expected.encode())

    def supports_http_digest_auth(self) -> bool:
        return True

    def digest_auth_user(self, realm: str, user_name: str, environ: dict[str, Any]) -> Any:
        expected = self.access.password_for(user_name, environ)
        return False if expected is None else self._compute_http_digest_a1(realm, user_name, expected)


class Provider(DAVProvider):
    def __init__(self, tree: Tree, *, per_page: int = 50, refresh: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.per_page = per_page
        self.refresh = refresh

    def is_readonly(self) -> bool:
        return False  # DELETE of artwork folders; everything else is refused below

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        parts = split(path)
        if parts is None or (parts and is_noise(parts[-1])):
            return None
        node = self.tree.get(parts)
        return None if node is None else _resource(path, environ, self.tree, parts, node)

    # -- decisions wsgidav would get wrong for this tree ---------------------------
    def custom_request_handler(self, environ: dict[str, Any], start_response: Callable[..., Any],
                               default_handler: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        if method in _WRITE_METHODS:
            return _answer(start_response, "403 Forbidden", "read-only: only whole artwork folders can be deleted\n")
        parts = split(path)
        if parts is None:
            return _answer(start_response, "400 Bad Request", "bad path\n")
        if parts[:1] == ("_pbe",):
            return self._control(method, parts[1:], start_response)
        if method in ("GET", "HEAD"):
            node = self.tree.get(parts)
            if node is not None and node.is_dir:
                return self._html(parts, environ, start_response)
            if node is not None and node.blob:
                url = self.tree.archive.store.url(node.blob, PRESIGNED_SECONDS)
                if url:  # filesystem_options.proxy false: the client fetches from the bucket itself
                    return _answer(start_response, "302 Found", "", extra=[("Location", url), ("Cache-Control", "no-store")])
        if method == "OPTIONS":
            return self._options(parts, start_response)
        if method == "DELETE":
            return self._delete(parts, environ, start_response)
        if method == "PROPFIND":
            node = self.tree.get(parts)
            depth = environ.get("HTTP_DEPTH", "infinity").lower()
            if node is not None and node.is_dir and depth == "infinity":
                body = ('<?xml version="1.0" encoding="utf-8"?>\n<D:error xmlns:D="DAV:">'
                        "<D:propfind-finite-depth/></D:error>\n")
                return _answer(start_response, "403 Forbidden", body, "application/xml; charset=utf-8")
            if node is not None and depth in ("0", "1", "infinity"):
                answer = self._propfind(parts, node, depth, environ, start_response)
                if answer is not None:
                    return answer
        return default_handler(environ, start_response)

    def _propfind(self, parts: tuple[str, ...], node: Node, depth: str, environ: dict[str, Any],
                  start_response: Callable[..., Any]) -> list[bytes] | None:
        """PROPFIND of live properties, answered straight from one listing.

        wsgidav asks every member for every property through several layers;
        for 20,000 works that is most of a second. Requests for dead
        properties or property names still go to wsgidav (None).
        """
        wanted = multistatus.requested(environ)
        if wanted is None:
            return None
        if wanted is multistatus.BAD:
            return _answer(start_response, "400 Bad Request", "malformed PROPFIND body\n")
        path = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "/")
        members = [(path, parts[-1] if parts else "", parts, node)]
        if node.is_dir and depth == "1":
            base = path if path.endswith("/") else path + "/"
            members += [(base + quote_name(name) + ("/" if child.is_dir else ""), name, parts + (name,), child)
                        for name, child in self.tree.list(parts) or []]
        body = multistatus.render(members, wanted, self.tree.etag)
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(len(body)))])
        return [body]

    def _options(self, parts: tuple[str, ...], start_response: Callable[..., Any]) -> list[bytes]:
        node = self.tree.get(parts)
        if node is None:
            return _answer(start_response, "404 Not Found", "")
        allow = ["OPTIONS", "HEAD", "GET", "PROPFIND"]
        if node.is_artwork_root and not self.tree.is_gone(node.artwork):
            allow.append("DELETE")
        headers = [("DAV", "1"), ("MS-Author-Via", "DAV"), ("Allow", ", ".join(allow))]
        if not node.is_dir:
            headers.append(("Accept-Ranges", "bytes"))
        return _answer(start_response, "200 OK", "", extra=headers)

    def _html(self, parts: tuple[str, ...], environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        from urllib.parse import parse_qsl

        from .browser import page

        body = page(self.tree, parts, dict(parse_qsl(environ.get("QUERY_STRING", ""))), self.per_page)
        if body is None:
            return _answer(start_response, "404 Not Found", "not found\n")
        if not environ.get("PATH_INFO", "/").endswith("/"):
            location = environ.get("SCRIPT_NAME", "") + environ["PATH_INFO"] + "/"
            return _answer(start_response, "301 Moved Permanently", "", extra=[("Location", location)])
        start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(body))),
                                  ("Cache-Control", "no-cache"),
                                  ("Content-Security-Policy", "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]

    def _control(self, method: str, rest: tuple[str, ...], start_response: Callable[..., Any]) -> list[bytes]:
        """/_pbe/status (GET) and /_pbe/refresh (POST)."""
        if rest == ("status",) and method in ("GET", "HEAD"):
            node = self.tree.get(("status.json",))
            assert node is not None and node.content is not None
            reader = node.content().reader()
            try:
                data = reader.read(0, node.size).decode()
            finally:
                reader.close()
            return _answer(start_response, "200 OK", data, "application/json")
        if rest == ("refresh",) and method == "POST":
            if self.refresh is None:
                return _answer(start_response, "501 Not Implemented", "no sync configured\n")
            message = self.refresh()
            status = "202 Accepted" if message.startswith("started") else "409 Conflict"
            return _answer(start_response, status, message + "\n")
        return _answer(start_response, "404 Not Found", "not found\n")

    def _delete(self, parts: tuple[str, ...], environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        node = self.tree.get(parts)
        if node is None:
            return _answer(start_response, "404 Not Found", "no such folder\n")
        if not node.is_artwork_root:
            return _answer(start_response, "403 Forbidden", "only whole artwork folders can be deleted\n")
        try:
            self.tree.delete(parts)
        except TreeError as exc:
            status = {"forbidden": "403 Forbidden", "notfound": "404 Not Found", "busy": "423 Locked"}.get(
                exc.kind, "403 Forbidden")
            return _answer(start_response, status, f"{exc}\n")
        return _answer(start_response, "204 No Content", "")


def _answer(start_response: Callable[..., Any], status: str, body: str, ctype: str = "text/plain; charset=utf-8",
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))] + (extra or []))
    return [data]


def make_app(tree: Tree, access: Access, *, per_page: int = 50, refresh: Callable[[], str] | None = None,
             verbose: int = 1) -> Any:
    """The WSGI application: wsgidav with our provider, no lock manager
    (so DAV: 1), our access rules, no wsgidav directory browser."""
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "provider_mapping": {"/": Provider(tree, per_page=per_page, refresh=refresh)},
        "pbe_access": access,
        "http_authenticator": {"domain_controller": _DomainController, "accept_basic": True, "accept_digest": True,
                               "default_to_digest": True},
        "lock_storage": False,
        "property_manager": None,
        "dir_browser": {"enable": False},
        "block_size": 1 << 20,
        "verbose": verbose,
        "logging": {"enable": False},
        "suppress_version_info": True,
        "hotfixes": {"re_encode_path_info": True, "unquote_path_info": False},
        "add_header_MS_Author_Via": True,
    }
    return _reject_undecodable(WsgiDAVApp(config))


def _reject_undecodable(app: Callable[..., Any]) -> Callable[..., Any]:
    """400 for a path that is not UTF-8 or that climbs with ``..``, before
    wsgidav sees it (it answers the first with a 500, the second with an
    error page whose body never comes)."""
    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        try:
            path = environ.get("PATH_INFO", "").encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return _answer(start_response, "400 Bad Request", "the path is not valid UTF-8\n")
        if split(path) is None:
            return _answer(start_response, "400 Bad Request", "bad path\n")
        return app(environ, start_response)
    return wrapper


def make_server(app: Any, host: str, port: int, *, certificate: str = "", private_key: str = "") -> Any:
    """A cheroot server, bound and listening (TLS when given a certificate
    and key); ``serve()`` it from any thread."""
    from cheroot import wsgi

    # a deep listen backlog: a burst of clients must wait in the kernel, not in SYN retries
    server = wsgi.Server((host, port), app, numthreads=16, server_name="pbe-fs", request_queue_size=1024)
    if certificate:
        from cheroot.ssl.builtin import BuiltinSSLAdapter

        server.ssl_adapter = BuiltinSSLAdapter(certificate, private_key)
    try:
        server.prepare()
    except OSError as exc:
        raise PbeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return server


def serve(server: Any) -> None:
    """Serve in this thread until SIGINT/SIGTERM."""
    import signal
    import threading

    def _stop(signum: int, frame: Any) -> None:
        log.info("%s: stopping the WebDAV server", signal.Signals(signum).name)
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        server.serve()
    finally:
        server.stop()
