"""AWS Signature Version 4 for S3 requests (header-based, signed payload).

Implements the algorithm as AWS documents it: a canonical request (method,
path, sorted query, the signed headers, the body's SHA-256), a string to
sign over its hash and the credential scope, and an HMAC-SHA256 chain
from the secret key through date, region and service.  The derived key is
kept per day, so a request costs two SHA-256s and one HMAC.

Secrets stay inside the Signer; nothing here logs.
"""
import hashlib
import hmac
import time
from urllib.parse import quote

from .credentials import CredentialSource

ALGORITHM = "AWS4-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()


def encode(text: str, safe: str = "-_.~") -> str:
    """URI-encode as SigV4 wants: everything but unreserved characters."""
    return quote(text, safe=safe)


def canonical_query(params: dict[str, str] | None) -> str:
    """The query string, sorted and encoded; also what goes on the wire."""
    if not params:
        return ""
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))


def _signs(name: str) -> bool:
    return name in ("content-type", "content-md5", "range") or name.startswith("x-amz-")


class Signer:
    """Signs requests with one set of credentials for one region and service."""

    def __init__(self, credentials: CredentialSource, region: str, service: str = "s3") -> None:
        self._source = credentials
        self.region = region
        self.service = service
        self._day_key: tuple[str, str, bytes] = ("", "", b"")

    def __repr__(self) -> str:
        return f"Signer({self._source.source!r}, {self.region!r})"

    def sign(self, method: str, host: str, path: str, query: str, headers: dict[str, str],
             payload_hash: str, when: float | None = None) -> dict[str, str]:
        """`headers` plus the date, payload hash, token and Authorization.

        `path` is already URI-encoded (as sent); `query` is
        `canonical_query(...)`; `when` (seconds since the epoch) defaults
        to now.  Of the headers given, the ones S3 wants signed are
        (content-type, content-md5, range, x-amz-*); others such as
        If-None-Match are sent unsigned, as AWS's own SDKs do, so a proxy
        that drops one does not turn the request into a signature error.
        """
        credentials = self._source.current()
        amz_date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(when))
        day = amz_date[:8]
        signed = {name.lower(): " ".join(str(value).split()) for name, value in headers.items()
                  if _signs(name.lower())}
        signed["host"] = host
        signed["x-amz-date"] = amz_date
        signed["x-amz-content-sha256"] = payload_hash
        if credentials.session_token:
            signed["x-amz-security-token"] = credentials.session_token
        names = sorted(signed)
        canonical = "\n".join([
            method, path, query,
            "".join(f"{name}:{signed[name]}\n" for name in names),
            ";".join(names), payload_hash,
        ])
        scope = f"{day}/{self.region}/{self.service}/aws4_request"
        to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(day, credentials), to_sign.encode(), hashlib.sha256).hexdigest()
        out = dict(headers)
        out["Host"] = host
        out["x-amz-date"] = amz_date
        out["x-amz-content-sha256"] = payload_hash
        if credentials.session_token:
            out["x-amz-security-token"] = credentials.session_token
        out["Authorization"] = (f"{ALGORITHM} Credential={credentials.access_key}/{scope}, "
                                f"SignedHeaders={';'.join(names)}, Signature={signature}")
        return out

    def _key(self, day: str, credentials) -> bytes:
        cached_day, access_key, key = self._day_key  # one tuple: threads see a consistent triple
        if cached_day != day or access_key != credentials.access_key:
            key = hmac.digest(f"AWS4{credentials.secret_key}".encode(), day.encode(), "sha256")
            for part in (self.region, self.service, "aws4_request"):
                key = hmac.digest(key, part.encode(), "sha256")
            self._day_key = (day, credentials.access_key, key)
        return key
