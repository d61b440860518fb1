"""The gallery in real headless Chromium against `pbe-fs serve`, over an
archive synced from the stand-in pixiv (hostile titles, NSFW, a gone work,
ugoira, a 12-page manga). Each test drives a browser session the way a
visitor of the old gallery would: clicks, forms, cookies."""

from __future__ import annotations

import io
import sqlite3
import time
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator
from urllib.parse import unquote, urlsplit

import pytest
import requests

from tests.chromium import CHROMIUM, Browser
from tests.conftest import GONE, Server, write_config

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed")

NSFW = {93012351, 93012352, 93012363}
MANGA, UGOIRA = 93012350, 93012346



@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Browser]:
    with Browser(tmp_path / "profile") as b:
        yield b


@contextmanager
def serving(synced, tmp_path: Path, *args: str, **overrides: Any) -> Iterator[Server]:
    """Another server over the module's archive, with other settings (its
    refresh button syncs from the module's stand-in pixiv, never the internet)."""
    config, fake = synced
    folder = tmp_path / f"server{len(list(tmp_path.glob('server*')))}"
    folder.mkdir()
    s = Server(write_config(folder, fake, filesystem_options={"path": str(config.parent / "data")},
                            cache={"path": str(folder / "cache")}, **overrides), *args)
    try:
        yield s
    finally:
        s.stop()


def index_rows(synced, sql: str) -> list[tuple[Any, ...]]:
    config, _ = synced
    db = sqlite3.connect(config.parent / "data" / ".pbe" / "index.sqlite3")
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def card_ids(b: Browser) -> list[int]:
    """The ids of the works on a grid, in the order shown (every link names its work's id)."""
    ids = []
    for href in b.all("ul.grid li > a", "href"):
        name = unquote(urlsplit(href).path).rstrip("/").rsplit("/", 1)[-1]
        ids.append(int(name.split(" ")[1] if " " in name and name.split(" ")[0].isdigit() and len(name.split(" ")[0]) == 6
                       else name.split(" ")[0]))
    return ids


# -- `/` and the grids --------------------------------------------------------------------------------

def test_home_is_the_gallery_and_propfind_is_unchanged(server: Server, browser: Browser, synced) -> None:
    browser.go(server.url + "/")
    shown = [aid for aid, seq in index_rows(synced, "SELECT id, seq FROM artworks ORDER BY seq DESC")
             if aid not in NSFW]
    assert card_ids(browser) == shown  # newest bookmark first, NSFW left out under `hidden`
    assert browser.text("p.count") == f"{len(shown)} works"
    assert [unquote(urlsplit(h).path) for h in browser.all("header nav.views a", "href")] == [
        "/by-ingress/", "/by-date/", "/by-artist/", "/by-tag/", "/by-id/", "/nsfw/", "/gone/", "/private/", "/ai/",
        "/changes/"]
    counts = browser.text("p.viewcounts")
    assert f"bookmarks {len(shown)} works" in counts and "gone 1 works" in counts and "by artist 9 artists" in counts
    assert "last sync" in browser.text(".sync") and "ok" in browser.text(".sync")
    assert browser.all("header form.search input[name=q]", "name") == ["q"]
    assert browser.all("section.summary form", "action") == [server.url + "/_pbe/ui/refresh"]
    # the first screenful of thumbnails is really there (the rest load lazily)
    assert browser.images_loaded(first=6)
    # WebDAV sees the folder tree at `/`, as before
    answer = requests.request("PROPFIND", server.url + "/", headers={"Depth": "1"}, timeout=10)
    hrefs = sorted(unquote(e.text) for e in ET.fromstring(answer.content).iter("{DAV:}href"))
    assert answer.status_code == 207 and hrefs == ["/", "/ai/", "/by-artist/", "/by-date/", "/by-id/", "/by-ingress/",
                                                   "/by-tag/", "/changes/", "/gone/", "/nsfw/", "/private/", "/status.json"]


