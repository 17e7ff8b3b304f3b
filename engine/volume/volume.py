"""A volume: its record, its live block map and the objects behind them.

The device above calls, per block: `store_block(data)` (encode and upload;
returns the content hash), then `commit(changes)` (point block numbers at
hashes in the live map).  `sync()` makes committed changes durable as one
journal object; `checkpoint()` rewrites changed map pages under a new root
and then frees objects no entry points at any more.

Ordering rules that keep a crash harmless:
  * a journal is written only after the block objects it names are durable;
  * a root is written only after its pages are durable, and journals it
    covers are deleted only after the root is;
  * an object is deleted only after a durable root no longer names it and
    no upload of the same content is in flight.
"""
import logging
import threading
from collections.abc import Iterable

from ..codec.block import ZERO_HASH, Codec
from ..errors import NotFound, StoreError, UserError
from ..stats import Stats
from ..store.base import ObjectStore
from . import layout
from .blockmap import BlockMap
from .lock import MountLock
from .mapstore import MapStore, Root
from .record import VolumeRecord, validate_geometry

log = logging.getLogger(__name__)

# Replaying many small journals slows the next mount; fold them into a
# checkpoint once this many have accumulated.
CHECKPOINT_JOURNALS = 64
DELETE_BATCH = 1000


def read_record(store: ObjectStore) -> VolumeRecord | None:
    try:
        return VolumeRecord.from_bytes(store.get(layout.RECORD))
    except NotFound:
        return None


def create_volume(store: ObjectStore, size: int, block_size: int, *, force: bool = False) -> VolumeRecord:
    """Write a new, empty volume.  With `force`, an old one is wiped first."""
    validate_geometry(size, block_size)
    existing = list(store.list())
    if existing:
        if not force:
            what = "a volume" if layout.RECORD in existing else "other data"
            raise UserError(f"{store.describe()} already holds {what}; use --force to replace it")
        lock = MountLock(store)
        holder = lock.holder()
        if holder is not None and not MountLock.is_stale(holder):
            raise UserError("that volume is mounted; unmount it before replacing it")
        _delete_all(store, existing)
    record = VolumeRecord(size=size, block_size=block_size)
    store.put(layout.RECORD, record.to_bytes())
    return record


def _delete_all(store: ObjectStore, keys: list[str]) -> None:
    # The record goes first so a half-wiped volume is never mistaken for one.
    keys = sorted(keys, key=lambda k: k != layout.RECORD)
    for start in range(0, len(keys), DELETE_BATCH):
        store.delete(keys[start : start + DELETE_BATCH])


