"""Checks of the s3:// store's options that need no server: the endpoint
and server-side encryption, refused before anything is contacted.  The
checks raise ValueError saying what is wrong (the CLI's argparse types turn
that into its one usage line); none ever echoes a user name or password
put into an endpoint URL.  S3Options (the store options, the bandwidth
caps of file:// stores included) lives here too, so that commands on a
file:// volume never import s3.py (requests).
"""
import os
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from ..errors import UserError
from .names import shown

ENDPOINT_FORM = "scheme://host[:port], the scheme http or https"

# What S3's PutObject takes in x-amz-server-side-encryption: SSE-S3
# (AES256), SSE-KMS (aws:kms) and dual-layer DSSE-KMS (aws:kms:dsse), the
# last two optionally with a KMS key in x-amz-server-side-encryption-aws-
# kms-key-id.  (aws:fsx is only for FSx access points, not buckets.)
SSE_FORMS = "AES256, aws:kms, aws:kms:KEYID, aws:kms:dsse or aws:kms:dsse:KEYID"
# A KMS key id, key ARN, alias name (alias/...) or alias ARN: KMS allows
# 1-2048 characters, and its ids and ARNs are made of these.
_KMS_KEY_RE = re.compile(r"[A-Za-z0-9:/_-]{1,2048}")
# An IAM role name: 1-64 letters, digits and +=,.@_- (IAM API Reference, CreateRole).
ROLE_RE = re.compile(r"[A-Za-z0-9+=,.@_-]{1,64}")


@dataclass(frozen=True)
class S3Options:
    endpoint: str | None = None       # default AWS_ENDPOINT_URL, else AWS S3 for the region
    addressing: str = "auto"          # path | virtual | auto
    region: str | None = None
    credentials_file: str | None = None
    profile: str | None = None
    ec2_role: str | None = None       # credentials of this EC2 instance role only (credentials.py)
    ca_bundle: str | None = None
    insecure: bool = False
    storage_class: str | None = None
    sse: str | None = None            # AES256 | aws:kms | aws:kms:KEYID
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    retry_time: float = 300.0
    pool_size: int = 32
    # Bandwidth caps of every store, file:// too (bwlimit.py): bytes per
    # second of object uploads and downloads, all threads together; None: none.
    bwlimit: int | None = None
    bwlimit_down: int | None = None


def endpoint_parts(text: str) -> tuple[str, str]:
    """(scheme, netloc) of an S3 endpoint URL; one trailing slash is allowed.

    The store sends every request to scheme://host[:port]/BUCKET/KEY (or to
    BUCKET.host), so a path in the endpoint would be silently dropped: it
    is refused instead, like anything else but scheme, host and port.
    Raises ValueError saying what is wrong, in words that never echo a user
    name or password put into the URL."""
    if any(ord(c) <= 0x20 or ord(c) == 0x7F for c in text):
        raise ValueError(f"'{shown(text)}' holds a space or control character")
    parts = urlsplit(text)
    if "@" in parts.netloc:
        raise ValueError("the URL holds a user or password (not shown); credentials come from the "
                         "environment, a profile or --credentials-file")
    if parts.scheme not in ("http", "https"):
        raise ValueError(f"'{shown(text)}' does not start with http:// or https://")
    if not parts.hostname:
        raise ValueError(f"'{shown(text)}' names no host")
    try:
        port = parts.port  # ValueError: not a number from 0 to 65535
    except ValueError:
        port = 0
    if port == 0 or parts.netloc.endswith(":"):
        raise ValueError(f"'{shown(text)}' has a bad port")
    if parts.path not in ("", "/"):
        raise ValueError(f"'{shown(text)}' has a path ('{shown(parts.path)}'), which bucketdisk would not use")
    if parts.query or parts.fragment or text.endswith(("?", "#")):
        raise ValueError(f"'{shown(text)}' has a query or fragment")
    return parts.scheme, parts.netloc


def check_endpoint(text: str, source: str) -> tuple[str, str]:
    """endpoint_parts, raising UserError naming `source` (--endpoint,
    AWS_ENDPOINT_URL) in one line."""
    try:
        return endpoint_parts(text)
    except ValueError as e:
        raise UserError(f"{source} must be {ENDPOINT_FORM}: {e}") from None


def sse_parts(text: str) -> tuple[str, str | None]:
    """(algorithm, KMS key id or None) for an --sse value, as the
    x-amz-server-side-encryption and ...-aws-kms-key-id headers take them.
    Raises ValueError for anything S3 would not accept (see SSE_FORMS)."""
    if text == "AES256":
        return text, None
    for algorithm in ("aws:kms:dsse", "aws:kms"):
        if text == algorithm:
            return algorithm, None
        if text.startswith(algorithm + ":"):
            key = text[len(algorithm) + 1:]
            if not _KMS_KEY_RE.fullmatch(key):
                raise ValueError(f"{algorithm}:KEYID needs a KMS key id, key ARN or alias (letters, digits, "
                                 f"':', '/', '_' and '-'), not '{shown(key[:80])}'")
            return algorithm, key
    raise ValueError(f"'{shown(text[:80])}' is not {SSE_FORMS}")


def check_role_name(role: str) -> str:
    """`role` if it can be an IAM role name (ROLE_RE); else ValueError
    saying so (--ec2-role's check: the name goes into a metadata URL)."""
    if not ROLE_RE.fullmatch(role):
        raise ValueError(f"'{shown(role[:80])}' is not an IAM role name (1-64 letters, digits and +=,.@_-)")
    return role


def endpoint_of(endpoint: str | None, region: str) -> tuple[str, str]:
    """(scheme, netloc) of the server: `endpoint` (--endpoint), else
    AWS_ENDPOINT_URL, else AWS S3 in `region`.  Raises UserError (naming
    where it came from) for an endpoint that is not scheme://host[:port]."""
    if endpoint:
        return check_endpoint(endpoint, "--endpoint")
    if os.environ.get("AWS_ENDPOINT_URL"):
        return check_endpoint(os.environ["AWS_ENDPOINT_URL"], "AWS_ENDPOINT_URL")
    return "https", f"s3.{region}.amazonaws.com"


def sse_headers(sse: str | None) -> dict[str, str]:
    """The server-side encryption headers every object PUT carries for
    --sse `sse` (none for None); raises UserError for a value S3 refuses."""
    if not sse:
        return {}
    try:
        algorithm, kms_key = sse_parts(sse)
    except ValueError as e:
        raise UserError(f"--sse: {e}") from None
    headers = {"x-amz-server-side-encryption": algorithm}
    if kms_key:
        headers["x-amz-server-side-encryption-aws-kms-key-id"] = kms_key
    return headers
