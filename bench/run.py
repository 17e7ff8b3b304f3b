#!/usr/bin/env python3
"""bucketdisk vs s3backer vs the raw S3 server, in one run, on one server.

    sudo .venv/bin/python bench/run.py                   # fresh local SeaweedFS, 3 runs
    sudo .venv/bin/python bench/run.py --quick           # 1 run, small sizes (smoke test)
    sudo AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        .venv/bin/python bench/run.py --endpoint http://minio:9000 --bucket scratch

Without --endpoint it starts its own SeaweedFS (ci/seaweedfs.py) on loopback
ports and stops it at the end. With --endpoint it works under a fresh prefix
in --bucket (which must exist) and deletes what it wrote there at the end.

Workloads, all through the mounted `file` of each system, medians of --runs:
  raw  16 threads PUT, then GET, 1 MiB objects (urllib3 + a SigV4 signer, one
       connection per thread)
  W1   durable sequential write of 256 MiB of random data: dd conv=fsync, then
       unmount; the clock stops when the unmount has returned and the daemon
       has exited (s3backer's fsync does not flush, so for it that exit is the
       only durable point: it flushes its cache on unmount)
  W2   cold sequential read of it after a remount and dropped page caches
  W5   fio 4 KiB random reads over those 256 MiB, 4 jobs, O_DIRECT (so the
       daemon answers, not the page cache): warm = for N seconds right after
       W2 read everything; cold = after a remount, each job reads one 4 KiB
       piece of each of its 64 blocks once, in random order (every read a miss)
  W6   fio 4 KiB random writes over the same 256 MiB, 4 jobs, fsync every 64
       writes, for N seconds; reported as fio's IOPS and as IOPS until durable
       (all writes / time until fio and the unmount have returned)
  W3   on a second volume: mkfs.ext4, loop mount, cp -a of a generated tree
       (bench/gentree.py: 20,000 files, 200 MB, seeded), umount, unmount: durable
  W4   remount, drop caches, loop mount read-only, tar of the whole tree into a
       pipe that is read and discarded (not /dev/null: GNU tar skips reading then)
  RSS  peak resident memory (VmHWM) of the mount daemon over W1-W6

Prints one table and writes the same as JSON (--json). Needs root (loop
mounts, drop_caches), fio, mkfs.ext4, and for s3backer the Debian package.
"""
from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import random
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import requests
import urllib3
from requests.adapters import HTTPAdapter
from requests_aws4auth import AWS4Auth

from bucketdisk.store.credentials import Credentials
from bucketdisk.store.sigv4 import EMPTY_SHA256, Signer

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO / "ci"))
sys.path.insert(0, str(HERE))
import gentree  # noqa: E402

BUCKETDISK = Path(sys.executable).parent / "bucketdisk"
MIB = 1 << 20
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6")
SYSTEMS = ("bucketdisk", "s3backer", "raw")
DISK_SIZE = "2G"
S3BACKER_TUNING = ["--blockSize=1M", "--blockCacheSize=300", "--blockCacheThreads=20",
                   "--listBlocks"]
# s3backer links libfuse 2: without big_writes the kernel hands it 4 KiB writes
# (measured here: ~57 MiB/s instead of ~88 for W1). A tuned mount sets it.
S3BACKER_FUSE_OPTS = ["-o", "big_writes"]
RAW_THREADS = 16
TIMEOUT = (10, 120)  # requests (connect, read)
CMD_TIMEOUT = 1800  # seconds for any one command


class BenchError(RuntimeError):
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


