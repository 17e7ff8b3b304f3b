"""Running commands and watching processes for the bench harness: the log
line, the errors, `sh` (a command in its own process group, killed whole on
a timeout), page-cache helpers and waiting for a PID to go."""
from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from config import CMD_TIMEOUT, MIB


class BenchError(RuntimeError):
    pass


class Interrupted(BaseException):
    pass


_t0 = time.monotonic()


def say(msg: str) -> None:
    print(f"[{time.monotonic() - _t0:7.1f}s] {msg}", file=sys.stderr, flush=True)


def sh(*args, timeout: float = CMD_TIMEOUT, env: dict | None = None) -> str:
    """Run a command in its own process group; raise BenchError with its output's
    tail if it fails. On a timeout or an interruption the whole group (fio's job
    processes too) is killed and waited for, so nothing keeps a mount busy."""
    args = [str(a) for a in args]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                env=env, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout)
        except BaseException as e:
            kill_group(proc)
            if isinstance(e, subprocess.TimeoutExpired):
                raise BenchError(f"timed out after {timeout:.0f}s: {shlex.join(args)}") from None
            raise
        out.seek(0)
        err.seek(0)
        text, errors = (f.read().decode(errors="replace") for f in (out, err))
    if code != 0:
        tail_ = "\n".join((text + errors).strip().splitlines()[-15:])
        raise BenchError(f"exit {code}: {shlex.join(args)}\n{tail_}")
    return text


def kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL the process group led by proc and wait until all of it is gone."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        members = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == proc.pid and fields[0] != "Z":
                members.append(stat)
        if not members:
            return
        time.sleep(0.05)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def read_through(path: Path) -> int:
    """Read a file (to warm the page cache); returns its size."""
    n = 0
    buf = bytearray(MIB)
    with open(path, "rb", buffering=0) as f:
        while True:
            got = f.readinto(buf)
            if not got:
                return n
            n += got


def warm_tree(root: Path) -> None:
    for dirpath, _, files in os.walk(root):
        for name in files:
            read_through(Path(dirpath) / name)


def pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def wait_gone(pid: int, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
