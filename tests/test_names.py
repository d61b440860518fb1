"""Portable names and the NSFW override rule: pure functions."""

from __future__ import annotations

import unicodedata

import pytest

from pbe_fs import names
from pbe_fs.errors import PbeError
from pbe_fs.tree import effective_policy


def test_forbidden_characters_become_lookalikes() -> None:
    assert names.join("1", 'a/b\\c:d*e?f"g<h>i|j') == "1 a／b＼c：d＊e？f＂g＜h＞i｜j"


def test_control_characters_become_what_every_client_keeps() -> None:
    assert names.join("1", "\x01bell\x07\x7f\x85") == "1 \ufffdbell\ufffd\ufffd\ufffd"
    assert names.join("1", "tab\there\nnewline\r\n") == "1 tab here newline"
    # never a control picture: rclone maps those back to control characters
    assert not any(0x2400 <= ord(c) <= 0x2426 for c in names.join("1", "".join(map(chr, range(0x20)))))


def test_artist_folder_cut_keeps_the_id() -> None:
    one, two = names.labelled("あ" * 200, "[5001]"), names.labelled("あ" * 200 + "い", "[5002]")
    assert len(one.encode()) <= 255 and one.endswith(" [5001]") and one.startswith("ああ")
    assert two.endswith(" [5002]") and one != two
    assert names.labelled("Artist", "[11223]") == names.join("Artist", "[11223]") == "Artist [11223]"
    assert names.labelled("..", "[5004]") == ".. [5004]" and names.labelled("  ", "[7]") == "[7]"


def test_trailing_dots_and_spaces_dropped_and_empty_titles() -> None:
    assert names.join("1", "dots...") == "1 dots"
    assert names.join("1", "  spaces  ") == "1 spaces"
    assert names.join("1", "..") == "1"
    assert names.join("1", "") == "1"


def test_cut_to_255_bytes_at_a_character_boundary() -> None:
    name = names.join("000013", "93012357", "あ" * 300)
    assert len(name.encode()) <= 255
    assert name.startswith("000013 93012357 あ")
    name.encode().decode("utf-8")  # no broken character
    emoji = names.join("1", "🎨" * 100)
    assert len(emoji.encode()) <= 255 and emoji.endswith("🎨")


def test_names_are_nfc() -> None:
    nfd = unicodedata.normalize("NFD", "が")
    assert names.join("1", nfd) == "1 が"
    assert names.lookup_key(nfd) == "が"


@pytest.mark.parametrize("text, expected", [("風景", "風景"), ("a/b", "a／b"), ("..", "．．"), (".", "．"), ("   ", "_"),
                                            ("R-18", "R-18"), ("x.", "x")])
def test_segment(text: str, expected: str) -> None:
    assert names.segment(text) == expected


@pytest.mark.parametrize("instance, requested, result", [
    ("hidden", None, "hidden"), ("hidden", "enabled", "enabled"), ("hidden", "disabled", "disabled"),
    ("required", "enabled", "enabled"), ("required", "hidden", "hidden"),
    ("enabled", "disabled", "disabled"), ("enabled", "hidden", "hidden"),
    ("disabled", "disabled", "disabled"),
])
def test_policy_override_allowed(instance: str, requested: str | None, result: str) -> None:
    assert effective_policy(instance, requested) == result


@pytest.mark.parametrize("instance, requested", [("disabled", "enabled"), ("disabled", "hidden"), ("disabled", "required")])
def test_policy_override_refused(instance: str, requested: str) -> None:
    with pytest.raises(PbeError, match="looser than the instance policy"):
        effective_policy(instance, requested)


@pytest.mark.parametrize("name", ["風景 #%?/a", "🎨🔥 fire", "x" * 300, "100% sure", "a;b&amp=c+d", "~._-", "\ufffd", "が"])
def test_hrefs_are_percent_encoded_like_urllib(name: str) -> None:
    from urllib.parse import quote

    from pbe_fs.multistatus import href, quote_segment

    assert quote_segment(name) == quote(name, safe="")
    assert href(("by-tag", name), True) == f"/by-tag/{quote(name, safe='')}/" and href((), True) == "/"
