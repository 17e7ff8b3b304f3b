"""A read-only mount beside a live writer follows it (issue 13, item 5).

Both stores, real mounts: the read-only mount never answers EIO for data
that exists, even after the writer replaced and collected every block it
had read; it shows fsynced pages the writer has only logged so far; and
within its refresh interval it shows exactly what the writer last stored.
"""
from __future__ import annotations

import random
import time

from conftest import MiB, assert_file_matches, cold_read, pwrite_fsync

REFRESH_WAIT = 60  # seconds: several FOLLOW_SECONDS (10) intervals


def wait_for_refresh(bd, m, before: int) -> None:
    deadline = time.monotonic() + REFRESH_WAIT
    while bd.stats(m.path)["follow_refreshes"] <= before:
        assert time.monotonic() < deadline, "the read-only mount never took the writer's newer state"
        time.sleep(0.5)


def test_read_only_mount_follows_a_writer_that_replaces_every_block(bd):
    vol = bd.create(size="16M", block_size="64K")
    writer = bd.mount(vol)
    rng = random.Random(3)
    old = bytearray(vol.size)
    pwrite_fsync(writer.file, old, 0, rng.randbytes(8 * MiB))

    reader = bd.mount(vol, read_only=True, cache_size="1M")  # most blocks are not cached
    assert_file_matches(reader.file, old)

    new = bytearray(old)
    pwrite_fsync(writer.file, new, 0, rng.randbytes(8 * MiB))
    refreshes = bd.stats(reader.path)["follow_refreshes"]
    bd.unmount(writer)  # its final checkpoint deletes every block of `old`

    seen = cold_read(reader.file, 0, vol.size)  # no EIO: a block that has gone is looked up anew
    block = vol.block_size
    for i in range(0, vol.size, block):
        assert seen[i : i + block] in (old[i : i + block], new[i : i + block]), f"block {i // block} is neither"
    wait_for_refresh(bd, reader, refreshes)
    assert_file_matches(reader.file, new)
    bd.unmount(reader)


def test_read_only_mount_shows_pages_a_live_writer_only_logged(bd):
    vol = bd.create(size="16M", block_size="1M")
    writer = bd.mount(vol)
    rng = random.Random(4)
    model = bytearray(vol.size)
    pwrite_fsync(writer.file, model, 0, rng.randbytes(4 * MiB))
    for _ in range(10):  # small fsyncs: their pages go into journals, the blocks later
        pwrite_fsync(writer.file, model, rng.randrange(4 * MiB - 4096), rng.randbytes(100))
    assert bd.stats(writer.path)["fsync_log_pages"] > 0

    reader = bd.mount(vol, read_only=True)
    assert_file_matches(reader.file, model)
    bd.unmount(writer)
    assert_file_matches(reader.file, model)
    bd.unmount(reader)
    vol.assert_clean_layout()
