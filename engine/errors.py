"""Exceptions shared by the layers.

`UserError` carries one line meant for a person; the CLI prints it and exits
non-zero.  Everything else is a bug or an I/O failure and is logged in full.
"""


class UserError(Exception):
    """Bad input or a refused operation, explained in one line."""


class StoreError(Exception):
    """The object store failed after its retries were spent."""


class StoreFull(StoreError):
    """The store has no room for a write (a file:// store whose disk or
    quota is full); the message names where."""


class NotFound(StoreError):
    """The object does not exist."""


class CorruptData(StoreError):
    """An object failed its integrity checks.  The layers that decode bytes
    do not know where they came from; the one that read them names the
    object with `at`, so that every such error says which key is damaged."""

    where: str | None = None  # the damaged object's URL, once named

    def at(self, where: str) -> "CorruptData":
        """This failure (same class), its message naming the object `where`
        (a URL such as s3://bucket/prefix/map/roots/...); named once."""
        if self.where is not None:
            return self
        named = type(self)(f"{where} is damaged: {self}")
        named.where = where
        return named


class Forbidden(StoreError):
    """The store refused access to one object (S3 403, a file's EACCES):
    these credentials may not read it, which says nothing of whether it exists."""
