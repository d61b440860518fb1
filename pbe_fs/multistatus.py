"""WebDAV multistatus bodies for PROPFIND of live properties, built directly.

Kept apart from the provider so the XML shape is in one small place:
which properties a request wants, and the 207 body for a list of members.
"""

from __future__ import annotations

import io
import mimetypes
import posixpath
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable
from typing import Any
from xml.sax.saxutils import escape

from .artwork import Node

LIVE = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "getlastmodified", "getetag",
        "displayname")
BAD = object()  # a body that is not a PROPFIND request
PROPNAME = object()  # a propname request: which properties exist, no values

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
          ".webp": "image/webp", ".zip": "application/zip", ".pdf": "application/pdf",
          ".json": "application/json", ".url": "application/internet-shortcut", ".cbz": "application/vnd.comicbook+zip"}


def content_type(name: str) -> str:
    ext = posixpath.splitext(name)[1].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_PERCENT = {b: chr(b) if b in _UNRESERVED else f"%{b:02X}" for b in range(256)}


def quote_segment(name: str) -> str:
    """``urllib.parse.quote(name, safe="")``, six times faster: the UTF-8
    bytes seen as Latin-1 and mapped in one ``str.translate``. A Depth-1
    PROPFIND of 20,000 works spent 140 ms in ``quote`` alone."""
    return name.encode("utf-8", "surrogateescape").decode("latin-1").translate(_PERCENT)


def href(parts: tuple[str, ...], is_dir: bool) -> str:
    """The absolute path of a tree node as it travels over HTTP: every
    segment percent-encoded (RFC 3986; ``#``, ``%``, ``?`` and non-ASCII
    included), ``/`` between them, a trailing ``/`` on collections. The one
    spelling used in ``<D:href>``, ``Location`` and the HTML links."""
    if not parts:
        return "/"
    path = "/" + "/".join(map(quote_segment, parts))
    return path + "/" if is_dir else path


def requested(environ: dict[str, Any]) -> Any:
    """The properties asked for: all live ones (allprop or no body), a list
    (prop: DAV: names bare, others in Clark notation), PROPNAME, or BAD."""
    try:
        length = int(environ.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return BAD
    body = environ["wsgi.input"].read(length) if length > 0 else b""
    environ["wsgi.input"] = io.BytesIO(body)  # for wsgidav, should it answer after all
    if not body.strip():
        return LIVE
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return BAD
    if root.tag != "{DAV:}propfind":
        return BAD
    if root.find("{DAV:}allprop") is not None:
        return LIVE
    if root.find("{DAV:}propname") is not None:
        return PROPNAME
    prop = root.find("{DAV:}prop")
    if prop is None:
        return BAD
    return tuple(child.tag[6:] if child.tag.startswith("{DAV:}") else child.tag for child in prop)


def _empty(name: str) -> str:
    """An empty property element: ``<D:name/>`` or one in its own namespace."""
    if name.startswith("{"):
        ns, local = name[1:].split("}", 1)
        return f'<{local} xmlns="{escape(ns, {chr(34): "&quot;"})}"/>'
    return f"<D:{name}/>"


_DIR_PROPS = ("resourcetype", "creationdate", "getlastmodified", "displayname")


def _props(name: str, node: Node, etag: str) -> dict[str, str]:
    """Every live property of a member, as XML, in one pass."""
    gm = time.gmtime(node.mtime)
    props = {
        "resourcetype": "<D:resourcetype><D:collection/></D:resourcetype>" if node.is_dir else "<D:resourcetype/>",
        "creationdate": time.strftime("<D:creationdate>%Y-%m-%dT%H:%M:%SZ</D:creationdate>", gm),
        "getlastmodified": time.strftime("<D:getlastmodified>%a, %d %b %Y %H:%M:%S GMT</D:getlastmodified>", gm),
        "displayname": f"<D:displayname>{escape(name)}</D:displayname>",
    }
    if not node.is_dir:
        props["getcontentlength"] = f"<D:getcontentlength>{node.size}</D:getcontentlength>"
        props["getcontenttype"] = f"<D:getcontenttype>{content_type(name)}</D:getcontenttype>"
        props["getetag"] = f'<D:getetag>"{etag}"</D:getetag>'
    return props


PIECE = 1 << 20  # a body is encoded in pieces of about this many characters


def render(members: Iterable[tuple[str, str, tuple[str, ...], Node]], wanted: Any,
           etag: Callable[[tuple[str, ...], Node], str]) -> list[bytes]:
    """The 207 body, in pieces of about a MiB: (href, name, tree path,
    node) per member; ``href`` already encoded (see ``href()``).

    In pieces because a folder of 50,000 works answers 25 MB: built as one
    string, then encoded, it peaked at three times that in every worker
    thread that answered one, and the memory stayed with the process."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    pieces: list[bytes] = []
    size = 0
    for href, name, parts, node in members:
        if wanted is PROPNAME:
            found = "".join(_empty(n) for n in LIVE if not node.is_dir or n in _DIR_PROPS)
        else:
            props = _props(name, node, etag(parts, node) if not node.is_dir and "getetag" in wanted else "")
            found = "".join(props[w] for w in wanted if w in props)
        response = (f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop>{found}</D:prop>"
                    "<D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
        if wanted is not LIVE and wanted is not PROPNAME:
            missing = "".join(_empty(w) for w in wanted if w not in props)
            if missing:
                response += (f"<D:propstat><D:prop>{missing}</D:prop>"
                             "<D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
        out.append(response + "</D:response>")
        size += len(response)
        if size >= PIECE:
            pieces.append("".join(out).encode("utf-8"))
            out.clear()
            size = 0
    out.append("</D:multistatus>\n")
    pieces.append("".join(out).encode("utf-8"))
    return pieces
