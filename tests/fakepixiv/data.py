"""The stand-in's works: deterministic pixiv-shaped JSON and image bytes.

Same work, page and size always give the same bytes, so a test can compare
what was archived with what was served.
"""

from __future__ import annotations

import io
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from functools import lru_cache
from typing import Any

from PIL import Image

JST = timezone(timedelta(hours=9))
SIZE_PREFIX = {"large": "c/600x1200_90", "medium": "c/540x540_70", "square_medium": "c/360x360_70"}
SIZE_OF_PREFIX = {v.split("/")[1]: k for k, v in SIZE_PREFIX.items()}


@dataclass
class Work:
    id: int
    title: str
    artist: tuple[int, str, str]  # id, name, account
    type: str = "illust"
    pages: int = 1
    ext: str = "jpg"  # original format: jpg | png (RGBA) | gif
    x_restrict: int = 0
    tags: list[tuple[str, str | None]] = field(default_factory=lambda: [("オリジナル", "original")])
    frames: list[int] = field(default_factory=list)  # ugoira delays (ms)
    frames_served: bool = True
    state: str = "live"  # live | deleted | limit_sanity_level | limit_unviewable | ...
    size: tuple[int, int] = (64, 48)
    noise: bool = False  # random pixels: images that do not compress (multi-MiB originals)
    ai_type: int = 1  # illust_ai_type: 2 = AI-generated
    revision: int = 0  # >0: the artist re-uploaded the images (new URLs, and new bytes when size changes too)
    series: dict[str, Any] | None = None  # pixiv's {"id", "title"} of a manga series

    @property
    def created(self) -> datetime:
        return datetime(2020, 1, 1, tzinfo=JST) + timedelta(days=self.id % 1500, seconds=self.id % 86400)

    @property
    def stamp(self) -> str:
        return (self.created + timedelta(minutes=self.revision)).strftime("%Y/%m/%d/%H/%M/%S")

    def original_name(self, page: int) -> str:
        if self.type == "ugoira":
            return f"{self.id}_ugoira{page}.jpg"
        return f"{self.id}_p{page}.{self.ext}"

    def urls(self, base: str, page: int) -> dict[str, str]:
        return {
            "square_medium": f"{base}/{SIZE_PREFIX['square_medium']}/img-master/img/{self.stamp}/{self.id}_p{page}_square1200.jpg",
            "medium": f"{base}/{SIZE_PREFIX['medium']}/img-master/img/{self.stamp}/{self.id}_p{page}_master1200.jpg",
            "large": f"{base}/{SIZE_PREFIX['large']}/img-master/img/{self.stamp}/{self.id}_p{page}_master1200.jpg",
            "original": f"{base}/img-original/img/{self.stamp}/{self.original_name(page)}",
        }

    def to_json(self, base: str) -> dict[str, Any]:
        if self.state != "live":
            return self.placeholder(base)
        first = self.urls(base, 0)
        multi = self.pages > 1
        return {
            "id": self.id, "title": self.title, "type": self.type,
            "image_urls": {k: first[k] for k in ("square_medium", "medium", "large")},
            "caption": f"<a href=\"x\">caption of {self.id}</a>", "restrict": 0,
            "user": {"id": self.artist[0], "name": self.artist[1], "account": self.artist[2],
                     "profile_image_urls": {"medium": f"{base}/user-profile/{self.artist[0]}.jpg"}, "is_followed": False},
            "tags": [{"name": n, "translated_name": t} for n, t in self.tags],
            "tools": ["CLIP STUDIO PAINT"], "create_date": self.created.isoformat(),
            "page_count": self.pages, "width": self.size[0], "height": self.size[1],
            "sanity_level": 6 if self.x_restrict else 2, "x_restrict": self.x_restrict, "series": self.series,
            "meta_single_page": {} if multi else {"original_image_url": first["original"]},
            "meta_pages": [{"image_urls": self.urls(base, p)} for p in range(self.pages)] if multi else [],
            "total_view": 100 + self.id % 977, "total_bookmarks": self.id % 313, "is_bookmarked": True,
            "visible": True, "is_muted": False, "total_comments": 3, "illust_ai_type": self.ai_type, "illust_book_style": 0,
            "restriction_attributes": [],
        }

    def placeholder(self, base: str) -> dict[str, Any]:
        if self.state == "deleted":
            kind, visible, user = "limit_unknown", False, {"id": 0, "name": "", "account": ""}
        else:
            kind, visible = self.state, True
            user = {"id": self.artist[0], "name": self.artist[1], "account": self.artist[2]}
        url = f"{base}/common/images/{kind}_360.png"
        return {
            "id": self.id, "title": "-----" if not visible else self.title, "type": "illust",
            "image_urls": {"square_medium": url, "medium": url, "large": url},
            "caption": "", "restrict": 0, "user": {**user, "profile_image_urls": {"medium": url}, "is_followed": False},
            "tags": [], "tools": [], "create_date": "1970-01-01T09:00:00+09:00", "page_count": 1,
            "width": 0 if not visible else self.size[0], "height": 0 if not visible else self.size[1],
            "sanity_level": 2, "x_restrict": 0, "series": None, "meta_single_page": {}, "meta_pages": [],
            "total_view": 0, "total_bookmarks": 0, "is_bookmarked": True, "visible": visible, "is_muted": False,
        }

    def ugoira_metadata(self, base: str) -> dict[str, Any]:
        return {"ugoira_metadata": {
            "zip_urls": {"medium": f"{base}/img-zip-ugoira/img/{self.stamp}/{self.id}_ugoira600x600.zip"},
            "frames": [{"file": f"{n:06d}.jpg", "delay": d} for n, d in enumerate(self.frames)]}}


