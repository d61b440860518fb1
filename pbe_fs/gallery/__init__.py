"""The gallery: what the old Flask web app was, served to browsers by the
same server as WebDAV, over the same tree.

``Gallery.handle`` answers a browser's request (a folder page, the home
grid, search, admin, the old app's URLs, the forms that refresh or
delete) or returns None to let WebDAV answer it. ``Gallery.tree_for``
gives the tree a browser GET should see: the visitor's NSFW cookie may
lift the server's ``hidden`` or ``required`` policy to show NSFW works,
never ``enabled``/``disabled`` and never for PROPFIND (file managers see
the server's policy).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import re
import threading
import time
from collections.abc import Sequence
from http.cookies import CookieError, SimpleCookie
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qsl, quote, unquote, urlencode

from .. import names
from ..artwork import QUALITIES, Node, top_quality
from ..render import meta as meta_render
from ..tree import Tree, TreeError
from . import pages
from .caption import sanitise
from .catalog import Catalog
from .pages import Card, Chrome, esc, link
from .search import Search
from .visitor import ORDERS, Keys, Visitor, read

log = logging.getLogger("pbe_fs.gallery")

CSP = ("default-src 'none'; img-src 'self'; style-src 'self'; script-src 'self'; form-action 'self'; "
       "base-uri 'none'; frame-ancestors 'none'")
IMAGE_CACHE = "max-age=604800"  # a week: a return visit costs nothing, later ones a 304


def cache_control(node: Node) -> str:
    """How long a browser may keep a file without asking: a week when its
    name fixes its bytes, else until it revalidates (ETag, 304)."""
    return IMAGE_CACHE if node.immutable and not node.revalidate else "no-cache"


def etag_listed(if_none_match: str, etag: str) -> bool:
    """Whether an If-None-Match header names this (quoted) ETag: a list,
    weak tags and ``*`` count, as RFC 9110 13.1.2 compares for a GET."""
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or etag in tags


OLD_ROUTES = {"a", "p", "i", "random", "display", "refresh", "admin"}
_STATIC = {"gallery.css": "text/css; charset=utf-8", "gallery.js": "text/javascript; charset=utf-8"}
Respond = Callable[..., Any]


def gallery_post(path: str) -> bool:
    """Whether a POST to path is one of the gallery's forms (which check
    their own CSRF token and admin session instead of HTTP auth)."""
    return path.startswith(("/_pbe/ui/", "/display/"))


def _safe_return(target: str | None) -> str:
    """A local path to go back to; anything else means home."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target or \
            any(ord(c) < 32 for c in target):
        return "/"
    return target


class _Answer(Exception):
    """A finished response, raised from deep inside a handler."""

    def __init__(self, status: str, text: str) -> None:
        super().__init__(text)
        self.status, self.text = status, text


