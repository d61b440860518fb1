"""Animated GIF and WebP of an ugoira, with the recorded frame delays."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

from PIL import Image

from .cache import Cache


def _frames(sources: list[Path] | Path, names: list[str]) -> list[Image.Image]:
    """Frames from the archived frame files, or from the frames zip."""
    if isinstance(sources, Path):
        with zipfile.ZipFile(sources) as zf:
            return [Image.open(io.BytesIO(zf.read(n))).convert("RGB") for n in names]
    frames = []
    for path in sources:
        with Image.open(path) as im:
            frames.append(im.convert("RGB"))
    return frames


def animation(cache: Cache, fmt: str, sources: list[Path] | Path, names: list[str], delays: list[int],
              inputs_key: object) -> Path:
    """The cached animation file (fmt: "gif" or "webp"), made on first need."""
    key = Cache.key("anim-v1", fmt, inputs_key, delays)

    def make(tmp: Path) -> None:
        frames = _frames(sources, names)
        durations = list(delays[: len(frames)])
        first, rest = frames[0], frames[1:]
        if fmt == "gif":
            first.save(tmp, "GIF", save_all=True, append_images=rest, duration=durations, loop=0, optimize=False)
        else:
            first.save(tmp, "WEBP", save_all=True, append_images=rest, duration=durations, loop=0, quality=90,
                       method=4)

    return cache.get_or_make("anim", key, f".{fmt}", make)
