"""Shared machinery for the end-to-end suite (test_mount, test_ext4, test_cli_errors).

Everything here drives the real `bucketdisk` console script that sits next to
the running interpreter, against real FUSE mounts, loop mounts and tools.
Every test that uses `bd` runs on both stores, `[file]` (file:///tmp-dir) and
`[s3]` (s3://BUCKET/PREFIX on a real SeaweedFS with SigV4 authentication,
started once per session and stopped by its PID at the end); a test or module
narrows that with `@pytest.mark.stores("file")` or `STORES = (...)`.
Mounts go through the daemon's default FUSE adapter, or the one
BUCKETDISK_TEST_FUSE names (lowlevel, mfusepy); a test marked
`@pytest.mark.fuse_adapters(mfusepy_on=STORES)` runs once more on those
stores through mfusepy (ids `[file-mfusepy]`), its other runs through the
low-level binding (ids unchanged).
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
import uuid
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ci"))
from seaweedfs import SeaweedFS  # noqa: E402

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


def run(*args, timeout: float = 120, check: bool = False, cwd=None, input=None, env=None):
    """Run a command (argv items are str()-ed); returns CompletedProcess."""
    argv = [str(a) for a in args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=cwd, input=input,
                          env=env)
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


def run_with_terminal_stderr(args: list, env=None, timeout: float = 120) -> tuple[subprocess.CompletedProcess, bytes]:
    """Run a command whose stderr is a terminal (a pty of 100 columns) and
    stdout a pipe; (the process, everything drawn on the terminal)."""
    import fcntl
    import pty
    import struct
    import termios

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a terminal's size
    try:
        proc = subprocess.run([str(a) for a in args], stdout=subprocess.PIPE, stderr=follower, env=env,
                              timeout=timeout)
        os.close(follower)
        drawn = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal's other end is closed: all read
                break
            if not chunk:
                break
            drawn += chunk
    finally:
        os.close(leader)
    return proc, drawn


def assert_cli_error(proc: subprocess.CompletedProcess) -> str:
    """A failed command: non-zero exit, exactly one line on stderr, `bucketdisk...:
    error: ...` (usage errors too: README promises one line), no traceback.
    Returns the error line."""
    assert proc.returncode != 0, f"expected failure, got exit 0\nstdout: {proc.stdout}\nstderr: {proc.stderr}"
    assert "Traceback" not in proc.stderr, f"traceback on stderr:\n{proc.stderr}"
    assert "Traceback" not in proc.stdout, f"traceback on stdout:\n{proc.stdout}"
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines, "nothing on stderr"
    error_lines = [ln for ln in lines if ": error:" in ln]
    assert len(error_lines) == 1, f"expected one error line, got:\n{proc.stderr}"
    assert ERROR_LINE_RE.match(lines[-1]), f"last stderr line is not 'bucketdisk: error: ...':\n{proc.stderr}"
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


def fsync_path(path) -> None:
    """fsync a file by path (fsync on `file` is the durability point)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def wait_until(predicate, bound: float, interval: float = 0.05) -> bool:
    """Poll `predicate` until it holds or `bound` seconds pass; its last answer."""
    end = time.monotonic() + bound
    while not predicate():
        if time.monotonic() > end:
            return bool(predicate())
        time.sleep(interval)
    return True


def wait_until_clean(bd, m, timeout: float = 60) -> None:
    """Wait until mount `m` holds no dirty block (fsync-logged pages are
    uploaded in their blocks after the fsync that logged them)."""
    assert wait_until(lambda: int(bd.stats(m.path)["dirty_blocks"]) == 0, timeout), "dirty blocks never went up"


def pwrite_fsync(path, model: bytearray, offset: int, data: bytes) -> None:
    """pwrite + fsync through a mount; `model` changes only if both succeed
    (what an fsync acknowledged)."""
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)
    model[offset : offset + len(data)] = data


