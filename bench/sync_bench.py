"""Sync throughput and memory against the stand-in pixiv with real latency.

For each N, N single-page works are bookmarked on the stand-in, which
answers every API call after ``--api-latency`` and every image after
``--image-latency`` seconds. A real `pbe-fs sync` runs in a subprocess and
its wall time is compared with the lower bound that latency allows:

    bound = (bookmark pages + 1 auth) × api latency + images × image latency / concurrency

Reported: wall time, bound, their ratio (target ≤ 1.3 at N = 1,000) and the
sync's peak RSS (target: flat as N grows).

    python bench/sync_bench.py                 # N = 1000 and 5000
    python bench/sync_bench.py -n 200 -n 1000  # quicker
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fakepixiv import FakePixiv, Work  # noqa: E402
from tests.fakepixiv.server import PAGE_SIZE  # noqa: E402


def run(n: int, api_latency: float, image_latency: float, concurrency: int) -> dict[str, float]:
    works = [(Work(100_000_000 + i, f"bench {i}", (1000 + i % 97, f"artist {i % 97}", f"a{i % 97}")), "public")
             for i in range(n)]
    with FakePixiv(works, api_latency=api_latency, image_latency=image_latency) as fake, \
            tempfile.TemporaryDirectory(prefix="pbe-bench-") as tmp:
        config = Path(tmp) / "config.json"
        config.write_text(json.dumps({
            "pixiv": {"refresh": "good-refresh", "api_host": fake.url},
            "temp_path": "./tmp", "filesystem_options": {"path": "./data"},
            "sync": {"private": False, "concurrency": concurrency},
        }))
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "-q", "sync", "--no-progress"],
                                env=env, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        if status != 0:
            raise SystemExit(f"sync failed with status {status}")
        images = fake.calls["image"]
        pages = math.ceil(n / PAGE_SIZE)
        bound = (pages + 1) * api_latency + images * image_latency / concurrency
        return {"n": n, "images": images, "wall": wall, "bound": bound, "ratio": wall / bound,
                "rss_mb": usage.ru_maxrss / 1024}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, action="append", help="works to sync (repeatable; default 1000 and 5000)")
    parser.add_argument("--api-latency", type=float, default=0.05)
    parser.add_argument("--image-latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    print("| N | images | wall (s) | lower bound (s) | ratio | peak RSS (MB) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for n in args.n or [1000, 5000]:
        r = run(n, args.api_latency, args.image_latency, args.concurrency)
        print(f"| {r['n']} | {r['images']} | {r['wall']:.1f} | {r['bound']:.1f} | {r['ratio']:.2f} | {r['rss_mb']:.0f} |",
              flush=True)


if __name__ == "__main__":
    main()
