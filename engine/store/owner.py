"""Who is writing: this machine, its boot, its PID namespace, and whether a
process of it still runs.  The lease (volume/lock.py) and the file://
store's temporary files (file.py) name their owner with these, so that
what a dead process left behind can be told from what a live one holds.
"""
import functools
import hashlib
import os
import socket


def boot_id() -> str:
    """This boot's random id ('' if the kernel does not say)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def pid_namespace() -> str:
    """This process's PID namespace, as /proc names it ('' if unknown)."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""


def proc_is_ours() -> bool:
    """Whether /proc shows this PID namespace (not so after `unshare --pid`
    without --mount-proc: then a pid read there names another process)."""
    try:
        return os.readlink("/proc/self") == str(os.getpid())
    except OSError:
        return False


def process_alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) is dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


@functools.cache  # fixed for the life of a process (taken once, not at every put)
def place_tag() -> str:
    """16 hex digits naming this host, boot and PID namespace together:
    two processes with the same tag see each other's pids in /proc."""
    where = "\0".join((socket.gethostname(), boot_id(), pid_namespace()))
    return hashlib.sha256(where.encode()).hexdigest()[:16]
