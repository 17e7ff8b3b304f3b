"""What history costs, measured through the engine (no FUSE mount): the
time and bytes of a snapshot after some of a volume's blocks changed, and
the bytes stored after hourly snapshots. Blocks are stored and committed
as the device would, then `history.take` makes each snapshot, exactly as
`bucketdisk snapshot create` does.

Shared by bench/history_cost.py (its own command) and bench/run.py's
H1 and H2 rows; each function returns its figures and prints nothing.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass

from bucketdisk.store import S3Options, open_store
from bucketdisk.volume import history, layout
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.volume import Volume

BLOCK = 1 << 20  # bytes: the block size of every volume here
CHANGE_SHARES = (0.01, 0.10)  # of the volume's blocks, changed before each snapshot of part 1


@dataclass
class SnapshotCost:
    share: float    # of the volume's blocks changed since the last snapshot
    seconds: float  # until history.take returned
    bytes_put: int  # bytes the snapshot PUT (map pages and its record)


@dataclass
class HourlyCost:
    live: int       # bytes of live data (the volume's size: every block written)
    hours: int      # snapshots taken after the first, each after 1% changed
    stored: int     # bytes of every object in the volume's place afterwards
    snapshots: int  # snapshot records listed

    @property
    def ratio(self) -> float:
        """Bytes stored over bytes of live data (the issue's target: at most 1.3)."""
        return self.stored / self.live


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
    """A new, empty, writable volume of `size` bytes at `url` (replacing any there)."""
    store = open_store(url, create=True, s3=s3)
    create_volume(store, size, BLOCK, force=True)
    return Volume(store, writable=True)


def cost_follows_change(url: str, size: int, s3: S3Options, rng: random.Random) -> list[SnapshotCost]:
    """On a fresh volume of `size` bytes: for each of CHANGE_SHARES, write
    that share of its blocks, then snapshot; each snapshot's cost."""
    volume = fresh(url, size, s3)
    blocks = size // BLOCK
    costs = []
    try:
        for share in CHANGE_SHARES:
            write_blocks(volume, rng.sample(range(blocks), max(1, int(blocks * share))), rng)
            costs.append(SnapshotCost(share, *timed_snapshot(volume)))
    finally:
        volume.close()
    return costs


def hourly(url: str, live: int, hours: int, s3: S3Options, rng: random.Random) -> HourlyCost:
    """A fresh volume of `live` bytes, all written and snapshotted, then
    `hours` times: change 1% of its blocks and snapshot; what is stored
    once the volume is closed."""
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
    # closing a volume closes its store (an s3:// one's connections): list through a new one
    store = open_store(url, s3=s3)
    try:
        stored = sum(size for _, size in store.list_sizes())
        snapshots = len(list(store.list(layout.SNAPSHOTS)))
    finally:
        store.close()
    return HourlyCost(live, hours, stored, snapshots)
