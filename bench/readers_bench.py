"""What comic readers cost, against what the same server already does.

Builds the synthetic archive (20,000 works, plus one artist with exactly
50 works), then in one run:

* through the FUSE mount, `stat` of `ID.cbz` and reading its
  `ComicInfo.xml` member, vs `stat` of `ID.zip` and reading its first
  member (each on works never touched before: the artwork folder is built
  for the first time, as when a reader scans a library); target 1.5x
* through `pbe-fs serve`, GET of an OPDS acquisition feed page of 50 works
  (of 20,000) vs PROPFIND Depth 1 of a 50-entry folder; target 3x. Pages
  seen for the first time (each round another page) and repeated pages.

Each figure is the median of ``--rounds`` rounds (min-max in brackets),
the two sides interleaved, their order swapped every round.

    python bench/readers_bench.py [--works N] [--rounds R]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import sys
import tempfile
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import _jpeg, _write_work, build  # noqa: E402
from tests.conftest import Mount, Server  # noqa: E402

FIFTY_ARTIST = 424242
PER_SET = 100  # works per side and round in the FUSE part


def _fifty(data: Path, works: int) -> None:
    """50 works by one artist of their own: a folder of exactly 50 entries."""
    page = _jpeg(7, (16, 16))
    for n in range(50):
        aid = 99_100_000 + n
        folder = data / "artworks" / str(aid)
        _write_work(folder, aid, works + 100 + n, [page], f"fifty {n}")
        raw = json.loads((folder / "pixiv.json").read_text())
        raw["user"] = {"id": FIFTY_ARTIST, "name": "fifty", "account": "fifty"}
        (folder / "pixiv.json").write_text(json.dumps(raw))


def _span(values: list[float], unit: str = "ms") -> str:
    return f"{statistics.median(values):.2f} {unit} ({min(values):.2f}–{max(values):.2f})"


def _cbz_side(mount: Mount, aid: int) -> int:
    path = mount.path("by-id", str(aid), f"{aid}.cbz")
    os.stat(path)
    with zipfile.ZipFile(path) as zf:
        return len(zf.read("ComicInfo.xml"))


def _zip_side(mount: Mount, aid: int) -> int:
    path = mount.path("by-id", str(aid), f"{aid}.zip")
    os.stat(path)
    with zipfile.ZipFile(path) as zf:
        return len(zf.read(zf.namelist()[0]))


def fuse_part(cfg: Path, base: Path, rounds: int) -> list[tuple[str, list[float], list[float]]]:
    mount = Mount(cfg, base / "mnt")
    try:
        cold: dict[str, list[float]] = {"cbz": [], "zip": []}
        warm: dict[str, list[float]] = {"cbz": [], "zip": []}
        sides = {"cbz": _cbz_side, "zip": _zip_side}
        for r in range(rounds):
            order = ("cbz", "zip") if r % 2 == 0 else ("zip", "cbz")
            for i, side in enumerate(order):
                first = 100_000_000 + (2 * r + i) * PER_SET
                ids = range(first, first + PER_SET)
                for target in (cold, warm):  # the same works twice: first built, then kept
                    start = time.perf_counter()
                    for aid in ids:
                        sides[side](mount, aid)
                    target[side].append((time.perf_counter() - start) / PER_SET * 1000)
        return [("stat + ComicInfo.xml of ID.cbz vs stat + first member of ID.zip, new folders",
                 cold["cbz"], cold["zip"]),
                ("the same, folders already built", warm["cbz"], warm["zip"])]
    finally:
        mount.stop()


def _request(conn: http.client.HTTPConnection, method: str, path: str, headers: dict[str, str]) -> float:
    start = time.perf_counter()
    conn.request(method, path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    if resp.status >= 400 or not body:
        raise SystemExit(f"{method} {path}: HTTP {resp.status}")
    return (time.perf_counter() - start) * 1000


def http_part(cfg: Path, rounds: int) -> list[tuple[str, list[float], list[float]]]:
    server = Server(cfg)
    try:
        host, port = server.url.rsplit("/", 1)[1].split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=60)
        folder = f"/by-artist/fifty%20%5B{FIFTY_ARTIST}%5D/"
        depth = {"Depth": "1"}
        _request(conn, "PROPFIND", folder, depth)
        _request(conn, "GET", "/opds/by-ingress/", {})  # the first feed: catalog and tags loaded once
        new: dict[str, list[float]] = {"opds": [], "dav": []}
        again: dict[str, list[float]] = {"opds": [], "dav": []}
        for r in range(rounds):
            page = f"/opds/by-ingress/?page={10 + r}"
            new["opds"].append(_request(conn, "GET", page, {}))
            new["dav"].append(_request(conn, "PROPFIND", folder, depth))
            for target_side, method, path, headers in (("opds", "GET", page, {}), ("dav", "PROPFIND", folder, depth)):
                times = [_request(conn, method, path, headers) for _ in range(20)]
                again[target_side].append(statistics.median(times))
        conn.close()
        return [("OPDS feed page of 50 works (of 20,000), first view vs PROPFIND Depth 1 of 50 entries",
                 new["opds"], new["dav"]),
                ("the same, repeated (median of 20 each round)", again["opds"], again["dav"])]
    finally:
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--works", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pbe-readers-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        _fifty(base / "data", args.works)
        cfg, _, _ = build(base, args.works)
        rows = fuse_part(cfg, base, args.rounds) + http_part(cfg, args.rounds)
    targets = [1.5, 1.5, 3.0, 3.0]
    print(f"| measure ({args.rounds} rounds) | pbe-fs: median (min–max) | baseline | ratio | target |")
    print("|---|---:|---:|---:|---|")
    for (name, ours, baseline), target in zip(rows, targets):
        ratio = statistics.median(ours) / statistics.median(baseline)
        print(f"| {name} | {_span(ours)} | {_span(baseline)} | {ratio:.2f}× | ≤ {target}× "
              f"{'met' if ratio <= target else 'MISSED'} |")


if __name__ == "__main__":
    main()
