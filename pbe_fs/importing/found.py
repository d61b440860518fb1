"""What a source says it holds: works and their files, before any check.

Each source (the old app's folder, a gallery-dl folder) reads its own
layout into these; the import engine alone checks, numbers and commits.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import PbeError

# A converted animation (webm, mp4, gif from gallery-dl's ugoira
# post-processor): kept as it is, outside the views' qualities.
IMPORTED_MEDIA = "imported_media"

# Why an imported record is partial, when a later sync can complete it: it
# fetches an animation's frames zip and frame delays while pixiv serves them.
WITHOUT_FRAMES = "animation imported as converted media, without its frames"
WITHOUT_DELAYS = "animation without its frame delays"
ANIMATION_GAPS = (WITHOUT_FRAMES, WITHOUT_DELAYS)


@dataclass
class FoundFile:
    source: str  # a local path, or an http(s) URL (the old app's remote storage)
    path: str  # in the work's folder, as a sync would name it
    role: str  # original | large | medium | square_medium | ugoira_zip | imported_media
    page: int
    url: str = ""  # where pixiv served it, when the source says
    kind: str = "image"  # image | zip | media (checked by length and SHA-256 only)


@dataclass
class FoundWork:
    id: int
    raw: dict[str, Any]  # pixiv's API shape: what pixiv.json holds
    files: list[FoundFile]
    order: tuple[Any, ...]  # the source's own order where it has one, else creation date
    original: Any = None  # the source's own metadata when it is not pixiv's shape
    partial: list[str] = field(default_factory=list)  # why the record is incomplete
    restrict: str = "public"
    bookmarked: bool = True
    ugoira: dict[str, Any] | None = None  # {"frames": [...], "source": ...} when the source knows the delays


class SourceError(PbeError):
    """The folder is not what the command says it is: a bad command line."""

    exit_code = 2