class Gallery:
    def __init__(self, tree: Tree, access: Any, refresh: Callable[[], str] | None) -> None:
        """``access`` says ``read_only`` and ``read_only_token`` (webdav.Access)."""
        self.tree = tree
        self.display = tree.config.settings.display
        self.access, self.refresh = access, refresh
        self.keys = Keys(tree.config.settings.app_key, access)
        self.catalog = Catalog(tree)
        self.search = Search(tree, tree.config.cache_path / "search.sqlite")
        self._trees: dict[tuple[str, str], Tree] = {}  # (NSFW policy, AI policy) a visitor chose -> its tree
        self._lock = threading.Lock()
        self._memo: dict[tuple[Any, ...], Any] = {}  # per tree and generation: sorted grids, view counts
        self._static = {name: resources.files(__package__).joinpath("static", name).read_bytes() for name in _STATIC}

    # -- which tree a browser sees ------------------------------------------------------
    @property
    def may_toggle(self) -> bool:
        return self.tree.policy in ("hidden", "required")

    @property
    def may_hide_ai(self) -> bool:
        return self.tree.ai_policy == "shown"

    def tree_for(self, environ: dict[str, Any]) -> Tree:
        """The tree this browser's cookies choose: NSFW lifted where the
        server's policy lets visitors lift it, AI works hidden if asked."""
        raw = environ.get("HTTP_COOKIE", "")
        if "pbe_nsfw" not in raw and "pbe_ai" not in raw:
            return self.tree
        try:
            jar = SimpleCookie(raw)
        except CookieError:
            return self.tree
        nsfw = "enabled" if self.may_toggle and "pbe_nsfw" in jar and jar["pbe_nsfw"].value == "1" else self.tree.policy
        ai = "hidden" if self.may_hide_ai and "pbe_ai" in jar and jar["pbe_ai"].value == "hide" else self.tree.ai_policy
        if (nsfw, ai) == (self.tree.policy, self.tree.ai_policy):
            return self.tree
        with self._lock:
            tree = self._trees.get((nsfw, ai))
            if tree is None:
                tree = self._trees[(nsfw, ai)] = Tree(self.tree.config, nsfw, ai=ai)
            return tree

    def trees(self) -> list[Tree]:
        """Every tree this gallery serves: the server's and the visitors' choices."""
        with self._lock:
            return [self.tree, *self._trees.values()]

    def file_headers(self, start_response: Respond, node: Node) -> Respond:
        """Archived images and generated files: validators come from
        WebDAV's GET; this adds how long a browser may keep them."""
        def respond(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            if status[:3] in ("200", "206", "304") and not any(n.lower() == "cache-control" for n, _ in headers):
                headers = headers + [("Cache-Control", cache_control(node))]
            return start_response(status, headers, exc_info)
        return respond

    # -- dispatch ------------------------------------------------------------------------
    def handle(self, parts: tuple[str, ...], environ: dict[str, Any], start_response: Respond) -> list[bytes] | None:
        method = environ["REQUEST_METHOD"]
        if parts[:2] == ("_pbe", "ui"):
            return self._guard(self._ui, method, parts[2:], environ, start_response)
        if parts and parts[0] in OLD_ROUTES and method in ("GET", "HEAD", "POST"):
            return self._guard(self._old, method, parts, environ, start_response)
        if method in ("GET", "HEAD"):
            tree = self.tree_for(environ)
            node = tree.get(parts)
            if node is not None and node.is_dir:
                return self._guard(self._folder, tree, parts, node, environ, start_response)
        return None

    def _guard(self, handler: Callable[..., list[bytes]], *args: Any) -> list[bytes]:
        environ, start_response = args[-2], args[-1]
        try:
            return handler(*args)
        except _Answer as answer:
            visitor = read(environ, self.display)
            body = pages.layout(answer.status[4:], pages.message_page(answer.status[4:], answer.text),
                                self._chrome(self.tree_for(environ), visitor, environ))
            return self._send(start_response, answer.status, body, visitor, environ)

    # -- responses -------------------------------------------------------------------------
    def _send(self, start_response: Respond, status: str, body: bytes, visitor: Visitor | None, environ: dict[str, Any],
              ctype: str = "text/html; charset=utf-8", extra: list[tuple[str, str]] | None = None) -> list[bytes]:
        environ["pbe.page"] = True
        headers = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Content-Security-Policy", CSP),
                   ("X-Content-Type-Options", "nosniff"), ("Referrer-Policy", "same-origin")]
        if not any(n == "Cache-Control" for n, _ in extra or []):
            headers.append(("Cache-Control", "no-cache"))
        headers += [("Set-Cookie", c) for c in (visitor.set_cookies if visitor else [])]
        start_response(status, headers + (extra or []))
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]

    def _redirect(self, start_response: Respond, location: str, visitor: Visitor | None, environ: dict[str, Any],
                  status: str = "303 See Other") -> list[bytes]:
        return self._send(start_response, status, b"", visitor, environ, "text/plain; charset=utf-8",
                          [("Location", location)])

    def _chrome(self, tree: Tree, visitor: Visitor, environ: dict[str, Any]) -> Chrome:
        here = environ.get("PATH_INFO", "/")
        here = quote(here, safe="/") + ("?" + environ["QUERY_STRING"] if environ.get("QUERY_STRING") else "")
        toggle = ("disable" if tree.policy != self.tree.policy else "enable") if self.may_toggle else ""
        ai_toggle = ("show" if tree.ai_policy != self.tree.ai_policy else "hide") if self.may_hide_ai else ""
        return Chrome(visitor, self.keys.csrf(visitor), tree.views(), toggle, here, self.keys.is_admin(visitor),
                      self.access.read_only, ai_toggle)

    def _page(self, start_response: Respond, title: str, body: str, tree: Tree, visitor: Visitor,
              environ: dict[str, Any], crumbs: tuple[str, ...] | None = None, query: str = "") -> list[bytes]:
        data = pages.layout(title, body, self._chrome(tree, visitor, environ), crumbs, query=query)
        return self._send(start_response, "200 OK", data, visitor, environ)

    # -- folder pages ------------------------------------------------------------------------
    def _folder(self, tree: Tree, parts: tuple[str, ...], node: Any, environ: dict[str, Any],
                start_response: Respond) -> list[bytes]:
        if not environ.get("PATH_INFO", "/").endswith("/"):
            query = environ.get("QUERY_STRING", "")
            location = link(parts) + (f"?{query}" if query else "")
            return self._send(start_response, "301 Moved Permanently", b"", None, environ, "text/plain; charset=utf-8",
                              [("Location", location)])
        visitor = read(environ, self.display, artwork_page=node.is_artwork_root)
        if not parts:
            return self._home(tree, visitor, environ, start_response)
        if node.is_artwork_root:
            return self._artwork(tree, parts, node, visitor, environ, start_response)
        entries = tree.list(parts) or []
        title = parts[-1]
        if entries and all(child.is_artwork_root for _, child in entries):
            body = f"<h1>{esc(title)}</h1>" + self._grid(tree, self._folder_works(tree, parts, visitor), visitor,
                                                         ordered=True)
        else:
            body = f"<h1>{esc(title)}</h1>"
            if parts == ("by-date",):
                body += '<p><a href="/?order=artwork">every work by creation date, newest first</a></p>'
            body += pages.folder_list([(n, link(parts + (n,), c.is_dir), c.is_dir) for n, c in entries])
        return self._page(start_response, title, body, tree, visitor, environ, parts)

    def remember(self, tree: Tree, key: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """make(), kept until the index changes (a grid of 20,000 works is
        sorted once per generation, not once per page view)."""
        tree.refresh()
        full = (id(tree), tree.generation) + key
        value = self._memo.get(full)
        if value is None:
            value = make()
            with self._lock:
                for stale in [k for k in self._memo if k[0] == full[0] and k[1] != full[1]]:
                    del self._memo[stale]
                if len(self._memo) >= 256:
                    self._memo.clear()
                self._memo[full] = value
        return value

    def _folder_works(self, tree: Tree, parts: tuple[str, ...], visitor: Visitor) -> list[tuple[tuple[str, ...], int]]:
        """A folder's works in the visitor's order."""
        def make() -> list[tuple[tuple[str, ...], int]]:
            works = [(parts + (n,), c.artwork) for n, c in tree.list(parts) or [] if c.is_artwork_root]
            return self.ordered(works, visitor.order)
        return self.remember(tree, ("folder", parts, visitor.order), make)

    def ordered(self, works: list[tuple[tuple[str, ...], int]], order: str) -> list[tuple[tuple[str, ...], int]]:
        """(folder path, id) pairs in a gallery order (``ORDERS``)."""
        key, newest_first = ORDERS.get(order, ORDERS["default"])
        by_id = {aid: path for path, aid in works}
        return [(by_id[aid], aid) for aid in self.catalog.sort(list(by_id), key, newest_first)]

    def _grid(self, tree: Tree, works: list[tuple[tuple[str, ...], int]], visitor: Visitor,
              query: dict[str, str] | None = None, ordered: bool = False) -> str:
        """A page of thumbnails. ``works`` are (folder path, id); ``query``
        is added to each work's link (the search a work was found by)."""
        if not ordered:
            works = self.ordered(works, visitor.order)
        per_page = visitor.ipp or max(1, len(works))
        pages_total = max(1, -(-len(works) // per_page))
        try:
            page = int(visitor.query.get("page", "1"))
        except ValueError:
            page = 1
        page = min(max(1, page), pages_total)
        # a card's HTML is made once per generation and quality, in two halves around the end of
        # its link, where the search a work was found by goes (link encoding and escaping are most
        # of a grid's cost)
        made = self.remember(tree, ("cards",), dict)
        if len(made) > 100_000:
            made.clear()
        found_by = esc("?" + urlencode(query)) if query else ""
        cards = []
        for path, aid in works[(page - 1) * per_page: page * per_page]:
            key = (path, visitor.image)
            halves = made.get(key)
            if halves is None:
                halves = made[key] = self._card(tree, path, aid, visitor.image)
            cards.append(found_by.join(halves))
        keep = {k: v for k, v in visitor.query.items() if k in ("q",)}
        return (pages.settings_form(visitor, keep)
                + pages.grid(cards, visitor.image != "none", len(works), page, pages_total, keep))

    def _card(self, tree: Tree, path: tuple[str, ...], aid: int, image: str) -> tuple[str, str]:
        """A work's grid card in an image quality (``pages.card``'s halves)."""
        info = tree.artwork_info(aid)
        thumb = ""
        if image != "none":
            found = self.catalog.thumbnail(path, aid, image)
            thumb = link(found, False) if found else ""
        return pages.card(Card(link(path, True), str(info["title"] or aid), str(info["artist_name"]), thumb,
                               bool(info["nsfw"])))

    def _prepare_search_cards(self, tree: Tree, image: str) -> None:
        """Makes, once per generation and in the background, every work's card
        as search results show it (under by-id/): a search never asked before
        then costs its query, not fifty new cards. Archives too large for the
        card memo are left to make cards as they are shown."""
        started = self.remember(tree, ("search cards", image), lambda: [False])
        with self._lock:
            if started[0]:
                return
            started[0] = True
        made = self.remember(tree, ("cards",), dict)
        ids = list(self.catalog.entries())
        if len(ids) > 50_000:
            return

        def make_all() -> None:
            for n, aid in enumerate(ids):
                if n % 16 == 0:
                    time.sleep(0.001)  # hand the GIL back often: requests come first
                path = ("by-id", str(aid))
                if (path, image) not in made:
                    try:
                        made[(path, image)] = self._card(tree, path, aid, image)
                    except (KeyError, TreeError):  # gone in a newer generation: that one has its own cards
                        continue
        threading.Thread(target=make_all, name="search-cards", daemon=True).start()

    def _status(self, tree: Tree) -> dict[str, Any]:
        node = tree.get(("status.json",))
        if node is None or node.content is None:
            return {}
        reader = node.content().reader()
        try:
            return json.loads(reader.read(0, node.size))
        finally:
            reader.close()

    def _home(self, tree: Tree, visitor: Visitor, environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        status = self._status(tree)
        counts = []
        sizes = self.remember(tree, ("counts",), lambda: {v: len(tree.list((v,)) or []) for v in tree.views()})
        for view in tree.views():
            n = sizes[view]
            unit = {"by-date": "years", "by-artist": "artists", "by-tag": "tags", "changes": "months"}.get(view, "works")
            counts.append(f'<a href="{link((view,))}">{esc(pages.VIEW_LABELS.get(view, view))}</a> <span class="n">{n} {unit}</span>')
        last = status.get("last_sync") or {}
        if last:
            when = last.get("finished_at") or last.get("started_at") or ""
            result = f'{esc(last.get("status", ""))}, {esc(last.get("new_works", 0))} new'
            if last.get("message"):
                result += f' — {esc(last["message"])}'
            sync = f'last sync {esc(when[:19].replace("T", " "))} ({esc(pages.time_ago(when))}): {result}'
        else:
            sync = "never synced"
        refresh = pages.post_form("/_pbe/ui/refresh", "refresh now", self.keys.csrf(visitor), {"r": "/"})
        head = (f'<section class="summary"><p class="stats">{status.get("artworks", 0)} works archived, '
                f'{len(status.get("gone") or [])} gone from pixiv · <span class="sync">{sync}</span> · '
                '<a class="opds" href="/opds/" type="application/atom+xml;profile=opds-catalog">OPDS catalog</a></p>'
                f'<p class="viewcounts">{" · ".join(counts)}</p>{refresh}</section>')
        works = self._folder_works(tree, ("by-ingress",), visitor)
        return self._page(start_response, "pbe-fs", head + self._grid(tree, works, visitor, ordered=True), tree, visitor,
                          environ)

    # -- the artwork page -----------------------------------------------------------------------
    def _context(self, tree: Tree, parts: tuple[str, ...], visitor: Visitor) -> tuple[list[tuple[tuple[str, ...], int]], dict[str, str] | None]:
        """The works the visitor is stepping through, in the order shown."""
        q = visitor.query.get("q", "")
        if q:
            return self.found(tree, q, visitor.order), {"q": q}
        return self._folder_works(tree, parts[:-1], visitor), None

    def _artwork(self, tree: Tree, parts: tuple[str, ...], node: Any, visitor: Visitor, environ: dict[str, Any],
                 start_response: Respond) -> list[bytes]:
        aid = node.artwork
        found = tree.record(aid)
        if found is None:
            raise _Answer("503 Service Unavailable", f"artwork {aid} cannot be read from the archive right now")
        record, raw = found
        meta = json.loads(meta_render.meta_json(record, raw))
        info = tree.artwork_info(aid)
        files = sorted(record.get("files", []), key=lambda f: (f["page"], f["path"]))
        roles = {f["role"] for f in files}
        top = top_quality(tree.top_quality, roles)

        def where(role: str, name: str) -> tuple[str, ...]:
            return parts + ((name,) if role == top else (role, name))

        quality = visitor.aimage if visitor.aimage in roles else top
        originals = {f["page"]: f["path"].rsplit("/", 1)[-1] for f in files if f["role"] == "original"}
        figures = []
        if record.get("ugoira"):
            animation = link(parts + (f"{aid}.webp",), False)
            figures.append(f'<figure><a href="{link(parts + (f"{aid}.gif",), False)}"><img class="ugoira" src="{animation}" '
                           f'alt="animation ({len((record["ugoira"] or {}).get("frames") or [])} frames)"></a></figure>')
        else:
            for f in files:
                if f["role"] != quality:
                    continue
                name = f["path"].rsplit("/", 1)[-1]
                original = originals.get(f["page"], name)
                lazy = ' loading="lazy"' if f["page"] >= 2 else ""  # the first pages at once
                figures.append(f'<figure><a href="{link(where("original", original), False)}">'
                               f'<img src="{link(where(quality, name), False)}" alt="page {f["page"] + 1}"{lazy} '
                               f'width="{f.get("width") or ""}" height="{f.get("height") or ""}"></a></figure>')
        listing = dict(tree.list(parts) or [])
        downloads = []
        for role in QUALITIES:
            if role in roles and not (role == "original" and record.get("ugoira")):
                base = parts if role == top else parts + (role,)
                downloads.append(f'<li>{role}: <a href="{link(base + (f"{aid}.zip",), False)}">zip</a> · '
                                 f'<a href="{link(base + (f"{aid}.pdf",), False)}">pdf</a> · '
                                 f'<a href="{link(base + (f"{aid}.cbz",), False)}">cbz</a></li>')
        for name in (f"{aid}_ugoira.zip", f"{aid}.gif", f"{aid}.webp", "meta.json", "pixiv.url"):
            if name in listing:
                downloads.append(f'<li><a href="{link(parts + (name,), False)}">{esc(name)}</a></li>')
        qualities = " · ".join(f"<strong>{q}</strong>" if q == quality else f'<a href="?{urlencode({**visitor.query, "image": q})}">{q}</a>'
                               for q in QUALITIES if q in roles)
        artist = meta["artist"]
        tags = "".join(f'<a href="{link(tree.tag_folder(t["name"]))}">#{esc(t["name"])}'
                       + (f' <small>{esc(t["translated_name"])}</small>' if t.get("translated_name") else "") + "</a>"
                       for t in meta["tags"])
        pixiv = raw if isinstance(raw, dict) else {}
        rows = [
            ("Artist", f'<a class="artist" href="{link(tree.artist_folder(aid))}">{esc(artist["name"])}</a> · '
                       f'<a class="artist-pixiv" href="{esc(artist["url"])}" rel="noreferrer">pixiv profile</a>'),
            ("Tags", f'<span class="tags">{tags}</span>'),
            ("Created", f'<time datetime="{esc(meta["create_date"])}">{esc(meta["create_date"][:16].replace("T", " "))}</time>'
                        f' ({esc(pages.time_ago(meta["create_date"]))})'),
            ("Pages", esc(meta["page_count"])),
            ("Size", f'{esc(meta["width"])}×{esc(meta["height"])}'),
            ("Tools", esc(", ".join(pixiv.get("tools") or []) or "—")),
            ("Counts", f'<span class="counts">{esc(pixiv.get("total_view", 0))} views · '
                       f'{esc(pixiv.get("total_bookmarks", 0))} bookmarks · {esc(pixiv.get("total_comments", 0))} comments'
                       f"</span> (as archived)"),
            ("Bookmark", f'{esc(meta["restrict"])}, #{esc(meta["ingress"])}, archived {esc(str(meta["archived_at"])[:10])}'),
            ("pixiv", f'<a class="pixiv" href="{esc(meta["url"])}" rel="noreferrer">{esc(meta["url"])}</a>'),
        ]
        gone = ""
        if meta.get("gone"):
            g = meta["gone"]
            gone = (f'<p class="gone">Gone from pixiv since {esc(str(g.get("at", ""))[:10])} ({esc(g.get("reason", ""))}): '
                    "this archive holds the only copy.</p>")
        history = "".join(f'<li><time>{esc(str(h.get("at", ""))[:19].replace("T", " "))}</time> {esc(h.get("event", ""))}'
                          + "".join(f" · {esc(k)}: {esc(v)}" for k, v in h.items() if k not in ("at", "event")) + "</li>"
                          for h in meta.get("history") or [])
        works, keep = self._context(tree, parts, visitor)
        neighbours = ""
        ids = works.ids if isinstance(works, _ByIdWorks) else [w for _, w in works]
        if aid in ids:
            i = ids.index(aid)
            prev = f'<a rel="prev" href="{link(works[i - 1][0], True, keep)}">← previous</a>' if i > 0 else "<span></span>"
            nxt = f'<a rel="next" href="{link(works[i + 1][0], True, keep)}">next →</a>' if i + 1 < len(works) else "<span></span>"
            neighbours = f'<nav class="neighbours">{prev}<span>{i + 1} of {len(works)}</span>{nxt}</nav>'
        if info["gone"]:
            delete = '<p class="stats">Gone works cannot be deleted from the browser.</p>'
        else:
            delete = pages.post_form("/_pbe/ui/delete", "delete from the archive", self.keys.csrf(visitor),
                                     {"id": str(aid), "r": link(parts[:-1])}, danger=True)
        caption = sanitise(meta.get("caption") or "")
        title = meta["title"] or str(aid)
        body = (f'<h1>{esc(title)}</h1>{gone}{neighbours}<div class="work"><div class="pages">{"".join(figures)}</div>'
                f'<aside>{pages.dl(rows)}'
                + (f'<div class="caption">{caption}</div>' if caption else "")
                + f'<p class="quality">quality: {qualities}</p><h2>Downloads</h2><ul class="downloads">{"".join(downloads)}</ul>'
                f'<h2>History</h2><ol class="history">{history}</ol>{delete}</aside></div>{neighbours}')
        return self._page(start_response, title, body, tree, visitor, environ, parts)

    # -- search -----------------------------------------------------------------------------------
    def found(self, tree: Tree, q: str, order: str) -> "_ByIdWorks":
        """Search results this visitor may see (NSFW works only where the
        listing views would show them, AI-generated ones unless hidden), in
        the visitor's order."""
        def make() -> _ByIdWorks:
            allowed = self.catalog.entries() if tree.policy == "enabled" else self.catalog.safe()
            hidden = self.catalog.ai() if tree.ai_policy == "hidden" else frozenset()
            ids = [aid for aid in self.search.find(q) if aid in allowed and aid not in hidden]
            key, newest_first = ORDERS.get(order, ORDERS["default"])
            return _ByIdWorks(self.catalog.sort(ids, key, newest_first))
        # kept for the generation: the next page and the artwork pages reached from a search ask again
        return self.remember(tree, ("found", q, order), make)

    def _search(self, tree: Tree, visitor: Visitor, environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        q = visitor.query.get("q", "").strip()[:200]
        if not q:
            body = "<h1>Search</h1><p>Search titles, tags (and their translations), artist names and captions.</p>"
        else:
            found = self.found(tree, q, visitor.order)
            self._prepare_search_cards(tree, visitor.image)
            body = f"<h1>Search: {esc(q)}</h1>" + self._grid(tree, found, visitor, {"q": q}, ordered=True)
        return self._page(start_response, f"search {q}", body, tree, visitor, environ, query=q)

    # -- /_pbe/ui/ ----------------------------------------------------------------------------------
    def _ui(self, method: str, rest: tuple[str, ...], environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        tree = self.tree_for(environ)
        if method == "POST":
            return self._post(rest, environ, start_response)
        if method not in ("GET", "HEAD"):
            raise _Answer("405 Method Not Allowed", f"{method} is not supported here")
        visitor = read(environ, self.display)
        if len(rest) == 2 and rest[0] == "static" and rest[1] in _STATIC:
            return self._static_file(rest[1], environ, start_response)
        if rest == ("search",):
            return self._search(tree, visitor, environ, start_response)
        if len(rest) == 2 and rest[0] == "nsfw" and rest[1] in ("enable", "disable"):
            back = _safe_return(visitor.query.get("r"))
            if not self.may_toggle:
                visitor.say(f"The NSFW policy of this server ({self.tree.policy}) cannot be changed by visitors.")
            elif rest[1] == "enable":
                visitor.remember("pbe_nsfw", "1")
            else:
                visitor.remember("pbe_nsfw", "", max_age=0)
            return self._redirect(start_response, back, visitor, environ)
        if len(rest) == 2 and rest[0] == "ai" and rest[1] in ("hide", "show"):
            back = _safe_return(visitor.query.get("r"))
            if not self.may_hide_ai:
                visitor.say("This server already hides AI-generated works outside by-id and ai.")
            elif rest[1] == "hide":
                visitor.remember("pbe_ai", "hide")
            else:
                visitor.remember("pbe_ai", "", max_age=0)
            return self._redirect(start_response, back, visitor, environ)
        if rest == ("admin",):
            return self._admin(tree, visitor, environ, start_response)
        if rest == ("refresh",):
            body = pages.confirm("Refresh", "Fetch new bookmarks from pixiv now?",
                                 pages.post_form("/_pbe/ui/refresh", "refresh now", self.keys.csrf(visitor), {"r": "/"}))
            return self._page(start_response, "refresh", body, tree, visitor, environ)
        if len(rest) == 2 and rest[0] == "delete":
            aid = self._artwork_id(tree, rest[1])
            info = tree.artwork_info(aid)
            if info["gone"]:
                raise _Answer("403 Forbidden", f"{aid} is gone from pixiv: this archive holds its only copy; "
                                               "it cannot be deleted from the browser")
            body = pages.confirm("Delete", f"Delete {aid} “{info['title']}” by {info['artist_name']} from the archive?",
                                 pages.post_form("/_pbe/ui/delete", "delete", self.keys.csrf(visitor),
                                                 {"id": str(aid), "r": "/"}, danger=True))
            return self._page(start_response, "delete", body, tree, visitor, environ)
        raise _Answer("404 Not Found", "no such page")

    def _static_file(self, name: str, environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        data = self._static[name]
        etag = '"' + hashlib.sha256(data).hexdigest()[:32] + '"'
        extra = [("ETag", etag), ("Cache-Control", "max-age=86400")]
        if etag_listed(environ.get("HTTP_IF_NONE_MATCH", ""), etag):
            return self._send(start_response, "304 Not Modified", b"", None, environ, _STATIC[name], extra)
        return self._send(start_response, "200 OK", data, None, environ, _STATIC[name], extra)

    def _admin(self, tree: Tree, visitor: Visitor, environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        csrf = self.keys.csrf(visitor)
        if not self.access.read_only:
            body = pages.message_page("Admin", "This server is not read-only: refresh and delete work without a login.")
        elif self.keys.is_admin(visitor):
            body = (pages.message_page("Admin", "You are logged in for this browser session.")
                    + pages.post_form("/_pbe/ui/logout", "log out", csrf))
        else:
            body = ("<h1>Admin</h1><p>This server is read-only: refreshing and deleting need the "
                    "<code>read_only_token</code> from config.json, once per browser session.</p>"
                    f'<form method="post" action="/_pbe/ui/admin"><input type="hidden" name="csrf" value="{esc(csrf)}">'
                    '<label>token <input type="password" name="token" autocomplete="current-password" required></label> '
                    "<button>log in</button></form>")
        return self._page(start_response, "admin", body, tree, visitor, environ)

    def _artwork_id(self, tree: Tree, text: str) -> int:
        if not text.isdigit() or len(text) > 19:
            raise _Answer("400 Bad Request", f"not an artwork id: {text[:40]!r}")
        aid = int(text)
        if tree.get(("by-id", str(aid))) is None:
            raise _Answer("404 Not Found", f"artwork {aid} is not in this archive")
        return aid

    # -- forms -----------------------------------------------------------------------------------
    def _form(self, environ: dict[str, Any]) -> dict[str, str]:
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        body = environ["wsgi.input"].read(length) if length > 0 else b""
        try:
            return dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise _Answer("400 Bad Request", "the form is not UTF-8") from None

    def _same_origin(self, environ: dict[str, Any]) -> bool:
        origin = environ.get("HTTP_ORIGIN")
        if origin is None:
            return True
        host = environ.get("HTTP_HOST", "")
        return re.sub(r"^https?://", "", origin) == host

    def _post(self, rest: tuple[str, ...], environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        form = self._form(environ)
        visitor = read(environ, self.display)
        if not self._same_origin(environ) or not self.keys.csrf_ok(visitor, form):
            raise _Answer("403 Forbidden", "this form did not come from this gallery (cross-site request refused); "
                                           "reload the page and try again")
        back = _safe_return(form.get("r"))
        if rest == ("admin",):
            if self.keys.log_in(visitor, form.get("token", "")):
                visitor.say("Logged in as admin for this browser session.")
                return self._redirect(start_response, back if form.get("r") else "/", visitor, environ)
            visitor.say("Wrong token.")
            return self._redirect(start_response, "/_pbe/ui/admin", visitor, environ)
        if rest == ("logout",):
            self.keys.log_out(visitor)
            visitor.say("Logged out.")
            return self._redirect(start_response, "/", visitor, environ)
        if rest in (("refresh",), ("delete",)) and self.access.read_only and not self.keys.is_admin(visitor):
            visitor.say("This server is read-only: log in with the read-only token first.")
            return self._redirect(start_response, "/_pbe/ui/admin", visitor, environ)
        if rest == ("refresh",):
            visitor.say(self.refresh() if self.refresh is not None else "No sync is configured for this server.")
            return self._redirect(start_response, back, visitor, environ)
        if rest == ("delete",):
            tree = self.tree_for(environ)
            aid = self._artwork_id(tree, form.get("id", ""))
            try:
                tree.delete(("by-id", str(aid)))
            except TreeError as exc:
                visitor.say(f"Not deleted: {exc}")
                return self._redirect(start_response, link(("by-id", str(aid))), visitor, environ)
            visitor.say(f"Deleted {aid} from the archive.")
            if back != "/" and self.tree_for(environ).get(_tree_path(back)) is None:
                back = "/"  # the folder it was in has gone with it
            return self._redirect(start_response, back, visitor, environ)
        if rest == ("settings",):
            return self._settings(form, environ, start_response)
        raise _Answer("404 Not Found", "no such form")

    def _settings(self, form: dict[str, str], environ: dict[str, Any], start_response: Respond,
                  artwork: bool = False) -> list[bytes]:
        """The old app's /display/home and /display/artwork forms: here
        they set this visitor's settings, never the instance's."""
        query = {k: form[k] for k in ("image", "ipp", "order") if k in form}
        environ = {**environ, "QUERY_STRING": urlencode(query)}
        visitor = read(environ, self.display, artwork_page=artwork)
        visitor.say("Display settings saved for this browser.")
        return self._redirect(start_response, "/", visitor, environ)

    # -- the old app's URLs ---------------------------------------------------------------------------
    def _old(self, method: str, parts: tuple[str, ...], environ: dict[str, Any], start_response: Respond) -> list[bytes]:
        tree = self.tree_for(environ)
        head, rest = parts[0], parts[1:]

        def go(location: str, status: str = "301 Moved Permanently") -> list[bytes]:
            return self._redirect(start_response, location, None, environ, status)

        if head == "display":
            if rest in (("home",), ("artwork",)):
                if method != "POST":
                    return go("/", "302 Found")
                if not self._same_origin(environ):  # only this visitor's cookies change, but not from elsewhere
                    raise _Answer("403 Forbidden", "cross-site request refused")
                form = self._form(environ)
                return self._settings(form, environ, start_response, artwork=rest == ("artwork",))
            if len(rest) == 2 and rest[0] == "nsfw" and rest[1] in ("enable", "disable"):
                query = environ.get("QUERY_STRING", "")
                return go(f"/_pbe/ui/nsfw/{rest[1]}" + (f"?{query}" if query else ""), "302 Found")
            raise _Answer("404 Not Found", "no such page")
        if method == "POST":
            raise _Answer("405 Method Not Allowed", "this page changes nothing by POST; use its buttons")
        if head == "refresh" and not rest:
            return go("/_pbe/ui/refresh", "302 Found")
        if head == "admin" and not rest:
            return go("/_pbe/ui/admin")
        if head == "random" and not rest:
            listing = tree.list(("by-ingress",)) or []
            if not listing:
                raise _Answer("404 Not Found", "the archive is empty")
            return go(link(("by-ingress", random.choice(listing)[0])), "302 Found")
        if head == "p" and 1 <= len(rest) <= 4:
            query = {"page": rest[0]}
            query.update({k: v for k, v in zip(("image", "ipp", "order"), rest[1:])})
            return go("/?" + urlencode(query))
        if head == "i" and len(rest) in (2, 3):
            aid = self._artwork_id(tree, rest[0])
            return go(link(self._image(tree, aid, rest[1], rest[2] if len(rest) == 3 else None), False))
        if head == "a" and rest:
            aid = self._artwork_id(tree, rest[0])
            base = ("by-id", str(aid))
            sub = rest[1:]
            if not sub:
                return go(link(base))
            if len(sub) == 1 and sub[0] in QUALITIES:
                return go(link(base, True, {"image": sub[0]}))
            if sub == ("meta",):
                return go(link(base + ("meta.json",), False))
            if sub == ("pixiv",):
                return go(meta_render.PAGE_URL.format(aid), "302 Found")
            if sub == ("user-pixiv",):
                return go(f"https://www.pixiv.net/users/{tree.artwork_info(aid)['artist_id']}", "302 Found")
            if sub == ("delete",):
                return go(f"/_pbe/ui/delete/{aid}", "302 Found")
            if sub[0] in ("zip", "pdf") and len(sub) <= 2:
                quality = sub[1] if len(sub) == 2 else self.display.artwork.image
                if quality not in QUALITIES:
                    raise _Answer("404 Not Found", f"no quality {quality[:40]!r}: use one of {', '.join(QUALITIES)}")
                return go(link(self._in_quality(tree, aid, quality, f"{aid}.{sub[0]}"), False))
        raise _Answer("404 Not Found", "no such page")

    def _in_quality(self, tree: Tree, aid: int, quality: str, name: str) -> tuple[str, ...]:
        """Where a file of a quality sits in the work's by-id folder."""
        base = ("by-id", str(aid))
        listing = dict(tree.list(base) or [])
        if quality in listing:
            return base + (quality, name)
        return base + (name,)

    def _image(self, tree: Tree, aid: int, number: str, quality: str | None) -> tuple[str, ...]:
        found = tree.record(aid)
        if found is None:
            raise _Answer("404 Not Found", "no such artwork")
        record = found[0]
        quality = quality or self.display.artwork.image
        if quality not in QUALITIES or not number.isdigit():
            raise _Answer("404 Not Found", "no such image")
        files = [f for f in record.get("files", []) if f["page"] == int(number)]
        chosen = next((f for f in files if f["role"] == quality), None) or next(
            (f for f in files if f["role"] == "original"), None)
        if chosen is None:
            raise _Answer("404 Not Found", f"{aid} has no page {number}")
        return self._in_quality(tree, aid, chosen["role"], chosen["path"].rsplit("/", 1)[-1])


class _ByIdWorks(Sequence):
    """Search results as the (folder path, id) pairs grids take, the paths
    made only for the page shown: a search matching thousands of works
    should not build thousands of tuples to show fifty."""

    def __init__(self, ids: list[int]) -> None:
        self.ids = ids

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [(("by-id", str(aid)), aid) for aid in self.ids[i]]
        return ("by-id", str(self.ids[i])), self.ids[i]


def _tree_path(url: str) -> tuple[str, ...]:
    """A local URL's path as tree parts."""
    return tuple(names.lookup_key(unquote(p)) for p in url.split("?", 1)[0].split("/") if p)
