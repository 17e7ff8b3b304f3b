"""The cache dir's dirty files, on a real file system, at the moments a
kill -9 can catch them (cachefiles.py): between a write's checksums and
its pages, and a write a full disk cut short."""
from __future__ import annotations

import os
import uuid

import pytest

from conftest import run
from bucketdisk.device.cachedir import CacheDir
from bucketdisk.codec._hot import page_checksums
from bucketdisk.device.cachefiles import Layout, read_dirty

BLOCK = 64 * 1024
PAGE = 4096


def open_dir(path) -> CacheDir:
    cache = CacheDir(str(path), volume_uuid=VOLUME, url="file:///nowhere", block_size=BLOCK, limit=1 << 30)
    cache.attach(lambda data: b"", epoch=1)
    return cache


VOLUME = str(uuid.uuid4())


def block_of(*pages: bytes) -> bytearray:
    data = bytearray(BLOCK)
    for n, page in enumerate(pages):
        data[n * PAGE : (n + 1) * PAGE] = page
    return data


def test_a_kill_between_a_writes_checksums_and_its_pages_keeps_the_write_before(tmp_path):
    cache = open_dir(tmp_path / "c")
    cache.write(3, block_of(b"A" * PAGE), 0, 0)
    cache.write(3, block_of(b"B" * PAGE), 0, 0)  # acknowledged
    # the next write, C, as a kill -9 leaves it: its checksums written, its page not
    layout = Layout(BLOCK, VOLUME)
    before = page_checksums(b"B" * PAGE, PAGE)  # the page's checksum in the file now
    _, _, pairs, _, pairs_at = layout.pages_of(block_of(b"C" * PAGE), 0, 0, before)
    fd = os.open(tmp_path / "c" / "dirty" / f"{3:016x}", os.O_WRONLY)
    os.pwrite(fd, pairs, pairs_at)
    os.close(fd)
    cache.close()
    found = read_dirty(str(tmp_path / "c" / "dirty" / f"{3:016x}"), layout, 3)
    assert found.held == 1 and found.torn == 0
    assert bytes(found.data[:PAGE]) == b"B" * PAGE, "the write acknowledged before the kill was lost"


def test_a_write_the_disk_cut_short_is_an_error_not_a_silent_loss(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=256k", "bdtest-small", small, timeout=60, check=True)
    try:
        cache = open_dir(small / "c")
        filler = small / "filler"
        with open(filler, "wb") as f:  # leave about three pages free
            try:
                while True:
                    f.write(b"x" * PAGE)
                    f.flush()
                    if os.statvfs(small).f_bavail * os.statvfs(small).f_frsize <= 3 * PAGE:
                        break
            except OSError:
                pass
        with pytest.raises(OSError):
            cache.write(5, block_of(*[bytes([n]) * PAGE for n in range(1, 9)]), 0, 7)
        cache.close()
    finally:
        run("umount", small, timeout=60, check=True)
