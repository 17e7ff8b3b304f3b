"""Two writable mounts of one volume never both acknowledge writes, and
every fsync either acknowledged is in the volume afterwards (issue 13,
item 2).  Both stores, real mounts:

* on this machine, a second mount is refused even with --force while the
  first one's process lives;
* from "another host" (a UTS namespace with another host name), it is
  refused until --force; once forced, the first mount's next fsync fails
  (EIO) and so does every later write, its stats say fenced, and unmount
  says why in one line;
* from another PID namespace (`unshare --pid --fork --mount-proc`), which
  cannot see the first mount's process, the same: the lease's expiry
  decides, never "the PID is gone".
"""
from __future__ import annotations

import errno
import json
import os
import random
import subprocess
import sys
import threading
import time

import pytest

from conftest import (
    CLI, MOUNT_TIMEOUT, MiB, Mount, assert_cli_error, assert_file_matches, is_mounted, pwrite_fsync,
)

PYTHON = sys.executable


def attempt_mount(bd, vol, *flags, prefix=()) -> tuple[subprocess.CompletedProcess, Mount]:
    """`bucketdisk mount` (maybe under a namespace-changing prefix), cleaned up by path."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    m = Mount(volume=vol, path=mp, read_only=False, log=log)
    bd.mounts.append(m)
    bd.janitor.push(f"second mount {mp}", lambda: bd.cleanup_mount(m))
    argv = [*prefix, str(CLI), "mount", vol.url, str(mp), "--log", str(log), "--cache-size", "32M",
            *vol.store_args, *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT, env=bd.env)
    if proc.returncode == 0:
        m.pid = int(bd.stats(mp)["pid"])
        m.pids.add(m.pid)
    return proc, m


def as_other_host(name: str) -> list[str]:
    """A command prefix that runs the rest in a UTS namespace named `name`."""
    code = f"import os, socket, sys; socket.sethostname({name!r}); os.execv(sys.argv[1], sys.argv[1:])"
    return ["unshare", "--uts", PYTHON, "-c", code]


class FsyncLoop(threading.Thread):
    """pwrite + fsync 64 KiB pieces of [start, end) in turn until stopped or
    an fsync fails; `model` takes each acknowledged one.  The failed one may
    or may not be stored (its journal may have been written before the
    mount found out it had lost the volume)."""

    def __init__(self, path, model: bytearray, start: int, end: int) -> None:
        super().__init__(daemon=True)
        self.path, self.model, self.span = path, model, (start, end)
        self.acknowledged = 0
        self.failed: tuple[int, bytes] | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        offset = self.span[0]
        while not self._stop_event.is_set():
            data = random.randbytes(64 * 1024)
            try:
                pwrite_fsync(self.path, self.model, offset, data)
            except OSError:
                self.failed = (offset, data)
                return
            self.acknowledged += 1
            offset = offset + len(data) if offset + len(data) < self.span[1] else self.span[0]
            time.sleep(0.1)

    def stop(self) -> None:
        self._stop_event.set()
        self.join()

    def assert_in(self, path, model: bytearray) -> None:
        """The volume holds `model`, the failed piece old or new."""
        if self.failed is not None:
            offset, data = self.failed
            with open(path, "rb") as f:
                f.seek(offset)
                if f.read(len(data)) == data:
                    model[offset : offset + len(data)] = data
        assert_file_matches(path, model)


def assert_fenced(bd, m: Mount, model: bytearray) -> None:
    """The superseded mount acknowledges nothing more and says why at unmount."""
    with pytest.raises(OSError) as e:
        pwrite_fsync(m.file, model, 8 * MiB, random.randbytes(MiB))
    assert e.value.errno == errno.EIO
    assert bd.stats(m.path)["fenced"] == 1
    fd = os.open(m.file, os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            os.pwrite(fd, b"x" * 4096, 12 * MiB)
        assert e.value.errno == errno.EIO, "a fenced mount accepted a write"
    finally:
        os.close(fd)
    line = assert_cli_error(bd.run("unmount", m.path))
    assert "another writable mount" in line, line
    assert not is_mounted(m.path)


def test_force_never_takes_the_volume_from_a_live_mount_here(bd):
    vol = bd.create(size="16M", block_size="64K")
    m1 = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m1.file, model, 0, random.randbytes(MiB))
    leases = vol.lease_keys()

    proc, m2 = attempt_mount(bd, vol, "--force")
    line = assert_cli_error(proc)
    assert f"pid {m1.pid}" in line and "this machine" in line, line
    assert not is_mounted(m2.path)
    assert vol.lease_keys() == leases, "the refused mount touched the lease"

    pwrite_fsync(m1.file, model, 2 * MiB, random.randbytes(MiB))
    m1 = bd.remount(m1)
    assert_file_matches(m1.file, model)
    bd.unmount(m1)
    vol.assert_clean_layout()


# On s3://; the file:// store's forced takeover is the next test's (each waits TAKEOVER_WAIT, 25 s).
@pytest.mark.stores("s3")
def test_a_forced_mount_from_another_host_fences_the_first(bd):
    vol = bd.create(size="16M", block_size="64K")
    m1 = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m1.file, model, 0, random.randbytes(MiB))

    proc, m2 = attempt_mount(bd, vol, prefix=as_other_host("elsewhere"))
    line = assert_cli_error(proc)
    assert f"pid {m1.pid}" in line and "--force" in line, line

    # The first mount keeps fsyncing while the forced one takes over: each
    # fsync it acknowledges must be in what the new mount reads.
    writer = FsyncLoop(m1.file, model, 0, 4 * MiB)
    writer.start()
    proc, m2 = attempt_mount(bd, vol, "--force", prefix=as_other_host("elsewhere"))
    writer.stop()
    assert proc.returncode == 0, proc.stderr
    assert writer.acknowledged > 0 and writer.failed is not None, "the takeover fenced no fsync of the first mount"
    pwrite_fsync(m2.file, model, 4 * MiB, random.randbytes(2 * MiB))
    assert_fenced(bd, m1, model)
    bd.unmount(m2)

    m3 = bd.mount(vol)
    writer.assert_in(m3.file, model)
    bd.unmount(m3)
    # What the first mount stored after the takeover (a root, blocks) no
    # map names: gc's to delete, as after a crash.
    bd.ok("gc", vol.url, *vol.store_args)
    vol.assert_clean_layout(fence_tombstones=True)


INSIDE = r"""
import json, os, subprocess, sys
cli, url, mp, log, offset, size, seed, *flags = sys.argv[1:]
out = {}
proc = subprocess.run([cli, "mount", url, mp, "--log", log, "--cache-size", "32M", *flags],
                      capture_output=True, text=True)
