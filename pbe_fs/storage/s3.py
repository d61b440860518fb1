"""The archive in an S3-compatible bucket (AWS S3, R2, MinIO, SeaweedFS...).

Same keys as on disk under ``filesystem_options.prefix``. What makes it
safe without renames:

* An artwork counts as archived once ``pbe.json`` exists, and that object
  is uploaded last, after every other object of the work was uploaded and
  verified; it is deleted first when a work is removed.
* Every upload carries Content-MD5 (the server refuses a body that does not
  match) and, after it, a HEAD checks the size and the ETag (MD5, or MD5 of
  part MD5s for multipart) and the SHA-256 we record in the object's
  metadata; an upload resumed after a kill skips objects that already match.
* Reads go through a block cache (``readcache``) with ranged GETs: a small
  read fetches its blocks only; a sequential one streams with a growing
  window, so a whole file costs a few requests.
"""

from __future__ import annotations

import base64
import errno
import hashlib
import logging
import re
import shutil
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, PbeError
from .readcache import BLOCK, ReadCache

if TYPE_CHECKING:
    from ..config import Config

log = logging.getLogger("pbe_fs.s3")

PART = 8 << 20  # multipart above this, in parts of this size
_UPLOADS = 8  # a work's files uploaded at once
_READAHEAD = 16  # blocks fetched ahead of a sequential reader
_FIRST_AHEAD = 4  # ... and of a first read at offset 0 (a whole original, usually)
_RECENT = 3  # blocks kept in memory per open file, for the reads that asked for them
_SKIP = 4  # cached blocks a stream reads through rather than start another GET after them
_CLOSE_WAIT = 5.0  # seconds close() waits for a block in flight
_SILENCE = 5.0  # seconds a bucket that timed out is not asked again
_ATTEMPTS = 2  # tries of each call within filesystem_options.timeout
_MD5_ETAG = re.compile(r'^"?([0-9a-f]{32})(-\d+)?"?$')


class StorageError(PbeError):
    """The bucket refused or failed an operation."""


def _missing(exc: Exception) -> bool:
    code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
    return code in ("404", "NoSuchKey", "NotFound")


def _digests(src: Path) -> tuple[int, str, list[bytes]]:
    """(size, SHA-256, MD5 of each upload part) of a local file, in one pass."""
    sha, parts, size = hashlib.sha256(), [], 0
    with open(src, "rb") as fh:
        while chunk := fh.read(PART):
            sha.update(chunk)
            parts.append(hashlib.md5(chunk).digest())
            size += len(chunk)
    return size, sha.hexdigest(), parts or [hashlib.md5(b"").digest()]


def _expected_etag(parts: list[bytes]) -> str:
    if len(parts) == 1:
        return parts[0].hex()
    return f"{hashlib.md5(b''.join(parts)).hexdigest()}-{len(parts)}"