def test_quality_page_size_and_both_orders(server: Server, browser: Browser, synced, tmp_path: Path) -> None:
    _, fake = synced
    for quality in ("square_medium", "medium", "large"):
        browser.go(server.url + f"/?image={quality}")
        sources = browser.all("ul.grid img", "src")
        assert sources and all(f"/{quality}/" in s for s in sources), quality
    browser.go(server.url + "/?image=original")
    # /by-ingress/<work>/<file>, but for the ugoira whose frames were never served (no originals)
    assert all(urlsplit(s).path.count("/") == 3 for s in browser.all("ul.grid img", "src") if "93012347" not in s)
    browser.go(server.url + "/?image=none")
    assert browser.all("ul.grid img") == [] and len(browser.all("ul.grid li")) == 41
    browser.go(server.url + "/?image=medium&ipp=10")
    assert len(browser.all("ul.grid li")) == 10 and "page 1 of 5" in browser.text(".pager")
    browser.click('a[rel="next"]')
    assert len(browser.all("ul.grid li")) == 10 and "page 2 of 5" in browser.text(".pager")
    # remembered: a plain visit keeps quality and page size
    browser.go(server.url + "/by-tag/")
    browser.go(server.url + "/")
    assert len(browser.all("ul.grid li")) == 10 and all("/medium/" in s for s in browser.all("ul.grid img", "src"))
    browser.go(server.url + "/?ipp=all")
    assert len(browser.all("ul.grid li")) == 41 and browser.all(".pager") == []
    # creation date, newest first: the flat grid across every year and month
    browser.go(server.url + "/?order=artwork")
    ids = card_ids(browser)
    assert ids == sorted(ids, key=lambda i: fake.works[i].created, reverse=True) and len(ids) == 41
    browser.go(server.url + "/?order=asc")
    assert card_ids(browser) == ids[::-1]
    browser.go(server.url + "/?order=default")
    seqs = dict(index_rows(synced, "SELECT id, seq FROM artworks"))
    ids = card_ids(browser)
    assert ids == sorted(ids, key=lambda i: seqs[i], reverse=True)
    # the same settings on every grid
    browser.go(server.url + "/by-artist/Artist%20%5B11223%5D/?order=artwork&image=square_medium")
    ids = card_ids(browser)
    assert len(ids) > 5 and ids == sorted(ids, key=lambda i: fake.works[i].created, reverse=True)
    assert all("/square_medium/" in s for s in browser.all("ul.grid img", "src"))
    # the settings form works without typing a URL
    browser.js("document.querySelector('form.settings select[name=ipp]').value = '20'")
    browser.click("form.settings button")
    assert len(browser.all("ul.grid li")) == min(20, len(ids))


def test_config_defaults(synced, tmp_path: Path, browser: Browser) -> None:
    with serving(synced, tmp_path, display={"home": {"image": "square_medium", "ipp": 7, "order": "desc"},
                                            "artwork": {"image": "medium"}, "nsfw": "hidden"}) as s:
        _, fake = synced
        browser.go(s.url + "/")
        ids = card_ids(browser)
        assert len(ids) == 7 and all("/square_medium/" in x for x in browser.all("ul.grid img", "src"))
        everything = sorted((w for w in fake.works if w in set(x for x, in index_rows(synced, "SELECT id FROM artworks"))
                             and w not in NSFW), key=lambda i: fake.works[i].created, reverse=True)
        assert ids == everything[:7]
        browser.go(s.url + f"/by-id/{MANGA}/")
        # display.artwork.image is also the quality at the top of an artwork folder
        assert [urlsplit(x).path for x in browser.all(".pages img", "src")] == [
            f"/by-id/{MANGA}/{MANGA}_p{n}_master1200.jpg" for n in range(12)]
        assert [urlsplit(x).path for x in browser.all(".pages figure > a", "href")] == [
            f"/by-id/{MANGA}/original/{MANGA}_p{n}.jpg" for n in range(12)]


# -- the artwork page ----------------------------------------------------------------------------------

