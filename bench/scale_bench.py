"""How pbe-fs scales: 1k, 10k, 50k (and 200k) works, against plain folders.

For each size it builds an archive the way a sync leaves it (every work in
the four sizes, pixiv.json, pbe.json with its bookmarked event, the PDFs and
zips made; the index written with the sync's own ``Index.put_artwork``, in
one transaction, instead of syncing), and a plain folder tree of the same
shape (one folder per artwork folder and view, one empty file per entry).
Then it reports, each against the plain tree in the same run:

* mount start (until the mount answers `stat`)
* first and warm `ls -l by-ingress/`
* a full `find` of the mount, first and second
* PROPFIND Depth 1 of by-ingress/ (`pbe-fs serve`) against nginx's autoindex
  of the plain by-ingress folder
* the mount's RSS after each step, and the server's after 100 PROPFINDs of
  different folders
* the index's size

Each timing is the median of ``--runs`` runs with its min-max (the first
find: ``--runs`` - 1 fresh mounts; the first mount builds the plain tree).
Above ``--whole-up-to`` works the walks cover by-ingress/ only (every
work once); ``--no-walks`` skips them (200k works);
``--archives DIR`` keeps the built archives for later runs. Needs root (FUSE).
`python bench/scale_bench.py [--sizes 1000,10000,50000] [--runs 5] [--archives DIR]`
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pbe_fs import artwork  # noqa: E402
from pbe_fs import config as config_mod  # noqa: E402
from pbe_fs.index import Index  # noqa: E402
from pbe_fs.render import pdf as pdf_render  # noqa: E402
from pbe_fs.render.cache import Cache  # noqa: E402
from pbe_fs.storage.local import LocalStore  # noqa: E402

FIRST_ID = 100_000_000
# the four sizes a sync fetches, as pixiv names them (an 8×8 JPEG each: the tree's cost is per entry, not per byte)
SIZES = (("original", "{aid}_p0.jpg"), ("large", "large/{aid}_p0_master1200.jpg"),
         ("medium", "medium/{aid}_p0_master1200.jpg"), ("square_medium", "square_medium/{aid}_p0_square1200.jpg"))
def _tiny_jpeg() -> bytes:
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "JPEG")
    return buf.getvalue()


_JPEG = _tiny_jpeg()


def _work(n: int, works: int, tags: int = 6) -> tuple[dict, dict]:
    """The n-th work's pixiv JSON and record: artists of ~20 works, ``tags`` tags
    from a pool of works/4, dates over ten years, 10% R-18, 10% private,
    5% AI-generated, 1% gone."""
    rnd = random.Random(n)
    aid = FIRST_ID + n
    artist = rnd.randrange(max(1, works // 20))
    pool = max(50, works // 4)
    chosen = [{"name": f"tag {t}", "translated_name": None} for t in dict.fromkeys(rnd.randrange(pool) for _ in range(tags))]
    year, month, day = 2016 + rnd.randrange(10), 1 + rnd.randrange(12), 1 + rnd.randrange(28)
    raw = {"id": aid, "title": f"work {n} " + "ー" * rnd.randrange(20), "type": "illust", "caption": "",
           "user": {"id": 5_000_000 + artist, "name": f"artist {artist}", "account": f"a{artist}"},
           "tags": chosen, "create_date": f"{year}-{month:02d}-{day:02d}T12:00:00+09:00", "page_count": 1,
           "width": 1, "height": 1, "x_restrict": int(rnd.random() < 0.1), "sanity_level": 2,
           "illust_ai_type": 2 if rnd.random() < 0.05 else 1, "visible": True,
           "meta_single_page": {"original_image_url": f"https://i.pximg.net/img-original/img/{aid}_p0.jpg"}}
    at = f"{2024 + n * 2 // works}-{1 + n * 24 // works % 12:02d}-01T00:00:00+00:00"
    files = [{"path": path.format(aid=aid), "role": role, "page": 0, "size": len(_JPEG), "crc32": zlib.crc32(_JPEG),
              "sha256": hashlib.sha256(_JPEG).hexdigest(), "width": 8, "height": 8, "format": "JPEG", "mode": "L",
              "url": f"https://i.pximg.net/{role}/{aid}_p0.jpg"} for role, path in SIZES]
    restrict = "private" if rnd.random() < 0.1 else "public"
    gone = {"at": at, "reason": "deleted"} if rnd.random() < 0.01 else None
    record = {"format": 1, "id": aid, "seq": n + 1, "restrict": restrict, "bookmarked": True, "archived_at": at,
              "gone": gone, "ugoira": None, "files": files, "versions": [], "replaced": [],
              "history": [{"at": at, "event": "bookmarked", "restrict": restrict}]}
    return raw, record


def _write(data: Path, first: int, last: int, works: int, tags: int) -> None:
    for n in range(first, last):
        raw, record = _work(n, works, tags)
        folder = data / "artworks" / str(raw["id"])
        for sub in ("large", "medium", "square_medium"):
            (folder / sub).mkdir(parents=True)
        for f in record["files"]:
            (folder / f["path"]).write_bytes(_JPEG)
        (folder / "pixiv.json").write_text(json.dumps(raw, ensure_ascii=False))
        (folder / "pbe.json").write_text(json.dumps(record, ensure_ascii=False))


def _prepare(cfg: Path, first: int, last: int, works: int, tags: int) -> None:
    """What the sync does after archiving each work (its PDFs, zip layouts);
    img2pdf runs once, as every page here is the same image."""
    rendered: dict[bytes, bytes] = {}
    render = pdf_render.render

    def render_once(pages: list, images: list[bytes]) -> bytes:
        key = hashlib.sha256(b"".join(images)).digest()
        if key not in rendered:
            rendered[key] = render(pages, images)
        return rendered[key]
    pdf_render.render = render_once
    settings = config_mod.load(cfg)
    store, cache = LocalStore(settings.archive_path), Cache(settings.cache_path, 10**12)
    for n in range(first, last):
        raw, record = _work(n, works, tags)
        artwork.prepare(store, record, raw, cache, "original")


def build_archive(base: Path, works: int, *, tags: int = 6, jobs: int = 2) -> Path:
    """An archive of ``works`` works under base, as a sync leaves it; its config."""
    data = base / "data"
    cfg = base / "config.json"
    cfg.write_text(json.dumps({"pixiv": {"refresh": "x"}, "filesystem_options": {"path": "./data"},
                               "cache": {"path": "./cache", "max_gb": 1000}, "display": {"nsfw": "enabled"},
                               "sync": {"sizes": [role for role, _ in SIZES]}}))
    cfg.chmod(0o600)
    step = max(1, -(-works // (jobs * 4)))
    chunks = [(n, min(n + step, works)) for n in range(0, works, step)]
    with ProcessPoolExecutor(jobs) as pool:
        list(pool.map(_write, [data] * len(chunks), *zip(*chunks), [works] * len(chunks), [tags] * len(chunks)))
        list(pool.map(_prepare, [cfg] * len(chunks), *zip(*chunks), [works] * len(chunks), [tags] * len(chunks)))
    index = Index(data / ".pbe" / "index.sqlite3")
    with index.write() as db:
        for n in range(works):
            raw, record = _work(n, works, tags)
            Index.put_artwork(db, record, raw)
    index.close()
    return cfg


def plain_tree(mount: Path, plain: Path) -> int:
    """A plain copy of the mount's shape (folders and empty files); how many entries."""
    count = 0
    for folder, dirs, files in os.walk(mount):
        target = plain / os.path.relpath(folder, mount)
        target.mkdir(parents=True, exist_ok=True)
        for name in files:
            (target / name).touch()
        count += len(dirs) + len(files)
    return count


