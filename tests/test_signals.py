"""A mount daemon's signals (issue 16): SIGTERM and SIGINT flush and
unmount cleanly, also while writers are busy; SIGHUP reopens the log file
(logrotate) and leaves the mount serving.  Real mounts, both stores.

What a writer here counts as acknowledged: a pwrite straight to the
mounted `file` that returned its full length.  The mount has no kernel
write-back cache, so such a write has reached the daemon's cache; a clean
end of the mount stores it, fsynced or not.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import threading

import pytest

from conftest import (
    CLI, MOUNT_TIMEOUT, UNMOUNT_TIMEOUT, MiB, Mount, assert_file_matches, is_mounted, pid_alive, pwrite_fsync,
    wait_until,
)

CHUNK = 256 * 1024


class BusyWriter(threading.Thread):
    """pwrite CHUNK-sized random pieces over [start, end), round and round,
    as fast as the mount takes them, until a write fails; `model` takes
    each acknowledged one.  The failed piece is stored or not."""

    def __init__(self, path, model: bytearray, start: int, end: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.path, self.model, self.span = path, model, (start, end)
        self.random = random.Random(seed)
        self.acknowledged = 0
        self.failed: tuple[int, bytes, OSError] | None = None

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDWR)
        try:
            offset = self.span[0]
            while True:
                data = self.random.randbytes(CHUNK)
                try:
                    written = os.pwrite(fd, data, offset)
                except OSError as e:
                    self.failed = (offset, data, e)
                    return
                if written != len(data):
                    self.failed = (offset, data, OSError(f"short write: {written}"))
                    return
                self.model[offset : offset + CHUNK] = data
                self.acknowledged += 1
                offset = offset + CHUNK if offset + CHUNK < self.span[1] else self.span[0]
        finally:
            try:
                os.close(fd)
            except OSError:
                pass

    def settle(self, path, model: bytearray) -> None:
        """Put the failed piece in `model` if the volume stored it."""
        if self.failed is not None:
            offset, data, _ = self.failed
            with open(path, "rb") as f:
                f.seek(offset)
                if f.read(len(data)) == data:
                    model[offset : offset + len(data)] = data


def foreground_mount(bd, vol) -> tuple[subprocess.Popen, Mount]:
    """`bucketdisk mount -f` as a child of this test (as systemd runs it),
    its output in its log; cleaned up by path and PID."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    m = Mount(volume=vol, path=mp, read_only=False, log=log)
    bd.mounts.append(m)
    bd.janitor.push(f"foreground mount {mp}", lambda: bd.cleanup_mount(m))
    with open(log, "ab") as out:
        proc = subprocess.Popen([str(CLI), "mount", vol.url, str(mp), "-f", "--log", str(log), "--cache-size", "32M",
                                 "--threads", "4", *vol.store_args, *bd.fuse_args], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out, env=bd.env)
    bd.janitor.push(f"daemon {proc.pid}", lambda: proc.poll() is not None or (proc.kill(), proc.wait()))
    assert wait_until(lambda: is_mounted(mp) or proc.poll() is not None, MOUNT_TIMEOUT), "the mount never came up"
    assert proc.poll() is None, f"the mount exited ({proc.returncode}):\n{bd._log_tail(log)}"
    stats = bd.stats(mp)
    m.pid = int(stats["pid"])
    m.pids.add(m.pid)
    assert m.pid == proc.pid
    assert bd.fuse in (None, stats["fuse_adapter"]), stats["fuse_adapter"]
    return proc, m


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_signal_flushes_and_unmounts_under_load(bd, signum):
    vol = bd.create(size="64M", block_size="64K")
    model = bytearray(vol.size)
    proc, m = foreground_mount(bd, vol)
    writers = [BusyWriter(m.file, model, 0, 24 * MiB, 1), BusyWriter(m.file, model, 32 * MiB, 56 * MiB, 2)]
    for w in writers:
        w.start()
    # Busy: well past the cache (32M) in all, and both still writing.
    assert wait_until(lambda: all(w.acknowledged >= 40 for w in writers) or any(w.failed for w in writers), 120)
    assert not any(w.failed for w in writers), [w.failed for w in writers]
    os.kill(proc.pid, signum)
    code = proc.wait(timeout=UNMOUNT_TIMEOUT)
    for w in writers:
        w.join(timeout=60)
        assert not w.is_alive(), "a writer still writes to a mount that is gone"
        assert w.failed is not None, "a writer was not cut off by the signal"
    log = bd._log_tail(m.log, 20000)
    assert code == 0, f"the daemon exited with {code}:\n{log}"
    assert not is_mounted(m.path), "the signal left the mountpoint mounted"
    assert "ERROR" not in log and "Traceback" not in log, log

    m = bd.mount(vol)
    for w in writers:
        w.settle(m.file, model)
    assert_file_matches(m.file, model)  # every acknowledged write, fsynced or not
    bd.unmount(m)
    vol.assert_clean_layout()


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
@pytest.mark.stores("file")  # the log is the daemon's business, not the store's
def test_sighup_reopens_the_log_and_the_mount_goes_on(bd):
    vol = bd.create(size="16M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, random.randbytes(MiB))
    rotated = m.log.with_name(m.log.name + ".1")
    os.rename(m.log, rotated)  # what logrotate does, before its postrotate
    os.kill(m.pid, signal.SIGHUP)
    assert wait_until(lambda: m.log.exists() and "reopened the log" in m.log.read_text(), 30), \
        f"no new log at {m.log}; the old one holds:\n{rotated.read_text()}"
    assert f"reopened the log {m.log} (pid {m.pid})" in m.log.read_text()
    old = rotated.read_text()
    assert "reopening the log" in old and "reopened" not in old, old  # the older lines stay there

    assert pid_alive(m.pid) and is_mounted(m.path), "SIGHUP ended the mount"
    pwrite_fsync(m.file, model, 2 * MiB, random.randbytes(2 * MiB))  # still serving
    assert_file_matches(m.file, model)
    os.kill(m.pid, signal.SIGHUP)  # again, not rotated: appended to, never truncated
    assert wait_until(lambda: m.log.read_text().count("reopened the log") == 2, 30), m.log.read_text()
    assert rotated.read_text() == old, "the rotated log was written to after the reopen"
    assert int(bd.stats(m.path)["pid"]) == m.pid

    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout()
