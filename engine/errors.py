"""Exceptions shared by the layers.

`UserError` carries one line meant for a person; the CLI prints it and exits
non-zero.  Everything else is a bug or an I/O failure and is logged in full.
"""


class UserError(Exception):
    """Bad input or a refused operation, explained in one line."""


class StoreError(Exception):
    """The object store failed after its retries were spent."""


class NotFound(StoreError):
    """The object does not exist."""


class CorruptData(StoreError):
    """An object failed its integrity checks."""


class Forbidden(StoreError):
    """The store refused access to one object (S3 403, a file's EACCES):
    these credentials may not read it, which says nothing of whether it exists."""
