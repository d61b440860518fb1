"""The gallery's HTML: one layout, and the blocks pages are made of.

Every piece of text from the archive goes through ``esc`` and every link
through ``link`` (the same percent-encoding as PROPFIND's hrefs), so
hostile titles stay text and every name survives a round trip. Pages use
only the stylesheet and script pbe-fs serves itself.
"""

from __future__ import annotations

import html
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Iterable
from urllib.parse import urlencode

from ..multistatus import href
from .visitor import GRID_QUALITIES, IPP_CHOICES, Visitor

STATIC = "/_pbe/ui/static/"
VIEW_LABELS = {"by-ingress": "bookmarks", "by-date": "by date", "by-artist": "by artist", "by-tag": "by tag",
               "by-id": "by id", "nsfw": "NSFW", "gone": "gone", "private": "private", "ai": "AI",
               "changes": "changes"}


def esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def link(parts: tuple[str, ...], folder: bool = True, query: dict[str, str] | None = None) -> str:
    url = href(parts, folder)
    return url + ("?" + urlencode(query) if query else "")


@dataclass
class Chrome:
    """What the header and footer of every page show."""

    visitor: Visitor
    csrf: str
    views: list[str]
    nsfw_toggle: str  # "" when the policy allows no choice, else "enable" or "disable"
    here: str  # this page's URL (for return links)
    admin: bool
    read_only: bool
    ai_toggle: str = ""  # "" when the server hides AI works already, else "hide" or "show"


def layout(title: str, body: str, chrome: Chrome, crumbs: tuple[str, ...] | None = None, *, query: str = "") -> bytes:
    views = "".join(f'<a href="{link((v,))}">{esc(VIEW_LABELS.get(v, v))}</a>' for v in chrome.views)
    nav = ""
    if crumbs:
        trail = ['<a href="/">home</a>'] + [f'<a href="{link(crumbs[: i + 1])}">{esc(p)}</a>'
                                             for i, p in enumerate(crumbs)]
        nav = f'<nav class="crumbs">{" / ".join(trail)}</nav>'
    toggle = ""
    if chrome.nsfw_toggle:
        label = "show NSFW" if chrome.nsfw_toggle == "enable" else "hide NSFW"
        toggle = (f'<a class="nsfw-toggle" href="/_pbe/ui/nsfw/{chrome.nsfw_toggle}?{urlencode({"r": chrome.here})}">'
                  f"{label}</a>")
    if chrome.ai_toggle:
        label = "hide AI" if chrome.ai_toggle == "hide" else "show AI"
        toggle += (f'<a class="ai-toggle" href="/_pbe/ui/ai/{chrome.ai_toggle}?{urlencode({"r": chrome.here})}">'
                   f"{label}</a>")
    who = ""
    if chrome.read_only:
        who = ('<span class="who">admin · <a href="/_pbe/ui/admin">log out</a></span>' if chrome.admin
               else '<a class="who" href="/_pbe/ui/admin">admin</a>')
    flash = f'<p class="flash" role="status">{esc(chrome.visitor.flash)}</p>' if chrome.visitor.flash else ""
    return (
        "<!DOCTYPE html>\n<html lang=\"ja\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        "<meta name=\"color-scheme\" content=\"light dark\">"
        f"<title>{esc(title)} · pbe-fs</title><link rel=\"stylesheet\" href=\"{STATIC}gallery.css\">"
        f"<script src=\"{STATIC}gallery.js\" defer></script></head><body>"
        f"<header><a class=\"brand\" href=\"/\">pbe-fs</a><nav class=\"views\">{views}</nav>{toggle}{who}"
        f"<form class=\"search\" action=\"/_pbe/ui/search\" method=\"get\" role=\"search\">"
        f"<input type=\"search\" name=\"q\" value=\"{esc(query)}\" placeholder=\"title, tag, artist, caption\" "
        f"aria-label=\"search\"><button>search</button></form></header>"
        f"<main>{nav}{flash}{body}</main></body></html>\n").encode("utf-8")


def post_form(action: str, label: str, csrf: str, fields: dict[str, str] | None = None, *, danger: bool = False) -> str:
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in (fields or {}).items())
    cls = ' class="danger"' if danger else ""
    return (f'<form method="post" action="{esc(action)}" class="action"><input type="hidden" name="csrf" value="{esc(csrf)}">'
            f"{hidden}<button{cls}>{esc(label)}</button></form>")