def cold_read(path, offset: int, length: int) -> bytes:
    """Read past the kernel's page cache (its clean pages dropped first)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


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
# stores and volumes
# --------------------------------------------------------------------------
#
# Every test that uses `bd` runs once per store in STORES (ids `[file]`,
# `[s3]`): the embedded file:// store in the test's tmp dir, and the s3://
# store on one SeaweedFS for the whole session (SigV4 on), one bucket per
# test. A volume lives in a *place*: a directory (file) or a bucket prefix
# (s3); both answer the same questions (keys, bytes, snapshot), in the same
# key layout (FORMAT.md).

STORES = ("file", "s3")

PAGE_KEY_RE = re.compile(r"^map/pages/[0-9a-f]{64}$")
# roots and journals are named <epoch>-<seq>, leases lock/<epoch> (FORMAT.md)
ROOT_KEY_RE = re.compile(r"^map/roots/[0-9a-f]{16}-[0-9a-f]{16}$")
JOURNAL_KEY_RE = re.compile(r"^map/journal/[0-9a-f]{16}-[0-9a-f]{16}$")
LEASE_KEY_RE = re.compile(r"^lock/[0-9a-f]{16}$")
SNAPSHOT_KEY_RE = re.compile(r"^snapshots/[0-9a-f]{16}$")
# a second copy of a block or page written while a late delete could land (FORMAT.md)
ALIAS_KEY_RE = re.compile(r"^(blocks/[0-9a-f]{2}/|map/pages/)[0-9a-f]{64}-[0-9a-f]{16}$")
FILE_STORE_TMP = ".tmp"  # the file:// store's own scratch dir (temp files before link/rename)
# directories a file:// volume may hold: the key layout's prefixes and the scratch dir
FILE_STORE_DIR_RE = re.compile(r"^(blocks(/[0-9a-f]{2})?|map(/(pages|roots|journal))?|lock|snapshots|\.tmp)$")


def key_kind(key: str) -> str | None:
    """Which documented kind of object a volume key is (FORMAT.md), or None."""
    if key == "volume":
        return key
    if LEASE_KEY_RE.match(key):
        return "lock"
    if BLOCK_OBJECT_RE.match(key):
        return "block" if key.split("/")[1] == key.split("/")[2][:2] else None
    for kind, rx in (("page", PAGE_KEY_RE), ("root", ROOT_KEY_RE), ("journal", JOURNAL_KEY_RE),
                     ("snapshot", SNAPSHOT_KEY_RE), ("alias", ALIAS_KEY_RE)):
        if rx.match(key):
            return kind
    return None


class FilePlace:
    """A file:// location: a local directory (maybe not there yet)."""

    kind = "file"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"<FilePlace {self.path}>"

    @property
    def url(self) -> str:
        return f"file://{self.path}"

    @property
    def args(self) -> list[str]:
        return []

    def exists(self) -> bool:
        return self.path.exists()

    def _walk(self):
        """(relative dirs, relative non-directories) under the directory."""
        dirs, files = [], []
        if not self.path.exists():
            return dirs, files
        for dirpath, dirnames, filenames in os.walk(self.path):
            rel = Path(dirpath).relative_to(self.path)
            dirs += [(rel / d).as_posix() for d in dirnames]
            files += [(rel / f).as_posix() for f in filenames]
        return dirs, files

    def keys(self) -> dict[str, int]:
        """Every object: key -> size (every non-directory outside the scratch dir)."""
        _, files = self._walk()
        return {f: (self.path / f).lstat().st_size for f in files
                if not f.startswith(FILE_STORE_TMP + "/")}

    def read(self, key: str) -> bytes | None:
        try:
            return (self.path / key).read_bytes()
        except FileNotFoundError:
            return None

    def write(self, key: str, data: bytes) -> None:
        (self.path / key).parent.mkdir(parents=True, exist_ok=True)
        (self.path / key).write_bytes(data)

    def delete(self, key: str) -> None:
        (self.path / key).unlink()

    def snapshot(self) -> dict[str, bytes | None]:
        """Everything in the directory, scratch dir included: relpath -> bytes, None for a directory."""
        dirs, files = self._walk()
        snap: dict[str, bytes | None] = {d + "/": None for d in dirs}
        snap.update({f: (self.path / f).read_bytes() for f in files})
        return snap

    def stray_entries(self) -> list[str]:
        """What the directory holds besides objects: anything in the scratch dir, unknown directories."""
        dirs, files = self._walk()
        return sorted([f for f in files if f.startswith(FILE_STORE_TMP + "/")]
                      + [d + "/" for d in dirs if not FILE_STORE_DIR_RE.match(d)])


