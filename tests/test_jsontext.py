"""The archive's JSON text is byte for byte what ``json.dumps`` made."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest

from pbe_fs.archive import dumps
from pbe_fs.jsontext import dumps as fast_dumps


def _reference(data: Any) -> bytes:
    return (json.dumps(data, ensure_ascii=False, indent=1, sort_keys=False) + "\n").encode()


class Level(enum.IntEnum):
    R18 = 1


RECORD = {
    "format": 2, "id": 123, "seq": 7, "restrict": "public", "bookmarked": True, "archived_at": "2026-12-03T17:00:00+00:00",
    "gone": None, "ugoira": {"frames": [{"file": "000000.jpg", "delay": 80}], "source": "api"},
    "files": [{"path": "large/123_p0_master1200.jpg", "role": "large", "page": 0, "size": 1234, "crc32": 4294967295,
               "sha256": "ab" * 32, "width": 600, "height": 1200, "format": "JPEG", "mode": "RGB", "url": ""}],
    "history": [{"at": "2026-12-03T17:00:00+00:00", "event": "imported", "source": "old-app", "from": "/a/b",
                 "damaged": [], "partial": ["x"]}],
}

VALUES = [
    RECORD, {}, [], "", "plain", 0, -1, 10**40, 1.5, -0.0, 1e300, float("nan"), float("inf"), -float("inf"),
    True, False, None, Level.R18, (1, (2, [])),
    {"title": "テスト <b>&amp;</b> \"quoted\" \\ back\nline\ttab\x00\x1f\x7f\u2028\u2029 😀 ../../etc/passwd"},
    {1: "int key", 2.5: "float key", True: "bool key", False: "false key", None: "null key", "": "empty key"},
    {"a": [[], {}, [{}], [[1, [2, [3]]]], {"b": {"c": {}}}], "e": [None, True, False, 1, 1.0, "s"]},
]


@pytest.mark.parametrize("data", VALUES, ids=range(len(VALUES)))
def test_same_bytes_as_json(data: Any) -> None:
    assert fast_dumps(data) == _reference(data)
    assert dumps(data) == _reference(data)


def test_what_json_refuses_it_refuses_alike() -> None:
    for bad in ({"x": object()}, {(1, 2): "tuple key"}):
        with pytest.raises(TypeError):
            _reference(bad)
        with pytest.raises(TypeError):
            fast_dumps(bad)
    cycle: list[Any] = []
    cycle.append(cycle)
    with pytest.raises(ValueError, match="Circular"):
        fast_dumps(cycle)
