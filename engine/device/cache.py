"""Cache entries and the bookkeeping around them (no I/O here).

An entry is one block held in memory.  Its `data` is a bytes-like buffer,
or None for a block known to be all zeros (punched).  A dirty entry has
writes the store has not seen; `version` counts writes so a flush can tell
whether the block changed while it was being uploaded.  `shared` means a
flusher is reading the current buffer: a writer must copy before modifying.
A `published` entry is clean and its buffer is in the block table, where
FUSE threads read it without the GIL: it must be withdrawn before its
buffer changes or goes.

CacheIndex also keeps the memory budget (budget.py): `used` counts the
bytes of every buffer the device holds, entries' and others' (uploads,
fetches), and `make_room` evicts clean entries to fit more.
"""
import heapq
import itertools
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

from ._bitmap import Bitmap
from ._table import BlockTable
from .budget import ENTRY_OVERHEAD, Budget


class Entry:
    __slots__ = ("data", "dirty", "flushing", "shared", "version", "flushed_version",
                 "last_write", "dirty_since", "loading", "error", "attempts", "failed_attempt", "unlogged",
                 "log_number", "log_version", "published", "ticket",
                 "__weakref__")  # fsync waits on entries weakly: see Flushing._target_stored

    def __init__(self, data=None) -> None:
        self.data = data
        self.dirty = False
        self.flushing = False
        self.shared = False
        self.version = 0
        self.flushed_version = 0
        self.last_write = 0.0    # time.monotonic() of the last write
        self.dirty_since = 0.0   # time.monotonic() of the oldest write no upload has taken (about)
        self.loading: threading.Event | None = None
        self.error: BaseException | None = None
        self.attempts = 0        # upload attempts started
        self.failed_attempt = 0  # the attempt that set `error`
        self.unlogged = 0        # bit n: 4 KiB page n written since it was last logged by an fsync
        self.log_number = 0      # the last fsync log that took pages of this block...
        self.log_version = 0     # ...and the version it took them at
        self.published = False
        self.ticket = 0          # its live item in the flush queue; 0 when not queued

    @property
    def evictable(self) -> bool:
        return not (self.dirty or self.flushing or self.loading)


class FlushQueue:
    """Dirty blocks waiting for upload, the soonest due first.

    A heap of (due, ticket, block).  `due(entry)` says when a block should
    go up (time.monotonic() seconds); writes to a queued block only move
    that later (they push back the time it has been quiet), so a heap key
    is a lower bound (but see `not_before` in push) and writes never touch
    the heap: a write stays O(1).
    `take` recomputes the head's due time and puts it back under the new
    one if writes moved it on, so a block that is not due never holds back
    one that is behind it (as a FIFO that waited on its head did).

    Where a due time moves earlier (rare: see BlockDevice._hasten) the
    block is pushed again with a new ticket; the older item is then stale
    and skipped.  Not thread-safe: the device's lock is held around calls.
    """

    def __init__(self, due: Callable[[Entry], float]) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._due = due
        self._tickets = itertools.count(1)

    def push(self, index: int, entry: Entry, not_before: float = 0.0) -> None:
        """Queue a block (again) under its current due time, or `not_before`
        (time.monotonic() seconds) if later; O(log n).

        A block retried after a failed upload passes the time of its retry:
        it then goes behind every block already due, so during an outage
        each dirty block gets its turn instead of the few due first taking
        every attempt (an fsync waiting on another one would never hear
        that it failed)."""
        entry.ticket = next(self._tickets)
        heapq.heappush(self._heap, (max(self._due(entry), not_before), entry.ticket, index))

    def take(self, entries: dict, now: float, anything: bool) -> tuple[int | None, float | None]:
        """(block, None) for a block due by `now` (any queued block when
        `anything`), else (None, seconds until the head may be due), or
        (None, None) when nothing is queued.  The block taken leaves the queue."""
        heap = self._heap
        while heap:
            key, ticket, index = heap[0]
            entry = entries.get(index)
            if entry is None or entry.ticket != ticket:
                heapq.heappop(heap)  # stale: pushed again since, or taken
                continue
            due = self._due(entry)
            if anything or due <= now:
                heapq.heappop(heap)
                entry.ticket = 0
                return index, None
            if due > key:  # written since it was queued: look at the new head
                heapq.heapreplace(heap, (due, ticket, index))
                continue
            return None, due - now
        return None, None


