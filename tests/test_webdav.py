"""The tree over WebDAV, served by `pbe-fs serve` on loopback."""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import subprocess
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.conftest import GONE, Server, http_request, pbe, write_config






def request(server: Server, method: str, path: str, headers: dict[str, str] | None = None,
            body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
    return http_request(server.url, method, path, headers, body)


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
    assert "93012350.zip" in names and "meta.json" in names and "large" in names and len(names) == 21  # with ID.cbz and folder.jpg
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
    # a 304 says what the 200 said about caching (RFC 9110 15.4.5), for a file that may change too
    for name in ("93012350_p3.jpg", "meta.json"):
        path = f"/by-id/93012350/{name}"
        _, full, _ = request(server, "GET", path)
        later = "Fri, 01 Jan 2100 00:00:00 GMT"
        for conditional in ({"If-None-Match": full["etag"]}, {"If-None-Match": f'"x", W/{full["etag"]}'},
                            {"If-Modified-Since": later}, {"If-None-Match": "*"}):
            status, h, body = request(server, "GET", path, conditional)
            assert (status, body) == (304, b"") and h["etag"] == full["etag"], conditional
            assert h["cache-control"] == full["cache-control"] and h["last-modified"] == full["last-modified"]
        # If-None-Match decides when present: If-Modified-Since is then ignored
        status, _, body = request(server, "GET", path, {"If-None-Match": '"other"', "If-Modified-Since": later})
        assert status == 200 and len(body) == int(full["content-length"])
        for since in ("Mon, 01 Jan 1990 00:00:00 GMT", "not a date"):
            assert request(server, "GET", path, {"If-Modified-Since": since})[0] == 200
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
    for _ in range(1000):
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
    # a whole view, generated files included, byte for byte what GET serves
    subprocess.run(["rclone", "copy", "pbe:nsfw", str(tmp_path / "nsfw")], env=env, check=True, timeout=180,
                   capture_output=True)
    copied = sorted(p for p in (tmp_path / "nsfw").rglob("*") if p.is_file())
    assert len(copied) > 20
    for path in copied:
        rel = "/nsfw/" + "/".join(quote(part) for part in path.relative_to(tmp_path / "nsfw").parts)
        assert request(server, "GET", rel)[2] == path.read_bytes(), rel


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver not installed")
def test_cadaver(server: Server, tmp_path: Path) -> None:
    script = "ls by-id/93012350\nget by-id/93012350/pixiv.url {}\nquit\n".format(tmp_path / "pixiv.url")
    proc = subprocess.run(["cadaver", server.url + "/"], input=script, capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert "93012350_p0.jpg" in proc.stdout  # cadaver exits 0 even when commands fail
    assert (tmp_path / "pixiv.url").read_bytes().startswith(b"[InternetShortcut]")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(url: str, tmp_path: Path) -> str:
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium'}",
           "--dump-dom", url]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90, check=True).stdout


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")
def test_browser_view_in_chromium(server: Server, tmp_path: Path) -> None:
    works = len(propfind(server, "/by-ingress/")) - 1
    dom = dump_dom(server.url + "/by-ingress/?image=square_medium", tmp_path)
    assert dom.count('<li><a href="/by-ingress/') == works and f"{works} works" in dom
    assert "square_medium/" in dom and 'loading="lazy"' in dom
    # hostile titles are text, never markup
    assert 'a/b\\c:d*e?f"g&lt;h&gt;i|j' in dom and "<h>" not in dom
    art = dump_dom(server.url + "/by-id/93012350/?image=large", tmp_path)
    assert "<h1>manga</h1>" in art
    assert 'href="/by-artist/AC%EF%BC%8FDC%20%5B5003%5D/"' in art
    for link in ("93012350.zip", "93012350.pdf", "meta.json", "https://www.pixiv.net/artworks/93012350"):
        assert link in art
    assert art.count('<img src="/by-id/93012350/large/') == 12
    gone = dump_dom(server.url + f"/by-id/{GONE}/", tmp_path)
    assert "Gone from pixiv" in gone and "#風景" in gone
    status, headers, body = request(server, "GET", "/by-id/93012350/", {"Accept": "text/html"})
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in headers["content-security-policy"]


@contextmanager
def serving(synced, tmp_path: Path, **overrides: Any) -> Iterator[Server]:
    """A second server over the module's archive, with other settings."""
    config, _ = synced
    s = Server(write_config(tmp_path, None, filesystem_options={"path": str(config.parent / "data")}, **overrides))
    try:
        yield s
    finally:
        s.stop()


