"""What bucketdisk says when something went wrong: true, one line, and
naming what the user needs (real mounts, real stores).

1. `unmount` of a mount whose daemon was killed (before the unmount, or
   while the unmount was storing its data): the daemon is gone, fsynced
   data is safe in the store, writes not fsynced may be lost, and whether
   the stale mountpoint was cleaned up; never "kept in memory".
2. `unmount` that cannot store everything says how much it holds unsaved,
   and only when it holds any.
3. A file:// store whose disk is full: the line says so, names the
   directory, and says what happens to the writes (kept in memory and
   retried until there is space; waits for cache room bounded by
   --retry-time); nothing is lost once there is space again.
4. After a `create --force` killed partway, the next command's hint is the
   `create` that works there (with --force), and it does.

(The SeaweedFS harness reusing its ports is in test_seaweedfs_harness.py.)
"""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import time

import pytest

from conftest import (
    CLI,
    FilePlace,
    KiB,
    MiB,
    Mount,
    assert_cli_error,
    assert_file_matches,
    is_mounted,
    pid_alive,
    pwrite_fsync,
    run,
    umount_path,
    wait_pid_gone,
    wait_until,
)
from faultproxy import FaultProxy

once = pytest.mark.stores("file")
s3_only = pytest.mark.stores("s3")
RETRY_TIME = 3      # --retry-time of the outage tests (seconds)
CONFIRM_SECONDS = 20  # lock.py: a mount asks the store again before acknowledging after this long
SYSCALL_FSYNC = "74"  # x86_64


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

@pytest.fixture
def proxy(bd, janitor) -> FaultProxy:
    """A fault proxy in front of the session's SeaweedFS (s3 tests only),
    stopped after every mount of the test is gone."""
    host, port = bd.store.server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    fault_proxy = FaultProxy(host, int(port)).start()
    janitor.push("stop fault proxy", fault_proxy.stop)
    return fault_proxy


def assert_fsynced_part_back(bd, vol, path, model: bytearray) -> None:
    """Remount at `path`: the first 200 KiB, written and fsynced, are there."""
    m = bd.mount(vol, path)
    fd = os.open(m.file, os.O_RDONLY)
    try:
        assert os.pread(fd, 200 * KiB, 0) == model[:200 * KiB]
    finally:
        os.close(fd)


def mount_through(bd, proxy: FaultProxy, vol, retry_time: float = RETRY_TIME):
    """Mount talking to the store through `proxy` (the later --endpoint wins);
    the faults are cleared before the mount is cleaned up."""
    m = bd.mount(vol, extra=("--endpoint", proxy.endpoint, "--retry-time", retry_time))
    bd.janitor.push("clear faults", proxy.clear)  # LIFO: runs before the unmount
    return m


def pwrite(path, data: bytes, offset: int) -> None:
    """A write acknowledged into the mount's cache, not fsynced."""
    fd = os.open(path, os.O_WRONLY)
    try:
        assert os.pwrite(fd, data, offset) == len(data)
    finally:
        os.close(fd)


