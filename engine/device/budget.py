"""What --cache-size bounds, and the two rules that keep the device in it.

Every buffer the device holds for a block is charged, in bytes, to one
budget of `limit` bytes before it is allocated, and credited once it is
freed (cache.CacheIndex keeps the count):

- a cached block (clean, dirty, or being read: a fetch decodes straight
  into the block's buffer, see codec.BlockReader): the block plus
  ENTRY_OVERHEAD for its bookkeeping (entry, index and table slots,
  object headers); a punched block waiting to be recorded: ENTRY_OVERHEAD;
- an upload: the object it builds (the compressed attempt, a block and a
  header at most; an uncompressed block is sent as it is, see the codec),
  charged to a fixed upload area of UPLOAD_AREA bytes beside the cache
  while it has room, and to the cache beyond;
- the old buffer of a block an upload is still sending when a writer
  changes it (the writer changes a copy);
- a copy a writer makes of a block it may not write in place.

`limit` is --cache-size plus the bookkeeping of its first FREE_ENTRIES
blocks (that much is in the fixed overhead), so a cache of 256M holds 256
blocks of 1M; only small blocks, many to a cache, pay for their
bookkeeping out of it.  What the daemon holds besides is fixed and
documented in README (mount, Memory): Python and its libraries, the upload area,
at most codec.CONTEXTS zstd contexts of each kind (and a staging buffer for each
decompression, or on an encrypted volume the compressed body it holds until
its seal is checked: less than a block), libfuse's request buffers, one fsync log
(flushing.FSYNC_LOG_MAX), and the block map.

Two rules keep the device moving inside the limit:
- an upload always fits: in the upload area, once the uploads before it
  there end, when a block fits in it at all; else dirty blocks, which
  only an upload frees, take at most `max_dirty` blocks, which leaves room
  for one upload beside them.  A writer that would dirty one more block
  waits (and the flush threads hurry), up to --retry-time
  (device.NoRoomError);
- everything else (reads, read-ahead, further uploads, copies) evicts
  clean blocks or waits until fetches and uploads finish.
So with fewer buffers than --threads, uploads and fetches simply run as
many at once as fit.
"""
from dataclasses import dataclass

from ..errors import UserError
from ..volume.record import human_size, machine_memory

# Bytes per block buffer beyond the block: the object header the buffer has
# room for (24; codec: Buffers), and for a cached block its Entry (176),
# the LRU dict and its node (~110), the published-block table's slots
# (32-64 per block of capacity), the bytearray and memoryview headers and
# malloc's chunk headers: about 560 bytes summed, rounded up (it matters
# for small blocks only: 16% of a 4K block, 1% of a 64K one).
ENTRY_OVERHEAD = 640
# Blocks whose bookkeeping is not charged to the cache (2.5 MiB of fixed
# overhead): every cache of blocks of 64K and up, up to 256M.
FREE_ENTRIES = 4096
# Bytes beside the cache for the objects uploads build.  An upload's object
# lives for one PUT; charged to the cache, each one evicted a cached block
# that the writes after it fetched again (4K random writes over 256 blocks
# of 1M in a 256M cache, fsync every 64: 600-860 misses in 8 s, 4.4-7.3k
# IOPS against 8.8-10.7k before the bound; with the area 10-13 misses and
# 10.2-10.9k IOPS).  16 MiB lets the default 16 uploads of 1M blocks run
# beside a full cache; uploads of larger blocks, or more of them, take
# their room from the cache.
UPLOAD_AREA = 16 << 20
MIN_BLOCKS = 2  # one being written while another is uploaded


class CacheTooSmall(UserError):
    """--cache-size cannot hold the blocks a mount needs to work."""


def minimum_cache_size(block_size: int) -> int:
    """The smallest --cache-size (bytes) that works with `block_size`."""
    return MIN_BLOCKS * block_size


def check_cache_size(cache_size: int, block_size: int) -> None:
    """Refuse, in one line naming a size that works, a cache too small to
    hold one block being written while another is uploaded (and so to
    read one block while another is cached).  Raises CacheTooSmall.

    Refused rather than shrunk to fit: a cache of fewer than two blocks
    cannot write and upload at once, so a mount would stall on its first
    write; a user who asked for that little memory should choose between
    more memory and smaller blocks.  Anything from two blocks up works,
    with as many uploads and fetches at once as fit (see above), up to
    this machine's memory (more is a typing slip: UserError)."""
    if cache_size > machine_memory():
        raise UserError(f"--cache-size {human_size(cache_size)} is more than this machine's memory "
                        f"({human_size(machine_memory())})")
    if cache_size >= minimum_cache_size(block_size):
        return
    raise CacheTooSmall(
        f"--cache-size {human_size(cache_size)} cannot hold {MIN_BLOCKS} blocks of {human_size(block_size)} "
        f"(one being written while another uploads); use --cache-size "
        f"{human_size(minimum_cache_size(block_size))} or more")


@dataclass(frozen=True)
class Budget:
    """The byte costs of a device's buffers, and its limits."""

    block_size: int
    limit: int        # bytes: --cache-size and the bookkeeping of up to FREE_ENTRIES blocks
    upload_area: int = UPLOAD_AREA  # bytes beside the cache for uploads' objects

    @classmethod
    def for_cache(cls, cache_size: int, block_size: int) -> "Budget":
        """The budget of a --cache-size (bytes); raises CacheTooSmall."""
        check_cache_size(cache_size, block_size)
        return cls(block_size, cache_size + min(cache_size // block_size, FREE_ENTRIES) * ENTRY_OVERHEAD)

    @property
    def block_cost(self) -> int:
        """Bytes of one cached block with its bookkeeping."""
        return self.block_size + ENTRY_OVERHEAD

    @property
    def object_cost(self) -> int:
        """Bytes of the object an upload builds: its buffer is allocated as
        a block's (codec: Buffers)."""
        return self.block_cost

    @property
    def load_cost(self) -> int:
        """Bytes a read of an uncached block needs: its block's, since it is
        decoded straight into it."""
        return self.block_cost

    @property
    def max_blocks(self) -> int:
        """The most blocks the cache can hold at once."""
        return self.limit // self.block_cost

    @property
    def max_dirty(self) -> int:
        """The most dirty blocks at once, such that an upload always fits:
        in the upload area if one fits there at all, else beside them."""
        if self.block_size <= self.upload_area:
            return self.max_blocks
        return (self.limit - self.object_cost) // self.block_cost

    def workers(self, threads: int) -> int:
        """Upload (and fetch) threads to run for --threads: no more than
        can work at once (an upload holds its block and the object it
        builds), since more would only wait and take memory for stacks."""
        return max(1, min(threads, self.max_blocks // 2))

    def readahead(self, wanted: int) -> int:
        """Blocks to fetch ahead of a sequential reader: `wanted`, but at
        most half the cache less the block being read, so that fetching
        ahead never evicts a block fetched ahead and not read yet."""
        return max(0, min(wanted, self.max_blocks // 2 - 1))
