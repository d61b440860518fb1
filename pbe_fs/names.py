"""Portable file names: the same name works on Linux, macOS and Windows.

pixiv titles and artist names are free text: slashes, dots, control
characters, 300-character titles, emoji. They become folder names here
the way rclone's encoder does it: characters Windows or POSIX forbid turn
into their fullwidth look-alikes, control characters into the Unicode
"control pictures", trailing dots and spaces go, and the result is cut at a
character boundary to fit 255 bytes of UTF-8. Names are NFC.
"""

from __future__ import annotations

import unicodedata

MAX_BYTES = 255

_LOOKALIKE = {ord(c): 0xFF00 + ord(c) - 0x20 for c in '/\\:*?"<>|'}
_LOOKALIKE.update({c: 0x2400 + c for c in range(0x20)})  # ␀ … ␟
_LOOKALIKE[0x7F] = 0x2421  # ␡
_LOOKALIKE = {k: chr(v) for k, v in _LOOKALIKE.items()}


def nfc(name: str) -> str:
    return unicodedata.normalize("NFC", name)


def cut(name: str, limit: int = MAX_BYTES) -> str:
    """The longest prefix of name that fits limit bytes of UTF-8."""
    encoded = name.encode("utf-8")
    if len(encoded) <= limit:
        return name
    return encoded[:limit].decode("utf-8", errors="ignore")


def portable(text: str) -> str:
    """Free text made safe as one path segment (possibly empty)."""
    return nfc(text).translate(_LOOKALIKE)


def join(*parts: str) -> str:
    """Space-joined name from safe parts, trimmed and cut to 255 bytes.

    The first part (an id or number) always survives the cut, so two works
    never collide however long their titles.
    """
    name = " ".join(p for p in (portable(x).strip() for x in parts) if p)
    name = cut(name).rstrip(". ")
    return name


def segment(text: str) -> str:
    """Free text (a tag, an artist) as a whole folder name, never empty,
    never ``.`` or ``..``."""
    name = cut(portable(text).strip()).rstrip(". ")
    if not name:
        name = cut(portable(text).strip().replace(".", "\uff0e")) or "_"
    return name


def lookup_key(name: str) -> str:
    """What a name looked up by a client is compared as: NFC (macOS sends NFD)."""
    return nfc(name)
