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
import time

from bucketdisk.cli.units import parse_size
from bucketdisk.store import S3Options, open_store
from bucketdisk.volume import history, layout
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.volume import Volume

BLOCK = 1 << 20


def write_blocks(volume: Volume, indices, rng: random.Random) -> None:
    """Store and commit random content at these blocks (as flush threads do), then journal."""
    for index in indices:
        mark = volume.log_number()
        volume.commit([(index, volume.store_block(rng.randbytes(BLOCK), index), mark)])
    volume.sync()


def timed_snapshot(volume: Volume) -> tuple[float, int]:
    """(seconds, bytes PUT) of one snapshot."""
    put_before = volume.stats.snapshot()["bytes_put"]
    started = time.perf_counter()
    history.take(volume)
    return time.perf_counter() - started, volume.stats.snapshot()["bytes_put"] - put_before


def fresh(url: str, size: int, s3: S3Options) -> Volume:
    store = open_store(url, create=True, s3=s3)
    create_volume(store, size, BLOCK, force=True)
    return Volume(store, writable=True)


def cost_follows_change(url: str, size: int, s3: S3Options, rng: random.Random) -> None:
    volume = fresh(url, size, s3)
    blocks = size // BLOCK
    try:
        for share in (0.01, 0.10):
            write_blocks(volume, rng.sample(range(blocks), max(1, int(blocks * share))), rng)
            seconds, put = timed_snapshot(volume)
            print(f"snapshot after {share:.0%} of {size >> 30} GiB changed: {seconds:.2f} s, "
                  f"{put / 1024:.0f} KiB written")
    finally:
        volume.close()


def hourly(url: str, live: int, hours: int, s3: S3Options, rng: random.Random) -> None:
    volume = fresh(url, live, s3)
    blocks = live // BLOCK
    try:
        write_blocks(volume, range(blocks), rng)
        history.take(volume)
        for _ in range(hours):
            write_blocks(volume, rng.sample(range(blocks), max(1, blocks // 100)), rng)
            history.take(volume)
        volume.checkpoint()
    finally:
        volume.close()
    stored = sum(size for _, size in volume.store.list_sizes())
    print(f"{hours} hourly snapshots, 1% of {live >> 20} MiB changed each hour: "
          f"{stored / live:.2f}x the live data stored ({stored >> 20} MiB, "
          f"{len(list(volume.store.list(layout.SNAPSHOTS)))} snapshots)")


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
        cost_follows_change(f"{base}/change", args.size, s3, rng)
        hourly(f"{base}/hourly", args.live, args.hours, s3, rng)
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