def s3_request(server, method: str, bucket: str, key: str = "", **kw):
    """One signed request of the test's own (listing, reading the store to check it),
    retried on 5xx a few times: a hiccup of the server is not what a test checks."""
    for attempt in range(5):
        r = server.request(method, bucket, key, **kw)
        if r.status_code < 500:
            return r
        time.sleep(0.2 * (attempt + 1))
    return r


def s3_list(server, bucket: str, prefix: str = "") -> dict[str, int] | None:
    """key -> size of every object under prefix (ListObjectsV2, all pages); None if no such bucket."""
    found: dict[str, int] = {}
    params = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
    while True:
        r = s3_request(server, "GET", bucket, params=params)
        if r.status_code == 404 and b"NoSuchBucket" in r.content:
            return None
        assert r.status_code == 200, f"listing s3://{bucket}/{prefix}: {r.status_code} {r.text[:300]}"
        root = ET.fromstring(r.content)
        for el in root.iter():
            el.tag = el.tag.rsplit("}", 1)[-1]
        for c in root.findall("Contents"):
            found[c.findtext("Key")] = int(c.findtext("Size") or 0)
        if root.findtext("IsTruncated") != "true":
            return found
        params["continuation-token"] = root.findtext("NextContinuationToken")


class S3Place:
    """An s3:// location: a prefix in a bucket of the session's SeaweedFS."""

    kind = "s3"

    def __init__(self, server, bucket: str, prefix: str) -> None:
        self.server, self.bucket, self.prefix = server, bucket, prefix

    def __repr__(self) -> str:
        return f"<S3Place {self.url} at {self.server.endpoint}>"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def args(self) -> list[str]:
        """Store flags for create/mount/info (credentials go in the environment)."""
        return ["--endpoint", self.server.endpoint, "--addressing", "path"]

    def exists(self) -> bool:
        """S3 has no directories: a place exists when its bucket does."""
        return s3_request(self.server, "HEAD", self.bucket).status_code == 200

    def keys(self) -> dict[str, int]:
        listed = s3_list(self.server, self.bucket, self.prefix + "/") or {}
        return {k[len(self.prefix) + 1:]: size for k, size in listed.items()}

    def read(self, key: str) -> bytes | None:
        r = s3_request(self.server, "GET", self.bucket, f"{self.prefix}/{key}")
        if r.status_code == 404:
            return None
        assert r.status_code == 200, f"GET {self.url}/{key}: {r.status_code} {r.text[:300]}"
        return r.content

    def write(self, key: str, data: bytes) -> None:
        r = s3_request(self.server, "PUT", self.bucket, f"{self.prefix}/{key}", data=data)
        assert r.status_code == 200, f"PUT {self.url}/{key}: {r.status_code} {r.text[:300]}"

    def delete(self, key: str) -> None:
        r = s3_request(self.server, "DELETE", self.bucket, f"{self.prefix}/{key}")
        assert r.status_code == 204, f"DELETE {self.url}/{key}: {r.status_code} {r.text[:300]}"

    def snapshot(self) -> dict[str, bytes | None]:
        """Every object under the prefix: key -> bytes."""
        snap = {}
        for key in self.keys():
            data = self.read(key)
            assert data is not None, f"{self.url}/{key} listed but gone"
            snap[key] = data
        return snap

    def stray_entries(self) -> list[str]:
        """Keys that start with the prefix's name but lie outside `prefix/` (e.g. `vol-001.tmp`)."""
        listed = s3_list(self.server, self.bucket, self.prefix) or {}
        return sorted(k for k in listed if not k.startswith(self.prefix + "/"))


