"""Cython hot paths vs their plain-Python references, on 1 MiB blocks.

Run:  pytest bench/bench_hot_paths.py --benchmark-only
Each benchmark group holds one function: `cython` is bucketdisk's extension,
`python` the reference from tests/test_hot_paths.py.  For xxh3_64 there is
no sensible pure-Python XXH3: its `python` side is the xxhash package on a
bytes copy of the buffer, which our functions call without the copy.
The groups at the end (frame and unframe of 4 MiB, page_checksums, a cache
dir's write) are the cost figures in engine/codec/_hot.pyx's docstring.
The bitmaps have 2**20 bits: the dirty map of a 1 TiB volume of 1 MiB blocks.
The block table read is a warm 4 KiB read of a 256-block cache (the read a
FUSE thread serves without Python) against a dict lookup and slice.
"""
import os
import random
import sys
import uuid

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from test_hot_paths import (  # noqa: E402  (needs the path above)
    PyBitmap, ref_frame, ref_is_zero, ref_table_read, ref_unframe, ref_xxh3_64,
)

from bucketdisk.codec._hot import frame, is_zero, page_checksums, unframe, xxh3_64  # noqa: E402
from bucketdisk.device.cachedir import CacheDir  # noqa: E402
from bucketdisk.device._bitmap import Bitmap  # noqa: E402
from bucketdisk.device._table import BlockTable  # noqa: E402

MIB = 1 << 20
NBITS = 1 << 20

ZERO_BLOCK = bytes(MIB)  # is_zero's worst case: every byte must be read
ZERO_BLOCK_COPY = bytes(bytearray(MIB))  # a distinct object, so == really compares
RANDOM_BLOCK = random.Random(0).randbytes(MIB)
FRAMED = frame(RANDOM_BLOCK, 1, MIB)

IMPLS = ["cython", "python"]


@pytest.mark.parametrize("impl", IMPLS + ["python-memcmp"])
def test_is_zero(benchmark, impl):
    benchmark.group = "is_zero 1 MiB zero block"
    # python-memcmp: the stdlib idiom, comparing with a kept zero block (bytes
    # == bytes is a memcmp under the GIL, and costs a block of memory).
    fn = {"cython": is_zero, "python": ref_is_zero,
          "python-memcmp": ZERO_BLOCK_COPY.__eq__}[impl]
    assert benchmark(fn, ZERO_BLOCK) is True


@pytest.mark.parametrize("impl", IMPLS)
def test_xxh3_64(benchmark, impl):
    benchmark.group = "xxh3_64 1 MiB (python = the xxhash package on a copy)"
    fn = xxh3_64 if impl == "cython" else ref_xxh3_64
    assert benchmark(fn, RANDOM_BLOCK) == xxh3_64(RANDOM_BLOCK)


@pytest.mark.parametrize("impl", IMPLS)
def test_frame(benchmark, impl):
    benchmark.group = "frame 1 MiB"
    fn = frame if impl == "cython" else ref_frame
    assert benchmark(fn, RANDOM_BLOCK, 1, MIB) == FRAMED


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


# -- the xxhash cost groups (issue 17): checksums against what they guard --------

RANDOM_4MIB = random.Random(1).randbytes(4 * MIB)
FRAMED_4MIB = frame(RANDOM_4MIB, 1, 4 * MIB)


def test_frame_4mib(benchmark):
    benchmark.group = "frame 4 MiB"
    assert benchmark(frame, RANDOM_4MIB, 1, 4 * MIB) == FRAMED_4MIB


def test_unframe_4mib(benchmark):
    benchmark.group = "unframe 4 MiB"
    assert benchmark(unframe, FRAMED_4MIB)[2] == RANDOM_4MIB


def test_page_checksums_1mib(benchmark):
    benchmark.group = "page_checksums 1 MiB (256 pages of 4 KiB)"
    assert len(benchmark(page_checksums, RANDOM_BLOCK, 4096)) == 256 * 8


def test_page_checksums_4kib(benchmark):
    benchmark.group = "page_checksums 4 KiB (one page: per-call overhead)"
    assert len(benchmark(page_checksums, RANDOM_BLOCK[:4096], 4096)) == 8


@pytest.mark.parametrize("pages", [1, 256])
def test_cache_dir_write(benchmark, tmp_path, pages):
    """CacheDir.write of `pages` 4 KiB pages of a 1 MiB block (checksums,
    then two pwrites into the block's dirty file, no fsync): what a write to
    a mount with --cache-dir costs, page_checksums included."""
    benchmark.group = f"cache dir write {pages * 4} KiB of a 1 MiB block (page_checksums inside)"
    cache = CacheDir(str(tmp_path / "c"), volume_uuid=str(uuid.uuid4()), url="file:///nowhere",
                     block_size=MIB, limit=1 << 30)
    cache.attach(lambda data: b"", epoch=1)
    try:
        benchmark(cache.write, 5, RANDOM_BLOCK, 0, pages - 1)
        assert cache.holds(5)
    finally:
        cache.close()