def test_artwork_page(server: Server, browser: Browser, synced) -> None:
    _, fake = synced
    browser.go(server.url + f"/a/{MANGA}")
    assert urlsplit(browser.url).path == f"/by-id/{MANGA}/"
    assert browser.text("h1") == "manga"
    pages = browser.all(".pages img", "src")
    assert len(pages) == 12 and all(urlsplit(p).path.startswith(f"/by-id/{MANGA}/{MANGA}_p") for p in pages)
    originals = browser.all(".pages figure > a", "href")
    assert [urlsplit(o).path for o in originals] == [f"/by-id/{MANGA}/{MANGA}_p{n}.jpg" for n in range(12)]
    browser.go(server.url + f"/a/{MANGA}/large")  # the old app's quality route
    assert [urlsplit(p).path for p in browser.all(".pages img", "src")] == [
        f"/by-id/{MANGA}/large/{MANGA}_p{n}_master1200.jpg" for n in range(12)]
    assert [urlsplit(o).path for o in browser.all(".pages figure > a", "href")] == [
        f"/by-id/{MANGA}/{MANGA}_p{n}.jpg" for n in range(12)]
    assert browser.images_loaded(first=2)
    browser.go(server.url + "/?image=square_medium")  # the grid's quality is a separate setting
    browser.go(server.url + f"/by-id/{MANGA}/")
    assert all("/large/" in p for p in browser.all(".pages img", "src"))
    work = fake.works[MANGA]
    assert [unquote(urlsplit(h).path) for h in browser.all("a.artist", "href")] == ["/by-artist/AC／DC [5003]/"]
    assert browser.all("a.artist-pixiv", "href") == ["https://www.pixiv.net/users/5003"]
    assert browser.all("a.pixiv", "href") == [f"https://www.pixiv.net/artworks/{MANGA}"]
    details = browser.text("dl.meta")
    assert work.created.strftime("%Y-%m-%d %H:%M") in details and "years ago" in details
    assert "Pages12" in details and "CLIP STUDIO PAINT" in details
    assert f"{100 + MANGA % 977} views" in details and f"{MANGA % 313} bookmarks" in details
    assert browser.text(".caption") == f"caption of {MANGA}"
    assert browser.all(".caption a", "href") == [None] or browser.js("document.querySelector('.caption a').hasAttribute('href')") is False
    assert "bookmarked" in browser.text("ol.history")
    downloads = [unquote(urlsplit(h).path) for h in browser.all("ul.downloads a", "href")]
    assert f"/by-id/{MANGA}/{MANGA}.zip" in downloads and f"/by-id/{MANGA}/medium/{MANGA}.pdf" in downloads
    assert f"/by-id/{MANGA}/meta.json" in downloads
    # tags with translations; the gone state with its date and reason, and its history
    browser.go(server.url + f"/by-id/{GONE}/")
    tags = browser.all(".tags a")
    assert "#風景 landscape" in tags and "#オリジナル" in tags
    assert [unquote(urlsplit(h).path) for h in browser.all(".tags a", "href")][0] == "/by-tag/風景/"
    gone = browser.text("p.gone")
    assert "Gone from pixiv since 20" in gone and "(limit_unknown)" in gone
    history = browser.all("ol.history li")
    assert "bookmarked" in history[0] and "gone" in history[-1]
    assert browser.all("form.action") == [] and "cannot be deleted" in browser.text("aside")


def test_ugoira_plays_with_its_delays(server: Server, browser: Browser) -> None:
    from PIL import Image

    browser.go(server.url + f"/by-id/{UGOIRA}/")
    sources = browser.all(".pages img", "src")
    assert len(sources) == 1 and sources[0].endswith(f"/{UGOIRA}.webp")
    assert browser.js("document.querySelector('img.ugoira').naturalWidth") > 0
    image = Image.open(io.BytesIO(requests.get(sources[0], timeout=10).content))
    delays = []
    for frame in range(image.n_frames):
        image.seek(frame)
        image.load()
        delays.append(image.info["duration"])
    assert delays == [100, 60, 200]


def test_previous_and_next_in_the_view_it_came_from(server: Server, browser: Browser, synced) -> None:
    browser.go(server.url + "/?order=default&ipp=50")
    grid = card_ids(browser)
    browser.click("ul.grid li:nth-child(3) > a")
    assert urlsplit(browser.url).path.startswith("/by-ingress/")
    browser.press("ArrowRight", "ArrowRight", 39)  # the keyboard, through gallery.js
    assert f" {grid[3]} " in unquote(browser.url)
    browser.click('a[rel="prev"]')
    browser.click('a[rel="prev"]')
    assert f" {grid[1]} " in unquote(browser.url)
    # by creation date, the same neighbours as the grid showed
    browser.go(server.url + "/?order=artwork")
    grid = card_ids(browser)
    browser.click("ul.grid li:nth-child(5) > a")
    browser.click('a[rel="next"]')
    assert f" {grid[5]} " in unquote(browser.url)
    # from a tag folder: its own works
    browser.go(server.url + "/by-tag/%F0%9F%8E%A8/")
    browser.click("ul.grid li > a")
    assert browser.all('a[rel="next"]') == [] and browser.all('a[rel="prev"]') == []
    # from search results: the next result
    browser.go(server.url + "/_pbe/ui/search?q=filler&order=default")
    found = card_ids(browser)
    browser.click("ul.grid li > a")
    browser.click('a[rel="next"]')
    assert urlsplit(browser.url).path == f"/by-id/{found[1]}/" and "q=filler" in browser.url


