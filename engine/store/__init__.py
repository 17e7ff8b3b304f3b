"""Object stores behind one interface; `open_store` picks one from a URL."""
from urllib.parse import urlparse

from ..errors import UserError
from ..stats import Stats
from .base import ObjectStore


def open_store(url: str, stats: Stats | None = None, *, create: bool = False) -> ObjectStore:
    """The store a volume URL names.  `create` makes a missing local directory."""
    parsed = urlparse(url)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise UserError(f"file:// URLs take an absolute path, as file:///srv/disk: {url}")
        if not parsed.path.startswith("/"):
            raise UserError(f"file:// URLs take an absolute path: {url}")
        from .file import FileStore

        return FileStore(parsed.path, stats, create=create)
    if parsed.scheme == "" and url.startswith("/"):
        from .file import FileStore

        return FileStore(url, stats, create=create)
    raise UserError(f"unsupported URL (expected file:///path): {url}")


__all__ = ["ObjectStore", "open_store"]
