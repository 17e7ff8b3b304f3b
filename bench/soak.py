#!/usr/bin/env python3
"""The soak: a long write storm through ext4 on one mount, and the mount
daemon's memory, threads and open files sampled all along.

    sudo .venv/bin/python bench/soak.py                          # 10 minutes, fresh local SeaweedFS
    sudo .venv/bin/python bench/soak.py --minutes 2 --store file  # a file:// volume in the work dir
    sudo AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        .venv/bin/python bench/soak.py --endpoint http://minio:9000 --bucket scratch

Creates a volume (--size, --block-size), mounts it with bucketdisk's
defaults unless --cache-size/--threads say otherwise, makes ext4 on it and
loop-mounts it; then for --minutes runs, side by side:
  fio   in cycles of 30 s: one job writing sequentially (1 MiB writes, fsync
        every 8, --seq-rate), one writing 4 KiB at random offsets (fsync every
        16, --rand-iops); new random data in every buffer, half of it
        compressible; every other cycle deletes fio's files first, so they
        are laid out anew;
  churn rounds of 100 files of 0-64 KiB (every 10th fsynced), the round
        before the last deleted;
  trim  fstrim of the ext4 every --trim-every seconds (punch holes: deleted
        files' blocks freed in the store).
Every --interval seconds it samples the daemon (PID from `bucketdisk stats`):
VmRSS and VmHWM from /proc/PID/status, its Threads, and its open files
(entries of /proc/PID/fd); and from `bucketdisk stats` the cache's bytes and
the dirty blocks.  Prints one row per sample, then start, end and max of
each, and the slope of RSS over the second half (least squares, MiB per
minute); --json FILE writes the samples and the summary.

Exit status: 0 flat; 1 if between the end of the first minute and the end
RSS grew by more than --rss-margin MiB (default 32), threads by more than
--thread-margin (default 4) or open files by more than --fd-margin (default
8), or the storm failed; 2 when it cannot start; 130 on Ctrl-C or SIGTERM.
Everything it starts is stopped by PID and everything it mounts unmounted
by path, also on Ctrl-C.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ci"))  # seaweedfs.py
sys.path.insert(0, str(HERE))

from config import BUCKETDISK, MIB  # noqa: E402
from shell import BenchError, Interrupted, kill_group, pid_alive, say, sh, wait_gone  # noqa: E402

FIO_CYCLE = 30  # seconds per fio run
CHURN_FILES = 100


# ------------------------------------------------------------------ the daemon
def proc_sample(pid: int) -> dict:
    """VmRSS, VmHWM (MiB), Threads and open files of a process, from /proc."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM", "Threads"):
            fields[key] = int(value.split()[0])
    return {"rss_MiB": fields["VmRSS"] / 1024, "hwm_MiB": fields["VmHWM"] / 1024,
            "threads": fields["Threads"], "fds": len(os.listdir(f"/proc/{pid}/fd"))}


def daemon_stats(mnt: Path) -> dict:
    return json.loads(sh(BUCKETDISK, "stats", mnt, "--json", timeout=60))


def mounted(path: Path) -> bool:
    """Anything mounted at path (a dead FUSE mount too, which os.path.ismount misses)."""
    target = os.path.realpath(path)
    with open("/proc/self/mountinfo") as f:
        return any(line.split()[4] == target for line in f)


def is_daemon(pid: int) -> bool:
    try:
        return pid_alive(pid) and b"bucketdisk" in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