def in_fsync(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/syscall") as f:
            return f.read().split(" ", 1)[0] == SYSCALL_FSYNC
    except OSError:
        return False


def assert_says_daemon_is_gone(line: str, path) -> None:
    assert str(path) in line, line
    assert "died" in line and "safe in the store" in line and "not fsynced may be lost" in line, line
    assert "the stale mountpoint is unmounted" in line, line
    assert "kept in memory" not in line and "stays mounted" not in line, line


# --------------------------------------------------------------------------
# 1. the daemon was killed
# --------------------------------------------------------------------------

@once
def test_unmount_after_the_daemon_was_killed_says_it_is_gone(bd):
    vol = bd.create(size="16M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, random.randbytes(200 * KiB))
    pwrite(m.file, random.randbytes(300 * KiB), 4 * MiB)
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid)

    proc = bd.run("unmount", m.path)
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr  # cleaning up is a success
    lines = proc.stdout.splitlines()
    assert len(lines) == 1, proc.stdout
    assert "had died" in lines[0], lines[0]
    assert_says_daemon_is_gone(lines[0], m.path)
    assert not is_mounted(m.path)

    assert_fsynced_part_back(bd, vol, m.path, model)


@s3_only
def test_unmount_whose_daemon_is_killed_while_storing_says_it_is_gone(bd, proxy):
    """The store is down, so the unmount waits in its fsync; the daemon is
    killed then.  The unmount fails in one line that says so, with what the
    daemon held when the unmount began, and cleans the mountpoint up."""
    vol = bd.create(size="16M", block_size="64K")
    m = mount_through(bd, proxy, vol, retry_time=120)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, random.randbytes(200 * KiB))
    proxy.set_faults(down=True)
    pwrite(m.file, random.randbytes(300 * KiB), 4 * MiB)
    held = bd.stats(m.path)["unsaved_blocks"]
    assert held >= 4, held

    unmount = subprocess.Popen([str(CLI), "unmount", str(m.path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=bd.env)
    try:
        assert wait_until(lambda: in_fsync(unmount.pid), 60), "unmount never reached its fsync"
        assert unmount.poll() is None
        os.kill(m.pid, signal.SIGKILL)
        assert wait_pid_gone(m.pid)
        out, err = unmount.communicate(timeout=60)
    finally:
        if unmount.poll() is None:
            unmount.kill()
            unmount.wait()
    line = assert_cli_error(subprocess.CompletedProcess(unmount.args, unmount.returncode, out, err))
    assert_says_daemon_is_gone(line, m.path)
    assert f"pid {m.pid}" in line and f"({held} blocks)" in line and "not stored yet" in line, line
    assert not is_mounted(m.path)

    proxy.clear()
    assert_fsynced_part_back(bd, vol, m.path, model)


# --------------------------------------------------------------------------
# 2. unsaved data: said only when there is some, with how much
# --------------------------------------------------------------------------

@s3_only
def test_unmount_names_unsaved_data_only_when_there_is_some(bd, proxy):
    vol = bd.create(size="16M", block_size="64K")
    m = mount_through(bd, proxy, vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, random.randbytes(MiB))
    proxy.set_faults(down=True)
    # the mount asks the store before acknowledging once its last look is
    # CONFIRM_SECONDS old: with nothing to store, only that can fail
    time.sleep(CONFIRM_SECONDS + 1)
    stats = bd.stats(m.path)
    assert stats["dirty_blocks"] == 0 and stats["unsaved_blocks"] == 0 and stats["unsaved_bytes"] == 0, stats

    line = assert_cli_error(bd.run("unmount", m.path))
    assert "stays mounted" in line and "every write is in the store" in line, line
    assert "cannot reach" in line, line  # the store's own words
    for claim in ("unsaved", "not stored yet", "in memory"):
        assert claim not in line.replace(str(m.path), "MP"), line  # (the test's own name says unsaved)
    assert is_mounted(m.path) and pid_alive(m.pid)

    unsynced = random.randbytes(3 * 64 * KiB + 4 * KiB)  # 4 blocks: 3 whole and 4 KiB of the fourth
    pwrite(m.file, unsynced, 8 * MiB)
    model[8 * MiB:8 * MiB + len(unsynced)] = unsynced
    line = assert_cli_error(bd.run("unmount", m.path))
    stats = bd.stats(m.path)
    assert stats["unsaved_blocks"] == 4 and stats["unsaved_bytes"] == 3 * 64 * KiB + 4 * KiB, stats
    assert "stays mounted" in line, line
    assert "up to 196 KiB of writes (4 blocks) not stored yet stay in memory" in line, line
    assert "cannot reach" in line and "retried until the store takes them" in line, line
    assert is_mounted(m.path) and pid_alive(m.pid)

    proxy.clear()  # the store is back: nothing was dropped
    bd.unmount(m)
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)


# --------------------------------------------------------------------------
# 3. the file:// store's disk is full
# --------------------------------------------------------------------------

@once
def test_a_full_store_disk_is_named_and_nothing_is_lost(bd, tmp_path):
    disk = tmp_path / "small-disk"
    disk.mkdir()
    bd.janitor.push(f"tmpfs {disk}", lambda: umount_path(disk))
    run("mount", "-t", "tmpfs", "-o", "size=2m", "bdtest-full", disk, timeout=60, check=True)
    vol = bd.create(size="16M", block_size="64K", place=FilePlace(disk / "vol"))
    m = bd.mount(vol)
    model = bytearray(vol.size)
    data = random.randbytes(4 * MiB)  # twice the disk
    pwrite(m.file, data, 0)
    model[:len(data)] = data
    assert wait_until(lambda: bd.stats(m.path)["store_full"] == 1, 60), bd.stats(m.path)

    line = assert_cli_error(bd.run("unmount", m.path))
    stats = bd.stats(m.path)
    assert f"the store's disk is full: no space left on the filesystem of {disk / 'vol'}" in line, line
    assert stats["store_error"] in line, (stats, line)
    assert f"({stats['unsaved_blocks']} blocks) not stored yet stay in memory" in line, line
    assert "retried until there is space" in line and "300 s, the --retry-time" in line, line
    assert "once there is space" in line and "reachable" not in line, line
    assert is_mounted(m.path) and pid_alive(m.pid)

    run("mount", "-o", "remount,size=64m", disk, timeout=60, check=True)
    assert wait_until(lambda: bd.stats(m.path)["unsaved_blocks"] == 0, 60), bd.stats(m.path)
    stats = bd.stats(m.path)
    assert stats["store_full"] == 0 and "store_error" not in stats, stats
    bd.unmount(m)
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)


