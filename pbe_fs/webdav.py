"""The WebDAV adapter: a wsgidav provider over the shared tree, on cheroot.

Like the FUSE adapter it knows only its protocol: resources are small
objects built per request from ``Tree`` nodes; names, sizes, dates and
contents all come from the tree.

What wsgidav does not decide for a read-only tree is decided up front in
``custom_request_handler``: write methods are refused before a body is
read, DELETE is allowed on artwork folders only (with the read-only token
when ``read_only`` is true), PROPFIND with Depth infinity gets 403
``propfind-finite-depth``, PROPFIND is answered here with encoded hrefs,
Ranges are checked by RFC 9110, and OPTIONS and 405s say honestly what
each resource allows.

What reaches wsgidav at all is decided in ``_front`` (paths, body size,
Authorization, Digest replays, error pages) and, one level lower, in
cheroot's ``_HeaderGate`` (no worker thread before the headers are in;
a small archived file is answered on the selector thread, without one).
"""

from __future__ import annotations

import base64
import fcntl
import hmac
import io
import itertools
import logging
import mmap
import os
import posixpath
import re
import select
import socket
import sqlite3
import struct
import termios
import threading
import time
from email.utils import formatdate, parsedate_to_datetime
from typing import Any, Callable
from urllib.parse import unquote_to_bytes

from cheroot import server as cheroot_server
from cheroot import wsgi
from wsgidav.dav_error import HTTP_FORBIDDEN, DAVError
from wsgidav.dav_provider import DAVCollection, DAVNonCollection, DAVProvider
from wsgidav.dc.base_dc import BaseDomainController

from . import multistatus, names
from .multistatus import content_type, href, quote_segment
from .artwork import Node
from .render.segments import Reader
from .errors import PbeError
from .gallery import OLD_ROUTES, Gallery, cache_control, etag_listed, gallery_post
from .gallery.opds import Opds
from .storage.local import LocalStore
from .tree import Tree, TreeError, is_noise

log = logging.getLogger("pbe_fs.webdav")

_ALIGN = 1 << 20
PRESIGNED_SECONDS = 900  # how long a redirect to the bucket stays valid
# understood but refused on a read-only tree: 403
_WRITE_METHODS = {"PUT", "MKCOL", "MOVE", "COPY", "PROPPATCH"}
# never implemented here (no lock manager: DAV class 1): 405 with an honest Allow
_UNSUPPORTED = {"LOCK", "UNLOCK", "PATCH", "POST", "TRACE", "CONNECT", "SEARCH", "REPORT", "ACL", "BIND"}
MAX_BODY = 1 << 20  # request bodies above this answer 413 before they are read
_RANGE_SPEC = re.compile(r"\s*(\d*)\s*-\s*(\d*)\s*")


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


class SyncStarter:
    """``POST /_pbe/refresh`` for ``pbe-fs serve``: a sync in a child process.

    At most one sync at a time, whoever starts it: the archive's sync lock
    is taken here, before the child exists, and handed to it (the child
    keeps it until it exits), so a burst of POSTs starts one sync and the
    rest answer 409, as does a POST while ``pbe-fs sync`` runs from the
    command line. Children are reaped by a waiting thread: no zombies.
    """

    def __init__(self, archive: Any, argv: list[str]) -> None:
        self.archive, self.argv = archive, argv
        self._mutex = threading.Lock()

    def __call__(self) -> str:
        import subprocess

        with self._mutex:
            lock = self.archive.lock()
            try:
                lock.__enter__()
            except PbeError as exc:
                return str(exc)
            fd = lock.handover()
            try:
                proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, start_new_session=True, pass_fds=(fd,),
                                        env={**os.environ, lock.HANDED: str(fd)})
            finally:
                os.close(fd)
        threading.Thread(target=proc.wait, name=f"reap-{proc.pid}", daemon=True).start()
        return f"started sync (pid {proc.pid})"


REALM = "pbe-fs"
_GUARDED = {"DELETE", "POST"}  # the methods that change something


