"""The browser view: what the seed web app was, as HTML pages over the tree.

A GET on a folder that asks for HTML gets a page: a grid of thumbnails for
folders of artworks (paginated by ``display.home.ipp``), the pages of an
artwork with its title, artist, tags and downloads, or a plain list for
other folders. Plain HTML and a little inline CSS, no scripts and no
external assets; every name is escaped (titles are hostile).
"""

from __future__ import annotations

import html
from typing import Any
from .artwork import QUALITIES, Node
from .multistatus import href
from .tree import Tree

_IMAGE = (".jpg", ".jpeg", ".png", ".gif", ".webp")
_CSS = """
body{font-family:system-ui,sans-serif;margin:0;background:#f6f6f6;color:#222}
header{background:#0096fa;color:#fff;padding:.6em 1em}header a{color:#fff}
main{padding:1em}nav.crumbs a{margin-right:.3em}
ul.grid{list-style:none;padding:0;display:grid;grid-template-columns:repeat(auto-fill,minmax(180px,1fr));gap:12px}
ul.grid li{background:#fff;border-radius:6px;overflow:hidden;box-shadow:0 1px 3px #0002}
ul.grid img{width:100%;aspect-ratio:1;object-fit:cover;display:block;background:#ddd}
ul.grid .t{display:block;padding:.3em .5em;font-size:.9em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap}
ul.grid .a{display:block;padding:0 .5em .4em;font-size:.8em;color:#666}
ul.list{columns:3 220px}.pager a,.pager span{margin:0 .4em}
.pages img{max-width:100%;display:block;margin:0 auto 12px;background:#fff}
.tags a{display:inline-block;background:#fff;border-radius:4px;padding:.1em .5em;margin:.2em}
.gone{color:#b00;font-weight:bold}dl.meta dt{font-weight:bold}dl.meta dd{margin:0 0 .4em}
"""


def _href(parts: tuple[str, ...], trailing: bool = True) -> str:
    """Links are encoded exactly like PROPFIND's hrefs (one function)."""
    return href(parts, trailing)


def _page(title: str, parts: tuple[str, ...], body: str) -> bytes:
    crumbs = ['<a href="/">pbe-fs</a>']
    for i in range(len(parts)):
        crumbs.append(f'<a href="{_href(parts[: i + 1])}">{html.escape(parts[i])}</a>')
    return (f"<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{html.escape(title)}</title>"
            f"<style>{_CSS}</style></head><body><header><nav class=\"crumbs\">{' / '.join(crumbs)}</nav></header>"
            f"<main>{body}</main></body></html>\n").encode("utf-8")


def _first_image(tree: Tree, parts: tuple[str, ...]) -> str | None:
    for name, node in tree.list(parts) or []:
        if not node.is_dir and name.lower().endswith(_IMAGE) and "_ugoira" not in name[-14:]:
            return name
    return None


def _thumbnail(tree: Tree, parts: tuple[str, ...]) -> str | None:
    """The square thumbnail of an artwork folder, or its first image."""
    for sub in ("square_medium", "medium", "large"):
        if tree.get(parts + (sub,)) is not None:
            name = _first_image(tree, parts + (sub,))
            if name:
                return _href(parts + (sub, name), trailing=False)
    name = _first_image(tree, parts)
    return _href(parts + (name,), trailing=False) if name else None


def _pager(page: int, pages: int) -> str:
    if pages <= 1:
        return ""
    links = []
    if page > 1:
        links.append(f'<a href="?page={page - 1}" rel="prev">← newer</a>')
    links.append(f"<span>page {page} of {pages}</span>")
    if page < pages:
        links.append(f'<a href="?page={page + 1}" rel="next">older →</a>')
    return f'<p class="pager">{"".join(links)}</p>'


