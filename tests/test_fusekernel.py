"""The FUSE wire format pbe-fs writes itself: READDIR and READDIRPLUS
answers, parsed back the way the kernel reads them (linux/fuse.h)."""

from __future__ import annotations

import stat
import struct

from pbe_fs.fusekernel import DirBuffer, _entry_fields

DIRENT = struct.Struct("<QQII")  # ino, off, namelen, type
ENTRY_OUT = struct.Struct("<QQQQII" + "QQQQQQIIIIIIIIII")  # fuse_entry_out with its fuse_attr


def parse(data: bytes, plus: bool) -> list[tuple]:
    """What the kernel's parse_dirfile / parse_dirplusfile would see."""
    out, pos = [], 0
    while pos < len(data):
        entry = ENTRY_OUT.unpack_from(data, pos) if plus else None
        if plus:
            pos += ENTRY_OUT.size
        ino, off, namelen, kind = DIRENT.unpack_from(data, pos)
        name = data[pos + DIRENT.size: pos + DIRENT.size + namelen]
        record = DIRENT.size + namelen
        padding = data[pos + record: pos + ((record + 7) & ~7)]
        assert padding == b"\0" * len(padding)  # records are 8-byte aligned, padded with zeros
        pos += (record + 7) & ~7
        out.append((ino, off, name, kind, entry))
    return out


FILE = stat.S_IFREG | 0o444
DIR = stat.S_IFDIR | 0o555


def test_readdir_records_are_aligned_and_typed() -> None:
    buf = DirBuffer(4096, plus=False, uid=0, gid=0)
    names = [b"a", b"12345678", "雪の日 #1 %?.jpg".encode(), b"x" * 255]
    for i, name in enumerate(names):
        assert buf.add(name, i + 1, 100 + i, DIR if i == 0 else FILE, 1, 10, 0, 1.0, 0)
    parsed = parse(buf.data(), plus=False)
    assert [p[2] for p in parsed] == names
    assert [p[1] for p in parsed] == [1, 2, 3, 4]  # the offset to ask for next
    assert [p[3] for p in parsed] == [4, 8, 8, 8]  # DT_DIR, DT_REG
    assert [p[0] for p in parsed] == [100, 101, 102, 103]


def test_an_entry_that_does_not_fit_is_left_whole_for_the_next_request() -> None:
    buf = DirBuffer(64, plus=False, uid=0, gid=0)
    assert buf.add(b"first", 1, 2, FILE, 1, 0, 0, 1.0, 0)  # 24 + 5 -> 32 bytes
    assert buf.add(b"second!", 2, 3, FILE, 1, 0, 0, 1.0, 0)  # 24 + 7 -> 32: exactly full
    assert not buf.add(b"third", 3, 4, FILE, 1, 0, 0, 1.0, 0)
    assert len(buf.data()) == 64
    assert [p[2] for p in parse(buf.data(), plus=False)] == [b"first", b"second!"]


def test_readdirplus_carries_the_entry_and_its_attributes() -> None:
    buf = DirBuffer(4096, plus=True, uid=1000, gid=100)
    ns = 1_700_000_000_123_456_789
    assert buf.add(b"p0.jpg", 7, 0x4000_0000_0000_0042, FILE, 1, 5_000_001, ns, 86400.0, 0xDEADBEEF)
    assert buf.add(b"img", 8, 55, DIR, 6, 0, ns, 1.5, 0)
    (ino, off, name, kind, entry), (_, _, _, _, folder) = parse(buf.data(), plus=True)
    assert (ino, off, name, kind) == (0x4000_0000_0000_0042, 7, b"p0.jpg", 8)
    nodeid, generation, entry_valid, attr_valid, entry_ns, attr_ns, attr_ino, size, blocks, atime, mtime, ctime, \
        atime_ns, mtime_ns, ctime_ns, mode, nlink, uid, gid, rdev, blksize, flags = entry
    assert nodeid == attr_ino == ino and generation == 0xDEADBEEF
    assert (entry_valid, attr_valid, entry_ns, attr_ns) == (86400, 86400, 0, 0)
    assert (size, blocks) == (5_000_001, (5_000_001 + 511) // 512)
    assert atime == mtime == ctime == 1_700_000_000 and atime_ns == mtime_ns == ctime_ns == 123_456_789
    assert (mode, nlink, uid, gid) == (FILE, 1, 1000, 100)
    assert folder[2:6] == (1, 1, 500_000_000, 500_000_000) and folder[15:17] == (DIR, 6)  # 1.5 s: 1 s + 0.5e9 ns


def test_entry_fields_are_what_lookup_and_getattr_send() -> None:
    fields = _entry_fields(9, FILE, 1, 1024, 2_000_000_001, 1.0, 3, 0, 0)
    assert ENTRY_OUT.unpack(ENTRY_OUT.pack(*fields))[:4] == (9, 3, 1, 1)
    assert fields[9:15] == (2, 2, 2, 1, 1, 1)  # seconds and nanoseconds of the three times


def test_an_entry_without_attributes_goes_with_node_id_zero() -> None:
    """size < 0: a generated file not made yet. The kernel takes node id 0 in a
    READDIRPLUS entry as "no attributes": it lists the name and makes no inode."""
    buf = DirBuffer(4096, plus=True, uid=0, gid=0)
    assert buf.add(b"7.pdf", 3, 0x4000_0000_0000_0007, FILE, 1, -1, 0, 86400.0, 0)
    assert buf.add(b"7.zip", 4, 0x4000_0000_0000_0008, FILE, 1, 463, 0, 86400.0, 5)
    (ino, off, name, kind, entry), (_, _, _, _, known) = parse(buf.data(), plus=True)
    assert (ino, off, name, kind) == (0x4000_0000_0000_0007, 3, b"7.pdf", 8)  # what getdents returns is whole
    assert entry == (0,) * len(entry)
    assert known[0] == 0x4000_0000_0000_0008 and known[7] == 463