class CacheIndex:
    """Entries in LRU order, the dirty bitmap, the flush queue, the memory
    budget, and the table of published blocks.

    An entry costs ENTRY_OVERHEAD, plus the block size while it holds a
    buffer or is loading.  Whoever adds to `used` (inserting an entry,
    giving one a buffer) first makes room for it.
    Not thread-safe by itself: the device holds its lock around every call.
    """

    def __init__(self, block_count: int, budget: Budget, due: Callable[[Entry], float]) -> None:
        self.entries: OrderedDict[int, Entry] = OrderedDict()
        self.dirty = Bitmap(block_count)
        self.queue = FlushQueue(due)
        self.budget = budget
        self.block_size = budget.block_size
        self.used = 0          # bytes charged to the budget (see budget.py)
        self.dirty_blocks = 0  # entries marked dirty
        self.area_used = 0     # bytes of the upload area taken (budget.UPLOAD_AREA)
        self.table = BlockTable(budget.max_blocks, budget.block_size)

    def _cost(self, entry: Entry) -> int:
        """Bytes an entry is charged in its present state."""
        held = entry.data is not None or entry.loading is not None
        return ENTRY_OVERHEAD + (self.block_size if held else 0)

    def get(self, index: int) -> Entry | None:
        entry = self.entries.get(index)
        if entry is not None:
            self.entries.move_to_end(index)
        return entry

    def insert(self, index: int, entry: Entry) -> None:
        self.entries[index] = entry
        self.used += self._cost(entry)

    def remove(self, index: int) -> None:
        entry = self.entries.pop(index)
        self.withdraw(index, entry)
        self.used -= self._cost(entry)

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
        """The entry lets go of its buffer; an upload still sending it keeps
        it, charged, until `upload_done`."""
        self.withdraw(index, entry)
        if entry.data is not None:
            if not entry.shared:
                self.used -= self.block_size
            entry.data = None
            entry.shared = False

    def replace_buffer(self, entry: Entry, data) -> None:
        """Give the entry the new buffer `data` (made after room for a block:
        the old buffer, if no upload keeps it, is freed only afterwards)."""
        if entry.data is None or entry.shared:
            self.used += self.block_size  # the upload keeps the old one, charged
        entry.data = data
        entry.shared = False

    def upload_done(self, entry: Entry, data) -> None:
        """An upload of `data` (the entry's buffer when it started) ended:
        the buffer is freed if the entry has let go of it meanwhile."""
        if data is not None and entry.data is not data:
            self.used -= self.block_size
        entry.shared = False

    def mark_dirty(self, index: int, entry: Entry) -> bool:
        """Record a write (made after `withdraw`); True when the block
        joined the flush queue."""
        entry.version += 1
        entry.last_write = now = time.monotonic()
        if entry.dirty:
            return False
        entry.dirty = True
        entry.dirty_since = now
        self.dirty_blocks += 1
        self.dirty.set(index)
        if entry.flushing:
            return False
        self.queue.push(index, entry)
        return True

    def mark_clean(self, index: int, entry: Entry) -> None:
        entry.dirty = False
        entry.unlogged = 0
        self.dirty_blocks -= 1
        self.dirty.clear(index)

    def take_upload_room(self) -> str | None:
        """Charge the object an upload builds: to the upload area while it
        has room, else to the cache, evicting clean blocks; "area" or
        "cache" (give it back with give_upload_room), None if neither has
        room now."""
        budget = self.budget
        if self.area_used + budget.block_size <= budget.upload_area:
            self.area_used += budget.block_size  # (and a header: counted in the fixed overhead)
            return "area"
        if self.make_room(budget.object_cost):
            self.used += budget.object_cost
            return "cache"
        return None

    def give_upload_room(self, charged: str | None) -> None:
        """An upload's object is gone: credit it where take_upload_room
        charged it (None: nothing was)."""
        if charged == "area":
            self.area_used -= self.budget.block_size
        elif charged == "cache":
            self.used -= self.budget.object_cost

    def dirty_room(self) -> bool:
        """Whether one more block may turn dirty and still leave room for an
        upload beside the dirty blocks (budget.max_dirty)."""
        return self.dirty_blocks < self.budget.max_dirty

    def make_room(self, size: int, keep: int | None = None) -> bool:
        """Evict clean entries, oldest first (never block `keep`), until
        `size` more bytes fit in the budget; False if they cannot.

        Reads served by the table do not reorder `entries`, so a published
        block read since it was last considered gets a second chance (moves
        to the young end) instead of being evicted."""
        while self.used + size > self.budget.limit:
            victim = self._victim(keep)
            if victim is None:
                return False
            self.remove(victim)
        return True

    def _victim(self, keep: int | None) -> int | None:
        spared = []
        victim = None
        for index, entry in self.entries.items():
            if not entry.evictable or index == keep:
                continue
            if entry.published and self.table.referenced(index):
                spared.append(index)
                continue
            victim = index
            break
        for index in spared:
            self.entries.move_to_end(index)
        if victim is None and spared:
            victim = next(i for i, e in self.entries.items() if e.evictable and i != keep)
        return victim

    def dirty_count(self) -> int:
        return self.dirty_blocks