# -- NSFW -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("policy", ["enabled", "hidden", "required", "disabled"])
def test_nsfw_toggle_under_each_policy(synced, tmp_path: Path, browser: Browser, policy: str) -> None:
    with serving(synced, tmp_path, display={"nsfw": policy}) as s:
        def home_nsfw() -> set[int]:
            browser.go(s.url + "/?ipp=all")
            return set(card_ids(browser)) & NSFW

        def page_status(aid: int) -> int:
            browser.go(s.url + f"/by-id/{aid}/")
            return 200 if browser.all("h1") and "Not Found" not in browser.text("h1") else 404

        toggle = browser.all("a.nsfw-toggle") if browser.go(s.url + "/") is None else []
        before = home_nsfw(), page_status(93012351)
        if policy == "enabled":
            assert before == (NSFW, 200) and toggle == []
        elif policy == "disabled":
            assert before == (set(), 404) and toggle == []
        elif policy == "hidden":
            assert before == (set(), 200) and toggle == ["show NSFW"]
        else:
            assert before == (set(), 404) and toggle == ["show NSFW"]
        browser.go(s.url + "/display/nsfw/enable?r=/by-tag/")  # the old app's route
        assert urlsplit(browser.url).path == "/by-tag/"
        after = home_nsfw(), page_status(93012351)
        if policy in ("hidden", "required"):
            assert after == (NSFW, 200)
            # every GET the page makes sees it too: its images load
            assert browser.images_loaded()
            assert browser.all("a.nsfw-toggle") == ["hide NSFW"]
            # never for PROPFIND, even with the cookie
            answer = requests.request("PROPFIND", s.url + "/by-ingress/", headers={"Depth": "1"},
                                      cookies={"pbe_nsfw": "1"}, timeout=10)
            assert not any(str(a) in unquote(answer.text) for a in NSFW)
            browser.click("a.nsfw-toggle")
            assert home_nsfw() == set()
        else:
            assert after == before


def test_nsfw_flag_is_the_ceiling(synced, tmp_path: Path, browser: Browser) -> None:
    with serving(synced, tmp_path, "--nsfw", "disabled", display={"nsfw": "hidden"}) as s:
        browser.go(s.url + "/display/nsfw/enable?r=/")
        assert browser.all("a.nsfw-toggle") == [] and "cannot be changed" in browser.text(".flash")
        browser.go(s.url + "/?ipp=all")
        assert set(card_ids(browser)) & NSFW == set()
        assert requests.get(s.url + "/by-id/93012351/93012351_p0.jpg", cookies={"pbe_nsfw": "1"}, timeout=10).status_code == 404


# -- search -------------------------------------------------------------------------------------------

def test_search(server: Server, browser: Browser) -> None:
    def search(q: str) -> list[int]:
        browser.go(server.url + "/")
        browser.js(f"document.querySelector('header input[name=q]').value = {q!r}")
        browser.click("header form.search button")
        return card_ids(browser)

    assert search("landscape") == [GONE]  # a tag's translation
    assert search("風景") == [GONE]  # a tag, two characters
    assert search("夕焼け") == [GONE]  # a title
    assert search("AC/DC") == [MANGA]  # an artist
    assert search(f"caption of {MANGA}") == [MANGA]  # the caption
    assert sorted(search("f3")) == [93013000 + n for n in range(24) if n % 5 == 3]  # an artist's account
    assert len(search("filler")) == 24 and len(browser.all("ul.grid li")) == 24
    assert search("r18") == [] and search("no such thing at all") == []  # NSFW left out under `hidden`
    browser.go(server.url + "/_pbe/ui/search?q=a/b%5Cc:d*e%3Ff%22g%3Ch%3Ei%7Cj")
    assert card_ids(browser) == [93012353] and "a/b\\c:d*e?f\"g<h>i|j" in browser.text("h1")
    browser.go(server.url + "/display/nsfw/enable?r=/_pbe/ui/search%3Fq%3Dr18")
    assert sorted(card_ids(browser)) == sorted(NSFW)
    browser.go(server.url + "/_pbe/ui/search?q=filler&image=square_medium&ipp=5")  # the grid's settings
    assert len(browser.all("ul.grid li")) == 5 and all("/square_medium/" in x for x in browser.all("ul.grid img", "src"))


