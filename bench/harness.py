"""The Harness: sets up the server (its own SeaweedFS or the user's
endpoint), the source data and a private copy of bucketdisk, runs each
workload group on each system for every run (workloads.py) and cleans up
everything it started, mounted or stored, also after a failure or Ctrl-C."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

import adapter_cost
import cachedir_cost
import codec_cost
import gentree
import workloads
from bucketdisk.store import S3Options
from config import ADAPTER, CACHE_DIR, CODEC, HISTORY, MIB, Config
from report import Results, bucketdisk_fingerprint
from s3access import S3, Place, Target
from shell import BenchError, say, sh
from systems import DISKS, Disk, RssMonitor


class Harness:
    """One invocation: its work dir, server, Target, source data and Results."""

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
        self.text_src = self.work / "text.bin"
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
        if {"W1t", "W2t"} & self.args.only:
            ratio = codec_cost.text_like(self.text_src, self.cfg.seq_mib, self.cfg.seed)
            say(f"text-like data: {self.cfg.seq_mib} MiB, zstd level 1 makes it {ratio:.1f}:1")
        if self.needs_seq() or {"W1e", "W2e", "W1n", "W1c", "W2c", "W6c", *ADAPTER} & self.args.only:
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

    def needs_history(self) -> bool:
        return bool(set(HISTORY) & self.args.only) and "bucketdisk" in self.args.systems

    def engine_s3(self) -> S3Options:
        """Where the H rows' engine (in this process) finds the server: its
        keys go in a private credentials file, since this process's
        environment has none for a server the harness started."""
        path = self.work / "aws-credentials"
        if not path.exists():
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(f"[default]\naws_access_key_id = {self.s3.access_key}\n"
                        f"aws_secret_access_key = {self.s3.secret_key}\n")
        return S3Options(endpoint=self.s3.endpoint, addressing=self.target.addressing,
                         region=self.s3.region, credentials_file=str(path), profile="default")

    # -------------------------------------------------------------- runs
    def run(self) -> None:
        for r in range(1, self.cfg.runs + 1):
            say(f"=== run {r}/{self.cfg.runs}")
            if "raw" in self.args.systems:
                workloads.raw(self, r)
            order = self.disk_systems()
            if r % 2 == 0:  # alternate who goes first, so drift hits both alike
                order.reverse()
            for system in order:
                rss = RssMonitor()
                try:
                    if self.needs_seq():
                        workloads.seq_group(self, system, r, rss)
                    if self.needs_tree():
                        workloads.tree_group(self, system, r, rss)
                finally:
                    rss.close()
                if rss.peak_kib:
                    self.results.add(system, "peak_rss_MiB", rss.peak_kib / 1024)
            if set(CODEC) & self.args.only and "bucketdisk" in self.args.systems:
                codec_cost.codec_group(self, r)
            if set(CACHE_DIR) & self.args.only and "bucketdisk" in self.args.systems:
                cachedir_cost.cache_dir_group(self, r)
            if set(ADAPTER) & self.args.only and "bucketdisk" in self.args.systems:
                adapter_cost.adapter_group(self, r)
            if self.needs_history():
                workloads.snapshot_costs(self, r)

    def fail(self, system: str, run: int, workload: str, err: BaseException, disk: Disk | None):
        """Record a failed workload (with the daemon's log tail) for the report."""
        log = disk.log_tail() if disk else ""
        say(f"FAILED {system} {workload} (run {run}): {err}")
        self.results.failures.append({"system": system, "run": run, "workload": workload,
                                      "error": str(err), "log_tail": log,
                                      "note": "the later workloads on this volume were skipped "
                                              "in this run"})

    def open_disk(self, system: str, place: Place, rss: RssMonitor, name: str) -> Disk:
        """A Disk of `system` on `place`, mounted at work/mnt-NAME; cleanup() aborts it."""
        mnt = self.work / f"mnt-{name}"
        mnt.mkdir(exist_ok=True)
        disk = DISKS[system](self, place, mnt, rss)
        self.active_disk = disk
        return disk

    def finish(self, disk: Disk, place: Place) -> None:
        """After a group, passed or failed: nothing left mounted, the volume deleted."""
        self.umount_loop()
        disk.abort()
        self.active_disk = None
        self.release(place)

    def release(self, place: Place) -> None:
        """Delete a volume's bucket or prefix; a failure is said, not raised
        (cleanup() tries again at the end)."""
        try:
            self.target.release(place)
        except (BenchError, requests.RequestException) as e:
            say(f"cleanup: could not delete {place}: {e}")
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
