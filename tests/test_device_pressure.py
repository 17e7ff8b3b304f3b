"""The block device under pressure (issue 13), through real mounts.

- Fairness of the flush queue: a block rewritten every ~2 ms (a filesystem's
  superblock or journal head) never holds back the other dirty blocks, which
  are stored while it keeps being rewritten; and the hot block itself is
  still uploaded again and again, not never.  On both stores.
- Writers and readers waiting for cache room: with a tiny cache full of
  dirty blocks and the S3 server unreachable (a fault proxy that closes
  every connection), a write that needs a buffer gets EIO after
  --retry-time instead of hanging, and so does a read that needs one;
  nothing is dropped, and once the server is back the application's retry
  succeeds and every acknowledged byte reads back after a remount.  An
  outage shorter than --retry-time only makes the writer wait.
- Retries during an outage go round robin: the blocks that failed first do
  not take every attempt, so an fsync waiting on another one hears that it
  failed.  The outage tests are S3 only: as root, a file:// store cannot
  be made to fail.

The bounds below (`*_BOUND`, `HANG_GUARD`) are hang guards on correctness,
far above what the behaviour needs; none of them measures speed.
"""
from __future__ import annotations

import errno
import os
import random
import threading
import time

import blake3
import pytest

from conftest import KiB, assert_file_matches, cold_read, fsync_path, wait_until
from faultproxy import FaultProxy

PAGE = 4 * KiB
HOT_INTERVAL = 0.002     # seconds between rewrites of the hot block
STORED_BOUND = 10.0      # seconds: the other blocks must be stored by then (they are due after 0.2 s)
HOT_UPLOADS = 2          # distinct uploads of the hot block to see while it is being rewritten
HOT_UPLOAD_BOUND = 40.0  # seconds to see them (the device uploads a hot block every 5 s)
RETRY_TIME = 3           # --retry-time for the outage tests (seconds)
HANG_GUARD = 120.0       # seconds: a call expected to return (EIO or success) must have by then


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def block_key(content: bytes) -> str:
    """The object key of a block's content (FORMAT.md: BLAKE3-256 of the plaintext)."""
    digest = blake3.blake3(content).hexdigest()
    return f"blocks/{digest[:2]}/{digest}"


class HotWriter(threading.Thread):
    """Rewrites the first page of one block every HOT_INTERVAL seconds,
    without fsync, each time with a new counter, until stopped."""

    def __init__(self, path, block: int, block_size: int) -> None:
        super().__init__(name="hot-writer", daemon=True)
        self.path, self.offset = path, block * block_size
        self.count = 0
        self.last_page = b""
        self.error: BaseException | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        fd = os.open(self.path, os.O_WRONLY)
        try:
            while not self._halt.is_set():
                page = (b"hot %12d " % (self.count + 1)) * (PAGE // 17) + bytes(PAGE % 17)
                assert os.pwrite(fd, page, self.offset) == PAGE
                self.count += 1
                self.last_page = page
                time.sleep(HOT_INTERVAL)
        except BaseException as e:  # reported by the test
            self.error = e
        finally:
            os.close(fd)

    def stop(self) -> None:
        self._halt.set()
        self.join(HANG_GUARD)
        assert not self.is_alive(), "the hot writer hung"
        assert self.error is None, f"the hot writer failed: {self.error!r}"


class Outcome:
    """Runs `call` in a thread: `.value` or `.error` once it returns."""

    def __init__(self, call, *args) -> None:
        self.value = self.error = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(call, *args), daemon=True)
        self.thread.start()

    def _run(self, call, *args) -> None:
        try:
            self.value = call(*args)
        except BaseException as e:
            self.error = e
        finally:
            self.done.set()

    def wait(self, what: str) -> "Outcome":
        assert self.done.wait(HANG_GUARD), f"{what} hung: no answer within {HANG_GUARD:.0f} s"
        return self


def pwrite_at(path, data: bytes, offset: int) -> int:
    fd = os.open(path, os.O_WRONLY)
    try:
        return os.pwrite(fd, data, offset)
    finally:
        os.close(fd)


@pytest.fixture
def proxy(bd, janitor) -> FaultProxy:
    """A fault proxy in front of the session's SeaweedFS (s3 tests only);
    stopped after every mount of the test is gone."""
    assert bd.store.kind == "s3", "test bug: the proxy needs the s3 store"
    host, port = bd.store.server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    fault_proxy = FaultProxy(host, int(port)).start()
    janitor.push("stop fault proxy", fault_proxy.stop)
    return fault_proxy


