"""The files of a cache dir (cachedir.py): their layout, and reading and
writing them.  No state here: CacheDir keeps the books.

Both kinds of file are laid out alike, little-endian:

    offset  size  field
    0       4     magic            b"BDKC"
    4       4     version          1
    8       16    volume UUID
    24      8     block number     (a clean file: 0)
    32      4     block size
    36      4     page size        4096 (the block size, for smaller blocks)
    40      4     flags            ZERO_BASE: pages not held are zeros
    44      8     writer's epoch   the mount that began the file (a clean file: 0)
    52      12    reserved, zero
    64      16 x pages             a dirty file's two XXH3-64s of each page it holds:
                                   the page's content before its last write, and
                                   after it (0: none; a clean file: unused)
    data_offset   block size       the block (the header rounded up to 4 KiB)

A dirty file is sparse: pages never written are holes.  A write puts both
checksums of its pages first, then the pages, so a page that either one
matches is one the file held when the process died: the write before, or
this one (a kill -9 can land between the two writes, or inside the second
between pages).  A page that matches neither was cut by a crash of the
machine.
"""
from __future__ import annotations

import ctypes
import errno
import os
import struct
import threading
import uuid as uuidlib
from array import array
from dataclasses import dataclass

from ..codec._hot import page_checksums
from ..codec.block import block_buffer
from ..localfiles import unlink_quietly

PAGE = 4096
MAGIC = b"BDKC"
VERSION = 2
ZERO_BASE = 0x01
HEADER = struct.Struct("<4sI16sQIIIQ")
HEADER_SIZE = 64


@dataclass
class Recovered:
    """One dirty file read back: the pages it holds in `data` (others
    zero), which of them checked out, and what the others are."""
    index: int
    data: bytearray
    held: int        # bit n: page n is in `data`, one of its checksums matched
    torn: int        # pages the file named whose checksums did not match
    zero_base: bool  # pages not held are zeros, else the store's
    checksums: bytes  # the XXH3-64 of each held page's content (0: not held)


class Layout:
    """Where things are in the cache files of one volume."""

    def __init__(self, block_size: int, volume_uuid: str) -> None:
        self.block_size = block_size
        self.uuid = uuidlib.UUID(volume_uuid).bytes
        self.pages = max(1, block_size // PAGE)
        self.page_size = block_size // self.pages
        self.checksums_size = HEADER_SIZE + 16 * self.pages  # the header with its checksums
        self.data_offset = -(-self.checksums_size // PAGE) * PAGE
        self.file_size = self.data_offset + block_size  # bytes a file takes on disk, at most

    def header(self, index: int = 0, flags: int = 0, epoch: int = 0) -> bytes:
        """A header with no page checksum set."""
        fields = HEADER.pack(MAGIC, VERSION, self.uuid, index, self.block_size, self.page_size, flags, epoch)
        return fields.ljust(self.checksums_size, b"\0")

    def pages_of(self, block, first: int, last: int, before: bytes) -> tuple[memoryview, bytes, bytes, int, int]:
        """(the bytes of pages `first` to `last` of `block`, their new
        checksums, the header's checksum pairs for them, where the bytes go,
        where the pairs go); `before`: the pages' checksums now (8 bytes each)."""
        data = memoryview(block)[first * self.page_size : (last + 1) * self.page_size]
        after = page_checksums(data, self.page_size)
        pairs = array("Q", bytes(2 * len(after)))
        pairs[0::2], pairs[1::2] = array("Q", before), array("Q", after)
        return (data, after, pairs.tobytes(), self.data_offset + first * self.page_size,
                HEADER_SIZE + 16 * first)


def read_dirty(path: str, layout: Layout, index: int) -> Recovered | None:
    """The dirty file of block `index`, its pages checked; None when its
    header is damaged or not this volume's block.  Raises OSError."""
    with open(path, "rb") as f:
        head = f.read(layout.checksums_size)
        data = block_buffer(layout.block_size)
        f.seek(layout.data_offset)
        f.readinto(memoryview(data))
    if len(head) < layout.checksums_size:
        return None
    magic, version, volume, block, block_size, page_size, flags, _ = HEADER.unpack_from(head)
    if (magic, version, volume, block, block_size, page_size) != \
            (MAGIC, VERSION, layout.uuid, index, layout.block_size, layout.page_size):
        return None
    named = array("Q", head[HEADER_SIZE:])
    actual = array("Q", page_checksums(data, layout.page_size))
    current = array("Q", bytes(8 * layout.pages))
    held = torn = 0
    view = memoryview(data)
    for page in range(layout.pages):
        if actual[page] in (named[2 * page], named[2 * page + 1]) and actual[page]:
            held |= 1 << page
            current[page] = actual[page]
            continue
        if named[2 * page] or named[2 * page + 1]:
            torn |= 1 << page
        view[page * layout.page_size : (page + 1) * layout.page_size] = bytes(layout.page_size)
    return Recovered(index, data, held, torn, bool(flags & ZERO_BASE), current.tobytes())


def read_clean(path: str, layout: Layout) -> bytearray | None:
    """A clean file's block, None if it is not one of this volume's whole
    blocks (its content hash is the caller's to check).  Raises OSError."""
    data = block_buffer(layout.block_size)
    with open(path, "rb") as f:
        head = f.read(HEADER_SIZE)
        f.seek(layout.data_offset)
        got = f.readinto(memoryview(data))
    if got != layout.block_size or len(head) < HEADER_SIZE or head[:4] != MAGIC or head[8:24] != layout.uuid:
        return None
    return data


def write_clean(path: str, layout: Layout, data) -> None:
    """Write a clean file whole, under a scratch name first, so that no
    reader ever finds half of one.  Raises OSError (the scratch file gone)."""
    scratch = f"{path}.{threading.get_ident():x}.new"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(scratch, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            write_all(fd, layout.header(), 0)
            write_all(fd, data, layout.data_offset)
        finally:
            os.close(fd)
        os.replace(scratch, path)
    except BaseException:
        unlink_quietly(scratch)
        raise


def write_all(fd: int, data, offset: int) -> None:
    """pwrite all of `data` at `offset`; a short write (a disk that filled
    up) raises OSError (ENOSPC) rather than go unnoticed."""
    done = os.pwrite(fd, data, offset)
    if done != len(data):
        raise OSError(errno.ENOSPC, f"wrote {done} of {len(data)} bytes (is the disk full?)")


_libc = ctypes.CDLL(None, use_errno=True)  # this process's own symbols: libc's among them


def syncfs(fd: int) -> None:
    """syncfs(2) of the file system holding `fd` (Linux); sync(2) elsewhere.
    Raises OSError."""
    call = getattr(_libc, "syncfs", None)
    if call is None:
        os.sync()
        return
    if call(fd) != 0:
        code = ctypes.get_errno()
        raise OSError(code, os.strerror(code))
