"""The gallery's speed targets (issue 14), ratios within one run.

Builds the synthetic archive (20,000 works, bench/common.py), serves it
with `pbe-fs serve`, then:

* GET of the home grid (50 thumbnails) and of a search answer, each
  against a GET of a static file of the same size from the same server
  (an archived file padded to that size): target within 3x;
* a 50-thumbnail page fully loaded (load event and every image decoded)
  in headless Chromium over loopback, browser cache off: target a median
  under 1 s.

    python bench/gallery_bench.py [--works N] [--repeat R]
"""

from __future__ import annotations

import argparse
import http.client
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import _jpeg, _padded, _write_work, build, report  # noqa: E402
from tests.chromium import Browser  # noqa: E402
from tests.conftest import Server  # noqa: E402

COOKIE = {"Cookie": "pbe_sid=" + "0" * 32}  # one visitor: no new session per request
STATIC_ID = 99_000_009


def get(port: int, path: str) -> bytes:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path, headers=COOKIE)
        answer = conn.getresponse()
        body = answer.read()
        if answer.status != 200:
            raise SystemExit(f"GET {path}: {answer.status}")
        return body
    finally:
        conn.close()


def timed_get(port: int, path: str) -> float:
    start = time.perf_counter()
    get(port, path)
    return time.perf_counter() - start


def median_get(port: int, path: str, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        get(port, path)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--works", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        print(f"building {args.works} works ...", file=sys.stderr)
        cfg, _, _ = build(base, args.works)
        home_path, search_path = "/?ipp=50&image=original&order=default", "/_pbe/ui/search?q=tag7&ipp=50"
        server = Server(cfg)
        try:
            port = int(server.url.rsplit(":", 1)[1])
            home, found = get(port, home_path), get(port, search_path)  # warm: the search table is built here
            server.stop()
            # two static files of exactly those sizes, archived like any work
            for n, size in enumerate((len(home), len(found))):
                _write_work(base / "data" / "artworks" / str(STATIC_ID + n), STATIC_ID + n, args.works + 10 + n,
                            [_padded(_jpeg(9, (8, 8)), size)], f"static {n}")
            import subprocess

            subprocess.run([sys.executable, "-m", "pbe_fs.cli", "-c", str(cfg), "-q", "reindex"], check=True,
                           env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
            server = Server(cfg)
            port = int(server.url.rsplit(":", 1)[1])
            static = [f"/by-id/{STATIC_ID + n}/{STATIC_ID + n}_p0.jpg" for n in range(2)]
            for path in (home_path, search_path, *static):
                get(port, path)  # warm
            # a first search starts making every work's search card in the background, once per
            # index generation (1-2 s at 20,000 works): measure the server as a visitor finds it after
            time.sleep(5)
            t_home = median_get(port, home_path, args.repeat)
            t_static_home = median_get(port, static[0], args.repeat)
            # a different tag each time: no answer is ever served twice
            t_search = statistics.median(
                timed_get(port, f"/_pbe/ui/search?q=tag{n % 50}&ipp=50") for n in range(1, args.repeat + 1))
            t_static_search = median_get(port, static[1], args.repeat)
            loads = []
            with Browser(base / "profile", 1280, 12000) as browser:  # all 50 in view: lazy images load too
                browser.page("Network.enable")
                browser.page("Network.setCacheDisabled", cacheDisabled=True)
                browser.go(server.url + home_path)
                for _ in range(7):
                    start = time.perf_counter()
                    browser.go(server.url + home_path)
                    ok = browser.js("(async () => { await Promise.all(Array.from(document.images, i => i.decode()"
                                    ".catch(() => null))); return document.images.length; })()")
                    loads.append(time.perf_counter() - start)
                    assert ok == 50, ok
            t_load = statistics.median(loads)
        finally:
            server.stop()
    report([
        (f"home grid, 50 of {args.works} works ({len(home)} B)", f"{t_home * 1000:.1f} ms",
         f"{t_static_home * 1000:.1f} ms static", f"{t_home / t_static_home:.1f}x", "<= 3x"),
        (f"search answer, a different tag each time ({len(found)} B)", f"{t_search * 1000:.1f} ms", f"{t_static_search * 1000:.1f} ms static",
         f"{t_search / t_static_search:.1f}x", "<= 3x"),
        ("50-thumbnail page fully loaded in Chromium (median of 7, cache off)", f"{t_load * 1000:.0f} ms", "", "",
         "< 1000 ms"),
    ])


if __name__ == "__main__":
    main()
