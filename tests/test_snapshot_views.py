"""Views of one snapshot stay that snapshot (from the second fresh
attacker): `mount --snapshot` never starts following the live disk, not
after the follow interval and not when the snapshot's blocks go; reading
snapshots never takes the live disk's cache room; the commands a snapshot
mount cannot serve say so.  On both stores."""
from __future__ import annotations

import errno
import os
import time

import pytest

from conftest import MiB, assert_cli_error, pwrite_fsync

FOLLOW_SECONDS = 10.0  # engine/volume/follow.py: how often a read-only view of the live disk looks again


def read_all(path) -> bytes:
    with open(path, "rb") as f:
        return f.read()


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
@pytest.mark.stores("file")  # following is the device's, whatever the store
def test_a_snapshot_mount_keeps_showing_its_snapshot(bd):
    vol = bd.create(size="4M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, os.urandom(2 * MiB))
    bd.ok("snapshot", "create", str(m.path), "--name", "s1")
    kept = bytes(model)
    view = bd.mount(vol, bd.tmp / "view", cache_size="128K", extra=["--snapshot", "s1"])  # two blocks
    assert read_all(view.file) == kept
    pwrite_fsync(m.file, model, 0, os.urandom(2 * MiB))  # the live disk moves on
    bd.ok("snapshot", "create", str(m.path), "--name", "s2")
    time.sleep(FOLLOW_SECONDS + 2)  # past the interval a live read-only view follows at
    with open(view.file, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        assert f.read() == kept, "the snapshot mount shows another disk than its snapshot"
    line = assert_cli_error(bd.run("snapshot", "diff", str(view.path), "s1", "live"))
    assert "alone" in line, line
    line = assert_cli_error(bd.run("gc", str(view.path)))
    assert "deletes nothing" in line, line

    bd.ok("snapshot", "delete", str(m.path), "s1")  # its blocks no other map names go
    with open(view.file, "rb", buffering=0) as f:
        os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
        with pytest.raises(OSError) as failed:  # what the view still caches may read back, the rest fails
            for offset in range(0, 2 * MiB, 64 << 10):
                assert os.pread(f.fileno(), 64 << 10, offset) == kept[offset:offset + (64 << 10)]
    assert failed.value.errno == errno.EIO  # never the live disk's data in its place
    bd.unmount(view)
    bd.unmount(m)


def test_reading_snapshots_never_takes_the_live_disks_room(bd):
    """A cache of four blocks: the live mount keeps writing and fsyncing
    while a snapshot file is read whole, again and again."""
    vol = bd.create(size="8M", block_size="1M")
    model = bytearray(vol.size)
    m = bd.mount(vol, cache_size="4M", extra=["--retry-time", "20"])
    pwrite_fsync(m.file, model, 0, os.urandom(vol.size))
    bd.ok("snapshot", "create", str(m.path), "--name", "old")
    old = bytes(model)
    pwrite_fsync(m.file, model, 0, os.urandom(vol.size))  # every block now differs from the snapshot's
    image = m.path / "snapshots" / "old" / "file"
    for round_ in range(3):
        with open(image, "rb", buffering=0) as f:
            os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
            assert f.read() == old
        pwrite_fsync(m.file, model, round_ * MiB, os.urandom(MiB))  # EIO here was the bug
    assert read_all(m.file) == bytes(model)
    bd.unmount(m)


@pytest.mark.stores("file")
@pytest.mark.parametrize("args, says", [
    (["--snapshot-every", "99999999999d"], "longer than a year"),
    (["--snapshot-every", "1h", "--keep-within", "99999999y"], "longer than 1000 years"),
])
def test_intervals_and_spans_past_any_calendar_are_refused(bd, args, says):
    vol = bd.create(size="4M", block_size="64K")
    (bd.tmp / "mp").mkdir()
    line = assert_cli_error(bd.run("mount", vol.url, str(bd.tmp / "mp"), *args))
    assert says in line, line
    assert not vol.has_lock()
    if "--keep-within" in args:
        line = assert_cli_error(bd.run("prune", vol.url, "--keep-within", "99999999y"))
        assert says in line, line


@pytest.mark.stores("file")
def test_a_snapshot_named_like_an_option_mounts(bd):
    vol = bd.create(size="4M", block_size="64K")
    bd.ok("snapshot", "create", vol.url, "--name=-y")
    view = bd.mount(vol, bd.tmp / "view", extra=["--snapshot=-y"])
    assert read_all(view.file) == bytes(vol.size)
    bd.unmount(view)