class S3Store:
    kind = "s3"
    blocking = True

    def __init__(self, client: Any, bucket: str, prefix: str, *, cache: ReadCache, proxy: bool = True,
                 endpoint: str = "") -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.cache = cache
        self.proxy = proxy
        self.endpoint = endpoint
        self.follow = False  # another machine writes this bucket: never take its lease
        self.timeout = 10.0  # filesystem_options.timeout
        self._silent_until = 0.0  # no calls before this (monotonic): the bucket just timed out

    @classmethod
    def from_config(cls, config: Config) -> S3Store:
        import boto3
        from botocore.config import Config as BotoConfig

        opts = config.settings.filesystem_options
        if not opts.bucket:
            raise ConfigError(f"{config.path}: filesystem_options.bucket: required when filesystem is \"s3\"")
        session = boto3.session.Session(aws_access_key_id=opts.access_key or None,
                                        aws_secret_access_key=opts.secret_key or None,
                                        region_name=opts.region or None)
        boto_config = BotoConfig(
            # A bucket that accepts and never answers must not hold a reader
            # longer than ``timeout`` in all: two tries of half of it each.
            retries={"mode": "standard", "max_attempts": _ATTEMPTS},
            max_pool_connections=32,
            connect_timeout=opts.timeout / _ATTEMPTS, read_timeout=opts.timeout / _ATTEMPTS,
            # SigV4 for presigned URLs too (SigV2 is refused by newer AWS regions)
            signature_version="s3v4",
            # We send Content-MD5 and check ETags ourselves; the newer default
            # (CRC trailers in aws-chunked bodies) is not spoken by every server.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            s3={"addressing_style": "path" if opts.endpoint_url else "auto"},
        )
        client = session.client("s3", endpoint_url=opts.endpoint_url or None, config=boto_config,
                                region_name=opts.region or ("us-east-1" if opts.endpoint_url else None))
        cache = ReadCache(config.cache_path / "blocks", int(config.settings.cache.read_max_gb * 1e9))
        store = cls(client, opts.bucket, opts.prefix, cache=cache, proxy=opts.proxy, endpoint=opts.endpoint_url)
        store.follow, store.timeout = opts.follow, opts.timeout
        return store

    def check(self) -> None:
        """Fail early, in one line, when the bucket cannot be reached or read."""
        try:
            self._call("access to the bucket", self.client.head_bucket)
        except FileNotFoundError:
            raise StorageError(f"{self.describe()}: no such bucket (create it first; pbe-fs does not)") from None

    def describe(self) -> str:
        where = f" at {self.endpoint}" if self.endpoint else ""
        return f"s3://{self.bucket}/{self.prefix}{where}"

    def _k(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        """One S3 call; failures become one line naming the bucket."""
        from botocore.exceptions import BotoCoreError, ClientError
        self._check_silence(what)
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._failure(what, exc, kwargs.get("Key", "")) from None

    def _check_silence(self, what: str) -> None:
        """A bucket that just let a call time out is not asked again for a
        while: each reader would wait the whole timeout for the same answer."""
        if time.monotonic() < self._silent_until:
            raise StorageError(f"{self.describe()}: {what} not tried: the bucket did not answer within "
                               f"{self.timeout:g} s a moment ago")

    def _failure(self, what: str, exc: Exception, key: str = "") -> Exception:
        """The one-line error a failed call stands for."""
        from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, NoCredentialsError
        if isinstance(exc, (ConnectionError, HTTPClientError)):  # timeouts, refused, reset: not answering
            self._silent_until = time.monotonic() + min(self.timeout, _SILENCE)
        if isinstance(exc, NoCredentialsError):
            return StorageError(f"{self.describe()}: no credentials: set filesystem_options.access_key and secret_key, "
                                "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or another AWS credential source)")
        if isinstance(exc, ClientError):
            if _missing(exc):
                return FileNotFoundError(errno.ENOENT, f"{self.describe()}{key}: no such object")
            error = exc.response.get("Error", {})
            code = str(error.get("Code"))
            hint = ("; check filesystem_options.access_key and secret_key (and the bucket's policy)"
                    if code in ("403", "AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId") else "")
            return StorageError(f"{self.describe()}: {what} failed: {code} {error.get('Message', '')}".rstrip() + hint)
        return StorageError(f"{self.describe()}: {what} failed: {exc}")

    # -- small objects -----------------------------------------------------------
    def read_bytes(self, key: str) -> bytes:
        body = self._call("GET", self.client.get_object, Key=self._k(key))["Body"]
        with body:
            return body.read()

    def write_bytes(self, key: str, data: bytes) -> None:
        self._call("PUT", self.client.put_object, Key=self._k(key), Body=data,
                   ContentMD5=base64.b64encode(hashlib.md5(data).digest()).decode(),
                   Metadata={"sha256": hashlib.sha256(data).hexdigest()})

    def read_tagged(self, key: str, etag: str = "") -> tuple[bytes | None, str]:
        """(bytes, ETag) of a small object, or (None, etag) when it still has
        ``etag``: a poll that finds nothing new costs one 304. A missing
        object raises FileNotFoundError."""
        from botocore.exceptions import BotoCoreError, ClientError
        self._check_silence("GET")
        try:
            extra = {"IfNoneMatch": etag} if etag else {}
            reply = self.client.get_object(Bucket=self.bucket, Key=self._k(key), **extra)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code")) in ("304", "NotModified"):
                return None, etag
            raise self._failure("GET", exc, key) from None
        except BotoCoreError as exc:
            raise self._failure("GET", exc, key) from None
        with reply["Body"] as body:
            return body.read(), reply.get("ETag", "")

    def write_if(self, key: str, data: bytes, etag: str | None) -> bool:
        """Put ``data`` only if the object is still as seen: absent (``etag``
        None) or with that ETag. False when someone else got there first.
        Endpoints that ignore or refuse conditional writes get a plain PUT
        (the race that leaves is described in docs/s3.md)."""
        from botocore.exceptions import BotoCoreError, ClientError
        extra = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": etag}
        self._check_silence("PUT")
        try:
            self.client.put_object(Bucket=self.bucket, Key=self._k(key), Body=data, **extra)
            return True
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code"))
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            if code not in ("NotImplemented", "501", "InvalidArgument", "400"):
                raise self._failure("PUT", exc, key) from None
        except BotoCoreError as exc:
            raise self._failure("PUT", exc, key) from None
        self.write_bytes(key, data)
        return True

    def stat(self, key: str) -> tuple[int, str] | None:
        """(size, recorded SHA-256) of an object, or None."""
        try:
            head = self._call("HEAD", self.client.head_object, Key=self._k(key))
        except FileNotFoundError:
            return None
        return int(head["ContentLength"]), head.get("Metadata", {}).get("sha256", "")

    def exists(self, key: str) -> bool:
        return self.stat(key) is not None

    def at_hand(self, key: str) -> bool:
        return False  # every read is a request to the bucket

    def delete(self, key: str) -> None:
        self._call("DELETE", self.client.delete_object, Key=self._k(key))

    def delete_tree(self, prefix: str, first: str = "pbe.json") -> None:
        """Delete every object under ``prefix``; its record goes first, so the
        work stops counting as archived before any of its files go."""
        keys = list(self.keys(prefix))
        keys.sort(key=lambda k: not k.endswith("/" + first))
        for i in range(0, len(keys), 1000):
            batch = [{"Key": self._k(k)} for k in keys[i: i + 1000]]
            self._call("DELETE", self.client.delete_objects, Delete={"Objects": batch, "Quiet": True})

    def keys(self, prefix: str) -> Iterator[str]:
        """Every object under ``prefix`` (a folder), in key order."""
        full = self._k(prefix.strip("/") + "/")
        token: dict[str, str] = {}
        while True:
            page = self._call("LIST", self.client.list_objects_v2, Prefix=full, **token)
            for item in page.get("Contents", []):
                yield item["Key"][len(self.prefix):]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    # -- uploads -----------------------------------------------------------------
    def put_file(self, key: str, src: Path, size: int, sha256: str = "") -> None:
        """Upload a local file and prove it arrived whole; a no-op when the
        object is already there with the same size and SHA-256."""
        actual, digest, parts = _digests(src)
        if actual != size or (sha256 and digest != sha256):
            raise OSError(errno.EIO, f"{src} changed on local disk before upload (size or SHA-256 differ)")
        if self.stat(key) == (size, digest):
            return
        if len(parts) == 1:
            with open(src, "rb") as fh:
                self._call("PUT", self.client.put_object, Key=self._k(key), Body=fh, ContentLength=size,
                           ContentMD5=base64.b64encode(parts[0]).decode(), Metadata={"sha256": digest})
        else:
            self._multipart(key, src, parts, digest)
        self._verify(key, size, digest, _expected_etag(parts))

    def _multipart(self, key: str, src: Path, parts: list[bytes], digest: str) -> None:
        upload = self._call("multipart upload", self.client.create_multipart_upload, Key=self._k(key),
                            Metadata={"sha256": digest})["UploadId"]
        try:
            done = []
            with open(src, "rb") as fh:
                for n, md5 in enumerate(parts, 1):
                    chunk = fh.read(PART)
                    etag = self._call("upload part", self.client.upload_part, Key=self._k(key), UploadId=upload,
                                      PartNumber=n, Body=chunk, ContentMD5=base64.b64encode(md5).decode())["ETag"]
                    done.append({"PartNumber": n, "ETag": etag})
            self._call("complete upload", self.client.complete_multipart_upload, Key=self._k(key), UploadId=upload,
                       MultipartUpload={"Parts": done})
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._k(key), UploadId=upload)
            except Exception:
                pass
            raise

    def unfinished_uploads(self, older_than: float) -> list[tuple[str, str, str]]:
        """(key, upload id, started) of multipart uploads under our prefix
        begun more than ``older_than`` seconds ago and never completed (a
        writer killed mid-file): the bucket keeps, and bills, their parts."""
        from datetime import datetime, timezone
        found, marker = [], {}
        now = datetime.now(timezone.utc)
        while True:
            page = self._call("LIST uploads", self.client.list_multipart_uploads, Prefix=self.prefix, **marker)
            for up in page.get("Uploads", []):
                started = up["Initiated"]
                if (now - started).total_seconds() >= older_than:
                    found.append((up["Key"][len(self.prefix):], up["UploadId"], started.isoformat()))
            if not page.get("IsTruncated"):
                return found
            marker = {"KeyMarker": page["NextKeyMarker"], "UploadIdMarker": page["NextUploadIdMarker"]}

    def abort_upload(self, key: str, upload_id: str) -> None:
        self._call("abort upload", self.client.abort_multipart_upload, Key=self._k(key), UploadId=upload_id)

    def _verify(self, key: str, size: int, digest: str, etag: str) -> None:
        head = self._call("HEAD", self.client.head_object, Key=self._k(key))
        got = _MD5_ETAG.match(head.get("ETag", ""))
        problems = []
        if int(head["ContentLength"]) != size:
            problems.append(f"size {head['ContentLength']}, expected {size}")
        if got and "".join(g or "" for g in got.groups()) != etag:
            problems.append(f"ETag {head['ETag']}, expected {etag}")
        if head.get("Metadata", {}).get("sha256", digest) != digest:
            problems.append("recorded SHA-256 differs")
        if problems:
            raise StorageError(f"{self.describe()}{key}: upload did not verify: {'; '.join(problems)}")

    def publish(self, src: Path, prefix: str, last: tuple[str, ...] = ()) -> None:
        """Upload a complete local folder as ``prefix``; the ``last`` files go
        in that order after all others, and objects the folder no longer has
        are removed after that. ``src`` is deleted once all is in."""
        names = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
        before = set(self.keys(prefix))

        def put(name: str) -> None:
            self.put_file(f"{prefix}/{name}", src / name, (src / name).stat().st_size)

        # Each upload waits on round trips: a work's files go up together...
        with ThreadPoolExecutor(_UPLOADS, thread_name_prefix="upload") as pool:
            list(pool.map(put, [n for n in names if n not in last]))
        for name in last:  # ...and its records after them, in order
            if name in names:
                put(name)
        stale = before - {f"{prefix}/{n}" for n in names}
        for key in sorted(stale):
            self.delete(key)
        shutil.rmtree(src, ignore_errors=True)

    # -- reads ---------------------------------------------------------------------
    def _chunks(self, key: str) -> Iterator[bytes]:
        """A whole object, streamed past the read cache."""
        body = self._call("GET", self.client.get_object, Key=self._k(key))["Body"]
        with body:
            yield from body.iter_chunks(BLOCK)

    def get_file(self, key: str, dest: Path) -> None:
        with open(dest, "wb") as fh:
            for chunk in self._chunks(key):
                fh.write(chunk)

    def sha256(self, key: str) -> str:
        """Every byte hashed, not through the read cache (a `doctor` pass
        over the whole bucket would only churn it)."""
        digest = hashlib.sha256()
        for chunk in self._chunks(key):
            digest.update(chunk)
        return digest.hexdigest()

    def open(self, key: str, size: int, version: str = "") -> S3Handle:
        return S3Handle(self, key, size, version)

    def url(self, key: str, expires: int) -> str | None:
        """A presigned GET for clients to fetch from the bucket directly, or
        None when the config says the bytes go through us (``proxy``)."""
        if self.proxy:
            return None
        return self.client.generate_presigned_url("get_object", Params={"Bucket": self.bucket, "Key": self._k(key)},
                                                  ExpiresIn=expires)

    def ranged(self, key: str, start: int, end: int) -> Any:
        """A streaming body of bytes [start, end) of an object."""
        return self._call("GET", self.client.get_object, Key=self._k(key), Range=f"bytes={start}-{end - 1}")["Body"]


