"""What the codec's choices cost (issue 15), bucketdisk only, W1 and W2 as
in the sequential group, each on a fresh volume of the same server:

  W1t/W2t  text-like data (log lines, about 3:1 under zstd level 1) on the
           default volume: the effective rate (disk MiB per second) beside
           the raw PUT rate; compression should make it at least 1.5x PUT
  W1e/W2e  the seq group's random data on an encrypted volume (--encrypt):
           within 15% of W1 and W2 on a plain one
  W1n      the same random data with --compress none: W1 (zstd on,
           incompressible data) should be within 10% of it
"""
from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import zstandard

from config import MIB
from shell import Interrupted, read_through, say, sh
from systems import RssMonitor
from workloads import timed_cold_read

if TYPE_CHECKING:
    from harness import Harness

CODEC_WORKLOADS = ("W1t", "W2t", "W1e", "W2e", "W1n")
# (workload pair, the volume's create flags, which source file)
VARIANTS = (("t", [], "text"), ("e", ["--encrypt"], "random"), ("n", ["--compress", "none"], "random"))


def text_like(path: Path, mib: int, seed: int) -> float:
    """Write `mib` MiB of log-like lines to `path`; returns zstd level 1's
    ratio on its first MiB (about 3:1)."""
    rng = random.Random(seed)
    verbs = ["GET", "PUT", "POST", "DELETE", "HEAD"]
    words = ["items", "users", "orders", "blobs", "sessions", "metrics", "health", "search"]
    with open(path, "wb") as f:
        for _ in range(mib):
            lines, size = [], 0
            while size < MIB:
                line = (f"2026-11-{rng.randint(1, 30):02d}T{rng.randint(0, 23):02d}:{rng.randint(0, 59):02d}:"
                        f"{rng.randint(0, 59):02d}.{rng.randint(0, 999999):06d}Z host-{rng.randint(1, 64)} "
                        f"api[{rng.randint(1000, 65000)}]: {rng.choice(verbs)} /v1/{rng.choice(words)}/"
                        f"{rng.randint(0, 10**9):x} {rng.choice([200, 200, 200, 204, 404, 500])} "
                        f"{rng.randint(0, 10**6)} {rng.random():.6f}s trace={rng.getrandbits(64):016x}\n")
                lines.append(line.encode())
                size += len(line)
            f.write(b"".join(lines)[:MIB])
    with open(path, "rb") as f:
        first = f.read(MIB)
    return len(first) / len(zstandard.ZstdCompressor(level=1).compress(first))


def codec_group(h: "Harness", run: int) -> None:
    """W1 and W2 of each variant the --only option selects."""
    for suffix, flags, source in VARIANTS:
        wanted = [w for w in (f"W1{suffix}", f"W2{suffix}") if w in h.args.only]
        if wanted:
            _measure(h, run, suffix, flags, h.text_src if source == "text" else h.src, wanted)


def _measure(h: "Harness", run: int, suffix: str, flags: list[str], src: Path, wanted: list[str]) -> None:
    cfg, res = h.cfg, h.results
    place = h.target.place(f"r{run}-bd-codec-{suffix}")
    rss = RssMonitor()
    disk = h.open_disk("bucketdisk", place, rss, f"codec-{suffix}")
    step = f"W1{suffix}"
    try:
        disk.create_flags = flags
        disk.create()
        disk.mount()
        read_through(src)
        t = time.monotonic()
        sh("dd", f"if={src}", f"of={disk.file}", "bs=1M", "conv=fsync,notrunc", "status=none")
        disk.unmount()
        secs = time.monotonic() - t
        res.add("bucketdisk", f"W1{suffix}_write_MiBps", cfg.seq_mib / secs)
        say(f"bucketdisk W1{suffix}: {cfg.seq_mib / secs:.1f} MiB/s durable ({' '.join(flags) or 'default'})")
        if f"W2{suffix}" in wanted:
            step = f"W2{suffix}"
            disk.mount()
            secs = timed_cold_read(disk, src, cfg.seq_mib)
            res.add("bucketdisk", f"W2{suffix}_read_MiBps", cfg.seq_mib / secs)
            say(f"bucketdisk W2{suffix}: {cfg.seq_mib / secs:.1f} MiB/s (data verified)")
            disk.unmount()
    except Interrupted:
        raise
    except Exception as e:
        h.fail("bucketdisk", run, step, e, disk)
    finally:
        rss.close()
        h.finish(disk, place)
