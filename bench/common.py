"""What the benchmarks share: a synthetic archive, timing, the report.

The archive is laid out as a sync leaves it: N one-page works, a 5 MB
original, a 200 KB original and a 60-page work, then `pbe-fs reindex`
builds the index from the files, as a user would.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import time
import zlib
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
BIG, MANGA, MEDIUM = 99_000_001, 99_000_002, 99_000_003


def _jpeg(seed: int, size: tuple[int, int], quality: int = 92) -> bytes:
    rnd = random.Random(seed)
    im = Image.frombytes("RGB", size, rnd.randbytes(size[0] * size[1] * 3))
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def _write_work(folder: Path, aid: int, seq: int, pages: list[bytes], title: str) -> None:
    folder.mkdir(parents=True)
    files = []
    for n, data in enumerate(pages):
        name = f"{aid}_p{n}.jpg"
        (folder / name).write_bytes(data)
        files.append({"path": name, "role": "original", "page": n, "size": len(data), "crc32": zlib.crc32(data),
                      "sha256": hashlib.sha256(data).hexdigest(), "width": 0, "height": 0, "format": "JPEG",
                      "mode": "RGB", "url": f"https://i.pximg.net/img-original/img/2021/01/01/00/00/00/{name}"})
    day = 1 + aid % 28
    raw = {"id": aid, "title": title, "type": "manga" if len(pages) > 1 else "illust",
           "user": {"id": 1000 + aid % 500, "name": f"artist {aid % 500}", "account": "a"},
           "tags": [{"name": f"tag{aid % 50}", "translated_name": None}],
           "create_date": f"2021-{1 + aid % 12:02d}-{day:02d}T00:00:00+09:00", "page_count": len(pages),
           "width": 100, "height": 100, "x_restrict": 0, "sanity_level": 2, "visible": True}
    record = {"format": 1, "id": aid, "seq": seq, "restrict": "public", "bookmarked": True,
              "archived_at": "2026-01-01T00:00:00+00:00", "gone": None, "ugoira": None, "files": files, "history": []}
    (folder / "pixiv.json").write_text(json.dumps(raw))
    (folder / "pbe.json").write_text(json.dumps(record))


def _padded(data: bytes, size: int) -> bytes:
    """Padding after the JPEG's end: still an image, now exactly size bytes."""
    return (data + b"\0" * max(0, size - len(data)))[:size]


def build(base: Path, works: int) -> tuple[Path, int, int]:
    data = base / "data"
    small = _jpeg(1, (16, 16))
    for i in range(works):
        aid = 100_000_000 + i
        _write_work(data / "artworks" / str(aid), aid, i + 1, [small], f"work {i}")
    big_id, manga_id = BIG, MANGA
    _write_work(data / "artworks" / str(MEDIUM), MEDIUM, works + 3, [_padded(_jpeg(3, (400, 300)), 200_000)], "medium")
    _write_work(data / "artworks" / str(big_id), big_id, works + 1, [_padded(_jpeg(2, (1600, 1200), 100), 5_000_000)], "big")
    _write_work(data / "artworks" / str(manga_id), manga_id, works + 2,
                [_jpeg(100 + n, (400, 300), quality=95) for n in range(60)], "manga")
    cfg = base / "config.json"
    cfg.write_text(json.dumps({"pixiv": {"refresh": "x"}, "filesystem_options": {"path": "./data"},
                               "cache": {"path": "./cache"}}))
    cfg.chmod(0o600)  # it names a (made-up) token: pbe-fs warns about a config others can read
    subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(cfg), "-q", "reindex"], env=ENV, check=True)
    return cfg, big_id, manga_id




def read_all(path: Path) -> int:
    """Read a file front to back in 1 MiB reads, as a copy would."""
    with open(path, "rb", buffering=0) as fh:
        total = 0
        while chunk := fh.read(1 << 20):
            total += len(chunk)
        return total


def forget(path: Path) -> None:
    """Drop one file's pages from the page cache (works on a FUSE file too)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def timed(fn, repeat: int = 1) -> float:
    """Median wall time of fn over repeat runs."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def report(rows: list[tuple[str, str, str, str, str]]) -> None:
    print("| measure | pbe-fs | baseline | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
