"""Animated GIF and WebP of an ugoira, with the recorded frame delays."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from ..storage import Store
from .cache import Cache


def _frames(store: Store, sources: list[str] | str, names: list[str]) -> list[Image.Image]:
    """Frames from the archived frame files, or from the frames zip (keys)."""
    if isinstance(sources, str):
        with zipfile.ZipFile(io.BytesIO(store.read_bytes(sources))) as zf:
            return [Image.open(io.BytesIO(zf.read(n))).convert("RGB") for n in names]
    frames = []
    for key in sources:
        with Image.open(io.BytesIO(store.read_bytes(key))) as im:
            frames.append(im.convert("RGB"))
    return frames


def animation(cache: Cache, store: Store, fmt: str, sources: list[str] | str, names: list[str], delays: list[int],
              inputs_key: object) -> Path:
    """The cached animation file (fmt: "gif" or "webp"), made on first need."""
    key = Cache.key("anim-v1", fmt, inputs_key, delays)

    def make(tmp: Path) -> None:
        frames = _frames(store, sources, names)
        durations = list(delays[: len(frames)])
        first, rest = frames[0], frames[1:]
        if fmt == "gif":
            first.save(tmp, "GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False)
        else:
            first.save(tmp, "WEBP", save_all=True, append_images=rest, duration=durations, loop=0, quality=90,
                       method=4)

    return cache.get_or_make("anim", key, f".{fmt}", make)