# --------------------------------------------------------------------------
# 4. after a killed `create --force`
# --------------------------------------------------------------------------

def kill_create_force_midway(bd, vol, extra=()) -> None:
    """Run `create --force` over `vol` and SIGKILL it once the old record
    is gone and before the new one is written."""
    creating = subprocess.Popen([str(CLI), "create", vol.url, "--size", "16M", "--force", *vol.store_args,
                                 *extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=bd.env)
    try:
        assert wait_until(lambda: vol.place.read("volume") is None, 60, interval=0.0005), "record never deleted"
        creating.kill()
    finally:
        creating.kill()
        creating.wait()
    assert creating.returncode == -signal.SIGKILL, "create --force finished before it could be killed"
    keys = vol.keys()
    assert "volume" not in keys and keys, f"not a create cut short: {sorted(keys)[:5]}"


def hinted_create(line: str) -> list[str]:
    found = re.findall(r"'(bucketdisk create [^']+)'", line)
    assert len(found) == 1, line
    return found[0].split()[1:]


def test_after_a_killed_create_force_the_hint_is_the_create_that_works(bd, janitor):
    vol = bd.create(size="16M", block_size="4K")
    m = bd.mount(vol)
    pwrite_fsync(m.file, bytearray(vol.size), 0, random.randbytes(8 * MiB))  # 2048 objects to delete
    bd.unmount(m)
    extra = ()
    if vol.kind == "s3":  # the record's PUT waits, so the kill lands before it
        host, port = bd.store.server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
        slow = FaultProxy(host, int(port)).start()
        janitor.push("stop slow proxy", slow.stop)
        slow.put_latency = 2.0
        extra = ("--endpoint", slow.endpoint)
    kill_create_force_midway(bd, vol, extra)

    mp = bd.tmp / "mp-after"
    mp.mkdir()
    for argv in (("info", vol.url), ("gc", vol.url), ("mount", vol.url, mp)):
        proc = bd.run(*argv, *vol.store_args)
        if argv[0] == "mount" and proc.returncode == 0:
            janitor.push("unexpected mount", lambda: bd.cleanup_mount(Mount(None, mp, False, mp)))
        line = assert_cli_error(proc)
        assert f"'bucketdisk create {vol.url} --size SIZE --force'" in line, line
        assert "would delete it: put volume back" in line, line  # a lost record is not a cut-short create
    create = hinted_create(line)
    assert_cli_error(bd.run(*[a for a in create if a != "--force"], *vol.store_args))  # why --force is needed
    made = bd.run(*[("16M" if a == "SIZE" else a) for a in create], *vol.store_args)
    assert made.returncode == 0, made.stderr
    assert bd.info(vol)["size"] == 16 * MiB

    empty = bd.empty_place()
    line = assert_cli_error(bd.run("info", empty.url, *empty.args))
    assert f"'bucketdisk create {empty.url} --size SIZE'" in line, line
    made = bd.run(*[("16M" if a == "SIZE" else a) for a in hinted_create(line)], *empty.args)
    assert made.returncode == 0, made.stderr
