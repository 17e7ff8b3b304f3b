"""Cython hot paths vs their plain-Python references, on 1 MiB blocks.

Run:  pytest bench/bench_hot_paths.py --benchmark-only
Each benchmark group holds one function: `cython` is bucketdisk's extension,
`python` the reference from tests/test_hot_paths.py.  For xxh3_64 there is
no sensible pure-Python XXH3, so its `python` side calls the same libxxhash
through ctypes: that measures what the binding saves, not the hash itself.
The bitmaps have 2**20 bits: the dirty map of a 1 TiB volume of 1 MiB blocks.
The block table read is a warm 4 KiB read of a 256-block cache (the read a
FUSE thread serves without Python) against a dict lookup and slice.
"""
import os
import random
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_hot_paths import (  # noqa: E402  (needs the path above)
    _LIBXXHASH, PyBitmap, ref_frame, ref_is_zero, ref_table_read, ref_unframe, ref_xxh3_64,
)

from bucketdisk.codec._hot import frame, is_zero, unframe, xxh3_64  # noqa: E402
from bucketdisk.device._bitmap import Bitmap  # noqa: E402
from bucketdisk.device._table import BlockTable  # noqa: E402

MIB = 1 << 20
NBITS = 1 << 20

ZERO_BLOCK = bytes(MIB)  # is_zero's worst case: every byte must be read
ZERO_BLOCK_COPY = bytes(bytearray(MIB))  # a distinct object, so == really compares
RANDOM_BLOCK = random.Random(0).randbytes(MIB)
FRAMED = frame(RANDOM_BLOCK, 1, MIB)

needs_libxxhash = pytest.mark.skipif(_LIBXXHASH is None, reason="libxxhash not loadable by ctypes")

IMPLS = ["cython", "python"]


@pytest.mark.parametrize("impl", IMPLS + ["python-memcmp"])
def test_is_zero(benchmark, impl):
    benchmark.group = "is_zero 1 MiB zero block"
    # python-memcmp: the stdlib idiom, comparing with a kept zero block (bytes
    # == bytes is a memcmp under the GIL, and costs a block of memory).
    fn = {"cython": is_zero, "python": ref_is_zero,
          "python-memcmp": ZERO_BLOCK_COPY.__eq__}[impl]
    assert benchmark(fn, ZERO_BLOCK) is True


@needs_libxxhash
@pytest.mark.parametrize("impl", IMPLS)
def test_xxh3_64(benchmark, impl):
    benchmark.group = "xxh3_64 1 MiB (python = ctypes libxxhash)"
    fn = xxh3_64 if impl == "cython" else ref_xxh3_64
    assert benchmark(fn, RANDOM_BLOCK) == xxh3_64(RANDOM_BLOCK)


@needs_libxxhash
@pytest.mark.parametrize("impl", IMPLS)
def test_frame(benchmark, impl):
    benchmark.group = "frame 1 MiB"
    fn = frame if impl == "cython" else ref_frame
    assert benchmark(fn, RANDOM_BLOCK, 1, MIB) == FRAMED


@needs_libxxhash
@pytest.mark.parametrize("impl", IMPLS)
def test_unframe(benchmark, impl):
    benchmark.group = "unframe 1 MiB"
    fn = unframe if impl == "cython" else ref_unframe
    flags, raw_len, payload = benchmark(fn, FRAMED)
    assert (flags, raw_len) == (1, MIB) and payload == RANDOM_BLOCK


def _bitmaps(impl, every):
    """A bitmap of each kind with every `every`-th bit set (None: empty)."""
    bm = Bitmap(NBITS) if impl == "cython" else PyBitmap(NBITS)
    if every:
        for i in range(0, NBITS, every):
            bm.set(i)
    return bm


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_count(benchmark, impl):
    benchmark.group = "Bitmap.count 1 Mi bits, 1% set"
    bm = _bitmaps(impl, 100)
    assert benchmark(bm.count) == len(range(0, NBITS, 100))


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_next_set_sparse(benchmark, impl):
    benchmark.group = "Bitmap.next_set 1 Mi bits, only the last set"
    bm = _bitmaps(impl, 0)
    bm.set(NBITS - 1)
    assert benchmark(bm.next_set, 0) == NBITS - 1


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_iter_set(benchmark, impl):
    benchmark.group = "Bitmap.iter_set 1 Mi bits, 1% set"
    bm = _bitmaps(impl, 100)
    assert benchmark(lambda: sum(1 for _ in bm.iter_set())) == len(range(0, NBITS, 100))


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_set_range(benchmark, impl):
    benchmark.group = "Bitmap.set_range+clear_range, whole map less 3 bits each end"
    bm = _bitmaps(impl, 0)

    def fill_and_clear():
        bm.set_range(3, NBITS - 3)
        bm.clear_range(3, NBITS - 3)

    benchmark(fill_and_clear)
    assert bm.count() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_to_bytes(benchmark, impl):
    benchmark.group = "Bitmap.to_bytes 1 Mi bits"
    bm = _bitmaps(impl, 100)
    assert len(benchmark(bm.to_bytes)) == NBITS // 8


@pytest.mark.parametrize("impl", IMPLS)
def test_bitmap_set_test_single(benchmark, impl):
    benchmark.group = "Bitmap.set+test+clear one bit (per-call overhead)"
    bm = _bitmaps(impl, 0)

    def one():
        bm.set(123457)
        bm.test(123457)
        bm.clear(123457)

    benchmark(one)


@pytest.mark.parametrize("impl", IMPLS)
def test_block_table_read_4k(benchmark, impl):
    benchmark.group = "block table: warm 4 KiB read, 256 cached 1 MiB blocks"
    blocks = {i: RANDOM_BLOCK for i in range(256)}
    offset = 77 * MIB + 12288
    out = bytearray(4096)
    if impl == "cython":
        table = BlockTable(256, MIB)
        for i, data in blocks.items():
            table.publish(i, data)
        assert benchmark(table.read_into, out, offset)
    else:
        assert benchmark(ref_table_read, blocks, MIB, offset, 4096)
