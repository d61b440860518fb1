"""The tree's pure parts: the listings it keeps between requests."""

from __future__ import annotations

from pbe_fs.artwork import Node
from pbe_fs.tree import _Folder, _Folders


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
