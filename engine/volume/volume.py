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
    (see collection.py); the scan for that runs without the volume lock, and
    uploads of content being deleted wait for the delete;
  * each journal names the map object this writer last knew stored, so
    one lost from the middle is noticed (journalchain.py);
  * what a delete may remove is listed in the root written before it
    (`doomed`), the lease is checked before each delete request, and
    content whose plain object a late delete may still remove is uploaded
    with an alias (latedeletes.py).
"""
import dataclasses
import logging
import threading
from collections.abc import Iterable

from ..codec.block import LOST_HASH, ZERO_HASH
from ..codec.keys import KeySource
from ..errors import LostBlock, StoreError, UserError, VolumeReplaced
from ..stats import Stats
from ..store.base import ObjectStore
from . import layout
from .collection import LOG_EPOCH_SHIFT, Collection
from .create import missing_volume
from .fsynclog import FsyncLog
from .keptroots import KeptRoots
from .views import Views
from .latedeletes import BLOCK, LATE_DELETE_SECONDS, PAGE, Quarantine
from .lock import Fenced, Lease
from .mapobjects import JOURNAL_KIND, ROOT_KIND
from .mapstore import LOG_PAGE, Journal, KeyTaken, Loaded, MapStore, Root, Run
from .record import FORMAT_VERSION, open_record
from .snapshots import SnapshotRecords

log = logging.getLogger(__name__)

# Replaying many small journals slows the next mount; fold them into a
# checkpoint once this many have accumulated.
CHECKPOINT_JOURNALS = 64


class Volume(Collection, FsyncLog, Views, KeptRoots):
    READS_EARLY = True  # a writer reads its map before its lease (fsckrepair.py: only after)
    def __init__(self, store: ObjectStore, *, writable: bool, force: bool = False, stats: Stats | None = None,
                 late_delete_seconds: float = LATE_DELETE_SECONDS, snapshot: str | None = None,
                 compress_level: int | None = None, keys: KeySource | None = None,
                 damaged_snapshots: bool = False):
        """Open the volume in `store`: writable takes the lease (UserError
        if another mount holds it), merges fsynced pages a dead mount left,
        and writes the epoch's first root.  `late_delete_seconds`: how long
        a delete request may take to land (latedeletes.py).  `snapshot`
        (read-only): show the map that snapshot keeps (its name, number,
        or Latest), not the live one; UserError if there is none.
        `compress_level`: zstd's level for the blocks this mount stores
        (default: the record's).  `keys`: how to get an encrypted volume's
        key (UserError, one line, when they do not open it).
        `damaged_snapshots`: open writable beside damaged snapshot records
        (else CorruptData names one), deleting no page and only blocks it
        created (what they keep is unknown; SnapshotRecords.kept)."""
        self._damaged_snapshots_ok, self.damaged_snapshots = damaged_snapshots, []
        record = open_record(store, keys)
        if record is None:
            raise missing_volume(store)
        self.store = store
        self.record = record
        self.stats = stats or store.stats
        self.writable = writable
        self.snapshot = snapshot  # a snapshot's fixed map: never follows a writer
        self.block_size = record.block_size
        self.block_count = record.block_count
        self.codec = record.codec(compress_level)
        self.maps = MapStore.of(store, record)
        self._lock = threading.Lock()          # map, pending changes, uploads in flight, collection sets
        self._deleted = threading.Condition(self._lock)  # uploads wait here for deletes of their content
        self._sync_lock = threading.Lock()     # one journal or checkpoint writer at a time
        self._pending: dict[int, tuple[bytes, int]] = {}  # committed, not in a journal: (hash, watermark)
        self._recording: dict[int, tuple[bytes, int]] = {}  # taken from _pending by a journal or root being written
        self._live: dict[int, set[int]] = {}   # log number -> blocks whose logged pages are not all merged
        self._log_journals: dict[int, tuple[int, int]] = {}  # log number -> (epoch, seq) of its journal
        self._marks: dict[int, int] = {}       # watermarks of blocks in live logs
        self._inflight: dict[bytes, int] = {}  # hashes being uploaded -> count
        self._candidates: set[bytes] = set()   # hashes that lost a reference since the last checkpoint
        self._collecting: set[bytes] = set()   # candidates of the running checkpoint not referenced again
        self._deleting: set[bytes] = set()     # block objects being deleted right now
        self._writing_pages: dict[bytes, int] = {}  # pages a checkpoint is writing -> count
        self._deleting_pages: set[bytes] = set()    # pages a sweep is deleting right now
        self._sweeping: tuple[set, set] = (set(), set())  # (blocks, pages) a sweep deletes until it ends
        self._merged: dict[bytes, bytes] = {}   # read-only: blocks merged with logged pages in memory
        self._quarantine = Quarantine(late_delete_seconds)
        self._aliases_written = 0
        # History: pages the snapshots keep (never collected here), and
        # while any snapshot exists, the block objects this mount created
        # since the newest one: the only ones a checkpoint may delete at
        # once; gc marks from every snapshot for the rest.
        self._kept_pages: set[bytes] = set()
        self._snapshotted = False
        self._fresh: set[bytes] = set()
        # Read-only: why the place no longer holds this volume (follow.py), or None.
        self.replaced: str | None = None
        self._lease: Lease | None = None
        encrypted = self.maps.seen is not None
        listing = self.maps.listing() if writable or encrypted else None
        # Above any epoch this machine saw too (read before rollback() records
        # this listing): a rolled-back store must not make this writer reuse
        # the names of the history it lost.
        min_epoch = max(listing.max_epoch, self.maps.seen_epoch()) if writable else 0
        # Before the map is read: a rolled-back store may have lost the pages it needs.
        self.rollback = self.maps.rollback(listing) if encrypted else None
        if self.rollback:
            log.warning("%s", self.rollback)
        self.epoch, early = 0, None
        try:
            if writable:
                # read before the lease: a map that cannot be read is refused with nothing written
                Lease.refuse_if_held(store, force=force)
                early = self.maps.load_latest(listing) if self.READS_EARLY else None
                if early is not None and early.gaps:  # refused before the lease: nothing written
                    raise self.maps.broken_chain(early.gaps)
                self._lease = Lease.acquire(store, min_epoch=min_epoch, force=force, volume_uuid=record.uuid)
                self.epoch = self._lease.epoch
            if snapshot is not None:
                if writable:
                    raise ValueError("a snapshot is opened read-only")
                kept = SnapshotRecords.of(store, record).find(snapshot)
                self._open(self.maps.load_root(Root(*kept.root, kept.page_hashes)))
            else:
                self._open(self._load(early))
        except StoreError as e:
            if self._lease is not None:
                self._lease.release()
            if self.rollback:
                raise UserError(f"{self.rollback}; and its map cannot be read ({e})") from None
            raise
        except BaseException:
            if self._lease is not None:
                self._lease.release()
            raise

    def _load(self, early: Loaded | None = None) -> Loaded:
        """The live map to open: all written before this volume took over (`early` if still so)."""
        return (early and self.maps.still(early)) or self.maps.load_latest()

    def _open(self, loaded: Loaded) -> None:
        listing = loaded.listing
        # A journal of the live map is gone: a writer would make its loss
        # permanent; a reader shows what remains, and says so.
        self.broken_chain: str | None = None  # read-only: the line saying what it lacks
        if loaded.gaps and self.writable:
            raise self.maps.broken_chain(loaded.gaps)
        if loaded.gaps:
            self.broken_chain = str(self.maps.broken_chain(loaded.gaps, writable=False))
            log.warning("%s", self.broken_chain)
        self._map, self._root, self._seq = loaded.map, loaded.root, loaded.last_seq
        # The map object this writer last knew stored: the next journal
        # names it as its predecessor (journalchain.py).  Moved on only by
        # a write that succeeded.
        self._stored = (loaded.root.seq, ROOT_KIND)
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
        records = SnapshotRecords.of(self.store, self.record)
        self._snapshotted, self._kept_pages, self.damaged_snapshots = records.kept(self._damaged_snapshots_ok)
        self._quarantine_late_deletes(loaded.root)
        if loaded.runs:
            self._merge_logged(loaded.runs)
        self.checkpoint(start=True)

    # -- blocks ---------------------------------------------------------------

    def lookup(self, index: int) -> bytes:
        with self._lock:
            return self._map.get(index)

    def read_block(self, content_hash: bytes) -> bytes:
        """The block with this content hash (never called for ZERO_HASH)."""
        return bytes(self.load_block(content_hash))

    def load_block(self, content_hash: bytes) -> bytearray | bytes:
        """The block with this content hash (never called for ZERO_HASH),
        without a copy: a new block_buffer the caller owns, decoded as it
        is read (codec.BlockReader: no other block-sized buffer), or bytes
        merged in memory (read-only).  Raises VolumeReplaced once a
        read-only view found its volume replaced or deleted."""
        if self.replaced is not None:
            raise VolumeReplaced(self.replaced)
        if content_hash == LOST_HASH:
            raise LostBlock("the block was lost (fsck marked it)")
        merged = self._merged.get(content_hash)
        if merged is not None:
            return merged
        return self.maps.read_block(content_hash)

    def store_block(self, data, index: int | None = None) -> bytes:
        """Upload a block and return its hash; `index` is the block it will
        replace, whose upload is skipped when its content has not changed.

        The hash stays registered as in flight until `commit` (or `abandon`)
        so that collection cannot delete the object in between; content
        that a collection is deleting right now is uploaded after it.
        Identical content maps to the same key, so a plain PUT that replaces
        an existing object changes nothing; a conditional one (If-None-Match)
        would cost the server a lookup per block.  `data` must not change
        until this returns: an uncompressed block is sent as it is, not
        copied.
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
        aliased = self._quarantine.needs_alias(BLOCK, content_hash)
        if unchanged and not aliased:
            self.stats.add("blocks_deduplicated")
            return content_hash
        try:
            if self._snapshotted and self._lease.conditional_puts:  # new or not decides if a checkpoint may delete it
                if self.store.put(layout.block_key(content_hash), obj, if_absent=True):
                    with self._lock:
                        self._fresh.add(content_hash)
            else:
                self.store.put(layout.block_key(content_hash), obj)
            if aliased:
                self._put_alias(BLOCK, content_hash, obj)
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
                if old != ZERO_HASH and old != LOST_HASH and old != content_hash:
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
                                  log_number if runs else 0, runs, self._stored)
                try:
                    self._write_map(self.maps.write_journal, journal)
                except BaseException:
                    self._restore_pending(changes)  # the next journal holds them, and follows ours
                    raise
                finally:
                    self._recorded()
                self._stored = (seq, JOURNAL_KIND)
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
            self._checkpoint(start)

    def _checkpoint(self, start: bool) -> None:
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
            # The journals holding live logs' pages: the root names them (journalchain.py).
            stored = {n: self._log_journals[n][1] for n in live if self._log_journals.get(n, (0,))[0] == self.epoch}
            marks = {b: self._marks[b] for blocks in live.values() for b in blocks if b in self._marks}
            log_high = self._log
            uploading = self._candidates & set(self._inflight)
            candidates = self._candidates - uploading
            self._candidates = uploading  # looked at again by the next checkpoint
            self._collecting = set(candidates)
            entries = self._map.entries() if candidates else b""  # the map this root holds
        claimed = self._claim_pages(contents.values())
        try:
            aliased: list[tuple[bytes, str]] = []
            page_hashes = self.maps.write_pages(contents, alias=lambda h: self._page_alias(h, aliased))
            root = Root(self.epoch, seq, list(self._root.page_hashes), log_high, sorted(live), marks,
                        live_journals=stored)
            for number, page_hash in page_hashes.items():
                root.page_hashes[number] = page_hash
            stale_pages = set(self._root.page_hashes) - set(root.page_hashes) - {ZERO_HASH}
            root.doomed_blocks = self._doomed(BLOCK, candidates)
            root.doomed_pages = self._doomed(PAGE, stale_pages | {h for h, _ in aliased})
            self._write_map(self.maps.write_root, root)
            self._stored = (root.seq, ROOT_KIND)
            for page_hash, key in aliased:
                self._quarantine.wrote_alias(PAGE, page_hash, key)
        except BaseException:
            with self._lock:
                self._map.mark_pages_dirty(pages)
                self._candidates |= candidates
                self._collecting = set()
                self._release_pages(claimed)
            self._restore_pending(changes)
            raise
        finally:
            self._recorded()
        with self._lock:
            old_root, self._root = self._root, root
            self._release_pages(claimed)  # the root names them now
        self._journals = 0
        self.stats.add("checkpoints")
        with self._lock:
            keep = {self._log_journals[n] for n in live if n in self._log_journals}
            for n in dead:
                self._live.pop(n, None)
                self._log_journals.pop(n, None)
            self._prune_marks()
        self._drop_superseded(old_root, root, keep)
        self._collect(candidates, entries)
        self._settle_aliases()

    def _write_map(self, write, obj) -> None:
        try:
            write(obj)
        except KeyTaken as e:
            self._lease.fence(str(e))

    def _check_lease_held(self) -> None:
        reason = self.refusing
        if reason is not None:
            raise Fenced(reason)

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
