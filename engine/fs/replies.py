"""What the operations (operations.py, snapshottree.py) answer, whichever
FUSE adapter serves them: attributes, filesystem figures, and the error
that fails one request.  Plain Python, so that the mfusepy adapter runs
where the libfuse 3 binding (_fuse.pyx) was not built."""
import os
from typing import NamedTuple


class FuseError(OSError):
    """Fail the current request with `errno` (not logged)."""

    def __init__(self, code: int) -> None:
        super().__init__(code, os.strerror(code))


class Attr(NamedTuple):
    """One inode's attributes, as stat(2) shows them."""

    ino: int
    mode: int       # type and permission bits (stat.S_IF* | 0oNNN)
    nlink: int
    size: int       # bytes
    uid: int
    gid: int
    time_ns: int    # atime, mtime and ctime: nanoseconds since the epoch
    blksize: int    # bytes: the volume's block size
    timeout: float  # seconds the kernel may cache these attributes (the low-level adapter honours it per inode)


class Statfs(NamedTuple):
    """statvfs(3)'s figures: sizes in blocks of `block_size` bytes."""

    block_size: int
    blocks: int
    free: int
    files: int
    free_files: int
    name_max: int
