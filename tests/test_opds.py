"""The OPDS 1.2 catalog at /opds/ of `pbe-fs serve`, over real HTTP, on an
archive synced from the stand-in with more works than one feed page."""

from __future__ import annotations

import base64
import http.client
import json
import re
import sqlite3
import time
import xml.etree.ElementTree as ET
from datetime import datetime
from pathlib import Path
from urllib.parse import quote, urlsplit

import pytest

from tests.conftest import Server, http_request, pbe, write_config
from tests.fakepixiv import FakePixiv, Work

ATOM, OPDS_NS, OS = "{http://www.w3.org/2005/Atom}", "{http://opds-spec.org/2010/catalog}", \
    "{http://a9.com/-/spec/opensearch/1.1/}"
NAVIGATION = "application/atom+xml;profile=opds-catalog;kind=navigation"
ACQUISITION = "application/atom+xml;profile=opds-catalog;kind=acquisition"
ACQUIRE = "http://opds-spec.org/acquisition"
IMAGE_RELS = ("http://opds-spec.org/image", "http://opds-spec.org/image/thumbnail")
BOOK_TYPES = {"application/vnd.comicbook+zip", "application/pdf", "application/zip", "image/gif"}
EXTRA = 70  # with the stand-in's works, more than one page of 50
UGOIRA, R18 = 93012346, 93012351


@pytest.fixture(scope="module")
def catalog(tmp_path_factory):
    """An archive of the stand-in's works plus EXTRA, originals and squares
    only (so an animation's CBZ sits in square_medium/), and its server."""
    folder = tmp_path_factory.mktemp("opds")
    with FakePixiv() as fake:
        for n in range(EXTRA):
            fake.add(Work(93020000 + n, f"extra {n}", (6100 + n % 3, f"extra artist {n % 3}", f"e{n % 3}"),
                          tags=[("extra", "more")]))
        config = write_config(folder, fake, sync={"sizes": ["original", "square_medium"], "concurrency": 8})
        pbe(config, "sync", "--no-progress", check=True)
        server = Server(config)
        try:
            yield config, server
        finally:
            assert server.stop() == 0