# ------------------------------------------------------------------ the storm
class Storm:
    """fio, churn and fstrim on threads of their own until stop(); every
    command in its own process group, killed whole by stop()."""

    def __init__(self, ext: Path, work: Path, args) -> None:
        self.ext, self.work, self.args = ext, work, args
        self.stop_event = threading.Event()
        self.procs: set[subprocess.Popen] = set()
        self.lock = threading.Lock()
        self.errors: list[str] = []
        self.done = {"fio_cycles": 0, "fio_written_MiB": 0.0, "churn_rounds": 0, "files_created": 0,
                     "files_deleted": 0, "fstrims": 0, "trimmed_MiB": 0.0}
        self.threads = [threading.Thread(target=self._guard, args=(f,), name=f.__name__, daemon=True)
                        for f in (self._fio, self._churn, self._trim)]

    def start(self, deadline: float) -> None:
        self.deadline = deadline
        for t in self.threads:
            t.start()

    def stop(self) -> None:
        self.stop_event.set()
        with self.lock:
            procs = list(self.procs)
        for p in procs:
            kill_group(p)
        for t in self.threads:
            t.join(120)
            if t.is_alive():
                self.errors.append(f"{t.name} did not stop within 120 s")

    def _guard(self, fn) -> None:
        try:
            fn()
        except Exception as e:  # the storm failed: said at the end, exit status 1
            if not self.stop_event.is_set():
                self.errors.append(f"{fn.__name__}: {e}")
                say(f"storm: {fn.__name__} failed: {e}")

    def _run(self, *argv, timeout: float) -> str:
        """A command in its own process group, killable by stop()."""
        with tempfile.TemporaryFile() as out:
            p = subprocess.Popen([str(a) for a in argv], stdin=subprocess.DEVNULL, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            with self.lock:
                self.procs.add(p)
            try:
                code = p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                kill_group(p)
                raise BenchError(f"timed out after {timeout:.0f}s: {argv[0]}") from None
            finally:
                with self.lock:
                    self.procs.discard(p)
            out.seek(0)
            text = out.read().decode(errors="replace")
        if code != 0 and not self.stop_event.is_set():
            raise BenchError(f"{argv[0]} exited {code}: {text.strip()[-400:]}")
        return text

    def _fio(self) -> None:
        a, d = self.args, self.ext / "fio"
        d.mkdir(exist_ok=True)
        cycle = 0
        while not self.stop_event.is_set():
            runtime = int(min(FIO_CYCLE, self.deadline - time.monotonic()))
            if runtime < 1:
                return
            if cycle % 2 == 1:
                for f in d.iterdir():
                    f.unlink()
            # --thread: fio's jobs as threads of one process; as processes each
            # calls setsid(), and killing fio's process group would leave them running
            common = ["--thread", "--ioengine=psync", "--refill_buffers", "--buffer_compress_percentage=50",
                      "--time_based", f"--runtime={runtime}", "--randrepeat=0"]
            out = self._run("fio", "--output-format=json", f"--directory={d}",
                            "--name=seq", "--rw=write", "--bs=1M", f"--size={a.seq_size}", "--fsync=8",
                            f"--rate={a.seq_rate}", *common,
                            "--name=rand", "--rw=randwrite", "--bs=4k", f"--size={a.rand_size}",
                            "--fsync=16", f"--rate_iops={a.rand_iops}", *common,
                            timeout=runtime + 600)
            if self.stop_event.is_set():
                return
            doc = json.loads(out[out.index("{"):])
            self.done["fio_written_MiB"] += sum(j["write"]["io_bytes"] for j in doc["jobs"]) / MIB
            self.done["fio_cycles"] += 1
            cycle += 1

    def _churn(self) -> None:
        rng = random.Random(1)
        root = self.ext / "churn"
        root.mkdir(exist_ok=True)
        n = 0
        while not self.stop_event.is_set():
            d = root / f"r{n}"
            d.mkdir()
            for i in range(CHURN_FILES):
                with open(d / f"f{i}", "wb") as f:
                    f.write(rng.randbytes(rng.randrange(64 * 1024)))
                    if i % 10 == 0:
                        f.flush()
                        os.fsync(f.fileno())
                if self.stop_event.is_set():
                    return
            self.done["files_created"] += CHURN_FILES
            old = root / f"r{n - 2}"
            if old.exists():
                self.done["files_deleted"] += len(os.listdir(old))
                shutil.rmtree(old)
            self.done["churn_rounds"] += 1
            n += 1
            self.stop_event.wait(0.5)

    def _trim(self) -> None:
        while not self.stop_event.wait(self.args.trim_every):
            out = self._run("fstrim", "-v", self.ext, timeout=600)
            if self.stop_event.is_set():
                return
            self.done["fstrims"] += 1
            words = out.split()  # "/mnt: 123 MiB (128974848 bytes) trimmed"
            for w in words:
                if w.startswith("(") and w[1:].isdigit():
                    self.done["trimmed_MiB"] += int(w[1:]) / MIB


# ------------------------------------------------------------------ the soak
class Soak:
    """Set-up, the sampled storm, and a clean-up that undoes all of it."""

    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="bucketdisk-soak-", dir=args.workdir))
        self.mnt, self.ext = self.work / "mnt", self.work / "ext4"
        self.server = self.s3 = self.target = self.place = None
        self.env = dict(os.environ)
        self.url = ""
        self.store_flags: list[str] = []
        self.pid: int | None = None
        self.storm: Storm | None = None
        self.samples: list[dict] = []

    def setup(self) -> None:
        a = self.args
        if a.store == "file":
            self.url = f"file://{self.work / 'volume'}"
        else:
            from s3access import S3, Target
            if a.endpoint:
                ak, sk = os.environ.get("AWS_ACCESS_KEY_ID"), os.environ.get("AWS_SECRET_ACCESS_KEY")
                if not ak or not sk:
                    raise BenchError("--endpoint needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY")
                region = a.region or os.environ.get("AWS_REGION") or "us-east-1"
                self.s3 = S3(a.endpoint, ak, sk, region)
                if not self.s3.bucket_exists(a.bucket):
                    raise BenchError(f"bucket {a.bucket!r} not found at {a.endpoint}")
                self.target = Target(self.s3, a.bucket, a.addressing, a.region)
            else:
                from seaweedfs import SeaweedFS
                self.server = SeaweedFS(self.work / "seaweedfs")
                self.server.start()
                say(f"SeaweedFS pid {self.server.pid} at {self.server.endpoint}")
                self.s3 = S3(self.server.endpoint, self.server.access_key, self.server.secret_key,
                             self.server.region)
                self.target = Target(self.s3, None, "path", None)
            self.place = self.target.place("soak")
            self.url = f"s3://{self.place.bucket}/{self.place.prefix}"
            self.env = self.target.env()
            self.store_flags = ["--endpoint", self.s3.endpoint, "--addressing", self.target.addressing]
            if self.target.region_flag:
                self.store_flags += ["--region", self.target.region_flag]
        sh(BUCKETDISK, "create", self.url, "--size", a.size, "--block-size", a.block_size,
           *self.store_flags, env=self.env, timeout=300)
        self.mnt.mkdir()
        tuning = (["--cache-size", a.cache_size] if a.cache_size else []) + \
                 (["--threads", a.threads] if a.threads else [])
        sh(BUCKETDISK, "mount", self.url, self.mnt, "--log", self.work / "daemon.log", *self.store_flags,
           *tuning, env=self.env, timeout=300)
        self.pid = int(daemon_stats(self.mnt)["pid"])
        sh("mkfs.ext4", "-q", "-F", self.mnt / "file", timeout=600)
        self.ext.mkdir()
        sh("mount", "-o", "loop", self.mnt / "file", self.ext, timeout=120)
        say(f"{self.url} ({a.size}, blocks of {a.block_size}) mounted, daemon pid {self.pid}; "
            f"ext4 at {self.ext}")

    def sample(self, t: float) -> dict:
        if not pid_alive(self.pid):
            raise BenchError(f"the mount daemon {self.pid} is gone; its log ends:\n"
                             f"{(self.work / 'daemon.log').read_text(errors='replace')[-2000:]}")
        s = {"t_s": round(t, 1), **proc_sample(self.pid)}  # before `stats`, whose connection is an fd
        st = daemon_stats(self.mnt)
        s |= {"cache_MiB": st["cache_bytes"] / MIB, "dirty_blocks": st["dirty_blocks"],
              "put_GiB": st["bytes_put"] / (1 << 30), "errors": st["errors"]}
        self.samples.append(s)
        print(f"{s['t_s']:7.0f} {s['rss_MiB']:8.1f} {s['hwm_MiB']:8.1f} {s['threads']:7d} {s['fds']:5d} "
              f"{s['cache_MiB']:8.1f} {s['dirty_blocks']:6d} {s['put_GiB']:7.2f} {s['errors']:6d}", flush=True)
        return s

    def run(self) -> None:
        a = self.args
        print(f"{'t (s)':>7} {'RSS MiB':>8} {'HWM MiB':>8} {'threads':>7} {'fds':>5} {'cache':>8} "
              f"{'dirty':>6} {'put GiB':>7} {'errors':>6}", flush=True)
        t0 = time.monotonic()
        end = t0 + a.minutes * 60
        self.storm = Storm(self.ext, self.work, a)
        self.storm.start(end)
        self.sample(0)
        k = 1
        while True:
            nxt = min(t0 + k * a.interval, end)
            time.sleep(max(0.0, nxt - time.monotonic()))
            self.sample(time.monotonic() - t0)
            if nxt >= end:
                break
            k += 1
        say("storm over; stopping it")
        self.storm.stop()

    def cleanup(self) -> None:
        if self.storm is not None:
            self.storm.stop()
        for attempt in range(10):  # killed fio processes may take a moment to let go
            if not mounted(self.ext):
                break
            p = subprocess.run(["umount", str(self.ext)], capture_output=True, text=True)
            if p.returncode != 0:
                say(f"cleanup: umount {self.ext}: {p.stderr.strip()}")
                time.sleep(1)
        else:
            subprocess.run(["umount", "-l", str(self.ext)], capture_output=True)
        if mounted(self.mnt):
            p = subprocess.run([str(BUCKETDISK), "unmount", str(self.mnt)], capture_output=True, text=True,
                               env=self.env, timeout=1800)
            if p.returncode != 0:
                say(f"cleanup: unmount failed: {p.stderr.strip()}; lazy unmount")
                subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], capture_output=True)
        if self.pid is not None and is_daemon(self.pid) and not wait_gone(self.pid, 60):
            say(f"cleanup: stopping the daemon pid {self.pid}")
            for sig, grace in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
                if is_daemon(self.pid):
                    os.kill(self.pid, sig)
                    if wait_gone(self.pid, grace):
                        break
        if self.place is not None:
            try:
                self.target.release(self.place)
            except Exception as e:
                say(f"cleanup: could not delete {self.url}: {e}")
        if self.server is not None:
            self.server.stop()
        if self.args.keep_workdir:
            say(f"work dir kept: {self.work}")
        else:
            shutil.rmtree(self.work, ignore_errors=True)


