"""How the s3:// store talks HTTP: requests sends, requests-aws4auth signs.

One tuned requests.Session per store.  `trust_env` is off, so nothing is
read from the environment per request: the proxy (HTTP_PROXY, HTTPS_PROXY,
ALL_PROXY and NO_PROXY, upper or lower case, as requests reads them) and
the TLS trust (--ca-bundle, else AWS_CA_BUNDLE, else the system's store,
which honours SSL_CERT_FILE; --insecure: none) are decided once, when the
store opens, and passed with every call.  Its HTTPAdapter pools as many
connections as the store has threads and never retries by itself: every
request retries 5xx, 429/SlowDown, resets and timeouts here, with
exponential backoff and full jitter until `retry_time` runs out, and an
object GET or PUT far slower than usual is sent again at once
(Stragglers); 400/403/404 answers are final and become one clear line.
Every call has a (connect, read) timeout, and every body is read whole
from the raw urllib3 response, so connections go back to the pool and an
object GET goes from the socket straight into its sink.

Signing: AWS Signature Version 4, header-based with a signed payload
(https://docs.aws.amazon.com/AmazonS3/latest/API/sig-v4-header-based-auth.html),
by requests-aws4auth (>= 1.4.0: it signs the Host header as sent, port
included, and the session token).  The store dates each request itself
(x-amz-date), which aws4auth signs as given: that is how a delete is signed
with the server's time (before_attempt).
"""
import hashlib
import http.client
import logging
import os
import random
import ssl
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests_aws4auth import AWS4Auth, AWS4SigningKey

from ..errors import Forbidden, StoreError, StoreFull, without_traceback
from ..stats import Stats
from .bodies import read_body_into
from .credentials import CredentialSource
from .proxies import environ_proxies
from .s3args import S3Options

log = logging.getLogger(__name__)

BACKOFF_BASE = 0.1     # seconds; doubles each attempt
BACKOFF_CAP = 10.0     # seconds between attempts at most
STRAGGLER_FACTOR = 4   # an object request this many times slower than usual...
STRAGGLER_MIN = 0.25   # ...and slower than this many seconds is sent again at once
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
# What S3 wants signed besides host and x-amz-*; other headers (If-None-Match)
# go unsigned, as AWS's own SDKs send them, so a proxy that drops one does
# not turn the request into a signature error.
SIGNED_HEADERS = {"host", "content-type", "content-md5", "range", "x-amz-*"}
_TRANSPORT_ERRORS = (requests.exceptions.RequestException, urllib3.exceptions.HTTPError,
                     http.client.HTTPException, ConnectionError, TimeoutError)
_TLS_ERRORS = (requests.exceptions.SSLError, urllib3.exceptions.SSLError)

wall_clock = time.time  # seconds since the epoch that requests are dated with (tests skew it)


@dataclass(frozen=True)
class Pieces:
    """A body of several bytes-like pieces sent one after the other, never
    joined: `length` bytes in all, `sha256` (hex) of them all, once."""
    pieces: tuple
    length: int
    sha256: str

    @classmethod
    def of(cls, pieces: tuple) -> "Pieces":
        digest = hashlib.sha256()
        for piece in pieces:
            digest.update(piece)
        return cls(pieces, sum(memoryview(piece).nbytes for piece in pieces), digest.hexdigest())


@dataclass(frozen=True)
class Reply:
    """One answer: its status, headers (case-insensitive) and body (bytes;
    for a body given to a sink, its length)."""
    status: int
    headers: dict
    body: bytes | int


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
        """Seconds to wait for attempt `attempt` (0 first) of a `method` request."""
        usual = self._usual.get(method)
        if usual is None:
            return self.ceiling
        return min(self.ceiling, max(STRAGGLER_MIN, STRAGGLER_FACTOR * usual) * 2 ** attempt)

    def record(self, method: str, seconds: float) -> None:
        """A `method` request took `seconds`."""
        usual = self._usual.get(method)
        # Races between threads lose an update at worst: this is an estimate.
        self._usual[method] = seconds if usual is None else 0.9 * usual + 0.1 * seconds


