"""A work's pages as a CBZ: the computed zip of ``zip.py`` with reader-safe
names and a ComicInfo.xml in front.

Comic readers sort a CBZ's images by name, so pixiv's ``_p10`` would come
before ``_p2``: the pages are renamed ``001.jpg``, ``002.png``… (wide
enough for the page count). The XML is the only byte that is not an
archived file, so like the zip the CBZ has its exact size before a read,
answers any offset, and takes no disk.
"""

from __future__ import annotations

import posixpath
import zlib
from datetime import datetime

from ..storage import Store
from . import zip as zip_render
from .segments import Segments

COMICINFO = "ComicInfo.xml"


def page_names(names: list[str]) -> list[str]:
    """Zero-padded names in page order, each keeping its file's extension."""
    width = max(3, len(str(len(names))))
    return [f"{i + 1:0{width}d}{posixpath.splitext(name)[1].lower()}" for i, name in enumerate(names)]


def layout(pages: list[zip_render.Member], comicinfo_xml: bytes, when: datetime, store: Store | None = None) -> Segments:
    """The CBZ of ``pages`` (in reading order) with ``comicinfo_xml``."""
    info = zip_render.Member(COMICINFO, "", len(comicinfo_xml), zlib.crc32(comicinfo_xml), data=comicinfo_xml)
    renamed = [zip_render.Member(name, m.key, m.size, m.crc32, m.version)
               for m, name in zip(pages, page_names([m.name for m in pages]))]
    return zip_render.layout([info] + renamed, when, store)
