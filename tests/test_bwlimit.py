"""--bwlimit and --bwlimit-down: the bandwidth caps of a store, file:// and
s3:// alike (engine/store/bwlimit.py), through a real FUSE mount.

What is proved:
- a 64 MiB upload at --bwlimit 16M takes 4 s within 15% (the one measured
  bound the issue asks for), timed as an application sees it: from its
  first write into the mounted file to the return of its fsync, which
  returns once every byte is stored; the mount counts the time its
  uploads waited (bwlimit_up_wait_ms);
- --bwlimit-down makes reads wait too (bwlimit_down_wait_ms) and what is
  read is what was written;
- a rate of 0, a negative one, nan, a fraction of a byte or one under 16K
  is refused in one line, before anything is made;
- the lease never waits on the cap: a mount at a low --bwlimit with a
  backlog of 8 MiB of blocks (32 s of uploads) renews its lease on time,
  while blocks are still owed, and a small write fsynced behind the
  backlog succeeds.
"""
from __future__ import annotations

import json
import os
import time

import pytest

from conftest import MiB, assert_cli_error, assert_file_matches, wait_until
from bucketdisk.volume.lock import RENEW_SECONDS

UPLOAD = 64 * MiB
RATE = 16 * MiB  # --bwlimit 16M
EXPECTED = UPLOAD / RATE  # seconds


def test_upload_of_64_mib_at_16m_takes_4_seconds(bd):
    vol = bd.create(size="128M", block_size="1M")
    m = bd.mount(vol, cache_size="160M", threads=8, extra=("--bwlimit", "16M"))
    data = os.urandom(UPLOAD)  # random: zstd cannot shrink it, so every byte is uploaded
    fd = os.open(m.file, os.O_WRONLY)
    try:
        started = time.monotonic()
        for offset in range(0, UPLOAD, MiB):
            os.pwrite(fd, data[offset : offset + MiB], offset)
        os.fsync(fd)
        took = time.monotonic() - started
        print(f"[{bd.store.kind}] 64 MiB at --bwlimit 16M: {took:.2f} s from the first write to fsync's return")
    finally:
        os.close(fd)
    stats = bd.stats(m.path)
    assert stats["bytes_put"] >= UPLOAD, stats
    assert abs(took - EXPECTED) <= 0.15 * EXPECTED, f"64 MiB at 16 MiB/s took {took:.2f} s, not 4 s +-15%"
    assert stats["bwlimit_up_wait_ms"] > 0, stats
    bd.unmount(m)

    model = bytearray(vol.size)
    model[:UPLOAD] = data
    m = bd.mount(vol, cache_size="8M", threads=4, read_only=True, extra=("--bwlimit-down", "8M"))
    assert_file_matches(m.file, model)
    stats = bd.stats(m.path)
    assert stats["bwlimit_down_wait_ms"] > 0 and stats["bwlimit_up_wait_ms"] == 0, stats
    bd.unmount(m)


def test_bad_rates_are_refused_in_one_line(bd):
    place = bd.new_place()
    for rate in ("0", "-1M", "nan", "0.5", "16X", "", "15K", "16383"):
        for option in ("--bwlimit", "--bwlimit-down"):
            proc = bd.run("create", place.url, "--size", "64M", option, rate, *place.args)
            line = assert_cli_error(proc)
            assert "rate" in line and option in line, line
    assert bd.run("info", place.url, *place.args).returncode != 0, "a refused create made a volume"


def _lease_expires(vol) -> float:
    return json.loads(vol.lock_bytes())["expires"]


@pytest.mark.stores("file")  # the cap and the lease's way past it are the same on every store (RateLimited)
def test_the_lease_is_renewed_past_the_cap(bd):
    vol = bd.create(size="64M", block_size="1M")
    backlog = 8 * MiB  # 32 s of uploads at 256K/s
    m = bd.mount(vol, cache_size="32M", threads=8, extra=("--bwlimit", "256K"))
    mounted = time.monotonic()
    first = _lease_expires(vol)
    fd = os.open(m.file, os.O_WRONLY)
    try:
        os.pwrite(fd, os.urandom(backlog), 0)  # random: every byte is uploaded
        assert wait_until(lambda: _lease_expires(vol) > first, RENEW_SECONDS + 5, interval=0.2), \
            f"no lease renewal within {RENEW_SECONDS + 5:.0f} s of mounting behind {backlog >> 20} MiB at 256K/s"
        renewed = time.monotonic() - mounted
        owed = backlog - bd.stats(m.path)["bytes_put"]
        print(f"lease renewed {renewed:.1f} s after mounting, {owed / MiB:.1f} MiB of blocks still owed")
        assert owed > 0, "the backlog was gone before the renewal: the test proves nothing"
        os.pwrite(fd, b"x" * 4096, backlog + MiB)
        os.fsync(fd)  # waits for the backlog; a lease left to lapse would make it EIO
    finally:
        os.close(fd)
    stats = bd.stats(m.path)
    assert stats["bytes_put"] >= backlog and stats["bwlimit_up_wait_ms"] > 0, stats
    bd.unmount(m)