def test_browser_pagination(synced, tmp_path: Path) -> None:
    with serving(synced, tmp_path, display={"home": {"ipp": "10"}}) as s:
        works = len(propfind(s, "/by-ingress/")) - 1
        pages = -(-works // 10)
        _, _, page1 = request(s, "GET", "/by-ingress/")
        _, _, last = request(s, "GET", f"/by-ingress/?page={pages}")
        _, _, nonsense = request(s, "GET", "/by-ingress/?page=abc")
        assert page1.count(b"<li>") == 10 and f"page 1 of {pages}".encode() in page1 and b'href="?page=2"' in page1
        assert last.count(b"<li>") == works - 10 * (pages - 1) and f"page {pages} of {pages}".encode() in last
        assert f"page 1 of {pages}".encode() in nonsense


def test_digest_auth_and_read_users(synced, tmp_path: Path) -> None:
    import requests
    from requests.auth import HTTPBasicAuth, HTTPDigestAuth

    with serving(synced, tmp_path, webdav={"users": {"alice": "pw"}}) as s:
        assert requests.get(s.url + "/status.json", timeout=10).status_code == 401
        assert requests.get(s.url + "/status.json", auth=HTTPBasicAuth("alice", "nope"), timeout=10).status_code == 401
        assert requests.get(s.url + "/status.json", auth=HTTPBasicAuth("alice", "pw"), timeout=10).status_code == 200
        assert requests.get(s.url + "/status.json", auth=HTTPDigestAuth("alice", "pw"), timeout=10).status_code == 200
        # deleting still needs the token, by Digest too
        assert requests.delete(s.url + "/by-id/93012360", auth=HTTPDigestAuth("alice", "pw"), timeout=10).status_code == 401
        assert requests.delete(s.url + "/by-id/93012360", auth=HTTPDigestAuth("me", "seed-ro-token"),
                               timeout=10).status_code == 204
        assert "pw" not in s.stderr() and "seed-ro-token" not in s.stderr()


def test_status_and_refresh_pick_up_new_works(server: Server, synced) -> None:
    import time

    config, fake = synced
    status, _, body = request(server, "GET", "/_pbe/status")
    assert status == 200 and json.loads(body)["artworks"] >= 40
    assert request(server, "POST", "/_pbe/refresh")[0] == 401
    from tests.fakepixiv import Work

    fake.add(Work(96000001, "served fresh", (9, "z", "z")))
    token = {"Authorization": "Basic " + base64.b64encode(b"me:seed-ro-token").decode()}
    status, _, body = request(server, "POST", "/_pbe/refresh", token)
    assert status == 202 and body.startswith(b"started sync")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if request(server, "PROPFIND", "/by-id/96000001", {"Depth": "0"})[0] == 207:
            break
        time.sleep(0.3)
    listing = propfind(server, "/by-id/96000001/")
    assert "/by-id/96000001/96000001_p0.jpg" in listing
    assert request(server, "GET", "/_pbe/nope")[0] == 404


def test_tls(synced, tmp_path: Path) -> None:
    import ssl

    if shutil.which("openssl") is None:
        pytest.skip("openssl not installed")
    config, _ = synced
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-keyout", str(tmp_path / "key.pem"), "-out", str(tmp_path / "cert.pem")], check=True,
                   capture_output=True)
    with serving(synced, tmp_path, webdav={"ssl_certificate": "cert.pem", "ssl_private_key": "key.pem"}) as s:
        assert s.url.startswith("https://")
        context = ssl.create_default_context(cafile=str(tmp_path / "cert.pem"))
        context.check_hostname = False
        with urllib.request.urlopen(s.url + "/status.json", context=context, timeout=10) as resp:
            assert resp.status == 200 and json.loads(resp.read())["artworks"] >= 40
    half = write_config(tmp_path, None, filesystem_options={"path": str(config.parent / "data")},
                        webdav={"ssl_certificate": "cert.pem"})
    proc = pbe(half, "serve", "--port", "0")
    assert proc.returncode == 2 and "go together" in proc.stderr


@pytest.mark.skipif(shutil.which("mount.davfs") is None or os.geteuid() != 0, reason="needs davfs2 and root")
def test_davfs2(server: Server, synced, tmp_path: Path) -> None:
    config, _ = synced
    import tempfile

    # davfs2 drops to its own user: its cache must be outside pytest's private tmp
    cache = Path(tempfile.mkdtemp(prefix="pbe-davfs2-"))
    cache.chmod(0o777)
    conf = tmp_path / "davfs2.conf"
    conf.write_text(f"ask_auth 0\nuse_locks 0\nbuf_size 64\ncache_dir {cache}\n")
    mnt = tmp_path / "dav"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "davfs", server.url + "/", str(mnt), "-o", f"ro,conf={conf}"],
                          input="\n\n", capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    try:
        assert "by-ingress" in os.listdir(mnt)
        folder = mnt / "by-id" / "93012350"
        archive = config.parent / "data/artworks/93012350"
        assert (folder / "93012350_p1.jpg").read_bytes() == (archive / "93012350_p1.jpg").read_bytes()
        shutil.copytree(folder / "large", tmp_path / "copy")
        assert (tmp_path / "copy/93012350_p5_master1200.jpg").read_bytes() == \
            (archive / "large/93012350_p5_master1200.jpg").read_bytes()
        assert zipfile_ok(folder / "93012350.zip")
    finally:
        subprocess.run(["umount", str(mnt)], check=False, timeout=60)
        shutil.rmtree(cache, ignore_errors=True)


def zipfile_ok(path: Path) -> bool:
    import zipfile

    with zipfile.ZipFile(path) as zf:
        return zf.testzip() is None and len(zf.namelist()) == 12
