"""A read-only mount whose volume is replaced or deleted fails its reads.

`create --force` at a volume's URL wipes it and writes a new record (a new
UUID); it does not see a read-only mount of the old volume, which holds no
lease.  Before, such a mount went on showing zeros (the new volume's map,
read as its own) for good.  Both stores, real mounts, reads with O_DIRECT
so that each one reaches the daemon: until the mount notices, a read
shows the old disk's content or fails, never the new volume's data or
zeros; once it has noticed (`stats`: replaced 1, one line in its log
naming the URL), every read of `file` fails with EIO, blocks it had
cached and served from libfuse's threads (the fast path) too.  It unmounts
cleanly, and a mount made afresh shows the new volume.
"""
from __future__ import annotations

import errno
import os
import random
import time

import pytest

from conftest import MiB, assert_file_matches, pwrite_fsync, s3_request
from test_fast_reads import direct_read

NOTICE_WAIT = 60  # seconds: several FOLLOW_SECONDS (10) intervals


def read_or_errno(path, offset: int, length: int) -> bytes | int:
    """The bytes at `offset` read straight from the daemon, or the errno
    the read failed with."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECT)
    try:
        return direct_read(fd, offset, length)
    except OSError as e:
        return e.errno
    finally:
        os.close(fd)


def delete_volume(vol) -> None:
    """Delete every object of the volume, the record first (as create
    --force does), behind bucketdisk's back."""
    for key in sorted(vol.keys(), key=lambda k: k != "volume"):
        if vol.kind == "file":
            (vol.path / key).unlink()
        else:
            place = vol.place
            r = s3_request(place.server, "DELETE", place.bucket, f"{place.prefix}/{key}")
            assert r.status_code in (200, 204), f"DELETE {vol.url}/{key}: {r.status_code} {r.text[:300]}"
    assert not vol.keys()


def wait_until_replaced(bd, m) -> None:
    deadline = time.monotonic() + NOTICE_WAIT
    while bd.stats(m.path)["replaced"] != 1:
        assert time.monotonic() < deadline, "the read-only mount never noticed that its volume had gone"
        time.sleep(0.5)


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_a_read_only_mount_fails_every_read_once_its_volume_is_gone(bd, how):
    vol = bd.create(size="16M", block_size="64K")
    block = vol.block_size
    writer = bd.mount(vol)
    rng = random.Random(6)
    old = bytearray(vol.size)
    pwrite_fsync(writer.file, old, 0, rng.randbytes(vol.size))  # no block of zeros
    bd.unmount(writer)

    reader = bd.mount(vol, read_only=True, cache_size="1M")  # 16 of the 256 blocks at most
    assert_file_matches(reader.file, old)
    cached = vol.size - block  # read last: still cached
    hits = bd.stats(reader.path)["fast_path_hits"]
    for _ in range(2):  # the first hit publishes it; the second is served by libfuse's threads
        assert read_or_errno(reader.file, cached, block) == old[cached:]
    assert bd.stats(reader.path)["fast_path_hits"] > hits
    assert bd.stats(reader.path)["replaced"] == 0

    if how == "replaced":
        bd.ok("create", vol.url, "--size", "16M", "--block-size", "64K", "--force", *vol.store_args)
        new_writer = bd.mount(vol)
        new = bytearray(vol.size)
        pwrite_fsync(new_writer.file, new, 0, rng.randbytes(vol.size))
        bd.unmount(new_writer)
    else:
        delete_volume(vol)

    # Until it notices: the old disk's bytes (a block it still holds or
    # finds), or EIO; never the new volume's, never zeros.
    for offset in range(0, vol.size, block):
        seen = read_or_errno(reader.file, offset, block)
        assert seen in (old[offset : offset + block], errno.EIO), \
            f"block {offset // block}: {'errno ' + str(seen) if isinstance(seen, int) else 'other bytes'}"
    wait_until_replaced(bd, reader)

    for offset in range(0, vol.size, block):
        assert read_or_errno(reader.file, offset, block) == errno.EIO, f"block {offset // block} was read"
    assert read_or_errno(reader.file, cached, block) == errno.EIO, "the fast path served a block"
    assert read_or_errno(reader.file, 0, 4 * MiB) == errno.EIO

    said = [line for line in reader.log.read_text().splitlines() if f"the volume at {vol.url} was " in line]
    assert len(said) == 1, f"expected one line saying so in the log, got {said}"
    assert ("was replaced by another volume" if how == "replaced" else "was deleted") in said[0], said[0]
    assert "EIO" in said[0] and "unmount it, and mount again" in said[0], said[0]

    bd.unmount(reader)
    if how == "replaced":
        again = bd.mount(vol, read_only=True)
        assert_file_matches(again.file, new)
        bd.unmount(again)
    else:
        assert not vol.keys(), "the read-only mount wrote into the place"
