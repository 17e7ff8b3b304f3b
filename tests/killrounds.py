"""Killing commands and daemons at chosen moments, for the end-to-end
kill -9 tests of history (test_history_kill9.py): disks as lists of block
digests, commands run and killed by PID, and the record of where each
kill landed."""
from __future__ import annotations

import hashlib
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import CLI, MiB, assert_cli_error, is_mounted, run, s3_list, wait_pid_gone

# Killed runs per test, after the uncut one: few in CI (the suite's time
# budget); BUCKETDISK_KILL_ROUNDS=20 for a long soak.
KILLS = int(os.environ.get("BUCKETDISK_KILL_ROUNDS", "1"))
CLI_EXIT_BOUND = 60  # seconds: a command whose daemon died must not hang


# --------------------------------------------------------------------------
# what the test wrote: a disk as one digest per block
# --------------------------------------------------------------------------

def digests(data: bytes, block_size: int) -> list[bytes]:
    return [hashlib.blake2b(data[at:at + block_size], digest_size=16).digest()
            for at in range(0, len(data), block_size)]


def read_disk(path: Path, size: int, block_size: int) -> list[bytes]:
    """The digests of a disk image read through FUSE, past the page cache."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.fstat(fd).st_size == size, f"{path}: size {os.fstat(fd).st_size}, expected {size}"
        found = []
        chunk = max(block_size, 4 * MiB)
        for at in range(0, size, chunk):
            data = os.pread(fd, chunk, at)
            assert len(data) == min(chunk, size - at), f"{path}: short read at {at}"
            found += digests(data, block_size)
        return found
    finally:
        os.close(fd)


def differing(got: list[bytes], want: list[bytes]) -> list[int]:
    return [i for i, (g, w) in enumerate(zip(got, want, strict=True)) if g != w]


def assert_disk(got: list[bytes], want: list[bytes], what: str) -> None:
    bad = differing(got, want)
    assert not bad, f"{what}: {len(bad)} of {len(want)} blocks differ from what was written (first: {bad[:8]})"


def write_blocks(path: Path, disk: list[bytes], rng: random.Random, block_size: int, count: int,
                 *, fsync: bool) -> list[bytes]:
    """Write `count` blocks of fresh random bytes at a random block-aligned
    place; returns the disk as it is once they are written (`disk` as it was
    is left alone).  Without fsync they are acknowledged, not durable."""
    first = rng.randrange(len(disk) - count + 1)
    data = rng.randbytes(count * block_size)
    fd = os.open(path, os.O_RDWR)
    try:
        done = 0
        while done < len(data):
            done += os.pwrite(fd, data[done:done + 8 * MiB], first * block_size + done)
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    return disk[:first] + digests(data, block_size) + disk[first + count:]


# --------------------------------------------------------------------------
# processes and mounts
# --------------------------------------------------------------------------

def start_cli(bd, *args) -> subprocess.Popen:
    """`bucketdisk ARGS` in the background; the janitor kills it (by its PID) if it outlives the test."""
    proc = subprocess.Popen([str(CLI), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=bd.env)

    def reap() -> None:
        if proc.poll() is None:
            proc.kill()
        proc.communicate(timeout=60)

    bd.janitor.push(f"bucketdisk {args[0]} (pid {proc.pid})", reap)
    return proc


def finish(proc: subprocess.Popen, what: str) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=CLI_EXIT_BOUND)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate(timeout=60)
        pytest.fail(f"{what} did not exit within {CLI_EXIT_BOUND} s")
    return proc.returncode, out, err


def bury(bd, m) -> None:
    """After its daemon was killed: the dead FUSE mount is unmounted by its path."""
    assert wait_pid_gone(m.pid), f"daemon {m.pid} did not die after SIGKILL"
    proc = bd.run("unmount", m.path, timeout=120)
    if is_mounted(m.path):
        run("fusermount3", "-u", "-z", m.path, timeout=60)
    assert proc.returncode == 0, f"unmount of the dead mount {m.path} failed: {proc.stderr}"
    assert not is_mounted(m.path), f"{m.path} still mounted"


def lease_keys(vol) -> set[str]:
    """The names of the volume's lease objects (a new one appears when a command takes the lease)."""
    if vol.kind == "file":
        try:
            return set(os.listdir(vol.path / "lock"))
        except FileNotFoundError:
            return set()
    place = vol.place
    return set(s3_list(place.server, place.bucket, place.prefix + "/lock/") or {})


