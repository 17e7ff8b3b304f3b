"""The `s3://BUCKET/PREFIX` store: raw S3 REST, signed with SigV4.

urllib3 directly, one connection pool sized to the worker threads, and our
own SigV4 signer (sigv4.py): requests with requests-aws4auth cost 1.2 ms
of CPU per 1 MiB GET here, this 0.6 ms.  Every request retries 5xx,
429/SlowDown, resets and timeouts with exponential backoff and full jitter
until `retry_time` runs out; 400/403/404 answers are final and become one
clear line.  Bodies are always read to the end so connections go back to
the pool.
"""
import base64
import copy
import hashlib
import logging
import os
import random
import re
import ssl
import time
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import urllib3

from ..errors import Forbidden, NotFound, StoreError, StoreFull, UserError, without_traceback
from ..stats import Stats
from .base import Body, DeleteGuard, ObjectStore, Sink, body_length, body_pieces
from .bodies import read_body_into, sha256_hex
from .credentials import CredentialSource, Credentials, FixedCredentials, resolve_credentials, resolve_region
from .names import check_bucket, check_prefix, is_plain_key, shown
from .s3args import S3Options, endpoint_of, sse_headers  # noqa: F401 - S3Options: imported from here too
from .userfiles import check_regular_file
from .sigv4 import EMPTY_SHA256, Signer, canonical_query

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1     # seconds; doubles each attempt
STRAGGLER_FACTOR = 4   # an object request this many times slower than usual...
STRAGGLER_MIN = 0.25   # ...and slower than this many seconds is sent again at once
BACKOFF_CAP = 10.0     # seconds between attempts at most
CHECK_BUDGET = 20.0    # seconds the first contact may take before giving up
# ...unless nothing answers at all (connection refused, no such host, no
# route): then the endpoint is wrong or the server is down, and waiting
# longer only delays the one line that says so.  A volume already reached
# retries such failures for --retry-time like any other (a restarting server).
UNREACHABLE_BUDGET = 1.5  # seconds
DELETE_BATCH = 1000    # DeleteObjects takes at most 1000 keys
RETRY_STATUS = {500, 502, 503, 504, 429}
RETRY_CODES = {"RequestTimeout", "SlowDown", "InternalError", "OperationAborted",
               "ServiceUnavailable", "ConditionalRequestConflict"}
FINAL_MESSAGES = {
    "InvalidAccessKeyId": "the access key is not known to the server",
    "SignatureDoesNotMatch": "the secret key is wrong (the request signature does not match)",
    "AccessDenied": "access denied",
    "RequestTimeTooSkewed": "this machine's clock is too far from the server's; correct the time",
    "NoSuchBucket": "no such bucket",
    "InvalidBucketName": "invalid bucket name",
    "AuthorizationHeaderMalformed": "the request was signed for the wrong region; check --region",
    "PermanentRedirect": "the bucket is in another region or needs another endpoint; check --region",
}
_BUCKET_DNS = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict
    body: bytes | int  # for get_into: the length given to its sink



class Stragglers:
    """When to give up waiting on one object GET or PUT and send it again.

    Object stores have a latency tail: now and then one request of many
    stalls for a second or more (here: SeaweedFS growing a volume), and a
    flush or a read-ahead waits for its slowest request.  Block requests
    are idempotent (the key is the content hash), so an attempt that takes
    STRAGGLER_FACTOR times the usual time is abandoned and sent again, with
    the patience doubling on each try up to --read-timeout.  "Usual" is a
    running average per method, so a slow link raises the bar instead of
    being cut off.
    """

    def __init__(self, ceiling: float) -> None:
        self.ceiling = ceiling
        self._usual: dict[str, float] = {}

    def timeout(self, method: str, attempt: int) -> float:
        usual = self._usual.get(method)
        if usual is None:
            return self.ceiling
        return min(self.ceiling, max(STRAGGLER_MIN, STRAGGLER_FACTOR * usual) * 2 ** attempt)

    def record(self, method: str, seconds: float) -> None:
        usual = self._usual.get(method)
        # Races between threads lose an update at worst: this is an estimate.
        self._usual[method] = seconds if usual is None else 0.9 * usual + 0.1 * seconds


class S3Failure(StoreError):
    """A final (not retried) answer from the server."""

    def __init__(self, message: str, status: int, code: str):
        super().__init__(message)
        self.status = status
        self.code = code


