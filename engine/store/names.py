"""Which volume URLs, bucket names and keys bucketdisk accepts.

A key is sent to an S3 server as a URL path, and servers, HTTP libraries
and proxies rewrite some paths before they reach storage: `//` collapses
to `/`, `.` and `..` segments are resolved, a trailing dot or a backslash
may be dropped or turned into `/`, `%41` may be decoded once more.  A
volume whose keys are stored under one spelling and listed under another
reads as zeros.  So every segment of a prefix (and every key) is made of
a conservative set of characters that no layer rewrites:
`A-Z a-z 0-9 . _ -`, not ending in `.` (which also excludes `.` and `..`),
never empty.  A file:// path only has to mean one directory: no empty,
`.` or `..` segment, no control characters.

A single trailing slash is dropped (`s3://b/p/` is `s3://b/p`: S3
consoles and shells add one); any other empty segment is refused.
"""
import re

from ..errors import UserError

SAFE_CHARS = "A-Z a-z 0-9 . _ -"
_SEGMENT = r"[A-Za-z0-9._-]*[A-Za-z0-9_-]"
_SEGMENT_RE = re.compile(_SEGMENT)
_KEY_RE = re.compile(rf"{_SEGMENT}(?:/{_SEGMENT})*")
_SAFE_CHAR_RE = re.compile(r"[A-Za-z0-9._-]")
# The longest key of the layout is `blocks/hh/<64 hex>` or `map/pages/<64 hex>`
# (74 characters) and S3 keys end at 1024 bytes: a longer prefix would be
# accepted at create and fail at the first block written.
MAX_PREFIX = 900
_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_IPV4_RE = re.compile(r"\d{1,3}(?:\.\d{1,3}){3}")


def shown(text: str) -> str:
    """`text` safe to print on one line: non-ASCII and control characters
    escaped as Python does (\\n, \\x01, \\u00e9)."""
    return ascii(text)[1:-1]


def is_plain_key(key: str) -> bool:
    """Whether `key` is made only of safe, non-empty segments (see module doc)."""
    return _KEY_RE.fullmatch(key) is not None


def segment_problem(segment: str) -> str | None:
    """Why one path segment would be rewritten on its way, or None if it is safe."""
    if segment == "":
        return "an empty segment ('//')"
    if segment in (".", ".."):
        return f"a '{segment}' segment"
    bad = next((c for c in segment if not _SAFE_CHAR_RE.fullmatch(c)), None)
    if bad is not None:
        return f"the character {ascii(bad)} (U+{ord(bad):04X})"
    if segment.endswith("."):
        return f"a segment ending in '.' ({shown(segment)})"
    assert _SEGMENT_RE.fullmatch(segment)
    return None


def local_segment_problem(segment: str) -> str | None:
    """Why one segment of a local directory path is refused, or None.  No
    server sees these names, so spaces and non-ASCII letters are fine (a
    macOS volume is often "/Volumes/My Backup"); only what would change
    the path's meaning or break a log line is refused."""
    if segment == "":
        return "an empty segment ('//')"
    if segment in (".", ".."):
        return f"a '{segment}' segment"
    bad = next((c for c in segment if ord(c) < 0x20 or ord(c) == 0x7F), None)
    if bad is not None:
        return f"the control character {ascii(bad)}"
    return None


def split_path(path: str, url: str, *, local: bool = False) -> list[str]:
    """The segments of `path` ('a/b' or 'a/b/', no leading slash): raises
    UserError naming `url` and the first segment a server could rewrite
    (with `local`, a directory path: see local_segment_problem).  An empty
    `path` has no segments."""
    if path.endswith("/"):
        path = path[:-1]
    if path == "":
        return []
    segments = path.split("/")
    for segment in segments:
        problem = local_segment_problem(segment) if local else segment_problem(segment)
        if problem is not None and local:
            raise UserError(f"bad volume URL {shown(url)}: {problem} in the path")
        if problem is not None:
            raise UserError(f"bad volume URL {shown(url)}: {problem} could be rewritten by a server or "
                            f"proxy; use segments of {SAFE_CHARS} (not ending in '.')")
    return segments


def check_prefix(prefix: str, url: str) -> str:
    """The S3 key prefix of a volume, 'a/b' or '' (the whole bucket), from
    the part of `url` after the bucket (one trailing slash allowed).
    Raises UserError for a prefix a server could rewrite, or one too long."""
    segments = split_path(prefix, url)
    joined = "/".join(segments)
    if len(joined) > MAX_PREFIX:
        raise UserError(f"the prefix of {shown(url[:60])}... is {len(joined)} characters long; "
                        f"at most {MAX_PREFIX} leave room for the volume's keys (S3 keys end at 1024)")
    return joined


def check_bucket(bucket: str) -> None:
    """Refuse a bucket name S3 does not allow (3-63 characters of lowercase
    letters, digits, dots and hyphens, starting and ending with a letter or
    digit, no '..', not an IP address), with the rule in one line."""
    if not bucket:
        raise UserError("s3:// URLs name a bucket: s3://BUCKET/PREFIX")
    if not _BUCKET_RE.fullmatch(bucket) or ".." in bucket or _IPV4_RE.fullmatch(bucket):
        raise UserError(f"bad bucket name {shown(bucket)}: S3 bucket names are 3-63 characters of "
                        "lowercase letters, digits, '.' and '-', start and end with a letter or digit, "
                        "and are not IP addresses")
