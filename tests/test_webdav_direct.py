"""The direct GET/HEAD path for files answers exactly as wsgidav does.

A request with an ``If-None-Match`` that matches nothing still gets the
whole file, but goes through wsgidav (any conditional header does): so the
same request with and without it compares the two paths, headers in order
and bytes, on every kind of file the tree serves.
"""

from __future__ import annotations

import base64
import http.client
import json
import xml.etree.ElementTree as ET
from urllib.parse import unquote, urlsplit

import pytest

from tests.conftest import FakePixiv, Server, http_request, pbe, write_config

NO_MATCH = {"If-None-Match": '"no-such-etag"'}  # changes nothing but the path taken


def answer(url: str, method: str, path: str, headers: dict[str, str],
           conn: "http.client.HTTPConnection | None" = None) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers but Date in order, body; on ``conn`` if given (one
    connection stays with one worker)."""
    own = conn is None
    if own:
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.request(method, path, headers=headers)
        resp = conn.getresponse()
        return resp.status, [(k, v) for k, v in resp.getheaders() if k.lower() != "date"], resp.read()
    finally:
        if own:
            conn.close()


def members(server: Server, folder: str) -> list[str]:
    status, _, body = http_request(server.url, "PROPFIND", folder, {"Depth": "1"})
    assert status == 207
    return [h.text for h in ET.fromstring(body).iter("{DAV:}href")][1:]


def files(server: Server, folder: str, depth: int = 2) -> list[str]:
    """Files in folder and, ``depth`` levels down, in its subfolders (a few each)."""
    found = []
    for href in members(server, folder):
        if not href.endswith("/"):
            found.append(href)
        elif depth > 1:
            found += files(server, href, depth - 1)[:6]
    return found


def sample(server: Server) -> list[str]:
    """Originals, generated zip/pdf/cbz, metadata, hostile names, status.json."""
    paths = ["/status.json"]
    for work in ("93012345", "93012346", "93012350", "93012353"):  # still, ugoira, manga, hostile title
        paths += files(server, f"/by-id/{work}/")
    for view in members(server, "/")[:4]:
        if view.endswith("/"):
            paths += files(server, view, 3)[:4]
    return sorted(set(paths))


@pytest.mark.parametrize("extra", [{}, {"Range": "bytes=0-9"}, {"Range": "bytes=-7"}, {"Range": "bytes=5-"},
                                   {"Range": "bytes=0-1,4-5"}, {"Range": "bytes=9-2"}])
def test_direct_answers_equal_wsgidav_answers(server: Server, extra: dict[str, str]) -> None:
    paths = sample(server)
    assert len(paths) > 10 and any("%" in p for p in paths)
    parts = urlsplit(server.url)
    for path in paths:
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        try:
            for method in ("GET", "HEAD"):
                direct = answer(server.url, method, path, extra, conn)
                through = answer(server.url, method, path, {**extra, **NO_MATCH}, conn)
                assert direct == through, (method, unquote(path), extra)
                assert direct[0] in (200, 206)
        finally:
            conn.close()


def test_refusals_still_come_from_wsgidav(server: Server) -> None:
    path = files(server, "/by-id/93012345/")[0]
    status, headers, _ = http_request(server.url, "GET", path)
    etag = headers["etag"]
    assert http_request(server.url, "GET", path, {"If-None-Match": etag})[0] == 304
    assert http_request(server.url, "GET", path, {"If-Match": '"other"'})[0] == 412
    assert http_request(server.url, "GET", path, {"Range": "bytes=99999999-"})[0] == 416
    assert http_request(server.url, "GET", path + "x")[0] == 404


def test_logins_on_the_direct_path(tmp_path) -> None:
    """With webdav.users, a right Basic login reads; no login or a wrong one
    gets wsgidav's 401 and not a byte of the file."""
    with FakePixiv() as fake:
        config = write_config(tmp_path, fake, webdav={"users": {"ann": "pw:1"}})
        pbe(config, "sync", "--no-progress", check=True)
        server = Server(config)
        try:
            path = files_with_login(server)
            good = {"Authorization": "Basic " + base64.b64encode(b"ann:pw:1").decode()}
            bad = {"Authorization": "Basic " + base64.b64encode(b"ann:pw").decode()}
            ok = answer(server.url, "GET", path, good)
            assert ok[0] == 200 and ok == answer(server.url, "GET", path, {**good, **NO_MATCH})
            for headers, scheme in (({}, "Digest"), (bad, "Basic")):  # wsgidav's own challenges
                status, got, body = answer(server.url, "GET", path, headers)
                assert status == 401 and dict(got)["WWW-Authenticate"].startswith(scheme) and b"\xff\xd8" not in body
        finally:
            assert server.stop() == 0


def files_with_login(server: Server) -> str:
    good = {"Authorization": "Basic " + base64.b64encode(b"ann:pw:1").decode()}
    status, _, body = http_request(server.url, "GET", "/_pbe/status", good)
    assert status == 200 and json.loads(body)
    status, _, body = http_request(server.url, "PROPFIND", "/by-id/", {"Depth": "1", **good})
    first = [h.text for h in ET.fromstring(body).iter("{DAV:}href")][1]
    status, _, body = http_request(server.url, "PROPFIND", first, {"Depth": "1", **good})
    return next(h.text for h in ET.fromstring(body).iter("{DAV:}href") if not h.text.endswith("/"))
