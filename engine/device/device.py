"""The block device: byte ranges in, whole blocks down to the volume.

Reads are served from the cache or fetched (with read-ahead when access is
sequential).  Writes land in the write-back cache; partial blocks are read
first (read-modify-write).  Flush threads upload dirty blocks once they
have been quiet for WRITE_DELAY (so a block filled by many small writes
is uploaded once), a block that never goes quiet at the latest
MAX_DIRTY_AGE after the oldest write no upload holds, and any dirty block
at once when the cache is under pressure or someone is waiting in fsync.
Blocks go up in the order they fall due, so a hot block never holds back
the others.  `fsync()` returns only when every write acknowledged before
it is stored and recorded durably in the volume's journal.

Memory: every buffer held for a block (cached, dirty, being uploaded or
fetched) is charged to one budget of --cache-size bytes (budget.py), so
with large blocks or many threads the device runs as many uploads and
fetches at once as fit, never more.  When the cache is full of dirty
blocks the store will not take, a reader or writer that needs room waits
at most `retry_time` seconds (the store's own retry budget) and then gets
a StoreError (EIO at the FUSE layer); the dirty blocks stay in the cache
and keep being retried.
"""
import logging
import mmap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..codec.block import ZERO_HASH, block_buffer
from ..errors import StoreError, StoreFull
from ..stats import Stats
from ..volume.follow import Follower
from ..volume.lock import Fenced
from ..volume.mapstore import LOG_PAGE
from ..volume.volume import Volume
from .budget import ENTRY_OVERHEAD, Budget
from .cache import CacheIndex, Entry
from .cachedblocks import CachedBlocks
from .cachedir import CacheDir
from .flushing import Flushing, due
from .reading import Reading
from .snapshotreads import SnapshotReading

log = logging.getLogger(__name__)

DEFAULT_RETRY_TIME = 300.0  # seconds a reader or writer waits for room (the store's --retry-time)
CLOSE_RETRY_DELAY = 5.0   # seconds between attempts to store the last data at unmount


class NoRoomError(StoreError):
    """The cache stayed full of blocks the store would not take for the
    whole retry time; they stay in the cache and are retried."""