class Volume:
    def __init__(self, store: ObjectStore, *, writable: bool, force: bool = False, stats: Stats | None = None):
        record = read_record(store)
        if record is None:
            raise UserError(f"no bucketdisk volume at {store.describe()} (create one with 'bucketdisk create')")
        self.store = store
        self.record = record
        self.stats = stats or store.stats
        self.writable = writable
        self.block_size = record.block_size
        self.block_count = record.block_count
        self.codec = Codec(record.compression)
        self._maps = MapStore(store, self.codec, record.block_count, record.page_entries, record.uuid)
        self._lock = threading.Lock()          # map, pending changes, in-flight uploads
        self._sync_lock = threading.Lock()     # one journal or checkpoint writer at a time
        self._pending: dict[int, bytes] = {}   # committed, not yet in a journal
        self._inflight: dict[bytes, int] = {}  # hashes being uploaded -> count
        self._candidates: set[bytes] = set()   # hashes that lost a reference
        self._mount_lock = MountLock(store) if writable else None
        if self._mount_lock is not None:
            self._mount_lock.acquire(force=force)
        try:
            self._map, root, self._seq = self._maps.load()
        except BaseException:
            if self._mount_lock is not None:
                self._mount_lock.release()
            raise
        self._root = root or Root(0, [ZERO_HASH] * self._map.page_count)
        self._journals = len([s for s in self._maps.journal_seqs() if s > self._root.seq])

    # -- blocks ---------------------------------------------------------------

    def lookup(self, index: int) -> bytes:
        with self._lock:
            return self._map.get(index)

    def read_block(self, content_hash: bytes) -> bytes:
        """The block with this content hash (never called for ZERO_HASH)."""
        obj = self.store.get(layout.block_key(content_hash))
        return self.codec.decode_block(obj, content_hash, self.block_size)

    def store_block(self, data, index: int | None = None) -> bytes:
        """Upload a block and return its hash; `index` is the block it will
        replace, whose upload is skipped when its content has not changed.

        The hash stays registered as in flight until `commit` (or `abandon`)
        so that garbage collection cannot delete the object in between.
        Identical content maps to the same key, so a plain PUT that replaces
        an existing object changes nothing; a conditional one (If-None-Match)
        would cost the server a lookup per block.
        """
        content_hash, obj = self.codec.encode_block(data)
        if obj is None:
            return ZERO_HASH
        with self._lock:
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

    def commit(self, changes: list[tuple[int, bytes]]) -> None:
        """Point blocks at stored hashes (or ZERO_HASH) in the live map."""
        with self._lock:
            for index, content_hash in changes:
                old = self._map.set(index, content_hash)
                self._pending[index] = content_hash
                if old != ZERO_HASH and old != content_hash:
                    self._candidates.add(old)
                if content_hash != ZERO_HASH:
                    self._release_inflight(content_hash)

    def _release_inflight(self, content_hash: bytes) -> None:
        count = self._inflight.get(content_hash, 0) - 1
        if count > 0:
            self._inflight[content_hash] = count
        else:
            self._inflight.pop(content_hash, None)

    # -- durability -------------------------------------------------------------

    def sync(self) -> None:
        """Make every committed change durable (one journal object)."""
        with self._sync_lock:
            with self._lock:
                changes, self._pending = self._pending, {}
                if not changes:
                    return
                self._seq += 1
                seq = self._seq
            try:
                self._maps.write_journal(seq, changes)
            except BaseException:
                self._restore_pending(changes)
                raise
            self._journals += 1
            self.stats.add("journal_writes")
        if self._journals >= CHECKPOINT_JOURNALS:
            self.checkpoint()

    def checkpoint(self) -> None:
        """Write changed map pages and a new root, then collect garbage."""
        with self._sync_lock:
            with self._lock:
                pages = self._map.take_dirty_pages()
                contents = {p: self._map.page(p) for p in pages}
                changes, self._pending = self._pending, {}
                candidates, self._candidates = self._candidates, set()
                nothing_new = not pages and not changes and not self._journals
                if nothing_new:
                    self._candidates = candidates
                else:
                    self._seq += 1
                    seq = self._seq
            if nothing_new:
                return self._collect_garbage()
            try:
                page_hashes = self._maps.write_pages(contents)
                root = Root(seq, list(self._root.page_hashes))
                for number, page_hash in page_hashes.items():
                    root.page_hashes[number] = page_hash
                self._maps.write_root(root)
            except BaseException:
                with self._lock:
                    self._map.mark_pages_dirty(pages)
                    self._candidates |= candidates
                self._restore_pending(changes)
                raise
            old_root = self._root
            self._root = root
            self._journals = 0
            self.stats.add("checkpoints")
            self._drop_superseded(old_root, root)
            with self._lock:
                self._candidates |= candidates
            self._collect_garbage()

    def _restore_pending(self, changes: dict[int, bytes]) -> None:
        with self._lock:
            for index, content_hash in changes.items():
                self._pending.setdefault(index, content_hash)

    def _drop_superseded(self, old: Root, new: Root) -> None:
        """Delete journals and roots the new root covers, and unused pages."""
        stale = [layout.journal_key(s) for s in self._maps.journal_seqs() if s <= new.seq]
        stale += [k for k in self.store.list(layout.ROOTS) if layout.seq_of_key(k) < new.seq]
        keep = set(new.page_hashes)
        stale += [layout.page_key(h) for h in set(old.page_hashes) - keep if h != ZERO_HASH]
        for start in range(0, len(stale), DELETE_BATCH):
            self.store.delete(stale[start : start + DELETE_BATCH])

    def _collect_garbage(self) -> None:
        """Delete block objects that lost their last reference.

        Runs only after the root that dropped them is durable.  The volume
        lock is held across the deletes so no upload of the same content can
        register in between and then find its object gone.
        """
        with self._lock:
            candidates, self._candidates = self._candidates, set()
            if not candidates:
                return
            live = self._map.referenced(candidates) | set(self._inflight)
            dead = candidates - live
            keys = [layout.block_key(h) for h in dead]
            for start in range(0, len(keys), DELETE_BATCH):
                self.store.delete(keys[start : start + DELETE_BATCH])
            self.stats.add("blocks_collected", len(dead))

    def close(self) -> None:
        """Make everything durable, checkpoint, and give the volume lock back.

        Raises (holding on to the lock) only if committed changes could not
        be journalled; a failed checkpoint or lock release after that loses
        nothing, because the journal and the stale-lock rules cover them.
        """
        if self.writable:
            self.sync()
            try:
                self.checkpoint()
            except StoreError as e:
                log.warning("checkpoint at unmount failed (%s); the journal holds every change", e)
        if self._mount_lock is not None:
            try:
                self._mount_lock.release()
            except StoreError as e:
                log.warning("could not remove the lock (%s); the next mount takes it over as stale", e)
        self.store.close()

    # -- reporting --------------------------------------------------------------

    def mapped_count(self) -> int:
        """Blocks that have an object (are not all zeros)."""
        return self._map.mapped_count

    def distinct_hashes(self) -> set[bytes]:
        with self._lock:
            return self._map.distinct()
