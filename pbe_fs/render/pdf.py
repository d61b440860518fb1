"""PDFs of an artwork's pages, kept as skeletons around the archived JPEGs.

img2pdf embeds a JPEG byte for byte, so once a PDF has been made, all of it
but the image bytes (a few KB) is kept in the cache and the image bytes are
read from the archived files: exact size, random access, no second copy.
Pages img2pdf refuses (alpha, palettes, 16-bit, odd modes) are converted
losslessly to PNG first; their bytes, not being in the archive, are kept
in the skeleton itself.
"""

from __future__ import annotations

import io
import json
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from .cache import Cache
from ..storage import Store, read_all
from .segments import BlobPart, Part, Segments

_DIRECT_MODES = {"RGB", "L", "CMYK"}


@dataclass(frozen=True)
class Page:
    key: str  # the archived image, in the archive's store
    format: str
    mode: str
    size: int
    sha256: str


def _as_png(data: bytes) -> bytes:
    """A page img2pdf cannot take as it is, made into a PNG it can."""
    with Image.open(io.BytesIO(data)) as im:
        im.seek(0)
        if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
            rgba = im.convert("RGBA")
            flat = Image.new("RGB", rgba.size, (255, 255, 255))
            flat.paste(rgba, mask=rgba.getchannel("A"))
            im2 = flat
        elif im.mode in ("I;16", "I;16B", "I", "F"):
            im2 = im.convert("I").point(lambda v: v / 256).convert("L")
        elif im.mode not in ("RGB", "L"):
            im2 = im.convert("RGB")
        else:
            im2 = im.copy()
        out = io.BytesIO()
        im2.save(out, "PNG")
        return out.getvalue()


def _convert(inputs: list[bytes]) -> bytes:
    # img2pdf's own writer: no random /ID (its pikepdf engine asks for a
    # deterministic one only when pikepdf's version string sorts after
    # "6.2.0", which "10.x" does not), no dates: the same pages, the same bytes.
    # Imported here: img2pdf brings pikepdf, 40 ms of a mount's start that lists no PDF.
    import img2pdf

    return img2pdf.convert(inputs, nodate=True, engine=img2pdf.Engine.internal)


def render(pages: list[Page], images: list[bytes]) -> bytes:
    """A pure function of the archived bytes (and the renderers' versions)."""
    direct = [page.format == "JPEG" and page.mode in _DIRECT_MODES for page in pages]
    inputs = [data if ok else _as_png(data) for data, ok in zip(images, direct)]
    try:
        return _convert(inputs)
    except Exception:
        # A JPEG img2pdf still refuses (odd markers, progressive CMYK...): convert it too.
        return _convert([_as_png(d) if ok else i for i, d, ok in zip(inputs, images, direct)])


def skeletonize(pdf: bytes, pages: list[Page], images: list[bytes]) -> list[tuple[Page, int]]:
    """Where in the PDF each archived JPEG sits verbatim: (page, at)."""
    refs = []
    pos = 0
    for page, data in zip(pages, images):
        if page.format != "JPEG":
            continue
        at = pdf.find(data, pos)
        if at >= 0:
            refs.append((page, at))
            pos = at + len(data)
    return refs


def _write_skeleton(tmp: Path, pdf: bytes, refs: list[tuple[Page, int]]) -> None:
    literal, cursor, segs = bytearray(), 0, []
    for page, at in refs:
        segs.append(["lit", len(literal), at - cursor])
        literal += pdf[cursor:at]
        segs.append(["blob", page.key, page.size, page.sha256])
        cursor = at + page.size
    segs.append(["lit", len(literal), len(pdf) - cursor])
    literal += pdf[cursor:]
    header = json.dumps({"size": len(pdf), "segments": segs}).encode()
    with open(tmp, "wb") as fh:
        fh.write(struct.pack("<I", len(header)) + header + literal)


def _load_skeleton(path: Path, store: Store) -> Segments:
    blob = path.read_bytes()
    (hlen,) = struct.unpack_from("<I", blob)
    header = json.loads(blob[4: 4 + hlen])
    literal = memoryview(blob)[4 + hlen:]
    parts: list[Part] = []
    for kind, a, b, *version in header["segments"]:
        parts.append(bytes(literal[a: a + b]) if kind == "lit" else BlobPart(a, b, *version))
    segments = Segments(parts, store)
    if segments.size != header["size"]:
        raise ValueError(f"damaged PDF skeleton {path}")
    return segments


def pdf(cache: Cache, store: Store, pages: list[Page]) -> Segments:
    """The PDF of these pages, generated once, then served from its skeleton
    (which names archived files by key, so it serves any copy of the archive)."""
    key = Cache.key("pdf-v3", [(p.key, p.sha256) for p in pages])

    def make(tmp: Path) -> None:
        images = [read_all(store, p.key, p.size, p.sha256) for p in pages]
        data = render(pages, images)
        _write_skeleton(tmp, data, skeletonize(data, pages, images))

    path = cache.get_or_make("pdf", key, ".skel", make)
    try:
        return _load_skeleton(path, store)
    except (ValueError, OSError, struct.error, TypeError):
        path.unlink(missing_ok=True)
        return _load_skeleton(cache.get_or_make("pdf", key, ".skel", make), store)
