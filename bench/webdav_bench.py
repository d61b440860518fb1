"""`pbe-fs serve` against rclone and nginx on the same machine, same files.

Builds the synthetic archive (20,000 works), then in one run:

* PROPFIND Depth 1 of `by-ingress/` vs `rclone serve webdav` of a plain
  folder of as many subfolders
* GET of a 5 MB original vs nginx serving the archive folder statically
* requests/s of 16 parallel clients (wrk, 5 s) on a ~1 KB and a 200 KB
  original: pbe-fs (webdav.workers as configured, default 2, and 1 for
  comparison), `rclone serve webdav` of the archive folder and nginx
  serving it statically, back to back in each of ``--rounds`` rounds
  (default 5): medians with min–max, ratios to rclone in the same run
* GET of the 60-page zip (generated) vs GET of a static file of ours

    python bench/webdav_bench.py [--works N] [--rounds R]

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

SMALL = 100_000_000  # the first of the synthetic one-page works: an 873-byte JPEG
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


def single_worker(cfg: Path) -> Path:
    """The same archive's config with ``webdav.workers`` 1 (beside it, so
    its relative paths stay right)."""
    import json

    data = json.loads(cfg.read_text())
    data.setdefault("webdav", {})["workers"] = 1
    one = cfg.with_name("config-1-worker.json")
    one.write_text(json.dumps(data))
    one.chmod(0o600)
    return one


def small_files(port: int, one_port: int, rport: int, nport: int, rounds: int) -> list[tuple[str, ...]]:
    """16 clients on a ~1 KB and a 200 KB file: every server back to back
    in each round (the machine is shared: only ratios within a run count)."""
    import statistics

    files = {"~1 KB": (f"/by-id/{SMALL}/{SMALL}_p0.jpg", f"/artworks/{SMALL}/{SMALL}_p0.jpg"),
             "200 KB": (f"/by-id/{MEDIUM}/{MEDIUM}_p0.jpg", f"/artworks/{MEDIUM}/{MEDIUM}_p0.jpg")}
    servers = {"pbe-fs": (port, 0), "pbe-fs, 1 worker": (one_port, 0), "rclone": (rport, 1), "nginx": (nport, 1)}
    rows = []
    for label, paths in files.items():
        size = fetch(port, "GET", paths[0])
        assert fetch(rport, "GET", paths[1]) == size == fetch(nport, "GET", paths[1])
        got: dict[str, list[float]] = {name: [] for name in servers}
        for n in range(rounds):
            order = list(servers) if n % 2 == 0 else list(reversed(servers))
            for name in order:
                where, which = servers[name]
                got[name].append(wrk(f"http://127.0.0.1:{where}{paths[which]}"))
        rclone = got["rclone"]
        for name in ("pbe-fs", "pbe-fs, 1 worker", "nginx"):
            ours = got[name]
            ratios = [a / b for a, b in zip(ours, rclone)]
            rows.append((f"16 clients, {label} file ({size:,} B), {name}",
                         f"{statistics.median(ours):,.0f} req/s ({min(ours):,.0f}–{max(ours):,.0f})",
                         f"rclone {statistics.median(rclone):,.0f} req/s ({min(rclone):,.0f}–{max(rclone):,.0f})",
                         f"{statistics.median(ratios):.2f}× ({min(ratios):.2f}–{max(ratios):.2f})",
                         {"~1 KB": "≥ 0.5×", "200 KB": "≥ 2×"}[label] if name == "pbe-fs" else ""))
    return rows


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
        rport, nport, dport = free_port(), free_port(), free_port()
        ours = Server(cfg)
        port = int(ours.url.rsplit(":", 1)[1])
        one = Server(single_worker(cfg))
        one_port = int(one.url.rsplit(":", 1)[1])
        rclone = subprocess.Popen(["rclone", "serve", "webdav", str(plain), "--addr", f"127.0.0.1:{rport}"],
                                  stderr=subprocess.DEVNULL)
        # the same files for GETs: rclone serving the archive folder as it is
        rfiles = subprocess.Popen(["rclone", "serve", "webdav", str(base / "data"), "--addr", f"127.0.0.1:{dport}"],
                                  stderr=subprocess.DEVNULL)
        web = nginx(base / "data", nport, base)
        try:
            wait_port(rport)
            wait_port(nport)
            wait_port(dport)
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

            rows += small_files(port, one_port, dport, nport, args.rounds)

            zpath = f"/by-id/{MANGA}/{MANGA}.zip"
            size = fetch(port, "GET", zpath)
            t_zip = timed(lambda: fetch(port, "GET", zpath), 10)
            t_static = timed(lambda: fetch(port, "GET", big), 10)
            zip_rate, static_rate = size / t_zip / 1e6, 5 / t_static
            rows.append(("GET the 60-page zip", f"{zip_rate:.0f} MB/s", f"static file of ours {static_rate:.0f} MB/s",
                         f"{zip_rate / static_rate:.2f}×", "≥ 0.8×"))
        finally:
            ours.stop()
            one.stop()
            for proc in (rclone, rfiles, web):
                proc.terminate()
            for proc in (rclone, rfiles, web):
                proc.wait(10)
    report(rows)


if __name__ == "__main__":
    main()
