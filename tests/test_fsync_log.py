"""The fsync log: an fsync of a few changed pages writes those pages into one
journal object instead of uploading every block it dirtied, and a mount after
a crash merges them back into their blocks.

Each test kills the daemon with SIGKILL right after fsyncs (before the dirty
blocks could be uploaded) and checks, through a fresh writable mount, that
every fsynced byte is there, on both stores; and that content uploaded after
a page was logged is never rolled back to the older logged page."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest

from conftest import KiB, MiB, assert_file_matches, wait_pid_gone
from test_mount import open_rw, write_model

PAGE = 4 * KiB


def stats_now(m) -> dict[str, str]:
    """The mount's counters read straight from its `stats` file: no CLI to
    start, so a kill that follows comes before the blocks' LOGGED_DELAY
    (2 s) ends even on a loaded machine."""
    return dict(line.split(": ", 1) for line in m.stats_file.read_text().splitlines() if ": " in line)


def kill_daemon(bd, m) -> None:
    pid = m.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_pid_gone(pid), f"daemon {pid} did not die after SIGKILL"
    proc = bd.run("unmount", m.path, timeout=120)
    assert proc.returncode == 0, proc.stderr


def settled_snapshot(vol) -> dict:
    """The volume's objects once the server has finished the requests a
    killed daemon left in flight (a PUT sent whole may land after the kill)."""
    snapshot = vol.snapshot()
    for _ in range(40):
        time.sleep(0.5)
        again = vol.snapshot()
        if again == snapshot:
            return snapshot
        snapshot = again
    raise AssertionError("the volume kept changing after its daemon was killed")


def small_writes(fd: int, model: bytearray, rng: random.Random, count: int, end: int) -> None:
    for _ in range(count):
        off = rng.randrange(end - PAGE)
        write_model(fd, model, off, rng.randbytes(rng.choice((1, 512, 3000, PAGE))))


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_small_fsyncs_are_logged_and_merged_after_kill9(bd):
    vol = bd.create(size="64M", block_size="1M")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(7)
    fd = open_rw(m)
    try:
        write_model(fd, model, 0, rng.randbytes(16 * MiB))  # whole blocks: uploaded, not logged
        os.fsync(fd)
        assert bd.stats(m.path)["fsync_log_pages"] == 0
        for _ in range(20):
            small_writes(fd, model, rng, 64, vol.size)
            os.fsync(fd)
    finally:
        os.close(fd)
    assert int(stats_now(m)["fsync_log_pages"]) > 0
    kill_daemon(bd, m)

    before = settled_snapshot(vol)
    assert bd.info(vol)["unmerged_pages"] > 0
    m = bd.mount(vol, m.path, read_only=True)  # merges the logged pages in memory only
    assert_file_matches(m.file, model)
    bd.unmount(m)
    assert vol.snapshot() == before, "a read-only mount changed the volume"

    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)
    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout()
    assert bd.info(vol)["unmerged_pages"] == 0


def test_content_uploaded_after_a_logged_page_is_not_rolled_back(bd):
    vol = bd.create(size="16M", block_size="1M")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(8)
    fd = open_rw(m)
    try:
        write_model(fd, model, 5 * MiB + 100, rng.randbytes(2000))  # page logged by this fsync
        os.fsync(fd)
        logged = bd.stats(m.path)["fsync_log_pages"]
        assert logged > 0
        write_model(fd, model, 5 * MiB + 100, rng.randbytes(2000))  # newer, never fsynced...
        journals = bd.stats(m.path)["journal_writes"]
        deadline = time.monotonic() + 30
        while True:  # ...but uploaded and journalled by the background sync
            st = bd.stats(m.path)
            if st["dirty_blocks"] == 0 and st["journal_writes"] > journals:
                break
            assert time.monotonic() < deadline, f"background flush did not happen: {st}"
            time.sleep(0.2)
    finally:
        os.close(fd)
    kill_daemon(bd, m)
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)


def test_checkpoints_while_pages_are_logged_keep_them(bd):
    """More fsyncs than a checkpoint interval (64 journals), the blocks
    uploaded now and then under continuous small writes, then a crash."""
    vol = bd.create(size="32M", block_size="1M")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(9)
    fd = open_rw(m)
    try:
        for round_ in range(150):
            small_writes(fd, model, rng, 8, vol.size)
            os.fsync(fd)
            if round_ % 50 == 49:
                time.sleep(0.5)  # let some blocks go up whole in between
    finally:
        os.close(fd)
    st = bd.stats(m.path)
    assert st["checkpoints"] > 0 and st["fsync_log_pages"] > 0, st
    kill_daemon(bd, m)
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout()


def test_an_fsync_costs_no_lease_request(bd):
    """Acknowledging an fsync needs proof that no other mount took the
    volume; a recent look for a successor lease (the renewer's, every 15 s)
    is that proof, so a run of fsyncs sends no HEAD of its own (it sent one
    each before).  Each fsync still stores one journal."""
    vol = bd.create(size="16M", block_size="64K")
    m = bd.mount(vol)
    before = bd.stats(m.path)
    rng = random.Random(7)
    model = bytearray(vol.size)
    fd = open_rw(m)
    try:
        for i in range(40):
            offset = rng.randrange(0, vol.size // PAGE) * PAGE
            data = rng.randbytes(PAGE)
            os.pwrite(fd, data, offset)
            os.fsync(fd)
            model[offset : offset + PAGE] = data
    finally:
        os.close(fd)
    after = bd.stats(m.path)
    journals = after["journal_writes"] - before["journal_writes"]
    heads = after["objects_headed"] - before["objects_headed"]
    assert journals >= 40, (before, after)
    # a lease renewal may fall inside the run: it looks twice
    assert heads <= 4, f"{heads} HEADs for 40 fsyncs"
    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)
