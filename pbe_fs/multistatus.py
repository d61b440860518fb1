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
from collections.abc import Callable
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from .artwork import Node

LIVE = ("resourcetype", "creationdate", "getcontentlength", "getcontenttype", "getlastmodified", "getetag",
        "displayname")
BAD = object()  # a body that is not a PROPFIND request

_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".gif": "image/gif",
          ".webp": "image/webp", ".zip": "application/zip", ".pdf": "application/pdf",
          ".json": "application/json", ".url": "application/internet-shortcut"}


def content_type(name: str) -> str:
    ext = posixpath.splitext(name)[1].lower()
    return _TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def quote_name(name: str) -> str:
    return quote(name, safe="")


def requested(environ: dict[str, Any]) -> Any:
    """The DAV: properties asked for: all live ones (allprop or no body), a
    list (prop), None when wsgidav should answer (propname, other
    namespaces), or BAD."""
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
    prop = root.find("{DAV:}prop")
    if prop is None:
        return None  # propname
    names = []
    for child in prop:
        if not child.tag.startswith("{DAV:}"):
            return None
        names.append(child.tag[6:])
    return tuple(names)


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


def render(members: list[tuple[str, str, tuple[str, ...], Node]], wanted: tuple[str, ...],
           etag: Callable[[tuple[str, ...], Node], str]) -> bytes:
    """The 207 body: (href, name, tree path, node) per member."""
    out = ['<?xml version="1.0" encoding="utf-8"?>\n<D:multistatus xmlns:D="DAV:">']
    for href, name, parts, node in members:
        props = _props(name, node, etag(parts, node) if not node.is_dir and "getetag" in wanted else "")
        found = "".join(props[w] for w in wanted if w in props)
        out.append(f"<D:response><D:href>{escape(href)}</D:href><D:propstat><D:prop>{found}</D:prop>"
                   "<D:status>HTTP/1.1 200 OK</D:status></D:propstat>")
        if wanted is not LIVE:
            missing = "".join(f"<D:{w}/>" for w in wanted if w not in props)
            if missing:
                out.append(f"<D:propstat><D:prop>{missing}</D:prop><D:status>HTTP/1.1 404 Not Found</D:status></D:propstat>")
        out.append("</D:response>")
    out.append("</D:multistatus>\n")
    return "".join(out).encode("utf-8")