# ------------------------------------------------------------------ the verdict
def slope_per_minute(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, value) points, per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    var = sum((t - mt) ** 2 for t, _ in points)
    return 60 * sum((t - mt) * (v - mv) for t, v in points) / var if var else 0.0


def summarize(samples: list[dict], args) -> dict:
    first, last = samples[0], samples[-1]
    base = min(samples, key=lambda s: abs(s["t_s"] - 60))  # the end of the first minute
    half = [s for s in samples if s["t_s"] >= last["t_s"] / 2]
    figures = {k: {"start": first[k], "after_1_min": base[k], "end": last[k], "max": max(s[k] for s in samples)}
               for k in ("rss_MiB", "hwm_MiB", "threads", "fds", "cache_MiB")}
    growth = {k: last[k] - base[k] for k in ("rss_MiB", "threads", "fds")}
    limits = {"rss_MiB": args.rss_margin, "threads": args.thread_margin, "fds": args.fd_margin}
    over = {k: growth[k] for k in growth if growth[k] > limits[k]}
    return {"figures": figures, "growth_after_1_min": growth, "margins": limits, "over_margin": over,
            "rss_slope_second_half_MiB_per_min": slope_per_minute([(s["t_s"], s["rss_MiB"]) for s in half])}


def print_summary(summary: dict, done: dict, errors: list[str]) -> None:
    print()
    print(f"{'':10} {'start':>8} {'1 min':>8} {'end':>8} {'max':>8}")
    for k, label in (("rss_MiB", "RSS MiB"), ("hwm_MiB", "HWM MiB"), ("threads", "threads"),
                     ("fds", "open fds"), ("cache_MiB", "cache MiB")):
        f = summary["figures"][k]
        print(f"{label:10} {f['start']:8.1f} {f['after_1_min']:8.1f} {f['end']:8.1f} {f['max']:8.1f}")
    g = summary["growth_after_1_min"]
    print(f"growth from the end of minute 1 to the end: RSS {g['rss_MiB']:+.1f} MiB, threads "
          f"{g['threads']:+d}, open files {g['fds']:+d}; RSS slope over the second half "
          f"{summary['rss_slope_second_half_MiB_per_min']:+.2f} MiB/min")
    print("storm: " + ", ".join(f"{k} {v:.0f}" if isinstance(v, float) else f"{k} {v}" for k, v in done.items()))
    for k, v in summary["over_margin"].items():
        print(f"NOT FLAT: {k} grew by {v:+.1f} (margin {summary['margins'][k]})")
    for e in errors:
        print(f"STORM FAILED: {e}")
    if not summary["over_margin"] and not errors:
        print("flat: within the margins")