def mount_through(bd, proxy: FaultProxy, vol, *, retry_time: float, cache_size: str = "512K",
                  threads: int = 2):
    """Mount talking to the store through `proxy` (the later --endpoint wins)
    with a tiny cache; the faults are cleared before the mount is cleaned up."""
    m = bd.mount(vol, cache_size=cache_size, threads=threads,
                 extra=("--endpoint", proxy.endpoint, "--retry-time", retry_time))
    bd.janitor.push("clear faults", proxy.clear)  # LIFO: runs before the unmount
    return m


def write_blocks(path, model: bytearray, blocks, block_size: int, rng: random.Random) -> None:
    for block in blocks:
        data = rng.randbytes(block_size)
        assert pwrite_at(path, data, block * block_size) == block_size
        model[block * block_size:(block + 1) * block_size] = data


# --------------------------------------------------------------------------
# 1. a hot block holds back no other block, and is still uploaded itself
# --------------------------------------------------------------------------

@pytest.mark.stores("file")  # the device's order of uploads: the store plays no part
def test_hot_block_holds_back_no_other_block_and_is_still_uploaded(bd):
    vol = bd.create(size="64M", block_size="64K")
    bs = vol.block_size
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(13)
    hot = HotWriter(m.file, 0, bs)
    hot.start()
    try:
        # the hot block is dirty (first in line) before the others come
        assert wait_until(lambda: hot.count >= 50 or hot.error is not None, HANG_GUARD), "hot writer stuck"
        others = range(1, 101)
        write_blocks(m.file, model, others, bs, rng)
        wanted = {block_key(bytes(model[b * bs:(b + 1) * bs])) for b in others}
        assert len(wanted) == 100
        rewrites_before = hot.count

        stored = wait_until(lambda: wanted <= vol.object_keys(), STORED_BOUND)
        missing = len(wanted - vol.object_keys())
        assert stored, f"{missing} of 100 written blocks not stored after {STORED_BOUND:.0f} s behind a hot block"
        assert hot.is_alive() and hot.count > rewrites_before, "the hot block was not being rewritten meanwhile"
        assert bd.stats(m.path)["dirty_blocks"] <= 1  # at most the hot block

        # the hot block never goes quiet, yet new versions of it keep being stored
        def hot_versions() -> set[str]:
            return vol.object_keys() - wanted

        seen = hot_versions()
        assert wait_until(lambda: len(hot_versions() - seen) >= HOT_UPLOADS, HOT_UPLOAD_BOUND, 0.5), \
            f"the hot block was stored {len(hot_versions() - seen)} times in {HOT_UPLOAD_BOUND:.0f} s " \
            "while being rewritten"
        assert hot.is_alive() and hot.error is None
    finally:
        hot.stop()
    model[0:PAGE] = hot.last_page
    fsync_path(m.file)  # may log the hot page rather than upload the block (see the fsync log)
    assert wait_until(lambda: bd.stats(m.path)["dirty_blocks"] == 0, STORED_BOUND), \
        "the hot block was not stored once it went quiet"
    m = bd.remount(m)
    assert_file_matches(m.file, model)


# --------------------------------------------------------------------------
# 2. waiting for cache room while the store is down
# --------------------------------------------------------------------------

