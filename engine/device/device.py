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

When the cache is full of dirty blocks the store will not take, a reader
or writer that needs a buffer waits at most `retry_time` seconds (the
store's own retry budget) and then gets a StoreError (EIO at the FUSE
layer); the dirty blocks stay in the cache and keep being retried.
"""
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from ..codec.block import ZERO_HASH
from ..errors import NotFound, StoreError, StoreFull
from ..stats import Stats
from ..volume.follow import FOLLOW_SECONDS, Follower
from ..volume.lock import Fenced
from ..volume.mapstore import LOG_PAGE
from ..volume.volume import Volume
from .cache import CacheIndex, Entry
from .flushing import Flushing, due

log = logging.getLogger(__name__)

DEFAULT_RETRY_TIME = 300.0  # seconds a reader or writer waits for room (the store's --retry-time)
CLOSE_RETRY_DELAY = 5.0   # seconds between attempts to store the last data at unmount
MIN_BUFFERS_PER_THREAD = 2


class NoRoomError(StoreError):
    """The cache stayed full of blocks the store would not take for the
    whole retry time; they stay in the cache and are retried."""


class BlockDevice(Flushing):
    def __init__(self, volume: Volume, *, cache_size: int, threads: int, readahead: int,
                 stats: Stats | None = None, retry_time: float = DEFAULT_RETRY_TIME) -> None:
        """`cache_size` in bytes; `retry_time` in seconds: how long a read
        or write may wait for a cache buffer before it fails (pass the
        store's --retry-time, so that the application sees EIO no later
        than it would for one failing request)."""
        self.volume = volume
        self.block_size = volume.block_size
        self.block_count = volume.block_count
        self.size = volume.block_count * volume.block_size
        self.read_only = not volume.writable
        self.stats = stats or volume.stats
        self.retry_time = retry_time
        buffers = max(cache_size // self.block_size, threads * MIN_BUFFERS_PER_THREAD, 4)
        self._index = CacheIndex(self.block_count, buffers, self.block_size, due=due)
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
        self._log_lock = threading.Lock()  # one fsync log write at a time; later callers join the next
        self._all_pages = (1 << (self.block_size // LOG_PAGE)) - 1
        self._readahead = readahead
        self._zeros = memoryview(bytes(self.block_size))
        self._next_sequential = -1
        self._fetchers = ThreadPoolExecutor(max(threads, 1), thread_name_prefix="fetch")
        self._threads = [threading.Thread(target=self._flush_loop, name=f"flush-{i}", daemon=True)
                         for i in range(threads if volume.writable else 0)]
        if volume.writable:
            self._threads.append(threading.Thread(target=self._sync_loop, name="sync", daemon=True))
        else:
            self._follow_lock = threading.Lock()
            self._follower = Follower(volume)
            self._threads.append(threading.Thread(target=self._follow_loop, name="follow", daemon=True))
        for thread in self._threads:
            thread.start()

    # -- reads ------------------------------------------------------------------

    def read_into(self, offset: int, out: memoryview) -> int:
        """Fill `out` from `offset` on (short at the end of the device);
        returns the byte count.  Each block is copied once, straight from
        the cache into the caller's buffer."""
        length = max(0, min(len(out), self.size - offset))
        if length == 0:
            return 0
        first = offset // self.block_size
        last = (offset + length - 1) // self.block_size
        if last > first:  # fetch the blocks of one request in parallel
            self._prefetch(range(first, last + 1), "cache_misses")
        self._maybe_read_ahead(first, last)
        done = 0
        for index, start, stop in self._split(offset, length):
            self._read_block_into(index, start, stop, out[done : done + stop - start])
            done += stop - start
        return length

    def _read_block_into(self, index: int, start: int, stop: int, out: memoryview) -> None:
        waiting_since = 0.0  # time.monotonic() when this read first found no room
        while True:
            with self._lock:
                entry = self._index.get(index)
                if entry is None:
                    if self.volume.lookup(index) == ZERO_HASH:
                        out[:] = self._zeros[start:stop]
                        return
                    if not self._index.make_room():
                        waiting_since = waiting_since or time.monotonic()
                        self._wait_for_room(waiting_since)
                        continue
                    entry = self._start_load(index)
                    self.stats.add("cache_misses")
                elif entry.loading is None:
                    self.stats.add("cache_hits")
                    out[:] = (self._zeros if entry.data is None else memoryview(entry.data))[start:stop]
                    self._index.publish(index, entry)  # later reads of it skip Python
                    return
                event = entry.loading
            event.wait()
            with self._lock:
                if entry.error is not None and entry.loading is None and entry.data is None:
                    raise entry.error

    def _start_load(self, index: int) -> Entry | None:
        """Insert a loading entry and fetch it in the background.

        Called with the lock held and room for one buffer; None for a block
        that is all zeros (nothing to fetch).
        """
        content_hash = self.volume.lookup(index)
        if content_hash == ZERO_HASH:
            return None
        entry = Entry()
        entry.loading = threading.Event()
        self._index.insert(index, entry)
        self._fetchers.submit(self._load, index, entry, content_hash)
        return entry

    def _load(self, index: int, entry: Entry, content_hash: bytes) -> None:
        try:
            data = self._fetch(index, content_hash)
            error = None
        except Exception as e:  # reported to the reader waiting on it
            log.error("reading block %d failed: %s", index, e)
            self.stats.add("errors")
            data, error = None, e
        with self._lock:
            event = entry.loading
            if error is None:
                entry.data = data
            else:
                entry.error = error
                self._index.remove(index)  # counts the loading buffer out
            entry.loading = None
            self._changed.notify_all()
        event.set()

    def _fetch(self, index: int, content_hash: bytes):
        """The block's content; a read-only view whose block has gone (the
        writer replaced and collected it) catches up first (follow.py)."""
        try:
            return self.volume.read_block(content_hash)
        except NotFound:
            if not self.read_only:
                raise
        self.follow()
        content_hash = self.volume.lookup(index)
        return bytes(self.block_size) if content_hash == ZERO_HASH else self.volume.read_block(content_hash)

    def follow(self) -> None:
        """Read-only: take the writer's newest state and drop the cached
        blocks it changed."""
        with self._follow_lock:
            changed = self._follower.refresh()
        if changed:
            with self._lock:
                for index in changed:
                    entry = self._index.entries.get(index)
                    if entry is not None and entry.loading is None and not entry.dirty:
                        self._index.remove(index)
            self.stats.add("follow_refreshes")

    def _follow_loop(self) -> None:
        while not self._stopped.wait(FOLLOW_SECONDS):
            try:
                self.follow()
            except StoreError as e:
                log.warning("following the writer failed, will retry: %s", e)

    def _maybe_read_ahead(self, first: int, last: int) -> None:
        # The kernel's own read-ahead sends several requests of one stream
        # at once, and FUSE threads may take them out of order: a request
        # within the window around the stream's position still counts.
        expected = self._next_sequential
        sequential = expected - self._readahead - 1 <= first <= expected + self._readahead
        self._next_sequential = max(expected, last + 1) if sequential else last + 1
        if not sequential or self._readahead <= 0:
            return
        self._prefetch(range(last + 1, min(last + 1 + self._readahead, self.block_count)), "readahead_blocks")

    def _prefetch(self, indexes: range, counter: str) -> None:
        """Start fetching uncached blocks, as far as the cache has room."""
        with self._lock:
            for index in indexes:
                if index in self._index.entries:
                    continue
                if not self._index.make_room():
                    return
                if self._start_load(index) is not None:
                    self.stats.add(counter)

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
                if entry is None:
                    if not self._index.make_room():
                        waiting_since = waiting_since or time.monotonic()
                        self._wait_for_room(waiting_since)
                        continue
                    entry = self._new_entry_for_write(index, whole)
                if entry.loading is None:
                    self._modify(index, entry, start, stop, chunk, whole)
                    return
                event = entry.loading
            event.wait()
            if entry.error is not None:
                raise entry.error

    def _new_entry_for_write(self, index: int, whole: bool) -> Entry:
        """A writable entry for an uncached block, or a loading one.

        Called with the lock held and room for one buffer.
        """
        if not whole:
            loading = self._start_load(index)
            if loading is not None:
                self.stats.add("cache_misses")
                return loading
        entry = Entry(bytearray(self.block_size))
        self._index.insert(index, entry)
        return entry

    def _modify(self, index: int, entry: Entry, start: int, stop: int, chunk, whole: bool) -> None:
        wholly_logged = entry.log_number and not entry.unlogged  # it waited LOGGED_DELAY so far
        self._index.withdraw(index, entry)
        if whole and (entry.data is None or entry.shared or not isinstance(entry.data, bytearray)):
            self._index.add_buffer(entry, bytearray(chunk))
        else:
            if entry.data is None:
                self._index.add_buffer(entry, bytearray(self.block_size))
            elif entry.shared or not isinstance(entry.data, bytearray):
                entry.data = bytearray(entry.data)  # the flusher keeps the old buffer
            entry.data[start:stop] = chunk
        entry.shared = False
        entry.unlogged |= self._pages_mask(start, stop)
        if self._index.mark_dirty(index, entry):
            self._flushable.notify()
        elif wholly_logged:
            self._hasten(index, entry)

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
                self._write_block(index, start, stop, memoryview(bytes(stop - start)))

    def _punch_block(self, index: int) -> None:
        while True:
            with self._lock:
                entry = self._index.get(index)
                if entry is None:
                    if self.volume.lookup(index) == ZERO_HASH:
                        return
                    entry = Entry()
                    self._index.insert(index, entry)
                if entry.loading is None:
                    wholly_logged = entry.log_number and not entry.unlogged
                    self._index.drop_buffer(index, entry)
                    entry.shared = False
                    entry.unlogged = self._all_pages  # no pages to log: fsync uploads it
                    if self._index.mark_dirty(index, entry):
                        self._flushable.notify()
                    elif wholly_logged:
                        self._hasten(index, entry)
                    return
                event = entry.loading
            event.wait()

    def _refuse_if_fenced(self) -> None:
        """A mount that lost its lease acknowledges no more writes."""
        reason = self.volume.refusing
        if reason is not None:
            raise Fenced(reason)

    def _wait_for_room(self, waiting_since: float) -> None:
        """Wait (lock held, released while waiting) until flushes free a buffer.

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
            while not self._index.make_room():
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
                raise
            except StoreError as e:
                log.error("unmount: %s (%s); retrying in %.0f s", self._unstored_words(), e, retry_delay)
                time.sleep(retry_delay)
        self._stop_threads()
        while True:
            try:
                self.volume.close()
                return
            except Fenced:
                self.volume.abort()
                raise
            except StoreError as e:
                log.error("unmount: final checkpoint failed (%s); retrying in %.0f s", e, retry_delay)
                time.sleep(retry_delay)

    def _stop_threads(self) -> None:
        with self._lock:
            self._closing = True
            self._flushable.notify_all()
        self._stopped.set()
        for thread in self._threads:
            thread.join()
        self._fetchers.shutdown(wait=True)
        if self.read_only:
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
                "cache_limit_blocks": self._index.max_buffers,
                "fenced": int(self.volume.fenced is not None),
                "unsaved_blocks": unsaved_blocks,
                "unsaved_bytes": unsaved_bytes,
                "store_full": int(isinstance(self._store_error, StoreFull)),
                "retry_time_seconds": round(self.retry_time),
            }
        counters = self.stats.snapshot()
        fast = self._index.table.hits  # blocks FUSE threads served without Python
        counters["cache_hits"] += fast
        return {**counters, "fast_path_hits": fast, **gauges}

    def fast_reader(self):
        """A capsule through which FUSE threads read published blocks
        without the GIL (see _table.pyx); valid while the device lives."""
        return self._index.table.reader()
