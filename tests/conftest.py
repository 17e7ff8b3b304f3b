"""Shared machinery for the end-to-end suite (test_mount, test_ext4, test_cli_errors).

Everything here drives the real `bucketdisk` console script that sits next to
the running interpreter, against real FUSE mounts, loop mounts and tools.
Every mount a test makes is registered with a per-test janitor that undoes it
in reverse order even when the test fails: loop/tmpfs mounts are unmounted by
path, bucketdisk mounts get `bucketdisk unmount`, then `fusermount3 -u -z` if
still mounted, and the daemon is stopped by PID if it outlived its mount.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

CLI = Path(sys.executable).parent / "bucketdisk"

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB

BLOCK_OBJECT_RE = re.compile(r"^blocks/[0-9a-f]{2}/[0-9a-f]{64}$")
# argparse prefixes with "PROG" or "PROG SUBCOMMAND"; our own errors with "bucketdisk".
ERROR_LINE_RE = re.compile(r"^bucketdisk(?: [a-z-]+)?: error: \S")

MOUNT_TIMEOUT = 90
UNMOUNT_TIMEOUT = 180
CLEANUP_UNMOUNT_TIMEOUT = 60


# --------------------------------------------------------------------------
# plain helpers
# --------------------------------------------------------------------------

def parse_size(text: str | int) -> int:
    """Our own reading of a K/M/G/T size (binary), used to compute expectations."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"(\d+)([KMGT]?)", text.strip().upper())
    assert m, f"test bug: bad size literal {text!r}"
    return int(m.group(1)) * {"": 1, "K": KiB, "M": MiB, "G": GiB, "T": 1024 * GiB}[m.group(2)]


def run(*args, timeout: float = 120, check: bool = False, cwd=None, input=None):
    """Run a command (argv items are str()-ed); returns CompletedProcess."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, input=input)
    if check:
        assert proc.returncode == 0, (
            f"command failed ({proc.returncode}): {' '.join(argv)}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc


def _unescape_mountinfo(s: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), s)


def mounts_at(path) -> list[str]:
    """fstypes of every mount stacked on `path` (from /proc/self/mountinfo), bottom first.

    Dead FUSE mounts ("Transport endpoint is not connected") are still listed here,
    unlike os.path.ismount which gives False for them."""
    target = os.path.realpath(str(path))
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape_mountinfo(fields[4]) == target:
                found.append(right.split()[0])
    return found


def is_mounted(path) -> bool:
    return bool(mounts_at(path))


def pid_state(pid: int) -> str | None:
    """Process state letter from /proc/PID/stat, or None if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return data.rsplit(")", 1)[1].split()[0]


def pid_alive(pid: int) -> bool:
    """True while any thread of the process runs.

    A zombie has exited (it only waits to be reaped), but a multi-threaded
    process killed by a signal shows its leader as a zombie while the other
    threads are still exiting and its file descriptors (e.g. /dev/fuse) are
    still open, so the thread list must be down to the leader too."""
    state = pid_state(pid)
    if state is None:
        return False
    if state not in ("Z", "X"):
        return True
    try:
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except OSError:
        return False


def pid_cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def wait_pid_gone(pid: int, deadline_s: float = 60) -> bool:
    """Wait (bounded) until pid has exited; True if it did."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if not pid_alive(pid):
            return True
        time.sleep(0.05)
    return not pid_alive(pid)


def stop_pid(pid: int) -> None:
    """Stop a bucketdisk daemon by PID (TERM, then KILL); never by name."""
    if not pid_alive(pid) or "bucketdisk" not in pid_cmdline(pid):
        return
    for sig, grace in ((signal.SIGTERM, 15), (signal.SIGKILL, 15)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if wait_pid_gone(pid, grace):
            return


def assert_cli_error(proc: subprocess.CompletedProcess) -> str:
    """A failed command: non-zero exit, one `bucketdisk...: error:` line, no traceback.

    argparse usage errors may print usage lines first; anything else must be
    exactly one line on stderr. Returns the error line."""
    assert proc.returncode != 0, f"expected failure, got exit 0\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr, f"traceback on stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout, f"traceback on stdout:\n{proc.stdout}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    error_lines = [ln for ln in lines if ": error:" in ln]
    assert len(error_lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert ERROR_LINE_RE.match(lines[-1]), f"last stderr line is not 'bucketdisk: error: ...':\n{proc.stderr}"
    if not lines[0].startswith("usage:"):
        assert len(lines) == 1, f"expected exactly one line on stderr:\n{proc.stderr}"
    return lines[-1]


def tree_snapshot(root) -> dict[str, bytes | None]:
    """Every entry under root: relpath -> sha256 of a file's bytes, None for a directory."""
    root = Path(root)
    snap: dict[str, bytes | None] = {}
    if not root.exists():
        return snap
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            snap[os.path.relpath(os.path.join(dirpath, d), root)] = None
        for fn in filenames:
            p = os.path.join(dirpath, fn)
            snap[os.path.relpath(p, root)] = hashlib.sha256(Path(p).read_bytes()).digest()
    return snap