class S3Handle:
    """An object read at any offset through the block cache.

    Missing blocks are fetched by one worker thread per open file: first the
    blocks a read waits for, then, while reads go on from where the last one
    stopped (or start at offset 0), up to 16 MiB ahead of them. A reader
    that streams gets the rest of the object from one GET, read block by
    block; any other read gets just its blocks. A fetched block is handed to
    the waiting reader from memory before it is written to the cache, so
    the network, the cache and the reader overlap. ``ready`` says whether a
    read would wait at all, so an event loop can answer cached reads without
    a thread hop.
    """

    def __init__(self, store: S3Store, key: str, size: int, version: str) -> None:
        self.store, self.key, self.size = store, key, size
        self.entry = store.cache.entry(ReadCache.ident(store.describe(), key, version, str(size)), size)
        self._cond = threading.Condition()
        self._demand: set[int] = set()  # blocks a read is waiting for
        self._ahead = (0, 0)  # [from, to): blocks worth fetching before anyone asks
        self._last_end = -1  # where the previous read ended: the next one continuing there is sequential
        self._worker: threading.Thread | None = None
        self._error: BaseException | None = None
        self._closed = False
        self._body: Any = None
        self._body_block = self._body_end = 0
        self._recent: dict[int, bytes] = {}  # the last blocks fetched, served from memory
        self._sequential = False  # read from the start, or on from where it stopped: stream to the end

    def _blocks(self, offset: int, size: int) -> range:
        end = min(offset + size, self.size)
        return range(offset // BLOCK, (end - 1) // BLOCK + 1) if offset < end else range(0)

    def _have(self, block: int) -> bool:
        return bool(self.entry.present[block]) or block in self._recent

    def ready(self, offset: int, size: int) -> bool:
        return all(self._have(b) for b in self._blocks(offset, size))

    def pread(self, offset: int, size: int) -> bytes:
        blocks = self._blocks(offset, size)
        if not blocks:
            return b""
        with self._cond:
            if offset == 0 and self._last_end < 0:  # a first read from the start: most readers want it all
                self._ahead = (blocks[-1] + 1, min(self.entry.blocks, blocks[-1] + 1 + _FIRST_AHEAD))
                self._sequential = True
            elif abs(offset - self._last_end) <= BLOCK and offset > 0:  # sequential: read further ahead
                self._ahead = (blocks[-1] + 1, min(self.entry.blocks, blocks[-1] + 1 + _READAHEAD))
                self._sequential = True
            self._last_end = offset + size
            missing = [b for b in blocks if not (b in self._recent or self.entry.has(b))]
            if missing or self._wants_ahead():
                self._demand.update(missing)
                self._start()
            while not all(self._have(b) for b in missing):
                if self._error is not None:
                    error, self._error = self._error, None
                    self._demand.difference_update(missing)
                    raise error
                self._cond.wait(1.0)
            held = {b: self._recent[b] for b in blocks if b in self._recent}
        end = min(offset + size, self.size)
        if not held:
            return self.entry.read(offset, end - offset)
        # just fetched: served from memory (a whole block is the object itself, no copy)
        out = []
        for b in blocks:
            start, stop = max(offset, b * BLOCK), min(end, (b + 1) * BLOCK)
            data = held.get(b)
            out.append(data[start - b * BLOCK: stop - b * BLOCK] if data is not None else self.entry.read(start, stop - start))
        return out[0] if len(out) == 1 else b"".join(out)

    def _wants_ahead(self) -> bool:
        start, stop = self._ahead
        return any(not self._have(b) for b in range(start, stop))

    def _start(self) -> None:
        if self._worker is None:
            self._worker = threading.Thread(target=self._work, name="s3-read", daemon=True)
            self._worker.start()

    def _pick(self) -> tuple[int, int] | None:
        """(block, end of the range worth asking for) of the next fetch."""
        for b in sorted(self._demand):
            if b in self._recent or self.entry.has(b):
                self._demand.discard(b)
                continue
            stop = b + 1
            while stop in self._demand:
                stop += 1
            start, ahead = self._ahead
            return b, max(stop, ahead if start <= stop <= ahead else stop)
        start, stop = self._ahead
        for b in range(start, stop):
            if not self._have(b):
                return b, stop
        return None

    def _work(self) -> None:
        owns_close = False  # decided under the lock, so close() and we never both close
        try:
            while True:
                with self._cond:
                    job = None if self._closed else self._pick()
                    if job is None:
                        self._worker = None
                        owns_close = self._closed
                        # every block fetched is in the cache file by now: an idle
                        # handle (a mount keeps some) holds no blocks in memory
                        self._recent.clear()
                        return
                block, stop = job
                data = self._fetch(block, stop)
                with self._cond:  # readers take it from memory at once...
                    self._recent[block] = data
                    while len(self._recent) > _RECENT:
                        self._recent.pop(next(iter(self._recent)))
                    self._demand.discard(block)
                    self._cond.notify_all()
                self.entry.fill(block, data)  # ...while it goes to the cache
        except BaseException as exc:  # the reader waiting for it raises it
            self._close_body()
            with self._cond:
                self._error = exc
                self._worker = None
                self._ahead = (0, 0)
                owns_close = self._closed
                self._cond.notify_all()
        finally:
            if owns_close:
                self._close_body()
                self.entry.close()

    def _fetch(self, block: int, stop: int) -> bytes:
        if self._body is not None and 0 < block - self._body_block <= _SKIP and block < self._body_end:
            try:  # cheaper to read past a few cached blocks than to drop the stream and ask again
                while self._body_block < block:
                    self._next_block(self._body_block)
            except Exception:
                self._close_body()
        if self._body is not None and self._body_block == block:
            try:
                return self._next_block(block)
            except Exception as exc:  # a stream left idle may have been dropped: ask again, once
                log.debug("%s: reopening the read stream: %s", self.key, exc)
        self._close_body()
        # A sequential reader gets the rest of the object in one GET (each GET
        # costs a round trip); others get the blocks they need and the window.
        end = self.entry.blocks if self._sequential else stop
        self._body = self.store.ranged(self.key, block * BLOCK, min(self.size, end * BLOCK))
        self._body_block, self._body_end = block, end
        return self._next_block(block)

    def _next_block(self, block: int) -> bytes:
        want = min(BLOCK, self.size - block * BLOCK)
        data = self._body.read(want)
        while len(data) < want:
            more = self._body.read(want - len(data))
            if not more:
                self._close_body()
                raise OSError(errno.EIO, f"{self.key}: the bucket sent {len(data)} of {want} bytes")
            data += more
        self._body_block += 1
        if self._body_block >= self._body_end:
            self._close_body()
        return data

    def _close_body(self) -> None:
        if self._body is not None:
            self._body.close()
            self._body = None

    def close(self) -> None:
        with self._cond:
            self._closed = True
            worker = self._worker
            self._cond.notify_all()
        if worker is None:
            self._close_body()
            self.entry.close()
            return
        # The worker stops after the block in hand and closes the entry on its
        # way out; waiting for it (a block at most) puts a block just served
        # from memory into the cache before the next open looks for it.
        worker.join(timeout=_CLOSE_WAIT)
