"""A volume: its record, its live block map and the objects behind them.

The device above calls, per block: `store_block(data)` (encode and upload;
returns the content hash), then `commit(changes)` (point block numbers at
hashes in the live map).  `sync()` makes committed changes durable as one
journal object; `checkpoint()` rewrites changed map pages under a new root
and then frees objects no entry points at any more.

The fsync log: a durable fsync need not upload every block it dirtied.
The device may instead hand `sync` the 4 KiB pages written since they were
last logged; they go into the same journal object, under a log number from
`next_log()`.  Every commit carries a watermark, the log number current
when its block's content was read for upload (`log_number()`, read under
the device's lock so that it orders against `next_log()`): logged pages
with a higher number are newer than that content.  Mounting applies, for
each block, the logged pages newer than its watermark, and stores the
merged blocks.  A root lists the log numbers still needed and the
watermarks of the blocks they touch, so their journals outlive it.

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
from dataclasses import dataclass

from ..codec.block import ZERO_HASH, Codec
from ..errors import NotFound, StoreError, UserError
from ..stats import Stats
from ..store.base import ObjectStore
from . import layout
from .blockmap import BlockMap
from .lock import MountLock
from .mapstore import LOG_PAGE, Journal, MapStore, Root, Run
from .record import read_record

log = logging.getLogger(__name__)

# Replaying many small journals slows the next mount; fold them into a
# checkpoint once this many have accumulated.
CHECKPOINT_JOURNALS = 64


@dataclass(frozen=True)
class Sweep:
    """What `Volume.sweep` found nothing refers to."""
    blocks: int  # block objects no map entry points at
    pages: int   # map pages the current root does not use
    roots: int   # roots older than the current one


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
        self._maps = MapStore(store, self.codec, record.block_count, record.page_entries, record.uuid,
                              record.block_size)
        self._lock = threading.Lock()          # map, pending changes, in-flight uploads
        self._sync_lock = threading.Lock()     # one journal or checkpoint writer at a time
        self._pending: dict[int, tuple[bytes, int]] = {}  # committed, not in a journal: (hash, watermark)
        self._live: dict[int, set[int]] = {}   # log number -> blocks whose logged pages are not all merged
        self._log_journals: dict[int, int] = {}  # log number -> sequence of the journal holding its pages
        self._marks: dict[int, int] = {}       # watermarks of blocks in live logs
        self._inflight: dict[bytes, int] = {}  # hashes being uploaded -> count
        self._candidates: set[bytes] = set()   # hashes that lost a reference
        self._mount_lock = MountLock(store) if writable else None
        if self._mount_lock is not None:
            self._mount_lock.acquire(force=force)
        try:
            loaded = self._maps.load()
            self._map, self._root, self._seq, self._log = loaded.map, loaded.root, loaded.last_seq, loaded.last_log
            self._journals = len([s for s in self._maps.journal_seqs() if s > self._root.seq])
            self._live = {n: set() for n in self._root.live}  # dropped at the first checkpoint
            # Pages an fsync logged that never reached their blocks (the last
            # writer died): a writable open merges them; a read-only one
            # would show older data, so its users must refuse to serve it.
            self.unmerged_pages = sum(len(r.data) for r in loaded.runs) // LOG_PAGE
            if loaded.runs and writable:
                self._merge_logged(loaded.runs)
                self.unmerged_pages = 0
        except BaseException:
            if self._mount_lock is not None:
                self._mount_lock.release()
            raise

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
        self.sync()
        self._live.clear()
        self.checkpoint()
        log.warning("merged %d fsynced pages into %d blocks after an unclean stop",
                    self.unmerged_pages, len(blocks))

    # -- durability -------------------------------------------------------------

    def sync(self, runs: list[Run] | None = None, log_number: int = 0) -> None:
        """Make every committed change durable (one journal object), with
        the pages of `runs` under `log_number` if given."""
        with self._sync_lock:
            with self._lock:
                changes, self._pending = self._pending, {}
                if not changes and not runs:
                    return
                self._seq += 1
                seq = self._seq
            journal = Journal(seq, [(i, h, w) for i, (h, w) in changes.items()], log_number if runs else 0, runs)
            try:
                self._maps.write_journal(journal)
            except BaseException:
                self._restore_pending(changes)
                raise
            if runs:
                with self._lock:
                    self._log_journals[log_number] = seq
            self._journals += 1
            self.stats.add("journal_writes")
        if self._journals >= CHECKPOINT_JOURNALS:
            # The journal is durable: a failed checkpoint must not fail the
            # caller's fsync (nor make it drop a log that is written); the
            # next sync tries again.
            try:
                self.checkpoint()
            except StoreError as e:  # counted as a request failure by the store
                log.warning("checkpoint failed, will retry: %s", e)

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
                    live, dead = self._split_live_logs()
                    marks = {b: self._marks[b] for blocks in live.values() for b in blocks if b in self._marks}
                    log_high = self._log
            if nothing_new:
                return self._collect_garbage()
            try:
                page_hashes = self._maps.write_pages(contents)
                root = Root(seq, list(self._root.page_hashes), log_high, sorted(live), marks)
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
            with self._lock:
                keep = {self._log_journals[n] for n in live if n in self._log_journals}
                for n in dead:
                    self._live.pop(n, None)
                    self._log_journals.pop(n, None)
                self._prune_marks()
            self._drop_superseded(old_root, root, keep)
            with self._lock:
                self._candidates |= candidates
            self._collect_garbage()

    def _prune_marks(self) -> None:
        """Keep only the watermarks of blocks in live logs (lock held).  A
        block's older mark is below any log number yet to come, so it
        answers exactly as no mark does."""
        if not self._live:
            self._marks.clear()
            return
        logged = set().union(*self._live.values())
        self._marks = {b: mark for b, mark in self._marks.items() if b in logged}

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

    def _drop_superseded(self, old: Root, new: Root, keep: set[int]) -> None:
        """Delete journals and roots the new root covers (but not the
        journals of live logged pages), and unused pages."""
        stale = [layout.journal_key(s) for s in self._maps.journal_seqs() if s <= new.seq and s not in keep]
        stale += self._roots_before(new)
        keep = set(new.page_hashes)
        stale += [layout.page_key(h) for h in set(old.page_hashes) - keep if h != ZERO_HASH]
        self.store.delete(stale)

    def _roots_before(self, root: Root) -> list[str]:
        """Keys of the roots older than `root` (only the newest is ever read)."""
        return [k for k in self.store.list(layout.ROOTS) if layout.seq_of_key(k) < root.seq]

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
            self.store.delete([layout.block_key(h) for h in dead])
            self.stats.add("blocks_collected", len(dead))

    def sweep(self, *, delete: bool = True) -> Sweep:
        """Find, and unless told not to delete, what nothing refers to.

        Checkpoints keep the store tidy as they go; a mount that dies
        leaves behind block objects it uploaded but never committed, and a
        checkpoint cut short leaves pages and roots it meant to delete.
        Only the newest root is ever read, so after a checkpoint of the
        current map, every block that map does not name, every page its
        root does not list and every older root is garbage.  Needs the
        volume open writable: the mount lock keeps out every other writer.
        """
        if not self.writable:
            raise RuntimeError("sweep needs the volume open writable")
        self.sync()
        self.checkpoint()
        with self._lock:
            referenced = {layout.block_key(h) for h in self._map.distinct() | set(self._inflight)}
        root = self._root
        used_pages = {layout.page_key(h) for h in root.page_hashes if h != ZERO_HASH}
        blocks = [k for k in self.store.list(layout.BLOCKS) if k not in referenced and _is_block_key(k)]
        pages = [k for k in self.store.list(layout.PAGES) if k not in used_pages]
        roots = self._roots_before(root)
        if delete:
            self.store.delete(blocks + pages + roots)
            self.stats.add("blocks_collected", len(blocks))
        return Sweep(blocks=len(blocks), pages=len(pages), roots=len(roots))

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


def _is_block_key(key: str) -> bool:
    """Whether `key` is named as block objects are (anything else under
    blocks/ is not ours to delete)."""
    try:
        return layout.block_key(layout.hash_of_block_key(key)) == key
    except ValueError:
        return False
