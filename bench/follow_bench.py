"""A follower's delay and cost, against the writer's own server in the same run.

Two pbe-fs machines on one SeaweedFS bucket (`weed mini`), the stand-in
pixiv: each round bookmarks one new work, runs `pbe-fs sync` on the writer,
and times from the sync's exit until the new work's folder is listed by

* the follower's `pbe-fs serve` (target: within 10 s), and
* the writer's own `pbe-fs serve` (the baseline: it reads the same index).

Then the follower's idle cost: requests and bytes to the bucket per poll,
counted by a proxy in front of the bucket while nothing changes (target: a
couple of small requests, whatever the archive's size).
`python bench/follow_bench.py [--repeat N] [--works N]`
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import Server, pbe  # noqa: E402
from tests.fakepixiv import FakePixiv, Work  # noqa: E402
from tests.s3rig import Proxy, SeaweedS3  # noqa: E402
from tests.test_follow import ARTIST, listed  # noqa: E402
from tests.test_s3 import s3_config  # noqa: E402


def until_listed(url: str, aid: int, start: float) -> float:
    while str(aid) not in listed(url, "by-id"):
        if time.monotonic() - start > 60:
            raise SystemExit(f"{aid} not listed at {url} after 60 s")
        time.sleep(0.05)
    return time.monotonic() - start


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} s ({min(values):.2f}–{max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--works", type=int, default=200)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        weed = SeaweedS3(folder / "s3")
        proxy = Proxy(weed.endpoint)
        servers = []
        try:
            bucket = weed.bucket("bench-follow")
            works = [(Work(97000000 + n, f"work {n}", ARTIST), "public") for n in range(args.works)]
            with FakePixiv(works) as fake:
                (folder / "w").mkdir()
                (folder / "f").mkdir()
                writer = s3_config(folder / "w", fake, weed.endpoint, bucket, sync={"sizes": ["original"]})
                follower = s3_config(folder / "f", None, proxy.endpoint, bucket, filesystem_options={"follow": True})
                pbe(writer, "sync", "--no-progress", check=True, timeout=600)
                servers = [Server(writer), Server(follower)]
                until_listed(servers[1].url, 97000000, time.monotonic())
                ours, base = [], []
                for n in range(args.repeat):
                    aid = 97100000 + n
                    fake.add(Work(aid, f"new {n}", ARTIST))
                    pbe(writer, "sync", "--no-progress", check=True)
                    start = time.monotonic()
                    base.append(until_listed(servers[0].url, aid, start))
                    ours.append(until_listed(servers[1].url, aid, start))
                time.sleep(3)
                replies, down, up = proxy.replies, proxy.down, proxy.up
                idle = 30.0
                time.sleep(idle)
                polls = idle / 2.0
                per_poll = ((proxy.replies - replies) / polls, (proxy.down - down + proxy.up - up) / polls)
            print(f"{args.works + 1} works in the bucket, {args.repeat} rounds")
            print("| measure | follower | writer's own server | ratio | target |")
            print("|---|---:|---:|---:|---|")
            print(f"| new work listed after the writer's sync exits | {spread(ours)} | {spread(base)} | "
                  f"{statistics.median(ours) / max(statistics.median(base), 1e-3):.1f}× | ≤ 10 s |")
            print(f"| idle poll: requests, bytes | {per_poll[0]:.1f}, {per_poll[1]:.0f} B | – | – | a couple of small requests |")
        finally:
            for server in servers:
                server.stop()
            proxy.close()
            weed.stop()


if __name__ == "__main__":
    main()