# -- measuring -------------------------------------------------------------------
def runs(fn: Callable[[], object], n: int) -> list[float]:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times


def fmt(times: list[float]) -> str:
    """median (min-max), in ms or s."""
    med = statistics.median(times)
    unit, scale = ("s", 1) if med >= 1 else ("ms", 1000)
    return f"{med * scale:.{1 if unit == 's' else 0}f} {unit} ({min(times) * scale:.{1 if unit == 's' else 0}f}–" \
           f"{max(times) * scale:.{1 if unit == 's' else 0}f})"


def ratio(ours: list[float], base: list[float]) -> str:
    return f"{statistics.median(ours) / statistics.median(base):.2f}×"


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1]) / 1024
    return 0.0


def server_rss(pid: int) -> str:
    """A server's memory: each worker's (the supervisor forks them; it serves nothing itself)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = [rss_mb(int(c)) for c in children] or [rss_mb(pid)]
    return f"{max(workers):.0f} MB a worker ({len(workers)}; supervisor {rss_mb(pid):.0f} MB)"


def find(path: Path) -> None:
    subprocess.run(["find", str(path)], stdout=subprocess.DEVNULL, check=True)


def ls(path: Path) -> None:
    subprocess.run(["ls", "-l", str(path)], stdout=subprocess.DEVNULL, check=True)


def propfind(url: str) -> bytes:
    req = urllib.request.Request(url, method="PROPFIND", headers={"Depth": "1"})
    with urllib.request.urlopen(req, timeout=600) as resp:
        return resp.read()


def members(url: str, count: int) -> list[str]:
    """The first ``count`` members of a folder, as the server names them (hrefs)."""
    hrefs = re.findall(rb"<D:href>([^<]+)</D:href>", propfind(url))[1:count + 1]
    base = url.split("/", 3)[:3]
    return ["/".join(base) + h.decode() for h in hrefs]


def start_mount(cfg: Path, mnt: Path):
    """A mount, with how long until it answered `stat` of its root, and of status.json."""
    from tests.conftest import Mount
    mnt.mkdir(parents=True, exist_ok=True)
    parent = os.stat(mnt).st_dev
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pbe_fs.cli", "-c", str(cfg), "mount", str(mnt)],
                            env={**os.environ, "PYTHONPATH": str(ROOT)}, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=open(mnt.parent / f"{mnt.name}.log", "w"))
    while os.stat(mnt).st_dev == parent:  # polled every 5 ms: the figure is a few hundred ms
        if proc.poll() is not None or time.perf_counter() - start > 60:
            raise AssertionError(f"mount did not come up: {(mnt.parent / f'{mnt.name}.log').read_text()}")
        time.sleep(0.005)
    root = time.perf_counter() - start
    os.stat(mnt / "status.json")
    status = time.perf_counter() - start
    m = Mount.__new__(Mount)  # the test helper's stop() and path(), around this process
    m.mountpoint, m.proc, m.log = mnt, proc, mnt.parent / f"{mnt.name}.log"
    return m, root, status


def nginx(root: Path, work: Path) -> tuple[subprocess.Popen, str]:
    """nginx serving root with autoindex: the baseline for a folder listing over HTTP."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    conf = work / "nginx.conf"
    conf.write_text(f"""daemon off; worker_processes 1; pid {work}/nginx.pid; error_log {work}/nginx.err;
events {{ worker_connections 64; }}
http {{ access_log off; server {{ listen 127.0.0.1:{port}; root {root}; autoindex on; }} }}
""")
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(work)], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).read()
            break
        except OSError:
            time.sleep(0.05)
    return proc, f"http://127.0.0.1:{port}"


