"""A volume: its record, its live block map and the objects behind them.

The device above calls, per block: `store_block(data)` (encode and upload;
returns the content hash), then `commit(changes)` (point block numbers at
hashes in the live map).  `sync()` makes committed changes durable as one
journal object; `checkpoint()` rewrites changed map pages under a new root
and then frees objects nothing durable names any more.

A writable volume holds the lease (lock.py): its epoch names every map
object it writes, and its first act is a root of its own epoch, after which
readers ignore what a superseded writer may still write.  Before it
acknowledges a sync, and before it deletes anything, it proves it still
holds the lease; once it does not, every call raises Fenced.

The fsync log: a durable fsync need not upload every block it dirtied.
The device may instead hand `sync` the 4 KiB pages written since they were
last logged; they go into the same journal object, under a log number from
`next_log()`.  Every commit carries a watermark, the log number current
when its block's content was read for upload (`log_number()`, read under
the device's lock so that it orders against `next_log()`): logged pages
with a higher number are newer than that content.  Mounting applies, for
each block, the logged pages newer than its watermark, and stores the
merged blocks.  A root lists the log numbers still needed and the
watermarks of the blocks they touch, so their journals outlive it.  Log
numbers start at epoch << 32, so a superseded writer's never collide.

Ordering rules that keep a crash harmless:
  * a journal is written only after the block objects it names are durable;
  * a root is written only after its pages are durable, and journals it
    covers are deleted only after the root is;
  * a block object is deleted only when the durable root does not name it,
    no journal after that root names it, and no upload of it is in flight
    (see `_collect`); the scan for that runs without the volume lock, and
    uploads of content being deleted wait for the delete.
"""
import dataclasses
import logging
import threading
from collections.abc import Iterable

from ..codec.block import ZERO_HASH, Codec
from ..errors import CorruptData, StoreError
from ..stats import Stats
from ..store.base import ObjectStore
from . import layout
from .blockmap import BlockMap, referenced_in
from .create import missing_volume
from .lock import Fenced, Lease
from .mapstore import LOG_PAGE, Journal, KeyTaken, Loaded, MapStore, Root, Run
from .record import FORMAT_VERSION, read_record

log = logging.getLogger(__name__)

# Replaying many small journals slows the next mount; fold them into a
# checkpoint once this many have accumulated.
CHECKPOINT_JOURNALS = 64
LOG_EPOCH_SHIFT = 32  # log numbers of epoch E start at E << 32


