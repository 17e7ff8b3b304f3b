"""Crash rounds: ext4 on the mount under heavy random writes with fsyncs
(fio, checking what it wrote as it goes), a writer appending fsynced
numbered records to a file in ext4, and a writer of numbered records
straight to the disk (crashload.py); each round the daemon is killed with
kill -9 at a random moment.  After each remount the volume mounts, ext4's
journal replays, `e2fsck -fn` is clean, `fsck` is clean, and every
record fsynced before the kill is there and intact; with --cache-dir, also
every record the daemon acknowledged without an fsync.

BUCKETDISK_CRASH_ROUNDS sets the rounds (default 20; bench/README.md runs
hundreds); BUCKETDISK_CRASH_SEED the random moments."""
from __future__ import annotations

import os
import random
import signal
import time

import pytest
from conftest import is_mounted, run, stop_pid, wait_loop_released, wait_pid_gone
from crashload import FS_SIZE, RawRecords, RecordLog, e2fsck_clean, fio_verified, start_fio

ROUNDS = int(os.environ.get("BUCKETDISK_CRASH_ROUNDS", "20"))
SEED = int(os.environ.get("BUCKETDISK_CRASH_SEED", "1130"))


def unmount_dead_ext4(target, image) -> None:
    """ext4 whose disk died under it: unmount it (lazily if it must) and
    wait for its loop device to let go."""
    if run("umount", target, timeout=120).returncode != 0:
        run("umount", "-l", target, timeout=60, check=True)
    assert not is_mounted(target)
    wait_loop_released(image)


def kill_round(bd, m, ext, tmp_path, rng: random.Random, round_number: int, raw_first: int, raw_sync: int):
    """Run the load, kill the daemon at a random moment, and clean up; the
    writers, to check against the volume after the next mount."""
    log = RecordLog(ext / f"records-{round_number}.log", round_number)
    raw = RawRecords(m.file, FS_SIZE, m.volume.size, raw_first, round_number, raw_sync)
    fio_log = tmp_path / f"fio-{round_number}.txt"
    fio = start_fio(ext / "fio.dat", fio_log)
    log.start()
    raw.start()
    time.sleep(rng.uniform(0.3, 2.5))
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid), f"daemon {m.pid} did not die after SIGKILL"
    for writer in (log, raw):
        writer.stop.set()
        writer.join(60)
        assert not writer.is_alive(), f"the {writer.name} writer hung after the kill"
    stop_pid(fio.pid)
    fio.wait(60)
    assert fio_verified(fio_log), f"fio read back wrong data before the kill:\n{fio_log.read_text()[-2000:]}"
    unmount_dead_ext4(ext, m.file)
    proc = bd.run("unmount", m.path, timeout=120)
    assert proc.returncode == 0 and not is_mounted(m.path), proc.stderr
    return log, raw


@pytest.mark.stores("file")
@pytest.mark.parametrize("cache", [False, True], ids=["memory", "cache-dir"])
def test_kill9_rounds(bd, tmp_path, cache):
    vol = bd.create(size="64M", block_size="64K")
    extra = ["--cache-dir", tmp_path / "cache"] if cache else []
    m = bd.mount(vol, extra=extra)
    run("mkfs.ext4", "-q", "-F", "-b", "4096", m.file, str(FS_SIZE // 4096), timeout=180, check=True)
    rng = random.Random(SEED + cache)
    ext = tmp_path / "ext"
    bd.loop_mount(m.file, ext)
    raw_first = 1
    for round_number in range(ROUNDS):
        # with a cache dir, raw records are fsynced rarely: those acknowledged since must come back too
        log, raw = kill_round(bd, m, ext, tmp_path, rng, round_number, raw_first, 1000 if cache else 16)
        what = f"round {round_number}: {log.synced} records fsynced, raw {raw.acked} acknowledged / {raw.synced} synced"

        m = bd.mount(vol, m.path, extra=extra)
        raw.check(raw.acked if cache else raw.synced)
        bd.loop_mount(m.file, ext)  # ext4 replays its journal
        RecordLog.check(log.path, log.synced, round_number)
        bd.loop_umount(ext, m.file)
        clean, output = e2fsck_clean(m.file)
        assert clean, f"{what}: e2fsck -fn after the journal's replay:\n{output}"
        proc = bd.run("fsck", vol.url, *vol.store_args, timeout=300)
        assert proc.returncode == 0, f"{what}: fsck: {proc.stdout[-2000:]}{proc.stderr}"
        raw_first = raw.acked + 1
        bd.loop_mount(m.file, ext)
    bd.loop_umount(ext, m.file)
    bd.unmount(m)
