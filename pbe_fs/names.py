"""Portable file names: the same name works on Linux, macOS and Windows.

pixiv titles and artist names are free text: slashes, dots, control
characters, 300-character titles, emoji. They become folder names here
the way rclone's encoder does it: characters Windows or POSIX forbid turn
into their fullwidth look-alikes, control characters into a space (the
whitespace ones: tab, newline, ...) or U+FFFD (the rest), trailing dots and
spaces go, and the result is cut at a character boundary to fit 255 bytes of
UTF-8. Names are NFC.

Why not the Unicode "control pictures" (U+2400 ...) rclone's encoder uses:
rclone's WebDAV backend decodes them back into real control characters when
it writes a copy to disk, so a title with a newline became a file name with
a newline. A space and U+FFFD are ordinary characters that no client, file
system or encoder maps to anything else.
"""

from __future__ import annotations

import unicodedata

MAX_BYTES = 255

_LOOKALIKE = {ord(c): 0xFF00 + ord(c) - 0x20 for c in '/\\:*?"<>|'}
# C0, DEL and C1 controls; the whitespace ones read as a space in a title
_LOOKALIKE.update({c: 0xFFFD for c in (*range(0x20), *range(0x7F, 0xA0))})
_LOOKALIKE.update({c: 0x20 for c in b"\t\n\v\f\r"})
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


def labelled(text: str, label: str) -> str:
    """``text label`` cut to 255 bytes by cutting the text, never the label:
    an artist folder keeps its `` [id]`` however long the name, so two
    long-named artists never share a folder."""
    label = portable(label).strip()
    room = MAX_BYTES - len(label.encode("utf-8")) - 1
    text = cut(portable(text).strip(), max(room, 0))
    return f"{text} {label}" if text else label


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