class BlockDevice(Reading, Flushing, SnapshotReading, CachedBlocks):
    def __init__(self, volume: Volume, *, cache_size: int, threads: int, readahead: int,
                 stats: Stats | None = None, retry_time: float = DEFAULT_RETRY_TIME,
                 cache_dir: CacheDir | None = None) -> None:
        """`cache_size` in bytes: what every block buffer together may take
        (budget.py); `threads`: uploads and fetches at most at once (fewer
        when fewer fit in the cache); `readahead` in blocks (at most half
        the cache); `retry_time` in seconds: how long a read or write may
        wait for room before it fails (pass the store's --retry-time, so
        that the application sees EIO no later than it would for one
        failing request); `cache_dir`: the blocks on local disk as well
        (cachedir.py; the device closes it; a writable one's leftovers are
        stored by `recover`, to be called before serving).  Raises
        CacheTooSmall (a UserError) for a cache of fewer than two blocks."""
        self.volume = volume
        self.block_size = volume.block_size
        self.block_count = volume.block_count
        self.size = volume.block_count * volume.block_size
        self.read_only = not volume.writable
        # A read-only view of the live disk follows its writer; one of a
        # snapshot keeps that snapshot's map, whatever the writer does.
        self.follows = self.read_only and volume.snapshot is None
        self.stats = stats or volume.stats
        self.retry_time = retry_time
        self._budget = Budget.for_cache(cache_size, self.block_size)
        self._index = CacheIndex(self.block_count, self._budget, due=due)
        self._lock = threading.Lock()
        # Two conditions on one lock, so that a write (often 4 KiB) wakes at
        # most one flush thread, and only when it queues a newly dirty block.
        self._flushable = threading.Condition(self._lock)  # flush threads wait for due blocks
        self._changed = threading.Condition(self._lock)    # fsync and writers wait for flushes
        self._urgent = 0          # fsync callers or writers waiting for room
        # the last failure to store (an upload or a journal), until an upload, journal or fsync succeeds
        self._store_error: BaseException | None = None
        self._closing = False
        self._stopped = threading.Event()
        self._sync_soon = threading.Event()  # wakes the sync thread before its interval
        self._log_lock = threading.Lock()  # one fsync log write at a time; later callers join the next
        self._all_pages = (1 << (self.block_size // LOG_PAGE)) - 1
        self._readahead = self._budget.readahead(readahead)
        # Read-only private zero pages: reading them maps the kernel's one
        # zero page, so a block of zeros costs no memory (bytes(n) could).
        self._zeros = memoryview(mmap.mmap(-1, self.block_size, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ))
        self._next_sequential = -1
        self._init_snapshot_reads()
        self._init_cache_dir(cache_dir)
        workers = self._budget.workers(threads)
        self._fetchers = ThreadPoolExecutor(workers, thread_name_prefix="fetch")
        self._threads = [threading.Thread(target=self._flush_loop, name=f"flush-{i}", daemon=True)
                         for i in range(workers if volume.writable else 0)]
        if volume.writable:
            self._threads.append(threading.Thread(target=self._sync_loop, name="sync", daemon=True))
        elif self.follows:
            self._follow_lock = threading.Lock()
            self._follower = Follower(volume)
            self._threads.append(threading.Thread(target=self._follow_loop, name="follow", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- writes -------------------------------------------------------------------

    def write(self, offset: int, data: bytes) -> int:
        self._refuse_if_fenced()
        if offset + len(data) > self.size:
            raise ValueError("write past the end of the device")
        view = memoryview(data)
        done = 0
        for index, start, stop in self._split(offset, len(data)):
            self._write_block(index, start, stop, view[done : done + stop - start])
            done += stop - start
        return len(data)

    def _write_block(self, index: int, start: int, stop: int, chunk: memoryview) -> None:
        whole = start == 0 and stop == self.block_size
        waiting_since = 0.0  # time.monotonic() when this write first found no room
        while True:
            with self._lock:
                entry = self._index.get(index)
                if entry is None or entry.loading is None:
                    size, dirties = self._write_needs(index, entry, whole)
                    if not self._has_room(size, dirties, index):
                        waiting_since = waiting_since or time.monotonic()
                        self._wait_for_room(waiting_since, size, dirties, index)
                        continue
                    if entry is None:
                        entry = self._new_entry_for_write(index, whole)
                    if entry.loading is None:
                        self._modify(index, entry, start, stop, chunk, whole)
                        return
                event = entry.loading
            event.wait()
            if entry.error is not None:
                raise entry.error

    def _write_needs(self, index: int, entry: Entry | None, whole: bool) -> tuple[int, bool]:
        """(bytes to make room for, whether the block turns dirty) for a
        write to a cached, loaded block or (entry None) an uncached one
        (lock held).  A partial write to an uncached block that holds data
        first fetches it: room for the fetch, dirty only once it is in."""
        if entry is None:
            if whole or self.volume.lookup(index) == ZERO_HASH:
                return self._budget.block_cost, True
            return self._budget.load_cost, False
        # A new buffer: the block had none, an upload is sending the old
        # one, or it is not ours to write (the old one goes once copied).
        copies = entry.data is None or entry.shared or not _writable(entry.data)
        return (self.block_size if copies else 0), not entry.dirty

    def _new_entry_for_write(self, index: int, whole: bool) -> Entry:
        """A writable entry for an uncached block, or a loading one.

        Called with the lock held and the room `_write_needs` asked for.
        """
        if not whole:
            loading = self._start_load(index)
            if loading is not None:
                self.stats.add("cache_misses")
                return loading
        entry = Entry(block_buffer(self.block_size))
        self._index.insert(index, entry)
        return entry

    def _modify(self, index: int, entry: Entry, start: int, stop: int, chunk, whole: bool) -> None:
        wholly_logged = entry.log_number and not entry.unlogged  # it waited LOGGED_DELAY so far
        self._index.withdraw(index, entry)
        if whole and (entry.data is None or entry.shared or not _writable(entry.data)):
            self._index.replace_buffer(entry, block_buffer(self.block_size, chunk))
        else:
            if entry.data is None:
                self._index.replace_buffer(entry, block_buffer(self.block_size))
            elif entry.shared or not _writable(entry.data):  # an upload keeps the old one
                self._index.replace_buffer(entry, block_buffer(self.block_size, entry.data))
            entry.data[start:stop] = chunk
        entry.unlogged |= self._pages_mask(start, stop)
        if self._index.mark_dirty(index, entry):
            self._flushable.notify()
        elif wholly_logged:
            self._hasten(index, entry)
        self._cache_write(index, entry, start, stop)  # before the write is acknowledged

    @staticmethod
    def _pages_mask(start: int, stop: int) -> int:
        first, last = start // LOG_PAGE, (stop - 1) // LOG_PAGE
        return ((1 << (last - first + 1)) - 1) << first

    def punch(self, offset: int, length: int) -> None:
        """Zero a range; whole blocks in it lose their objects."""
        self._refuse_if_fenced()
        length = max(0, min(length, self.size - offset))
        for index, start, stop in self._split(offset, length):
            if start == 0 and stop == self.block_size:
                self._punch_block(index)
            else:
                self._write_block(index, start, stop, self._zeros[: stop - start])

    def _punch_block(self, index: int) -> None:
        waiting_since = 0.0  # time.monotonic() when this punch first found no room
        while True:
            with self._lock:
                entry = self._index.get(index)
                if entry is None and self.volume.lookup(index) == ZERO_HASH:
                    return
                if entry is None or entry.loading is None:
                    # a bare entry (no buffer) records the zeros until flushed
                    size, dirties = (ENTRY_OVERHEAD, True) if entry is None else (0, not entry.dirty)
                    if not self._has_room(size, dirties, index):
                        waiting_since = waiting_since or time.monotonic()
                        self._wait_for_room(waiting_since, size, dirties, index)
                        continue
                    if entry is None:
                        entry = Entry()
                        self._index.insert(index, entry)
                    wholly_logged = entry.log_number and not entry.unlogged
                    self._index.drop_buffer(index, entry)
                    entry.unlogged = self._all_pages  # no pages to log: fsync uploads it
                    if self._index.mark_dirty(index, entry):
                        self._flushable.notify()
                    elif wholly_logged:
                        self._hasten(index, entry)
                    self._cache_punch(index)
                    return
                event = entry.loading
            event.wait()

    def _refuse_if_fenced(self) -> None:
        """A mount that lost its lease acknowledges no more writes."""
        reason = self.volume.refusing
        if reason is not None:
            raise Fenced(reason)

    def _has_room(self, size: int, dirties: bool = False, keep: int | None = None) -> bool:
        """Whether `size` more bytes fit in the budget (evicting clean blocks
        other than `keep`, and the snapshot buffers) and, if `dirties`, one
        more block may turn dirty (lock held)."""
        if dirties and not (self._index.dirty_room() and self._cache_room(keep)):
            return False
        while not self._index.make_room(size, keep):
            if not self._snapshot_blocks:
                return False
            self._drop_snapshot_block()
        return True

    def _wait_for_room(self, waiting_since: float, size: int, dirties: bool = False,
                       keep: int | None = None) -> None:
        """Wait (lock held, released while waiting) until `_has_room(size,
        dirties, keep)`: until uploads and fetches free memory, or uploads
        make dirty blocks clean.

        `waiting_since` (time.monotonic() seconds) is when the caller first
        found the cache full.  Raises NoRoomError once it has waited
        `retry_time` seconds: the cache is full of dirty blocks the store
        does not take, and the caller gets EIO instead of hanging (the
        blocks stay and keep being retried).  The cache may have changed
        meanwhile, so callers look again after a return.
        """
        self._urgent += 1
        self._flushable.notify_all()
        try:
            while not self._has_room(size, dirties, keep):
                left = waiting_since + self.retry_time - time.monotonic()
                if left <= 0:
                    self.stats.add("errors")
                    raise NoRoomError(self._no_room_message())
                self._changed.wait(min(left, 1.0))
        finally:
            self._urgent -= 1

    def _no_room_message(self) -> str:
        """Why a reader or writer found no room (lock held)."""
        why = f"; last upload error: {self._store_error}" if self._store_error is not None else ""
        return (f"no room in the cache for {self.retry_time:g} s: {self._index.dirty_count()} dirty "
                f"blocks are waiting for the store{why}")

    def _split(self, offset: int, length: int):
        """(block, start, stop) for each block a byte range touches."""
        end = offset + length
        while offset < end:
            index, start = divmod(offset, self.block_size)
            stop = min(self.block_size, start + end - offset)
            yield index, start, stop
            offset += stop - start

    # -- lifecycle ------------------------------------------------------------------

    def close(self, retry_delay: float = CLOSE_RETRY_DELAY) -> None:
        """Flush everything, stop the threads and close the volume.

        Data the store will not take is never dropped: this keeps retrying
        (and logging) until it is stored, the way the flush threads do, so
        an unmount during an outage waits for the store to come back.
        """
        while True:
            try:
                self._upload_everything()
                break
            except Fenced:
                self._stop_threads()
                self.volume.abort()
                self._close_cache_dir()
                raise
            except StoreError as e:
                log.error("unmount: %s (%s); retrying in %.0f s", self._unstored_words(), e, retry_delay)
                time.sleep(retry_delay)
        self._stop_threads()
        while True:
            try:
                self.volume.close()
                self._close_cache_dir()
                return
            except Fenced:
                self.volume.abort()
                self._close_cache_dir()
                raise
            except StoreError as e:
                log.error("unmount: final checkpoint failed (%s); retrying in %.0f s", e, retry_delay)
                time.sleep(retry_delay)

    def abort(self) -> None:
        """Stop without storing anything more and give the volume back
        (a mount that failed before serving: what it holds is in its
        cache dir, or was never acknowledged)."""
        self._stop_threads()
        self.volume.abort()
        self._close_cache_dir()

    def _stop_threads(self) -> None:
        with self._lock:
            self._closing = True
            self._flushable.notify_all()
        self._stopped.set()
        self._sync_soon.set()
        for thread in self._threads:
            thread.join()
        self._fetchers.shutdown(wait=True)
        if self.follows:
            self._follower.close()

    def _unstored_words(self) -> str:
        """What unmount still has to store, for its log line."""
        blocks, size = self.unsaved()
        if not blocks:
            return "every write is stored, but the last journal or lease check failed"
        return f"{blocks} blocks with {size} bytes of writes not stored yet"

    def unsaved(self) -> tuple[int, int]:
        """(blocks, bytes at most) of acknowledged writes that a crash now
        would lose: pages written since they were last uploaded or logged
        by an fsync, and blocks uploaded that no durable journal names yet
        (counted whole)."""
        unrecorded = self.volume.unrecorded() if self.volume.writable else set()
        blocks, size = set(), 0
        with self._lock:
            for index in self._index.dirty.iter_set():
                entry = self._index.entries[index]
                if entry.unlogged:
                    blocks.add(index)
                    size += min(entry.unlogged.bit_count() * LOG_PAGE, self.block_size)
        for index in unrecorded - blocks:
            blocks.add(index)
            size += self.block_size
        return len(blocks), size

    def store_error(self) -> str | None:
        """Why the last attempt to store data failed, while no later one
        has succeeded (one line), else None."""
        error = self._store_error
        if error is None:
            return None
        return " ".join(str(error).split()) or type(error).__name__

    def counters(self) -> dict[str, int]:
        unsaved_blocks, unsaved_bytes = self.unsaved()
        with self._lock:
            gauges = {
                "dirty_blocks": self._index.dirty_count(),
                "cached_blocks": len(self._index.entries),
                "cache_limit_blocks": self._budget.max_blocks,
                "dirty_limit_blocks": self._budget.max_dirty,
                "cache_bytes": self._index.used,
                "cache_limit_bytes": self._budget.limit,
                "fenced": int(self.volume.fenced is not None),
                "replaced": int(self.volume.replaced is not None),
                "unsaved_blocks": unsaved_blocks,
                "unsaved_bytes": unsaved_bytes,
                "store_full": int(isinstance(self._store_error, StoreFull)),
                "retry_time_seconds": round(self.retry_time),
            }
        counters = self.stats.snapshot()
        fast = self._index.table.hits  # blocks FUSE threads served without Python
        counters["cache_hits"] += fast
        return {**counters, "fast_path_hits": fast, **gauges, **self.cache_dir_counters()}

    def fast_reader(self):
        """A capsule through which FUSE threads read published blocks
        without the GIL (see _table.pyx); valid while the device lives."""
        return self._index.table.reader()


def _writable(data) -> bool:
    """Whether a cached block's buffer may be written in place: a block
    fetched (codec.BlockReader) or written here is a bytearray; bytes
    merged by a read-only mount are not."""
    return isinstance(data, bytearray)
