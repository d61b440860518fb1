"""Hostile names over WebDAV, judged by real clients against the FUSE mount.

An archive synced from the stand-in with titles, tags and artist names
made of what breaks URLs and file systems (``#``, ``%``, ``%2e%2e%2f``,
``?``, ``;``, ``&amp``, spaces, emoji, CJK, 300-byte names, control
characters, NFD). For each client the set of files it lists and copies
must equal what the FUSE mount shows, byte for byte: a client that drops
or renames a work is a backup that silently lost it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import unicodedata
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

import pytest

from tests.conftest import Mount, Server, pbe, write_config
from tests.fakepixiv import FakePixiv, Work

NFD = unicodedata.normalize("NFD", "がぎぐ")
TITLES = ["#hash", "100% sure", "%2e%2e%2f", "%41 and %", "what? really?", "a;b;c", "&amp; &lt;", "  spaced  out  ",
          "🎨 emoji 🔥", "日本語のタイトル", "x" * 300, "あ" * 100, "line\nbreak\ttab\x01bell", NFD,
          "plus+equals=", "quote'\"back\\slash", "dot. . ."]
TAGS = ["#hash", "%", "?q=1", "&amp", "a b", "風景", "🎨", "%2e%2e"]
ARTISTS = [(7001, "#1 & 100%", "a1"), (7002, "あ" * 120 + "one", "a2"), (7003, "あ" * 120 + "two", "a3"),
           (7004, "semi;colon? ", "a4")]


def hostile_works() -> list[tuple[Work, str]]:
    works = []
    for n, title in enumerate(TITLES):
        tags = [(TAGS[n % len(TAGS)], None), (TAGS[(n + 3) % len(TAGS)], None)]
        works.append((Work(97000001 + n, title, ARTISTS[n % len(ARTISTS)], tags=tags), "public"))
    return works


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """(server, FUSE mount, config) over the hostile archive; originals only,
    so whole views stay small enough to copy with every client."""
    folder = tmp_path_factory.mktemp("hostile")
    with FakePixiv(hostile_works()) as fake:
        config = write_config(folder, fake, sync={"concurrency": 4, "sizes": ["original"]})
        pbe(config, "sync", "--no-progress", check=True)
    server = Server(config)
    mount = Mount(config, folder / "mnt")
    try:
        yield server, mount, config
    finally:
        mount.stop()
        server.stop()


def fuse_files(root: Path) -> dict[str, bytes]:
    """Every file under root as the FUSE mount shows it: relative path -> bytes."""
    out = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = Path(folder, name)
            out[path.relative_to(root).as_posix()] = path.read_bytes()
    return out


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def dav(server: Server, method: str, path: str, depth: str = "1") -> tuple[int, bytes]:
    import http.client

    host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
    conn = http.client.HTTPConnection(host, port, timeout=20)
    try:
        conn.request(method, path, headers={"Depth": depth} if method == "PROPFIND" else {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def walk(server: Server, path: str = "/") -> dict[str, bool]:
    """A recursive walk by Depth-1 PROPFINDs, following only the hrefs
    the server gives: decoded path -> is a collection."""
    seen: dict[str, bool] = {}
    todo = [path]
    while todo:
        current = todo.pop()
        status, body = dav(server, "PROPFIND", current)
        assert status == 207, (current, status)
        for response in ET.fromstring(body).iter("{DAV:}response"):
            href = response.findtext("{DAV:}href")
            assert href == quote(unquote(href), safe="/"), f"not percent-encoded: {href!r}"
            is_dir = response.find(".//{DAV:}collection") is not None
            assert href.endswith("/") == is_dir, href
            name = unquote(href)
            if href != current and name not in seen:
                seen[name] = is_dir
                if is_dir:
                    todo.append(href)
    return seen


def test_every_href_is_encoded_and_answers(hostile) -> None:
    server, mount, _ = hostile
    listing = walk(server)
    fuse = {"/" + p for p in fuse_files(mount.mountpoint)}
    assert {p for p, d in listing.items() if not d} == fuse
    dirs = [p for p, d in listing.items() if d]
    assert any("#hash" in p for p in dirs) and any("%2e%2e%2f" in p for p in dirs) and any("？" in p for p in dirs)
    for path, is_dir in listing.items():
        status, _ = dav(server, "PROPFIND" if is_dir else "HEAD", quote(path), "0")
        assert status == (207 if is_dir else 200), (path, status)
    # names the mount shows are what the titles asked for, made portable
    ingress = os.listdir(mount.path("by-ingress"))
    assert any(n.endswith(" #hash") for n in ingress) and any(n.endswith(" %2e%2e%2f") for n in ingress)
    assert any(n.endswith(" line break tab\ufffdbell") for n in ingress)
    assert any(n.endswith(" がぎぐ") for n in ingress)  # stored NFC
    artists = os.listdir(mount.path("by-artist"))
    assert sum(n.endswith((" [7002]", " [7003]")) for n in artists) == 2 and all(len(n.encode()) <= 255 for n in artists)


def test_folder_redirects_and_links(hostile) -> None:
    import http.client

    server, mount, _ = hostile
    for name in os.listdir(mount.path("by-ingress")):
        encoded = "/by-ingress/" + quote(name, safe="")
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        conn = http.client.HTTPConnection(host, port, timeout=20)
        conn.request("GET", encoded)
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 301 and resp.getheader("Location") == encoded + "/", (name, resp.status)
        conn.request("GET", encoded + "/")
        page = conn.getresponse().read().decode()
        conn.close()
        aid = name.split()[1]
        assert f'href="{encoded}/{aid}.zip"' in page, name
    assert dav(server, "GET", "//by-id//97000001/meta.json")[0] == 200
    assert dav(server, "PROPFIND", "//by-tag/", "1")[0] == 207
    assert "Traceback" not in server.stderr() and "start_response" not in server.stderr()


def rclone_env(server: Server) -> dict[str, str]:
    return {**os.environ, "RCLONE_CONFIG_PBE_TYPE": "webdav", "RCLONE_CONFIG_PBE_URL": server.url,
            "RCLONE_CONFIG_PBE_VENDOR": "other"}


@pytest.mark.skipif(shutil.which("rclone") is None, reason="rclone not installed")
def test_rclone_lists_and_copies_every_name(hostile, tmp_path: Path) -> None:
    server, mount, _ = hostile
    env = rclone_env(server)
    out = subprocess.run(["rclone", "lsjson", "-R", "--files-only", "pbe:"], env=env, capture_output=True, text=True,
                         check=True, timeout=120).stdout
    fuse = fuse_files(mount.mountpoint)
    assert {e["Path"] for e in json.loads(out)} == set(fuse)
    for view in ("by-ingress", "by-tag", "by-artist"):
        subprocess.run(["rclone", "copy", f"pbe:{view}", str(tmp_path / view)], env=env, check=True, timeout=300,
                       capture_output=True)
        assert local_files(tmp_path / view) == fuse_files(mount.path(view)), view


GIO = shutil.which("gio") and shutil.which("dbus-run-session")


def gio_session(script: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dbus-run-session", "--", "sh", "-c", script], capture_output=True, text=True,
                          timeout=timeout)


@pytest.mark.skipif(not GIO, reason="gio/gvfs not installed")
def test_gio_lists_and_copies_every_name(hostile, tmp_path: Path) -> None:
    """gvfs (what Nautilus uses): list by-tag recursively, copy every file."""
    server, mount, _ = hostile
    base = server.url.replace("http://", "dav://")
    # a Python walker inside one dbus session: one gio process per folder and per file
    walker = tmp_path / "walk.py"
    walker.write_text(f"""