# ------------------------------------------------------------------ main
def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=10.0, help="length of the storm (default 10; at least 2)")
    p.add_argument("--interval", type=float, default=10.0, help="seconds between samples (default 10)")
    p.add_argument("--store", choices=("s3", "file"), default="s3",
                   help="s3: a local SeaweedFS of its own, or --endpoint; file: a file:// volume in the work dir")
    p.add_argument("--endpoint", help="an existing S3 endpoint (credentials from AWS_ACCESS_KEY_ID/"
                   "AWS_SECRET_ACCESS_KEY); the volume goes under a fresh prefix in --bucket, deleted at the end")
    p.add_argument("--bucket", help="existing bucket to work in (with --endpoint)")
    p.add_argument("--region", help="signing region (default AWS_REGION, else us-east-1)")
    p.add_argument("--addressing", choices=("path", "virtual", "auto"), default="path")
    p.add_argument("--size", default="4G", help="volume size (default 4G)")
    p.add_argument("--block-size", default="1M", help="volume block size (default 1M)")
    p.add_argument("--cache-size", help="the mount's --cache-size (default: bucketdisk's)")
    p.add_argument("--threads", type=int, help="the mount's --threads (default: bucketdisk's)")
    p.add_argument("--seq-size", default="256M", help="fio's sequential file (default 256M)")
    p.add_argument("--seq-rate", default="4m", help="fio's sequential write rate (default 4m: 4 MiB/s)")
    p.add_argument("--rand-size", default="256M", help="fio's random-write file (default 256M)")
    p.add_argument("--rand-iops", type=int, default=200, help="fio's 4 KiB random writes per second (default 200)")
    p.add_argument("--trim-every", type=float, default=60.0, help="seconds between fstrims (default 60)")
    p.add_argument("--rss-margin", type=float, default=32.0, help="MiB (default 32)")
    p.add_argument("--thread-margin", type=int, default=4, help="threads (default 4)")
    p.add_argument("--fd-margin", type=int, default=8, help="open files (default 8)")
    p.add_argument("--json", type=Path, help="also write the samples and the summary here")
    p.add_argument("--workdir", default="/var/tmp", help="where its temp dir goes (default /var/tmp)")
    p.add_argument("--keep-workdir", action="store_true", help="keep it (the daemon's log) at the end")
    a = p.parse_args(argv)
    if a.minutes < 2:
        p.error("--minutes must be at least 2 (growth is measured from the end of the first minute)")
    if a.interval <= 0 or a.interval > a.minutes * 30:
        p.error("--interval must be positive and leave a few samples")
    if bool(a.endpoint) != bool(a.bucket):
        p.error("--endpoint and --bucket go together")
    if a.endpoint and a.store == "file":
        p.error("--endpoint is for --store s3")
    return a


