"""The device's side of the cache dir (cachedir.py): writes reach the
dirty files before they are acknowledged, dirty files are retired once
their blocks are durable in the store, and a mount's recovery stores what
a crashed one left there before anything is served.

`CachedBlocks` is a part of BlockDevice (device.py), as Reading and
Flushing are; it works on the device's `_lock`, `_index`, `_budget`,
`_changed`, `_flushable`, `_sync_soon`, `volume` and `_cache_dir` (None:
no cache dir, and every method here does nothing).
"""
import logging
import time
from concurrent.futures import Future, ThreadPoolExecutor

from ..codec.block import ZERO_HASH, block_buffer
from .cache import Entry
from .cachefiles import PAGE

log = logging.getLogger(__name__)


class CachedBlocks:
    def _init_cache_dir(self, cache_dir) -> None:
        if cache_dir is not None:
            cache_dir.attach(self.volume.codec.block_hash, None if self.read_only else self.volume.epoch)
        self._cache_dir = cache_dir
        # fsync syncs the cache dir on this thread while it stores to the store
        self._cache_syncer = ThreadPoolExecutor(1, thread_name_prefix="cache-dir-fsync") \
            if cache_dir is not None and not self.read_only else None

    # -- writes (lock held) -------------------------------------------------------------

    def _cache_write(self, index: int, entry: Entry, start: int, stop: int) -> None:
        """Bytes `start` to `stop` of the block changed in memory: the
        same pages reach its dirty file (lock held).  A failure drops the
        block's file: the write stays in memory, as without a cache dir
        (raises OSError when the cache dir is broken: CacheDir.drop)."""
        if self._cache_dir is None:
            return
        try:
            self._cache_dir.write(index, entry.data, start // PAGE, (stop - 1) // PAGE)
        except OSError as e:
            self._cache_dir.drop(index, e)

    def _cache_punch(self, index: int) -> None:
        """The block was punched whole (lock held)."""
        if self._cache_dir is None:
            return
        try:
            self._cache_dir.punch(index)
        except OSError as e:
            self._cache_dir.drop(index, e)

    def _cache_room(self, index: int | None) -> bool:
        """Whether block `index` may turn dirty as far as the cache dir goes
        (lock held): it has a dirty file already, or there is room for one.
        Where there is none, a journal is asked for, so that dirty files
        whose blocks are stored can be retired."""
        if self._cache_dir is None or (index is not None and self._cache_dir.holds(index)) \
                or self._cache_dir.has_dirty_room():
            return True
        self._sync_soon.set()
        return False

    # -- retiring -----------------------------------------------------------------------

    def _retire_cached(self) -> None:
        """Retire the dirty files of blocks whose content is durable in the
        store and unchanged since (call after a journal or checkpoint)."""
        if self._cache_dir is None or self.read_only:
            return
        with self._lock:
            unrecorded = self.volume.unrecorded()
            retired = False
            for index in self._cache_dir.dirty_blocks():
                entry = self._index.entries.get(index)
                if index in unrecorded or (entry is not None and (entry.dirty or entry.flushing or entry.loading)):
                    continue
                content_hash = self.volume.lookup(index)
                self._cache_dir.retire(index, None if content_hash == ZERO_HASH else content_hash)
                retired = True
            if retired:
                self._changed.notify_all()  # writers may wait for room in the cache dir

    # -- fsync ---------------------------------------------------------------------------

    def _cache_sync_begin(self) -> Future | None:
        """Start putting the cache dir on disk, beside an fsync's store work:
        a store that holds newer content than the cache dir after a crash of
        the machine would be overwritten by older dirty files."""
        if self._cache_syncer is None:
            return None
        return self._cache_syncer.submit(self._cache_dir.sync)

    def _cache_sync_end(self, syncing: Future | None) -> None:
        if syncing is None:
            return
        try:
            syncing.result()
        except OSError as e:  # the store has the data: the fsync holds
            log.error("cache dir: syncing to disk failed (%s): after a crash of this machine, writes since "
                      "the last fsync may be lost", e.strerror or e)

    # -- recovery -------------------------------------------------------------------------

    def recover(self, progress=None) -> int:
        """Store every block a crashed mount left in the cache dir's dirty
        files (each checked; pages a crash cut show the store's), before the
        device serves anything; the number of blocks.  `progress(phase,
        total)` (volume/sweep.py's Progress) sees the files read, then the
        storing.  Raises StoreError if they cannot be stored (they stay in
        the cache dir)."""
        if self._cache_dir is None or self.read_only:
            return 0
        progress = progress or (lambda phase, total: lambda n: None)
        count = 0
        step = progress("reading the cache dir", self._cache_dir.unsaved_blocks)
        for found in self._cache_dir.recover():
            if not found.zero_base and found.held != (1 << self._cache_dir.pages) - 1:
                self._fill_from_store(found)
            self._adopt(found.index, found.data)
            count += 1
            step(1)
        if count:
            log.warning("cache dir: %d blocks a mount left unsaved were found; storing them", count)
            step = progress("storing blocks", count)
            self.fsync()
            step(count)
            self._cache_dir.counters["recovered_blocks"] += count
        self._retire_cached()
        return count

    def _fill_from_store(self, found) -> None:
        """Pages the file does not hold, from the block as the store has it."""
        content_hash = self.volume.lookup(found.index)
        if content_hash == ZERO_HASH:
            return  # (they are zeros already)
        stored = memoryview(self.volume.load_block(content_hash))
        data = memoryview(found.data)
        for page in range(self._cache_dir.pages):
            if not found.held >> page & 1:
                data[page * PAGE : (page + 1) * PAGE] = stored[page * PAGE : (page + 1) * PAGE]

    def _adopt(self, index: int, data: bytearray) -> None:
        """Hold `data` as the block's dirty content, its dirty file as it
        is (it shows that content already)."""
        waiting_since = 0.0
        while True:
            with self._lock:
                if self._has_room(self._budget.block_cost, True, index):
                    entry = self._index.get(index)
                    if entry is None:  # (recovery runs before anything else reads or writes)
                        entry = Entry(block_buffer(self.block_size, data))
                        self._index.insert(index, entry)
                    entry.unlogged = self._all_pages  # uploaded whole by the fsync that follows
                    if self._index.mark_dirty(index, entry):
                        self._flushable.notify()
                    return
                waiting_since = waiting_since or time.monotonic()
                self._wait_for_room(waiting_since, self._budget.block_cost, True, index)

    def _close_cache_dir(self) -> None:
        if self._cache_syncer is not None:
            self._cache_syncer.shutdown(wait=True)
        if self._cache_dir is not None:
            self._cache_dir.close()

    def cache_dir_counters(self) -> dict[str, int]:
        return self._cache_dir.stats() if self._cache_dir is not None else {}

