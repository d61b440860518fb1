"""config.json: the seed's file as it is, defaults, and one-line refusals."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from pbe_fs import config
from pbe_fs.errors import ConfigError
from tests.conftest import pbe

SEED = {
    "pixiv": {"access": "acc", "refresh": "ref"},
    "display": {"home": {"image": "large", "ipp": "50", "order": "default"}, "artwork": {"image": "original"}, "nsfw": "hidden"},
    "app_key": "k", "read_only": True, "read_only_token": "t", "temp_path": "./tmp",
    "filesystem": "local", "filesystem_options": {"path": "./data"},
}


def test_seed_file_is_accepted_as_is(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SEED))
    cfg = config.load(path)
    assert cfg.settings.display.home.ipp == 50
    assert cfg.settings.display.home.image == "large"
    assert cfg.settings.read_only is True
    assert cfg.archive_path == tmp_path / "data"
    assert cfg.temp_path == tmp_path / "tmp"


def test_minimal_file_gets_defaults(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text('{"pixiv": {"refresh": "r"}}')
    s = config.load(path).settings
    assert s.pixiv.api_host == "https://app-api.pixiv.net"
    assert s.display.nsfw == "hidden"
    assert s.sync.sizes == ["original", "large", "medium", "square_medium"]
    assert s.sync.concurrency == 4 and s.sync.private is True
    assert s.webdav.host == "127.0.0.1" and s.mount.path == ""


@pytest.mark.parametrize("text, expected", [
    ("{not json", "invalid JSON at line 1 column 2"),
    ("[]", "top level must be a JSON object"),
    ("{}", "pixiv: missing: a refresh token is required"),
    ('{"pixiv": {}}', "pixiv.refresh: missing"),
    ('{"pixiv": {"refresh": "  "}}', "pixiv.refresh: empty"),
    ('{"pixiv": {"refresh": "PASTE-YOUR-REFRESH-TOKEN-HERE"}}', "pixiv.refresh: still the sample value"),
    ('{"pixiv": {"refresh": "r"}, "display": {"nsfw": "sometimes"}}', "display.nsfw: 'sometimes' is not one of"),
    ('{"pixiv": {"refresh": "r"}, "sync": {"concurrency": "four"}}', "sync.concurrency: "),
    ('{"pixiv": {"refresh": "r"}, "sync": {"concurrency": 0}}', "sync.concurrency: input should be greater than or equal to 1"),
    ('{"pixiv": {"refresh": "r"}, "sync": {"sizes": ["huge"]}}', "sync.sizes.0: 'huge' is not one of"),
    ('{"pixiv": {"refresh": "r", "api_host": "ftp://x"}}', "pixiv.api_host: must start with http"),
    ('{"pixiv": {"refresh": 5}}', "pixiv.refresh: input should be a valid string"),
    ('{"pixiv": {"refresh": "r"}, "filesystem": "remote"}', "filesystem: 'remote' is not one of"),
    ('{"pixiv": {"refresh": "r"}, "filesystem": "s3"}', 'filesystem_options.bucket: required when filesystem is "s3"'),
    ('{"pixiv": {"refresh": "r"}, "filesystem": "s3", "filesystem_options": {"bucket": "My_Bucket"}}',
     "filesystem_options.bucket: not a valid bucket name"),
    ('{"pixiv": {"refresh": "r"}, "filesystem_options": {"proxy": "maybe"}}', "filesystem_options.proxy: "),
    ('{"pixiv": {"refresh": "r"}, "cache": {"read_max_gb": 0}}', "cache.read_max_gb: input should be greater than 0"),
])
def test_bad_config_is_one_line_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config.load(path)
    assert expected in str(err.value)
    proc = pbe(path, "sync")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_missing_file(tmp_path: Path) -> None:
    proc = pbe(tmp_path / "nope.json", "status")
    assert proc.returncode == 2 and "not found" in proc.stderr and "Traceback" not in proc.stderr


def test_token_write_back_keeps_file(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    data = {**SEED, "zz_unknown": {"kept": [1, 2]}, "pixiv": {"access": "a", "refresh": "r", "extra": 1}}
    path.write_text(json.dumps(data))
    os.chmod(path, 0o600)
    cfg = config.load(path)
    config.save_tokens(cfg, "new-access", "new-refresh")
    saved = json.loads(path.read_text())
    assert saved["pixiv"] == {"access": "new-access", "refresh": "new-refresh", "extra": 1}
    assert saved["zz_unknown"] == {"kept": [1, 2]}
    assert list(saved) == list(data)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_shipped_sample_config_is_valid_but_for_the_token() -> None:
    from tests.conftest import ROOT

    data = json.loads((ROOT / "config.json").read_text())
    with pytest.raises(ConfigError, match="still the sample value"):
        config.parse(data, ROOT / "config.json")
    data["pixiv"]["refresh"] = "real"
    assert config.parse(data, ROOT / "config.json").settings.sync.concurrency == 4