def main(argv=None) -> int:
    args = parse_args(argv)
    if os.geteuid() != 0:
        print("soak: error: run as root (loop mounts)", file=sys.stderr)
        return 2
    missing = [c for c in ("fio", "mkfs.ext4", "mount", "umount", "fstrim", "fusermount3") if not shutil.which(c)]
    if missing or not BUCKETDISK.exists():
        print(f"soak: error: missing {' '.join(missing) or BUCKETDISK} (ci/install.sh; run with .venv/bin/python)",
              file=sys.stderr)
        return 2

    def on_signal(signum, frame):
        raise Interrupted(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    soak = Soak(args)
    code, stage = 0, "setup"
    try:
        soak.setup()
        stage = "storm"
        soak.run()
    except Interrupted as e:
        say(f"interrupted ({e}); cleaning up")
        code = 130
    except BenchError as e:
        print(f"soak: error: {e}", file=sys.stderr)
        code = 2 if stage == "setup" else 1
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # let the clean-up finish
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        soak.cleanup()
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if code or len(soak.samples) < 2:
        return code or 1
    summary = summarize(soak.samples, args)
    errors = soak.storm.errors if soak.storm else []
    print_summary(summary, soak.storm.done, errors)
    if args.json:
        doc = {"url": soak.url, "store": args.store, "minutes": args.minutes,
               "interval_s": args.interval, "settings": {k: v for k, v in vars(args).items()
                                                         if k not in ("json", "workdir", "keep_workdir")},
               "samples": soak.samples, "summary": summary, "storm": soak.storm.done, "storm_errors": errors}
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")
        print(f"JSON: {args.json}")
    return 1 if summary["over_margin"] or errors else 0


if __name__ == "__main__":
    sys.exit(main())