@pytest.mark.stores("s3")
def test_writer_and_reader_waiting_for_room_get_eio_then_nothing_is_lost(bd, proxy):
    vol = bd.create(size="64M", block_size="64K")
    bs = vol.block_size
    m = mount_through(bd, proxy, vol, retry_time=RETRY_TIME)
    limit = bd.stats(m.path)["cache_limit_blocks"]
    assert limit == 8, f"test bug: expected an 8-block cache, got {limit}"
    model = bytearray(vol.size)
    rng = random.Random(2)
    before = range(0, 4)
    write_blocks(m.file, model, before, bs, rng)
    fsync_path(m.file)  # stored: evictable from here on
    errors_before = bd.stats(m.path)["errors"]

    proxy.set_faults(down=True)
    acked, failed = [], None
    for block in range(16, 16 + 3 * limit):  # far more than the cache holds
        data = rng.randbytes(bs)
        attempt = Outcome(pwrite_at, m.file, data, block * bs).wait(f"write of block {block} with a full cache")
        if attempt.error is not None:
            failed = (block, data, attempt.error)
            break
        assert attempt.value == bs
        model[block * bs:(block + 1) * bs] = data
        acked.append(block)
    assert failed is not None, f"{len(acked)} blocks written into a {limit}-block cache with the store down"
    assert isinstance(failed[2], OSError) and failed[2].errno == errno.EIO, failed[2]
    assert acked, "no write was acknowledged into the cache at all"
    st = bd.stats(m.path)
    assert st["errors"] > errors_before, st
    assert st["dirty_blocks"] == len(acked), st  # every acknowledged block kept, none stored

    # a read that needs a buffer (a stored block, evicted since) fails the same way
    read = Outcome(cold_read, m.file, before[0] * bs, bs).wait("a cold read with a full cache")
    assert isinstance(read.error, OSError) and read.error.errno == errno.EIO, (read.value is not None, read.error)
    assert bd.stats(m.path)["dirty_blocks"] == len(acked)

    proxy.clear()  # the store is back: the application's retries succeed
    block, data, _ = failed
    retried = Outcome(pwrite_at, m.file, data, block * bs).wait("the write retried after the outage")
    assert retried.error is None and retried.value == bs, retried.error
    model[block * bs:(block + 1) * bs] = data
    assert cold_read(m.file, before[0] * bs, bs) == bytes(model[before[0] * bs:(before[0] + 1) * bs])
    synced = Outcome(fsync_path, m.file).wait("fsync after the outage")
    assert synced.error is None, synced.error
    assert bd.stats(m.path)["dirty_blocks"] == 0
    bd.unmount(m)
    m = bd.mount(vol)  # straight to the server
    assert_file_matches(m.file, model)


@pytest.mark.stores("s3")
def test_writer_waiting_for_room_through_a_short_outage_only_waits(bd, proxy):
    """An outage shorter than --retry-time: the writer blocks while the
    cache is full, then goes on once uploads succeed again; no EIO."""
    vol = bd.create(size="64M", block_size="64K")
    bs = vol.block_size
    m = mount_through(bd, proxy, vol, retry_time=60)
    limit = bd.stats(m.path)["dirty_limit_blocks"]  # the rest of the cache is room for an upload
    model = bytearray(vol.size)
    rng = random.Random(3)
    blocks = range(0, 2 * limit)
    proxy.set_faults(down=True)
    writer = Outcome(write_blocks, m.file, model, blocks, bs, rng)
    full = wait_until(lambda: bd.stats(m.path)["dirty_blocks"] >= limit, HANG_GUARD)
    assert full, "the cache never filled with the store down"
    time.sleep(1.0)  # give a wrong implementation the chance to fail the writer early
    assert not writer.done.is_set(), f"the writer finished with a full cache and the store down: {writer.error!r}"

    proxy.clear()
    writer.wait("the writer after the store came back")
    assert writer.error is None, writer.error
    fsync_path(m.file)
    st = bd.stats(m.path)
    assert st["dirty_blocks"] == 0 and st["errors"] == 0, st  # the outage was waited out, never reported
    bd.unmount(m)
    m = bd.mount(vol)
    assert_file_matches(m.file, model)


@pytest.mark.stores("s3")
def test_every_dirty_block_gets_its_turn_during_an_outage(bd, proxy):
    """More dirty blocks than flush threads, the store down: fsync waits for
    a new attempt at its first block to fail, and gets EIO because failed
    blocks go back behind the others instead of being retried forever first."""
    vol = bd.create(size="64M", block_size="64K")
    bs = vol.block_size
    m = mount_through(bd, proxy, vol, retry_time=1, cache_size="32M", threads=2)
    model = bytearray(vol.size)
    proxy.set_faults(down=True)
    # the lowest block, the one fsync waits for first, is written (and due) last
    write_blocks(m.file, model, range(5, -1, -1), bs, random.Random(4))
    synced = Outcome(fsync_path, m.file).wait("fsync during an outage")
    assert isinstance(synced.error, OSError) and synced.error.errno == errno.EIO, synced.error
    assert bd.stats(m.path)["dirty_blocks"] == 6

    proxy.clear()
    synced = Outcome(fsync_path, m.file).wait("fsync after the outage")
    assert synced.error is None, synced.error
    bd.unmount(m)
    m = bd.mount(vol)
    assert_file_matches(m.file, model)
