"""Cache entries and the bookkeeping around them (no I/O here).

An entry is one block held in memory.  Its `data` is a bytes-like buffer,
or None for a block known to be all zeros (punched).  A dirty entry has
writes the store has not seen; `version` counts writes so a flush can tell
whether the block changed while it was being uploaded.  `shared` means a
flusher is reading the current buffer: a writer must copy before modifying.
A `published` entry is clean and its buffer is in the block table, where
FUSE threads read it without the GIL: it must be withdrawn before its
buffer changes or goes.
"""
import threading
import time
from collections import OrderedDict, deque

from ._bitmap import Bitmap
from ._table import BlockTable


class Entry:
    __slots__ = ("data", "dirty", "flushing", "shared", "version", "flushed_version",
                 "last_write", "loading", "error", "attempts", "failed_attempt", "unlogged",
                 "log_number", "log_version", "published")

    def __init__(self, data=None) -> None:
        self.data = data
        self.dirty = False
        self.flushing = False
        self.shared = False
        self.version = 0
        self.flushed_version = 0
        self.last_write = 0.0
        self.loading: threading.Event | None = None
        self.error: BaseException | None = None
        self.attempts = 0        # upload attempts started
        self.failed_attempt = 0  # the attempt that set `error`
        self.unlogged = 0        # bit n: 4 KiB page n written since it was last logged by an fsync
        self.log_number = 0      # the last fsync log that took pages of this block...
        self.log_version = 0     # ...and the version it took them at
        self.published = False

    @property
    def evictable(self) -> bool:
        return not (self.dirty or self.flushing or self.loading)


class CacheIndex:
    """Entries in LRU order, the dirty bitmap, the flush queue, the budget,
    and the table of published blocks.

    Not thread-safe by itself: the device holds its lock around every call.
    """

    def __init__(self, block_count: int, max_buffers: int, block_size: int) -> None:
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.dirty = Bitmap(block_count)
        self.queue: deque[int] = deque()
        self.max_buffers = max_buffers
        self.buffers = 0  # entries holding a block-sized buffer
        self.table = BlockTable(max_buffers, block_size)

    def get(self, index: int) -> Entry | None:
        entry = self.entries.get(index)
        if entry is not None:
            self.entries.move_to_end(index)
        return entry

    def insert(self, index: int, entry: Entry) -> None:
        self.entries[index] = entry
        if entry.data is not None or entry.loading is not None:
            self.buffers += 1

    def remove(self, index: int) -> None:
        entry = self.entries.pop(index)
        self.withdraw(index, entry)
        if entry.data is not None or entry.loading is not None:
            self.buffers -= 1

    def publish(self, index: int, entry: Entry) -> None:
        """Let FUSE threads read a clean, loaded block without asking us."""
        if not entry.published and entry.data is not None and entry.loading is None and not entry.dirty:
            entry.published = self.table.publish(index, entry.data)

    def withdraw(self, index: int, entry: Entry) -> None:
        """Stop serving the block from the table (before its buffer changes)."""
        if entry.published:
            self.table.withdraw(index)
            entry.published = False

    def drop_buffer(self, index: int, entry: Entry) -> None:
        self.withdraw(index, entry)
        if entry.data is not None:
            entry.data = None
            self.buffers -= 1

    def add_buffer(self, entry: Entry, data) -> None:
        if entry.data is None:
            self.buffers += 1
        entry.data = data

    def mark_dirty(self, index: int, entry: Entry) -> bool:
        """Record a write (made after `withdraw`); True when the block
        joined the flush queue."""
        entry.version += 1
        entry.last_write = time.monotonic()
        if entry.dirty:
            return False
        entry.dirty = True
        self.dirty.set(index)
        if entry.flushing:
            return False
        self.queue.append(index)
        return True

    def mark_clean(self, index: int, entry: Entry) -> None:
        entry.dirty = False
        entry.unlogged = 0
        self.dirty.clear(index)

    def make_room(self, needed: int = 1) -> bool:
        """Evict clean entries, oldest first, until `needed` buffers fit.

        Reads served by the table do not reorder `entries`, so a published
        block read since it was last considered gets a second chance (moves
        to the young end) instead of being evicted."""
        while self.buffers + needed > self.max_buffers:
            victim = self._victim()
            if victim is None:
                return False
            self.remove(victim)
        return True

    def _victim(self) -> int | None:
        spared = []
        victim = None
        for index, entry in self.entries.items():
            if not entry.evictable:
                continue
            if entry.published and self.table.referenced(index):
                spared.append(index)
                continue
            victim = index
            break
        for index in spared:
            self.entries.move_to_end(index)
        if victim is None and spared:
            victim = next(i for i, e in self.entries.items() if e.evictable)
        return victim

    def dirty_count(self) -> int:
        return self.dirty.count()
