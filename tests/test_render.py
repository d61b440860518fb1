"""Generated files without a mount: zip layout, PDF pages, cache."""

from __future__ import annotations

import io
import os
import re
import subprocess
import zipfile
import zlib
from datetime import datetime
from pathlib import Path

import pytest
from PIL import Image

from pbe_fs.render import pdf as pdf_render
from pbe_fs.render import zip as zip_render
from pbe_fs.render.cache import Cache
from pbe_fs.storage.local import LocalStore


def _member(tmp: Path, name: str, data: bytes) -> zip_render.Member:
    path = tmp / f"m{zlib.crc32(name.encode())}"
    path.write_bytes(data)
    return zip_render.Member(name, path.name, len(data), zlib.crc32(data))


def _read_all(segments) -> bytes:
    reader = segments.reader()
    try:
        return reader.read(0, segments.size)
    finally:
        reader.close()


def test_zip_layout_is_a_valid_stored_zip(tmp_path: Path) -> None:
    members = [_member(tmp_path, f"{n}_p{n}.jpg", os.urandom(1000 + n)) for n in range(5)]
    members.append(_member(tmp_path, "風景_p5.png", b"x" * 10))
    segments = zip_render.layout(members, datetime(2021, 11, 5, 0, 0, 12), LocalStore(tmp_path))
    data = _read_all(segments)
    assert len(data) == segments.size
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert zf.testzip() is None
        assert zf.namelist() == [m.name for m in members]
        for m in members:
            info = zf.getinfo(m.name)
            assert info.compress_type == zipfile.ZIP_STORED
            assert info.date_time == (2021, 11, 5, 0, 0, 12)
            assert zf.read(m.name) == (tmp_path / m.key).read_bytes()
        assert zf.getinfo("風景_p5.png").flag_bits & 0x800


def test_zip_reads_at_any_offset(tmp_path: Path) -> None:
    members = [_member(tmp_path, f"f{n}", os.urandom(3000)) for n in range(4)]
    segments = zip_render.layout(members, datetime(2020, 1, 1), LocalStore(tmp_path))
    whole = _read_all(segments)
    reader = segments.reader()
    for offset in (0, 1, 29, 30, 3050, 5000, segments.size - 10, segments.size - 1):
        for size in (1, 7, 4096):
            assert reader.read(offset, size) == whole[offset: offset + size]
    assert reader.read(segments.size, 10) == b"" and reader.read(10**15, 10) == b""
    reader.close()


def test_zip64_for_many_members(tmp_path: Path) -> None:
    shared = tmp_path / "one"
    shared.write_bytes(b"z")
    crc = zlib.crc32(b"z")
    members = [zip_render.Member(f"{n:06d}.jpg", shared.name, 1, crc) for n in range(70_000)]
    data = _read_all(zip_render.layout(members, datetime(2020, 1, 1), LocalStore(tmp_path)))
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        assert len(zf.infolist()) == 70_000
        assert zf.read("069999.jpg") == b"z"


def test_zip64_for_members_over_4_gib(tmp_path: Path) -> None:
    big = tmp_path / "big"
    with open(big, "wb") as fh:
        fh.truncate(4 * 1024**3 + 10)  # sparse: nothing is written
    small = _member(tmp_path, "after.jpg", b"tail")
    members = [zip_render.Member("big.bin", big.name, 4 * 1024**3 + 10, 0), small]
    segments = zip_render.layout(members, datetime(2020, 1, 1), LocalStore(tmp_path))
    reader = segments.reader()
    tail = reader.read(segments.size - 4096, 4096)
    head = reader.read(0, 4096)
    reader.close()
    # let zipfile parse the central directory without reading the 4 GiB member
    class Sparse(io.RawIOBase):
        pos = 0
        def seekable(self): return True
        def readable(self): return True
        def seek(self, off, whence=0):
            self.pos = off if whence == 0 else (self.pos + off if whence == 1 else segments.size + off)
            return self.pos
        def tell(self): return self.pos
        def readinto(self, b):
            r = segments.reader()
            data = r.read(self.pos, len(b))
            r.close()
            b[: len(data)] = data
            self.pos += len(data)
            return len(data)
    with zipfile.ZipFile(io.BufferedReader(Sparse(), 1 << 16)) as zf:
        assert zf.getinfo("big.bin").file_size == 4 * 1024**3 + 10
        assert zf.read("after.jpg") == b"tail"
    assert head.startswith(b"PK\x03\x04") and b"PK\x06\x06" in tail


