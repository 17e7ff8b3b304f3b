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
- a rate of 0, a negative one, nan or a fraction of a byte is refused in one
  line, before anything is made.
"""
from __future__ import annotations

import os
import time

from conftest import MiB, assert_cli_error, assert_file_matches

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
    for rate in ("0", "-1M", "nan", "0.5", "16X", ""):
        for option in ("--bwlimit", "--bwlimit-down"):
            proc = bd.run("create", place.url, "--size", "64M", option, rate, *place.args)
            line = assert_cli_error(proc)
            assert "rate" in line and option in line, line
    assert bd.run("info", place.url, *place.args).returncode != 0, "a refused create made a volume"