class Access:
    """Who may do what: anonymous reads unless ``webdav.users`` is set;
    DELETE and POST need ``read_only_token`` as the password (any user
    name) while ``read_only`` is true. Basic and Digest both work."""

    def __init__(self, *, read_only: bool, token: str, users: dict[str, str]) -> None:
        self.read_only, self.token, self.users = read_only, token, users

    def guarded(self, environ: dict[str, Any]) -> bool:
        # the gallery's forms check their own CSRF token and admin session
        return (self.read_only and environ.get("REQUEST_METHOD") in _GUARDED
                and not gallery_post(environ.get("PATH_INFO", "")))

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
    def __init__(self, tree: Tree, access: Access, *, refresh: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.tree = tree
        self.refresh = refresh
        self.gallery = Gallery(tree, access, refresh)
        self.opds = Opds(self.gallery)

    def is_readonly(self) -> bool:
        return False  # DELETE of artwork folders; everything else is refused below

    def get_resource_inst(self, path: str, environ: dict[str, Any]) -> Any:
        parts = split(path)
        if parts is None or (parts and is_noise(parts[-1])):
            return None
        tree = environ.get("pbe.tree", self.tree)  # a browser's NSFW choice, for its GETs only
        node = tree.get(parts)
        return None if node is None else _resource(path, environ, tree, parts, node)

    # -- decisions wsgidav would get wrong for this tree ---------------------------
    def custom_request_handler(self, environ: dict[str, Any], start_response: Callable[..., Any],
                               default_handler: Callable[..., Any]) -> Any:
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/")
        parts = split(path)
        if parts is None:
            return _answer(start_response, "400 Bad Request", "bad path\n")
        feed = self.opds.handle(parts, environ, start_response)  # comic and e-book readers' catalog
        if feed is not None:
            return feed
        page = self.gallery.handle(parts, environ, start_response)  # browsers' pages and forms
        if page is not None:
            return page
        if parts[:1] == ("_pbe",):
            return self._control(method, parts[1:], start_response)
        if method in _WRITE_METHODS:
            return _answer(start_response, "403 Forbidden", "read-only: only whole artwork folders can be deleted\n")
        if method in ("GET", "HEAD"):
            tree = environ["pbe.tree"] = self.gallery.tree_for(environ)
            node = tree.get(parts)
            if node is not None and not node.is_dir and node.content is not None \
                    and ("HTTP_IF_NONE_MATCH" in environ or "HTTP_IF_MODIFIED_SINCE" in environ):
                etag = tree.etag(parts, node)  # worked out on first use for a generated file: only when asked
                if _unchanged(environ, etag, node.mtime):
                    return _not_modified(start_response, etag, node)
            if node is not None:
                start_response = self.gallery.file_headers(start_response, node)
            if node is not None and node.blob and method == "GET":  # HEAD: the exact length, from us
                url = tree.archive.store.url(node.blob, PRESIGNED_SECONDS)
                if url:  # filesystem_options.proxy false: the client fetches from the bucket itself
                    return _answer(start_response, "302 Found", "", extra=[("Location", url), ("Cache-Control", "no-store")])
            if node is not None and "HTTP_RANGE" in environ:
                if _normalise_range(environ, node.size):
                    return _unsatisfiable(start_response, node.size)
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
                return self._propfind(parts, node, depth, environ, start_response)
        return default_handler(environ, start_response)

    def refresh_all(self) -> int:
        """Every tree this process serves looks at the index now; the
        generation all of them have reached."""
        trees = self.gallery.trees()
        for tree in trees:
            tree.refresh(interval=0)
        return min(tree.index_generation for tree in trees)

    def index_generation(self) -> int:
        """The newest index generation a tree of this process has loaded."""
        return max(tree.index_generation for tree in self.gallery.trees())

    def quick(self, target: bytes) -> bool:
        """Whether a GET of this request target is a small archived file on
        local disk in a folder the tree has in its cache: answering it opens
        and reads one small file, with nothing to build, render or fetch."""
        if b"//" in target:
            return False
        try:
            parts = split(unquote_to_bytes(target).decode("utf-8"))
        except UnicodeDecodeError:
            return False
        tree = self.tree
        if not parts or parts[0] in _ROUTED or tree.refresh_due() or not tree.is_cached(parts[:-1]) \
                or not isinstance(tree.archive.store, LocalStore):
            return False
        node = tree.get(parts)
        return node is not None and not node.is_dir and not node.pending and node.size <= QUICK_BYTES

    def fast_file(self, environ: dict[str, Any], start_response: Callable[..., Any], access: Access) -> Any:
        """GET or HEAD of a file answered without wsgidav, or None.

        wsgidav builds a resource object, walks its middleware, checks
        ``If:`` headers and locks for every request; for a 1 KB file that
        is most of the time spent. A plain read of a file (anonymous or
        with a Basic login that checks out, no conditional header, no
        body) is answered here with the very headers wsgidav sends, in its
        order; everything else (conditionals, Digest, failed logins, the
        gallery's and OPDS's routes, folders, presigned redirects) still
        goes through wsgidav, so its answers stay exactly what they were.
        """
        if environ["REQUEST_METHOD"] not in ("GET", "HEAD") or not _plain_read(environ):
            return None
        if access.users and not _basic_login_ok(environ, access):
            return None
        parts = split(environ["PATH_INFO"].encode("iso-8859-1").decode("utf-8"))
        if not parts or parts[0] in _ROUTED:
            return None
        tree = self.gallery.tree_for(environ)
        node = tree.get(parts)
        if node is None or node.is_dir or node.content is None:
            return None
        if node.blob and environ["REQUEST_METHOD"] == "GET" and tree.archive.store.url(node.blob, PRESIGNED_SECONDS):
            return None
        size, start, status = node.size, 0, "200 OK"
        headers = [("Content-Length", str(size)), ("Last-Modified", _http_date(node.mtime)),
                   ("Content-Type", content_type(parts[-1])), ("Date", _http_date(None)),
                   ("ETag", f'"{tree.etag(parts, node)}"'), ("Accept-Ranges", "bytes")]
        if "HTTP_RANGE" in environ:
            if _normalise_range(environ, size):
                return _unsatisfiable(start_response, size)
            if "HTTP_RANGE" in environ and size:
                first, _, last = environ["HTTP_RANGE"][6:].partition("-")
                start, status = int(first), "206 Partial Content"
                headers[0] = ("Content-Length", str(int(last) - start + 1))
                headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        headers.append(("Cache-Control", cache_control(node)))
        start_response(status, headers)
        if environ["REQUEST_METHOD"] == "HEAD":
            return [b""]
        return _body(node.content().reader(), start, int(headers[0][1]))

    def _propfind(self, parts: tuple[str, ...], node: Node, depth: str, environ: dict[str, Any],
                  start_response: Callable[..., Any]) -> list[bytes]:
        """PROPFIND answered straight from one listing, hrefs encoded.

        wsgidav asks every member for every property through several layers
        (for 20,000 works that is most of a second) and puts raw names in
        ``<D:href>`` (a ``#`` or ``%`` in a title then loses works in every
        client). There are no dead properties here: a property this tree
        does not have is a 404 propstat.
        """
        wanted = multistatus.requested(environ)
        if wanted is multistatus.BAD:
            return _answer(start_response, "400 Bad Request", "malformed PROPFIND body\n")
        base = href(parts, node.is_dir)
        members = [(base, parts[-1] if parts else "", parts, node)]
        listing = self.tree.list(parts) if node.is_dir and depth == "1" else None
        children = ((base + quote_segment(name) + ("/" if child.is_dir else ""), name, parts + (name,), child)
                    for name, child in listing or ())  # one at a time: a listing can be 50,000 entries
        body = multistatus.render(itertools.chain(members, children), wanted, self.tree.etag)
        start_response("207 Multi-Status", [("Content-Type", "application/xml; charset=utf-8"),
                                            ("Content-Length", str(sum(map(len, body))))])
        return body

    def not_allowed(self, path: str, start_response: Callable[..., Any]) -> list[bytes]:
        """405 for a method this server never implements, with what the
        resource does allow (wsgidav would answer LOCK without an Allow)."""
        parts = split(path) or ()
        allow = "POST" if parts == ("_pbe", "refresh") else ", ".join(self._allow(self.tree.get(parts)))
        return _answer(start_response, "405 Method Not Allowed", "this method is not supported here\n",
                       extra=[("Allow", allow)])

    def _allow(self, node: Node | None) -> list[str]:
        allow = ["OPTIONS", "HEAD", "GET", "PROPFIND"]
        if node is not None and node.is_artwork_root and not self.tree.is_gone(node.artwork):
            allow.append("DELETE")
        return allow

    def _options(self, parts: tuple[str, ...], start_response: Callable[..., Any]) -> list[bytes]:
        node = self.tree.get(parts)
        if node is None:
            return _answer(start_response, "404 Not Found", "")
        headers = [("DAV", "1"), ("MS-Author-Via", "DAV"), ("Allow", ", ".join(self._allow(node)))]
        if not node.is_dir:
            headers.append(("Accept-Ranges", "bytes"))
        return _answer(start_response, "200 OK", "", extra=headers)

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
            if self.tree.follower is not None:
                return _answer(start_response, "409 Conflict", f"this machine follows the bucket; {self.tree.writer()}\n")
            if self.refresh is None:
                return _answer(start_response, "501 Not Implemented", "no sync configured\n")
            message = self.refresh()
            status = "202 Accepted" if message.startswith("started") else "409 Conflict"
            return _answer(start_response, status, message + "\n")
        if rest in (("status",), ("refresh",)):
            allow = "GET, HEAD" if rest == ("status",) else "POST"
            return _answer(start_response, "405 Method Not Allowed", f"{method} is not supported here\n",
                           extra=[("Allow", allow)])
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


def _normalise_range(environ: dict[str, Any], size: int) -> bool:
    """RFC 9110 §14.2 for one file: True when the Range must be answered
    416; otherwise HTTP_RANGE is left as one ``bytes=first-last`` that
    wsgidav serves as a 206, or removed (the whole file, 200).

    A header that is not ``bytes=`` with valid specs (``bytes=abc``,
    ``bytes=50-10``, ``items=0-1``) is ignored, as is a request for several
    ranges (the whole file beats one of them, and beats multipart bodies few
    clients read). ``bytes=-0`` and a start at or past the end are 416.
    """
    value = environ.pop("HTTP_RANGE")
    unit, _, specs = value.partition("=")
    if unit.strip().lower() != "bytes" or "," in specs:
        return False
    match = _RANGE_SPEC.fullmatch(specs)
    if match is None or match.group(1) == match.group(2) == "":
        return False
    first, last = match.groups()
    if first == "":  # suffix: the last N bytes
        if int(last) == 0 or size == 0:
            return True
        start, end = max(0, size - int(last)), size - 1
    else:
        start = int(first)
        if last != "" and int(last) < start:
            return False
        if start >= size:
            return True
        end = size - 1 if last == "" else min(int(last), size - 1)
    environ["HTTP_RANGE"] = f"bytes={start}-{end}"
    return False


_ROUTED = OLD_ROUTES | {"_pbe", "opds"}  # first path segments the gallery or OPDS answer, files or not
# any of these and wsgidav decides: conditionals (304/412), If: lists, Depth on a GET, a body
_NOT_PLAIN = ("HTTP_IF_MATCH", "HTTP_IF_NONE_MATCH", "HTTP_IF_MODIFIED_SINCE", "HTTP_IF_UNMODIFIED_SINCE",
              "HTTP_IF_RANGE", "HTTP_IF", "HTTP_DEPTH")
_CHUNK = _ALIGN


def _plain_read(environ: dict[str, Any]) -> bool:
    """No header or body that makes wsgidav answer anything but the bytes."""
    return (not any(key in environ for key in _NOT_PLAIN) and environ.get("CONTENT_LENGTH") in (None, "", "0")
            and "logout" not in environ.get("QUERY_STRING", ""))


def _unchanged(environ: dict[str, Any], etag: str, mtime: float) -> bool:
    """Whether a conditional GET/HEAD of a file gets 304 (RFC 9110 13.2.2):
    If-None-Match decides when present (If-Modified-Since is then ignored,
    and dropped so that wsgidav ignores it too), else If-Modified-Since."""
    wanted = environ.get("HTTP_IF_NONE_MATCH")
    if wanted is not None:
        if etag_listed(wanted, f'"{etag}"'):
            return True
        environ.pop("HTTP_IF_MODIFIED_SINCE", None)
        return False
    since = environ.get("HTTP_IF_MODIFIED_SINCE")
    if since is None:
        return False
    try:
        return int(mtime) <= parsedate_to_datetime(since).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return False  # not a date: ignored, as RFC 9110 says


def _not_modified(start_response: Callable[..., Any], etag: str, node: Node) -> list[bytes]:
    """A 304 with what the 200 would have said about caching (wsgidav's own
    304 carries neither ETag nor Cache-Control, which RFC 9110 requires)."""
    start_response("304 Not Modified", [("ETag", f'"{etag}"'), ("Cache-Control", cache_control(node)),
                                        ("Last-Modified", _http_date(node.mtime)), ("Date", _http_date(None)),
                                        ("Content-Length", str(node.size))])  # the 200's, as RFC 9110 allows
    return [b""]


def _basic_login_ok(environ: dict[str, Any], access: Access) -> bool:
    """A Basic login wsgidav would accept for this request (anything else,
    Digest included, is left to wsgidav: its 401s and nonces stay its own)."""
    value = environ.get("HTTP_AUTHORIZATION", "").strip()
    if value[:6].lower() != "basic ":
        return False
    user, _, password = base64.b64decode(value[6:].strip()).decode("utf-8").partition(":")
    expected = access.password_for(user, environ)
    return expected is not None and hmac.compare_digest(password.encode(), expected.encode())


_dates: dict[int, str] = {}


def _http_date(secs: float | None) -> str:
    """wsgidav's ``get_rfc1123_time``, remembered per second (Date changes once a second)."""
    key = int(time.time() if secs is None else secs)
    text = _dates.get(key)
    if text is None:
        if len(_dates) > 4096:
            _dates.clear()
        text = _dates[key] = formatdate(timeval=key, localtime=False, usegmt=True)
    return text


def _body(reader: Reader, start: int, length: int) -> Any:
    """The bytes: one read for a small file, 1 MiB pieces for a large one."""
    if length <= _CHUNK:
        try:
            return [reader.read(start, length)]
        finally:
            reader.close()
    return _pieces(reader, start, length)


def _pieces(reader: Reader, start: int, length: int) -> Any:
    try:
        end = start + length
        while start < end:
            # pieces end on 1 MiB boundaries: each touches one block of a bucket's read cache
            data = reader.read(start, min(_CHUNK - start % _CHUNK, end - start))
            if not data:
                return
            start += len(data)
            yield data
    finally:
        reader.close()


def _unsatisfiable(start_response: Callable[..., Any], size: int) -> list[bytes]:
    return _answer(start_response, "416 Range Not Satisfiable", "range not satisfiable\n",
                   extra=[("Content-Range", f"bytes */{size}")])


def _answer(start_response: Callable[..., Any], status: str, body: str, ctype: str = "text/plain; charset=utf-8",
            extra: list[tuple[str, str]] | None = None) -> list[bytes]:
    data = body.encode()
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(data)))] + (extra or []))
    return [data]