class S3Forbidden(S3Failure, Forbidden):
    """A 403 answer: these credentials may not touch that key."""


class S3Full(S3Failure, StoreFull):
    """A 507 answer (MinIO's XMinioStorageFull, any server's Insufficient
    Storage, RFC 4918): the server has no room for the object."""


def _error_code(body: bytes) -> tuple[str, str]:
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


class S3Store(ObjectStore):
    def __init__(self, bucket: str, prefix: str, options: S3Options, stats: Stats | None = None,
                 credentials: Credentials | CredentialSource | None = None) -> None:
        super().__init__(stats)
        check_bucket(bucket)
        prefix = check_prefix(prefix, f"s3://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""  # every key is self.prefix + key
        self.options = options
        self._owns_pool = True
        self.region = resolve_region(options.region, options.profile)
        if isinstance(credentials, Credentials):
            credentials = FixedCredentials(credentials)
        self._credentials = credentials or resolve_credentials(options.credentials_file, options.profile,
                                                                 options.ec2_role)
        scheme, netloc = endpoint_of(options.endpoint, self.region)
        self.endpoint = f"{scheme}://{netloc}"
        self._virtual = self._choose_addressing(options.addressing, netloc)
        self._host = f"{self.bucket}.{netloc}" if self._virtual else netloc
        self._base = f"{scheme}://{self._host}"
        if options.ca_bundle:
            check_ca_bundle(options.ca_bundle, "--ca-bundle")
        elif scheme == "https" and not options.insecure and os.environ.get("AWS_CA_BUNDLE"):
            check_ca_bundle(os.environ["AWS_CA_BUNDLE"], "AWS_CA_BUNDLE")
        self._sse = sse_headers(options.sse)
        if options.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning("TLS certificate checks are OFF (--insecure) for %s", self.endpoint)
        self._http = _pool_manager(scheme, self._host, options)
        self._signer = Signer(self._credentials, self.region)
        self._stragglers = Stragglers(options.read_timeout)

    def _choose_addressing(self, addressing: str, netloc: str) -> bool:
        if addressing not in ("path", "virtual", "auto"):
            raise UserError("--addressing must be path, virtual or auto")
        if addressing == "auto":
            return netloc.endswith("amazonaws.com") and bool(_BUCKET_DNS.match(self.bucket))
        return addressing == "virtual"

    def describe(self) -> str:
        return f"s3://{self.bucket}/{self.prefix} at {self.endpoint}"

    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix[:-1]}" if self.prefix else f"s3://{self.bucket}"

    def parent(self) -> "S3Store | None":
        """The prefix one level up (the bucket itself after the last one),
        sharing this store's connections and credentials; None for the
        bucket.  Closing it does nothing: close this store instead."""
        if not self.prefix:
            return None
        up = copy.copy(self)
        up.prefix = self.prefix[:-1].rpartition("/")[0]
        up.prefix += "/" if up.prefix else ""
        up._owns_pool = False
        return up

    # -- requests ------------------------------------------------------------------

    def _path(self, key: str | None) -> str:
        """The request path (the bucket itself for None).

        Keys are plain (names.py: no empty, `.` or `..` segment, only
        characters that need no encoding), so the path signed is byte for
        byte the path urllib3 sends and the key the server stores and lists;
        anything else raises StoreError rather than be sent.
        """
        if key is None:
            return "/" if self._virtual else f"/{self.bucket}"
        full = self.prefix + key
        if not is_plain_key(full):
            raise StoreError(f"refusing the key {shown(full)}: a server or proxy could store it under "
                             "another name")
        return f"/{full}" if self._virtual else f"/{self.bucket}/{full}"

    def _request(self, method: str, key: str | None, *, params: dict | None = None, data: Body | None = None,
                 headers: dict | None = None, accept: tuple[int, ...] = (200,),
                 budget: float | None = None, idempotent: bool = False,
                 unreachable_budget: float | None = None, into: Sink | None = None,
                 before_attempt=None) -> Reply:
        """Send one request, retrying what may succeed later; returns an accepted response.

        `idempotent` requests (object GETs and plain PUTs) that straggle are
        sent again at once (see Stragglers).  `budget` bounds the retries
        (seconds, default --retry-time); `unreachable_budget`, when given,
        bounds them instead once no connection could be made at all.  A body
        of several pieces is sent one piece after the other, never joined.
        With `into`, a 200 answer's body goes to that sink (its reply's body
        is its length).
        `before_attempt(attempt)` is called before each sending (0 first);
        it may return the time to sign that attempt with (seconds since
        the epoch; None: now)."""
        path, query = self._path(key), canonical_query(params)
        payload_hash = sha256_hex(body_pieces(data)) if data else EMPTY_SHA256
        first_sent = time.monotonic()
        deadline = first_sent + (self.options.retry_time if budget is None else budget)
        attempt = 0
        while True:
            read_timeout = self._stragglers.timeout(method, attempt) if idempotent else self.options.read_timeout
            started = time.monotonic()
            when = before_attempt(attempt) if before_attempt is not None else None
            try:
                signed = self._signer.sign(method, self._host, path, query, headers or {}, payload_hash, when)
                reply = self._send(method, path, query, data, signed, read_timeout, into, key)
            except urllib3.exceptions.SSLError as e:
                raise StoreError(f"TLS failure talking to {self.endpoint}: {_reason(e)}") from None
            except (urllib3.exceptions.HTTPError, ConnectionError, TimeoutError) as e:
                # A timeout raised while waiting for the answer holds its
                # traceback in a reference cycle: let go of it, or this frame
                # (and the buffers of this request, such as `into`) would
                # stay alive until the garbage collector runs.
                without_traceback(e)
                if read_timeout < self.options.read_timeout and isinstance(e, urllib3.exceptions.ReadTimeoutError):
                    log.info("%s %s straggled past %.2fs; sent again", method, key, read_timeout)
                    self.stats.add("stragglers")
                    self.stats.add("retries")
                    attempt += 1
                    continue
                failure = f"cannot reach {self.endpoint}: {_reason(e)}"
                if unreachable_budget is not None and _unreachable(e):
                    deadline = min(deadline, first_sent + unreachable_budget)
            else:
                if reply.status in accept:
                    if idempotent:
                        self._stragglers.record(method, time.monotonic() - started)
                    return reply
                code, message = _error_code(reply.body)
                dated_again = code == "RequestTimeTooSkewed" and when is not None  # held up past S3's window
                if reply.status not in RETRY_STATUS and code not in RETRY_CODES and not dated_again:
                    raise self._final(method, key, reply.status, code, message)
                failure = f"{self.endpoint} answered {reply.status} {code}".rstrip()
            attempt += 1
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
            if time.monotonic() + delay > deadline:
                self.stats.add("request_failures")
                raise StoreError(f"{failure} (gave up after {attempt} attempts)")
            self.stats.add("retries")
            log.warning("%s %s: %s; retrying in %.1fs", method, key or "/", failure, delay)
            time.sleep(delay)

    def _send(self, method: str, path: str, query: str, data, headers: dict, read_timeout: float,
              into: Sink | None = None, key: str | None = None) -> "Reply":
        """One HTTP exchange, the body read whole (given to the sink `into`
        for a 200 answer, see get_into).

        urllib3 checks the body's length against Content-Length, so a
        connection cut mid-body raises (and is retried); a connection whose
        body was not read to the end is closed, not reused.
        """
        url = self._base + path + (f"?{query}" if query else "")
        response = self._http.urlopen(
            method, url, body=data, headers=headers, preload_content=False, redirect=False, retries=False,
            timeout=urllib3.Timeout(connect=self.options.connect_timeout, read=read_timeout),
        )
        try:
            if method == "HEAD":
                body = b""
            elif into is not None and response.status == 200:
                body = read_body_into(response, into)
            else:
                body = response.read(decode_content=False)
        finally:
            response.release_conn()
        return Reply(response.status, response.headers, body)

    def _final(self, method: str, key: str | None, status: int, code: str, message: str) -> S3Failure:
        explained = FINAL_MESSAGES.get(code) or ("the store is full" if status == 507 else None)
        where = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        if explained:
            text = f"{explained} ({status} {code}) for {where}".replace(" )", ")")
        else:
            text = f"{method} {where}: {status} {code or 'error'} {message}".rstrip()
        kind = {403: S3Forbidden, 507: S3Full}.get(status, S3Failure)
        return kind(text, status, code)

    # -- the interface ----------------------------------------------------------------

    def check(self) -> None:
        """Reach the bucket once, failing fast with one clear line."""
        budget = min(self.options.retry_time, CHECK_BUDGET)
        self._request("GET", None, params={"list-type": "2", "max-keys": "1", "prefix": self.prefix},
                      budget=budget, unreachable_budget=min(budget, UNREACHABLE_BUDGET))

    def get(self, key: str) -> bytes:
        data = self._get(key, None).body
        self._count_got(len(data))
        return data

    def get_into(self, key: str, sink: Sink) -> int:
        size = self._get(key, sink).body  # (the body went to the sink: its length)
        self._count_got(size)
        return size

    def _get(self, key: str, sink: Sink | None) -> "Reply":
        try:
            return self._request("GET", key, idempotent=True, into=sink)
        except S3Failure as e:
            if e.status == 404 and e.code in ("NoSuchKey", ""):
                raise NotFound(key, self.key_url(key)) from None
            raise

    def _count_got(self, size: int) -> None:
        self.stats.add("objects_got")
        self.stats.add("bytes_got", size)

    def head(self, key: str) -> int | None:
        response = self._request("HEAD", key, accept=(200, 404))
        self.stats.add("objects_headed")
        if response.status == 404:
            return None
        return int(response.headers.get("Content-Length", 0))

    def age(self, key: str) -> float | None:
        """The server's `Date` minus the object's `Last-Modified`, both
        from one HEAD answer (RFC 9110 HTTP-dates, whole seconds)."""
        response = self._request("HEAD", key, accept=(200, 404))
        self.stats.add("objects_headed")
        if response.status == 404:
            return None
        try:
            return (_http_date(response, "Date") - _http_date(response, "Last-Modified")).total_seconds()
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{self.endpoint} gave no usable Date and Last-Modified for {key}") from None

    def _server_time(self, key: str) -> float | None:
        """The server's time now (seconds since the epoch, whole seconds,
        rounded down), from the Date of a HEAD of `key`; None if it gave none."""
        response = self._request("HEAD", key, accept=(200, 404))
        self.stats.add("objects_headed")
        try:
            return _http_date(response, "Date").timestamp()
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, data: Body, *, if_absent: bool = False) -> bool:
        # No Content-MD5: the SigV4 signature covers the body's SHA-256
        # (x-amz-content-sha256), which S3 checks, and MD5 would cost more
        # CPU per block than everything else on the upload path.
        pieces = body_pieces(data)
        length = body_length(pieces)
        # urllib3 sends a list of pieces as they are, framed by this length
        # (without it, it would fall back to chunked encoding).
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(length)}
        if if_absent:
            headers["If-None-Match"] = "*"
        if self.options.storage_class:
            headers["x-amz-storage-class"] = self.options.storage_class
        headers.update(self._sse)
        response = self._request("PUT", key, data=list(pieces), headers=headers, accept=(200, 412),
                                 idempotent=not if_absent)
        if response.status == 412:
            return False
        self.stats.add("objects_put")
        self.stats.add("bytes_put", length)
        return True

    def delete(self, keys: Iterable[str], *, guard: DeleteGuard | None = None) -> None:
        keys = list(keys)
        for start in range(0, len(keys), DELETE_BATCH):
            self._delete_batch(keys[start : start + DELETE_BATCH], guard)

    def _delete_batch(self, keys: list[str], guard: DeleteGuard | None) -> None:
        if not keys:
            return
        root = ET.Element("Delete")
        ET.SubElement(root, "Quiet").text = "true"
        for key in keys:
            ET.SubElement(ET.SubElement(root, "Object"), "Key").text = self.prefix + key
        body = ET.tostring(root, xml_declaration=True, encoding="UTF-8")
        headers = {"Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode(),
                   "Content-Type": "application/xml"}
        def before(attempt: int) -> float | None:
            # Signed with the server's time of a look taken before the guard's
            # check, a request held up anywhere lands within S3's 15 minutes
            # of that check (AWS SigV4: RequestTimeTooSkewed), whatever this
            # machine's clock says (latedeletes.py).
            when = self._server_time(keys[0])
            if guard is not None:
                guard(keys, attempt)
            return when
        response = self._request("POST", None, params={"delete": ""}, data=body, headers=headers,
                                 before_attempt=before)
        failed = []
        for error in ET.fromstring(response.body):
            if _local(error.tag) == "Error":
                code = next((c.text for c in error if _local(c.tag) == "Code"), "")
                if code != "NoSuchKey":
                    failed.append(code)
        if failed:
            self.stats.add("request_failures")
            raise StoreError(f"deleting {len(failed)} objects failed ({failed[0]})")
        self.stats.add("objects_deleted", len(keys))

    def list(self, prefix: str = "") -> Iterator[str]:
        return (key for key, _ in self._list_objects(prefix))

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self._list_objects(prefix)  # the listing carries the sizes: no HEAD per key

    def _list_objects(self, prefix: str) -> Iterator[tuple[str, int]]:
        params = {"list-type": "2", "prefix": self.prefix + prefix, "max-keys": "1000"}
        while True:
            root = ET.fromstring(self._request("GET", None, params=params).body)
            token = None
            truncated = False
            for child in root:
                tag = _local(child.tag)
                if tag == "Contents":
                    fields = {_local(c.tag): c.text for c in child}
                    key = fields.get("Key") or ""
                    if not key.startswith(params["prefix"]):
                        raise StoreError(f"the server listed {shown(key[:200])} for the prefix "
                                         f"{shown(params['prefix'])}: it rewrites keys")
                    yield key[len(self.prefix):], int(fields.get("Size") or 0)
                elif tag == "IsTruncated":
                    truncated = child.text == "true"
                elif tag == "NextContinuationToken":
                    token = child.text
            if not truncated or not token:
                return
            params["continuation-token"] = token

    def close(self) -> None:
        if self._owns_pool:
            self._http.clear()