# -- refresh, delete, admin ----------------------------------------------------------------------------

def test_read_only_needs_the_token_once_per_session(synced, tmp_path: Path, browser: Browser) -> None:
    with serving(synced, tmp_path) as s:  # read_only: true, read_only_token: seed-ro-token
        victim = 93013020
        browser.go(s.url + f"/by-id/{victim}/")
        browser.click("form.action button")
        assert urlsplit(browser.url).path == "/_pbe/ui/admin" and "log in" in browser.text(".flash")
        assert requests.get(s.url + f"/by-id/{victim}/", timeout=10).status_code == 200
        browser.js("document.querySelector('input[name=token]').value = 'wrong'")
        browser.click("main form button")
        assert browser.text(".flash") == "Wrong token."
        browser.js("document.querySelector('input[name=token]').value = 'seed-ro-token'")
        browser.click("main form button")
        assert "Logged in" in browser.text(".flash") and "seed-ro-token" not in str(browser.cookies())
        browser.go(s.url + f"/by-id/{victim}/")
        browser.click("form.action button")
        assert browser.text(".flash") == f"Deleted {victim} from the archive."
        assert urlsplit(browser.url).path == "/by-id/"
        assert requests.get(s.url + f"/by-id/{victim}/", timeout=10).status_code == 404
        before = requests.get(s.url + "/_pbe/status", timeout=10).json()["last_sync"]["id"]
        browser.go(s.url + "/")
        browser.click("section.summary form button")
        assert browser.text(".flash").startswith("started sync")
        deadline = time.monotonic() + 60  # it really runs, against the stand-in; let it finish before going on
        while True:
            last = requests.get(s.url + "/_pbe/status", timeout=10).json()["last_sync"]
            if last["id"] > before and last["finished_at"]:
                break
            assert time.monotonic() < deadline, last
            time.sleep(0.2)
        assert last["status"] == "ok"
        # a new browser session must log in again
        with Browser(tmp_path / "other") as other:
            other.go(s.url + "/refresh")  # the old app's GET route: a confirmation page
            assert other.all("main form", "method") == ["post"]
            other.click("main form button")
            assert urlsplit(other.url).path == "/_pbe/ui/admin"


def test_writable_instance_acts_directly_and_gone_works_stay(synced, tmp_path: Path, browser: Browser) -> None:
    with serving(synced, tmp_path, read_only=False) as s:
        victim = 93013021
        browser.go(s.url + f"/a/{victim}/delete")  # the old app's GET route: a confirmation page
        assert "Delete" in browser.text("h1") and browser.all("main form input[name=csrf]", "name") == ["csrf"]
        browser.click("main form button")
        assert browser.text(".flash") == f"Deleted {victim} from the archive."
        assert requests.get(s.url + f"/by-id/{victim}/", timeout=10).status_code == 404
        browser.go(s.url + f"/a/{GONE}/delete")
        assert "only copy" in browser.text("main")
        # even a well-formed POST for a gone work is refused
        browser.go(s.url + "/")
        csrf = browser.js("document.querySelector('input[name=csrf]').value")
        browser.js(f"""(() => {{ const f = document.createElement('form'); f.method = 'post'; f.action = '/_pbe/ui/delete';
            for (const [k, v] of [['csrf', {csrf!r}], ['id', '{GONE}']]) {{
              const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }}
            document.body.appendChild(f); f.id = 'forged'; }})()""")
        browser.js("document.getElementById('forged').submit()")
        browser.wait_for("(document.querySelector('.flash') || {}).textContent?.includes('only copy')")
        assert requests.get(s.url + f"/by-id/{GONE}/", timeout=10).status_code == 200


