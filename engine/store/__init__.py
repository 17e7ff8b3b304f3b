"""Object stores behind one interface; `open_store` picks one from a URL."""
from urllib.parse import urlparse

from ..errors import UserError
from ..stats import Stats
from .base import ObjectStore
from .s3 import S3Options


def open_store(url: str, stats: Stats | None = None, *, create: bool = False,
               s3: S3Options | None = None) -> ObjectStore:
    """The store a volume URL names.

    `create` makes a missing local directory; an s3:// store is contacted
    once so that bad credentials, a missing bucket or an unreachable server
    fail here, in one line, before anything is written.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost") or not parsed.path.startswith("/"):
            raise UserError(f"file:// URLs take an absolute path, as file:///srv/disk: {url}")
        from .file import FileStore

        return FileStore(parsed.path, stats, create=create)
    if parsed.scheme == "s3":
        from .s3 import S3Store

        if parsed.query or parsed.fragment or "@" in parsed.netloc:
            raise UserError(f"s3:// URLs are s3://BUCKET/PREFIX, nothing more: {url}")
        store = S3Store(parsed.netloc, parsed.path, s3 or S3Options(), stats)
        try:
            store.check()
        except BaseException:
            store.close()
            raise
        return store
    raise UserError(f"unsupported URL {url!r}: use file:///PATH or s3://BUCKET/PREFIX")


__all__ = ["ObjectStore", "S3Options", "open_store"]
