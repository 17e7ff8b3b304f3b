#!/usr/bin/env python3
"""bucketdisk vs s3backer vs the raw S3 server, in one run, on one server.

    sudo .venv/bin/python bench/run.py                   # fresh local SeaweedFS, 3 runs
    sudo .venv/bin/python bench/run.py --quick           # 1 run, small sizes (smoke test)
    sudo AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \\
        .venv/bin/python bench/run.py --endpoint http://minio:9000 --bucket scratch

Without --endpoint it starts its own SeaweedFS (ci/seaweedfs.py) on loopback
ports and stops it at the end. With --endpoint it works under a fresh prefix
in --bucket (which must exist) and deletes what it wrote there at the end.

Workloads (W1-W6 through the mounted `file` of each system), medians of --runs:
  raw  16 threads PUT, then GET, 1 MiB objects (requests + requests-aws4auth,
       one connection per thread)
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
  W1t, W2t, W1e, W2e, W1n   bucketdisk only: W1/W2 with text-like data (zstd
       ~3:1), on an encrypted volume, with --compress none (bench/codec_cost.py)
  W1c, W2c, W6c   bucketdisk only: W1, W2 (from the warm cache dir) and W6
       with --cache-dir (bench/cachedir_cost.py)
  W1m, W2m, W5m   bucketdisk only: W1, W2 and W5 warm through the portable
       FUSE adapter, --fuse mfusepy (bench/adapter_cost.py); W1, W2, W5 run
       through the default one, the libfuse 3 low-level binding
  H1   bucketdisk only (s3backer has no snapshots), through the engine, no
       mount: on a 20 GiB volume, a snapshot after 1% of its blocks changed,
       then one after 10% more; each one's time and bytes written
  H2   bucketdisk only, likewise: 1 GiB of live data, then 24 times: change
       1% of it and snapshot; all bytes stored over the live data (<= 1.3x)

Prints one table and writes the same as JSON (--json). Needs root (loop
mounts, drop_caches), fio, mkfs.ext4, and for s3backer the Debian package.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ci"))  # seaweedfs.py
sys.path.insert(0, str(HERE))  # the harness's modules, also when imported from elsewhere

from config import BUCKETDISK, SYSTEMS, WORKLOADS, Config  # noqa: E402
from harness import Harness  # noqa: E402
from report import print_table, report  # noqa: E402
from shell import BenchError, Interrupted, say  # noqa: E402


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
    p.add_argument("--link-rate", metavar="RATE",
                   help="cap the loopback interface at RATE (tc's units, e.g. 400mbit) for the run, as a "
                        "store on other machines behind a link would be; removed at the end")
    a = p.parse_args(argv)
    named = {w.upper(): w for w in WORKLOADS}  # W1t, W1T and w1t name one workload
    a.only = {named.get(w.strip().upper(), w.strip()) for w in a.only.split(",") if w.strip()}
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
    if a.link_rate and a.endpoint:
        p.error("--link-rate shapes the loopback interface: it goes with the local SeaweedFS, not --endpoint")
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
    if args.link_rate:
        need.append("tc")
    missing = [n for n in need if shutil.which(n) is None]
    if missing:
        raise BenchError(f"missing commands: {' '.join(missing)} (ci/install.sh installs them)")


def shape_loopback(rate: str) -> None:
    """A token bucket filter on `lo` (tc-tbf(8)): every loopback flow shares
    `rate`, the server's internal hops included, raw PUTs as much as bucketdisk's."""
    done = subprocess.run(["tc", "qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "512kb",
                           "latency", "100ms"], capture_output=True, text=True)
    if done.returncode:
        raise BenchError(f"tc could not shape lo at {rate}: {done.stderr.strip()}")
    say(f"loopback capped at {rate} (tc tbf) for this run")


def unshape_loopback() -> None:
    subprocess.run(["tc", "qdisc", "del", "dev", "lo", "root"], capture_output=True)


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
        if args.link_rate:
            shape_loopback(args.link_rate)
        h.setup()
        h.run()
        doc = report(h)
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
        if args.link_rate:
            unshape_loopback()
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