import json, subprocess, sys
from urllib.parse import quote
base = {base!r}
out, todo, files = {{}}, ["by-tag"], []
subprocess.run(["gio", "mount", base + "/"], check=True, capture_output=True, timeout=30)
while todo:
    rel = todo.pop()
    url = base + "/" + quote(rel)
    listing = subprocess.run(["gio", "list", "-a", "standard::type", url + "/"], capture_output=True, text=True, timeout=30)
    if listing.returncode:
        sys.exit(f"gio list {{rel}}: {{listing.stderr}}")
    for line in listing.stdout.splitlines():
        name, _, rest = line.partition("\\t")  # name, size, (type)
        child = rel + "/" + name
        if rest.endswith("(directory)"):
            todo.append(child)
        else:
            files.append(child)
dest = sys.argv[1]
import os
for rel in files:
    target = os.path.join(dest, rel)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    subprocess.run(["gio", "copy", base + "/" + quote(rel), target], check=True, capture_output=True, timeout=30)
print(json.dumps(files))
""")
    proc = gio_session(f"python3 {walker} {tmp_path / 'copy'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    listed = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    fuse = fuse_files(mount.path("by-tag"))
    assert listed == {"by-tag/" + p for p in fuse}
    assert local_files(tmp_path / "copy" / "by-tag") == fuse


@pytest.mark.skipif(shutil.which("cadaver") is None, reason="cadaver not installed")
def test_cadaver_lists_and_gets_every_name(hostile, tmp_path: Path) -> None:
    """cadaver prints names and gets files by name; it exits 0 even when a
    command fails, so what it printed and wrote is what is judged."""
    server, mount, _ = hostile
    works = sorted(os.listdir(mount.path("by-ingress")))
    # cadaver quotes names itself when given them in double quotes; names with a double quote cannot be typed
    typable = [w for w in works if '"' not in w]
    script = "".join(f'cd "/by-ingress/{w}"\nlcd "{tmp_path / w}"\nls\nmget *\n' for w in typable) + "quit\n"
    for w in typable:
        (tmp_path / w).mkdir()
    proc = subprocess.run(["cadaver", server.url + "/"], input=script, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "HOME": str(tmp_path)})
    assert "failed" not in proc.stdout.lower() and "not a collection" not in proc.stdout.lower(), proc.stdout[-2000:]
    for w in typable:
        assert local_files(tmp_path / w) == fuse_files(mount.path("by-ingress", w)), w
    assert len(typable) >= len(works) - 1


def test_webdavclient3_lists_and_downloads_every_name(hostile, tmp_path: Path) -> None:
    """webdavclient3 3.14.7 (the newest) decodes each href and then splits
    it as a URL again when it drops the folder itself from a listing
    (``Urn.compare_path``): a child whose name *starts* with ``#`` looks
    like the folder and is left out, whatever the server sends. Those
    folders are listed by name instead; every file is downloaded."""
    webdav3 = pytest.importorskip("webdav3.client")
    server, mount, _ = hostile
    client = webdav3.Client({"webdav_hostname": server.url, "disable_check": True})
    files: list[str] = []
    todo = ["/by-tag/"] + [f"/by-tag/{n}/" for n in os.listdir(mount.path("by-tag")) if n.startswith("#")]
    while todo:
        folder = todo.pop()
        for info in client.list(folder, get_info=True):  # paths come back decoded
            if info["path"] == folder:  # kept in when the name has a #, for the same reason
                continue
            if info["isdir"]:
                todo.append(info["path"])
            else:
                files.append(info["path"].lstrip("/"))
    fuse = fuse_files(mount.path("by-tag"))
    assert sorted(files) == sorted("by-tag/" + p for p in fuse)
    for rel in files:
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        client.download_sync(remote_path=rel, local_path=str(target))
    assert local_files(tmp_path / "by-tag") == fuse