@dataclass
class Volume:
    place: FilePlace | S3Place
    size: int
    block_size: int
    key_args: list = field(default_factory=list)  # an encrypted volume's: --passphrase-file FILE

    @property
    def url(self) -> str:
        return self.place.url

    @property
    def store_args(self) -> list[str]:
        """The store flags (and an encrypted volume's key flags) every
        create/mount/info of this volume needs."""
        return self.place.args + self.key_args

    @property
    def kind(self) -> str:
        return self.place.kind

    @property
    def path(self) -> Path:
        """The directory of a file:// volume (only for checks about local paths)."""
        assert self.kind == "file", "test bug: .path of an s3:// volume"
        return self.place.path

    def keys(self) -> dict[str, int]:
        """Every object of the volume: key -> size."""
        return self.place.keys()

    def object_keys(self) -> set[str]:
        """Keys of every block object (all must be named as FORMAT.md says),
        not counting aliases: second copies a mount writes while a late
        delete may still land (FORMAT.md, "Late deletes"), as `info` does."""
        keys = {k for k in self.place.keys() if k.startswith("blocks/")}
        bad = sorted(k for k in keys if key_kind(k) not in ("block", "alias"))
        assert not bad, f"unexpected objects under blocks/: {bad[:5]}"
        return {k for k in keys if key_kind(k) == "block"}

    def object_bytes(self) -> int:
        """Bytes of the block objects (aliases aside, as object_keys)."""
        return sum(size for k, size in self.place.keys().items() if key_kind(k) == "block")

    def record_bytes(self) -> bytes:
        data = self.place.read("volume")
        assert data is not None, f"no volume record at {self.url}"
        return data

    def lease_keys(self) -> list[str]:
        return sorted(k for k in self.place.keys() if LEASE_KEY_RE.match(k))

    def lock_bytes(self) -> bytes | None:
        """The newest lease object (lock/<epoch>), or None."""
        keys = self.lease_keys()
        return self.place.read(keys[-1]) if keys else None

    def has_lock(self) -> bool:
        """Whether a lease is held (a lease object not marked released)."""
        data = self.lock_bytes()
        return data is not None and not json.loads(data).get("released")

    def snapshot(self) -> dict[str, bytes | None]:
        """All of the volume's place: key -> bytes (file: directories too, as `dir/` -> None)."""
        return self.place.snapshot()

    def assert_clean_layout(self, *, fence_tombstones: bool = False) -> dict[str, list[str]]:
        """The listing after a clean unmount is what FORMAT.md promises: `volume`,
        `blocks/…`, one or more `map/pages/…`, exactly one `map/roots/…`, no
        journal, one lease object, released (the last mount's), nothing else
        (file://: an empty scratch dir, no other directories; s3://: nothing
        next to the prefix). Returns keys by kind.
        `fence_tombstones`: a forced takeover happened within the last few
        minutes, so older released lease objects that fence it may remain."""
        by_kind: dict[str, list[str]] = {}
        unknown = []
        for key in sorted(self.place.keys()):
            kind = key_kind(key)
            if kind is None:
                unknown.append(key)
            else:
                by_kind.setdefault(kind, []).append(key)
        assert not unknown, f"{self.url}: keys outside the documented layout: {unknown[:10]}"
        stray = self.place.stray_entries()
        assert not stray, f"{self.url}: stray entries besides the volume's objects: {stray[:10]}"
        assert by_kind.get("volume") == ["volume"], f"{self.url}: no volume record"
        leases = by_kind.get("lock", [])
        held = [k for k in leases if not json.loads(self.place.read(k)).get("released")]
        assert not held, f"{self.url}: lock left after a clean unmount: {held}"
        assert len(leases) <= 1 or fence_tombstones, f"{self.url}: lease objects left behind: {leases}"
        assert not by_kind.get("journal"), f"{self.url}: journals left after a clean unmount: {by_kind['journal'][:5]}"
        roots = by_kind.get("root", [])
        assert len(roots) == 1, f"{self.url}: expected exactly one map root, found {roots}"
        assert by_kind.get("page"), f"{self.url}: no map pages"
        return by_kind


