"""The mark an import leaves for the next sync.

Imported works were never seen in the bookmark lists, so an incremental
sync, which stops at the first archived bookmark, would never learn which
of them pixiv still has, which are gone, which are private, and what sizes
and works the source lacked. While this file exists every sync walks
everything, as ``--full`` does; the first one that completes removes it.
"""

from __future__ import annotations

from pathlib import Path

from ..archive import Archive


def walk_mark(archive: Archive) -> Path:
    return archive.private / "walk-after-import"