def measure(works: int, repeat: int, tmp: Path, tags: int, whole_up_to: int,
            archives: Path | None = None, walks: bool = True) -> list[tuple[str, ...]]:
    from tests.conftest import Server
    base = (archives or tmp) / f"w{works}"
    rows: list[tuple[str, ...]] = []
    size = f"{works:,}"
    if (base / "config.json").exists():  # built by an earlier run with --archives
        cfg = base / "config.json"
    else:
        base.mkdir(parents=True)
        t = time.perf_counter()
        cfg = build_archive(base, works, tags=tags)
        rows.append((size, "build (4 sizes, records, PDFs and zips, index)", f"{time.perf_counter() - t:.0f} s", "", ""))
    index_mb = (base / "data/.pbe/index.sqlite3").stat().st_size / 1e6
    # Above whole_up_to works, the walks cover by-ingress only (one view of ten, every
    # work: a whole tree of 10,000 works is 2.5 M entries, minutes per walk here).
    scope = ("by-ingress",) if works > whole_up_to else ()
    what = "by-ingress/ (every work, one view)" if scope else "the whole tree"
    plain = tmp / f"plain{works}"
    roots, statuses, firsts = [], [], []
    for n in range(repeat):
        m, root, status = start_mount(cfg, tmp / f"mnt{works}-{n}")
        roots.append(root)
        statuses.append(status)
        try:
            if n == 0 and walks:
                entries = plain_tree(m.mountpoint.joinpath(*scope), plain.joinpath(*scope))  # walks it once
                (plain / "status.json").touch()
            elif n == 0:  # by-ingress's folders only, for ls and PROPFIND
                for name in os.listdir(m.path("by-ingress")):
                    (plain / "by-ingress" / name).mkdir(parents=True)
            elif walks:  # a first walk of a fresh mount (runs - 1 of them)
                firsts += runs(lambda: find(m.mountpoint.joinpath(*scope)), 1)
        finally:
            m.stop()
    # what any start costs: Python and the mount's imports (the baseline for the start rows)
    imports = runs(lambda: subprocess.run([sys.executable, "-c", "import pbe_fs.cli, pbe_fs.fuse"], check=True,
                                          env={**os.environ, "PYTHONPATH": str(ROOT)}), repeat)
    m, _, _ = start_mount(cfg, tmp / f"mnt{works}")
    try:
        rss_start = rss_mb(m.proc.pid)
        ls_first = runs(lambda: ls(m.path("by-ingress")), 1)
        ls_warm, ls_plain = runs(lambda: ls(m.path("by-ingress")), repeat), runs(lambda: ls(plain / "by-ingress"), repeat)
        rss_ls = rss_find = rss_after = rss_mb(m.proc.pid)
        find_warm, find_plain = [], []
        if walks:
            find(m.mountpoint.joinpath(*scope))
            rss_find = rss_mb(m.proc.pid)
            for _ in range(repeat):  # interleaved: the machine's load moves
                find_warm += runs(lambda: find(m.mountpoint.joinpath(*scope)), 1)
                find_plain += runs(lambda: find(plain.joinpath(*scope)), 1)
            rss_after = rss_mb(m.proc.pid)
    finally:
        m.stop()
    rows += [(size, "mount start: `stat` of its root answers", fmt(roots), f"Python + imports {fmt(imports)}",
              f"{ratio(roots, imports)}; RSS {rss_start:.0f} MB"),
             (size, "mount start: `stat` of status.json answers", fmt(statuses), f"Python + imports {fmt(imports)}",
              ratio(statuses, imports)),
             (size, "ls -l by-ingress, first (waits for the works to load)", fmt(ls_first), fmt(ls_plain),
              ratio(ls_first, ls_plain)),
             (size, "ls -l by-ingress, warm", fmt(ls_warm), fmt(ls_plain), ratio(ls_warm, ls_plain)),
             *([(size, f"find of {what}, first ({entries:,} entries; {len(firsts)} fresh mounts)", fmt(firsts or [0.0]),
                 fmt(find_plain), ratio(firsts, find_plain) if firsts else ""),
                (size, f"find of {what}, again", fmt(find_warm), fmt(find_plain), ratio(find_warm, find_plain)),
                (size, "mount RSS: started / after ls / after a find / after more finds",
                 f"{rss_start:.0f} / {rss_ls:.0f} / {rss_find:.0f} / {rss_after:.0f} MB", "", "")] if walks else
               [(size, "mount RSS: started / after ls", f"{rss_start:.0f} / {rss_ls:.0f} MB", "", "")]),
             (size, "index size", f"{index_mb:.1f} MB", "", "")]
    print("\n".join(" | ".join(r) for r in rows), file=sys.stderr, flush=True)  # kept if what follows fails
    server = Server(cfg)
    ngx, ngx_url = nginx(plain, tmp)
    try:
        url = f"{server.url}/by-ingress/"
        propfind(url)
        ours = runs(lambda: propfind(url), repeat)
        theirs = runs(lambda: urllib.request.urlopen(f"{ngx_url}/by-ingress/").read(), repeat)
        rows.append((size, "PROPFIND Depth 1 by-ingress", fmt(ours), f"nginx autoindex {fmt(theirs)}",
                     ratio(ours, theirs)))
        groups = members(f"{server.url}/by-tag/", 100)  # at any size: the plain tree has by-tag only when walked
        for g in groups:
            propfind(g)
        rows.append((size, f"server RSS after {len(groups)} PROPFINDs of tag folders",
                     server_rss(server.proc.pid), "", ""))
    finally:
        server.stop()
        ngx.terminate()
        ngx.wait()
    print(" | ".join(rows[-1]), file=sys.stderr, flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tags", type=int, default=6, help="tags per work (each is one more folder per work in by-tag)")
    parser.add_argument("--whole-up-to", type=int, default=1_000,
                        help="above this many works, walk by-ingress/ only (the whole tree takes hours)")
    parser.add_argument("--archives", type=Path, help="build the archives here and reuse them in later runs")
    parser.add_argument("--no-walks", action="store_true", help="no find (start, ls, RSS and PROPFIND only)")
    args = parser.parse_args()
    rows: list[tuple[str, ...]] = []
    with tempfile.TemporaryDirectory(prefix="pbe-scale-bench-", dir="/var/tmp") as tmp:
        os.chmod(tmp, 0o755)  # nginx's workers read the plain tree as nobody
        for works in (int(x) for x in args.sizes.split(",")):
            rows += measure(works, args.runs, Path(tmp), args.tags, args.whole_up_to, args.archives, not args.no_walks)
    print(f"medians of {args.runs} runs (min–max); baseline: a plain folder tree of the same shape, same run")
    print("| works | measure | pbe-fs | baseline | ratio |")
    print("|---:|---|---:|---:|---:|")
    for row in rows:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