class FileStoreSpace:
    """Where a test's file:// volumes go: directories in its tmp dir."""

    kind = "file"
    env = None  # the plain environment

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def place(self, n: int) -> FilePlace:
        return FilePlace(self.root / f"vol{n}")

    def empty_place(self, n: int) -> FilePlace:
        """A place that exists and holds nothing (an empty directory)."""
        place = FilePlace(self.root / f"empty{n}")
        place.path.mkdir()
        return place

    def missing_place(self, n: int) -> FilePlace:
        """A place that does not exist (no such directory)."""
        return FilePlace(self.root / f"missing{n}")


class S3StoreSpace:
    """Where a test's s3:// volumes go: prefixes in the test's own bucket."""

    kind = "s3"

    def __init__(self, server, bucket: str) -> None:
        self.server, self.bucket = server, bucket

    @property
    def env(self) -> dict[str, str]:
        """The environment with the server's credentials (and no other AWS
        settings); the instance metadata service off, so that no test ever
        asks the machine it runs on for an EC2 role."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        return base | self.server.env() | {"AWS_EC2_METADATA_DISABLED": "true"}

    def place(self, n: int) -> S3Place:
        return S3Place(self.server, self.bucket, f"vol-{n:03d}")  # fixed width: no prefix is another's

    def empty_place(self, n: int) -> S3Place:
        """A prefix with nothing under it, in an existing bucket."""
        return S3Place(self.server, self.bucket, f"empty-{n:03d}")

    def missing_place(self, n: int) -> S3Place:
        """A bucket that does not exist."""
        return S3Place(self.server, f"no-such-{uuid.uuid4().hex[:12]}", f"missing-{n:03d}")


@dataclass
class Mount:
    volume: Volume
    path: Path
    read_only: bool
    log: Path
    pid: int | None = None
    pids: set = field(default_factory=set)
    filename: str = "file"  # the disk's name in the mount (mount --filename)

    @property
    def file(self) -> Path:
        return self.path / self.filename

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
    """The CLI driven for one test against one store; owns the cleanups of what it mounts."""

    def __init__(self, tmp_path: Path, janitor: Janitor, store: FileStoreSpace | S3StoreSpace,
                 fuse: str | None = None) -> None:
        self.tmp = tmp_path
        self.janitor = janitor
        self.store = store
        self.fuse = fuse  # the FUSE adapter mounts ask for (None: the daemon's default)
        self.mounts: list[Mount] = []
        self._n = 0
        self.env_override: dict[str, str] | None = None  # a test's own environment for every command

    @property
    def fuse_args(self) -> list[str]:
        """`--fuse ADAPTER` when this test asks for one: for mounts made without `mount()`."""
        return ["--fuse", self.fuse] if self.fuse else []

    def _next(self) -> int:
        self._n += 1
        return self._n

    def _name(self, prefix: str) -> Path:
        return self.tmp / f"{prefix}{self._next()}"

    @property
    def env(self) -> dict[str, str] | None:
        """Environment for every command: env_override when a test set one,
        else the store's credentials (s3), else the plain one."""
        return self.env_override if self.env_override is not None else self.store.env

    # ---- raw commands
    def run(self, *args, timeout: float = 120, check: bool = False, cwd=None):
        return run(CLI, *args, timeout=timeout, check=check, cwd=cwd, env=self.env)

    def ok(self, *args, timeout: float = 120):
        return self.run(*args, timeout=timeout, check=True)

    # ---- places and volumes
    def new_place(self) -> FilePlace | S3Place:
        """A fresh, unused place for a volume in this test's store."""
        return self.store.place(self._next())

    def empty_place(self) -> FilePlace | S3Place:
        return self.store.empty_place(self._next())

    def missing_place(self) -> FilePlace | S3Place:
        return self.store.missing_place(self._next())

    def create(self, size="64M", block_size: str | None = "64K", place=None, extra=()) -> Volume:
        place = place or self.new_place()
        args = ["create", place.url, "--size", str(size)]
        if block_size is not None:
            args += ["--block-size", str(block_size)]
        self.ok(*args, *place.args, *extra)
        assert "volume" in place.keys(), "create left no volume record"
        return Volume(place=place, size=parse_size(size),
                      block_size=parse_size(block_size) if block_size is not None else MiB)

    def create_encrypted(self, size="64M", block_size: str | None = "64K", passphrase: str = "correct horse 7",
                         extra=()) -> Volume:
        """create --encrypt, the passphrase from a file the Volume's key_args name."""
        secret = self._name("passphrase-").with_suffix(".txt")
        secret.write_text(passphrase + "\n")
        key_args = ["--passphrase-file", str(secret)]
        volume = self.create(size, block_size, extra=["--encrypt", *key_args, *extra])
        volume.key_args = key_args
        return volume

    def info(self, volume: Volume) -> dict:
        proc = self.ok("info", volume.url, "--json", *volume.store_args)
        return json.loads(proc.stdout)

    # ---- mounts
    def mount(self, volume: Volume, mountpoint: Path | None = None, *, read_only=False,
              cache_size: str | None = "32M", threads: int | None = 4, filename: str | None = None,
              extra=()) -> Mount:
        mp = mountpoint or self._name("mnt")
        mp.mkdir(parents=True, exist_ok=True)
        log = self._name("daemon-log-").with_suffix(".txt")
        m = Mount(volume=volume, path=mp, read_only=read_only, log=log, filename=filename or "file")
        self.mounts.append(m)
        # Registered before the attempt so that even a half-made mount is cleaned up.
        self.janitor.push(f"bucketdisk mount {mp}", lambda: self.cleanup_mount(m))
        # store flags from the volume when it knows them (test_s3_faults passes its own in extra)
        args = ["mount", volume.url, mp, "--log", log, *getattr(volume, "store_args", ())]
        if cache_size is not None:
            args += ["--cache-size", cache_size]
        if threads is not None:
            args += ["--threads", threads]
        if read_only:
            args.append("--read-only")
        if filename is not None:
            args.append(f"--filename={filename}")
        proc = self.run(*args, *self.fuse_args, *extra, timeout=MOUNT_TIMEOUT)
        assert proc.returncode == 0, (
            f"mount failed ({proc.returncode}): {proc.stderr}\n"
            f"--- daemon log ---\n{self._log_tail(log)}"
        )
        assert is_mounted(mp), "mount returned 0 but nothing is mounted there"
        st = self.stats(mp)
        if self.fuse:
            assert st["fuse_adapter"] == self.fuse, f"asked for --fuse {self.fuse}, served by {st['fuse_adapter']}"
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


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "stores(*kinds): the stores ('file', 's3') a test using `bd` runs on (default: all)")
    config.addinivalue_line(
        "markers", "fuse_adapters(mfusepy_on=STORES): run once more through --fuse mfusepy on those stores "
                   "(its other runs: --fuse lowlevel)")


