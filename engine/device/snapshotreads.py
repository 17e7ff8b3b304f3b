"""Reading a snapshot's disk beside the live one (the live mount's
`snapshots/<name>/file`).

`SnapshotReading` is mixed into BlockDevice (device.py) and works on its
state: `_lock`, `_changed`, `_index` and `_budget`, `_zeros`, `volume`,
`stats`, `read_only`, `_split`, `_has_room` and `_wait_for_room` (which
let these buffers go before anything waits for room).

A block the snapshot shares with the live disk is copied from the live
cache when the cache holds it clean: a clean entry of a writable mount
holds the content its map entry names (an upload commits its hash to the
map before the entry turns clean; a fetch loads what the map named, and
any write makes the entry dirty first).  Any other block is fetched by its
content hash into a few buffers of its own (SNAPSHOT_BLOCKS), charged to
the same --cache-size budget as the cache's.
"""
from __future__ import annotations

import time
from collections import OrderedDict

from ..codec.block import LOST_HASH, ZERO_HASH
from ..errors import LostBlock
from ..volume.snapshotmaps import SnapshotMap

# Blocks only snapshots hold, kept at once (a loop-mounted filesystem reads
# a block many times): at most this many, and at most a quarter of what the
# cache holds, so that snapshot reads never take the live disk's room.
SNAPSHOT_BLOCKS = 8


class SnapshotReading:
    def _init_snapshot_reads(self) -> None:
        self._snapshot_blocks: OrderedDict[bytes, object] = OrderedDict()  # content hash -> block
        self._snapshot_most = max(1, min(SNAPSHOT_BLOCKS, self._budget.max_blocks // 4))

    def read_snapshot_into(self, view: SnapshotMap, offset: int, out: memoryview) -> int:
        """Fill `out` from `offset` on with the disk as `view` keeps it
        (short at the end of the disk); returns the byte count.  Raises
        StoreError (NoRoomError after --retry-time without room)."""
        length = max(0, min(len(out), self.size - offset))
        done = 0
        for index, start, stop in self._split(offset, length):
            piece = out[done : done + stop - start]
            content_hash = view.lookup(index)
            if content_hash == ZERO_HASH:
                piece[:] = self._zeros[start:stop]
            elif content_hash == LOST_HASH:
                raise LostBlock(f"block {index} was lost (fsck marked it)")
            elif not self._copy_live(index, content_hash, start, stop, piece):
                piece[:] = memoryview(self._snapshot_block(content_hash))[start:stop]
            done += stop - start
        return length

    def _copy_live(self, index: int, content_hash: bytes, start: int, stop: int, out: memoryview) -> bool:
        """Copy from the live cache if it holds this very content, clean."""
        if self.read_only:  # a follower's entries may lag its map: never shared
            return False
        with self._lock:
            entry = self._index.entries.get(index)
            if entry is None or not entry.evictable or entry.data is None \
                    or self.volume.lookup(index) != content_hash:
                return False
            out[:] = memoryview(entry.data)[start:stop]
        self.stats.add("cache_hits")
        return True

    def _snapshot_block(self, content_hash: bytes):
        """The block with this content hash, from the snapshot buffers or
        fetched (charged to the budget first)."""
        cost = self.block_size
        with self._lock:
            block = self._snapshot_blocks.get(content_hash)
            if block is not None:
                self._snapshot_blocks.move_to_end(content_hash)
                self.stats.add("cache_hits")
                return block
            waiting_since = 0.0
            while not self._has_room(cost):  # (our own buffers go first: they are only a cache)
                waiting_since = waiting_since or time.monotonic()
                self._wait_for_room(waiting_since, cost)
            self._index.used += cost
        self.stats.add("cache_misses")
        try:
            block = self.volume.load_block(content_hash)
        except BaseException:
            with self._lock:
                self._index.used -= cost
            raise
        with self._lock:
            if content_hash in self._snapshot_blocks:  # another reader fetched it meanwhile
                self._index.used -= cost
            self._snapshot_blocks[content_hash] = block
            while len(self._snapshot_blocks) > self._snapshot_most:
                self._drop_snapshot_block()
        return block

    def _drop_snapshot_block(self) -> None:
        """Let the oldest snapshot buffer go (lock held)."""
        self._snapshot_blocks.popitem(last=False)
        self._index.used -= self.block_size
        self._changed.notify_all()  # a reader or writer may be waiting for that room
