"""`pbe-fs login` against the stand-in's OAuth endpoints (PKCE and refresh)."""

from __future__ import annotations

import json
import re
import stat
import subprocess
import sys
import os
import http.client
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import ROOT, pbe, write_config
from tests.fakepixiv import FakePixiv


def login(config: Path, answer_with, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `pbe-fs login`, read the URL it prints, play the browser, paste the code."""
    proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "login", *args],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines = []
    while True:
        line = proc.stdout.readline()
        lines.append(line)
        if "Paste that code" in line or not line:
            break
    url = next(re.search(r"(http://\S+/web/v1/login\?\S+)", l).group(1) for l in lines if "/web/v1/login" in l)
    out, err = proc.communicate(answer_with(url) + "\n", timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "".join(lines) + out, err)


def browser(url: str) -> str:
    """What a logged-in browser ends on: pixiv://account/login?code=…"""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    conn.request("GET", f"{parts.path}?{parts.query}")
    resp = conn.getresponse()
    assert resp.status == 302
    return resp.getheader("Location")


def test_pkce_login_writes_tokens(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, pixiv={"refresh": "old-and-revoked"})
    os.chmod(config, 0o640)
    proc = login(config, browser)
    assert proc.returncode == 0, proc.stderr
    saved = json.loads(config.read_text())
    assert saved["pixiv"]["refresh"].startswith("login-refresh-") and saved["pixiv"]["refresh"] in fake.refresh_tokens
    # it holds secrets: private afterwards, whatever it was (issue 11)
    assert saved["read_only_token"] == "seed-ro-token" and stat.S_IMODE(config.stat().st_mode) == 0o600
    assert saved["pixiv"]["refresh"] not in proc.stderr + proc.stdout
    pbe(config, "sync", "--no-progress", check=True)  # the new token works


def test_login_code_used_twice_or_wrong(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake)
    proc = login(config, lambda url: "code-999")
    assert proc.returncode == 1 and "refused the login code" in proc.stderr and "Traceback" not in proc.stderr
    assert json.loads(config.read_text())["pixiv"]["refresh"] == "good-refresh"


def test_login_into_a_config_without_a_token(fake: FakePixiv, tmp_path: Path) -> None:
    config = tmp_path / "fresh.json"
    base = write_config(tmp_path, fake)
    config.write_text(json.dumps({"pixiv": {"api_host": json.loads(base.read_text())["pixiv"]["api_host"]}}))
    proc = login(config, lambda url: browser(url))  # the whole pixiv:// URL pasted
    assert proc.returncode == 0, proc.stderr
    assert json.loads(config.read_text())["pixiv"]["refresh"].startswith("login-refresh-")


def test_refresh_token_option(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, pixiv={"refresh": "stale"})
    proc = pbe(config, "login", "--refresh-token", "nope")
    assert proc.returncode == 1 and "refused the refresh token" in proc.stderr
    assert json.loads(config.read_text())["pixiv"]["refresh"] == "stale"
    proc = pbe(config, "login", "--refresh-token", "good-refresh", check=True)
    saved = json.loads(config.read_text())["pixiv"]
    assert saved["refresh"] == "good-refresh" and saved["access"] in fake.access_tokens
    assert "good-refresh" not in proc.stderr
