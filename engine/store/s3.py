"""The `s3://BUCKET/PREFIX` store: S3's REST API, object by object.

The requests go through s3http.Transport (requests sends, requests-aws4auth
signs, retries and stragglers there); the XML of deletes and listings is
s3xml's.  This module knows the operations and where the bucket lives:
the endpoint, path or virtual-host addressing, and the region.  When no
region is given (--region, AWS_REGION, AWS_DEFAULT_REGION, the profile's),
opening the store asks the bucket's (HeadBucket: S3 names the region in
its x-amz-bucket-region header, also on the 301, 400 and 403 answers of a
request sent to the wrong region:
https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html) and
signs for it; on AWS (no endpoint given) requests then go to that
region's endpoint.

CPU of this process per request, one thread, 1 MiB objects, SeaweedFS on
this machine (bench/s3cpu.py, two runs each, the machine shared, load 5
to 8): a GET into a sink 0.87 and 1.00 ms, a PUT 1.78 and 1.88 ms (the
SHA-256 of the body, which the signature covers, included); the same
runs of the urllib3 client with its own signer it replaces: 0.52 and
0.49 ms per GET, 1.38 and 1.21 ms per PUT.  So requests and aws4auth
cost about 0.45 ms more per request, a third of it in aws4auth; with
Session.request instead of Session.send it was 0.3 ms more again.
"""
import copy
import logging
import os
import re
import ssl
from collections.abc import Iterable, Iterator
from email.utils import parsedate_to_datetime

import urllib3

from ..errors import NotFound, StoreError, UserError
from ..stats import Stats
from .base import Body, DeleteGuard, ObjectStore, Sink, body_length, body_pieces
from .credentials import CredentialSource, Credentials, FixedCredentials, configured_region, resolve_credentials
from .names import check_bucket, check_prefix, is_plain_key, shown
from .s3args import S3Options, endpoint_of, sse_headers  # noqa: F401 - S3Options: imported from here too
from .s3http import (  # noqa: F401 - the failures and Stragglers: imported from here too
    Pieces, Reply, S3Failure, S3Forbidden, S3Full, Stragglers, Transport, final_failure, query_string)
from .s3xml import DELETE_BATCH, delete_failures, delete_request, list_page
from .userfiles import check_regular_file

log = logging.getLogger(__name__)