class PiecewiseAuth(AWS4Auth):
    """AWS4Auth that signs a body sent as pieces, one after the other (a
    frame header, then the block itself, not a copy).

    requests-aws4auth hashes a body as one buffer, so pieces would have to
    be joined first: a copy of the whole block per PUT in flight, outside
    --cache-size (with 64 MiB blocks and two uploads, 128 MiB more; peak
    RSS 240 MiB against 196 in tests/test_cache_bound.py).  A request of
    pieces is signed without a body, its `payload_hash` (the SHA-256 of the
    pieces, hex) set on it; requests-aws4auth 1.4's __call__ sets
    x-amz-content-sha256 to the empty body's hash, then makes the canonical
    headers here, where the real one is put back, and the canonical request
    reads it from the headers (AWS SigV4: "Create a canonical request")."""

    @classmethod
    def get_canonical_headers(cls, req, include=None):
        payload_hash = getattr(req, "payload_hash", None)
        if payload_hash is not None:
            req.headers["x-amz-content-sha256"] = payload_hash
        return super().get_canonical_headers(req, include)


class Transport:
    """Signed requests to one S3 endpoint, retried (see the module docstring).

    `options` gives the timeouts (seconds), --retry-time, the pool size
    (connections) and the TLS settings; `credentials` is asked at every
    request; `stats` counts retries, stragglers and failures.  aim() says
    where requests go and which region they are signed for; the
    environment's proxy for that place is read then, once.  Thread-safe:
    every store thread sends through it."""

    def __init__(self, options: S3Options, credentials: CredentialSource, stats: Stats) -> None:
        self.options = options
        self.stats = stats
        self._credentials = credentials
        self._stragglers = Stragglers(options.read_timeout)
        self._verify = _trust(options)
        self._timeout_connect = options.connect_timeout
        self._session = requests.Session()
        self._session.trust_env = False
        # Requests are prepared without the session's default headers (see
        # _send): none asks for gzip, which a raw body read must never get
        # (http.client sends Accept-Encoding: identity), and each header
        # less is one less for aws4auth to canonicalise.
        self._session.headers.clear()
        adapter = HTTPAdapter(pool_connections=2, pool_maxsize=options.pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._auth: tuple = (None, "", None)  # (credentials, day, AWS4Auth): swapped whole, never edited
        self.base = self.endpoint = self.region = ""
        self._proxies: dict[str, str] = {}
        self.proxy: str | None = None

    def aim(self, base: str, endpoint: str, region: str) -> None:
        """Send requests to `base` (scheme://host[:port], the bucket's host
        with virtual-host addressing), signed for `region`; `endpoint` is
        the server as messages name it.  Decides the proxy for `base`
        (proxies.py; raises UserError for one that cannot work)."""
        self.base, self.endpoint, self.region = base, endpoint, region
        self._auth = (None, "", None)
        self._proxies, self.proxy = environ_proxies(base)  # UserError for a proxy requests cannot use

    def request(self, method: str, path: str, *, query: str = "", data: "bytes | Pieces | None" = None,
                headers: dict | None = None, accept: tuple[int, ...] = (200,), budget: float | None = None,
                idempotent: bool = False, unreachable_budget: float | None = None, into=None,
                before_attempt=None, what=None) -> Reply:
        """Send one request, retrying what may succeed later; returns an accepted answer.

        `path` is already URI-encoded (as sent and signed), `query` too.
        `idempotent` requests (object GETs and plain PUTs) that straggle are
        sent again at once (see Stragglers).  `budget` bounds the retries
        (seconds, default --retry-time); `unreachable_budget`, when given,
        bounds them instead once no connection could be made at all.  With
        `into` (a store Sink), a 200 answer's body goes to it (the reply's
        body is its length).  `before_attempt(attempt)` is called before
        each sending (0 first); it may return the time to sign that attempt
        with (seconds since the epoch; None: now).  `what(status, code,
        message)` makes the S3Failure of a final answer.  Raises StoreError
        once retrying is given up, or for a TLS failure."""
        url = self.base + path + (f"?{query}" if query else "")
        first_sent = time.monotonic()
        deadline = first_sent + (self.options.retry_time if budget is None else budget)
        attempt = 0
        while True:
            read_timeout = self._stragglers.timeout(method, attempt) if idempotent else self.options.read_timeout
            started = time.monotonic()
            when = before_attempt(attempt) if before_attempt is not None else None
            sent = dict(headers) if headers else {}
            sent["x-amz-date"] = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(wall_clock() if when is None else when))
            try:
                reply = self._send(method, url, data, sent, read_timeout, into)
            except _TLS_ERRORS as e:
                raise StoreError(f"TLS failure talking to {self._via()}: {_reason(e)}") from None
            except _TRANSPORT_ERRORS as e:
                # A timeout raised while waiting for the answer holds its
                # traceback in a reference cycle: let go of it, or this frame
                # (and the buffers of this request, such as `into`) would
                # stay alive until the garbage collector runs.
                without_traceback(e)
                if read_timeout < self.options.read_timeout and _read_timed_out(e):
                    log.info("%s %s straggled past %.2fs; sent again", method, path, read_timeout)
                    self.stats.add("stragglers")
                    self.stats.add("retries")
                    attempt += 1
                    continue
                failure = self._unreached(e)
                if unreachable_budget is not None and _unreachable(e):
                    deadline = min(deadline, first_sent + unreachable_budget)
            else:
                if reply.status in accept:
                    if idempotent:
                        self._stragglers.record(method, time.monotonic() - started)
                    return reply
                code, message = error_code(reply.body)
                dated_again = code == "RequestTimeTooSkewed" and when is not None  # held up past S3's window
                if reply.status not in RETRY_STATUS and code not in RETRY_CODES and not dated_again:
                    raise what(reply.status, code, message)
                failure = f"{self.endpoint} answered {reply.status} {code}".rstrip()
                if self.proxy and not code:  # not S3's XML: the proxy's own page
                    failure = f"the proxy {self.proxy} answered {reply.status} for {self.endpoint}"
            attempt += 1
            delay = random.uniform(0, min(BACKOFF_CAP, BACKOFF_BASE * 2 ** attempt))
            if time.monotonic() + delay > deadline:
                self.stats.add("request_failures")
                raise StoreError(f"{failure} (gave up after {attempt} attempts)")
            self.stats.add("retries")
            log.warning("%s %s: %s; retrying in %.1fs", method, path, failure, delay)
            time.sleep(delay)

    def _send(self, method: str, url: str, data: "bytes | Pieces | None", headers: dict, read_timeout: float,
              into=None) -> Reply:
        """One HTTP exchange, signed, the body read whole (given to the sink
        `into` for a 200 answer).

        urllib3 checks the body's length against Content-Length, so a
        connection cut mid-body raises (and is retried); a connection whose
        body was not read to the end is closed, not reused.
        """
        # Prepared here and handed to Session.send: Session.request would
        # merge the session's settings (cookies, headers, the environment)
        # into every request first, a fifth of this method's CPU.
        request = requests.PreparedRequest()
        pieces = data if isinstance(data, Pieces) else None
        request.prepare(method=method, url=url, headers=headers, data=None if pieces else data)
        if pieces:  # sent one after the other (urllib3 takes an iterable body), signed by PiecewiseAuth
            request.headers["Content-Length"] = str(pieces.length)
            request.payload_hash = pieces.sha256
        request.prepare_auth(self._signer(headers["x-amz-date"][:8]))
        if pieces:
            request.body = pieces.pieces
        response = self._session.send(
            request, stream=True, allow_redirects=False, timeout=(self._timeout_connect, read_timeout),
            proxies=self._proxies, verify=self._verify, cert=None)
        raw = response.raw
        done = False
        try:
            if method == "HEAD":
                body = b""
            elif into is not None and response.status_code == 200:
                body = read_body_into(raw, into)
            else:
                body = raw.read(decode_content=False)
            done = True
        finally:
            if not done:
                raw.close()
            raw.release_conn()
        return Reply(response.status_code, response.headers, body)

    def _signer(self, day: str) -> AWS4Auth:
        """The AWS4Auth for requests dated `day` (YYYYMMDD) with the
        credentials current now: a new one only when those credentials or
        the day change.  One per day, never regenerated in place, so no
        thread ever signs with a key of another day than its scope's."""
        credentials = self._credentials.current()
        held, held_day, auth = self._auth
        if held is credentials and held_day == day:
            return auth
        key = AWS4SigningKey(credentials.secret_key, self.region, "s3", day, store_secret_key=False)
        auth = PiecewiseAuth(credentials.access_key, key, session_token=credentials.session_token,
                             include_hdrs=SIGNED_HEADERS)
        self._auth = (credentials, day, auth)
        return auth

    def _via(self) -> str:
        return f"the proxy {self.proxy}" if self.proxy else self.endpoint

    def _unreached(self, e: Exception) -> str:
        """What went wrong, naming the proxy when it is the proxy that failed."""
        if self.proxy and _through_proxy(e):
            if _unreachable(e):
                return f"cannot reach the proxy {self.proxy}: {_reason(e)}"
            return f"the proxy {self.proxy} failed to reach {self.endpoint}: {_reason(e)}"
        return f"cannot reach {self.endpoint}: {_reason(e)}"

    def close(self) -> None:
        """Close every pooled connection."""
        self._session.close()