def test_forged_cross_site_posts_are_refused(synced, tmp_path: Path, browser: Browser) -> None:
    with serving(synced, tmp_path, read_only=False) as s:
        victim = 93013022
        # another site's page posting into the gallery: no token, or a stolen one from another session
        evil = tmp_path / "evil.html"
        evil.write_text(f'<form id="f" method="post" action="{s.url}/_pbe/ui/delete">'
                        f'<input name="id" value="{victim}"><input name="csrf" value="0"></form>'
                        "<script>document.getElementById('f').submit()</script>")
        browser.go(s.url + "/")  # the visitor has a session
        browser.page("Page.navigate", url=evil.as_uri())
        browser.wait_for("document.body && document.body.textContent.includes('cross-site request refused')")
        assert requests.get(s.url + f"/by-id/{victim}/", timeout=10).status_code == 200
        answer = requests.post(s.url + "/_pbe/ui/delete", data={"id": str(victim)}, timeout=10)
        assert answer.status_code == 403
        answer = requests.post(s.url + "/_pbe/ui/refresh", data={"csrf": "x" * 64}, headers={"Origin": "http://evil.example"},
                               timeout=10)
        assert answer.status_code == 403
        answer = requests.post(s.url + "/display/home", data={"ipp": "1"}, headers={"Origin": "http://evil.example"},
                               timeout=10)
        assert answer.status_code == 403 and "pbe_ipp" not in answer.headers.get("Set-Cookie", "")
        assert requests.get(s.url + f"/by-id/{victim}/", timeout=10).status_code == 200


# -- the old app's URLs ----------------------------------------------------------------------------------

def test_old_urls_land_on_the_right_work(server: Server, browser: Browser) -> None:
    def lands(old: str) -> str:
        browser.go(server.url + old)
        split = urlsplit(browser.url)
        return unquote(split.path) + (f"?{unquote(split.query)}" if split.query else "")

    assert lands(f"/a/{MANGA}") == f"/by-id/{MANGA}/"
    assert lands(f"/a/{MANGA}/medium") == f"/by-id/{MANGA}/?image=medium"
    def moves(old: str) -> str:  # downloads: where the redirect points, and that it is there
        answer = requests.get(server.url + old, allow_redirects=False, timeout=10)
        assert answer.status_code in (301, 302), old
        assert requests.head(server.url + answer.headers["Location"], timeout=10).status_code == 200
        return unquote(answer.headers["Location"])

    assert moves(f"/a/{MANGA}/zip") == f"/by-id/{MANGA}/{MANGA}.zip"
    assert moves(f"/a/{MANGA}/zip/large") == f"/by-id/{MANGA}/large/{MANGA}.zip"
    assert moves(f"/a/{MANGA}/pdf/medium") == f"/by-id/{MANGA}/medium/{MANGA}.pdf"
    assert moves(f"/a/{MANGA}/meta") == f"/by-id/{MANGA}/meta.json"
    assert moves(f"/i/{MANGA}/3") == f"/by-id/{MANGA}/{MANGA}_p3.jpg"
    assert moves(f"/i/{MANGA}/3/square_medium") == f"/by-id/{MANGA}/square_medium/{MANGA}_p3_square1200.jpg"
    assert lands("/p/2") == "/?page=2"
    assert lands("/p/3/medium/5/artwork") == "/?page=3&image=medium&ipp=5&order=artwork"
    assert len(browser.all("ul.grid li")) == 5 and "page 3 of" in browser.text(".pager")
    assert lands("/random").startswith("/by-ingress/") and browser.all(".pages img")
    assert lands("/admin") == "/_pbe/ui/admin"
    assert lands("/refresh") == "/_pbe/ui/refresh" and browser.all("main form", "action") == [server.url + "/_pbe/ui/refresh"]
    assert lands(f"/a/{MANGA}/delete") == f"/_pbe/ui/delete/{MANGA}"
    assert browser.all("main form input[name=id]", "value") == [str(MANGA)]
    assert lands("/a/1") == "/a/1" and "not in this archive" in browser.text("main")
    assert lands("/a/abc") == "/a/abc" and "not an artwork id" in browser.text("main")
    # the old display forms set this visitor's defaults
    browser.go(server.url + "/")
    browser.js("""(() => { const f = document.createElement('form'); f.method = 'post'; f.action = '/display/home';
        for (const [k, v] of [['image', 'square_medium'], ['ipp', '3'], ['order', 'artwork']]) {
          const i = document.createElement('input'); i.name = k; i.value = v; f.appendChild(i); }
        document.body.appendChild(f); f.submit(); })()""")
    browser.wait_for("document.querySelectorAll('ul.grid li').length == 3")
    assert len(browser.all("ul.grid li")) == 3 and all("/square_medium/" in x for x in browser.all("ul.grid img", "src"))
    # links to pixiv answer without the browser leaving this machine
    for old, target in ((f"/a/{MANGA}/pixiv", f"https://www.pixiv.net/artworks/{MANGA}"),
                        (f"/a/{MANGA}/user-pixiv", "https://www.pixiv.net/users/5003")):
        answer = requests.get(server.url + old, allow_redirects=False, timeout=10)
        assert answer.status_code in (301, 302) and answer.headers["Location"] == target


