"""`bucketdisk unmount`: flush, unmount, wait for the daemon; and what to
say when it cannot."""
import argparse
import errno
import os
import subprocess
import time

from bucketdisk.errors import UserError
from bucketdisk.fs.mountpoints import FSTYPE, fstype_at

from .commands import read_stats
from .units import human_size

UNMOUNT_WAIT_SECONDS = 3600

DEAD = (errno.ENOTCONN, errno.ECONNABORTED)  # what a FUSE mount answers once its daemon is gone


class DaemonDied(Exception):
    """The mount's daemon died while unmount was talking to it."""


def unmount(args: argparse.Namespace) -> int:
    path = os.path.abspath(args.mountpoint)
    kind = fstype_at(path)
    if kind is None:
        raise UserError(f"{path} is not mounted")
    if kind != FSTYPE:
        raise UserError(f"{path} is not a bucketdisk mount (it is {kind})")
    try:
        stats = read_stats(path)
    except OSError as e:
        if e.errno not in DEAD:
            raise
        return _clean_dead_mount(path)
    if stats.get("fenced"):
        # Nothing it holds can be stored any more: flushing would fail forever.
        _fusermount(path, lazy=False)
        _wait_for_exit(stats.get("pid"))
        raise UserError(_fenced_words(path, stats))
    try:
        _flush(path, stats.get("disk_file", "file"))
    except DaemonDied:
        return _clean_dead_mount(path, stats)
    _fusermount(path, lazy=False)
    _wait_for_exit(stats.get("pid"))
    return 0


def _flush(path: str, disk_file: str) -> None:
    """fsync the disk (named `disk_file` in the mount: its stats say it)
    through the mount, so failures are reported while data is safe;
    raises DaemonDied if the daemon is gone."""
    try:
        fd = os.open(os.path.join(path, disk_file), os.O_RDONLY)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise UserError(_unstored_words(path, e)) from None
    finally:
        try:
            os.close(fd)
        except OSError:  # the daemon died: close cannot reach it either
            pass


def _unstored_words(path: str, failure: OSError) -> str:
    """Why unmount leaves a live mount up, from its stats: what it could
    not store (if anything), why, and what happens to it now."""
    try:
        stats = read_stats(path)
    except OSError as e:
        if e.errno in DEAD:
            raise DaemonDied() from None
        raise
    reason = stats.get("store_error") or failure.strerror
    again = f"run 'bucketdisk unmount {path}' again"
    if not stats.get("unsaved_blocks"):
        return (f"{path} stays mounted: every write is in the store, but the store did not confirm the last "
                f"step ({reason}); {again} when it answers")
    held = f"{_amount(stats)} not stored yet stay in memory"
    if stats.get("store_full"):
        return (f"{path} stays mounted: {reason}; {held} and are retried until there is space (once they fill "
                f"the cache, reads and writes that need room in it wait up to {stats.get('retry_time_seconds')} s, "
                f"the --retry-time, and then fail); {again} once there is space")
    return (f"{path} stays mounted: could not store all data ({reason}); {held} and are retried until the "
            f"store takes them; {again} when it answers")


def _amount(stats: dict) -> str:
    """How much a mount's stats say it holds unsaved, in words."""
    blocks = stats.get("unsaved_blocks", 0)
    size = human_size(stats.get("unsaved_bytes", 0))
    return f"up to {size} of writes ({blocks} block{'s' if blocks != 1 else ''})"


def _fenced_words(path: str, stats: dict) -> str:
    words = (f"{path} had lost its volume to another writable mount or to 'bucketdisk unlock --force' (see "
             "its log); it is unmounted: its "
             "fsynced writes are in the volume, later writes may not be")
    if stats.get("unsaved_blocks"):
        words += f", and {_amount(stats)} it had not stored yet are lost"
    return words


def _clean_dead_mount(path: str, before: dict | None = None) -> int:
    """Unmount a mount whose daemon is gone (lazily: nothing answers there)
    and say what that means.  `before`: its stats, when it died during this
    unmount (then this is a failure: the unmount could not store its data)."""
    if before is None:
        facts = f"{path}: its mount daemon had died (killed or crashed)"
    else:
        facts = f"{path}: its mount daemon (pid {before.get('pid')}) died during the unmount"
    facts += (", so nothing is left in memory to store: what it acknowledged with fsync is safe in the store, "
              "writes not fsynced may be lost")
    if before is not None and before.get("unsaved_blocks"):
        facts += f" (when the unmount began it held {_amount(before)} not stored yet)"
    failed = _fusermount_failure(path, lazy=True)
    if failed:
        raise UserError(f"{facts}; unmounting the stale mountpoint failed ({failed}): run "
                        f"'fusermount3 -u -z {path}' as the user who mounted it")
    if before is not None:
        raise UserError(f"{facts}; the stale mountpoint is unmounted")
    print(f"{facts}; the stale mountpoint is unmounted")
    return 0


def _fusermount(path: str, *, lazy: bool) -> None:
    failed = _fusermount_failure(path, lazy=lazy)
    if failed:
        raise UserError(f"cannot unmount {path}: {failed}")


def _fusermount_failure(path: str, *, lazy: bool) -> str | None:
    """Unmount `path` with fusermount3; None when done, else why not (one line)."""
    command = ["fusermount3", "-u"] + (["-z"] if lazy else []) + [path]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode == 0:
        return None
    return (result.stderr.strip().splitlines() or ["fusermount3 failed"])[-1]


def _wait_for_exit(pid: int | None) -> None:
    if not pid:
        return
    deadline = time.monotonic() + UNMOUNT_WAIT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                if f.read().split(b")")[-1].split()[0] == b"Z":
                    return  # exited, waiting for its parent to reap it
        except FileNotFoundError:
            return  # gone between the two looks
        time.sleep(0.05)
    raise UserError(f"the mount daemon (pid {pid}) is still writing after {UNMOUNT_WAIT_SECONDS} s")
