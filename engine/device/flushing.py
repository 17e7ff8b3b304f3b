"""Flushing: dirty blocks up to the store, journals, and fsync.

`Flushing` is the half of BlockDevice (device.py) that runs on the flush
threads and the sync thread, and fsync's planning: which dirty blocks an
fsync uploads whole and which it logs as 4 KiB pages (the fsync log, see
volume.py).  It works on the device's state, set up by BlockDevice:
`_lock` and its conditions `_flushable` / `_changed`, the CacheIndex
`_index` (entries, dirty bitmap, flush queue), `_urgent`, `_closing`,
`_stopped`, `_log_lock`, `volume` and `stats`.
"""
import logging
import time

from ..codec.block import ZERO_HASH
from ..errors import StoreError
from ..volume.lock import Fenced
from ..volume.mapstore import LOG_PAGE, Run
from .cache import Entry

log = logging.getLogger(__name__)

WRITE_DELAY = 0.2         # seconds a dirty block waits for more writes
LOGGED_DELAY = 2.0        # ...and one whose changes an fsync logged (it is durable already)
# A block rewritten without pause (a filesystem's superblock or journal
# head) is uploaded anyway once the oldest write no upload holds is this
# old (seconds).  5 s is ext4's default commit interval and our
# SYNC_INTERVAL, so unsynced data is at risk for about 10 s at most, as
# with the kernel's own writeback; a hot 1 MiB block then costs one PUT
# per 5 s (0.2 MiB/s), and it is above LOGGED_DELAY so fsync-logged blocks
# keep their longer wait.
MAX_DIRTY_AGE = 5.0
SYNC_INTERVAL = 5.0       # seconds between journal writes of background flushes
RETRY_DELAY = 1.0         # seconds before a failed upload is tried again
LOG_SHARE = 4             # fsync logs a block's changed pages when they are at most 1/LOG_SHARE of it


class FlushError(StoreError):
    """Dirty data could not be stored; it stays in the cache and is retried."""


