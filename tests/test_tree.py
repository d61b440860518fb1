"""The tree: the listings it keeps between requests, and which ones are at hand."""

from __future__ import annotations

import os
from pathlib import Path

from bench.common import forget
from bench.scale_bench import build_archive
from pbe_fs import config
from pbe_fs.artwork import Node
from pbe_fs.storage.local import LocalStore
from pbe_fs.tree import Tree, _Folder, _Folders


def folder(entries: int) -> _Folder:
    return _Folder({f"{i:06d}": Node(False, 0.0) for i in range(entries)})


def test_listings_are_bounded_by_entries_least_recently_used_out_first() -> None:
    kept = _Folders(max_folders=100, max_entries=1000)
    for key in ("a", "b", "c"):
        kept.put((key,), folder(400))
    assert ("a",) not in kept and ("b",) in kept and ("c",) in kept  # 1,200 > 1,000: the oldest went
    kept.get(("b",))  # used: now the newest
    kept.put(("d",), folder(400))
    assert ("c",) not in kept and ("b",) in kept and ("d",) in kept


def test_the_folder_kept_last_and_its_parent_stay_however_large() -> None:
    """A walk looks names up in its parent again and again: evicting a
    200,000-work view for each of its artwork folders would rebuild it each time."""
    kept = _Folders(max_folders=100, max_entries=1000)
    kept.put(("small",), folder(10))
    kept.put(("view",), folder(5000))
    assert ("view",) in kept and ("small",) not in kept
    for aid in range(3):
        kept.put((aid,), folder(5), parent=("view",))
        assert ("view",) in kept and (aid,) in kept
    assert (0,) not in kept and (1,) not in kept
    kept.put(("view",), folder(10))  # a new generation's listing replaces the old one's count
    kept.put(("other",), folder(900))
    assert ("view",) in kept and ("other",) in kept and (2,) in kept


def test_listings_are_bounded_by_folders_too() -> None:
    kept = _Folders(max_folders=3, max_entries=10**6)
    for key in "abcd":
        kept.put((key,), folder(1))
    assert [k for k in "abcd" if (k,) in kept] == ["b", "c", "d"]
    kept.clear()
    kept.put(("e",), folder(10**6))
    assert ("e",) in kept


def test_a_works_folder_is_at_hand_once_its_record_files_are_in_the_page_cache(tmp_path: Path) -> None:
    """The mount lists such a folder on its request thread; any other waits
    on the disk and goes to a worker."""
    cfg = build_archive(tmp_path, 3, tags=1)
    tree = Tree(config.load(cfg), "enabled")
    aid = next(name for name, _ in tree.list(("by-id",)))
    folder = ("by-id", aid)
    record, raw = (tmp_path / "data" / "artworks" / aid / name for name in ("pbe.json", "pixiv.json"))
    os.sync()  # written just now: dirty pages are not dropped
    # Each look right after a forget: a miss starts reading the file in (read-ahead).
    for path in (record, raw):
        forget(path)
    assert not tree.at_hand(folder)
    record.read_bytes()
    forget(raw)
    assert not tree.at_hand(folder + ("large",))  # pixiv.json is read too
    record.read_bytes()
    raw.read_bytes()
    assert tree.at_hand(folder) and tree.at_hand(folder + ("large",))
    assert tree.list(folder)  # now kept: at hand whatever the page cache holds
    for path in (record, raw):
        forget(path)
    assert tree.at_hand(folder) and tree.at_hand(folder + ("large",))
    assert not tree.at_hand(("by-id", "1"))  # no such work
    assert tree.at_hand(("by-id",)) and not tree.at_hand(("by-tag",))  # a view: kept, or not yet listed
    assert not LocalStore(tmp_path / "data").at_hand("artworks/1/pbe.json")
