#!/usr/bin/env python3
"""What history costs: a snapshot follows what changed, and hourly
snapshots store little more than the live data.

    .venv/bin/python bench/history_cost.py                         # file:// in a temp dir
    .venv/bin/python bench/history_cost.py --url s3://bucket/prefix --endpoint http://host:9000
    .venv/bin/python bench/history_cost.py --size 20G --live 2G --hours 24

Works through the engine (no FUSE mount): blocks are stored and committed
as the device would, then `history.take` makes each snapshot, exactly as
`bucketdisk snapshot create` does.

1. Snapshot cost against change: on a volume of --size (1 MiB blocks,
   zeros but for what is written), write 1% of its blocks, snapshot, then
   10%, snapshot; prints each snapshot's time and the bytes it PUT.
2. Hourly history: a fresh volume with --live bytes of incompressible data,
   then --hours times: change 1% of the live blocks and snapshot; prints
   the bytes stored over the live data (the issue's target: at most 1.3).
"""
from __future__ import annotations

import argparse
import random
import shutil
import sys
import tempfile

from bucketdisk.cli.units import parse_size
from bucketdisk.store import S3Options
from snapshot_cost import cost_follows_change, hourly


def print_change(url: str, size: int, s3: S3Options, rng: random.Random) -> None:
    """Part 1: one line per snapshot, its time and the bytes it wrote."""
    for cost in cost_follows_change(url, size, s3, rng):
        print(f"snapshot after {cost.share:.0%} of {size >> 30} GiB changed: "
              f"{cost.seconds:.2f} s, {cost.bytes_put / 1024:.0f} KiB written")


def print_hourly(url: str, live: int, hours: int, s3: S3Options, rng: random.Random) -> None:
    """Part 2: the bytes stored over the live data after the hourly snapshots."""
    cost = hourly(url, live, hours, s3, rng)
    print(f"{hours} hourly snapshots, 1% of {live >> 20} MiB changed each hour: "
          f"{cost.ratio:.2f}x the live data stored ({cost.stored >> 20} MiB, "
          f"{cost.snapshots} snapshots)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", help="a place for the bench's volumes (default: a temp dir, file://)")
    parser.add_argument("--endpoint", help="the S3 endpoint, for an s3:// --url")
    parser.add_argument("--size", type=parse_size, default=20 << 30, help="volume of part 1 (default 20G)")
    parser.add_argument("--live", type=parse_size, default=1 << 30, help="live data of part 2 (default 1G)")
    parser.add_argument("--hours", type=int, default=24)
    args = parser.parse_args()
    tmp = None
    if args.url is None:
        tmp = tempfile.mkdtemp(prefix="bucketdisk-history-")
        base = f"file://{tmp}"
    else:
        base = args.url.rstrip("/")
    s3 = S3Options(endpoint=args.endpoint, addressing="path" if args.endpoint else "auto")
    rng = random.Random(1)
    try:
        print_change(f"{base}/change", args.size, s3, rng)
        print_hourly(f"{base}/hourly", args.live, args.hours, s3, rng)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
