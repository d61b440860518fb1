"""Checks shared by the integration tests: what a correct archive looks like."""

from __future__ import annotations

import hashlib
import json
import subprocess
import zlib
from pathlib import Path

from tests.fakepixiv import FakePixiv


def archive_files(root: Path) -> dict[str, bytes]:
    """Every file under artworks/, by relative path."""
    base = root / "artworks"
    return {str(p.relative_to(base)): p.read_bytes() for p in sorted(base.rglob("*")) if p.is_file()}


def assert_archive_exact(root: Path, fake: FakePixiv, expect_ids: set[int] | None = None) -> None:
    """Every archived file equals what the stand-in serves, and every
    record's size/CRC/SHA-256 matches the bytes on disk."""
    folders = {int(p.name): p for p in (root / "artworks").iterdir()}
    if expect_ids is not None:
        assert set(folders) == expect_ids
    for aid, folder in folders.items():
        record = json.loads((folder / "pbe.json").read_text())
        raw = json.loads((folder / "pixiv.json").read_text())
        assert raw["id"] == aid and record["id"] == aid
        on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()} - {"pbe.json", "pixiv.json"}
        assert on_disk == {f["path"] for f in record["files"]}, aid
        for f in record["files"]:
            data = (folder / f["path"]).read_bytes()
            assert data == fake.file_bytes(f["url"]), (aid, f["path"])
            assert len(data) == f["size"]
            assert zlib.crc32(data) == f["crc32"]
            assert hashlib.sha256(data).hexdigest() == f["sha256"]


def assert_clean(root: Path, temp: Path) -> None:
    """No download left behind, nothing half-assembled."""
    assert not list(temp.glob("*")), list(temp.glob("*"))
    incoming = root / ".pbe" / "incoming"
    assert not incoming.exists() or not list(incoming.iterdir())


def expected_ids(fake: FakePixiv, private: bool = True) -> set[int]:
    restricts = ["public", "private"] if private else ["public"]
    return {wid for r in restricts for _, wid in fake.bookmarks[r] if fake.works[wid].state == "live"}


def descendants(pid: int) -> list[int]:
    """Every process below pid (a server's workers and the syncs they start)."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,ppid="], capture_output=True, text=True).stdout
    children: dict[int, list[int]] = {}
    for line in out.splitlines():
        child, parent = map(int, line.split())
        children.setdefault(parent, []).append(child)
    found, todo = [], list(children.get(pid, []))
    while todo:
        one = todo.pop()
        found.append(one)
        todo += children.get(one, [])
    return found
