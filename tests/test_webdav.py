"""The tree over WebDAV, served by `pbe-fs serve` on loopback."""

from __future__ import annotations

import base64
import http.client
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import Server, pbe, write_config
from tests.fakepixiv import FakePixiv

GONE = 93012345


@pytest.fixture(scope="module")
def synced(tmp_path_factory):
    folder = tmp_path_factory.mktemp("archive")
    with FakePixiv() as fake:
        config = write_config(folder, fake)
        pbe(config, "sync", "--no-progress", check=True)
        fake.works[GONE].state = "deleted"
        pbe(config, "sync", "--full", "--no-progress", check=True)
        yield config, fake


@pytest.fixture(scope="module")
def server(synced):
    config, _ = synced
    s = Server(config)
    yield s
    assert s.stop() == 0


def request(server: Server, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    host, port = server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def propfind(server: Server, path: str, depth: str = "1") -> dict[str, dict[str, str]]:
    status, _, body = request(server, "PROPFIND", quote(path), {"Depth": depth})
    assert status == 207, body
    out = {}
    for response in ET.fromstring(body).iter("{DAV:}response"):
        href = response.findtext("{DAV:}href")
        props = {el.tag.split("}")[1]: (el.text or ("collection" if el.find("{DAV:}collection") is not None else ""))
                 for el in response.iter() if el.tag.startswith("{DAV:}") and el.tag not in
                 ("{DAV:}response", "{DAV:}href", "{DAV:}propstat", "{DAV:}prop", "{DAV:}status")}
        out[urllib.parse.unquote(href)] = props
    return out


def test_options_and_dav_class(server: Server) -> None:
    status, headers, _ = request(server, "OPTIONS", "/")
    assert status == 200 and headers["dav"] == "1" and headers["ms-author-via"] == "DAV"
    assert headers["allow"] == "OPTIONS, HEAD, GET, PROPFIND"
    _, headers, _ = request(server, "OPTIONS", "/by-id/93012350")
    assert headers["allow"] == "OPTIONS, HEAD, GET, PROPFIND, DELETE"
    _, headers, _ = request(server, "OPTIONS", f"/by-id/{GONE}")
    assert "DELETE" not in headers["allow"]


def test_propfind_matches_the_tree(server: Server, synced) -> None:
    config, _ = synced
    listing = propfind(server, "/by-id/93012350/")
    names = sorted(k.rstrip("/").rsplit("/", 1)[1] for k in listing if k.rstrip("/") != "/by-id/93012350")
    assert "93012350.zip" in names and "meta.json" in names and "large" in names and len(names) == 19
    jpg = listing["/by-id/93012350/93012350_p0.jpg"]
    archived = config.parent / "data/artworks/93012350/93012350_p0.jpg"
    assert int(jpg["getcontentlength"]) == archived.stat().st_size
    assert jpg["getcontenttype"] == "image/jpeg" and jpg["getetag"] and "2020" in jpg["getlastmodified"]
    assert listing["/by-id/93012350/large/"]["resourcetype"] == "collection"
    zip_size = int(listing["/by-id/93012350/93012350.zip"]["getcontentlength"])
    _, _, body = request(server, "GET", "/by-id/93012350/93012350.zip")
    assert len(body) == zip_size
    ingress = propfind(server, "/by-ingress/")
    assert len(ingress) == 1 + len([n for n in os.listdir(config.parent / "data/artworks")]) - 3  # NSFW hidden


def test_depth_infinity_refused(server: Server) -> None:
    status, _, body = request(server, "PROPFIND", "/", {"Depth": "infinity"})
    assert status == 403 and b"propfind-finite-depth" in body
    status, _, _ = request(server, "PROPFIND", "/by-id/")
    assert status == 403


def test_get_range_etag_304(server: Server, synced) -> None:
    config, _ = synced
    archived = (config.parent / "data/artworks/93012350/93012350_p3.jpg").read_bytes()
    status, headers, body = request(server, "GET", "/by-id/93012350/93012350_p3.jpg")
    assert status == 200 and body == archived and headers["content-type"] == "image/jpeg"
    status, headers2, body = request(server, "GET", "/by-id/93012350/93012350_p3.jpg", {"Range": "bytes=10-19"})
    assert status == 206 and body == archived[10:20] and headers2["content-range"] == f"bytes 10-19/{len(archived)}"
    status, _, _ = request(server, "GET", "/by-id/93012350/93012350_p3.jpg", {"If-None-Match": headers["etag"]})
    assert status == 304
    for name in ("93012350.zip", "93012350.pdf", "meta.json"):
        status, h, whole = request(server, "GET", f"/by-id/93012350/{name}")
        status, _, part = request(server, "GET", f"/by-id/93012350/{name}", {"Range": "bytes=100-"})
        assert status == 206 and part == whole[100:]
        _, again, _ = request(server, "HEAD", f"/by-id/93012350/{name}")
        assert again["etag"] == h["etag"] and int(again["content-length"]) == len(whole)
    # urllib, as a script would
    with urllib.request.urlopen(urllib.request.Request(server.url + "/by-id/93012350/93012350_p3.jpg",
                                                       headers={"Range": "bytes=0-3"})) as resp:
        assert resp.status == 206 and resp.read() == archived[:4]


def test_writes_refused(server: Server, synced) -> None:
    config, _ = synced
    before = sorted(os.listdir(config.parent / "data/artworks"))
    for method, path in (("PUT", "/by-id/new.txt"), ("MKCOL", "/by-id/new"), ("PROPPATCH", "/by-id/93012350"),
                         ("MOVE", "/by-id/93012350"), ("COPY", "/by-id/93012350"), ("LOCK", "/by-id/93012350"),
                         ("PUT", "/by-id/93012350/meta.json")):
        status, _, _ = request(server, method, path, {"Destination": server.url + "/by-id/x"}, body=b"data")
        assert status in (403, 405), (method, path, status)
    assert sorted(os.listdir(config.parent / "data/artworks")) == before


def test_delete_needs_the_token(server: Server, synced) -> None:
    config, _ = synced
    artworks = config.parent / "data/artworks"
    status, headers, _ = request(server, "DELETE", "/by-id/93012361")
    assert status == 401 and headers["www-authenticate"].startswith(("Digest", "Basic"))
    bad = base64.b64encode(b"me:wrong").decode()
    assert request(server, "DELETE", "/by-id/93012361", {"Authorization": f"Basic {bad}"})[0] == 401
    good = {"Authorization": "Basic " + base64.b64encode(b"me:seed-ro-token").decode()}
    assert request(server, "DELETE", "/by-id/93012361/meta.json", good)[0] == 403
    assert request(server, "DELETE", "/by-ingress", good)[0] == 403
    assert request(server, "DELETE", f"/by-id/{GONE}", good)[0] == 403
    assert (artworks / str(GONE)).is_dir()
    assert request(server, "DELETE", "/by-id/93012361", good)[0] == 204
    assert not (artworks / "93012361").exists()
    assert request(server, "PROPFIND", "/by-id/93012361", {"Depth": "0"})[0] == 404


def test_hostile_requests(server: Server) -> None:
    for path in ("/by-id/%2e%2e/%2e%2e/etc/passwd", "/../etc/passwd", "/by-id/a%00b", "/" + "x" * 5000,
                 "/by-id/%ff%fe", "/.DS_Store", "/by-id/._93012350", "/by-id/99999999"):
        status, _, body = request(server, "GET", path)
        assert 400 <= status < 500 and b"root:" not in body, (path, status)
    status, _, _ = request(server, "PROPFIND", "/by-id/", {"Depth": "1", "Content-Type": "application/xml"},
                           body=b"<not-xml")
    assert 400 <= status < 500
    status, _, _ = request(server, "GET", "/by-id/93012350/93012350_p0.jpg", {"Range": "bytes=999999999-"})
    assert status == 416
    status, _, _ = request(server, "GET", "/by-id/93012350/93012350_p0.jpg", {"Range": "bytes=abc"})
    assert status in (200, 206, 400, 416)
    # a burst of connections opened and dropped
    host, port = server.url.removeprefix("http://").split(":")
    socks = []
    for _ in range(300):
        s = socket.create_connection((host, int(port)), timeout=5)
        socks.append(s)
    for s in socks:
        s.close()
    assert request(server, "GET", "/status.json")[0] == 200
    assert "Traceback" not in server.stderr()


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")
def test_rclone_copy_and_lsjson(server: Server, synced, tmp_path: Path) -> None:
    config, _ = synced
    env = {**os.environ, "RCLONE_CONFIG_PBE_TYPE": "webdav", "RCLONE_CONFIG_PBE_URL": server.url,
           "RCLONE_CONFIG_PBE_VENDOR": "other"}
    out = subprocess.run(["rclone", "lsjson", "pbe:by-id/93012350"], env=env, capture_output=True, text=True,
                         check=True, timeout=60).stdout
    entries = {e["Name"]: e for e in json.loads(out)}
    assert entries["93012350_p0.jpg"]["Size"] == (config.parent / "data/artworks/93012350/93012350_p0.jpg").stat().st_size
    subprocess.run(["rclone", "copy", "pbe:by-id/93012350", str(tmp_path / "copy")], env=env, check=True, timeout=120,
                   capture_output=True)
    archive = config.parent / "data/artworks/93012350"
    for n in range(12):
        assert (tmp_path / "copy" / f"93012350_p{n}.jpg").read_bytes() == (archive / f"93012350_p{n}.jpg").read_bytes()
        assert (tmp_path / "copy/large" / f"93012350_p{n}_master1200.jpg").read_bytes() == \
            (archive / "large" / f"93012350_p{n}_master1200.jpg").read_bytes()


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver not installed")
def test_cadaver(server: Server, tmp_path: Path) -> None:
    script = "ls by-id/93012350\nget by-id/93012350/pixiv.url {}\nquit\n".format(tmp_path / "pixiv.url")
    proc = subprocess.run(["cadaver", server.url + "/"], input=script, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert "93012350_p0.jpg" in proc.stdout  # cadaver exits 0 even when commands fail
    assert (tmp_path / "pixiv.url").read_bytes().startswith(b"[InternetShortcut]")