def _grid(tree: Tree, parts: tuple[str, ...], entries: list[tuple[str, Node]], page: int, per_page: int) -> str:
    # newest first, like the seed's home page
    entries = list(reversed(entries)) if parts and parts[0] in ("by-ingress", "nsfw") else entries
    pages = max(1, -(-len(entries) // per_page))
    page = min(max(1, page), pages)
    items = []
    for name, node in entries[(page - 1) * per_page: page * per_page]:
        child = parts + (name,)
        info = tree.artwork_info(node.artwork)
        thumb = _thumbnail(tree, child)
        img = f'<img src="{thumb}" alt="" loading="lazy">' if thumb else "<img alt=\"\">"
        items.append(f'<li><a href="{_href(child)}">{img}<span class="t">{html.escape(info["title"] or str(node.artwork))}'
                     f'</span></a><span class="a">{html.escape(info["artist_name"])}</span></li>')
    return (f"<p>{len(entries)} works</p>{_pager(page, pages)}<ul class=\"grid\">{''.join(items)}</ul>"
            f"{_pager(page, pages)}")


def _list(parts: tuple[str, ...], entries: list[tuple[str, Node]]) -> str:
    items = "".join(f'<li><a href="{_href(parts + (name,), node.is_dir)}">{html.escape(name)}{"/" if node.is_dir else ""}'
                    f"</a></li>" for name, node in entries)
    return f'<ul class="list">{items}</ul>'


def _artwork(tree: Tree, parts: tuple[str, ...], node: Node, entries: list[tuple[str, Node]]) -> tuple[str, str]:
    info = tree.artwork_info(node.artwork)
    aid = node.artwork
    names = {name for name, _ in entries}
    shown = parts + ("large",) if "large" in names else parts
    images = [n for n, child in (tree.list(shown) or []) if not child.is_dir and n.lower().endswith(_IMAGE)
              and not n.startswith(f"{aid}.")]
    pages = "".join(f'<img src="{_href(shown + (n,), False)}" alt="{html.escape(n)}" loading="lazy">' for n in images)
    if f"{aid}.gif" in names:
        pages = f'<img src="{_href(parts + (f"{aid}.gif",), False)}" alt="animation">' + pages
    downloads = "".join(f'<li><a href="{_href(parts + (n,), False)}">{html.escape(n)}</a></li>' for n in
                        (f"{aid}.zip", f"{aid}.pdf", f"{aid}_ugoira.zip", f"{aid}.webp", "meta.json") if n in names)
    downloads += "".join(f'<li><a href="{_href(parts + (q,))}">{q}/</a></li>' for q in QUALITIES if q in names)
    artist = tree.artist_folder(node.artwork)
    tags = "".join(f'<a href="{_href(tree.tag_folder(t))}">#{html.escape(t)}</a>' for t in info["tags"])
    gone = '<p class="gone">Gone from pixiv: this archive holds the only copy.</p>' if info["gone"] else ""
    title = info["title"] or str(aid)
    body = (f"<h1>{html.escape(title)}</h1>{gone}<dl class=\"meta\">"
            f"<dt>Artist</dt><dd><a href=\"{_href(artist)}\">{html.escape(info['artist_name'])}</a></dd>"
            f"<dt>Date</dt><dd>{html.escape(info['create_date'][:10])}</dd>"
            f"<dt>Tags</dt><dd class=\"tags\">{tags}</dd>"
            f"<dt>pixiv</dt><dd><a href=\"https://www.pixiv.net/artworks/{aid}\" rel=\"noreferrer\">"
            f"https://www.pixiv.net/artworks/{aid}</a></dd></dl>"
            f"<ul class=\"downloads\">{downloads}</ul><div class=\"pages\">{pages}</div>")
    return title, body


def page(tree: Tree, parts: tuple[str, ...], query: dict[str, Any], per_page: int) -> bytes | None:
    """The HTML page of a folder, or None if parts is not a folder."""
    node = tree.get(parts)
    entries = tree.list(parts)
    if node is None or entries is None:
        return None
    try:
        number = int(query.get("page", "1"))
    except ValueError:
        number = 1
    if node.is_artwork_root:
        title, body = _artwork(tree, parts, node, entries)
    elif entries and all(child.is_artwork_root for _, child in entries):
        title, body = parts[-1] if parts else "pbe-fs", _grid(tree, parts, entries, number, per_page)
    else:
        title, body = (parts[-1] if parts else "pbe-fs"), _list(parts, entries)
    return _page(title, parts, body)
