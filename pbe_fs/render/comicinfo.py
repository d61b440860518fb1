"""ComicInfo.xml (the Anansi ComicInfo 2.0 schema) for a work's CBZ.

Comic readers and servers (Komga, Kavita, KOReader, Mihon, LANraragi) read
title, series, creators, date, age rating, reading direction and page
sizes from this one file at the root of a CBZ. It is made from the work's
record and pixiv JSON, a few hundred bytes held in memory, never stored.

2.0 is an ``xs:sequence``: elements must come in the schema's order, so
``ELEMENTS`` fixes it and ``comicinfo`` emits in that order only. pixiv's
app API says neither a work's place in its series nor its language, so
``Number`` and ``LanguageISO`` are never written.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass
from typing import Any
from xml.sax.saxutils import escape

from .. import illust
from .meta import PAGE_URL

# The schema's sequence (the ones pbe-fs writes are a subset, in this order).
ELEMENTS = ("Title", "Series", "Number", "Count", "Volume", "AlternateSeries", "AlternateNumber", "AlternateCount",
            "Summary", "Notes", "Year", "Month", "Day", "Writer", "Penciller", "Inker", "Colorist", "Letterer",
            "CoverArtist", "Editor", "Publisher", "Imprint", "Genre", "Web", "PageCount", "LanguageISO", "Format",
            "BlackAndWhite", "Manga", "Characters", "Teams", "Locations", "ScanInformation", "StoryArc",
            "SeriesGroup", "AgeRating", "Pages", "CommunityRating")
# XML 1.0 refuses these code points even escaped; pixiv titles can hold them.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")


@dataclass(frozen=True)
class PageInfo:
    """One image of the CBZ, as ComicInfo's ``Page`` describes it."""

    width: int
    height: int
    size: int


_BREAK = re.compile(r"<br\s*/?>|</?p\b[^>]*>", re.I)
_TAG = re.compile(r"<[^>]*>")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


def plain_caption(caption: str) -> str:
    """pixiv's caption HTML as plain text: line breaks kept, tags dropped."""
    if "<" not in caption and "&" not in caption:
        return caption.strip()
    return html.unescape(_TAG.sub("", _BREAK.sub("\n", caption))).strip()


def xml_safe(text: str) -> str:
    """text without the code points XML 1.0 cannot hold (U+FFFD in their place)."""
    return _NOT_XML.sub("\ufffd", text)


def fields(raw: dict[str, Any], page_count: int) -> dict[str, str]:
    """The ComicInfo elements of a work, by name (strings as written)."""
    f = illust.fields(raw)
    series = raw.get("series") if isinstance(raw.get("series"), dict) else {}
    series_title = series.get("title") if isinstance(series.get("title"), str) and series.get("title") else ""
    title = f["title"] or str(f["id"])
    genre: list[str] = []
    for name, translated in f["tags"]:
        for tag in (name, translated):
            if tag and tag not in genre:
                genre.append(tag)
    out = {"Title": title, "Series": series_title or title}
    summary = plain_caption(f["caption"])
    if summary:
        out["Summary"] = summary
    date = f["create_date"]  # pixiv gives it in JST: its calendar date is the JST date
    if _DATE.match(date):
        out.update(Year=str(int(date[:4])), Month=str(int(date[5:7])), Day=str(int(date[8:10])))
    if f["artist_name"]:
        out.update(Writer=f["artist_name"], Penciller=f["artist_name"])
    out["Publisher"] = "pixiv"
    if genre:
        out["Genre"] = ", ".join(genre)
    out["Web"] = PAGE_URL.format(f["id"])
    out["PageCount"] = str(page_count)
    out["Manga"] = "YesAndRightToLeft" if f["type"] == "manga" else "No"
    out["AgeRating"] = "R18+" if f["x_restrict"] > 0 else "Everyone"
    return out


def comicinfo(raw: dict[str, Any], pages: list[PageInfo]) -> bytes:
    """The whole ComicInfo.xml; ``pages`` in the CBZ's image order."""
    values = fields(raw, len(pages))
    lines = ['<?xml version="1.0" encoding="utf-8"?>',
             '<ComicInfo xmlns:xsd="http://www.w3.org/2001/XMLSchema" '
             'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">']
    for name in ELEMENTS:
        if name == "Pages":
            lines.append("  <Pages>")
            for i, page in enumerate(pages):
                kind = ' Type="FrontCover"' if i == 0 else ""
                dims = f' ImageWidth="{page.width}" ImageHeight="{page.height}"' if page.width and page.height else ""
                lines.append(f'    <Page Image="{i}"{kind} ImageSize="{page.size}"{dims} />')
            lines.append("  </Pages>")
        elif name in values:
            lines.append(f"  <{name}>{escape(xml_safe(values[name]))}</{name}>")
    lines.append("</ComicInfo>")
    return ("\n".join(lines) + "\n").encode("utf-8")

