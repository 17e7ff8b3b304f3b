#!/usr/bin/env python3
"""How far behind a live writer a read-only mount falls (4K blocks on S3).

    sudo .venv/bin/python bench/follow_lag.py                     # fresh local SeaweedFS, 120 s
    sudo .venv/bin/python bench/follow_lag.py --seconds 60 --size 256M --block-size 4K

Starts a local SeaweedFS (ci/seaweedfs.py), creates a volume, mounts it
writable and mounts it again with --read-only beside it.  One writer thread
does small fsynced writes as fast as the mount takes them: each fsync
covers one 4 KiB write at a random offset of --span bytes and a heartbeat
(its sequence number) in the first 4 KiB of `file`.  A reader polls the
read-only mount's heartbeat every --poll seconds (each open starts with a
cold kernel page cache).

The lag of a sample is the age of the oldest acknowledged fsync the reader
does not show: now minus the time the fsync after the one it shows
returned (0 when it shows the newest).  Samples in the first --warmup
seconds are dropped.  Prints the median, 90th percentile and maximum lag,
the writer's fsync rate, and the read-only mount's refreshes and requests.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "ci"))
from seaweedfs import SeaweedFS  # noqa: E402

CLI = str(Path(sys.executable).parent / "bucketdisk")
HEARTBEAT = struct.Struct("<8sQ")  # magic, sequence number
MAGIC = b"BDLAGHB1"
PAGE = 4096


def parse_size(text: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    return int(text[:-1]) * units[text[-1].upper()] if text[-1].upper() in units else int(text)


class Writer(threading.Thread):
    """pwrite + fsync in a loop; `acked[n]` is when fsync of heartbeat n
    returned (time.monotonic() seconds)."""

    def __init__(self, path: Path, span: int, seed: int) -> None:
        super().__init__(daemon=True)
        self.path, self.span, self.rng = path, span, random.Random(seed)
        self.acked: list[float] = [0.0]  # heartbeat 0: the empty volume
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        fd = os.open(self.path, os.O_RDWR)
        try:
            while not self.stop.is_set():
                seq = len(self.acked)
                offset = PAGE + self.rng.randrange((self.span - PAGE) // PAGE) * PAGE
                os.pwrite(fd, self.rng.randbytes(PAGE), offset)
                os.pwrite(fd, HEARTBEAT.pack(MAGIC, seq).ljust(PAGE, b"\0"), 0)
                os.fsync(fd)
                self.acked.append(time.monotonic())
        except BaseException as e:  # reported by main
            self.error = e
        finally:
            os.close(fd)


def shown_heartbeat(path: Path) -> int:
    """The heartbeat the read-only mount shows now (0: none yet)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        data = os.pread(fd, HEARTBEAT.size, 0)
    finally:
        os.close(fd)
    magic, seq = HEARTBEAT.unpack(data)
    return seq if magic == MAGIC else 0


def lag_of(acked: list[float], shown: int, now: float) -> float:
    """Seconds since the first acknowledged fsync the reader does not show returned."""
    return now - acked[shown + 1] if shown + 1 < len(acked) else 0.0


def stats_of(mnt: Path) -> dict:
    out = subprocess.run([CLI, "stats", str(mnt), "--json"], check=True, capture_output=True, text=True)
    return json.loads(out.stdout)


def measure(args, env: dict, url: str, work: Path) -> dict:
    """One run: mount, write and follow for args.seconds, unmount; the lag samples and counters."""
    wmnt, rmnt = work / "writer", work / "reader"
    wmnt.mkdir()
    rmnt.mkdir()
    run = lambda *a: subprocess.run([CLI, *a], check=True, env=env, stdout=subprocess.DEVNULL)  # noqa: E731
    where = ["--endpoint", env["AWS_ENDPOINT_URL"], "--addressing", "path"]
    run("create", url, "--size", args.size, "--block-size", args.block_size, *where)
    run("mount", url, str(wmnt), "--log", str(work / "writer.log"), *where)
    try:
        run("mount", url, str(rmnt), "--read-only", "--log", str(work / "reader.log"), *where)
        try:
            return follow(args, wmnt, rmnt)
        finally:
            subprocess.run([CLI, "unmount", str(rmnt)], env=env)
    finally:
        subprocess.run([CLI, "unmount", str(wmnt)], env=env)


def follow(args, wmnt: Path, rmnt: Path) -> dict:
    writer = Writer(wmnt / "file", parse_size(args.span), args.seed)
    before = stats_of(rmnt)
    started = time.monotonic()
    writer.start()
    samples = []
    while time.monotonic() - started < args.seconds and writer.error is None:
        time.sleep(args.poll)
        shown, now = shown_heartbeat(rmnt / "file"), time.monotonic()
        if now - started >= args.warmup:
            samples.append(lag_of(writer.acked, shown, now))
    writer.stop.set()
    writer.join()
    if writer.error is not None:
        raise writer.error
    after = stats_of(rmnt)
    counters = {k: after[k] - before.get(k, 0) for k in ("follow_refreshes", "objects_got", "bytes_got")}
    return {"samples": samples, "fsyncs": len(writer.acked) - 1, "seconds": time.monotonic() - started,
            **counters}


def report(result: dict) -> None:
    lags = sorted(result["samples"])
    p90 = lags[int(0.9 * (len(lags) - 1))]
    print(f"  lag: median {statistics.median(lags):5.1f} s, p90 {p90:5.1f} s, max {lags[-1]:5.1f} s "
          f"({len(lags)} samples)")
    print(f"  writer: {result['fsyncs']} fsyncs, {result['fsyncs'] / result['seconds']:.0f}/s; reader: "
          f"{result['follow_refreshes']} refreshes, {result['objects_got']} GETs, "
          f"{result['bytes_got'] / 2**20:.1f} MiB got")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=180, help="how long the writer writes (default 180)")
    parser.add_argument("--warmup", type=float, default=15, help="seconds of samples dropped (default 15)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between reader samples")
    parser.add_argument("--size", default="8G", help="volume size (default 8G)")
    parser.add_argument("--block-size", default="4K")
    parser.add_argument("--span", default="8G", help="bytes the random writes spread over (default 8G)")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", default="/var/tmp")
    parser.add_argument("--keep-workdir", action="store_true", help="keep the daemons' logs")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bd-follow-", dir=args.workdir))
    server = SeaweedFS(work / "seaweedfs").start()
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")} | server.env()
    try:
        print(f"{args.block_size} blocks, {args.size} volume, writes over {args.span}, "
              f"{args.seconds:.0f} s per run, SeaweedFS at {server.endpoint}")
        for r in range(args.runs):
            bucket = f"follow{r}"
            server.create_bucket(bucket)
            run_dir = work / f"run{r}"
            run_dir.mkdir()
            print(f"run {r + 1}/{args.runs}")
            report(measure(args, env, f"s3://{bucket}/vol", run_dir))
    finally:
        server.stop()
        if args.keep_workdir:
            print(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