out["mount"] = [proc.returncode, proc.stderr.strip()]
if proc.returncode == 0:
    import random
    data = random.Random(int(seed)).randbytes(int(size))
    fd = os.open(os.path.join(mp, "file"), os.O_RDWR)
    try:
        os.pwrite(fd, data, int(offset))
        os.fsync(fd)
        out["fsync"] = "ok"
    except OSError as e:
        out["fsync"] = e.strerror
    finally:
        os.close(fd)
    proc = subprocess.run([cli, "unmount", mp], capture_output=True, text=True)
    out["unmount"] = [proc.returncode, proc.stderr.strip()]
print(json.dumps(out))
"""


def in_pid_namespace(bd, vol, offset: int, size: int, seed: int, *flags) -> dict:
    """Mount, write + fsync, unmount, all inside a new PID (and so mount) namespace."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    argv = ["unshare", "--pid", "--fork", "--mount-proc", PYTHON, "-c", INSIDE, str(CLI), vol.url, str(mp),
            str(log), str(offset), str(size), str(seed), *vol.store_args, *flags]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=MOUNT_TIMEOUT * 2, env=bd.env)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.stores("file")  # namespaces are the host's business; s3:// takes over in the test above
def test_another_pid_namespace_waits_for_the_lease_not_the_pid(bd):
    vol = bd.create(size="16M", block_size="64K")
    m1 = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m1.file, model, 0, random.randbytes(MiB))

    refused = in_pid_namespace(bd, vol, 4 * MiB, MiB, 1)
    code, line = refused["mount"]
    assert code != 0 and f"pid {m1.pid}" in line and "--force" in line, refused
    pwrite_fsync(m1.file, model, 2 * MiB, random.randbytes(MiB))  # the first mount is untouched

    forced = in_pid_namespace(bd, vol, 4 * MiB, 2 * MiB, 2, "--force")
    assert forced["mount"][0] == 0 and forced["fsync"] == "ok" and forced["unmount"][0] == 0, forced
    model[4 * MiB : 6 * MiB] = random.Random(2).randbytes(2 * MiB)
    assert_fenced(bd, m1, model)

    m3 = bd.mount(vol)
    assert_file_matches(m3.file, model)
    bd.unmount(m3)
    vol.assert_clean_layout(fence_tombstones=True)


@pytest.mark.stores("file")  # the lease logic is the store's alike; 25 s of waiting once is enough
def test_a_deleted_lease_object_does_not_let_a_second_mount_lose_the_firsts_fsyncs(bd):
    """The live mount's lease object deleted (by hand, a lifecycle rule):
    a second writable mount takes the volume only after the first can
    acknowledge nothing more, so the first's next fsync fails instead of
    being lost, and its unmount says it lost the volume."""
    vol = bd.create(size="16M", block_size="64K")
    first = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(first.file, model, 0, os.urandom(64 * 1024))
    for key in [k for k in vol.keys() if k.startswith("lock/")]:
        vol.place.delete(key)
    started = time.monotonic()
    second = bd.mount(vol)
    assert time.monotonic() - started >= 20, "the second mount did not wait for the first to stop acknowledging"
    late = os.urandom(64 * 1024)
    fd = os.open(first.file, os.O_WRONLY)
    try:
        with pytest.raises(OSError) as failed:
            os.pwrite(fd, late, 2 * 64 * 1024)
            os.fsync(fd)
        assert failed.value.errno == errno.EIO
    finally:
        os.close(fd)
    assert bd.stats(first.path)["fenced"] == 1
    proc = bd.run("unmount", first.path)
    assert proc.returncode != 0 and "lost its volume to another writable mount" in proc.stderr, proc.stderr
    with open(second.file, "rb") as f:
        assert f.read(64 * 1024) == bytes(model[:64 * 1024]), "the first mount's fsynced write is gone"
    bd.unmount(second)
