"""The systems under test, each a block device as a `file` in a FUSE mount:
bucketdisk (its CLI) and s3backer (run in the foreground by the harness),
with one interface: create, mount, unmount (to the durable point), abort;
and RssMonitor, which follows the mount daemon's peak memory."""
from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

from config import BUCKETDISK, CMD_TIMEOUT, DISK_SIZE, S3BACKER_FUSE_OPTS, S3BACKER_TUNING
from s3access import Place
from shell import BenchError, pid_alive, say, sh, tail, wait_gone

if TYPE_CHECKING:
    from harness import Harness


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
    create_flags: list[str] = []  # codec_cost.py's variants: --encrypt, --compress none
    mount_flags: list[str] = []   # cachedir_cost.py's: --cache-dir

    def env(self) -> dict:
        """The server's credentials; an encrypted volume's passphrase (a bench's, no secret;
        given for an encrypted volume only, as a plain one refuses a passphrase)."""
        if "--encrypt" not in self.create_flags:
            return self.h.target.env()
        return {**self.h.target.env(), "BUCKETDISK_PASSPHRASE": "bench passphrase"}

    def _store_flags(self) -> list[str]:
        flags = ["--endpoint", self.h.s3.endpoint, "--addressing", self.h.target.addressing]
        if self.h.target.region_flag:
            flags += ["--region", self.h.target.region_flag]
        return flags

    @property
    def url(self) -> str:
        return f"s3://{self.place.bucket}/{self.place.prefix}"

    def create(self) -> None:
        sh(BUCKETDISK, "create", self.url, "--size", DISK_SIZE, *self._store_flags(), *self.create_flags,
           env=self.env(), timeout=300)

    def mount(self) -> None:
        t = time.monotonic()
        sh(BUCKETDISK, "mount", self.url, self.mnt, *self._store_flags(), "--log", self.log, *self.mount_flags,
           env=self.env(), timeout=300)
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