# -- every link, the headers, phones and dark mode ---------------------------------------------------------------

def test_every_link_and_image_works_with_hostile_names(server: Server, browser: Browser) -> None:
    session = requests.Session()
    for page in ("/?ipp=all&image=square_medium", "/by-ingress/?ipp=all", "/by-tag/", "/by-artist/",
                 f"/by-id/{MANGA}/", "/by-id/93012353/", "/by-id/93012357/", "/by-id/93012359/", "/gone/"):
        browser.go(server.url + page)
        links = {h for h in browser.all("a[href]", "href") if h.startswith(server.url)}
        links |= set(browser.all("img", "src"))
        assert links
        for url in links:
            answer = session.head(url, timeout=10, allow_redirects=True)
            assert answer.status_code == 200, (page, url)
    browser.go(server.url + "/?ipp=all&image=none")
    titles = browser.all("ul.grid .t")
    assert 'a/b\\c:d*e?f"g<h>i|j' in titles and "あ" * 300 in titles and ".." in titles
    assert browser.js("document.querySelectorAll('h, script:not([src])').length") == 0


def test_headers_strict_csp_and_cached_images(server: Server, browser: Browser) -> None:
    page = requests.get(server.url + "/", timeout=10)
    csp = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in csp and "unsafe-inline" not in csp and "script-src 'self'" in csp
    browser.go(server.url + f"/by-id/{MANGA}/")
    origins = {urlsplit(u).netloc for u in browser.js(
        "Array.from(document.querySelectorAll('[src],link[href]'), e => e.src || e.href)")}
    assert origins == {urlsplit(server.url).netloc}
    image = browser.all(".pages img", "src")[0]
    first = requests.get(image, timeout=10)
    assert first.headers["ETag"] and "max-age=" in first.headers["Cache-Control"] and first.headers["Last-Modified"]
    again = requests.get(image, headers={"If-None-Match": first.headers["ETag"]}, timeout=10)
    assert again.status_code == 304 and again.content == b""
    css = requests.get(server.url + "/_pbe/ui/static/gallery.css", timeout=10)
    assert css.headers["Content-Type"].startswith("text/css") and "max-age" in css.headers["Cache-Control"]
    for listed in (css.headers["ETag"], f'"other", W/{css.headers["ETag"]}', "*"):  # RFC 9110's comparison, as for files
        assert requests.get(server.url + "/_pbe/ui/static/gallery.css", headers={"If-None-Match": listed},
                            timeout=10).status_code == 304, listed
    assert requests.get(server.url + "/_pbe/ui/static/gallery.css", headers={"If-None-Match": '"other"'},
                        timeout=10).status_code == 200
    # bad input: one clear line, never a traceback
    for bad in ("/_pbe/ui/nope", "/a/99999999999999999999999", "/i/93012350/99", "/a/93012350/zip/huge", "/p/x/y/z/w/v"):
        answer = requests.get(server.url + bad, timeout=10)
        assert answer.status_code in (400, 404) and "Traceback" not in answer.text, bad


def test_phone_and_dark_mode(server: Server, browser: Browser) -> None:
    browser.size(390, 844, mobile=True)
    for page in ("/", f"/by-id/{MANGA}/", "/_pbe/ui/search?q=filler", "/by-tag/"):
        browser.go(server.url + page)
        assert browser.js("document.scrollingElement.scrollWidth <= window.innerWidth"), page
    browser.go(server.url + "/")
    light = browser.js("getComputedStyle(document.body).backgroundColor")
    browser.dark()
    browser.go(server.url + "/")
    dark = browser.js("getComputedStyle(document.body).backgroundColor")
    assert light != dark and sum(int(x) for x in dark[4:-1].split(",")) < 150
