"""An OPDS 1.2 catalog of the tree at ``/opds/``, for comic and e-book readers.

OPDS is Atom: a folder of folders is a navigation feed, a folder of
artwork folders an acquisition feed whose entries link each work's cover,
thumbnail, CBZ, PDF and zip. Both are cut into pages of ``PER_PAGE`` with
``next``/``previous`` links. The feeds are the tree's own folders seen
through the visitor's tree (``Gallery.tree_for``), so names, NSFW and AI
policies and live updates are the tree's; search is the gallery's search.
Authentication is the server's, as for every other GET.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import quoteattr

from ..artwork import top_quality
from ..multistatus import content_type, quote_segment
from ..render.comicinfo import xml_safe
from ..render.meta import PAGE_URL
from ..tree import Tree
from .pages import VIEW_LABELS, link

NAVIGATION = "application/atom+xml;profile=opds-catalog;kind=navigation"
ACQUISITION = "application/atom+xml;profile=opds-catalog;kind=acquisition"
OPENSEARCH = "application/opensearchdescription+xml"
PER_PAGE = 50
_ACQUIRE = "http://opds-spec.org/acquisition"
_REDUCED = ("large", "medium", "square_medium")
_IMAGES = (("http://opds-spec.org/image", "large"), ("http://opds-spec.org/image/thumbnail", "square_medium"))
Respond = Callable[..., Any]
Work = tuple[tuple[str, ...], int]  # (artwork folder path, id)


def _x(text: object) -> str:
    """Text fit for XML content and double-quoted attributes."""
    return xml_safe(str(text)).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def _attr(text: object) -> str:
    return quoteattr(xml_safe(str(text)))


def _when(stamp: float) -> str:
    return datetime.fromtimestamp(stamp, timezone.utc).isoformat(timespec="seconds")


def _feed_url(rest: tuple[str, ...]) -> str:
    return link(("opds",) + rest)


class Opds:
    def __init__(self, gallery: Any) -> None:
        """``gallery`` is the server's Gallery: its trees, catalog and search."""
        self.gallery = gallery

    def handle(self, parts: tuple[str, ...], environ: dict[str, Any], start_response: Respond) -> list[bytes] | None:
        """A feed for a GET or HEAD below /opds/, or None (not ours)."""
        if parts[:1] != ("opds",) or environ["REQUEST_METHOD"] not in ("GET", "HEAD"):
            return None
        tree = self.gallery.tree_for(environ)
        rest = parts[1:]
        query = dict(parse_qsl(environ.get("QUERY_STRING", "")))
        try:
            page = max(1, int(query.get("page", "1")))
        except ValueError:
            page = 1
        if rest == ("search.xml",):
            return self._send(start_response, environ, OPENSEARCH, self._opensearch(environ))
        if rest == ("search",):
            q = query.get("q", "").strip()[:200]
            works = self.gallery.found(tree, q, "default") if q else []
            body = self._acquisition(tree, rest, f"search: {q}", works, page, {"q": q})
            return self._send(start_response, environ, ACQUISITION, body)
        node = tree.get(rest)
        if node is None or not node.is_dir or node.artwork:
            return self._send(start_response, environ, "text/plain; charset=utf-8",
                              b"no such catalog here\n", "404 Not Found")
        if tree.place(rest + ("-",)) == "artwork":
            works = self.gallery.remember(tree, ("opds", rest), lambda: self.gallery.ordered(
                [(rest + (n,), c.artwork) for n, c in tree.list(rest) or [] if c.is_artwork_root], "default"))
            title = VIEW_LABELS.get(rest[0], rest[0]) if len(rest) == 1 else rest[-1]
            return self._send(start_response, environ, ACQUISITION,
                              self._acquisition(tree, rest, title, works, page, {}))
        return self._send(start_response, environ, NAVIGATION, self._navigation(tree, rest, page))

    # -- responses ----------------------------------------------------------------------------
    def _send(self, start_response: Respond, environ: dict[str, Any], ctype: str, body: bytes,
              status: str = "200 OK") -> list[bytes]:
        start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                                ("Cache-Control", "no-cache"), ("X-Content-Type-Options", "nosniff")])
        return [b"" if environ["REQUEST_METHOD"] == "HEAD" else body]

    def _opensearch(self, environ: dict[str, Any]) -> bytes:
        host = environ.get("HTTP_HOST") or f"{environ.get('SERVER_NAME', '127.0.0.1')}:{environ.get('SERVER_PORT', '80')}"
        template = f"{environ.get('wsgi.url_scheme', 'http')}://{host}/opds/search?q={{searchTerms}}"
        return ('<?xml version="1.0" encoding="utf-8"?>\n'
                '<OpenSearchDescription xmlns="http://a9.com/-/spec/opensearch/1.1/">\n'
                "  <ShortName>pbe-fs</ShortName>\n"
                "  <Description>Titles, tags (and their translations), artists and captions</Description>\n"
                "  <InputEncoding>UTF-8</InputEncoding>\n  <OutputEncoding>UTF-8</OutputEncoding>\n"
                f"  <Url type={_attr(ACQUISITION)} template={_attr(template)}/>\n"
                "</OpenSearchDescription>\n").encode()

    # -- feeds ----------------------------------------------------------------------------------
    def _feed(self, tree: Tree, rest: tuple[str, ...], title: str, kind: str, page: int, total: int,
              query: dict[str, str], entries: list[str]) -> bytes:
        """The Atom feed around entries: self, start, up, search and the page links."""
        pages = max(1, -(-total // PER_PAGE))
        here = _feed_url(rest)

        def at(n: int) -> str:
            args = {**query, **({"page": str(n)} if n > 1 else {})}
            return here + ("?" + urlencode(args) if args else "")

        links = [("self", at(page), kind), ("start", _feed_url(()), NAVIGATION),
                 ("search", "/opds/search.xml", OPENSEARCH), ("first", at(1), kind), ("last", at(pages), kind)]
        if rest:
            links.append(("up", _feed_url(rest[:-1] if rest != ("search",) else ()), NAVIGATION))
        if page > 1:
            links.append(("previous", at(min(page - 1, pages)), kind))
        if page < pages:
            links.append(("next", at(page + 1), kind))
        head = [
            '<?xml version="1.0" encoding="utf-8"?>',
            '<feed xmlns="http://www.w3.org/2005/Atom" xmlns:opds="http://opds-spec.org/2010/catalog" '
            'xmlns:opensearch="http://a9.com/-/spec/opensearch/1.1/">',
            f"<id>{_x('urn:pbe-fs:opds:/' + '/'.join(rest))}</id>",
            f"<title>{_x(title)}</title>",
            f"<updated>{_when(tree.get(()).mtime)}</updated>",
            "<author><name>pbe-fs</name></author>",
        ]
        head += [f"<link rel={_attr(rel)} href={_attr(href)} type={_attr(t)}/>" for rel, href, t in links]
        head += [f"<opensearch:totalResults>{total}</opensearch:totalResults>",
                 f"<opensearch:itemsPerPage>{PER_PAGE}</opensearch:itemsPerPage>",
                 f"<opensearch:startIndex>{(page - 1) * PER_PAGE + 1}</opensearch:startIndex>"]
        return ("\n".join(head + entries + ["</feed>"]) + "\n").encode("utf-8")

    def _navigation(self, tree: Tree, rest: tuple[str, ...], page: int) -> bytes:
        folders = [n for n, c in tree.list(rest) or [] if c.is_dir]
        if not rest:  # the views, in the order the tree gives them
            folders = [v for v in tree.views() if v in folders]
        updated = _when(tree.get(()).mtime)
        entries = []
        for name in folders[(page - 1) * PER_PAGE: page * PER_PAGE]:
            child = rest + (name,)
            kind = ACQUISITION if tree.place(child + ("-",)) == "artwork" else NAVIGATION
            title = VIEW_LABELS.get(name, name) if not rest else name
            entries.append(f"<entry><title>{_x(title)}</title><id>{_x('urn:pbe-fs:opds:/' + '/'.join(child))}</id>"
                           f"<updated>{updated}</updated><content type=\"text\">{_x('/'.join(child))}</content>"
                           f"<link rel=\"subsection\" href={_attr(_feed_url(child))} type={_attr(kind)}/></entry>")
        title = "pbe-fs" if not rest else rest[-1]
        return self._feed(tree, rest, title, NAVIGATION, page, len(folders), {}, entries)

    def _acquisition(self, tree: Tree, rest: tuple[str, ...], title: str, works: list[Work], page: int,
                     query: dict[str, str]) -> bytes:
        made = self.gallery.remember(tree, ("opds-entries",), dict)  # an entry's XML, once per generation
        if len(made) > 20_000:
            made.clear()
        entries = []
        for path, aid in works[(page - 1) * PER_PAGE: page * PER_PAGE]:
            xml = made.get(path)
            if xml is None:
                xml = made[path] = self._entry(tree, path, aid)
            entries.append(xml)
        return self._feed(tree, rest, title, ACQUISITION, page, len(works), query, entries)

    def _entry(self, tree: Tree, path: tuple[str, ...], aid: int) -> str:
        """One work's entry. Hrefs come from ``link``, percent-encoded: only
        titles, names, tags and dates need escaping."""
        info = tree.artwork_info(aid)
        entry = self.gallery.catalog.get(aid)
        date = _x(info["create_date"] or _when(tree.get(()).mtime))
        artist = _x(info["artist_name"])
        pages = entry.pages if entry else 1
        out = [f'<entry><title>{_x(info["title"] or aid)}</title><id>urn:pixiv:artwork:{aid}</id>'
               f"<updated>{date}</updated><published>{date}</published><author><name>{artist}</name>"
               f'<uri>https://www.pixiv.net/users/{info["artist_id"]}</uri></author>']
        out += [f'<category term="{t}" label="{t}"/>' for t in map(_x, info["tags"])]  # type: ignore[call-overload]
        out.append(f'<content type="text">{artist} · {pages} page{"s" if pages != 1 else ""} · {date[:10]}'
                   f'{" · gone from pixiv" if info["gone"] else ""}</content>')
        folder = link(path)  # the work's files are below it: their hrefs extend it

        def href(target: tuple[str, ...]) -> str:
            return folder + "/".join(map(quote_segment, target[len(path):]))
        for rel, quality in _IMAGES:
            image = self.gallery.catalog.thumbnail(path, aid, quality)
            if image:
                out.append(f'<link rel="{rel}" href="{href(image)}" type="{content_type(image[-1])}"/>')
        for target in self._downloads(tree, path, aid):
            out.append(f'<link rel="{_ACQUIRE}" href="{href(target)}" type="{content_type(target[-1])}"/>')
        out.append(f'<link rel="alternate" href="{folder}" type="text/html"/>'
                   f'<link rel="related" href="{PAGE_URL.format(aid)}" type="text/html"/></entry>')
        return "".join(out)

    def _downloads(self, tree: Tree, path: tuple[str, ...], aid: int) -> list[tuple[str, ...]]:
        """The work's CBZ, PDF and zip where its folder has them (an
        animation's top quality may hold its frames only: then a size
        folder's), or its GIF when it has nothing else."""
        entry = self.gallery.catalog.get(aid)
        if entry is None:
            return []
        top = top_quality(tree.top_quality, entry.first)
        role: str | None = top
        if top not in entry.first or (entry.type == "ugoira" and top == "original"):
            role = next((q for q in _REDUCED if q in entry.first), None)
        if role is None:
            return [path + (f"{aid}.gif",)]
        base = path if role == top else path + (role,)
        return [base + (f"{aid}.{ext}",) for ext in ("cbz", "pdf", "zip")]
