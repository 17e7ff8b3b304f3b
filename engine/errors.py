"""Exceptions shared by the layers.

`UserError` carries one line meant for a person; the CLI prints it and exits
non-zero.  Everything else is a bug or an I/O failure and is logged in full.
"""


class UserError(Exception):
    """Bad input or a refused operation, explained in one line."""


class DamagedRecord(UserError):
    """The volume record cannot be read: not a valid record, or (an
    encrypted volume's) its fields fail their MAC.  (A record of a newer
    format version is a plain UserError: it is no damage.)"""


class StoreError(Exception):
    """The object store failed after its retries were spent."""


class StoreFull(StoreError):
    """The store has no room for a write (a file:// store whose disk or
    quota is full); the message names where."""


class NotFound(StoreError):
    """The object `key` does not exist.  Its text is `url` (the object's URL,
    for messages) when the store gave it, else the key."""

    def __init__(self, key: str, url: str | None = None) -> None:
        super().__init__(url or key)
        self.key = key


class CorruptData(StoreError):
    """An object failed its integrity checks.  The layers that decode bytes
    do not know where they came from; the one that read them names the
    object with `at`, so that every such error says which key is damaged."""

    where: str | None = None   # the damaged object's URL, once named
    detail: str | None = None  # what is wrong with it, without the URL

    def at(self, where: str) -> "CorruptData":
        """This failure (same class), its message naming the object `where`
        (a URL such as s3://bucket/prefix/map/roots/...); named once."""
        if self.where is not None:
            return self
        named = type(self)(f"{where} is damaged: {self}")
        named.where, named.detail = where, str(self)
        return named


class LostBlock(StoreError):
    """A block whose map entry is the LOST marker (codec.block.LOST_HASH):
    `fsck --repair` could not tell what it held.  Reads of it fail until it
    is written whole (or punched)."""


class VolumeReplaced(StoreError):
    """The volume a read-only mount shows is no longer at its place: its
    record is gone, or names another volume (`create --force` replaced
    it).  Nothing read there now is that volume's; the message says which
    happened."""


class Forbidden(StoreError):
    """The store refused access to one object (S3 403, a file's EACCES):
    these credentials may not read it, which says nothing of whether it exists."""


def without_traceback(error: BaseException) -> BaseException:
    """`error` with its traceback, and those of the errors it chains, let go.

    A traceback keeps the locals of every frame it passes through alive,
    such as the buffers of a block device's fetch or upload; the device
    keeps errors (in entries, for fsync) until the next success, and those
    buffers would stay in memory, uncounted.  Returns `error`."""
    pending, seen = [error], set()
    while pending:
        e = pending.pop()
        if e is None or id(e) in seen:
            continue
        seen.add(id(e))
        e.__traceback__ = None
        pending += [e.__cause__, e.__context__]
    return error
