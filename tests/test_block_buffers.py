"""Block buffers and the cache budget, without a mount.

- Codec: a block is framed as pieces (a compressed object, or a header and
  the block itself, not a copy), and decoded by BlockReader straight into
  one buffer however a store hands it the object (any piece sizes, a retry
  that starts over); a damaged, short or long object is CorruptData; a
  compressed read gives its decompressor back.  Every buffer that holds a
  block has one allocation size (so glibc reuses a freed one).
- Budget: a 256M cache of 1M blocks holds 256 of them, all may be dirty
  (uploads of blocks up to 16M have their own area), larger dirty blocks
  leave room for one upload; small blocks pay for their bookkeeping; a cache of
  fewer than two blocks is refused in one line naming a size that works.
"""
from __future__ import annotations

import random
import sys

import pytest

from bucketdisk.codec._hot import frame
from bucketdisk.codec.block import HEADER_SIZE, Codec, block_buffer, object_buffer
from bucketdisk.device.budget import ENTRY_OVERHEAD, Budget, CacheTooSmall, check_cache_size
from bucketdisk.errors import CorruptData
from bucketdisk.store.base import feed

KiB = 1 << 10
MiB = 1 << 20


def contents(size: int, rng: random.Random) -> dict[str, bytearray]:
    """Blocks that store uncompressed, compressed, and half of each."""
    text = b"".join(b"line %08d of text that compresses\n" % i for i in range(size // 30 + 1))[:size]
    return {
        "random": bytearray(rng.randbytes(size)),
        "text": bytearray(text),
        "half": bytearray(rng.randbytes(size // 2) + bytes(size // 2)),
        "ones": bytearray(b"\1" * size),
    }


def encode(codec: Codec, data) -> tuple[bytes, bytes]:
    content_hash, pieces = codec.encode_block(data)
    return content_hash, b"".join(bytes(piece) for piece in pieces)


def read(codec: Codec, size: int, content_hash: bytes, obj: bytes, piece: int) -> bytearray:
    """Hand `obj` to a BlockReader `piece` bytes at a time, as a store does."""
    reader = codec.block_reader(size, content_hash)
    try:
        reader.reset()
        done = 0
        while done < len(obj):
            room = reader.buffer()
            count = min(len(room), piece, len(obj) - done)
            room[:count] = obj[done : done + count]
            reader.filled(count)
            done += count
        return reader.finish()
    finally:
        reader.close()


@pytest.mark.parametrize("size", [4 * KiB, 64 * KiB, MiB])
def test_blocks_round_trip_through_the_reader_whatever_the_pieces(size):
    codec = Codec()
    for name, data in contents(size, random.Random(size)).items():
        content_hash, obj = encode(codec, data)
        stored_raw = len(obj) == HEADER_SIZE + size
        assert stored_raw == (name == "random"), (name, len(obj))
        for piece in (1, 1000, 256 * KiB, 1 << 30):
            block = read(codec, size, content_hash, obj, piece)
            assert block == data and type(block) is bytearray, (name, piece)
        block[0] ^= 1  # the cache's to write
        assert codec._decompressing._value == codec._decompressing._initial_value


def test_a_raw_block_is_uploaded_as_itself_not_a_copy():
    codec = Codec()
    data = bytearray(random.Random(1).randbytes(MiB))
    content_hash, pieces = codec.encode_block(data)
    assert len(pieces) == 2 and pieces[1] is data
    assert pieces[0] + pieces[1] == frame(data, 0, MiB)


def test_a_retried_read_starts_over():
    codec = Codec()
    for data in contents(64 * KiB, random.Random(2)).values():
        content_hash, obj = encode(codec, data)
        reader = codec.block_reader(64 * KiB, content_hash)
        try:
            done, broke = 0, min(HEADER_SIZE + 100, len(obj) - 1)
            while done < broke:  # the header and some payload, then the connection broke
                room = reader.buffer()
                count = min(len(room), broke - done)
                room[:count] = obj[done : done + count]
                reader.filled(count)
                done += count
            feed(reader, obj)  # the store sends it all again
            assert reader.finish() == data
        finally:
            reader.close()


@pytest.mark.parametrize("damage", ["payload byte", "header byte", "short", "long", "other block"])
def test_a_damaged_object_is_corrupt_data(damage):
    codec = Codec()
    rng = random.Random(3)
    for data in contents(64 * KiB, rng).values():
        content_hash, obj = encode(codec, data)
        bad = bytearray(obj)
        if damage == "payload byte":
            bad[-1] ^= 0x40
        elif damage == "header byte":
            bad[9] ^= 0x01  # raw_len
        elif damage == "short":
            del bad[-1]
        elif damage == "long":
            bad += b"\0"
        else:
            content_hash = bytes(32 - 1) + b"\1"
        reader = codec.block_reader(64 * KiB, content_hash)
        try:
            with pytest.raises(CorruptData):
                feed(reader, bad)
                reader.finish()
        finally:
            reader.close()
        assert codec._decompressing._value == codec._decompressing._initial_value


def test_every_block_buffer_has_one_allocation_size():
    """A freed buffer must fit the next one whatever it holds (codec: Buffers)."""
    size = MiB
    allocated = {sys.getsizeof(object_buffer(size)), sys.getsizeof(block_buffer(size)),
                 sys.getsizeof(block_buffer(size, bytes(size)))}
    codec = Codec()
    for data in contents(size, random.Random(4)).values():
        content_hash, obj = encode(codec, data)
        allocated.add(sys.getsizeof(read(codec, size, content_hash, obj, 256 * KiB)))
    assert len(allocated) == 1, allocated


def test_budget_holds_whole_caches_and_room_for_an_upload():
    budget = Budget.for_cache(256 * MiB, MiB)
    assert budget.max_blocks == 256 and budget.max_dirty == 256  # uploads have their own area
    assert budget.readahead(8) == 8 and budget.workers(64) == 64
    big = Budget.for_cache(256 * MiB, 64 * MiB)  # too big for the upload area
    assert (big.max_blocks, big.max_dirty, big.readahead(8), big.workers(16)) == (4, 3, 1, 2)
    assert big.limit <= 256 * MiB + 4 * ENTRY_OVERHEAD
    two = Budget.for_cache(128 * MiB, 64 * MiB)
    assert (two.max_blocks, two.max_dirty, two.readahead(8), two.workers(16)) == (2, 1, 0, 1)
    small = Budget.for_cache(256 * MiB, 4 * KiB)  # 65,536 blocks: their bookkeeping is charged
    assert small.max_blocks * (4 * KiB + ENTRY_OVERHEAD) <= small.limit <= 256 * MiB + 4096 * ENTRY_OVERHEAD
    assert small.max_blocks < 65536


def test_a_cache_under_two_blocks_is_refused_naming_one_that_works():
    check_cache_size(128 * MiB, 64 * MiB)
    with pytest.raises(CacheTooSmall) as refused:
        check_cache_size(100 * MiB, 64 * MiB)
    line = str(refused.value)
    assert "\n" not in line and "--cache-size 100M" in line and "use --cache-size 128M or more" in line
