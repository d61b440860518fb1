"""`pbe-fs doctor` finds what is wrong; --repair fixes it from pixiv."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import pbe, write_config
from tests.fakepixiv import FakePixiv
from tests.helpers import assert_archive_exact, expected_ids


def test_doctor_finds_and_repairs(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, webdav={"port": 0})
    pbe(config, "sync", "--no-progress", check=True)
    proc = pbe(config, "doctor")
    assert proc.returncode == 0, proc.stdout
    assert [line.split()[:2] for line in proc.stdout.splitlines()] == [
        ["config", "OK"], ["token", "OK"], ["index", "OK"], ["records", "OK"], ["works", "OK"], ["files", "OK"],
        ["disk", "OK"], ["fuse", "OK"], ["port", "OK"]]
    data = tmp_path / "data/artworks"
    (data / "93012350/93012350_p4.jpg").unlink()
    corrupt = data / "93012346/medium/93012346_p0_master1200.jpg"
    corrupt.write_bytes(corrupt.read_bytes()[:-1] + b"\x00")
    proc = pbe(config, "doctor")
    assert proc.returncode == 1
    files = next(line for line in proc.stdout.splitlines() if line.startswith("files"))
    assert "2 damaged or missing" in files and "93012350/93012350_p4.jpg (missing)" in files
    assert "93012346/medium/93012346_p0_master1200.jpg (SHA-256 differs)" in files and "--repair" in files
    proc = pbe(config, "doctor", "--repair")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert_archive_exact(tmp_path / "data", fake, expected_ids(fake))
    # a revoked token is named as such
    fake.refresh_tokens.clear()
    proc = pbe(config, "doctor")
    token = next(line for line in proc.stdout.splitlines() if line.startswith("token"))
    assert proc.returncode == 1 and token.split(None, 2)[1:] == ["FAIL", "pixiv refused the refresh token: run `pbe-fs login`"]
