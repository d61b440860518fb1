"""`pbe-fs delete --keep-out`: a deleted, still-bookmarked work stays out of
`sync --full` until `pbe-fs let-in`, and its history says so."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import pbe, write_config
from tests.fakepixiv import FakePixiv

WORK = 93012350


def test_keep_a_deleted_work_out_and_let_it_back_in(fake: FakePixiv, tmp_path: Path) -> None:
    config = write_config(tmp_path, fake, sync={"sizes": ["original"]})
    pbe(config, "sync", "--no-progress", check=True)
    data = tmp_path / "data"
    seq = json.loads((data / f"artworks/{WORK}/pbe.json").read_text())["seq"]
    proc = pbe(config, "delete", "--keep-out", str(WORK), check=True)
    assert "kept out" in proc.stderr
    fake.reset_counts()
    pbe(config, "sync", "--full", "--no-progress", check=True)
    assert not (data / f"artworks/{WORK}").exists()
    assert fake.calls["image"] == 0 and fake.calls["detail"] == 0
    tombstone = json.loads((data / f"deleted/{WORK}.json").read_text())
    assert tombstone["keep_out"] is True and [e["event"] for e in tombstone["history"]][-2:] == ["deleted_from_archive", "kept_out"]
    status = pbe(config, "status", check=True).stdout
    assert f"kept out   {WORK} deleted " in status and f"pbe-fs let-in {WORK}" in status
    assert json.loads(pbe(config, "status", "--json", check=True).stdout)["kept_out"][0]["id"] == WORK
    # let it back in: the next full sync fetches it, with its number and its whole history
    pbe(config, "let-in", str(WORK), check=True)
    pbe(config, "sync", "--full", "--no-progress", check=True)
    record = json.loads((data / f"artworks/{WORK}/pbe.json").read_text())
    assert record["seq"] == seq
    assert [e["event"] for e in record["history"]][-4:] == ["deleted_from_archive", "kept_out", "let_in", "refetched"]
    assert "kept out" not in pbe(config, "status", check=True).stdout
    # keeping out a work that is already deleted, and mistakes
    pbe(config, "delete", str(WORK), check=True)
    assert pbe(config, "delete", "--keep-out", str(WORK), check=True).returncode == 0
    assert json.loads((data / f"deleted/{WORK}.json").read_text())["keep_out"] is True
    proc = pbe(config, "let-in", "93012346")
    assert proc.returncode == 1 and proc.stderr.strip() == "pbe-fs: error: 93012346 has not been deleted from the archive"