class Volume:
    def __init__(self, store: ObjectStore, *, writable: bool, force: bool = False, stats: Stats | None = None):
        """Open the volume in `store`: writable takes the lease (UserError
        if another mount holds it), merges fsynced pages a dead mount left,
        and writes the epoch's first root."""
        record = read_record(store)
        if record is None:
            raise missing_volume(store)
        self.store = store
        self.record = record
        self.stats = stats or store.stats
        self.writable = writable
        self.block_size = record.block_size
        self.block_count = record.block_count
        self.codec = Codec(record.compression)
        self.maps = MapStore.of(store, record)
        self._lock = threading.Lock()          # map, pending changes, uploads in flight, collection sets
        self._deleted = threading.Condition(self._lock)  # uploads wait here for deletes of their content
        self._sync_lock = threading.Lock()     # one journal or checkpoint writer at a time
        self._pending: dict[int, tuple[bytes, int]] = {}  # committed, not in a journal: (hash, watermark)
        self._recording: dict[int, tuple[bytes, int]] = {}  # taken from _pending by the journal or root being written
        self._live: dict[int, set[int]] = {}   # log number -> blocks whose logged pages are not all merged
        self._log_journals: dict[int, tuple[int, int]] = {}  # log number -> (epoch, seq) of its journal
        self._marks: dict[int, int] = {}       # watermarks of blocks in live logs
        self._inflight: dict[bytes, int] = {}  # hashes being uploaded -> count
        self._candidates: set[bytes] = set()   # hashes that lost a reference since the last checkpoint
        self._collecting: set[bytes] = set()   # candidates of the running checkpoint not referenced again
        self._deleting: set[bytes] = set()     # block objects being deleted right now
        self._merged: dict[bytes, bytes] = {}   # read-only: blocks merged with logged pages in memory
        self._lease: Lease | None = None
        if writable:
            self._lease = Lease.acquire(store, min_epoch=self.maps.listing().max_epoch, force=force,
                                        volume_uuid=record.uuid)
        self.epoch = self._lease.epoch if self._lease else 0
        try:
            self._open(self.maps.load_latest())  # everything written before we took over
        except BaseException:
            if self._lease is not None:
                self._lease.release()
            raise

    def _open(self, loaded: Loaded) -> None:
        listing = loaded.listing
        self._map, self._root, self._seq = loaded.map, loaded.root, loaded.last_seq
        self._log = max(loaded.last_log, self.epoch << LOG_EPOCH_SHIFT)
        self._log_journals = dict(loaded.log_journals)
        self._journals = sum(1 for e, s in listing.journals if e == self._root.epoch and s > self._root.seq)
        self._live = {n: set() for n in self._root.live}  # dropped at the first checkpoint
        self.unknown_keys = listing.unknown
        # What a read-only view starts following from (follow.py takes it once).
        self._opened: Loaded | None = None if self.writable else loaded
        # Pages an fsync logged that never reached their blocks (the last
        # writer died): a writable open merges them; a read-only one
        # would show older data, so its users must refuse to serve it.
        self.unmerged_pages = sum(len(r.data) for r in loaded.runs) // LOG_PAGE
        if not self.writable:
            return
        if self.record.format_version < FORMAT_VERSION:
            # older bucketdisk would ignore the lease: make it refuse the volume
            self.record = dataclasses.replace(self.record, format_version=FORMAT_VERSION)
            self.store.put(layout.RECORD, self.record.to_bytes())
        if loaded.runs:
            self._merge_logged(loaded.runs)
        self.checkpoint(start=True)

    # -- blocks ---------------------------------------------------------------

    def lookup(self, index: int) -> bytes:
        with self._lock:
            return self._map.get(index)

    def read_block(self, content_hash: bytes) -> bytes:
        """The block with this content hash (never called for ZERO_HASH)."""
        merged = self._merged.get(content_hash)
        if merged is not None:
            return merged
        key = layout.block_key(content_hash)
        obj = self.store.get(key)
        try:
            return self.codec.decode_block(obj, content_hash, self.block_size)
        except CorruptData as e:
            raise e.at(self.store.key_url(key)) from None

    def store_block(self, data, index: int | None = None) -> bytes:
        """Upload a block and return its hash; `index` is the block it will
        replace, whose upload is skipped when its content has not changed.

        The hash stays registered as in flight until `commit` (or `abandon`)
        so that collection cannot delete the object in between; content
        that a collection is deleting right now is uploaded after it.
        Identical content maps to the same key, so a plain PUT that replaces
        an existing object changes nothing; a conditional one (If-None-Match)
        would cost the server a lookup per block.
        """
        if self.fenced is not None:  # another mount has the volume: write nothing into it
            raise Fenced(self.fenced)
        content_hash, obj = self.codec.encode_block(data)
        if obj is None:
            return ZERO_HASH
        with self._lock:
            while content_hash in self._deleting:
                self._deleted.wait()
            self._collecting.discard(content_hash)
            self._inflight[content_hash] = self._inflight.get(content_hash, 0) + 1
            unchanged = index is not None and self._map.get(index) == content_hash
        if unchanged:
            self.stats.add("blocks_deduplicated")
            return content_hash
        try:
            self.store.put(layout.block_key(content_hash), obj)
        except BaseException:
            self.abandon([content_hash])
            raise
        return content_hash

    def abandon(self, hashes: Iterable[bytes]) -> None:
        with self._lock:
            for h in hashes:
                self._release_inflight(h)

    def commit(self, changes: list[tuple[int, bytes, int]]) -> None:
        """Point blocks at stored hashes (or ZERO_HASH) in the live map;
        each change carries its watermark (see the fsync log above)."""
        with self._lock:
            for index, content_hash, watermark in changes:
                old = self._map.set(index, content_hash)
                self._pending[index] = (content_hash, watermark)
                if self._live:
                    self._marks[index] = watermark
                if old != ZERO_HASH and old != content_hash:
                    self._candidates.add(old)
                if content_hash != ZERO_HASH:
                    self._collecting.discard(content_hash)
                    self._release_inflight(content_hash)

    def _release_inflight(self, content_hash: bytes) -> None:
        count = self._inflight.get(content_hash, 0) - 1
        if count > 0:
            self._inflight[content_hash] = count
        else:
            self._inflight.pop(content_hash, None)

    # -- the fsync log ------------------------------------------------------------

    def log_number(self) -> int:
        """The watermark for content read for upload now."""
        return self._log

    def next_log(self, blocks: Iterable[int]) -> int:
        """A log number for pages of `blocks` about to be logged."""
        with self._lock:
            self._log += 1
            self._live[self._log] = set(blocks)
            return self._log

    def drop_log(self, number: int) -> None:
        """Forget a log number whose journal was never written."""
        with self._lock:
            self._live.pop(number, None)

    def _merge_logged(self, runs: list[Run]) -> None:
        """Mount after a crash: store each block with its newer logged pages."""
        blocks: dict[int, bytearray] = {}
        for run in runs:
            if run.block not in blocks:
                content_hash = self._map.get(run.block)
                base = bytes(self.block_size) if content_hash == ZERO_HASH else self.read_block(content_hash)
                blocks[run.block] = bytearray(base)
            start = run.first_page * LOG_PAGE
            blocks[run.block][start : start + len(run.data)] = run.data
        mark = self._log
        self.commit([(index, self.store_block(data, index), mark) for index, data in blocks.items()])
        self._live.clear()  # the next root holds every merged block
        log.warning("merged %d fsynced pages into %d blocks after an unclean stop",
                    self.unmerged_pages, len(blocks))
        self.unmerged_pages = 0

    # -- durability -------------------------------------------------------------

    @property
    def fenced(self) -> str | None:
        """Why this mount may never write again (another took the volume), or None."""
        return self._lease.fenced if self._lease is not None else None

    @property
    def refusing(self) -> str | None:
        """Why this mount must not acknowledge writes now (fenced, or its
        lease ran out until it renews), or None."""
        return self._lease.refusing if self._lease is not None else None

    def sync(self, runs: list[Run] | None = None, log_number: int = 0, *, confirm: bool = True) -> bool:
        """Make every committed change durable (one journal object), with
        the pages of `runs` under `log_number` if given; True when there
        was something to write.  With `confirm` (the caller acknowledges
        something on return), also prove that this mount still holds the
        lease.  Raises StoreError (Fenced when another mount has the volume)."""
        with self._sync_lock:
            self._check_lease_held()
            with self._lock:
                changes = self._take_pending()
                if changes or runs:
                    self._seq += 1
                    seq = self._seq
            if changes or runs:
                journal = Journal(self.epoch, seq, [(i, h, w) for i, (h, w) in changes.items()],
                                  log_number if runs else 0, runs)
                try:
                    self._write_map(self.maps.write_journal, journal)
                except BaseException:
                    self._restore_pending(changes)
                    raise
                finally:
                    self._recorded()
                if runs:
                    with self._lock:
                        self._log_journals[log_number] = (self.epoch, seq)
                self._journals += 1
                self.stats.add("journal_writes")
            if confirm and self._lease is not None:
                self._lease.confirm()
        wrote = bool(changes or runs)
        if self._journals >= CHECKPOINT_JOURNALS:
            # The journal is durable: a failed checkpoint must not fail the
            # caller's fsync (nor make it drop a log that is written); the
            # next sync tries again.
            try:
                self.checkpoint()
            except Fenced:
                raise
            except StoreError as e:  # counted as a request failure by the store
                log.warning("checkpoint failed, will retry: %s", e)
        return wrote

    def checkpoint(self, *, start: bool = False) -> None:
        """Write changed map pages and a new root, then delete what it
        supersedes.  `start`: the epoch's first root, written even when
        nothing changed."""
        with self._sync_lock:
            self._check_lease_held()
            with self._lock:
                pages = self._map.take_dirty_pages()
                if not (start or pages or self._pending or self._journals):
                    return
                contents = {p: self._map.page(p) for p in pages}
                changes = self._take_pending()
                self._seq += 1
                seq = self._seq
                live, dead = self._split_live_logs()
                marks = {b: self._marks[b] for blocks in live.values() for b in blocks if b in self._marks}
                log_high = self._log
                uploading = self._candidates & set(self._inflight)
                candidates = self._candidates - uploading
                self._candidates = uploading  # looked at again by the next checkpoint
                self._collecting = set(candidates)
                entries = self._map.entries() if candidates else b""  # the map this root holds
            try:
                page_hashes = self.maps.write_pages(contents)
                root = Root(self.epoch, seq, list(self._root.page_hashes), log_high, sorted(live), marks)
                for number, page_hash in page_hashes.items():
                    root.page_hashes[number] = page_hash
                self._write_map(self.maps.write_root, root)
            except BaseException:
                with self._lock:
                    self._map.mark_pages_dirty(pages)
                    self._candidates |= candidates
                    self._collecting = set()
                self._restore_pending(changes)
                raise
            finally:
                self._recorded()
            old_root, self._root = self._root, root
            self._journals = 0
            self.stats.add("checkpoints")
            with self._lock:
                keep = {self._log_journals[n] for n in live if n in self._log_journals}
                for n in dead:
                    self._live.pop(n, None)
                    self._log_journals.pop(n, None)
                self._prune_marks()
            if self._lease is not None:
                self._lease.check()  # a superseded writer deletes nothing
            self._drop_superseded(old_root, root, keep)
            self._collect(candidates, entries)

    def _write_map(self, write, obj) -> None:
        try:
            write(obj)
        except KeyTaken as e:
            self._lease.fence(str(e))

    def _check_lease_held(self) -> None:
        reason = self.refusing
        if reason is not None:
            raise Fenced(reason)

    def _prune_marks(self) -> None:
        """Keep only the watermarks of blocks in live logs (lock held).  A
        block's older mark is below any log number yet to come, so it
        answers exactly as no mark does."""
        if not self._live:
            self._marks.clear()
            return
        logged = set().union(*self._live.values())
        self._marks = {b: mark for b, mark in self._marks.items() if b in logged}

    def _take_pending(self) -> dict[int, tuple[bytes, int]]:
        """The committed changes, for a journal or root about to be written
        (lock and sync lock held); `unrecorded` still counts them until
        `_recorded`."""
        self._recording, self._pending = self._pending, {}
        return self._recording

    def _recorded(self) -> None:
        """The journal or root being written is durable, or failed (and its
        changes are back in `_pending`)."""
        with self._lock:
            self._recording = {}

    def unrecorded(self) -> set[int]:
        """Blocks whose committed content no durable journal or root names
        yet: a crash now would show them as they were before."""
        with self._lock:
            return set(self._pending) | set(self._recording)

    def _restore_pending(self, changes: dict[int, tuple[bytes, int]]) -> None:
        with self._lock:
            for index, change in changes.items():
                self._pending.setdefault(index, change)

    def _split_live_logs(self) -> tuple[dict[int, set[int]], list[int]]:
        """Log numbers whose pages are not all in the map yet, and the rest
        (lock held).  A block's pages are in the map once content read for
        upload after they were logged is committed (watermark >= number)."""
        live, dead = {}, []
        for number, blocks in self._live.items():
            if any(self._marks.get(b, -1) < number for b in blocks):
                live[number] = blocks
            else:
                dead.append(number)
        return live, dead

    def _drop_superseded(self, old: Root, new: Root, keep: set[tuple[int, int]]) -> None:
        """Delete the journals the new root covers (but not those of live
        logged pages), the root it replaces and that root's pages it does
        not use.  Anything older is left to gc."""
        covered = [layout.journal_key(e, s) for e, s in self.maps.listing().journals
                   if (e, s) <= (new.epoch, new.seq) and (e, s) not in keep]
        used = set(new.page_hashes)
        stale = covered + [layout.page_key(h) for h in set(old.page_hashes) - used if h != ZERO_HASH]
        if old.seq or old.epoch:
            stale.append(layout.root_key(old.epoch, old.seq))
        self.store.delete(stale)

    def _collect(self, candidates: set[bytes], entries: bytes) -> None:
        """Delete the candidates that the root just written does not name
        (`entries` is the map it holds) and that no commit or upload has
        claimed since (they left `_collecting`): no journal after the root
        can name them.  The volume lock is held only between the store
        calls; an upload of content being deleted waits (`store_block`)."""
        if not candidates:
            return
        unreferenced = candidates - referenced_in(entries, candidates)
        with self._lock:
            dead = unreferenced & self._collecting
            self._collecting = set()
            self._deleting = dead
        try:
            self.store.delete([layout.block_key(h) for h in dead])
            self.stats.add("blocks_collected", len(dead))
        except BaseException:
            with self._lock:
                self._candidates |= dead  # looked at again by the next checkpoint
            raise
        finally:
            with self._lock:
                self._deleting = set()
                self._deleted.notify_all()

    def delete_unreferenced(self, block_keys: list[str], other_keys: list[str]) -> None:
        """Delete what a sweep (sweep.py) found no durable map names,
        except blocks the live map or an upload took up since it looked.
        Needs the lease; raises Fenced without it."""
        if self._lease is None:
            raise ValueError("deleting needs the volume open writable")
        self._lease.check()
        hashes = {layout.hash_of_block_key(k) for k in block_keys}
        with self._lock:
            dead = hashes - set(self._inflight) - referenced_in(self._map.entries(), hashes)
            self._deleting = dead
        try:
            self.store.delete([layout.block_key(h) for h in dead] + other_keys)
            self.stats.add("blocks_collected", len(dead))
        finally:
            with self._lock:
                self._deleting = set()
                self._deleted.notify_all()

    def close(self) -> None:
        """Make everything durable, checkpoint, and give the lease back.

        Raises (holding on to the lease) only if committed changes could not
        be journalled; a failed checkpoint or lease release after that loses
        nothing, because the journal and the lease's expiry cover them.
        """
        if self.writable:
            self.sync()
            try:
                self.checkpoint()
            except Fenced:
                raise
            except StoreError as e:
                log.warning("checkpoint at unmount failed (%s); the journal holds every change", e)
        if self._lease is not None:
            try:
                self._lease.release()
            except StoreError as e:
                log.warning("could not release the lease (%s); it expires on its own", e)
        self.store.close()

    def abort(self) -> None:
        """Stop without storing anything more (a fenced mount): stop renewing."""
        if self._lease is not None:
            self._lease.release()
        self.store.close()

    # -- a read-only view following a writer (follow.py) -------------------------

    def take_opened(self) -> Loaded | None:
        """Read-only: the state this volume was opened from, once (then
        None): a follower's first refresh starts from it instead of
        reading the map again."""
        opened, self._opened = self._opened, None
        return opened

    def copy_map(self) -> BlockMap:
        """A copy of the live map, to build a newer view on."""
        with self._lock:
            return self._map.copy()

    def adopt(self, blockmap: BlockMap, root: Root, merged: dict[bytes, bytes], unmerged_pages: int) -> list[int]:
        """Read-only: show a newer state of the writer's map, with blocks
        merged in memory (`merged`, content hash -> content; it holds
        `unmerged_pages` logged 4 KiB pages); returns the block numbers
        whose entry changed."""
        if self.writable:
            raise ValueError("only a read-only volume follows another writer")
        with self._lock:
            old = self._map
            self._map, self._root, self._merged = blockmap, root, merged
            self.unmerged_pages = unmerged_pages
        return blockmap.changed_from(old)  # neither changes any more: no lock, no copies

    # -- reporting --------------------------------------------------------------

    def mapped_count(self) -> int:
        """Blocks that have an object (are not all zeros)."""
        return self._map.mapped_count

    def distinct_hashes(self) -> set[bytes]:
        with self._lock:
            return self._map.distinct()

    def durable_root(self) -> Root:
        """The newest root this volume wrote or loaded."""
        return self._root

    def hashes_in_use(self) -> set[bytes]:
        """Every hash the live map names or an upload in flight carries."""
        with self._lock:
            return set(self._inflight) | self._map.distinct()