DEFAULT_REGION = "us-east-1"  # signed for when none is given, until the bucket names its own
CHECK_BUDGET = 20.0    # seconds the first contact may take before giving up
# ...unless nothing answers at all (connection refused, no such host, no
# route): then the endpoint is wrong or the server is down, and waiting
# longer only delays the one line that says so.  A volume already reached
# retries such failures for --retry-time like any other (a restarting server).
UNREACHABLE_BUDGET = 1.5  # seconds
_BUCKET_DNS = re.compile(r"^[a-z0-9][a-z0-9-]{1,61}[a-z0-9]$")  # lower case, no dots: fits a TLS wildcard
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class S3Store(ObjectStore):
    """The objects under s3://`bucket`/`prefix`, with the S3Options given.

    `credentials` defaults to the ones found as AWS tools find them
    (credentials.py); a CredentialSource is asked at every request.
    Raises UserError for bad options (endpoint, --sse, CA bundle,
    addressing) before anything is contacted."""

    def __init__(self, bucket: str, prefix: str, options: S3Options, stats: Stats | None = None,
                 credentials: Credentials | CredentialSource | None = None) -> None:
        super().__init__(stats)
        check_bucket(bucket)
        prefix = check_prefix(prefix, f"s3://{bucket}/{prefix}")
        self.bucket = bucket
        self.prefix = prefix + "/" if prefix else ""  # every key is self.prefix + key
        self.options = options
        self._owns_pool = True
        given = configured_region(options.region, options.profile)
        self._located = given is not None  # else check() asks the bucket for its region
        if isinstance(credentials, Credentials):
            credentials = FixedCredentials(credentials)
        credentials = credentials or resolve_credentials(options.credentials_file, options.profile, options.ec2_role)
        if options.addressing not in ("path", "virtual", "auto"):
            raise UserError("--addressing must be path, virtual or auto")
        scheme, _ = endpoint_of(options.endpoint, given or DEFAULT_REGION)
        if options.ca_bundle:
            check_ca_bundle(options.ca_bundle, "--ca-bundle")
        elif scheme == "https" and not options.insecure and os.environ.get("AWS_CA_BUNDLE"):
            check_ca_bundle(os.environ["AWS_CA_BUNDLE"], "AWS_CA_BUNDLE")
        self._sse = sse_headers(options.sse)
        self._http = Transport(options, credentials, self.stats)
        self._aim(given or DEFAULT_REGION)
        if options.insecure:
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
            log.warning("TLS certificate checks are OFF (--insecure) for %s", self.endpoint)

    def _aim(self, region: str) -> None:
        """Sign for `region`, at its endpoint unless one was given."""
        scheme, netloc = endpoint_of(self.options.endpoint, region)
        self.region = region
        self.endpoint = f"{scheme}://{netloc}"
        self._virtual = self._choose_addressing(self.options.addressing, scheme, netloc)
        self._base = f"{scheme}://{self.bucket}.{netloc}" if self._virtual else self.endpoint
        self._http.aim(self._base, self.endpoint, region)

    def _choose_addressing(self, addressing: str, scheme: str, netloc: str) -> bool:
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
        byte the path sent and the key the server stores and lists;
        anything else raises StoreError rather than be sent.
        """
        if key is None:
            return "/" if self._virtual else f"/{self.bucket}"
        full = self.prefix + key
        if not is_plain_key(full):
            raise StoreError(f"refusing the key {shown(full)}: a server or proxy could store it under "
                             "another name")
        return f"/{full}" if self._virtual else f"/{self.bucket}/{full}"

    def _request(self, method: str, key: str | None, *, params: dict | None = None, **kw) -> Reply:
        """Transport.request for `key` (None: the bucket) with the query
        `params`; a final answer raises S3Failure naming this store's URL."""
        where = f"s3://{self.bucket}/{self.prefix}{key or ''}"
        return self._http.request(method, self._path(key), query=query_string(params),
                                  what=lambda status, code, message: final_failure(method, where, status, code, message),
                                  **kw)

    # -- the interface ----------------------------------------------------------------

    def check(self) -> None:
        """Reach the bucket once, failing fast with one clear line (asking
        its region first when none was given)."""
        budget = min(self.options.retry_time, CHECK_BUDGET)
        self.locate(budget)
        self._request("GET", None, params={"list-type": "2", "max-keys": "1", "prefix": self.prefix},
                      budget=budget, unreachable_budget=min(budget, UNREACHABLE_BUDGET))

    def locate(self, budget: float = CHECK_BUDGET) -> None:
        """Ask the bucket for its region once (HeadBucket), if none was
        given, and sign for it from then on (on AWS: at its endpoint).  An
        answer without x-amz-bucket-region (a server that has no regions)
        keeps DEFAULT_REGION."""
        if self._located:
            return
        reply = self._request("HEAD", None, accept=(200, 301, 307, 400, 403, 404), budget=budget,
                              unreachable_budget=min(budget, UNREACHABLE_BUDGET))
        self._located = True
        found = reply.headers.get("x-amz-bucket-region")
        if found and _REGION.match(found) and found != self.region:
            log.info("s3://%s is in %s", self.bucket, found)
            self._aim(found)

    def get(self, key: str) -> bytes:
        data = self._get(key, None).body
        self._count_got(len(data))
        return data

    def get_into(self, key: str, sink: Sink) -> int:
        size = self._get(key, sink).body  # (the body went to the sink: its length)
        self._count_got(size)
        return size

    def _get(self, key: str, sink: Sink | None) -> Reply:
        try:
            return self._request("GET", key, idempotent=True, into=sink)
        except S3Failure as e:
            if e.status == 404 and e.code in ("NoSuchKey", ""):
                raise NotFound(key, self.key_url(key)) from None
            raise

    def _count_got(self, size: int) -> None:
        self.stats.add("objects_got")
        self.stats.add("bytes_got", size)

    def _head(self, key: str) -> Reply:
        reply = self._request("HEAD", key, accept=(200, 404))
        self.stats.add("objects_headed")
        return reply

    def head(self, key: str) -> int | None:
        reply = self._head(key)
        if reply.status == 404:
            return None
        return int(reply.headers.get("Content-Length", 0))

    def age(self, key: str) -> float | None:
        """The server's `Date` minus the object's `Last-Modified`, both
        from one HEAD answer (RFC 9110 HTTP-dates, whole seconds)."""
        reply = self._head(key)
        if reply.status == 404:
            return None
        try:
            return (_http_date(reply, "Date") - _http_date(reply, "Last-Modified")).total_seconds()
        except (KeyError, TypeError, ValueError):
            raise StoreError(f"{self.endpoint} gave no usable Date and Last-Modified for {key}") from None

    def _server_time(self, key: str) -> float | None:
        """The server's time now (seconds since the epoch, whole seconds,
        rounded down), from the Date of a HEAD of `key`; None if it gave none."""
        reply = self._head(key)
        try:
            return _http_date(reply, "Date").timestamp()
        except (KeyError, TypeError, ValueError):
            return None

    def put(self, key: str, data: Body, *, if_absent: bool = False) -> bool:
        # No Content-MD5: the SigV4 signature covers the body's SHA-256
        # (x-amz-content-sha256), which S3 checks, and MD5 would cost more
        # CPU per block than everything else on the upload path.
        pieces = body_pieces(data)
        length = body_length(pieces)
        # A block's pieces (a frame header, the block itself) are sent one
        # after the other, never joined: see s3http.PiecewiseAuth.
        body = pieces[0] if len(pieces) == 1 and isinstance(pieces[0], bytes) else Pieces.of(pieces)
        headers = {"Content-Type": "application/octet-stream"}
        if if_absent:
            headers["If-None-Match"] = "*"
        if self.options.storage_class:
            headers["x-amz-storage-class"] = self.options.storage_class
        headers.update(self._sse)
        reply = self._request("PUT", key, data=body, headers=headers, accept=(200, 412), idempotent=not if_absent)
        if reply.status == 412:
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
        body, headers = delete_request([self.prefix + key for key in keys])

        def before(attempt: int) -> float | None:
            # Signed with the server's time of a look taken before the guard's
            # check, a request held up anywhere lands within S3's 15 minutes
            # of that check (AWS SigV4: RequestTimeTooSkewed), whatever this
            # machine's clock says (latedeletes.py).
            when = self._server_time(keys[0])
            if guard is not None:
                guard(keys, attempt)
            return when
        reply = self._request("POST", None, params={"delete": ""}, data=body, headers=headers, before_attempt=before)
        failed = delete_failures(reply.body)
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
            page = list_page(self._request("GET", None, params=params).body)
            for key, size in page.objects:
                if not key.startswith(params["prefix"]):
                    raise StoreError(f"the server listed {shown(key[:200])} for the prefix "
                                     f"{shown(params['prefix'])}: it rewrites keys")
                yield key[len(self.prefix):], size
            if page.next_token is None:
                return
            params["continuation-token"] = page.next_token

    def close(self) -> None:
        if self._owns_pool:
            self._http.close()


def _http_date(reply: Reply, header: str):
    """An RFC 9110 HTTP-date header of an answer, as an aware datetime."""
    return parsedate_to_datetime(reply.headers[header])


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
