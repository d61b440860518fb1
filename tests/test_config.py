"""config.json: the seed's file as it is, defaults, and one-line refusals."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from pbe_fs import config
from pbe_fs.errors import ConfigError
from tests.conftest import ROOT, pbe

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


def _run(cwd: Path, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`pbe-fs` without -c, run from cwd, with its own XDG config folder."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CONFIG_HOME": str(home), "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "pbe_fs.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)


def test_unknown_key_warns_with_the_closest_known_one(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SEED, "sync": {"intervall_minutes": 5}, "webdav": {"prot": 9000}, "zz": 1}))
    path.chmod(0o600)
    proc = pbe(path, "status")
    assert proc.returncode == 0, proc.stderr
    assert "unknown key sync.intervall_minutes (did you mean sync.interval_minutes?)" in proc.stderr
    assert "unknown key webdav.prot (did you mean webdav.port?)" in proc.stderr
    assert "unknown key zz: ignored" in proc.stderr
    # the seed's own keys are all known
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps(SEED))
    seed.chmod(0o600)
    assert "unknown key" not in pbe(seed, "status").stderr


def test_every_mistake_is_reported_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"pixiv": {"refresh": "r"}, "sync": {"concurrency": 0, "private": "maybe"},
                                "display": {"nsfw": "sometimes"}, "webdav": {"ssl_certificate": "c.pem"}}))
    proc = pbe(path, "status")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    for mistake in ("sync.concurrency: input should be greater than or equal to 1", "sync.private:",
                    "display.nsfw: 'sometimes' is not one of", "webdav.ssl_certificate and webdav.ssl_private_key"):
        assert mistake in lines[0]


@pytest.mark.parametrize("section", [
    {"read_only_token": 987654321}, {"pixiv": {"refresh": 987654321}}, {"app_key": ["987654321"]},
    {"webdav": {"users": {"alice": 987654321}}}, {"filesystem_options": {"secret_key": 987654321}},
    {"read_only_token": {"987654321": 1}}])
def test_errors_never_echo_a_secret(tmp_path: Path, section: dict) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps({**SEED, **section}))
    proc = pbe(path, "status")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "987654321" not in proc.stderr


@pytest.mark.parametrize("content, expected", [
    (b"[" * 100_000, "invalid JSON"),
    (b'{"pixiv": {"refresh": "r"}, "x": ' + b"[" * 900 + b"]" * 900 + b"}", "x.0.0.0"),
    (b'{"pixiv": {"refresh": "r"}, "x": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}", "nested"),
    (b"", "invalid JSON at line 1 column 1"),
    (b"\xff\xfe{}", "cannot read: not UTF-8 text"),
    (b'{"pixiv": {"refresh": "\\ud800"}, "display": {"nsfw": "\\udfff"}}', "display.nsfw"),
    (b'{"pixiv": {"refresh": "r"}, "sync": {"interval_minutes": NaN}}', "sync.interval_minutes"),
    (b'{"pixiv": {"refresh": "r"}, "webdav": {"port": 1' + b"0" * 5000 + b"}}", "invalid JSON"),
    (b'{"pixiv": {"refresh": "r"}, "sync": 5}', "sync: input should be a valid dictionary"),
    (b'{"pixiv": "r"}', "pixiv: input should be a valid dictionary"),
])
def test_every_malformed_config_is_one_line_exit_2(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "config.json"
    path.write_bytes(content)
    proc = pbe(path, "status")
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and expected in lines[0], proc.stderr[-2000:]
    assert len(lines[0]) < 600


def test_a_folder_given_as_config(tmp_path: Path) -> None:
    proc = pbe(tmp_path, "status")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [f"pbe-fs: error: {tmp_path}: is a folder, not a config file"]


def test_a_written_config_is_private_and_a_readable_one_warns_once(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(SEED))
    path.chmod(0o644)
    proc = pbe(path, "status")
    assert proc.returncode == 0 and proc.stderr.count("holds a token and can be read by others (mode 0644)") == 1
    assert f"chmod 600 {path}" in proc.stderr and "ref" not in proc.stderr.replace("refresh", "")
    cfg = config.load(path)
    config.save_tokens(cfg, "new-access", "new-refresh")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert "holds a token" not in pbe(path, "status").stderr
    # the sample holds no token: no warning for it
    assert config.private_problem(ROOT / "config.json") is None


def test_no_config_at_all_says_how_to_make_one(tmp_path: Path) -> None:
    proc = _run(tmp_path, tmp_path / "home", "status")
    assert proc.returncode == 2 and "README" not in proc.stderr
    assert proc.stderr.strip() == (f"pbe-fs: error: no config: run `pbe-fs login` to create "
                                   f"{tmp_path / 'home/pbe-fs/config.json'} (or pass -c FILE)")
    proc = pbe(tmp_path / "nope.json", "status")
    assert "README" not in proc.stderr and "leave out -c" in proc.stderr


def test_secrets_live_in_the_users_own_file(fake, tmp_path: Path) -> None:
    """A clone's config.json is the sample, never written; login and token
    rotation go to $XDG_CONFIG_HOME/pbe-fs/config.json, 0600 in a 0700 folder."""

    clone, home = tmp_path / "clone", tmp_path / "home"
    clone.mkdir()
    shared = json.loads((ROOT / "config.json").read_text())  # the sample, pointed at the stand-in
    shared["pixiv"].update(api_host=fake.url, timeout=2, backoff=0.01)
    shared["sync"].update(sizes=["original"], private=False)
    (clone / "config.json").write_text(json.dumps(shared))
    sample = (clone / "config.json").read_bytes()
    user = home / "pbe-fs" / "config.json"
    proc = _run(clone, home, "login", "--refresh-token", "nope")
    assert proc.returncode == 1 and not user.exists()
    proc = _run(clone, home, "login", "--refresh-token", "good-refresh")
    assert proc.returncode == 0, proc.stderr
    assert str(user) in proc.stderr
    assert stat.S_IMODE(user.stat().st_mode) == 0o600 and stat.S_IMODE(user.parent.stat().st_mode) == 0o700
    saved = json.loads(user.read_text())
    assert set(saved) == {"pixiv"} and set(saved["pixiv"]) == {"access", "refresh"}
    assert saved["pixiv"]["refresh"] == "good-refresh"
    # a rotated token lands in the user's file too; the sample is never touched
    fake.rotate_refresh = True
    fake.expire_tokens()
    proc = _run(clone, home, "sync", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    rotated = json.loads(user.read_text())["pixiv"]["refresh"]
    assert rotated != "good-refresh" and rotated in fake.refresh_tokens
    assert (clone / "config.json").read_bytes() == sample
    assert (clone / "data" / "artworks").is_dir()  # the sample's ./data, next to the sample
    assert stat.S_IMODE(user.stat().st_mode) == 0o600
    # -c FILE: exactly that file, read and written alone
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"pixiv": {"refresh": "good-refresh", "api_host": fake.url}}))
    before = user.read_bytes()
    proc = _run(clone, home, "-c", str(other), "login", "--refresh-token", rotated)
    assert proc.returncode == 0 and user.read_bytes() == before and (clone / "config.json").read_bytes() == sample
    assert json.loads(other.read_text())["pixiv"]["access"] and stat.S_IMODE(other.stat().st_mode) == 0o600
