"""The fault run: ext4 on an s3:// mount takes a tree copy with fsyncs while
the store behind it fails in every way the fault proxy knows, and the
SeaweedFS server itself is stopped and started again once in the middle.

Real parts throughout: SeaweedFS with SigV4 (its own, for this module, since
it is restarted), tests/faultproxy.py between it and the mount, a FUSE
mount, mkfs.ext4 on its file, a loop mount, and a copier that fsyncs every
file it writes.  The faults, all at once: 503 SlowDown answers, connections
reset (RST) after half the request body went to the server, answers cut
mid-body, and one restart of the server process (same data, same ports)
while the copy is half done.  Then the faults stop for a clean unmount;
the remount reads every file back through the proxy again, with faults at
higher rates (a copy reads few blocks, so only a read-back cuts answer
bodies for sure), each file's SHA-256 equal to its source's.  With the
faults off again: `e2fsck -fn` clean, and `bucketdisk fsck` (straight to
the server) finds every object the volume refers to intact.  The proxy's
counts prove each kind of fault happened.
"""
from __future__ import annotations

import os
import shutil
import threading
import time
from pathlib import Path

import pytest

from conftest import KiB, MiB, run, wait_until
from test_ext4 import assert_tree, make_tree
from test_s3_faults import S3Env, S3Volume, s3, s3bd, seaweed  # noqa: F401 (fixtures: this module's own server)

SLOW_DOWN = (503, "Slow Down", "SlowDown", "Please reduce your request rate.")
# Shares of all requests hit by each kind.  Every fault costs a retry's backoff
# on the copy's fsync path, so 1% each keeps the copy short (about 5,700
# requests, some 50 faults of each kind); the read-back is about 400 requests.
COPY_FAULTS = {"error_rate": 0.01, "reset_rate": 0.01, "drop_rate": 0.01}
READ_FAULTS = {"error_rate": 0.05, "reset_rate": 0.05, "drop_rate": 0.1}
DOWN_AT_LEAST = 0.5  # seconds the server stays stopped (more if no request found it gone yet)


def copy_with_fsyncs(src: Path, dst: Path, halfway) -> int:
    """Copy every file under src to dst (sorted, so always in one order),
    each one fsynced once written; `halfway()` is called once half of
    them are.  syncfs at the end (directory entries).  Returns the count."""
    files = sorted(p.relative_to(src) for p in src.rglob("*") if p.is_file())
    for i, rel in enumerate(files):
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(src / rel, "rb") as fin, open(target, "wb") as fout:
            shutil.copyfileobj(fin, fout, MiB)
            fout.flush()
            os.fsync(fout.fileno())
        if i == len(files) // 2:
            halfway()
    run("sync", "-f", dst, timeout=300, check=True)
    return len(files)


class Restart:
    """Stops the real server and starts it again, on a thread of its own,
    once the copy is half done.  It stays down until a request of the
    mount has found it gone (the proxy could not connect), so the outage
    surely falls inside the copy."""

    def __init__(self, s3: S3Env) -> None:
        self.s3 = s3
        self.thread = threading.Thread(target=self._run, name="restart", daemon=True)
        self.error: BaseException | None = None
        self.refused_while_down = 0

    def __call__(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            server, proxy = self.s3.server, self.s3.proxy
            before = proxy.counts["refused"]
            server.stop_server()
            time.sleep(DOWN_AT_LEAST)
            wait_until(lambda: proxy.counts["refused"] > before, 60, interval=0.1)
            self.refused_while_down = proxy.counts["refused"] - before
            server.start_server()
        except BaseException as e:  # reported by the test
            self.error = e


@pytest.mark.timeout(300)
def test_ext4_tree_copy_with_fsyncs_survives_every_fault_and_a_server_restart(s3bd, tmp_path):
    s3, bd = s3bd, s3bd.bd
    src = tmp_path / "src"
    expected = make_tree(src, seed=1616, n_files=2000, n_large=12, small_max=16 * KiB, large=(MiB, 3 * MiB))
    total = sum((src / k).stat().st_size for k in expected)
    assert 25 * MiB < total < 60 * MiB  # sanity of the generator itself

    vol = S3Volume(s3.bucket, "faultrun", 512 * MiB, 256 * KiB)
    proc = s3.cli("create", vol.url, "--size", "512M", "--block-size", "256K", *s3.flags(direct=True))
    assert proc.returncode == 0, f"create failed: {proc.stderr}"
    s3.proxy.set_faults(error=SLOW_DOWN, **COPY_FAULTS)
    m = s3.mount(vol)  # through the proxy, faults on from here
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    ext = bd.loop_mount(m.file, tmp_path / "ext")
    restart = Restart(s3)
    copied = copy_with_fsyncs(src, ext, halfway=restart)
    restart.thread.join(120)
    assert not restart.thread.is_alive(), "the server restart did not finish"
    assert restart.error is None, f"restarting the server failed: {restart.error!r}"
    assert copied == len(expected)

    s3.proxy.clear()
    copy_counts = dict(s3.proxy.counts)
    st = s3.stats(m)
    assert st["retries"] > 0 and st["errors"] == 0, st  # every fault absorbed by a retry
    bd.loop_umount(ext, m.file)
    bd.unmount(m)  # clean: everything stored

    # read every file back through the proxy, with faults again
    s3.proxy.set_faults(error=SLOW_DOWN, **READ_FAULTS)
    m = s3.mount(vol)
    ext = bd.loop_mount(m.file, ext, read_only=True)
    assert_tree(ext, expected)
    bd.loop_umount(ext, m.file)
    s3.proxy.clear()
    counts = dict(s3.proxy.counts)
    st = s3.stats(m)
    assert st["retries"] > 0 and st["errors"] == 0, st

    # every kind of fault happened, on the way in and on the way out
    assert restart.refused_while_down > 0, copy_counts
    for kind in ("errors PUT", "resets PUT", "drops PUT"):  # resets PUT: uploads cut halfway
        assert copy_counts.get(kind, 0) > 0, f"no {kind} in the copy: {copy_counts}"
    for kind in ("errors GET", "resets GET", "drops GET"):  # drops GET: bodies cut halfway
        assert counts.get(kind, 0) - copy_counts.get(kind, 0) > 0, f"no {kind} in the read-back: {counts}"

    run("e2fsck", "-f", "-n", m.file, timeout=300, check=True)
    bd.unmount(m)
    proc = s3.cli("fsck", vol.url, *s3.flags(direct=True), timeout=300)
    assert proc.returncode == 0, f"fsck found problems ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
