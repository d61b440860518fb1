"""pixiv captions as safe HTML: a few formatting tags kept, links only to
http(s) (opened without a referrer), everything else escaped as text."""

from __future__ import annotations

import html
from html.parser import HTMLParser

_KEEP = {"br", "strong", "b", "i", "em", "s", "u", "p"}
_VOID = {"br"}


class _Sanitiser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            self.out.append(f"<{tag}>")
        elif tag in _KEEP:
            self.out.append(f"<{tag}>")
            self.open.append(tag)
        elif tag == "a":
            url = dict(attrs).get("href") or ""
            if url.lower().startswith(("https://", "http://")):
                self.out.append(f'<a href="{html.escape(url, quote=True)}" rel="noreferrer noopener nofollow">')
            else:
                self.out.append("<a>")
            self.open.append("a")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _VOID:
            self.out.append(f"<{tag}>")

    def handle_endtag(self, tag: str) -> None:
        if tag in self.open:
            while self.open:
                last = self.open.pop()
                self.out.append(f"</{last}>")
                if last == tag:
                    break

    def handle_data(self, data: str) -> None:
        self.out.append(html.escape(data, quote=False))


def sanitise(caption: str) -> str:
    parser = _Sanitiser()
    parser.feed(caption or "")
    parser.close()
    return "".join(parser.out) + "".join(f"</{t}>" for t in reversed(parser.open))
