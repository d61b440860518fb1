"""A STORED zip whose layout is computed from sizes and CRC-32s.

The index records every file's size and CRC-32 at ingest, which is all a
STORED zip's headers need. So the zip's exact size is known without reading
an image, and any byte of it maps straight onto a header or a member file:
no temporary zip, no full generation, random access for free. ZIP64 records
are added when a size, an offset or the member count needs them.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from datetime import datetime
from ..storage import Store
from .segments import BlobPart, Part, Segments

_U32 = 0xFFFFFFFF
_U16 = 0xFFFF
_UTF8 = 0x0800
_UNIX_FILE = (0o100644 << 16)


@dataclass(frozen=True)
class Member:
    name: str
    key: str  # the archived file, in the archive's store
    size: int
    crc32: int
    version: str = ""
    data: bytes | None = None  # a generated member (ComicInfo.xml), held as it is


def dos_time(when: datetime) -> tuple[int, int]:
    """(time, date) in MS-DOS format; zip cannot say before 1980."""
    if when.year < 1980:
        when = datetime(1980, 1, 1)
    return ((when.hour << 11) | (when.minute << 5) | (when.second // 2),
            ((when.year - 1980) << 9) | (when.month << 5) | when.day)


def layout(members: list[Member], when: datetime, store: Store | None = None) -> Segments:
    dtime, ddate = dos_time(when)
    parts: list[Part] = []
    central: list[bytes] = []
    offset = 0
    for m in members:
        name = m.name.encode("utf-8")
        flags = _UTF8 if not m.name.isascii() else 0
        big = m.size >= _U32
        local_extra = struct.pack("<HHQQ", 1, 16, m.size, m.size) if big else b""
        version = 45 if big else 20
        header = struct.pack("<IHHHHHIIIHH", 0x04034B50, version, flags, 0, dtime, ddate, m.crc32,
                             _U32 if big else m.size, _U32 if big else m.size, len(name), len(local_extra))
        parts += [header + name + local_extra, m.data if m.data is not None else BlobPart(m.key, m.size, m.version)]
        z64 = []
        if big:
            z64 += [m.size, m.size]
        if offset >= _U32:
            z64.append(offset)
        extra = struct.pack("<HH", 1, 8 * len(z64)) + struct.pack(f"<{len(z64)}Q", *z64) if z64 else b""
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, (3 << 8) | 45 if z64 else (3 << 8) | 20,
                                   45 if z64 else 20, flags, 0, dtime, ddate, m.crc32,
                                   _U32 if big else m.size, _U32 if big else m.size, len(name), len(extra), 0, 0, 0,
                                   _UNIX_FILE, _U32 if offset >= _U32 else offset) + name + extra)
        offset += len(header) + len(name) + len(local_extra) + m.size
    cd = b"".join(central)
    cd_offset, count = offset, len(members)
    tail = b""
    if count >= _U16 or cd_offset >= _U32 or len(cd) >= _U32:
        z64_eocd = struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, (3 << 8) | 45, 45, 0, 0, count, count, len(cd), cd_offset)
        locator = struct.pack("<IIQI", 0x07064B50, 0, cd_offset + len(cd), 1)
        tail = z64_eocd + locator
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, min(count, _U16), min(count, _U16),
                       min(len(cd), _U32), min(cd_offset, _U32), 0)
    parts += [cd + tail + eocd]
    return Segments(parts, store)