def _color(*key: Any) -> tuple[int, int, int]:
    h = zlib.crc32(repr(key).encode())
    return (h & 0xFF, (h >> 8) & 0xFF, (h >> 16) & 0xFF)


@lru_cache(maxsize=4096)
def render(work_id: int, page: int, kind: str, ext: str, size: tuple[int, int], noise: bool = False) -> bytes:
    """Deterministic image bytes for one file of one work."""
    w, h = size
    if kind == "square_medium":
        w = h = min(w, h)
    elif kind in ("medium", "large"):
        w, h = max(8, w * 3 // 4), max(8, h * 3 // 4)
    tag = f"pbe-fake {work_id} {page} {kind}".encode()
    buf = io.BytesIO()
    if noise:
        import random
        mode = "RGBA" if ext == "png" else "RGB"
        pixels = random.Random(f"{work_id} {page} {kind}").randbytes(w * h * len(mode))
        Image.frombytes(mode, (w, h), pixels).save(buf, "PNG" if ext == "png" else "JPEG", compress_level=1)
    elif ext == "png":
        im = Image.new("RGBA", (w, h), _color(work_id, page, kind) + (128,))
        im.putpixel((0, 0), (work_id % 256, page % 256, 7, 0))
        from PIL import PngImagePlugin

        info = PngImagePlugin.PngInfo()
        info.add_text("Comment", tag.decode())
        im.save(buf, "PNG", pnginfo=info)
    elif ext == "gif":
        frames = [Image.new("P", (w, h), (n * 40 + work_id) % 256) for n in range(2)]
        frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0, comment=tag)
    else:
        im = Image.new("RGB", (w, h), _color(work_id, page, kind))
        for x in range(0, w, 7):
            im.putpixel((x, (x * 3 + page) % h), (255, 255, 255))
        im.save(buf, "JPEG", quality=85, comment=tag)
    return buf.getvalue()


def render_zip(work: Work, large: bool) -> bytes:
    buf = io.BytesIO()
    size = (work.size[0] * (2 if large else 1), work.size[1] * (2 if large else 1))
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        for n in range(len(work.frames)):
            info = zipfile.ZipInfo(f"{n:06d}.jpg", (2020, 1, 1, 0, 0, 0))
            zf.writestr(info, render(work.id, n, "zip1920" if large else "zip600", "jpg", size))
    return buf.getvalue()