def make_app(tree: Tree, access: Access, *, refresh: Callable[[], str] | None = None,
             verbose: int = 1, nonces: str = ":memory:", peers: Shared | None = None) -> Any:
    """The WSGI application: wsgidav with our provider, no lock manager
    (so DAV: 1), our access rules, no wsgidav directory browser.
    ``nonces``: where Digest nonces are kept (a file all workers share);
    ``peers``: what the workers of one server share (see Shared)."""
    from wsgidav.wsgidav_app import WsgiDAVApp

    config = {
        "provider_mapping": {"/": Provider(tree, access, refresh=refresh)},
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
    return _front(WsgiDAVApp(config), access, config["provider_mapping"]["/"], _Nonces(nonces),
                  peers)


_DIGEST_NONCE = re.compile(r'(?:^|[\s,])nonce="?([^",\s]*)')
_DIGEST_NC = re.compile(r'(?:^|[\s,])nc="?([0-9A-Fa-f]{1,16})')


class _Nonces:
    """The Digest nonces this server handed out, and the highest nonce
    count each was used with for a write.

    wsgidav checks neither (any nonce, any count, forever), so a captured
    ``Authorization`` header for DELETE worked again and again. A write
    with Digest is let through only with a nonce we issued in the last
    ``_TTL`` seconds and a count above every count seen with it (RFC 7616
    §3.3); anything else loses its header and gets a fresh challenge.

    The table is SQLite: in memory for one process, a file that every
    worker opens when several share the port (the challenge and the answer
    may land on different workers, and a replay on another worker must
    fail as it does on this one).
    """

    _TTL = 300.0
    _KEEP = 4096

    def __init__(self, path: str = ":memory:") -> None:
        self._path = path
        self._db: sqlite3.Connection | None = None  # opened at first use, in the process that uses it
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection:
        if self._db is None:
            db = sqlite3.connect(self._path, check_same_thread=False, isolation_level=None, timeout=30)
            db.execute("PRAGMA synchronous=OFF")  # a per-run table: losing it to a crash loses nothing
            db.execute("CREATE TABLE IF NOT EXISTS nonce (value TEXT PRIMARY KEY, issued REAL, nc INTEGER)")
            db.execute("CREATE INDEX IF NOT EXISTS nonce_issued ON nonce (issued)")
            self._db = db
        return self._db

    def issued(self, challenge: str) -> None:
        match = _DIGEST_NONCE.search(challenge.partition(" ")[2])
        if match:
            with self._lock:
                db = self._conn()
                db.execute("INSERT OR REPLACE INTO nonce VALUES (?, ?, 0)", (match.group(1), time.monotonic()))
                db.execute("DELETE FROM nonce WHERE issued < (SELECT issued FROM nonce ORDER BY issued DESC "
                           "LIMIT 1 OFFSET ?)", (self._KEEP,))

    def use(self, authorization: str) -> bool:
        params = authorization.partition(" ")[2]
        nonce, nc = _DIGEST_NONCE.search(params), _DIGEST_NC.search(params)
        count = int(nc.group(1), 16) if nc else 1  # no qop: a nonce is good for one request
        if nonce is None:
            return False
        with self._lock:
            db = self._conn()
            db.execute("BEGIN IMMEDIATE")  # one worker at a time between the check and the update
            try:
                row = db.execute("SELECT issued, nc FROM nonce WHERE value = ?", (nonce.group(1),)).fetchone()
                if row is None or time.monotonic() - row[0] > self._TTL or count <= row[1]:
                    return False
                db.execute("UPDATE nonce SET nc = ? WHERE value = ?", (count, nonce.group(1)))
                return True
            finally:
                db.execute("COMMIT")


_WORD = struct.Struct("<q")


class Shared:
    """What the worker processes of one server share, in an anonymous
    shared mapping made before forking.

    * A word holding the newest index generation a worker committed
      itself (DELETE, a gallery POST; written before it answers) or was
      the first to load (a sync's commit, seen by its poll); every
      worker compares it with what it saw last at the start of each
      request and, when it is ahead, looks at the index at once (again,
      for up to a second, until its trees reach that generation) instead
      of within its poll interval. So a DELETE answered by one worker is
      gone for the next request on any other, as it was with one process,
      and a sync's new work, once one worker has shown it, is shown by
      all (the first notices it within its poll interval). Only ever raised, under the lock: two workers writing at once keep
      the higher.
    * The date each index generation was first loaded (the view folders'
      and status.json's Last-Modified, part of some ETags): the first
      worker to load a generation writes it, the others read it, so every
      worker answers the same validators.
    """

    _SLOTS = 16  # generations remembered: workers are never that far apart
    _SLOT = struct.Struct("<qqd")  # inode, generation, date

    def __init__(self) -> None:
        import multiprocessing

        self._map = mmap.mmap(-1, 8 + self._SLOTS * self._SLOT.size)  # MAP_SHARED: workers see each other's writes
        self._seen = 0
        self._lock = multiprocessing.Lock()  # a semaphore in shared memory: it works across fork
        self._catching = threading.Lock()  # this process's threads, one refresh at a time

    def install(self) -> None:
        """In a worker: every tree of this process takes its dates from here."""
        Tree.stamp_of = staticmethod(self.stamp)

    def changed(self, generation: int) -> None:
        """This worker committed ``generation`` of the index."""
        with self._lock:
            self._raise(generation)

    def _raise(self, generation: int) -> None:
        """The shared word to ``generation`` if that is newer (under the lock)."""
        if generation > _WORD.unpack_from(self._map)[0]:
            _WORD.pack_into(self._map, 0, generation)

    def behind(self) -> bool:
        """Whether another worker committed a generation this one has not caught up with."""
        return _WORD.unpack_from(self._map)[0] > self._seen

    def catch_up(self, refresh: Callable[[], int]) -> None:
        """If another worker committed a generation this process has not
        seen, ``refresh`` (which answers the generation its trees now
        have) until they reach it; a request arriving meanwhile waits (it
        would otherwise read the old tree). Bounded: after a rebuilt index
        the numbers may start again lower."""
        target = _WORD.unpack_from(self._map)[0]
        if target <= self._seen:
            return
        with self._catching:
            deadline = time.monotonic() + 1.0
            while target > self._seen and refresh() < target and time.monotonic() < deadline:
                time.sleep(0.01)
            self._seen = max(self._seen, target)

    def stamp(self, key: tuple[int, int]) -> float:
        inode, generation = key
        offset = 8 + (generation % self._SLOTS) * self._SLOT.size
        with self._lock:
            kept = self._SLOT.unpack_from(self._map, offset)
            if kept[:2] == (inode, generation):
                return kept[2]
            now = time.time()
            self._SLOT.pack_into(self._map, offset, inode, generation, now)
            # the first worker to see a generation (a sync's commit, by its poll) tells
            # the others: no client sees a work on one worker, then not on the next
            self._raise(generation)
            return now


def _malformed_authorization(value: str) -> bool:
    """A Basic header that does not decode to ``user:password`` in UTF-8,
    or a Digest one without its parameters (wsgidav answers those 500)."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "basic":
        try:
            return ":" not in base64.b64decode(rest.strip(), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return True
    if scheme.lower() == "digest":
        return not all(re.search(rf'(?:^|[\s,]){key}=', rest) for key in ("username", "nonce", "uri", "response"))
    return False


def _front(app: Callable[..., Any], access: Access, provider: Provider, nonces: _Nonces,
           peers: Shared | None) -> Callable[..., Any]:
    """What every request passes before wsgidav sees it.

    400 for a path that is not UTF-8 or that climbs with ``..`` (wsgidav
    answers the first with a 500, the second with an error page whose body
    never comes) and for a malformed ``Authorization``; ``//`` collapsed;
    413 for a body over MAX_BODY (cheroot already refuses it unread; this
    holds under any WSGI server); Digest replays refused for writes; and
    wsgidav's HTML error pages, which name wsgidav and its version,
    replaced by one plain line.
    """

    def wrapper(environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        raw = environ.get("PATH_INFO", "")
        try:
            path = raw.encode("iso-8859-1").decode("utf-8")
        except (UnicodeEncodeError, UnicodeDecodeError):
            return _answer(start_response, "400 Bad Request", "the path is not valid UTF-8\n")
        if split(path) is None:
            return _answer(start_response, "400 Bad Request", "bad path\n")
        if "//" in raw:
            environ["PATH_INFO"] = re.sub("/{2,}", "/", raw)
        if (environ["REQUEST_METHOD"] in _UNSUPPORTED and path.rstrip("/") != "/_pbe/refresh"
                and not (environ["REQUEST_METHOD"] == "POST" and gallery_post(path))):
            return provider.not_allowed(path, start_response)
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return _answer(start_response, "400 Bad Request", "bad Content-Length\n")
        if length > MAX_BODY:
            return _answer(start_response, "413 Content Too Large", f"request bodies are limited to {MAX_BODY} bytes\n",
                           extra=[("Connection", "close")])
        authorization = environ.get("HTTP_AUTHORIZATION")
        if authorization is not None:
            if _malformed_authorization(authorization):
                return _answer(start_response, "400 Bad Request", "malformed Authorization header\n")
            if (access.guarded(environ) and authorization.lstrip()[:7].lower() == "digest "
                    and not nonces.use(authorization)):
                del environ["HTTP_AUTHORIZATION"]  # a replay, or a nonce we never gave: challenge afresh

        if peers is not None:  # another worker may have changed the archive
            peers.catch_up(provider.refresh_all)
        fast = provider.fast_file(environ, start_response, access)
        if fast is not None:
            return fast

        replaced: list[Any] = []
        started: list[bool] = []

        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            if status[:1] in "45":  # only errors are looked at: nothing added to a 200
                for name, value in headers:
                    if name.lower() == "www-authenticate" and value[:7].lower() == "digest ":
                        nonces.issued(value)
                if not environ.get("pbe.page") and any(  # the gallery's own error pages stay
                        n.lower() == "content-type" and v.startswith("text/html") for n, v in headers):
                    replaced.append((status, [(n, v) for n, v in headers
                                              if n.lower() not in ("content-type", "content-length")]))
                    return lambda data: None
            started.append(True)
            return start_response(status, headers, exc_info)

        result = app(environ, respond)
        if peers is not None and environ["REQUEST_METHOD"] in _GUARDED:
            # wsgidav's layers are generators: the change happens while the answer is
            # iterated. Run it to the end (answers to DELETE and POST are small), then
            # publish, all before a byte leaves: the client's next request may land elsewhere.
            iterated = result
            try:
                result = list(iterated)
            finally:
                if hasattr(iterated, "close"):
                    iterated.close()
            peers.changed(provider.index_generation())
        if replaced:
            return _plain(result, replaced[0], start_response)
        return result if started else _watch(result, replaced, start_response)

    def quick(target: bytes, head: bytes) -> bool:
        """Whether the GET or HEAD of ``target`` whose request is ``head``
        is answered in a moment whatever its headers say: a small archived
        file, nothing to reload first, no cookie choosing another tree, no
        Digest login, no body. (The answer itself is made by ``wrapper`` as
        for any request.)"""
        lowered = head.lower()
        if b"?" in target or b"\ncookie:" in lowered or b"\ncontent-length:" in lowered \
                or b"\ntransfer-encoding:" in lowered or b"\nauthorization: digest" in lowered:
            return False  # (a Digest login's nonce is counted in a file all workers share, under its lock)
        return (peers is None or not peers.behind()) and provider.quick(target)

    wrapper.quick = quick  # type: ignore[attr-defined]
    return wrapper


def _plain(result: Any, answer: tuple[str, list[tuple[str, str]]], start_response: Callable[..., Any]) -> list[bytes]:
    """A plain-text error in place of wsgidav's HTML page."""
    if hasattr(result, "close"):
        result.close()
    status, headers = answer
    return _answer(start_response, status, status + "\n", extra=headers)


def _watch(result: Any, replaced: list[Any], start_response: Callable[..., Any]) -> Any:
    """The body as it is, unless wsgidav decides on an error page while it
    is being iterated (it calls start_response late for some errors)."""
    if isinstance(result, list):
        return result
    try:
        for chunk in result:
            if replaced:
                yield from _plain(result, replaced[0], start_response)
                return
            yield chunk
        if replaced:
            yield from _plain(result, replaced[0], start_response)
    finally:
        if hasattr(result, "close"):
            result.close()


HEADER_SECONDS = 10.0  # how long a request's headers may take to arrive, all of them
_MAX_HEADER = 64 << 10
_MAX_HELD = 10000


class _HeaderGate:
    """Gives a connection to a worker thread only once its request headers
    have arrived whole.

    cheroot hands every accepted (and every readable kept-alive) connection
    to one of its worker threads, which then blocks reading the request
    line and headers; 16 clients sending a header line every few seconds
    took all 16 threads and nobody else was served. Here the connection
    waits in one epoll (edge-triggered, so a half-sent header costs one peek
    per packet, not a busy loop) until ``\\r\\n\\r\\n`` is in the socket buffer
    (MSG_PEEK: the bytes stay for cheroot to read), and is closed with 408
    if that takes longer than HEADER_SECONDS. Slow clients then cost a file
    descriptor each, not a thread; the pool can stay small. A normal client,
    whose request arrives in one packet, is dispatched at once from the
    peek. TLS connections are dispatched as before (their bytes cannot be
    peeked before decryption).
    """

    def __init__(self, dispatch: Callable[[Any], None], tls: bool,
                 answer_here: Callable[[Any, bytes], bool] | None = None) -> None:
        self._dispatch, self._tls, self._answer_here = dispatch, tls, answer_here
        self._held: dict[int, tuple[Any, float]] = {}
        self._lock = threading.Lock()
        self._epoll = select.epoll()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def offer(self, conn: Any) -> None:
        if self._tls or conn.rfile.has_data():
            self._dispatch(conn)
            return
        data = self.head(conn)
        if data is None:
            conn.close()
        elif not _whole(data):
            self._hold(conn)
        elif self._answer_here is None or not self._answer_here(conn, data):
            self._dispatch(conn)

    @classmethod
    def _peek(cls, conn: Any) -> bool | None:
        """True: headers complete (or too long: cheroot answers that);
        False: not yet; None: the client has gone."""
        data = cls.head(conn)
        return None if data is None else _whole(data)

    @staticmethod
    def head(conn: Any) -> bytes | None:
        """What the client has sent so far, left in the socket for cheroot
        (b"": nothing yet; None: the client has gone)."""
        sock = conn.socket
        try:
            timeout = sock.gettimeout()
            sock.settimeout(0)
            try:
                data = sock.recv(_MAX_HEADER, socket.MSG_PEEK)
            finally:
                sock.settimeout(timeout)
        except (BlockingIOError, InterruptedError):
            return b""
        except OSError:
            return None
        return data or None

    def _hold(self, conn: Any) -> None:
        fd = conn.socket.fileno()
        with self._lock:
            if self._stopped:
                conn.close()
                return
            if len(self._held) >= _MAX_HELD:  # drop the longest waiting
                oldest = min(self._held, key=lambda k: self._held[k][1])
                self._release(oldest)[0].close()
            self._held[fd] = (conn, time.monotonic() + HEADER_SECONDS)
            self._epoll.register(fd, select.EPOLLIN | select.EPOLLET | select.EPOLLRDHUP)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="header-gate", daemon=True)
                self._thread.start()

    def _release(self, fd: int) -> tuple[Any, float]:
        item = self._held.pop(fd)
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass
        return item

    def _run(self) -> None:
        while not self._stopped:
            try:
                events = self._epoll.poll(0.5)
            except OSError:
                return  # closed by stop()
            for fd, event in events:
                with self._lock:
                    conn = self._held.get(fd, (None,))[0]
                if conn is None:
                    continue
                ready = self._peek(conn)
                if ready is False and event & (select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR):
                    ready = None  # the client stopped sending before its headers were whole
                if ready is False:
                    continue
                with self._lock:
                    if fd not in self._held:
                        continue
                    self._release(fd)
                if ready:
                    self._dispatch(conn)
                else:
                    conn.close()
            now = time.monotonic()
            with self._lock:
                late = [self._release(fd)[0] for fd, (_, deadline) in list(self._held.items()) if deadline < now]
            for conn in late:
                try:
                    conn.socket.send(b"HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                                     socket.MSG_DONTWAIT)
                except OSError:
                    pass
                conn.close()

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            held = [self._release(fd)[0] for fd in list(self._held)]
        for conn in held:
            conn.close()
        self._epoll.close()


def _whole(data: bytes) -> bool:
    """Whether a request's headers are all in (or too long: cheroot answers that)."""
    return b"\r\n\r\n" in data or b"\n\n" in data or len(data) >= _MAX_HEADER


class _FirstLine:
    """An rfile whose first line, the request line, has its leading ``//``
    collapsed: cheroot reads ``GET //by-id/ HTTP/1.1`` as an absolute URI
    with host ``by-id`` and refuses it."""

    def __init__(self, rfile: Any) -> None:
        self._rfile = rfile

    def readline(self, *args: Any) -> bytes:
        line = self._rfile.readline(*args)
        method, sp, rest = line.partition(b" ")
        if rest.startswith(b"//"):
            rest = b"/" + rest.lstrip(b"/")
        return method + sp + rest

    def __getattr__(self, name: str) -> Any:
        return getattr(self._rfile, name)


class _HeldHeaders:
    """Stands in for a connection's wfile while cheroot writes a response's
    headers: they are kept, to go out with the body's first piece."""

    def __init__(self) -> None:
        self.data = b""

    def write(self, data: bytes) -> int:
        self.data += data
        return len(data)


class _Request(cheroot_server.HTTPRequest):
    """A request whose response headers leave in one ``send`` with the
    body's first piece (cheroot sends them apart: a small file cost two
    system calls, each giving up and taking back the GIL)."""

    _held = b""

    def read_request_line(self) -> Any:
        rfile, self.rfile = self.rfile, _FirstLine(self.rfile)
        try:
            return super().read_request_line()
        finally:
            self.rfile = rfile

    def send_headers(self) -> None:
        wfile, held = self.conn.wfile, _HeldHeaders()
        self.conn.wfile = held
        try:
            super().send_headers()
        finally:
            self.conn.wfile = wfile
            self._held = held.data
        if self.chunked_write:
            self._flush_headers()  # cheroot writes a chunked body's end straight to the socket

    def write(self, chunk: bytes) -> None:
        if self._held:
            chunk, self._held = self._held + chunk, b""
        super().write(chunk)

    def respond(self) -> None:
        try:
            super().respond()
        finally:
            self._flush_headers()  # no body (HEAD, 304, an empty file): the headers alone

    def simple_response(self, status: Any, msg: str = "") -> None:
        self._flush_headers()
        super().simple_response(status, msg)

    def _flush_headers(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            self.conn.wfile.write(held)


def _unsent(sock: socket.socket) -> int:
    """Bytes in a socket's send queue its peer has not taken yet (Linux's
    SIOCOUTQ; -1 where that cannot be asked)."""
    try:
        return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0"))[0]
    except OSError:
        return -1


QUICK_BYTES = 8192  # a file this small is answered on the selector thread when it can be (see _answer_here)
KEPT_ALIVE = 256  # idle connections kept open for their clients' next requests


class _Connection(cheroot_server.HTTPConnection):
    RequestHandlerClass = _Request


class _Server(wsgi.Server):
    """cheroot with the header gate in front of its worker threads, a body
    limit and no software name in its answers."""

    ConnectionClass = _Connection
    version = "pbe-fs"  # cheroot's default names itself and its version in every Server header
    max_request_body_size = MAX_BODY
    max_request_header_size = _MAX_HEADER
    # cheroot keeps 10 idle kept-alive connections and answers the 11th client
    # with "Connection: close", so 16 busy clients reconnected again and again;
    # an idle connection costs a file descriptor here, not a thread
    keep_alive_conn_limit = KEPT_ALIVE

    def prepare(self) -> None:
        super().prepare()
        self._gate = _HeaderGate(super().process_conn, tls=self.ssl_adapter is not None,
                                 answer_here=self._answer_here if hasattr(self.wsgi_app, "quick") else None)
        if hasattr(socket, "TCP_DEFER_ACCEPT"):
            # accept() once the first bytes are in: the request is then usually whole
            # at the first peek and goes straight to a worker, without a hop through the gate
            self.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_DEFER_ACCEPT, 1)

    def process_conn(self, conn: Any) -> None:
        self._gate.offer(conn)

    def _answer_here(self, conn: Any, head: bytes) -> bool:
        """Answer a request on the selector thread, without a worker, when
        the application says it is quick (a small archived file already in
        its tree's cache) and the answer cannot block: nothing of earlier
        answers still waits in the socket's send queue, so a small one
        fits whole. The hand-over to a worker and back was most of a small
        GET's cost (two thread wake-ups and lock hand-offs under one GIL).
        False: a worker answers, as for any other request."""
        method, _, rest = head.partition(b" ")
        if method not in (b"GET", b"HEAD") or not self.ready or _unsent(conn.socket):
            return False
        try:
            if not self.wsgi_app.quick(rest.partition(b" ")[0], head):
                return False
        except Exception as exc:  # never on this thread: a worker meets it again and answers
            log.warning("deciding where to answer %r: %r", head[:200], exc)
            return False
        keep = False
        try:
            keep = conn.communicate()
        except Exception as exc:  # what cheroot's worker loop does with it: log, drop the connection
            self.error_log(f"answering {conn.remote_addr!s} without a worker: {exc!r}", level=logging.ERROR,
                           traceback=True)
        if keep:
            self.put_conn(conn)
        else:
            conn.close()
        return True

    def stop(self) -> None:
        super().stop()
        gate = getattr(self, "_gate", None)
        if gate is not None:
            gate.stop()


def make_server(app: Any, host: str, port: int, *, certificate: str = "", private_key: str = "",
                reuse_port: bool = False) -> Any:
    """A cheroot server, bound and listening (TLS when given a certificate
    and key); ``serve()`` it from any thread. ``reuse_port``: one of several
    worker processes on the same port (the kernel spreads connections)."""
    # a deep listen backlog: a burst of clients must wait in the kernel, not in SYN retries
    server = _Server((host, port), app, numthreads=16, server_name="pbe-fs", request_queue_size=1024,
                     reuse_port=reuse_port)
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


# -- several processes on one port ---------------------------------------------------------
_READY_SECONDS = 120.0  # how long a worker may take to open the index and listen


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to host:port with SO_REUSEPORT: it
    picks the port when ``port`` is 0 and keeps it while workers start,
    and, never listening, receives no connection itself."""
    family, kind, proto, _, addr = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind(addr)
    except OSError as exc:
        sock.close()
        raise PbeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


class Workers:
    """``pbe-fs serve`` as ``count`` processes listening on one port.

    cheroot runs Python under one GIL: one process uses one core however
    many threads it has. Forked workers, each with its own tree, listen
    with SO_REUSEPORT and the kernel spreads connections among them. That
    is safe here because nothing a request reads lives only in one
    process: every worker follows the index's change counter (a sync's
    commit reaches all of them), the gallery's CSRF tokens and admin marks
    are HMACs with a key the supervisor picks before forking, Digest
    nonces sit in one SQLite file, and a refresh takes the archive's flock
    (one sync, whichever worker is asked).

    This process is the supervisor: it forks before it has any thread or
    open index, restarts a worker that dies, passes SIGTERM/SIGINT on and
    returns once every worker has stopped. Workers die with it
    (PR_SET_PDEATHSIG), so no worker outlives a killed supervisor.
    """

    def __init__(self, count: int, work: Callable[[int, Callable[[], None]], None]) -> None:
        """``work(index, ready)`` runs in each worker: build, listen, call
        ``ready()``, serve until stopped."""
        self.count, self.work = count, work
        self._pids: dict[int, int] = {}  # pid -> worker index
        self._stopping = False

    def run(self, on_ready: Callable[[], None]) -> int:
        """Start every worker, call ``on_ready`` once all listen, supervise."""
        import signal

        previous = {sig: signal.signal(sig, self._stop) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            read_end, write_end = os.pipe()
            try:
                for index in range(self.count):
                    self._spawn(index, write_end)
                os.close(write_end)
                write_end = -1
                self._await_ready(read_end)
            finally:
                os.close(read_end)
                if write_end >= 0:
                    os.close(write_end)
            on_ready()
            return self._supervise()
        except BaseException:
            self._stop(signal.SIGTERM, None)
            self._reap_all()
            raise
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def _spawn(self, index: int, ready_fd: int) -> None:
        supervisor = os.getpid()
        pid = os.fork()
        if pid:
            self._pids[pid] = index
            return
        code = 1
        try:  # the worker: never returns into the supervisor's code
            import signal

            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, signal.SIG_DFL)
            _die_with_parent()
            if os.getppid() != supervisor:
                os._exit(0)

            def ready() -> None:
                if ready_fd >= 0:
                    os.write(ready_fd, b"+")
                    os.close(ready_fd)

            self.work(index, ready)
            code = 0
        except PbeError as exc:
            log.error("worker %d: %s", index, exc)
        except BaseException:
            log.exception("worker %d failed", index)
        finally:
            logging.shutdown()
            os._exit(code)

    def _await_ready(self, read_end: int) -> None:
        got, deadline = 0, time.monotonic() + _READY_SECONDS
        while got < self.count:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([read_end], [], [], left)[0]:
                raise PbeError(f"the WebDAV workers did not start within {_READY_SECONDS:.0f} s")
            data = os.read(read_end, 64)
            if not data:  # every write end closed: a worker died before it listened
                raise PbeError("a WebDAV worker failed to start (see the log above)")
            got += len(data)

    def _stop(self, signum: int, frame: Any) -> None:
        import signal

        if not self._stopping:
            log.info("%s: stopping %d WebDAV workers", signal.Signals(signum).name, len(self._pids))
        self._stopping = True
        for pid in list(self._pids):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass

    def _supervise(self) -> int:
        failed = 0
        while self._pids:
            pid, status = os.wait()
            index = self._pids.pop(pid, None)
            if index is None:
                continue
            code = os.waitstatus_to_exitcode(status)
            if self._stopping:
                failed |= code not in (0, -15)
                continue
            log.error("WebDAV worker %d (pid %d) exited with %s; starting it again", index, pid, code)
            time.sleep(1)  # a worker that dies at once must not spin
            if not self._stopping:
                self._spawn(index, -1)
        return 1 if failed else 0

    def _reap_all(self) -> None:
        for pid in list(self._pids):
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
            self._pids.pop(pid, None)


def _die_with_parent() -> None:
    """SIGTERM this process when its parent dies (Linux prctl)."""
    import ctypes
    import signal

    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