def run_url_command(bd, vol, args: list, kill_after: float | None) -> tuple[int, str, str, float]:
    """Run a command on the unmounted volume; with `kill_after`, SIGKILL it
    that many seconds after it took the volume's lease.  Returns (exit
    status, stdout, stderr, seconds from taking the lease to its exit)."""
    before = lease_keys(vol)
    proc = start_cli(bd, *args, *vol.store_args)
    end = time.monotonic() + CLI_EXIT_BOUND
    leased = None
    while proc.poll() is None and time.monotonic() < end:
        if lease_keys(vol) - before:
            leased = time.monotonic()
            break
        time.sleep(0.001)
    if leased is not None and kill_after is not None:
        time.sleep(kill_after)
        proc.kill()  # by its PID
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.001)
    took = time.monotonic() - (leased or time.monotonic())
    status, out, err = finish(proc, f"bucketdisk {' '.join(map(str, args))}")
    assert leased is not None or status == 0, f"{args[0]} failed before it took the lease: {err}"
    return status, out, err, took


def stats_counter(m, name: str) -> int | None:
    """One counter of m's `stats` file (None once its daemon is gone)."""
    try:
        text = m.stats_file.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        if key == name:
            return int(value)
    return None


def ask_daemon(bd, m, args: list, *, started=None, kill_after: float | None = None) -> tuple[int, str, str, float]:
    """Run `bucketdisk ARGS`, which asks m's daemon.  `started`: a predicate
    that holds once the daemon is at work on it (None: from the start);
    with `kill_after`, SIGKILL the daemon (by its PID) that many seconds
    later and unmount the dead mount.  Returns (exit status, stdout,
    stderr, seconds from `started` to the command's exit)."""
    proc = start_cli(bd, *args)
    end = time.monotonic() + CLI_EXIT_BOUND
    while started is not None and proc.poll() is None and not started() and time.monotonic() < end:
        time.sleep(0.002)
    begun = time.monotonic()
    if kill_after is not None:
        time.sleep(kill_after)
        os.kill(m.pid, signal.SIGKILL)
    while proc.poll() is None and time.monotonic() < end:
        time.sleep(0.002)
    took = time.monotonic() - begun
    status, out, err = finish(proc, f"bucketdisk {' '.join(map(str, args))}")
    if kill_after is not None:
        bury(bd, m)
    if status != 0:  # its daemon died under it: one line, no traceback
        assert_cli_error(subprocess.CompletedProcess(args, status, out, err))
    assert status == 0 or kill_after is not None, err
    return status, out, err, took


class Kills:
    """Where a test's kills land: KILLS fractions of the uncut command's
    time, from a seeded generator; more (up to 2 * KILLS in all) while no
    kill has yet cut its command short (a loaded machine can be slower
    than the uncut run, or faster)."""

    def __init__(self, seed: int, low: float = 0.0, high: float = 0.9) -> None:
        self.rng, self.low, self.high = random.Random(seed), low, high
        self.cut = 0
        self.report: list[str] = []

    def __iter__(self):
        n = 0
        while n < KILLS or (not self.cut and n < 2 * KILLS):
            n += 1
            yield n, self.rng.uniform(self.low, self.high)

    def record(self, line: str, *, cut: bool) -> None:
        self.cut += cut
        self.report.append(line)
        print(line)

    def check(self) -> None:
        assert self.cut, "no kill landed before the command was done:\n" + "\n".join(self.report)