_ORIGINAL = re.compile(r"^/img-original/img/(?:\d+/){6}(\d+)_(?:p|ugoira)(\d+)\.(jpg|png|gif)$")
_MASTER = re.compile(r"^/c/([^/]+)/img-master/img/(?:\d+/){6}(\d+)_p(\d+)_(?:master|square)1200\.jpg$")
_ZIP = re.compile(r"^/img-zip-ugoira/img/(?:\d+/){6}(\d+)_ugoira(600x600|1920x1080)\.zip$")
_LIMIT = re.compile(r"^/common/images/(limit_\w+?)_360\.png$")


def image_for_path(path: str, works: dict[int, Work]) -> bytes | None:
    """The bytes a pximg path serves, or None for 404."""
    if m := _ORIGINAL.match(path):
        work = works.get(int(m[1]))
        page = int(m[2])
        if work is None or work.state != "live":
            return None
        if work.type == "ugoira":
            if not work.frames_served or page >= len(work.frames) or "_ugoira" not in path:
                return None
            return render(work.id, page, "original", "jpg", work.size)
        if page >= work.pages or m[3] != work.ext or "_ugoira" in path:
            return None
        return render(work.id, page, "original", work.ext, work.size, work.noise)
    if m := _MASTER.match(path):
        work = works.get(int(m[2]))
        kind = SIZE_OF_PREFIX.get(m[1])
        if work is None or kind is None or work.state != "live" or int(m[3]) >= work.pages:
            return None
        if (kind == "square_medium") != path.endswith("_square1200.jpg"):
            return None
        return render(work.id, int(m[3]), kind, "jpg", work.size, work.noise)
    if m := _ZIP.match(path):
        work = works.get(int(m[1]))
        if work is None or work.type != "ugoira" or work.state != "live":
            return None
        return render_zip(work, m[2] == "1920x1080")
    if _LIMIT.match(path):
        return render(0, 0, path, "png", (36, 36))
    return None


def default_works() -> list[tuple[Work, str]]:
    """The data set: (work, restrict) oldest bookmark first."""
    a = (11223, "Artist", "artist_acct")
    same1, same2 = (5001, "同名", "same_one"), (5002, "同名", "same_two")
    slash = (5003, "AC/DC", "acdc")
    dots = (5004, "..", "dots")
    works: list[tuple[Work, str]] = [
        (Work(93012345, "夕焼け", a, tags=[("風景", "landscape"), ("オリジナル", None)]), "public"),
        (Work(93012346, "動く", a, type="ugoira", frames=[100, 60, 200]), "public"),
        (Work(93012347, "fallback ugoira", a, type="ugoira", frames=[80, 80], frames_served=False), "public"),
        (Work(93012348, "alpha png", same1, ext="png"), "public"),
        (Work(93012349, "old gif", same2, ext="gif"), "public"),
        (Work(93012350, "manga", slash, type="manga", pages=12, series={"id": 777, "title": "連載 & <series>"}),
         "public"),
        (Work(93012351, "r18", dots, x_restrict=1, tags=[("R-18", None)]), "public"),
        (Work(93012352, "r18g", dots, x_restrict=2, tags=[("R-18G", None)]), "public"),
        (Work(93012353, "a/b\\c:d*e?f\"g<h>i|j", a), "public"),
        (Work(93012354, "..", a), "public"),
        (Work(93012355, ".", a), "public"),
        (Work(93012356, "", a), "public"),
        (Work(93012357, "あ" * 300, a), "public"),
        (Work(93012358, "🎨🔥 fire", a, tags=[("🎨", None), ("a/b", None)]), "public"),
        (Work(93012359, "\x01bell\x07\x7f", a), "public"),
        (Work(93012360, "dots...", a), "public"),
        (Work(93012361, "  spaces  ", a), "public"),
        (Work(93012362, "private one", a), "private"),
        (Work(93012363, "private r18", dots, x_restrict=1), "private"),
        (Work(93012364, "private manga", same1, type="manga", pages=3), "private"),
    ]
    for n in range(24):  # enough to need a second page of bookmarks
        works.append((Work(93013000 + n, f"filler {n}", (6000 + n % 5, f"filler artist {n % 5}", f"f{n % 5}")), "public"))
    return works