def _image(path: Path, mode: str, fmt: str) -> pdf_render.Page:
    im = Image.new(mode, (40, 30), 128 if mode in ("L", "I;16") else None)
    if mode == "RGBA":
        im = Image.new("RGBA", (40, 30), (10, 200, 30, 100))
    if mode == "P":
        im = Image.new("P", (40, 30), 3)
    if mode == "CMYK":
        im = Image.new("CMYK", (40, 30), (10, 20, 30, 40))
    im.save(path, fmt)
    data = path.read_bytes()
    return pdf_render.Page(path.name, Image.open(path).format or fmt, mode, len(data), str(zlib.crc32(data)))


@pytest.mark.parametrize("mode, fmt", [("RGB", "JPEG"), ("L", "JPEG"), ("CMYK", "JPEG"), ("RGBA", "PNG"),
                                       ("P", "GIF"), ("I;16", "PNG"), ("RGB", "PNG")])
def test_pdf_pages_of_every_kind(tmp_path: Path, mode: str, fmt: str) -> None:
    pages = [_image(tmp_path / f"p{n}.{fmt.lower()}", mode, fmt) for n in range(3)]
    segments = pdf_render.pdf(Cache(tmp_path / "cache", 10**9), LocalStore(tmp_path), pages)
    out = tmp_path / "out.pdf"
    out.write_bytes(_read_all(segments))
    info = subprocess.run(["pdfinfo", str(out)], capture_output=True, text=True, check=True).stdout
    assert re.search(r"^Pages:\s+3$", info, re.M)
    if fmt == "JPEG":  # embedded byte for byte: the skeleton holds none of it
        skeleton = next((tmp_path / "cache" / "pdf").rglob("*.skel"))
        assert skeleton.stat().st_size < segments.size - sum(p.size for p in pages) + 2048


def test_cache_is_bounded_lru(tmp_path: Path) -> None:
    """Least recently used entries go first, whatever their kind; the
    other caches that share cache.path (records/, blocks/) are not its."""
    cache = Cache(tmp_path, max_bytes=3000)
    others = [tmp_path / "records" / "01" / "1.json", tmp_path / "blocks" / "ab" / "data"]
    for other in others:
        other.parent.mkdir(parents=True)
        other.write_bytes(b"o" * 5000)
        os.utime(other, (0, 0))  # older than every entry
    stale, fresh = tmp_path / "pdf" / "ab" / ".x.skel.1.tmp", tmp_path / "pdf" / "ab" / ".y.skel.2.tmp"
    stale.parent.mkdir(parents=True)
    for tmp in (stale, fresh):
        tmp.write_bytes(b"t")
    os.utime(stale, (0, 0))  # left by a process killed long ago; the other is being written
    for n in range(10):
        kind = ("pdf", "anim", "whole")[n % 3]
        cache.get_or_make(kind, f"{n:04d}", ".bin", lambda p: p.write_bytes(b"a" * 1000))
        os.utime(cache.path(kind, f"{n:04d}", ".bin"), (n, n))
    cache.trim()
    left = sorted(p.name for p in tmp_path.rglob("*.bin"))
    assert left == ["0007.bin", "0008.bin", "0009.bin"]
    assert all(other.stat().st_size == 5000 for other in others)
    assert not stale.exists() and fresh.exists()
    with pytest.raises(ValueError):
        cache.path("records", "0001", ".json")
