"""Import speed: `pbe-fs import old-app --link` against `cp -al` plus one
hash and one decode of every file.

An old app's folder of N works (4 files each: the original and the three
reduced sizes, small JPEGs as the old app kept them) is built once. Each run
then, in turn (A B A B …, so a drifting machine moves both alike):

* A: `pbe-fs import old-app SRC --link` into an empty archive;
* B: `cp -al SRC DST`, then SHA-256 and a decode of every file once, in one
  process: the same ``digest_file`` and ``probe`` (a full decode, JPEGs at
  1/8 scale) a sync runs on a download and the import runs on each file.

Reported: medians of the runs with min-max, and the speed ratio B/A
(target ≥ 0.5: the import at least half as fast as the bare work).

Each run writes into folders of its own, all removed after the last run:
removing the last run's archive right before the next timed run made that
run pay for the removal. On ext4 without a journal (this machine's root
file system) a new inode skips every inode freed in the last minute or
more, one block lookup each (``recently_deleted`` in the kernel's
profile), so after 60,000 freed inodes each new folder and file cost
0.1-0.6 ms of kernel time instead of ~20 µs. The import makes six inodes
a work (its folder, three size folders, two JSON files), ``cp -al`` one,
so the removal was charged mostly to the import, and more in each run:
the import's time grew run after run while the baseline's stayed flat.

    python bench/import_bench.py            # N = 10,000 (40,000 files), 5 runs
    python bench/import_bench.py -n 1000 -r 7
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}
SIZES = {"original": (480, 360), "large": (400, 300), "medium": (240, 180), "square_medium": (180, 180)}
PREFIX = {"large": "c/600x1200_90", "medium": "c/540x540_70", "square_medium": "c/360x360_70"}


def _jpeg(seed: int, size: tuple[int, int]) -> bytes:
    im = Image.linear_gradient("L").resize(size).convert("RGB").rotate(seed % 360)
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def build(folder: Path, works: int) -> None:
    images = {q: [_jpeg(seed, size) for seed in range(8)] for q, size in SIZES.items()}
    artworks = {}
    for i in range(works):
        aid = 100_000_000 + i
        stamp = f"2021/{1 + i % 12:02d}/{1 + i % 28:02d}/00/00/00"
        urls = {"original": f"https://i.pximg.net/img-original/img/{stamp}/{aid}_p0.jpg",
                "large": f"https://i.pximg.net/{PREFIX['large']}/img-master/img/{stamp}/{aid}_p0_master1200.jpg",
                "medium": f"https://i.pximg.net/{PREFIX['medium']}/img-master/img/{stamp}/{aid}_p0_master1200.jpg",
                "square_medium": f"https://i.pximg.net/{PREFIX['square_medium']}/img-master/img/{stamp}/{aid}_p0_square1200.jpg"}
        artworks[str(aid)] = {
            "id": aid, "title": f"work {i}", "type": "illust", "caption": "", "restrict": 0,
            "user": {"id": 1000 + i % 500, "name": f"artist {i % 500}", "account": f"a{i % 500}"},
            "tags": [{"name": f"tag{i % 50}", "translated_name": None}],
            "create_date": f"2021-{1 + i % 12:02d}-{1 + i % 28:02d}T00:00:00+09:00", "page_count": 1,
            "width": 480, "height": 360, "sanity_level": 2, "x_restrict": 0, "series": None,
            "image_urls": {k: urls[k] for k in PREFIX}, "meta_single_page": {"original_image_url": urls["original"]},
            "meta_pages": [], "visible": True, "illust_ai_type": 1,
        }
        work = folder / "data" / str(aid)
        work.mkdir(parents=True)
        for quality in SIZES:
            (work / f"{aid}_p0_{quality}.jpg").write_bytes(images[quality][i % 8])
    (folder / "artworks.json").write_text(json.dumps(artworks))
    (folder / "config.json").write_text(json.dumps({"filesystem": "local", "filesystem_options": {"path": "./data"}}))


BASELINE = """
import os, sys
from pathlib import Path
from pbe_fs.archive import digest_file, probe
for folder, _, names in os.walk(sys.argv[1]):
    for name in names:
        if not name.endswith(".jpg"):
            continue
        path = Path(folder) / name
        digest_file(path)
        probe(path, "image")
"""


def timed(cmd: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(cmd, env=ENV, check=True, stdin=subprocess.DEVNULL)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", type=int, default=10_000, help="works (4 files each)")
    parser.add_argument("-r", "--runs", type=int, default=5)
    parser.add_argument("--reuse-folders", action="store_true",
                        help="the earlier procedure: one archive and one copy, removed before each run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="pbe-import-bench-", dir=os.environ.get("BENCH_TMP")) as tmp:
        base = Path(tmp)
        src = base / "old"
        build(src, args.n)
        imports, baselines, loads = [], [], []
        for run in range(args.runs):
            name = "" if args.reuse_folders else f"-{run}"  # a new archive each run: see the top of this file
            config, copy = base / f"config{name}.json", base / f"copy{name}"
            config.write_text(json.dumps({"pixiv": {"refresh": "x"}, "filesystem_options": {"path": f"./archive{name}"},
                                          "temp_path": "./tmp", "cache": {"path": "./cache"}}))
            config.chmod(0o600)
            for path in (base / f"archive{name}", copy):
                shutil.rmtree(path, ignore_errors=True)
            imports.append(timed([sys.executable, "-m", "pbe_fs.cli", "-c", str(config), "-q", "import", "old-app",
                                  str(src), "--link", "--no-progress"]))
            baselines.append(timed(["sh", "-c", f"cp -al '{src}' '{copy}' && "
                                                f"'{sys.executable}' -c '{BASELINE}' '{copy}'"]))
            loads.append(os.getloadavg()[0])
            print(f"run {run + 1}: import {imports[-1]:.2f} s, cp -al + hash + decode {baselines[-1]:.2f} s, "
                  f"load average {loads[-1]:.1f}", file=sys.stderr)
    ratios = [b / a for a, b in zip(imports, baselines)]

    def fmt(values: list[float], unit: str = " s") -> str:
        return f"{statistics.median(values):.2f}{unit} (min {min(values):.2f}, max {max(values):.2f})"

    print(f"N = {args.n} works, {4 * args.n} files, {args.runs} runs, medians (min-max); "
          f"load average {min(loads):.1f} to {max(loads):.1f} on {os.cpu_count()} cores; "
          f"{'folders reused, removed before each run' if args.reuse_folders else 'new folders each run'}")
    print(f"  import --link:              {fmt(imports)}")
    print(f"  cp -al + hash + decode:     {fmt(baselines)}")
    print(f"  speed ratio (B/A, >= 0.5):  {fmt(ratios, '')}")


if __name__ == "__main__":
    main()