def _http_date(response, header: str):
    """An RFC 9110 HTTP-date header of a response, as an aware datetime."""
    return parsedate_to_datetime(response.headers[header])


def check_ca_bundle(path: str, source: str) -> None:
    """Refuse a CA bundle TLS could not use, in one line naming it.

    `source` says where the path came from (--ca-bundle, AWS_CA_BUNDLE).
    A bundle named by --ca-bundle is checked even for an http:// endpoint
    (the user handed it in: a broken one is a mistake worth hearing of);
    AWS_CA_BUNDLE only when it is used.  Raises UserError when the file is
    missing, not a regular file, unreadable or holds no PEM certificate."""
    what = f"CA bundle ({source})"
    check_regular_file(path, what)
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT).load_verify_locations(cafile=path)
    except ssl.SSLError:
        raise UserError(f"{what} {shown(path)} holds no usable PEM certificate") from None
    except OSError as e:
        raise UserError(f"cannot read {what} {shown(path)}: {e.strerror or e}") from None


def _pool_manager(scheme: str, host: str, options: S3Options) -> urllib3.PoolManager:
    """Connections to the one host every request goes to.

    TLS trusts --ca-bundle, else AWS_CA_BUNDLE, else the system's store
    (OpenSSL's default paths, which honour SSL_CERT_FILE).  The proxy comes
    from HTTP(S)_PROXY unless NO_PROXY covers the host, decided once here.
    """
    settings: dict = {"num_pools": 2, "maxsize": options.pool_size, "retries": False}
    if scheme == "https":
        if options.insecure:
            settings["cert_reqs"] = "CERT_NONE"
        else:
            settings["cert_reqs"] = "CERT_REQUIRED"
            settings["ca_certs"] = options.ca_bundle or os.environ.get("AWS_CA_BUNDLE") or None
    proxy = urllib.request.getproxies().get(scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        return urllib3.ProxyManager(proxy, **settings)
    return urllib3.PoolManager(**settings)


def _unreachable(e: Exception) -> bool:
    """Whether no connection could be made at all (refused, no such host,
    no route), to the server or to the proxy in front of it."""
    if isinstance(e, urllib3.exceptions.ProxyError):
        e = e.original_error
    return isinstance(e, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError))


def _reason(e: Exception) -> str:
    """The innermost, human part of a transport exception."""
    text = str(e)
    for marker in ("Connection refused", "timed out", "Name or service not known",
                   "Temporary failure in name resolution", "No route to host", "Network is unreachable",
                   "Connection reset", "Remote end closed connection", "Connection aborted",
                   "certificate verify failed"):
        if marker in text:
            return marker.lower()
    return type(e).__name__
