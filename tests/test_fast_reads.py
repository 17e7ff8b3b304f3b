"""Reads served by libfuse's threads from the block table, without Python.

A clean cached block is published to a C table once Python has served a
read of it; later reads of it never reach Python (stats: fast_path_hits).
These tests check that such reads stay exact while the same blocks are
written, flushed, evicted and published again.  Reads use O_DIRECT so
each one reaches the daemon instead of the kernel's page cache.
"""
from __future__ import annotations

import mmap
import os
import random
import threading
import time

from conftest import KiB, wait_until_clean

BLOCK = 64 * KiB


def direct_read(fd: int, offset: int, length: int) -> bytes:
    buf = mmap.mmap(-1, length)  # page-aligned, as O_DIRECT wants
    try:
        assert os.preadv(fd, [buf], offset) == length
        return bytes(buf)
    finally:
        buf.close()


def direct_write(fd: int, offset: int, data: bytes) -> None:
    buf = mmap.mmap(-1, len(data))
    try:
        buf.write(data)
        assert os.pwritev(fd, [buf], offset) == len(data)
    finally:
        buf.close()


def fast_hits(bd, m) -> int:
    return int(bd.stats(m.path)["fast_path_hits"])


def test_fast_reads_see_every_write(bd):
    """Publish, read from the table, write (withdraw), read the new bytes:
    round after round on the same blocks, with reads inside one block and
    across block edges."""
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    rng = random.Random(7)
    blocks = 16
    model = bytearray(rng.randbytes(blocks * BLOCK))
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    direct_write(fd, 0, bytes(model))
    os.close(fd)
    m = bd.remount(m)  # the first round publishes buffers fetched from the store
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    try:
        for round_ in range(4):
            wait_until_clean(bd, m)
            for b in range(blocks):  # Python serves these and publishes the blocks
                assert direct_read(fd, b * BLOCK, 4 * KiB) == model[b * BLOCK : b * BLOCK + 4 * KiB]
            before = fast_hits(bd, m)
            for _ in range(64):
                off = rng.randrange(0, blocks * BLOCK - 16 * KiB, 4 * KiB)
                size = rng.choice((4 * KiB, 16 * KiB))
                assert direct_read(fd, off, size) == model[off : off + size], f"round {round_}: stale read at {off}"
            assert fast_hits(bd, m) >= before + 64, "warm reads did not take the fast path"
            # change a page in every other block; each read right after must see it
            for b in range(round_ % 2, blocks, 2):
                off = b * BLOCK + rng.randrange(0, BLOCK, 4 * KiB)
                page = rng.randbytes(4 * KiB)
                direct_write(fd, off, page)
                model[off : off + len(page)] = page
                assert direct_read(fd, off, 4 * KiB) == page, f"round {round_}: read after write at {off} is stale"
                edge = (b + 1) * BLOCK - 4 * KiB if b + 1 < blocks else b * BLOCK
                assert direct_read(fd, edge, 8 * KiB) == model[edge : edge + 8 * KiB]
        os.fsync(fd)
    finally:
        os.close(fd)
    m = bd.remount(m)
    fd = os.open(m.file, os.O_RDONLY | os.O_DIRECT)
    try:
        assert direct_read(fd, 0, blocks * BLOCK) == model
    finally:
        os.close(fd)


def test_fast_reads_stay_exact_while_the_cache_evicts(bd):
    """A cache of 16 blocks over 96 distinct ones: published blocks are
    evicted (withdrawn) and fetched again all the time, by four reader
    threads at once, while a writer keeps changing blocks of its own."""
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol, cache_size="1M", threads=2)
    rng = random.Random(11)
    blocks, written = 96, range(80, 96)
    model = bytearray(rng.randbytes(blocks * BLOCK))
    fd = os.open(m.file, os.O_RDWR | os.O_DIRECT)
    errors: list[str] = []

    def reader(seed: int) -> None:
        r = random.Random(seed)
        for step in range(400):
            # half the reads on a hot set that stays published, half cycling through the rest
            b = r.randrange(8) if step % 2 else r.randrange(written.start)
            off = b * BLOCK + r.randrange(0, BLOCK, 4 * KiB)
            if direct_read(fd, off, 4 * KiB) != model[off : off + 4 * KiB]:
                errors.append(f"reader {seed} step {step}: wrong bytes at {off}")
                return

    def writer() -> None:
        r = random.Random(99)
        for step in range(100):
            off = r.choice(written) * BLOCK + r.randrange(0, BLOCK, 4 * KiB)
            page = r.randbytes(4 * KiB)
            direct_write(fd, off, page)
            model[off : off + len(page)] = page
            if direct_read(fd, off, 4 * KiB) != page:
                errors.append(f"writer step {step}: read after write at {off} is stale")
                return

    try:
        direct_write(fd, 0, bytes(model))
        os.fsync(fd)
        wait_until_clean(bd, m)

        # published, evicted, then written while out of the cache
        for b in list(written) * 2:
            assert direct_read(fd, b * BLOCK, 4 * KiB) == model[b * BLOCK : b * BLOCK + 4 * KiB]
        for b in range(16, 64):
            assert direct_read(fd, b * BLOCK, 4 * KiB) == model[b * BLOCK : b * BLOCK + 4 * KiB]
        for b in written:
            page = rng.randbytes(4 * KiB)
            direct_write(fd, b * BLOCK, page)
            model[b * BLOCK : b * BLOCK + 4 * KiB] = page
            assert direct_read(fd, b * BLOCK, 4 * KiB) == page, f"block {b}: stale after eviction and write"
        os.fsync(fd)
        wait_until_clean(bd, m)

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        threads.append(threading.Thread(target=writer))
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        assert not errors, errors
        assert fast_hits(bd, m) > 0
        assert int(bd.stats(m.path)["cached_blocks"]) <= 16
        os.fsync(fd)
        assert direct_read(fd, 0, blocks * BLOCK) == model
    finally:
        os.close(fd)