TEST_FUSE = os.environ.get("BUCKETDISK_TEST_FUSE") or None  # the adapter of unmarked tests (None: default)


def pytest_generate_tests(metafunc):
    """Parametrize `store` (and so `bd`) over the stores: ids `[file]`, `[s3]`;
    with the fuse_adapters mark, `fuse_adapter` too (ids `[file-mfusepy]`)."""
    if "store" not in metafunc.fixturenames:
        return
    marker = metafunc.definition.get_closest_marker("stores")
    if marker is not None:
        stores = marker.args
    elif hasattr(metafunc.module, "STORES"):
        stores = metafunc.module.STORES
    elif "seaweed" in vars(metafunc.module):
        # The module runs its own S3 server and volumes (test_s3_faults) and uses
        # `bd` only to drive mounts: one run, no parameter.
        return
    else:
        stores = STORES
    unknown = set(stores) - set(STORES)
    assert stores and not unknown, f"bad stores {stores!r} for {metafunc.definition.nodeid}"
    adapters = metafunc.definition.get_closest_marker("fuse_adapters")
    if adapters is None:
        metafunc.parametrize("store", list(stores), indirect=True)
        return
    also = [s for s in stores if s in adapters.kwargs.get("mfusepy_on", STORES)]
    runs = [(s, "lowlevel") for s in stores] + [(s, "mfusepy") for s in also]
    metafunc.parametrize(("store", "fuse_adapter"), runs, indirect=True,
                         ids=[s if a == "lowlevel" else f"{s}-{a}" for s, a in runs])


