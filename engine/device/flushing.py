"""Flushing: dirty blocks up to the store, journals, and fsync.

`Flushing` is the half of BlockDevice (device.py) that runs on the flush
threads and the sync thread, and fsync's planning: which dirty blocks an
fsync uploads whole and which it logs as 4 KiB pages (the fsync log, see
volume.py).  It works on the device's state, set up by BlockDevice:
`_lock` and its conditions `_flushable` / `_changed`, the CacheIndex
`_index` (entries, dirty bitmap, flush queue), `_urgent`, `_closing`,
`_stopped`, `_log_lock`, `volume` and `stats`.

Memory (budget.py): an upload is charged the object it builds
(budget.object_cost, to the upload area or else the cache) from before it
starts until it ends, and waits for room for it; the buffer it sends
stays charged until it ends even if a writer has moved on to a copy.  An fsync's log holds copies of the pages it
logs while it runs, at most FSYNC_LOG_MAX of them: a fixed overhead, not
charged to the cache (charging it evicted cached blocks at every fsync, for
a log that lives for one journal write, and the writes after it fetched
them again).
"""
import logging
import time
import weakref
from contextlib import contextmanager

from ..codec.block import ZERO_HASH
from ..errors import StoreError, without_traceback
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
# Bytes of pages one fsync logs at most; the rest of the dirty blocks it
# uploads whole.  The log holds its pages up to four times over at once
# (the copies taken, the journal that joins them, its compressed copy and
# that one framed: Codec.pack), so 8 MiB.  An fsync every 64 4K writes
# logs 256 KiB; 512 pages changed across blocks between fsyncs is a lot.
FSYNC_LOG_MAX = 2 << 20


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
                upload = self._start_upload(index)
            self._flush_one(index, upload)
            del upload  # it holds the entry: an eviction must be able to free its buffer

    def _next_to_flush(self) -> int | None:
        """Wait for a dirty block that is due, or any queued one when the
        cache is under pressure or closing, and for room to upload it (lock
        held); None when closing and nothing is left."""
        while True:
            anything = bool(self._urgent or self._closing)
            index, wait = self._index.queue.take(self._index.entries, time.monotonic(), anything)
            if index is not None:
                return index
            if wait is None and self._closing:
                return None
            self._flushable.wait(wait)  # a newly queued block notifies us

    def _wait_for_upload_room(self, entry: Entry) -> str | None:
        """Wait (lock held, released while waiting) until the object of an
        upload of `entry` fits, and charge it; where (CacheIndex.take_upload_room),
        None for a block of zeros (nothing to build).  It fits in the end:
        dirty blocks leave room for one upload (budget.py), and everything
        else in the way is clean (evicted here) or a fetch or upload that
        ends by itself.  The block stays taken meanwhile, so no other flush
        thread takes it."""
        while entry.data is not None:
            where = self._index.take_upload_room()
            if where is not None:
                return where
            self._changed.wait(1.0)  # fetches and uploads notify as they end
        return None

    def _start_upload(self, index: int) -> "Upload":
        """Charge the object of an upload of the block (waiting for room),
        and mark the block as being uploaded (lock held)."""
        entry = self._index.entries[index]
        charged = self._wait_for_upload_room(entry)
        entry.flushing = True
        entry.shared = True
        entry.dirty_since = time.monotonic()  # later writes are not in this upload
        entry.attempts += 1
        watermark = self.volume.log_number()  # ordered against fsync's next_log by this lock
        return Upload(entry, entry.attempts, entry.version, entry.data, watermark, charged)

    def _flush_one(self, index: int, upload: "Upload") -> None:
        entry, version = upload.entry, upload.version
        data, upload.data = upload.data, None  # only this frame holds it: freed below, as it is credited
        error = None
        try:
            content_hash = ZERO_HASH if data is None else self.volume.store_block(data, index)
            with self._lock:
                watermark = upload.watermark
                if entry.log_version <= version:
                    # logged while this upload ran, with no write since: the
                    # upload holds those very pages
                    watermark = max(watermark, entry.log_number)
            self.volume.commit([(index, content_hash, watermark)])
        except Exception as e:  # kept dirty, retried, and reported to fsync
            error = self._report_failure(index, e)
        with self._lock:
            self._end_upload(upload, data)
            del data
            if error is None:
                self._upload_stored(index, entry, version)
            else:
                entry.error = self._store_error = error
                entry.failed_attempt = upload.attempt
            self._changed.notify_all()
        if error is not None and not isinstance(error, Fenced):  # fenced: never storable, no retries
            self._retry_later(index, entry)

    def _end_upload(self, upload: "Upload", data) -> None:
        """Credit what an upload held (lock held): its object, and the
        buffer it sent if the entry has moved on to another."""
        upload.entry.flushing = False
        self._index.upload_done(upload.entry, data)
        self._index.give_upload_room(upload.charged)

    def _upload_stored(self, index: int, entry: Entry, version: int) -> None:
        """An upload of `version` of the block went up (lock held)."""
        entry.error = self._store_error = None
        entry.flushed_version = version
        if entry.version == version:
            self._index.mark_clean(index, entry)
            if entry.data is None:
                self._index.remove(index)
        else:  # written while it was uploading: due again, MAX_DIRTY_AGE from this upload at the latest
            self._index.queue.push(index, entry)
            self._flushable.notify()

    def _report_failure(self, index: int, error: Exception) -> Exception:
        """Log and count a failed upload (not when fenced: another mount has
        the volume); returns `error` without its traceback, to be kept (see
        without_traceback)."""
        if not isinstance(error, Fenced):
            log.error("storing block %d failed, will retry: %s", index, error,
                      exc_info=not isinstance(error, StoreError))  # anything else is a bug: show where
            self.stats.add("errors")
        return without_traceback(error)

    def _retry_later(self, index: int, entry: Entry) -> None:
        """Queue a block whose upload failed again after RETRY_DELAY, behind
        the blocks already due."""
        time.sleep(RETRY_DELAY)
        with self._lock:
            if entry.dirty and not self._closing and not entry.ticket:
                self._index.queue.push(index, entry, not_before=time.monotonic())  # behind those due
                self._flushable.notify()

    def _sync_loop(self) -> None:
        while True:
            self._sync_soon.wait(SYNC_INTERVAL)
            self._sync_soon.clear()
            if self._stopped.is_set():
                return
            try:
                if self.volume.sync(confirm=False):  # acknowledges nothing
                    self._note_stored()
                self._retire_cached()
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

    def _note_failure(self, error: BaseException) -> None:
        """Keep the failure that stands until a write to the store succeeds."""
        with self._lock:
            self._store_error = without_traceback(error)

    def fsync(self) -> None:
        """Return once every write acknowledged so far is durable.

        A block with few changed pages is made durable by logging those
        pages (all such blocks in one journal object, see volume.py); the
        others are uploaded whole.  Concurrent calls queue on the log lock;
        each takes every page written by the time it gets it.  Raises
        StoreError (FlushError, Fenced) if that cannot be done.
        """
        if self.read_only:
            return
        with self._log_lock:
            with self._lock:
                plan = self._plan_fsync()
            syncing = self._cache_sync_begin()
            try:
                self._wait_for_uploads(plan.uploads)
                self.volume.sync(plan.runs, plan.number)
            except BaseException as e:
                if isinstance(e, StoreError) and not isinstance(e, FlushError):  # (an upload noted its own)
                    self._note_failure(e)
                if plan.runs:
                    self.volume.drop_log(plan.number)
                    with self._lock:  # not logged after all: the next fsync takes them again
                        self._unlog(plan.logged)
                raise
            finally:
                plan.runs = None  # the copies go now, whatever happened
                self._cache_sync_end(syncing)
            self._note_stored()
            self._retire_cached()
            if plan.pages:
                self.stats.add("fsync_log_pages", plan.pages)

    def _plan_fsync(self) -> "FsyncPlan":
        """Split dirty blocks into pages to log and blocks to upload (lock held).

        A dirty block with no unlogged pages was logged by an earlier fsync
        (whose write has finished: the log lock is held).  At most
        FSYNC_LOG_MAX bytes of pages are logged; blocks beyond are uploaded.
        The plan refers to entries weakly: one evicted meanwhile was stored."""
        plan, pieces, logged = FsyncPlan(), [], []
        limit = max(1, self.block_size // LOG_PAGE // LOG_SHARE)
        room = FSYNC_LOG_MAX  # bytes of pages this log may still copy
        for index in self._index.dirty.iter_set():
            entry = self._index.entries[index]
            mask = entry.unlogged
            if not mask:
                continue
            size = mask.bit_count() * LOG_PAGE
            if entry.data is not None and mask.bit_count() <= limit and size <= room:
                room -= size
                view = memoryview(entry.data)
                for first, count in _page_runs(mask):
                    pieces.append((index, first, bytes(view[first * LOG_PAGE : (first + count) * LOG_PAGE])))
                logged.append((index, entry, mask))
                entry.unlogged = 0
            else:
                plan.uploads[index] = _upload_target(entry)
        if pieces:
            plan.number = self.volume.next_log({index for index, _, _ in pieces})
            for _, entry, _ in logged:
                entry.log_number, entry.log_version = plan.number, entry.version
        plan.logged = [(index, weakref.ref(entry), mask) for index, entry, mask in logged]
        plan.runs = [Run(plan.number, index, first, data) for index, first, data in pieces]
        plan.pages = sum(len(data) for _, _, data in pieces) // LOG_PAGE
        return plan

    def _unlog(self, logged: list) -> None:
        """Mark the pages of a log that was not written as unlogged again
        (lock held); blocks evicted meanwhile were stored whole."""
        for index, ref, mask in logged:
            entry = ref()
            if entry is None:
                continue
            wholly_logged = not entry.unlogged
            entry.unlogged |= mask
            if wholly_logged:
                self._hasten(index, entry)

    def _wait_for_uploads(self, targets: dict) -> None:
        """Wait until each target block's version is stored (upload errors
        from attempts started before the call are retried, not raised).
        Raises FlushError, or Fenced once another mount has the volume."""
        if not targets:
            return
        with self._lock:
            self._urgent += 1
            self._flushable.notify_all()
            try:
                for index, target in targets.items():
                    while not self._target_stored(index, *target):
                        self._changed.wait(1.0)
            finally:
                self._urgent -= 1

    def _target_stored(self, index: int, ref, version: int, attempts: int) -> bool:
        """Whether a target of `_wait_for_uploads` is stored (lock held).

        Its entry is held weakly, so that waiting keeps no evicted buffer
        alive: an entry that is gone was clean, so stored."""
        entry = ref()
        if entry is None or entry.flushed_version >= version:
            return True
        if self.volume.fenced is not None:  # flush threads no longer try
            raise Fenced(self.volume.fenced)
        if entry.error is not None and entry.failed_attempt > attempts:
            raise FlushError(f"block {index} could not be stored: {entry.error}")
        return False

    @contextmanager
    def quiesced(self):
        """Within it, every write acknowledged before it began is stored
        whole and journalled, and no fsync logs pages (fsyncs wait; plain
        writes go on into the cache): a checkpoint taken inside holds them
        all and needs no fsync log.  Raises StoreError, Fenced."""
        if self.read_only:
            raise ValueError("a read-only mount stores nothing")
        with self._log_lock:
            self._upload_everything()
            yield

    def _upload_everything(self) -> None:
        """Store every dirty block whole and journal it (for unmount)."""
        with self._lock:
            targets = {i: _upload_target(self._index.entries[i]) for i in self._index.dirty.iter_set()}
        self._wait_for_uploads(targets)
        self.volume.sync()
        self._retire_cached()


def due(entry: Entry) -> float:
    """When a dirty block should be uploaded (time.monotonic() seconds):
    once it has been quiet for its delay, and MAX_DIRTY_AGE after the
    oldest write no upload holds even if it never goes quiet."""
    delay = LOGGED_DELAY if entry.log_number and not entry.unlogged else WRITE_DELAY
    return min(entry.last_write + delay, entry.dirty_since + MAX_DIRTY_AGE)


def _upload_target(entry: Entry) -> tuple:
    """What `_wait_for_uploads` waits for: this version stored, by an
    attempt after the ones started so far (the entry held weakly)."""
    return weakref.ref(entry), entry.version, entry.attempts


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


class Upload:
    """One upload of a block: what it sends and what it was charged."""

    __slots__ = ("entry", "attempt", "version", "data", "watermark", "charged")

    def __init__(self, entry: Entry, attempt: int, version: int, data, watermark: int,
                 charged: str | None) -> None:
        self.entry = entry
        self.attempt = attempt      # the entry's upload attempt this is
        self.version = version      # the entry's version it sends
        self.data = data            # the buffer it sends (None: zeros)
        self.watermark = watermark  # the fsync log number it makes obsolete
        self.charged = charged      # where its object is charged (None: zeros, no object)


class FsyncPlan:
    """What one fsync logs and what it waits to see uploaded."""

    __slots__ = ("number", "runs", "logged", "uploads", "pages")

    def __init__(self) -> None:
        self.number = 0      # the log number of its pages (0: nothing logged)
        self.runs: list[Run] | None = []   # the pages it logs (copies)
        self.logged: list = []   # (block, weakref to its entry, pages mask) logged
        self.uploads: dict = {}  # block -> _upload_target, to be uploaded whole
        self.pages = 0       # pages logged