def settings_form(visitor: Visitor, keep: dict[str, str]) -> str:
    def select(name: str, choices: Iterable[str], current: str, labels: dict[str, str] | None = None) -> str:
        opts = "".join(f'<option value="{esc(c)}"{" selected" if c == current else ""}>{esc((labels or {}).get(c, c))}'
                       f"</option>" for c in choices)
        return f'<label>{name} <select name="{name}">{opts}</select></label>'
    hidden = "".join(f'<input type="hidden" name="{esc(k)}" value="{esc(v)}">' for k, v in keep.items())
    ipp = list(IPP_CHOICES) + ([visitor.ipp_label] if visitor.ipp_label not in IPP_CHOICES else [])
    order_labels = {"default": "bookmark order", "artwork": "creation date", "desc": "creation date",
                    "asc": "creation date, oldest first"}
    order = "artwork" if visitor.order == "desc" else visitor.order
    return (f'<form class="settings" method="get">{hidden}'
            f'{select("image", GRID_QUALITIES, visitor.image)}{select("ipp", ipp, visitor.ipp_label)}'
            f'{select("order", ("default", "artwork", "asc"), order, order_labels)}<button>apply</button></form>')


@dataclass
class Card:
    href: str
    title: str
    artist: str
    thumb: str  # "" for no image
    nsfw: bool = False


def pager(page: int, pages: int, keep: dict[str, str]) -> str:
    if pages <= 1:
        return ""
    def at(n: int) -> str:
        return "?" + urlencode({**keep, "page": str(n)})
    links = []
    if page > 1:
        links.append(f'<a href="{esc(at(page - 1))}" rel="prev">← newer</a>')
    links.append(f"<span>page {page} of {pages}</span>")
    if page < pages:
        links.append(f'<a href="{esc(at(page + 1))}" rel="next">older →</a>')
    return f'<p class="pager">{"".join(links)}</p>'


def card(c: Card) -> tuple[str, str]:
    """A grid card's HTML in two halves, split where its link ends: a
    search puts ``?q=...`` there, so one card serves every search."""
    img = f'<img src="{esc(c.thumb)}" alt="" loading="lazy" width="360" height="360">' if c.thumb else ""
    cls = ' class="nsfw"' if c.nsfw else ""
    return (f'<li{cls}><a href="{esc(c.href)}',
            f'">{img}<span class="t">{esc(c.title)}</span></a><span class="a">{esc(c.artist)}</span></li>')


def grid(cards: list[str], images: bool, total: int, page: int, pages: int, keep: dict[str, str]) -> str:
    """A page of cards (``card``'s HTML)."""
    noimg = "" if images else " noimg"
    return (f'<p class="count">{total} works</p>{pager(page, pages, keep)}<ul class="grid{noimg}">{"".join(cards)}</ul>'
            f"{pager(page, pages, keep)}")


def folder_list(entries: list[tuple[str, str, bool]]) -> str:
    """A plain list of (name, url, is_dir)."""
    items = "".join(f'<li><a href="{esc(url)}">{esc(name)}{"/" if is_dir else ""}</a></li>' for name, url, is_dir in entries)
    return f'<ul class="list">{items}</ul>'


def time_ago(iso: str, now: datetime | None = None) -> str:
    try:
        when = datetime.fromisoformat(iso)
    except (TypeError, ValueError):
        return ""
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    seconds = ((now or datetime.now(timezone.utc)) - when).total_seconds()
    for unit, size in (("year", 365 * 86400), ("month", 30 * 86400), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if n > 1 else ''} ago"
    return "just now"


def dl(rows: list[tuple[str, str]]) -> str:
    """A definition list; values are HTML already."""
    return '<dl class="meta">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in rows) + "</dl>"


def message_page(title: str, text: str) -> str:
    return f"<h1>{esc(title)}</h1><p>{esc(text)}</p>"


def confirm(title: str, text: str, form: str) -> str:
    return f"<h1>{esc(title)}</h1><p>{esc(text)}</p>{form}<p><a href=\"/\">cancel</a></p>"