class Flushing:
    def _hasten(self, index: int, entry: Entry) -> None:
        """Queue a waiting block again (lock held): pages were written after
        an fsync logged all of its changes, so it waits WRITE_DELAY from
        now, not LOGGED_DELAY from its last write (its due time moved
        earlier, which FlushQueue does not see by itself)."""
        if entry.ticket:
            self._index.queue.push(index, entry)
            self._flushable.notify()

    def _flush_loop(self) -> None:
        while True:
            with self._lock:
                index = self._next_to_flush()
                if index is None:
                    return
                entry = self._index.entries[index]
                entry.flushing = True
                entry.shared = True
                entry.dirty_since = time.monotonic()  # later writes are not in this upload
                entry.attempts += 1
                attempt, version, data = entry.attempts, entry.version, entry.data
                watermark = self.volume.log_number()  # ordered against fsync's next_log by this lock
            self._flush_one(index, entry, attempt, version, data, watermark)

    def _next_to_flush(self) -> int | None:
        """Wait for a dirty block that is due, or any queued one when the
        cache is under pressure or closing (lock held); None when closing
        and nothing is left."""
        while True:
            anything = bool(self._urgent or self._closing)
            index, wait = self._index.queue.take(self._index.entries, time.monotonic(), anything)
            if index is not None:
                return index
            if wait is None and self._closing:
                return None
            self._flushable.wait(wait)  # a newly queued block notifies us

    def _flush_one(self, index: int, entry: Entry, attempt: int, version: int, data, watermark: int) -> None:
        try:
            content_hash = ZERO_HASH if data is None else self.volume.store_block(data, index)
            with self._lock:
                if entry.log_version <= version:
                    # logged while this upload ran, with no write since: the
                    # upload holds those very pages
                    watermark = max(watermark, entry.log_number)
            self.volume.commit([(index, content_hash, watermark)])
        except Exception as e:  # kept dirty, retried, and reported to fsync
            fenced = isinstance(e, Fenced)  # another mount has the volume: never storable, no retries
            if not fenced:
                log.error("storing block %d failed, will retry: %s", index, e)
                self.stats.add("errors")
            with self._lock:
                entry.flushing = entry.shared = False
                entry.error = self._store_error = e
                entry.failed_attempt = attempt
                self._changed.notify_all()
            if fenced:
                return
            time.sleep(RETRY_DELAY)
            with self._lock:
                if entry.dirty and not self._closing and not entry.ticket:
                    self._index.queue.push(index, entry, not_before=time.monotonic())  # behind those due
                    self._flushable.notify()
            return
        with self._lock:
            entry.flushing = entry.shared = False
            entry.error = self._store_error = None
            entry.flushed_version = version
            if entry.version == version:
                self._index.mark_clean(index, entry)
                if entry.data is None:
                    self._index.remove(index)
            else:  # written while it was uploading: due again, MAX_DIRTY_AGE from this upload at the latest
                self._index.queue.push(index, entry)
                self._flushable.notify()
            self._changed.notify_all()

    def _sync_loop(self) -> None:
        while not self._stopped.wait(SYNC_INTERVAL):
            try:
                if self.volume.sync(confirm=False):  # acknowledges nothing
                    self._note_stored()
            except Fenced as e:
                if self.volume.fenced is not None:
                    return  # for good: another mount has the volume
                log.warning("journal write held back: %s", e)
            except Exception as e:
                log.error("journal write failed, will retry: %s", e)
                self.stats.add("errors")
                self._note_failure(e)

    def _note_stored(self) -> None:
        """A write to the store succeeded: no failure stands any more."""
        with self._lock:
            self._store_error = None

    def _note_failure(self, e: BaseException) -> None:
        with self._lock:
            self._store_error = e

    def fsync(self) -> None:
        """Return once every write acknowledged so far is durable.

        A block with few changed pages is made durable by logging those
        pages (all such blocks in one journal object, see volume.py); the
        others are uploaded whole.  Concurrent calls queue on the log lock;
        each takes every page written by the time it gets it.
        """
        if self.read_only:
            return
        with self._log_lock:
            with self._lock:
                pieces, logged, uploads = self._plan_fsync()
                number = self.volume.next_log({index for index, _, _ in pieces}) if pieces else 0
                for _, entry, _ in logged:
                    entry.log_number, entry.log_version = number, entry.version
            runs = [Run(number, index, first, data) for index, first, data in pieces]
            try:
                self._wait_for_uploads(uploads)
                self.volume.sync(runs, number)
            except BaseException as e:
                if isinstance(e, StoreError) and not isinstance(e, FlushError):  # (an upload noted its own)
                    self._note_failure(e)
                if runs:
                    self.volume.drop_log(number)
                    with self._lock:  # not logged after all: the next fsync takes them again
                        for index, entry, mask in logged:
                            wholly_logged = not entry.unlogged
                            entry.unlogged |= mask
                            if wholly_logged:
                                self._hasten(index, entry)
                raise
            self._note_stored()
            if runs:
                self.stats.add("fsync_log_pages", sum(len(r.data) for r in runs) // LOG_PAGE)

    def _plan_fsync(self):
        """Split dirty blocks into pages to log and blocks to upload (lock held).

        A dirty block with no unlogged pages was logged by an earlier fsync
        (whose write has finished: the log lock is held)."""
        pieces, logged, uploads = [], [], {}
        limit = max(1, self.block_size // LOG_PAGE // LOG_SHARE)
        for index in self._index.dirty.iter_set():
            entry = self._index.entries[index]
            mask = entry.unlogged
            if not mask:
                continue
            if entry.data is not None and mask.bit_count() <= limit:
                view = memoryview(entry.data)
                for first, count in _page_runs(mask):
                    pieces.append((index, first, bytes(view[first * LOG_PAGE : (first + count) * LOG_PAGE])))
                logged.append((index, entry, mask))
                entry.unlogged = 0
            else:
                uploads[index] = _upload_target(entry)
        return pieces, logged, uploads

    def _wait_for_uploads(self, targets: dict) -> None:
        """Wait until each target block's version is stored (upload errors
        from attempts started before the call are retried, not raised)."""
        if not targets:
            return
        with self._lock:
            self._urgent += 1
            self._flushable.notify_all()
            try:
                for index, (entry, version, attempts) in targets.items():
                    while entry.flushed_version < version:
                        if self.volume.fenced is not None:  # flush threads no longer try
                            raise Fenced(self.volume.fenced)
                        if entry.error is not None and entry.failed_attempt > attempts:
                            raise FlushError(f"block {index} could not be stored: {entry.error}")
                        self._changed.wait(1.0)
            finally:
                self._urgent -= 1

    def _upload_everything(self) -> None:
        """Store every dirty block whole and journal it (for unmount)."""
        with self._lock:
            targets = {i: _upload_target(self._index.entries[i]) for i in self._index.dirty.iter_set()}
        self._wait_for_uploads(targets)
        self.volume.sync()


def due(entry: Entry) -> float:
    """When a dirty block should be uploaded (time.monotonic() seconds):
    once it has been quiet for its delay, and MAX_DIRTY_AGE after the
    oldest write no upload holds even if it never goes quiet."""
    delay = LOGGED_DELAY if entry.log_number and not entry.unlogged else WRITE_DELAY
    return min(entry.last_write + delay, entry.dirty_since + MAX_DIRTY_AGE)


def _upload_target(entry: Entry) -> tuple[Entry, int, int]:
    """What `_wait_for_uploads` waits for: this version stored, by an
    attempt after the ones started so far."""
    return entry, entry.version, entry.attempts


def _page_runs(mask: int):
    """(first page, count) of each run of set bits in `mask`."""
    page = 0
    while mask:
        skip = (mask & -mask).bit_length() - 1
        mask >>= skip
        page += skip
        count = (~mask & (mask + 1)).bit_length() - 1
        yield page, count
        mask >>= count
        page += count