def query_string(params: dict[str, str] | None) -> str:
    """The query of a request, sorted and URI-encoded as SigV4 canonicalises
    it (everything but unreserved characters), so what is signed is sent."""
    if not params:
        return ""
    return "&".join(f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}" for k, v in sorted(params.items()))


def final_failure(method: str, where: str, status: int, code: str, message: str) -> S3Failure:
    """The one-line failure of a final answer to `method` on `where` (an
    s3:// URL): S3Forbidden for 403, S3Full for 507, else S3Failure."""
    explained = FINAL_MESSAGES.get(code) or ("the store is full" if status == 507 else None)
    if explained:
        text = f"{explained} ({status} {code}) for {where}".replace(" )", ")")
    else:
        text = f"{method} {where}: {status} {code or 'error'} {message}".rstrip()
    kind = {403: S3Forbidden, 507: S3Full}.get(status, S3Failure)
    return kind(text, status, code)


def error_code(body: bytes | int) -> tuple[str, str]:
    """(Code, Message) of an S3 XML error body; ('', '') for anything else
    (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)."""
    if not isinstance(body, bytes) or not body:
        return "", ""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return "", ""
    return root.findtext("Code") or "", root.findtext("Message") or ""


def _trust(options: S3Options) -> bool | str:
    """requests' `verify`: False (--insecure), a CA bundle (--ca-bundle,
    else AWS_CA_BUNDLE), else the system's store (OpenSSL's default file
    or directory, which honours SSL_CERT_FILE and SSL_CERT_DIR; requests
    alone would trust certifi's bundle instead).  Read once, at open."""
    if options.insecure:
        return False
    bundle = options.ca_bundle or os.environ.get("AWS_CA_BUNDLE")
    if bundle:
        return bundle
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return paths.cafile
    if paths.capath and os.path.isdir(paths.capath):
        return paths.capath
    return True


