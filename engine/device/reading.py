"""Reading: blocks from the cache or the store, read-ahead, following a writer.

`Reading` is the half of BlockDevice (device.py) that serves reads and
fetches blocks into the cache.  It works on the device's state, set up by
BlockDevice: `_lock` and its condition `_changed`, the CacheIndex `_index`
and its Budget `_budget`, `_fetchers`, `_readahead`, `_zeros`, `volume`
and `stats`; waiting for room is BlockDevice's `_wait_for_room`.

A fetch decodes its block straight into the block's own buffer as the
object arrives (codec.BlockReader), so it is charged one cached block
(budget.load_cost) before it starts, like any entry.

A read-only mount whose volume was replaced or deleted at its place
(follow.py) serves nothing more: every read raises VolumeReplaced (EIO),
the table of published blocks stops serving FUSE threads, and the cache
lets its blocks go.
"""
import logging
import threading
import time

from ..codec.block import ZERO_HASH
from ..errors import CorruptData, LostBlock, NotFound, StoreError, VolumeReplaced, without_traceback
from ..volume.follow import FOLLOW_SECONDS
from .cache import Entry

log = logging.getLogger(__name__)


class Reading:
    def read_into(self, offset: int, out: memoryview) -> int:
        """Fill `out` from `offset` on (short at the end of the device);
        returns the byte count.  Each block is copied once, straight from
        the cache into the caller's buffer.  Raises StoreError (NoRoomError
        after --retry-time without room for a block to read; VolumeReplaced
        once a read-only mount's volume has gone from its place)."""
        self._refuse_if_replaced()
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
        load_cost = self._budget.load_cost
        while True:
            with self._lock:
                self._refuse_if_replaced()  # (also after waiting for a fetch)
                entry = self._index.get(index)
                if entry is None:
                    if self.volume.lookup(index) == ZERO_HASH:
                        out[:] = self._zeros[start:stop]
                        return
                    if not self._has_room(load_cost):
                        waiting_since = waiting_since or time.monotonic()
                        self._wait_for_room(waiting_since, load_cost)
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

        Called with the lock held and room for budget.load_cost bytes; None
        for a block that is all zeros (nothing to fetch, nothing charged).
        """
        content_hash = self.volume.lookup(index)
        if content_hash == ZERO_HASH:
            return None
        entry = Entry()
        entry.loading = threading.Event()
        self._index.insert(index, entry)  # charged as holding its block from now on
        self._fetchers.submit(self._load, index, entry, content_hash)
        return entry

    def _load(self, index: int, entry: Entry, content_hash: bytes) -> None:
        try:
            data = self._fetch(index, content_hash)
            error = None
        except Exception as e:  # reported to the reader waiting on it
            if isinstance(e, LostBlock):
                log.error("block %d was lost (fsck marked it): its reads fail until it is written whole", index)
                self.stats.add("errors")
            elif not isinstance(e, VolumeReplaced):  # (follow logs that, once)
                log.error("reading block %d failed: %s", index, e,
                          exc_info=not isinstance(e, StoreError))  # anything else is a bug: show where
                self.stats.add("errors")
                if isinstance(e, CorruptData):
                    self.stats.add("damaged_objects")
            data, error = None, without_traceback(e)
        with self._lock:
            event = entry.loading
            if error is None:
                entry.data = data
            else:
                entry.error = error
                self._index.remove(index)  # counts the loading buffer out
            del data  # the entry's now: a writer's copy of it frees it at once
            entry.loading = None
            self._changed.notify_all()
        event.set()

    def _fetch(self, index: int, content_hash: bytes):
        """The block's content; a read-only view of the live disk whose block
        has gone (the writer replaced and collected it) catches up first
        (follow.py).  A snapshot's block that has gone (the snapshot was
        deleted) raises NotFound: its view never shows another map.  With a
        cache dir, a clean copy there is checked and taken first, and a
        block read from the store is kept there."""
        if self._cache_dir is not None:
            data = self._cache_dir.read_clean(content_hash)
            if data is not None:
                return data
        try:
            data = self.volume.load_block(content_hash)
            if self._cache_dir is not None:
                self._cache_dir.keep_clean(content_hash, data)
            return data
        except NotFound:
            if not self.follows:
                raise
        self.follow()
        content_hash = self.volume.lookup(index)
        return bytes(self.block_size) if content_hash == ZERO_HASH else self.volume.load_block(content_hash)

    def follow(self) -> None:
        """Read-only: take the writer's newest state and drop the cached
        blocks it changed.  Raises VolumeReplaced (and from the first time
        on serves nothing more) once the volume has gone from its place."""
        with self._follow_lock:
            self._refuse_if_replaced()
            try:
                changed = self._follower.refresh()
            except VolumeReplaced as e:
                self._serve_nothing(str(e))
                raise
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
            except VolumeReplaced:
                return  # (logged once by follow) nothing more to follow
            except StoreError as e:
                log.warning("following the writer failed, will retry: %s", e)

    def _refuse_if_replaced(self) -> None:
        reason = self.volume.replaced
        if reason is not None:
            raise VolumeReplaced(reason)

    def _serve_nothing(self, reason: str) -> None:
        """The volume shown has gone from its place (`reason`): FUSE threads
        copy no more published blocks, the cache lets its blocks go (reads
        raise VolumeReplaced from now on: see read_into), and the log says
        so once."""
        self._index.table.stop()
        with self._lock:
            for index in [i for i, e in self._index.entries.items() if e.loading is None and not e.dirty]:
                self._index.remove(index)
            self._changed.notify_all()
        log.error("%s: this read-only mount shows none of it any more, and every read of its file fails "
                  "with EIO; unmount it, and mount again to see what the place holds now", reason)

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
                if not self._index.make_room(self._budget.load_cost):
                    return
                if self._start_load(index) is not None:
                    self.stats.add(counter)