@pytest.fixture(scope="session")
def seaweed():
    """One SeaweedFS S3 server (SigV4 on) for the session, started on first use;
    stopped by its PID at the end, with its data dir removed."""
    server = SeaweedFS()
    server.start()
    pid = server.pid
    try:
        yield server
    finally:
        server.stop()
        assert not pid_alive(pid), f"SeaweedFS pid {pid} still running after stop"


@pytest.fixture
def janitor():
    j = Janitor()
    yield j
    j.run_all()


@pytest.fixture
def store(request, tmp_path, janitor) -> FileStoreSpace | S3StoreSpace:
    """Where this test's volumes live: `file` (its tmp dir) or `s3` (a bucket of its own
    on the session's SeaweedFS, deleted after everything is unmounted)."""
    kind = getattr(request, "param", "file")
    if kind == "file":
        return FileStoreSpace(tmp_path)
    server = request.getfixturevalue("seaweed")
    assert server.running(), f"SeaweedFS is not running; its log ends:\n{server._log_tail()}"
    bucket = f"bd-{uuid.uuid4().hex[:12]}"
    server.create_bucket(bucket)
    # pushed first, so it runs last: after every mount of the test is gone
    janitor.push(f"delete bucket {bucket}", lambda: server.delete_bucket(bucket, force=True))
    return S3StoreSpace(server, bucket)


@pytest.fixture
def fuse_adapter(request) -> str | None:
    """The FUSE adapter this test's mounts use: its fuse_adapters run's, else
    BUCKETDISK_TEST_FUSE's, else None (the daemon's default)."""
    return getattr(request, "param", TEST_FUSE)


@pytest.fixture
def bd(request, cli, store, fuse_adapter, tmp_path, janitor) -> BD:
    driver = BD(tmp_path, janitor, store, fuse_adapter)
    request.node._bd_driver = driver
    return driver


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    """On a failure, attach the tails of the test's daemon logs (and the S3 server's)."""
    report = yield
    driver = getattr(item, "_bd_driver", None)
    if report.failed and driver is not None and not getattr(item, "_bd_logs_attached", False):
        item._bd_logs_attached = True
        for m in driver.mounts:
            report.sections.append((f"daemon log {m.log}", BD._log_tail(m.log, 3000)))
        if driver.store.kind == "s3":
            report.sections.append(("SeaweedFS log", driver.store.server._log_tail(20)))
    return report


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