def _chain(e: BaseException):
    """`e` and the exceptions it wraps (requests -> urllib3 -> socket)."""
    seen = 0
    while e is not None and seen < 8:
        yield e
        seen += 1
        if isinstance(e, urllib3.exceptions.MaxRetryError):
            e = e.reason
        elif isinstance(e, urllib3.exceptions.ProxyError):
            e = e.original_error
        elif isinstance(e, requests.exceptions.RequestException) and e.args and isinstance(e.args[0], BaseException):
            e = e.args[0]
        else:
            e = e.__context__ if isinstance(e.__context__, OSError) else None


def _read_timed_out(e: Exception) -> bool:
    """Whether the answer (not the connection) took too long."""
    return any(isinstance(x, (requests.exceptions.ReadTimeout, urllib3.exceptions.ReadTimeoutError))
               for x in _chain(e))


def _through_proxy(e: Exception) -> bool:
    return any(isinstance(x, (requests.exceptions.ProxyError, urllib3.exceptions.ProxyError)) for x in _chain(e))


def _unreachable(e: Exception) -> bool:
    """Whether no connection could be made at all (refused, no such host,
    no route), to the server or to the proxy in front of it."""
    return any(isinstance(x, (urllib3.exceptions.NewConnectionError, ConnectionRefusedError)) for x in _chain(e))


def _reason(e: Exception) -> str:
    """The innermost, human part of a transport exception."""
    text = " ".join(str(x) for x in _chain(e))
    for marker in ("Connection refused", "timed out", "Name or service not known",
                   "Temporary failure in name resolution", "No route to host", "Network is unreachable",
                   "Connection reset", "Remote end closed connection", "Connection aborted",
                   "certificate verify failed", "Tunnel connection failed"):
        if marker in text:
            return marker.lower()
    return type(list(_chain(e))[-1]).__name__