def block_contents(model: bytes | bytearray, block_size: int) -> list[bytes]:
    return [bytes(model[i:i + block_size]) for i in range(0, len(model), block_size)]


def distinct_nonzero_blocks(model: bytes | bytearray, block_size: int) -> set[bytes]:
    zero = bytes(block_size)
    return {b for b in block_contents(model, block_size) if b != zero}


def nonzero_block_count(model: bytes | bytearray, block_size: int) -> int:
    zero = bytes(block_size)
    return sum(1 for b in block_contents(model, block_size) if b != zero)


def assert_file_matches(path, model: bytes | bytearray, chunk: int = 4 * MiB) -> None:
    """Read the whole file (bypassing clean page cache) and compare with the model."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.fstat(fd).st_size == len(model)
        for off in range(0, len(model), chunk):
            want = bytes(model[off:off + chunk])
            got = os.pread(fd, len(want), off)
            if got != want:
                first = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]), min(len(got), len(want)))
                pytest.fail(
                    f"{path}: content differs from model at byte {off + first} "
                    f"(chunk at {off}, read {len(got)} of {len(want)} bytes)"
                )
        assert os.pread(fd, 1, len(model)) == b""
    finally:
        os.close(fd)


# --------------------------------------------------------------------------
# volumes and mounts
# --------------------------------------------------------------------------

@dataclass
class Volume:
    path: Path
    size: int
    block_size: int

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    def object_keys(self) -> set[str]:
        """Relative keys of every file under blocks/ (all must look like block objects)."""
        base = self.path / "blocks"
        keys = set()
        if base.exists():
            for p in base.rglob("*"):
                if p.is_file():
                    keys.add(p.relative_to(self.path).as_posix())
        bad = sorted(k for k in keys if not BLOCK_OBJECT_RE.match(k))
        assert not bad, f"unexpected files under blocks/: {bad[:5]}"
        return keys

    def object_bytes(self) -> int:
        return sum((self.path / k).stat().st_size for k in self.object_keys())

    def record_bytes(self) -> bytes:
        return (self.path / "volume").read_bytes()

    def lock_path(self) -> Path:
        return self.path / "lock"


@dataclass
class Mount:
    volume: Volume
    path: Path
    read_only: bool
    log: Path
    pid: int | None = None
    pids: set = field(default_factory=set)

    @property
    def file(self) -> Path:
        return self.path / "file"

    @property
    def stats_file(self) -> Path:
        return self.path / "stats"


class Janitor:
    """LIFO stack of cleanups; runs all of them, then reports the first failure."""

    def __init__(self) -> None:
        self._stack: list[tuple[str, object]] = []

    def push(self, what: str, fn) -> None:
        self._stack.append((what, fn))

    def run_all(self) -> None:
        problems = []
        while self._stack:
            what, fn = self._stack.pop()
            try:
                fn()
            except Exception as e:  # keep cleaning up
                problems.append(f"{what}: {e!r}")
        if problems:
            raise AssertionError("cleanup problems:\n" + "\n".join(problems))


class BD:
    """The CLI driven for one test; owns the cleanups of what it mounts."""

    def __init__(self, tmp_path: Path, janitor: Janitor) -> None:
        self.tmp = tmp_path
        self.janitor = janitor
        self._n = 0

    def _name(self, prefix: str) -> Path:
        self._n += 1
        return self.tmp / f"{prefix}{self._n}"

    # ---- raw commands
    def run(self, *args, timeout: float = 120, check: bool = False, cwd=None):
        return run(CLI, *args, timeout=timeout, check=check, cwd=cwd)

    def ok(self, *args, timeout: float = 120):
        return self.run(*args, timeout=timeout, check=True)

    # ---- volumes
    def create(self, size="64M", block_size: str | None = "64K", path: Path | None = None, extra=()) -> Volume:
        path = path or self._name("vol")
        args = ["create", f"file://{path}", "--size", str(size)]
        if block_size is not None:
            args += ["--block-size", str(block_size)]
        self.ok(*args, *extra)
        assert (path / "volume").is_file(), "create left no volume record"
        return Volume(path=path, size=parse_size(size),
                      block_size=parse_size(block_size) if block_size is not None else MiB)

    def info(self, volume: Volume | str) -> dict:
        url = volume.url if isinstance(volume, Volume) else volume
        proc = self.ok("info", url, "--json")
        return json.loads(proc.stdout)

    # ---- mounts
    def mount(self, volume: Volume, mountpoint: Path | None = None, *, read_only=False,
              cache_size: str | None = "32M", threads: int | None = 4, extra=()) -> Mount:
        mp = mountpoint or self._name("mnt")
        mp.mkdir(parents=True, exist_ok=True)
        log = self._name("daemon-log-").with_suffix(".txt")
        m = Mount(volume=volume, path=mp, read_only=read_only, log=log)
        # Registered before the attempt so that even a half-made mount is cleaned up.
        self.janitor.push(f"bucketdisk mount {mp}", lambda: self.cleanup_mount(m))
        args = ["mount", volume.url, mp, "--log", log]
        if cache_size is not None:
            args += ["--cache-size", cache_size]
        if threads is not None:
            args += ["--threads", threads]
        if read_only:
            args.append("--read-only")
        proc = self.run(*args, *extra, timeout=MOUNT_TIMEOUT)
        assert proc.returncode == 0, (
            f"mount failed ({proc.returncode}): {proc.stderr}\n"
            f"--- daemon log ---\n{self._log_tail(log)}"
        )
        assert is_mounted(mp), "mount returned 0 but nothing is mounted there"
        st = self.stats(mp)
        m.pid = int(st["pid"])
        m.pids.add(m.pid)
        return m

    def unmount(self, m: Mount | Path, timeout: float = UNMOUNT_TIMEOUT):
        path = m.path if isinstance(m, Mount) else m
        proc = self.run("unmount", path, timeout=timeout)
        assert proc.returncode == 0, f"unmount {path} failed ({proc.returncode}): {proc.stderr}"
        assert not is_mounted(path), f"{path} still mounted after unmount"
        if isinstance(m, Mount) and m.pid is not None:
            assert not pid_alive(m.pid), f"daemon {m.pid} still running after unmount returned"
        return proc

    def remount(self, m: Mount, **kw) -> Mount:
        """Clean unmount, then mount the same volume on the same path."""
        self.unmount(m)
        return self.mount(m.volume, m.path, **kw)

    def stats(self, path) -> dict:
        proc = self.ok("stats", path, "--json", timeout=60)
        return json.loads(proc.stdout)

    def cleanup_mount(self, m: Mount) -> None:
        """Undo a mount whatever state it is in; then report what went wrong on the way.

        A mount that still answered `stats` must unmount cleanly within
        CLEANUP_UNMOUNT_TIMEOUT with its daemon gone; anything else is reported
        as a failure of the test (after everything has been cleaned up)."""
        path = m.path
        problems = []
        live = False
        if is_mounted(path):
            try:  # learn the daemon PID if the mount still answers
                proc = self.run("stats", path, "--json", timeout=20)
                if proc.returncode == 0:
                    m.pids.add(int(json.loads(proc.stdout)["pid"]))
                    live = True
            except Exception:
                pass
        for _ in range(4):  # a mount may (wrongly) be stacked on another one
            if not is_mounted(path):
                break
            try:
                proc = self.run("unmount", path, timeout=CLEANUP_UNMOUNT_TIMEOUT)
                if live and proc.returncode != 0:
                    problems.append(f"`bucketdisk unmount {path}` failed: {proc.stderr.strip()}")
            except subprocess.TimeoutExpired:
                if live:
                    problems.append(f"`bucketdisk unmount {path}` did not return in {CLEANUP_UNMOUNT_TIMEOUT} s")
            types = mounts_at(path)
            if types and types[-1].startswith("fuse"):
                run("fusermount3", "-u", "-z", path, timeout=60)
            elif types:
                run("umount", "-l", path, timeout=60)
        for pid in m.pids:
            if live and pid_alive(pid):
                problems.append(f"daemon {pid} still running after unmount of {path}")
            stop_pid(pid)
        assert not is_mounted(path), f"could not unmount {path}"
        assert not problems, "; ".join(problems)

    # ---- loop / other mounts
    def loop_mount(self, image: Path, target: Path | None = None, *, read_only=False, options=()) -> Path:
        target = target or self._name("ext")
        target.mkdir(parents=True, exist_ok=True)
        self.janitor.push(f"loop mount {target}", lambda: umount_path(target, image))
        opts = ["loop", "ro" if read_only else "rw", *options]
        run("mount", "-o", ",".join(opts), image, target, timeout=120, check=True)
        return target

    @staticmethod
    def loop_umount(target: Path, image: Path) -> None:
        """Unmount a loop mount and wait until its loop device lets go of the image."""
        run("umount", target, timeout=180, check=True)
        wait_loop_released(image)

    def tmpfs_mount(self, target: Path) -> Path:
        target.mkdir(parents=True, exist_ok=True)
        self.janitor.push(f"tmpfs {target}", lambda: umount_path(target))
        run("mount", "-t", "tmpfs", "-o", "size=4m", "bdtest-tmpfs", target, timeout=60, check=True)
        return target

    @staticmethod
    def _log_tail(log: Path, n: int = 4000) -> str:
        try:
            return log.read_text(errors="replace")[-n:]
        except OSError:
            return "(no log)"


def loop_devices_of(image) -> list[str]:
    proc = run("losetup", "-j", image, timeout=30)
    return [ln.split(":", 1)[0] for ln in proc.stdout.splitlines() if ln.strip()]


def wait_loop_released(image, deadline_s: float = 60) -> None:
    """After umount of a loop mount, wait (bounded) until no loop device holds the image."""
    end = time.monotonic() + deadline_s
    while loop_devices_of(image) and time.monotonic() < end:
        time.sleep(0.05)
    assert not loop_devices_of(image), f"loop device still attached to {image}"


def umount_path(target: Path, image=None) -> None:
    for _ in range(4):
        if not is_mounted(target):
            break
        if run("umount", target, timeout=120).returncode != 0:
            run("umount", "-l", target, timeout=60)
    assert not is_mounted(target), f"could not unmount {target}"
    if image is not None:
        wait_loop_released(image)


# --------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------

@pytest.fixture(scope="session")
def cli() -> Path:
    """Path of the bucketdisk console script next to this interpreter (must exist)."""
    assert CLI.is_file() and os.access(CLI, os.X_OK), (
        f"{CLI} not found: install the package into this venv (pip install -e .)"
    )
    return CLI


@pytest.fixture
def janitor():
    j = Janitor()
    yield j
    j.run_all()


@pytest.fixture
def bd(cli, tmp_path, janitor) -> BD:
    return BD(tmp_path, janitor)


@pytest.fixture
def run_cli(bd):
    """run_cli(*args, timeout=..., check=False) -> CompletedProcess of `bucketdisk ARGS`."""
    return bd.run


@pytest.fixture
def volume_factory(bd):
    """volume_factory(size="64M", block_size="64K") -> Volume, created with the CLI."""
    return bd.create


@pytest.fixture
def mounted(bd):
    """mounted(volume, mountpoint=None, read_only=False, ...) -> Mount; always cleaned up."""
    return bd.mount


@pytest.fixture
def stats_json(bd):
    """stats_json(mountpoint) -> dict from `bucketdisk stats --json`."""
    return bd.stats