class Client:
    """One keep-alive HTTP connection, as a reader holds one."""

    def __init__(self, url: str, auth: str = "") -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=20)
        self.auth = auth

    def get(self, path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
        headers = {"Authorization": self.auth} if self.auth else {}
        self.conn.request(method, path, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def close(self) -> None:
        self.conn.close()


def check_atom(body: bytes) -> ET.Element:
    """RFC 4287 and OPDS 1.2 catalog rules every feed must meet."""
    feed = ET.fromstring(body)
    assert feed.tag == ATOM + "feed"
    for required in ("id", "title", "updated"):
        assert len(feed.findall(ATOM + required)) == 1, required
    datetime.fromisoformat(feed.findtext(ATOM + "updated"))
    entries = feed.findall(ATOM + "entry")
    assert feed.find(ATOM + "author") is not None or all(e.find(ATOM + "author") is not None for e in entries)
    rels = [link.get("rel") for link in feed.findall(ATOM + "link")]
    assert "self" in rels and "start" in rels and rels.count("self") == 1
    for link in feed.iter(ATOM + "link"):
        assert link.get("href") and link.get("type"), link.attrib
    for entry in entries:
        for required in ("id", "title", "updated"):
            assert len(entry.findall(ATOM + required)) == 1, (required, ET.tostring(entry))
        datetime.fromisoformat(entry.findtext(ATOM + "updated"))
        links = entry.findall(ATOM + "link")
        assert entry.find(ATOM + "content") is not None or any(l.get("rel") == "alternate" for l in links)
    ids = [e.findtext(ATOM + "id") for e in entries]
    assert len(ids) == len(set(ids)) or "changes" in feed.findtext(ATOM + "id")
    return feed


def links(element: ET.Element, rel: str) -> list[ET.Element]:
    return [link for link in element.findall(ATOM + "link") if link.get("rel") == rel]


def feed_pages(client: Client, path: str, kind: str) -> list[ET.Element]:
    """A feed and every page after it, following next links."""
    found = []
    seen = set()
    while path:
        assert path not in seen, f"pagination loops at {path}"
        seen.add(path)
        status, headers, body = client.get(path)
        assert status == 200, (path, body[:200])
        assert headers["content-type"] == kind, (path, headers["content-type"])
        feed = check_atom(body)
        assert links(feed, "self")[0].get("type") == kind
        found.append(feed)
        nxt = links(feed, "next")
        assert len(found) == 1 or links(feed, "previous"), path
        path = nxt[0].get("href") if nxt else ""
    return found


def index_works(config: Path, where: str = "1") -> set[int]:
    db = sqlite3.connect(config.parent / "data/.pbe/index.sqlite3")
    return {r[0] for r in db.execute(f"SELECT id FROM artworks WHERE {where}")}


def work_ids(feeds: list[ET.Element]) -> list[int]:
    return [int(e.findtext(ATOM + "id").rsplit(":", 1)[1]) for f in feeds for e in f.findall(ATOM + "entry")]


def test_root_lists_the_views_with_their_kinds(catalog) -> None:
    config, server = catalog
    client = Client(server.url)
    try:
        root = feed_pages(client, "/opds/", NAVIGATION)[0]
        subsections = {e.findtext(ATOM + "content"): links(e, "subsection")[0] for e in root.findall(ATOM + "entry")}
        assert set(subsections) >= {"by-ingress", "by-date", "by-artist", "by-tag", "gone", "nsfw", "by-id"}
        assert subsections["by-ingress"].get("type") == ACQUISITION
        assert subsections["gone"].get("type") == ACQUISITION
        assert subsections["by-artist"].get("type") == NAVIGATION
        assert subsections["by-ingress"].get("href") == "/opds/by-ingress/"
        search = links(root, "search")[0]
        assert search.get("type") == "application/opensearchdescription+xml"
        status, _, home = client.get("/")
        assert status == 200 and b'href="/opds/"' in home  # the browser view's home links the catalog
    finally:
        client.close()


def test_pagination_reaches_every_work_exactly_once(catalog) -> None:
    config, server = catalog
    client = Client(server.url)
    try:
        pages = feed_pages(client, "/opds/by-ingress/", ACQUISITION)
        ids = work_ids(pages)
        assert len(pages) == -(-len(ids) // 50) >= 2 and len(pages[0].findall(ATOM + "entry")) == 50
        # the server's policy is "hidden": NSFW works only in nsfw/ and by-id/
        assert sorted(ids) == sorted(index_works(config, "x_restrict = 0"))
        assert len(ids) == len(set(ids))
        assert int(pages[0].findtext(OS + "totalResults")) == len(ids)
        last = links(pages[0], "last")[0].get("href")
        assert last == links(pages[-1], "self")[0].get("href") == f"/opds/by-ingress/?page={len(pages)}"
        assert links(pages[1], "previous")[0].get("href") == "/opds/by-ingress/"
        db = sqlite3.connect(config.parent / "data/.pbe/index.sqlite3")
        seq = dict(db.execute("SELECT id, seq FROM artworks"))
        assert [seq[i] for i in ids] == sorted((seq[i] for i in ids), reverse=True)  # newest bookmark first
    finally:
        client.close()


def test_every_feed_and_every_link_answers_with_its_type(catalog) -> None:
    """Walk the whole catalog from the root as a reader would; every
    navigation link, image and acquisition link answers 200 with its type."""
    config, server = catalog
    client = Client(server.url)
    try:
        todo, seen_feeds, acquired, hrefs = [("/opds/", NAVIGATION)], set(), set(), set()
        by_kind: dict[str, set[int]] = {}
        while todo:
            path, kind = todo.pop()
            if path in seen_feeds:
                continue
            seen_feeds.add(path)
            for feed in feed_pages(client, path, kind):
                for entry in feed.findall(ATOM + "entry"):
                    for sub in links(entry, "subsection"):
                        todo.append((sub.get("href"), sub.get("type")))
                    acquisitions = links(entry, ACQUIRE)
                    if kind != ACQUISITION:
                        assert not acquisitions
                        continue
                    assert acquisitions, ET.tostring(entry)
                    assert len(links(entry, IMAGE_RELS[0])) == len(links(entry, IMAGE_RELS[1])) == 1
                    aid = int(entry.findtext(ATOM + "id").rsplit(":", 1)[1])
                    for link in acquisitions + links(entry, IMAGE_RELS[0]) + links(entry, IMAGE_RELS[1]):
                        href, ctype = link.get("href"), link.get("type")
                        if (aid, link.get("rel"), ctype) in acquired:  # the same file, in another view
                            continue
                        acquired.add((aid, link.get("rel"), ctype))
                        hrefs.add(href)
                        status, headers, body = client.get(href, "HEAD" if ctype == "application/pdf" else "GET")
                        assert status == 200 and headers["content-type"] == ctype, (href, status, headers)
                        if ctype == "application/vnd.comicbook+zip":
                            assert body[:4] == b"PK\x03\x04" and int(headers["content-length"]) == len(body)
                        by_kind.setdefault(ctype, set()).add(aid)
        assert any(p.startswith("/opds/by-date/") for p in seen_feeds)
        assert any(p.startswith("/opds/by-tag/") for p in seen_feeds)
        assert any(p.startswith("/opds/changes/") for p in seen_feeds)
        every = index_works(config)
        assert by_kind["application/vnd.comicbook+zip"] == every  # every work, in one view or another
        assert by_kind["application/pdf"] == by_kind["application/zip"] == every
        assert any(h.endswith(f"/square_medium/{UGOIRA}.cbz") for h in hrefs)  # its top holds frames only
    finally:
        client.close()


def test_opensearch_is_the_gallery_search(catalog) -> None:
    config, server = catalog
    client = Client(server.url)
    try:
        status, headers, body = client.get("/opds/search.xml")
        assert status == 200 and headers["content-type"] == "application/opensearchdescription+xml"
        desc = ET.fromstring(body)
        assert desc.tag == OS + "OpenSearchDescription"
        assert 0 < len(desc.findtext(OS + "ShortName")) <= 16 and desc.findtext(OS + "Description")
        url = desc.find(OS + "Url")
        assert url.get("type") == ACQUISITION and "{searchTerms}" in url.get("template")
        template = urlsplit(url.get("template"))
        assert f"{template.scheme}://{template.netloc}" == server.url
        query = template.path + "?" + template.query.replace("{searchTerms}", quote("extra 1"))
        found = work_ids(feed_pages(client, query, ACQUISITION))
        status, _, page = client.get("/_pbe/ui/search?q=" + quote("extra 1") + "&ipp=all")
        expected = {int(i) for i in re.findall(rb'href="/by-id/(\d+)/', page)}
        assert {93020001, 93020010} <= set(found) == expected and len(found) == len(expected)
        # NSFW works stay out of search under the server's "hidden" policy, as in the gallery
        assert work_ids(feed_pages(client, "/opds/search?q=r18", ACQUISITION)) == []
        assert R18 in work_ids(feed_pages(client, "/opds/nsfw/", ACQUISITION))
    finally:
        client.close()


def test_refusals(catalog) -> None:
    _, server = catalog
    for path in ("/opds/by-ingress/no%20such%20work/", "/opds/nope/", f"/opds/by-id/{UGOIRA}/"):
        status, headers, _ = http_request(server.url, "GET", path)
        assert status == 404 and headers["content-type"].startswith("text/plain"), path
    status, headers, body = http_request(server.url, "HEAD", "/opds/by-ingress/")
    assert status == 200 and body == b"" and int(headers["content-length"]) > 0
    assert http_request(server.url, "GET", "/opds/by-ingress/?page=x")[0] == 200


def test_same_auth_as_the_server(catalog, tmp_path: Path) -> None:
    config, _ = catalog
    settings = json.loads(config.read_text())
    settings["filesystem_options"]["path"] = str(config.parent / "data")
    settings["webdav"] = {"users": {"reader": "secret-pw"}}
    guarded = tmp_path / "config.json"
    guarded.write_text(json.dumps(settings))
    guarded.chmod(0o600)
    server = Server(guarded)
    try:
        assert http_request(server.url, "GET", "/opds/")[0] == 401
        auth = "Basic " + base64.b64encode(b"reader:secret-pw").decode()
        client = Client(server.url, auth)
        try:
            assert client.get("/opds/")[0] == 200
            assert client.get("/opds/search.xml")[0] == 200
        finally:
            client.close()
    finally:
        assert server.stop() == 0


def test_a_deleted_work_leaves_the_feeds(catalog) -> None:
    config, server = catalog
    victim = 93020005
    client = Client(server.url)
    try:
        assert victim in work_ids(feed_pages(client, "/opds/by-ingress/", ACQUISITION))
        pbe(config, "delete", str(victim), check=True)
        deadline = time.monotonic() + 10
        while victim in work_ids(feed_pages(client, "/opds/by-ingress/", ACQUISITION)):
            assert time.monotonic() < deadline, "the feed never noticed the deletion"
            time.sleep(0.2)
    finally:
        client.close()


def test_a_real_opds_reader_browses_and_downloads_a_cbz(catalog, tmp_path: Path) -> None:
    """shelfline (an OPDS client from PyPI) with its own catalog client,
    Atom parser and downloader: root, by artist, one artist, a work's CBZ."""
    import asyncio
    import zipfile

    from shelfline.config import AppConfig, CatalogConfig
    from shelfline.services import CatalogWorkflow

    _, server = catalog

    async def browse() -> tuple[Path, str]:
        workflow = CatalogWorkflow(AppConfig(library_path=tmp_path / "books"), tmp_path / "shelfline.db")
        try:
            pbe_fs = CatalogConfig("pbe-fs", server.url + "/opds/")
            root = await workflow.fetch_catalog(pbe_fs)
            artists = await workflow.fetch_catalog(pbe_fs, next(e for e in root.entries
                                                                 if e.title == "by artist").navigation_url)
            works = await workflow.fetch_catalog(pbe_fs, next(e for e in artists.entries
                                                              if e.title.endswith("[5003]")).navigation_url)
            manga = next(e for e in works.entries if e.identifier == "urn:pixiv:artwork:93012350")
            assert manga.authors == ["AC/DC"] and manga.cover_image_url and manga.thumbnail_url
            return await workflow.download_acquisition(pbe_fs, manga), manga.acquisition_links[0].href
        finally:
            await workflow.aclose()

    book, href = asyncio.run(browse())
    assert book.suffix == ".cbz" and book.read_bytes() == http_request(server.url, "GET", urlsplit(href).path)[2]
    with zipfile.ZipFile(book) as zf:
        assert zf.namelist()[0] == "ComicInfo.xml" and len(zf.namelist()) == 13
