"""Cache entries and the bookkeeping around them (no I/O here).

An entry is one block held in memory.  Its `data` is a bytes-like buffer,
or None for a block known to be all zeros (punched).  A dirty entry has
writes the store has not seen; `version` counts writes so a flush can tell
whether the block changed while it was being uploaded.  `shared` means a
flusher is reading the current buffer: a writer must copy before modifying.
"""
import threading
import time
from collections import OrderedDict, deque

from ._bitmap import Bitmap


class Entry:
    __slots__ = ("data", "dirty", "flushing", "shared", "version", "flushed_version",
                 "last_write", "loading", "error", "attempts", "failed_attempt", "unlogged",
                 "log_number", "log_version")

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

    @property
    def evictable(self) -> bool:
        return not (self.dirty or self.flushing or self.loading)


class CacheIndex:
    """Entries in LRU order, the dirty bitmap, the flush queue, the budget.

    Not thread-safe by itself: the device holds its lock around every call.
    """

    def __init__(self, block_count: int, max_buffers: int) -> None:
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.dirty = Bitmap(block_count)
        self.queue: deque[int] = deque()
        self.max_buffers = max_buffers
        self.buffers = 0  # entries holding a block-sized buffer

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
        if entry.data is not None or entry.loading is not None:
            self.buffers -= 1

    def drop_buffer(self, entry: Entry) -> None:
        if entry.data is not None:
            entry.data = None
            self.buffers -= 1

    def add_buffer(self, entry: Entry, data) -> None:
        if entry.data is None:
            self.buffers += 1
        entry.data = data

    def mark_dirty(self, index: int, entry: Entry) -> bool:
        """Record a write; True when the block joined the flush queue."""
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
        """Evict clean entries, oldest first, until `needed` buffers fit."""
        while self.buffers + needed > self.max_buffers:
            victim = next((i for i, e in self.entries.items() if e.evictable), None)
            if victim is None:
                return False
            self.remove(victim)
        return True

    def dirty_count(self) -> int:
        return self.dirty.count()
