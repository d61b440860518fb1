"""`pbe-fs doctor` FAILs a config that holds a token others can read."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import pbe, write_config
from tests.fakepixiv import FakePixiv


def test_doctor_fails_a_config_others_can_read(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, webdav={"port": 0})
    pbe(config, "sync", "--no-progress", check=True)
    config.chmod(0o640)
    proc = pbe(config, "doctor")
    line = next(line for line in proc.stdout.splitlines() if line.startswith("config"))
    assert proc.returncode == 1
    assert line.split(None, 2)[:2] == ["config", "FAIL"] and "can be read by its group (mode 0640)" in line
    assert f"chmod 600 {config}" in line and "good-refresh" not in proc.stdout + proc.stderr
    config.chmod(0o600)
    proc = pbe(config, "doctor")
    assert proc.returncode == 0 and proc.stdout.startswith(f"config    OK   {config}"), proc.stdout