def bucketdisk_fingerprint() -> dict:
    """What bucketdisk the venv holds: the checkout's commit and a digest of the
    installed package's files, to tell if it was reinstalled during a run."""
    import hashlib
    import importlib.util
    info: dict = {}
    spec = importlib.util.find_spec("bucketdisk")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        h = hashlib.sha256()
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
        info["installed_at"] = str(pkg)
        info["installed_sha256"] = h.hexdigest()[:16]
    try:
        git = ["git", "-C", str(REPO)]
        info["checkout_commit"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()
        info["checkout_dirty"] = bool(subprocess.run(
            git + ["status", "--porcelain", "--untracked-files=no", "--", "engine", "cli"],
            capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    return info


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


# ------------------------------------------------------------------- S3 access

class LeanClient:
    """The raw bench's client: one pooled connection, SigV4 (the signer from
    bucketdisk.store.sigv4, checked against AWS's examples), no retries."""

    def __init__(self, endpoint: str, signer: Signer) -> None:
        self.host = endpoint.split("://", 1)[1]
        self.signer = signer
        self.pool = urllib3.connection_from_url(endpoint, maxsize=1, retries=False)

    def send(self, method: str, bucket: str, key: str, body: bytes | None) -> tuple[int, bytes]:
        path = f"/{bucket}/{quote(key, safe='/-_.~')}"
        payload = hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256
        headers = self.signer.sign(method, self.host, path, "", {}, payload)
        r = self.pool.urlopen(method, path, body=body, headers=headers, preload_content=False,
                              timeout=urllib3.Timeout(connect=TIMEOUT[0], read=TIMEOUT[1]))
        try:
            return r.status, r.read()
        finally:
            r.release_conn()

    def close(self) -> None:
        self.pool.close()


class S3:
    """Path-style S3 client (requests): bucket admin for the harness; its
    lean_client() is the raw bench's."""

    def __init__(self, endpoint: str, access_key: str, secret_key: str, region: str):
        self.endpoint = endpoint.rstrip("/")
        self.access_key, self.secret_key, self.region = access_key, secret_key, region
        self._session = self.session()
        self._auth = self.auth()

    def auth(self) -> AWS4Auth:
        return AWS4Auth(self.access_key, self.secret_key, self.region, "s3")

    @staticmethod
    def session(pool: int = 4) -> requests.Session:
        s = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool, max_retries=0)
        s.mount("http://", adapter)
        s.mount("https://", adapter)
        return s

    def lean_client(self) -> "LeanClient":
        return LeanClient(self.endpoint, Signer(Credentials(self.access_key, self.secret_key), self.region))

    def url(self, bucket: str, key: str = "") -> str:
        return f"{self.endpoint}/{bucket}" + (f"/{quote(key, safe='/-_.~')}" if key else "")

    def request(self, method: str, bucket: str, key: str = "", **kw) -> requests.Response:
        kw.setdefault("timeout", TIMEOUT)
        kw.setdefault("auth", self._auth)
        session = kw.pop("session", self._session)
        return session.request(method, self.url(bucket, key), **kw)

    def create_bucket(self, bucket: str) -> None:
        r = self.request("PUT", bucket)
        if r.status_code != 200:
            raise BenchError(f"create bucket {bucket}: HTTP {r.status_code} {r.text[:200]}")

    def bucket_exists(self, bucket: str) -> bool:
        r = self.request("HEAD", bucket)
        return r.status_code == 200

    def list_keys(self, bucket: str, prefix: str) -> list[str]:
        keys: list[str] = []
        params = {"list-type": "2", "prefix": prefix, "max-keys": "1000"}
        while True:
            r = self.request("GET", bucket, params=params)
            if r.status_code == 404:
                return keys
            if r.status_code != 200:
                raise BenchError(f"list {bucket}/{prefix}: HTTP {r.status_code} {r.text[:200]}")
            root = ET.fromstring(r.content)
            for el in root.iter():
                el.tag = el.tag.split("}", 1)[-1]
            keys += [c.findtext("Key") for c in root.findall("Contents")]
            token = root.findtext("NextContinuationToken")
            if root.findtext("IsTruncated") != "true" or not token:
                return keys
            params["continuation-token"] = token

    def delete_prefix(self, bucket: str, prefix: str) -> None:
        import base64
        import hashlib
        from xml.sax.saxutils import escape
        keys = self.list_keys(bucket, prefix)
        for i in range(0, len(keys), 1000):
            body = ("<Delete><Quiet>true</Quiet>" + "".join(
                f"<Object><Key>{escape(k)}</Key></Object>" for k in keys[i:i + 1000])
                    + "</Delete>").encode()
            md5 = base64.b64encode(hashlib.md5(body).digest()).decode()
            r = self.request("POST", bucket, params={"delete": ""}, data=body,
                             headers={"Content-MD5": md5, "Content-Type": "application/xml"})
            if r.status_code != 200:
                raise BenchError(f"delete in {bucket}: HTTP {r.status_code} {r.text[:200]}")

    def delete_bucket(self, bucket: str) -> None:
        self.delete_prefix(bucket, "")
        r = self.request("DELETE", bucket)
        if r.status_code not in (200, 204, 404):
            raise BenchError(f"delete bucket {bucket}: HTTP {r.status_code} {r.text[:200]}")


@dataclass
class Place:
    bucket: str
    prefix: str  # without a trailing slash


class Target:
    """Where the benchmark writes: a bucket per unit on our own server (deleting
    a SeaweedFS bucket frees its volumes at once), or prefixes in the user's bucket."""

    def __init__(self, s3: S3, bucket: str | None, addressing: str, region_flag: str | None):
        self.s3 = s3
        self.own = bucket is None
        self.bucket = bucket
        self.addressing = addressing
        self.region_flag = region_flag
        self.run_id = dt.datetime.now().strftime("%Y%m%d-%H%M%S") + f"-{os.getpid()}"
        self.live: list[Place] = []

    def place(self, tag: str) -> Place:
        if self.own:
            p = Place(f"bench-{tag}", "disk")
            self.s3.create_bucket(p.bucket)
        else:
            p = Place(self.bucket, f"bucketdisk-bench-{self.run_id}/{tag}")
        self.live.append(p)
        return p

    def release(self, p: Place) -> None:
        if self.own:
            self.s3.delete_bucket(p.bucket)
        else:
            self.s3.delete_prefix(p.bucket, p.prefix + "/")
        if p in self.live:
            self.live.remove(p)

    def env(self) -> dict[str, str]:
        return os.environ | {"AWS_ACCESS_KEY_ID": self.s3.access_key,
                             "AWS_SECRET_ACCESS_KEY": self.s3.secret_key,
                             "AWS_REGION": self.s3.region}


# --------------------------------------------------------------- peak memory

class RssMonitor:
    """Polls VmHWM (peak RSS) of the current daemon PID every 50 ms."""

    def __init__(self):
        self.pid: int | None = None
        self.peak_kib = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def watch(self, pid: int | None) -> None:
        self.pid = pid
        self.sample()

    def sample(self) -> None:
        pid = self.pid
        if pid is None:
            return
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith(("VmHWM:", "VmRSS:")):
                    self.peak_kib = max(self.peak_kib, int(line.split()[1]))
        except (OSError, ValueError, IndexError):
            pass

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.sample()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


# ------------------------------------------------------------------- the disks

class Disk:
    name = "?"

    def __init__(self, h: "Harness", place: Place, mnt: Path, rss: RssMonitor):
        self.h, self.place, self.mnt, self.rss = h, place, mnt, rss
        self.pid: int | None = None
        self.log = h.work / f"{self.name}-{place.bucket}-{place.prefix.replace('/', '_')}.log"
        self.mount_seconds: list[float] = []

    @property
    def file(self) -> Path:
        return self.mnt / "file"

    def create(self) -> None:
        pass

    def mount(self) -> None:
        raise NotImplementedError

    def unmount(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def log_tail(self) -> str:
        return tail(self.log)


class Bucketdisk(Disk):
    name = "bucketdisk"

    def _store_flags(self) -> list[str]:
        flags = ["--endpoint", self.h.s3.endpoint, "--addressing", self.h.target.addressing]
        if self.h.target.region_flag:
            flags += ["--region", self.h.target.region_flag]
        return flags

    @property
    def url(self) -> str:
        return f"s3://{self.place.bucket}/{self.place.prefix}"

    def create(self) -> None:
        sh(BUCKETDISK, "create", self.url, "--size", DISK_SIZE, *self._store_flags(),
           env=self.h.target.env(), timeout=300)

    def mount(self) -> None:
        t = time.monotonic()
        sh(BUCKETDISK, "mount", self.url, self.mnt, *self._store_flags(), "--log", self.log,
           env=self.h.target.env(), timeout=300)
        self.mount_seconds.append(time.monotonic() - t)
        stats = json.loads(sh(BUCKETDISK, "stats", self.mnt, "--json", timeout=60))
        self.pid = int(stats["pid"])
        self.rss.watch(self.pid)

    def unmount(self) -> None:
        self.rss.sample()
        sh(BUCKETDISK, "unmount", self.mnt, env=self.h.target.env(), timeout=CMD_TIMEOUT)
        if self.pid is not None and not wait_gone(self.pid, 60):
            raise BenchError(f"bucketdisk daemon {self.pid} still running after unmount")
        self.pid = None
        self.rss.watch(None)

    def abort(self) -> None:
        if os.path.ismount(self.mnt):
            try:
                sh(BUCKETDISK, "unmount", self.mnt, env=self.h.target.env(), timeout=300)
            except BenchError as e:
                say(f"cleanup: bucketdisk unmount {self.mnt} failed: {e}")
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if self.pid is not None and pid_alive(self.pid):
            say(f"cleanup: stopping bucketdisk daemon pid {self.pid}")
            os.kill(self.pid, signal.SIGTERM)
            if not wait_gone(self.pid, 30):
                os.kill(self.pid, signal.SIGKILL)
                wait_gone(self.pid, 10)
        self.pid = None
        self.rss.watch(None)


class S3backer(Disk):
    name = "s3backer"

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.proc: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return ["s3backer", "-f", f"--accessFile={self.h.access_file}",
                f"--baseURL={self.h.s3.endpoint}/", *S3BACKER_TUNING, f"--size={DISK_SIZE}",
                f"--prefix={self.place.prefix}/", *S3BACKER_FUSE_OPTS,
                self.place.bucket, str(self.mnt)]

    def mount(self) -> None:
        if os.path.ismount(self.mnt):
            raise BenchError(f"{self.mnt} is already a mount point")
        t = time.monotonic()
        with open(self.log, "ab") as log:
            log.write(f"\n==== {shlex.join(self.command())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = self.proc.pid
        deadline = time.monotonic() + 120
        while not (os.path.ismount(self.mnt) and self.file.exists()):
            if self.proc.poll() is not None:
                self.proc, self.pid = None, None
                raise BenchError(f"s3backer exited before mounting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise BenchError(f"s3backer did not mount in 120 s:\n{self.log_tail()}")
            time.sleep(0.02)
        self.mount_seconds.append(time.monotonic() - t)
        self.rss.watch(self.pid)

    def unmount(self) -> None:
        """Durable point: fusermount -u has returned AND s3backer has exited
        (fsync is a no-op in s3backer; it writes its dirty cache on unmount)."""
        self.rss.sample()
        sh("fusermount", "-u", self.mnt, timeout=300)
        try:
            code = self.proc.wait(timeout=CMD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise BenchError(f"s3backer pid {self.pid} still running {CMD_TIMEOUT}s after unmount")
        self.proc, self.pid = None, None
        self.rss.watch(None)
        if code != 0:
            raise BenchError(f"s3backer exited with {code}:\n{self.log_tail()}")

    def abort(self) -> None:
        if os.path.ismount(self.mnt):
            subprocess.run(["fusermount", "-u", str(self.mnt)], capture_output=True)
            if os.path.ismount(self.mnt):
                subprocess.run(["fusermount", "-u", "-z", str(self.mnt)], capture_output=True)
        if self.proc is not None:
            try:
                self.proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                say(f"cleanup: stopping s3backer pid {self.proc.pid}")
                self.proc.terminate()
                try:
                    self.proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        self.proc, self.pid = None, None
        self.rss.watch(None)


DISKS = {"bucketdisk": Bucketdisk, "s3backer": S3backer}


# ------------------------------------------------------------------ the harness

@dataclass
class Config:
    runs: int = 3
    seq_mib: int = 256
    tree_files: int = 20_000
    tree_bytes: int = 200_000_000
    fio_seconds: int = 10
    raw_objects: int = 512
    raw_get_passes: int = 2
    seed: int = 1

    @classmethod
    def quick(cls) -> "Config":
        return cls(runs=1, seq_mib=64, tree_files=2_000, tree_bytes=20_000_000,
                   fio_seconds=3, raw_objects=64, raw_get_passes=1)


# (key, label, unit, better, workload, raw key shown in the raw column)
ROWS = [
    ("W1_write_MiBps", "W1 durable seq write {seq} MiB", "MiB/s", "higher", "W1", "raw_put_MiBps"),
    ("W2_read_MiBps", "W2 cold seq read {seq} MiB", "MiB/s", "higher", "W2", "raw_get_MiBps"),
    ("W3_seconds", "W3 mkfs+cp tree+durable unmount", "s", "lower", "W3", None),
    ("W4_seconds", "W4 cold tar of the tree", "s", "lower", "W4", None),
    ("W5_warm_iops", "W5 4K rand read, warm, 4 jobs", "IOPS", "higher", "W5", None),
    ("W5_cold_iops", "W5 4K rand read, cold, 4 jobs", "IOPS", "higher", "W5", None),
    ("W6_iops", "W6 4K rand write, fsync/64 (fio)", "IOPS", "higher", "W6", None),
    ("W6_durable_iops", "W6 same, until durable unmount", "IOPS", "higher", "W6", None),
    ("peak_rss_MiB", "peak RSS of the mount daemon", "MiB", "lower", None, None),
]


@dataclass
class Results:
    values: dict = field(default_factory=dict)   # system -> key -> [per-run values]
    extra: dict = field(default_factory=dict)    # system -> key -> [per-run values]
    failures: list = field(default_factory=list)

    def add(self, system: str, key: str, value: float, extra: bool = False) -> None:
        (self.extra if extra else self.values).setdefault(system, {}).setdefault(key, []).append(value)

    def median(self, system: str, key: str) -> float | None:
        v = self.values.get(system, {}).get(key)
        return statistics.median(v) if v else None


class Interrupted(BaseException):
    pass


class Harness:
    def __init__(self, args, cfg: Config):
        self.args, self.cfg = args, cfg
        self.results = Results()
        self.work = Path(tempfile.mkdtemp(prefix="bucketdisk-bench-", dir=args.workdir))
        self.server = None
        self.s3: S3 | None = None
        self.target: Target | None = None
        self.access_file = self.work / "s3backer.passwd"
        self.active_disk: Disk | None = None
        self.loop_mnt = self.work / "ext4"
        self.src = self.work / "seq.bin"
        self.tree = self.work / "tree"
        self.tree_info: dict = {}
        self.loadavg_start = os.getloadavg()
        self.bucketdisk_start = bucketdisk_fingerprint()

    def snapshot_bucketdisk(self) -> None:
        """Run a private copy of the installed package (PYTHONPATH, inherited by
        the CLI and its daemons), so a reinstall of the venv during the run does
        not mix two versions into the medians."""
        src = self.bucketdisk_start.get("installed_at")
        if not src or "bucketdisk" not in self.args.systems:
            return
        dest = self.work / "pkg"
        shutil.copytree(src, dest / "bucketdisk",
                        ignore=shutil.ignore_patterns("__pycache__"))
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(dest)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
        where = sh(sys.executable, "-c", "import bucketdisk; print(bucketdisk.__file__)").strip()
        if not where.startswith(str(dest)):
            raise BenchError(f"the bucketdisk snapshot is not used ({where})")

    # ------------------------------------------------------------- setup
    def setup(self) -> None:
        a = self.args
        self.snapshot_bucketdisk()
        if a.endpoint:
            ak, sk = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
            if not ak or not sk:
                raise BenchError("--endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                 "in the environment")
            region = a.region or os.environ.get("AWS_REGION") or \
                os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            self.s3 = S3(a.endpoint, ak, sk, region)
            if not self.s3.bucket_exists(a.bucket):
                raise BenchError(f"bucket {a.bucket!r} not found at {a.endpoint} "
                                 "(or the credentials cannot see it)")
            self.target = Target(self.s3, a.bucket, a.addressing, a.region)
            say(f"endpoint {a.endpoint}, bucket {a.bucket}, prefix "
                f"bucketdisk-bench-{self.target.run_id}/")
        else:
            from seaweedfs import SeaweedFS
            self.server = SeaweedFS(self.work / "seaweedfs")
            self.server.start()
            self.s3 = S3(self.server.endpoint, self.server.access_key, self.server.secret_key,
                         self.server.region)
            self.target = Target(self.s3, None, "path", None)
            say(f"SeaweedFS pid {self.server.pid} at {self.server.endpoint} "
                f"(ready in {self.server.start_seconds:.1f}s)")
        fd = os.open(self.access_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"{self.s3.access_key}:{self.s3.secret_key}\n")
        if self.needs_seq():
            with open(self.src, "wb") as f:
                for _ in range(self.cfg.seq_mib):
                    f.write(os.urandom(MIB))
        if self.needs_tree():
            t = time.monotonic()
            self.tree_info = gentree.generate(self.tree, self.cfg.tree_files, self.cfg.tree_bytes,
                                              self.cfg.seed)
            say(f"tree: {self.tree_info['files']} files, {self.tree_info['dirs']} dirs, "
                f"{self.tree_info['bytes'] / 1e6:.0f} MB in {time.monotonic() - t:.1f}s")

    def needs_seq(self) -> bool:
        return bool({"W1", "W2", "W5", "W6"} & self.args.only) and self.disk_systems()

    def needs_tree(self) -> bool:
        return bool({"W3", "W4"} & self.args.only) and self.disk_systems()

    def disk_systems(self) -> list[str]:
        return [s for s in self.args.systems if s in DISKS]

    # -------------------------------------------------------------- runs
    def run(self) -> None:
        for r in range(1, self.cfg.runs + 1):
            say(f"=== run {r}/{self.cfg.runs}")
            if "raw" in self.args.systems:
                self.raw(r)
            order = self.disk_systems()
            if r % 2 == 0:  # alternate who goes first, so drift hits both alike
                order.reverse()
            for system in order:
                rss = RssMonitor()
                try:
                    if self.needs_seq():
                        self.seq_group(system, r, rss)
                    if self.needs_tree():
                        self.tree_group(system, r, rss)
                finally:
                    rss.close()
                if rss.peak_kib:
                    self.results.add(system, "peak_rss_MiB", rss.peak_kib / 1024)

    def fail(self, system: str, run: int, workload: str, err: BaseException, disk: Disk | None):
        log = disk.log_tail() if disk else ""
        say(f"FAILED {system} {workload} (run {run}): {err}")
        self.results.failures.append({"system": system, "run": run, "workload": workload,
                                      "error": str(err), "log_tail": log,
                                      "note": "the later workloads on this volume were skipped "
                                              "in this run"})

    def _disk(self, system: str, place: Place, rss: RssMonitor, name: str) -> Disk:
        mnt = self.work / f"mnt-{name}"
        mnt.mkdir(exist_ok=True)
        disk = DISKS[system](self, place, mnt, rss)
        self.active_disk = disk
        return disk

    def _finish(self, disk: Disk, place: Place) -> None:
        self.umount_loop()
        disk.abort()
        self.active_disk = None
        try:
            self.target.release(place)
        except (BenchError, requests.RequestException) as e:
            say(f"cleanup: could not delete {place}: {e}")

    def seq_group(self, system: str, run: int, rss: RssMonitor) -> None:
        """W1, W2, W5 warm, W5 cold, W6 on one volume."""
        only, cfg, res = self.args.only, self.cfg, self.results
        place = self.target.place(f"r{run}-{system[:3]}-seq")
        disk = self._disk(system, place, rss, f"{system}-seq")
        step = "W1"
        try:
            disk.create()
            disk.mount()
            read_through(self.src)
            say(f"{system} W1: write {cfg.seq_mib} MiB, fsync, unmount")
            t = time.monotonic()
            sh("dd", f"if={self.src}", f"of={disk.file}", "bs=1M", "conv=fsync,notrunc",
               "status=none")
            t_fsync = time.monotonic() - t
            disk.unmount()
            secs = time.monotonic() - t
            if "W1" in only:
                res.add(system, "W1_write_MiBps", cfg.seq_mib / secs)
                res.add(system, "W1_fsync_returned_s", t_fsync, extra=True)
                res.add(system, "W1_durable_s", secs, extra=True)
            say(f"{system} W1: {cfg.seq_mib / secs:.1f} MiB/s "
                f"(fsync returned at {t_fsync:.2f}s, durable at {secs:.2f}s)")

            if {"W2", "W5", "W6"} & only:
                step = "W2"
                disk.mount()
            if {"W2", "W5"} & only:
                drop_caches()
                t = time.monotonic()
                sh("dd", f"if={disk.file}", "of=/dev/null", "bs=1M", f"count={cfg.seq_mib}",
                   "status=none")
                secs = time.monotonic() - t
                sh("cmp", "-n", cfg.seq_mib * MIB, self.src, disk.file)  # data came back right
                if "W2" in only:
                    res.add(system, "W2_read_MiBps", cfg.seq_mib / secs)
                say(f"{system} W2: {cfg.seq_mib / secs:.1f} MiB/s (data verified)")

            if "W5" in only:
                step = "W5 warm"
                iops = self.fio_randread_warm(disk)
                res.add(system, "W5_warm_iops", iops)
                say(f"{system} W5 warm: {iops:.0f} IOPS")
                step = "W5 cold"
                disk.unmount()
                disk.mount()
                drop_caches()
                iops = self.fio_randread_cold(disk)
                res.add(system, "W5_cold_iops", iops)
                say(f"{system} W5 cold: {iops:.0f} IOPS")

            if "W6" in only:
                step = "W6"
                t = time.monotonic()
                fio = self.fio(disk, "randwrite", "--numjobs=4", "--fsync=64",
                               f"--size={cfg.seq_mib}M", "--time_based",
                               f"--runtime={cfg.fio_seconds}")
                t_fio = time.monotonic() - t
                ios = fio["write"]["total_ios"]
                disk.unmount()
                secs = time.monotonic() - t
                res.add(system, "W6_iops", fio["write"]["iops"])
                res.add(system, "W6_durable_iops", ios / secs)
                res.add(system, "W6_writes", ios, extra=True)
                res.add(system, "W6_unmount_s", secs - t_fio, extra=True)
                say(f"{system} W6: {fio['write']['iops']:.0f} IOPS by fio, {ios / secs:.0f} "
                    f"until durable ({ios} writes, unmount took {secs - t_fio:.1f}s)")
            elif disk.pid is not None:
                disk.unmount()
            res.add(system, "mount_s", statistics.median(disk.mount_seconds), extra=True)
        except Interrupted:
            raise
        except Exception as e:  # report, clean up, go on with the next group
            self.fail(system, run, step, e, disk)
        finally:
            self._finish(disk, place)

    def tree_group(self, system: str, run: int, rss: RssMonitor) -> None:
        """W3 and W4 on a second volume."""
        only, res = self.args.only, self.results
        place = self.target.place(f"r{run}-{system[:3]}-tree")
        disk = self._disk(system, place, rss, f"{system}-tree")
        self.loop_mnt.mkdir(exist_ok=True)
        step = "W3"
        try:
            disk.create()
            disk.mount()
            warm_tree(self.tree)
            say(f"{system} W3: mkfs.ext4, loop mount, cp -a tree, umount, unmount")
            t = time.monotonic()
            sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
               disk.file)
            sh("mount", "-o", "loop", disk.file, self.loop_mnt)
            sh("cp", "-a", f"{self.tree}/.", f"{self.loop_mnt}/")
            sh("umount", self.loop_mnt)
            disk.unmount()
            secs = time.monotonic() - t
            if "W3" in only:
                res.add(system, "W3_seconds", secs)
            say(f"{system} W3: {secs:.1f}s ({self.tree_info['bytes'] / 1e6 / secs:.1f} MB/s)")

            if "W4" in only:
                step = "W4"
                disk.mount()
                drop_caches()
                t = time.monotonic()
                sh("mount", "-o", "loop,ro", disk.file, self.loop_mnt)
                with tempfile.TemporaryFile() as errf:
                    tar = subprocess.Popen(["tar", "-C", str(self.loop_mnt), "-cf", "-", "."],
                                           stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                           stderr=errf)
                    nbytes = 0
                    with tar.stdout:
                        while chunk := tar.stdout.read(MIB):
                            nbytes += len(chunk)
                    if tar.wait() != 0:
                        errf.seek(0)
                        raise BenchError(f"tar exited {tar.returncode}: "
                                         f"{errf.read()[-1000:].decode(errors='replace')}")
                secs = time.monotonic() - t
                if nbytes < self.tree_info["bytes"]:
                    raise BenchError(f"tar gave {nbytes} bytes, the tree has "
                                     f"{self.tree_info['bytes']}")
                sh("diff", "-r", "-q", "--no-dereference", "--exclude=lost+found", self.tree,
                   self.loop_mnt)
                res.add(system, "W4_seconds", secs)
                say(f"{system} W4: {secs:.1f}s ({nbytes / 1e6 / secs:.1f} MB/s of tar; "
                    f"tree verified)")
                sh("umount", self.loop_mnt)
                disk.unmount()
        except Interrupted:
            raise
        except Exception as e:
            self.fail(system, run, step, e, disk)
        finally:
            self._finish(disk, place)

    # --------------------------------------------------------------- fio
    def fio(self, disk: Disk, rw: str, *extra: str, jobfile: Path | None = None) -> dict:
        base = ["fio", "--output-format=json"]
        if jobfile is not None:
            args = base + [str(jobfile)]
        else:
            args = base + ["--name=bench", f"--filename={disk.file}", f"--rw={rw}", "--bs=4k",
                           "--ioengine=psync", "--group_reporting", "--randrepeat=1",
                           *extra]
        out = sh(*args, timeout=CMD_TIMEOUT)
        doc = json.loads(out[out.index("{"):])
        job = doc["jobs"][0]
        if job.get("error"):
            raise BenchError(f"fio error {job['error']}: {shlex.join(args)}")
        return job

    def fio_randread_warm(self, disk: Disk) -> float:
        job = self.fio(disk, "randread", "--numjobs=4", "--direct=1",
                       f"--size={self.cfg.seq_mib}M", "--time_based",
                       f"--runtime={self.cfg.fio_seconds}")
        return job["read"]["iops"]

    def fio_randread_cold(self, disk: Disk) -> float:
        """4 jobs, each a quarter of the region: one 4 KiB read in each 1 MiB block,
        blocks in a seeded random order (an iolog: fio's own random offsets
        repeat blocks once reads are block-aligned)."""
        rng = random.Random(self.cfg.seed)
        blocks = list(range(self.cfg.seq_mib))
        rng.shuffle(blocks)
        jobfile = self.work / "cold.fio"
        lines = ["[global]", "ioengine=psync", "direct=1", "replay_no_stall=1",
                 "group_reporting=1"]
        for j in range(4):
            log = self.work / f"cold-{j}.iolog"
            with open(log, "w") as f:
                f.write(f"fio version 2 iolog\n{disk.file} add\n{disk.file} open\n")
                for b in blocks[j::4]:
                    f.write(f"{disk.file} read {b * MIB + rng.randrange(MIB // 4096) * 4096} 4096\n")
                f.write(f"{disk.file} close\n")
            lines += [f"[cold{j}]", f"read_iolog={log}"]
        jobfile.write_text("\n".join(lines) + "\n")
        job = self.fio(disk, "randread", jobfile=jobfile)
        ios, ms = job["read"]["total_ios"], job["read"]["runtime"]
        if ios != self.cfg.seq_mib:
            raise BenchError(f"cold fio did {ios} reads, expected {self.cfg.seq_mib}")
        return ios / (max(ms, 1) / 1000)

    # --------------------------------------------------------------- raw
    def raw(self, run: int) -> None:
        cfg = self.cfg
        place = self.target.place(f"r{run}-raw")
        try:
            keys = [f"{place.prefix}/obj-{i:06d}" for i in range(cfg.raw_objects)]
            bodies = [os.urandom(MIB) for _ in range(RAW_THREADS)]

            def worker(t: int, method: str, todo: list[str], errors: list) -> None:
                """urllib3 and a SigV4 signer, nothing else: one connection,
                each body signed (SHA-256) and sent or read in one piece."""
                client = self.s3.lean_client()
                try:
                    for key in todo:
                        status, body = client.send(method, place.bucket, key,
                                                   bodies[t] if method == "PUT" else None)
                        if status != 200 or (method == "GET" and len(body) != MIB):
                            errors.append(f"{method} {key}: HTTP {status} {body[:200]!r}")
                            return
                except Exception as e:
                    errors.append(f"{method}: {e}")
                finally:
                    client.close()

            def phase(method: str, todo: list[str]) -> float:
                errors: list[str] = []
                threads = [threading.Thread(target=worker, args=(t, method, todo[t::RAW_THREADS],
                                                                 errors))
                           for t in range(RAW_THREADS)]
                t0 = time.monotonic()
                for th in threads:
                    th.start()
                for th in threads:
                    th.join()
                secs = time.monotonic() - t0
                if errors:
                    raise BenchError(errors[0])
                return len(todo) / secs  # MiB/s: objects are 1 MiB

            put = phase("PUT", keys)
            get = phase("GET", keys * cfg.raw_get_passes)
            self.results.add("raw", "raw_put_MiBps", put)
            self.results.add("raw", "raw_get_MiBps", get)
            say(f"raw: PUT {put:.1f} MiB/s, GET {get:.1f} MiB/s "
                f"({RAW_THREADS} threads, {cfg.raw_objects} x 1 MiB)")
        except Interrupted:
            raise
        except Exception as e:
            self.fail("raw", run, "raw", e, None)
        finally:
            try:
                self.target.release(place)
            except (BenchError, requests.RequestException) as e:
                say(f"cleanup: could not delete {place}: {e}")

    # ----------------------------------------------------------- cleanup
    def umount_loop(self) -> None:
        if os.path.ismount(self.loop_mnt):
            p = subprocess.run(["umount", str(self.loop_mnt)], capture_output=True)
            if p.returncode != 0:
                subprocess.run(["umount", "-l", str(self.loop_mnt)], capture_output=True)
        disk = self.active_disk
        if disk is not None and disk.pid is not None:  # loop devices still on our file
            p = subprocess.run(["losetup", "-j", str(disk.file)], capture_output=True, text=True)
            for line in p.stdout.splitlines():
                subprocess.run(["losetup", "-d", line.split(":", 1)[0]], capture_output=True)

    def cleanup(self) -> None:
        if self.active_disk is not None:
            self.umount_loop()
            self.active_disk.abort()
        if self.target is not None:
            for place in list(self.target.live):
                try:
                    self.target.release(place)
                except Exception as e:
                    say(f"cleanup: could not delete {place}: {e}")
        if self.server is not None:
            self.server.stop()
        if self.args.keep_workdir:
            say(f"work dir kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)

    # ------------------------------------------------------------ report
    def report(self) -> dict:
        cfg, res = self.cfg, self.results
        systems = self.args.systems
        rows = []
        for key, label, unit, better, workload, raw_key in ROWS:
            if workload is not None and workload not in self.args.only:
                continue
            if key == "peak_rss_MiB" and not self.disk_systems():
                continue
            bd, sb = res.median("bucketdisk", key), res.median("s3backer", key)
            raw = res.median("raw", raw_key) if raw_key else None
            row = {"key": key, "workload": label.format(seq=cfg.seq_mib), "unit": unit,
                   "better": better, "bucketdisk": bd, "s3backer": sb,
                   "raw": raw, "raw_key": raw_key,
                   "runs": {s: res.values.get(s, {}).get(key, []) for s in ("bucketdisk", "s3backer")}}
            if raw_key:
                row["runs"]["raw"] = res.values.get("raw", {}).get(raw_key, [])
            # advantage: > 1 means bucketdisk is better, whatever the unit
            row["bd_vs_s3backer"] = (None if not bd or not sb else
                                     bd / sb if better == "higher" else sb / bd)
            row["bd_vs_raw"] = bd / raw if bd and raw else None
            rows.append(row)
        return {
            "command": shlex.join([sys.executable] + sys.argv),
            "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
            "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                     "loadavg_start": self.loadavg_start, "loadavg_end": os.getloadavg(),
                     "mem_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                      / (1 << 30), 1)},
            "server": self.args.endpoint or f"local SeaweedFS ({self.server_version()})",
            "config": cfg.__dict__ | {"disk_size": DISK_SIZE, "systems": systems,
                                      "workloads": sorted(self.args.only),
                                      "s3backer_options": S3BACKER_TUNING + S3BACKER_FUSE_OPTS,
                                      "raw_threads": RAW_THREADS},
            "versions": self.versions(),
            "bucketdisk_install": self.bucketdisk_start | {
                "run_from_snapshot": str(self.work / "pkg"),
                "venv_changed_during_run": bucketdisk_fingerprint().get("installed_sha256")
                != self.bucketdisk_start.get("installed_sha256")},
            "tree": self.tree_info,
            "rows": rows,
            "extra": res.extra,
            "failures": res.failures,
        }

    def server_version(self) -> str:
        try:
            from seaweedfs import find_weed
            return sh(find_weed(), "version", timeout=30).strip().splitlines()[0]
        except Exception:
            return "weed"

    def versions(self) -> dict:
        v = {}
        for name, cmd in (("bucketdisk", [BUCKETDISK, "--version"]), ("fio", ["fio", "--version"])):
            try:
                v[name] = sh(*cmd, timeout=30).strip()
            except Exception:
                pass
        try:
            v["s3backer"] = subprocess.run(["s3backer", "--version"], capture_output=True,
                                           text=True).stderr.splitlines()[0].strip()
        except Exception:
            pass
        return v


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit == "s":
        return f"{v:.2f}"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def ratio(v: float | None) -> str:
    if not v:
        return "-"
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def print_table(doc: dict) -> None:
    rows = doc["rows"]
    runs = doc["config"]["runs"]
    header = ["workload", "unit", "bucketdisk", "s3backer", "raw", "bd vs s3backer", "bd vs raw"]
    table = [header]
    failed = {(f["system"], f["workload"].split()[0]) for f in doc["failures"]}
    for r in rows:
        wl = r["key"].split("_")[0]
        cells = []
        for s in ("bucketdisk", "s3backer"):
            v = r[s]
            cells.append("FAIL" if v is None and (s, wl) in failed else fmt(v, r["unit"]))
        raw = fmt(r["raw"], r["unit"])
        if r["raw_key"] and r["raw"] is not None:
            raw += " (PUT)" if "put" in r["raw_key"] else " (GET)"
        table.append([r["workload"], r["unit"], *cells, raw,
                      ratio(r["bd_vs_s3backer"]), ratio(r["bd_vs_raw"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print(f"\nbucketdisk vs s3backer vs raw server: {doc['server']}; "
          f"median of {runs} run{'s' if runs != 1 else ''}")
    for i, row in enumerate(table):
        print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                        for j, c in enumerate(row)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("bd vs s3backer: > 1 means bucketdisk is better (faster, more IOPS, less memory); "
          "bd vs raw: bucketdisk MiB/s over the raw PUT/GET MiB/s.")
    if any(r["key"].startswith("W6") for r in rows) and "s3backer" in doc["config"]["systems"]:
        print("s3backer's fsync does not flush: its W6 fio IOPS are not durable; its durable "
              "points are the unmounts (fusermount -u returned and the process exited).")
    bi = doc["bucketdisk_install"]
    print(f"bucketdisk: {doc['versions'].get('bucketdisk', '?')}, installed package "
          f"{bi.get('installed_sha256', '?')}, checkout {bi.get('checkout_commit', '?')}"
          f"{' (engine/cli modified)' if bi.get('checkout_dirty') else ''}")
    if bi.get("venv_changed_during_run"):
        print("note: bucketdisk was reinstalled in the venv during this run; the run used "
              "a copy of the package taken at its start.")
    for f in doc["failures"]:
        print(f"\nFAILED: {f['system']} {f['workload']} (run {f['run']}; {f['note']}): "
              f"{f['error']}")
        if f["log_tail"]:
            print("  log tail:\n    " + f["log_tail"].replace("\n", "\n    "))


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--endpoint", help="an existing S3 endpoint (credentials from "
                   "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY); default: start a local SeaweedFS")
    p.add_argument("--bucket", help="existing bucket to work in (with --endpoint)")
    p.add_argument("--region", help="signing region (default AWS_REGION, else us-east-1)")
    p.add_argument("--addressing", choices=("path", "virtual", "auto"), default="path",
                   help="bucketdisk's addressing with --endpoint (default path; the raw client "
                        "and s3backer always use path style)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 run, 64 MiB, a 2,000-file/20 MB tree, 3 s fio")
    p.add_argument("--runs", type=int, help="runs to take the median of (default 3)")
    p.add_argument("--only", default=",".join(WORKLOADS),
                   help="workloads, e.g. W1,W2 (default all; W2/W5/W6 still do W1's write "
                        "and W4 W3's copy as setup)")
    p.add_argument("--systems", default=",".join(SYSTEMS),
                   help="bucketdisk,s3backer,raw (default all three)")
    p.add_argument("--json", type=Path, help="also write the results here as JSON")
    p.add_argument("--workdir", default="/var/tmp",
                   help="where the temp dir for mounts, data and tree goes (default /var/tmp)")
    p.add_argument("--keep-workdir", action="store_true", help="keep it (logs) at the end")
    a = p.parse_args(argv)
    a.only = {w.strip().upper() for w in a.only.split(",") if w.strip()}
    a.systems = [s.strip().lower() for s in a.systems.split(",") if s.strip()]
    if bad := a.only - set(WORKLOADS):
        p.error(f"unknown workloads {sorted(bad)}; choose from {','.join(WORKLOADS)}")
    if bad := set(a.systems) - set(SYSTEMS):
        p.error(f"unknown systems {sorted(bad)}; choose from {','.join(SYSTEMS)}")
    if a.endpoint and not a.bucket:
        p.error("--endpoint needs --bucket")
    if a.bucket and not a.endpoint:
        p.error("--bucket needs --endpoint")
    if a.runs is not None and a.runs < 1:
        p.error("--runs must be at least 1")
    return a


def preflight(args) -> None:
    if os.geteuid() != 0:
        raise BenchError("run as root: loop mounts, drop_caches and FUSE allow_other need it")
    need = ["fio", "dd", "cmp", "diff", "tar", "cp", "mount", "umount", "losetup", "mkfs.ext4"]
    if "bucketdisk" in args.systems:
        need.append("fusermount3")
        if not BUCKETDISK.exists():
            raise BenchError(f"no {BUCKETDISK}: run with the venv's python (.venv/bin/python)")
    if "s3backer" in args.systems:
        need += ["s3backer", "fusermount"]
    missing = [n for n in need if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing commands: {' '.join(missing)} (ci/install.sh installs them)")


def main(argv=None) -> int:
    args = parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    if args.runs:
        cfg.runs = args.runs
    try:
        preflight(args)
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    h = Harness(args, cfg)
    doc = None
    code = 0
    try:
        h.setup()
        h.run()
        doc = h.report()
    except Interrupted as e:
        say(f"interrupted ({e}); cleaning up")
        code = 130
    except BenchError as e:
        print(f"bench: error: {e}", file=sys.stderr)
        code = 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the cleanup finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        h.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if doc is None:
        return code or 1
    print_table(doc)
    if args.json:
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        print(f"\nJSON: {args.json}")
    say("done")
    return 1 if doc["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
