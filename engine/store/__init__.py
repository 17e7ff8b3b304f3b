"""Object stores behind one interface; `open_store` picks one from a URL."""
from ..errors import UserError
from ..stats import Stats
from .base import ObjectStore
from .names import check_bucket, check_prefix, shown, split_path
from .s3args import S3Options  # (s3.py, with requests, is imported by s3:// only)

USAGE = "use file:///PATH or s3://BUCKET/PREFIX"


def open_store(url: str, stats: Stats | None = None, *, create: bool = False,
               s3: S3Options | None = None) -> ObjectStore:
    """The store a volume URL names.

    The URL is checked first (names.py): a path or prefix a server or proxy
    could rewrite, a bad bucket name or anything besides BUCKET/PREFIX is
    refused with UserError before anything is contacted.  `create` accepts
    a local directory that does not exist yet (it is made by the first
    write); an s3:// store is contacted once so that bad credentials, a
    missing bucket or an unreachable server fail here, in one line, before
    anything is written.  With a bandwidth cap in `s3` (bwlimit,
    bwlimit_down: any store's, despite the name), the store comes wrapped
    in bwlimit.RateLimited.
    """
    from .bwlimit import RateLimited

    options = s3 or S3Options()
    scheme, where = parse_url(url)
    if scheme == "file":
        from .file import FileStore

        return RateLimited.around(FileStore(where[0], stats, create=create), options.bwlimit, options.bwlimit_down)
    bucket, prefix = where
    from .s3 import S3Store

    store = S3Store(bucket, prefix, options, stats)
    try:
        store.check()
    except BaseException:
        store.close()
        raise
    return RateLimited.around(store, options.bwlimit, options.bwlimit_down)


def parse_url(url: str) -> tuple[str, tuple[str, ...]]:
    """('file', (directory,)) or ('s3', (bucket, prefix)) for a volume
    URL, checked as open_store checks it but without touching anything;
    raises UserError for a URL open_store would refuse."""
    scheme, sep, rest = url.partition(":")
    scheme = scheme.lower()
    if not sep or scheme not in ("file", "s3"):
        raise UserError(f"unsupported URL {shown(url)}: {USAGE}")
    if scheme == "file":
        return scheme, (file_url_path(url, rest),)
    return scheme, s3_url_parts(url, rest)


def file_url_path(url: str, rest: str) -> str:
    """The absolute directory of `file:///PATH` (or `file://localhost/PATH`,
    `file:/PATH`), `rest` being what follows `file:`.  Raises UserError for
    a relative path, another host, `/` itself, or a path whose meaning is
    unclear (names.py: `//`, `.`, `..`, control characters)."""
    if "?" in rest or "#" in rest:
        raise UserError(f"file:// URLs take a path and nothing more: {shown(url)}")
    if rest.startswith("//"):
        host, slash, path = rest[2:].partition("/")
        if host not in ("", "localhost") or not slash:
            raise UserError("file:// URLs take an absolute path on this machine, as file:///srv/disk "
                            "(no host name)")
    elif rest.startswith("/"):
        path = rest[1:]
    else:
        raise UserError(f"file:// URLs take an absolute path, as file:///srv/disk: {shown(url)}")
    segments = split_path(path, url, local=True)
    if not segments:
        raise UserError("file:/// is the whole file system; name a directory, as file:///srv/disk")
    return "/" + "/".join(segments)


def s3_url_parts(url: str, rest: str) -> tuple[str, str]:
    """(bucket, prefix) of `s3://BUCKET/PREFIX`, `rest` being what follows
    `s3:`; the prefix is '' (the whole bucket) or 'a/b' without slashes at
    either end.  Raises UserError for anything else, never echoing a user
    name or password given in the URL."""
    if not rest.startswith("//"):
        raise UserError(f"s3:// URLs are s3://BUCKET/PREFIX: {shown(url)}")
    bucket, _, prefix = rest[2:].partition("/")
    if "@" in bucket or ":" in bucket:
        # maybe KEY:SECRET@BUCKET: never print it
        raise UserError("s3:// URLs are s3://BUCKET/PREFIX, with no user, password or port; credentials come "
                        "from the environment, a profile or --credentials-file, the server from --endpoint")
    if "?" in rest or "#" in rest:
        raise UserError(f"s3:// URLs are s3://BUCKET/PREFIX, nothing more: {shown(url)}")
    check_bucket(bucket)
    return bucket, check_prefix(prefix, url)


__all__ = ["ObjectStore", "S3Options", "open_store", "parse_url"]
