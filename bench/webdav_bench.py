"""`pbe-fs serve` against rclone and nginx on the same machine, same files.

Builds the synthetic archive (20,000 works), then in one run:

* PROPFIND Depth 1 of `by-ingress/` vs `rclone serve webdav` of a plain
  folder of as many subfolders
* GET of a 5 MB original vs nginx serving the archive folder statically
* requests/s of 16 parallel clients (wrk) on a 200 KB original vs nginx
* GET of the 60-page zip (generated) vs GET of a static file of ours

    python bench/webdav_bench.py [--works N]

With ``--against DIR`` (a checkout of other pbe-fs code, e.g. ``git
worktree add /tmp/before HEAD~5``) it compares that code with this one
instead, on one archive, in interleaved rounds (``--rounds``, default 5):
the machine is shared and noisy, so each round runs both servers back to
back, and the medians and ranges are what to read.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from common import BIG, MANGA, MEDIUM, build, report, timed  # noqa: E402
from tests.conftest import Server  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")



def fetch(port: int, method: str, path: str, headers: dict[str, str] | None = None) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        total = 0
        while chunk := resp.read(1 << 20):
            total += len(chunk)
        if resp.status >= 400:
            raise SystemExit(f"{method} {path}: HTTP {resp.status}")
        return total
    finally:
        conn.close()


def wrk(url: str) -> float:
    out = subprocess.run(["wrk", "-t2", "-c16", "-d5s", url], capture_output=True, text=True, check=True).stdout
    return float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))


def nginx(root: Path, port: int, folder: Path) -> subprocess.Popen[bytes]:
    conf = folder / "nginx.conf"
    conf.write_text(f"""user root; worker_processes 1; daemon off; pid {folder}/nginx.pid; error_log {folder}/nginx.err;
events {{ worker_connections 1024; }}
http {{ access_log off; sendfile on; tcp_nopush on; keepalive_requests 100000;
  server {{ listen 127.0.0.1:{port}; root {root}; }} }}
""")
    return subprocess.Popen(["nginx", "-c", str(conf), "-p", str(folder)], stderr=subprocess.DEVNULL)


class CodeServer(Server):
    """`pbe-fs serve` from another checkout of the code (PYTHONPATH first)."""

    def __init__(self, config: Path, code: Path) -> None:
        import tests.conftest as conftest

        root, conftest.ROOT = conftest.ROOT, code  # Server runs the CLI with PYTHONPATH=ROOT
        try:
            super().__init__(config)
        finally:
            conftest.ROOT = root


def measure(port: int) -> dict[str, float]:
    """Our side of the table's four rows."""
    depth1 = {"Depth": "1"}
    fetch(port, "PROPFIND", "/by-ingress/", depth1)
    big = f"/by-id/{BIG}/{BIG}_p0.jpg"
    zpath = f"/by-id/{MANGA}/{MANGA}.zip"
    size = fetch(port, "GET", zpath)
    return {
        "PROPFIND Depth 1 (ms)": timed(lambda: fetch(port, "PROPFIND", "/by-ingress/", depth1), 5) * 1000,
        "GET 5 MB original (MB/s)": 5 / timed(lambda: fetch(port, "GET", big), 10),
        "16 clients, 200 KB file (req/s)": wrk(f"http://127.0.0.1:{port}/by-id/{MEDIUM}/{MEDIUM}_p0.jpg"),
        "GET the 60-page zip (MB/s)": size / timed(lambda: fetch(port, "GET", zpath), 10) / 1e6,
    }


