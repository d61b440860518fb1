"""Log lines: secrets are redacted where they stand as values, never inside words."""

from __future__ import annotations

import logging
from pathlib import Path

from pbe_fs.cli import Redact
from tests.conftest import pbe, write_config
from tests.fakepixiv import FakePixiv


def _redacted(secrets: list[str], message: str, *args: object) -> str:
    redact = Redact()
    redact.secrets = secrets
    record = logging.LogRecord("pbe_fs", logging.INFO, __file__, 1, message, args, None)
    redact.filter(record)
    return record.getMessage()


def test_short_secrets_are_not_found_inside_words() -> None:
    line = _redacted(["k", "t0k3n-Abc_9"], "115 new works, limit_unknown; token=%s, refresh %s.", "t0k3n-Abc_9", "t0k3n-Abc_9")
    assert line == "115 new works, limit_unknown; token=***, refresh ***."
    assert _redacted(["k"], "app_key is %s", "k") == "app_key is ***"
    assert _redacted(["abc"], "abcdef xabc abc_d abc") == "abcdef xabc abc_d ***"
    assert _redacted(["a+b/c="], 'auth "a+b/c="') == 'auth "***"'


def test_a_one_letter_app_key_leaves_the_log_readable(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, app_key="k", read_only_token="o", sync={"sizes": ["original"]})
    proc = pbe(config, "sync", "--no-progress", check=True)
    assert "new works" in proc.stderr and "***" not in proc.stderr, proc.stderr