def compare(code: Path, works: int, rounds: int) -> None:
    import statistics

    results: dict[str, dict[str, list[float]]] = {"before": {}, "after": {}}
    with tempfile.TemporaryDirectory(prefix="pbe-dav-bench-", dir="/var/tmp") as tmp:
        cfg, _, _ = build(Path(tmp), works)
        for n in range(rounds):
            for side in (("before", "after") if n % 2 == 0 else ("after", "before")):
                server = CodeServer(cfg, code) if side == "before" else Server(cfg)
                try:
                    for key, value in measure(int(server.url.rsplit(":", 1)[1])).items():
                        results[side].setdefault(key, []).append(value)
                finally:
                    server.stop()
    print(f"| measure ({rounds} interleaved rounds) | before: median (min–max) | after: median (min–max) | after/before |")
    print("|---|---:|---:|---:|")
    for key in results["after"]:
        b, a = results["before"][key], results["after"][key]
        print(f"| {key} | {statistics.median(b):.0f} ({min(b):.0f}–{max(b):.0f}) | {statistics.median(a):.0f} "
              f"({min(a):.0f}–{max(a):.0f}) | {statistics.median(a) / statistics.median(b):.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--works", type=int, default=20_000)
    parser.add_argument("--against", type=Path, help="another checkout of pbe-fs to compare with, interleaved")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if args.against:
        if shutil.which("wrk") is None:
            raise SystemExit("wrk is needed: apt-get install -y wrk")
        compare(args.against.resolve(), args.works, args.rounds)
        return
    for tool in ("rclone", "nginx", "wrk"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed: apt-get install -y rclone nginx-light wrk")
    rows = []
    with tempfile.TemporaryDirectory(prefix="pbe-dav-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        cfg, _, _ = build(base, args.works)
        plain = base / "plain"
        plain.mkdir()
        for name in os.listdir(base / "data/artworks"):
            (plain / name).mkdir()
        rport, nport = free_port(), free_port()
        ours = Server(cfg)
        port = int(ours.url.rsplit(":", 1)[1])
        rclone = subprocess.Popen(["rclone", "serve", "webdav", str(plain), "--addr", f"127.0.0.1:{rport}"],
                                  stderr=subprocess.DEVNULL)
        web = nginx(base / "data", nport, base)
        try:
            wait_port(rport)
            wait_port(nport)
            depth1 = {"Depth": "1"}
            fetch(port, "PROPFIND", "/by-ingress/", depth1)
            fetch(rport, "PROPFIND", "/", depth1)
            t_ours = timed(lambda: fetch(port, "PROPFIND", "/by-ingress/", depth1), 5)
            t_rclone = timed(lambda: fetch(rport, "PROPFIND", "/", depth1), 5)
            rows.append((f"PROPFIND Depth 1, {args.works:,} folders", f"{t_ours * 1000:.0f} ms",
                         f"rclone {t_rclone * 1000:.0f} ms", f"{t_ours / t_rclone:.2f}×", "≤ 1.0×"))

            big = f"/by-id/{BIG}/{BIG}_p0.jpg"
            big_static = f"/artworks/{BIG}/{BIG}_p0.jpg"
            t_ours = timed(lambda: fetch(port, "GET", big), 10)
            t_nginx = timed(lambda: fetch(nport, "GET", big_static), 10)
            rows.append(("GET 5 MB original", f"{5 / t_ours:.0f} MB/s", f"nginx {5 / t_nginx:.0f} MB/s",
                         f"{t_nginx / t_ours:.2f}×", "≥ 0.5×"))

            rps_ours = wrk(f"http://127.0.0.1:{port}/by-id/{MEDIUM}/{MEDIUM}_p0.jpg")
            rps_nginx = wrk(f"http://127.0.0.1:{nport}/artworks/{MEDIUM}/{MEDIUM}_p0.jpg")
            rows.append(("16 clients, 200 KB file", f"{rps_ours:.0f} req/s", f"nginx {rps_nginx:.0f} req/s",
                         f"{rps_ours / rps_nginx:.2f}×", "≥ 0.5×"))

            zpath = f"/by-id/{MANGA}/{MANGA}.zip"
            size = fetch(port, "GET", zpath)
            t_zip = timed(lambda: fetch(port, "GET", zpath), 10)
            t_static = timed(lambda: fetch(port, "GET", big), 10)
            zip_rate, static_rate = size / t_zip / 1e6, 5 / t_static
            rows.append(("GET the 60-page zip", f"{zip_rate:.0f} MB/s", f"static file of ours {static_rate:.0f} MB/s",
                         f"{zip_rate / static_rate:.2f}×", "≥ 0.8×"))
        finally:
            ours.stop()
            rclone.terminate()
            web.terminate()
            rclone.wait(10)
            web.wait(10)
    report(rows)


if __name__ == "__main__":
    main()
