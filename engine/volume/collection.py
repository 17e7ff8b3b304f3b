"""The deleting half of a volume: what a checkpoint supersedes, what a
sweep found unreferenced, and the aliases that late deletes call for.

Mixed into Volume (volume.py), whose state it shares: the rules for when
an object may be deleted are in volume.py's docstring, the late-delete
rule in latedeletes.py.  Every delete request is guarded: the lease is
checked before each one, retries included.
"""
import logging
from collections.abc import Iterable

from ..codec._hot import is_zero
from ..codec.block import ZERO_HASH
from ..errors import CorruptData, NotFound
from . import layout
from .blockmap import referenced_in
from .latedeletes import BLOCK, PAGE, alias_key, aliases_of, plain_key, settle, still_late
from .mapstore import Root

log = logging.getLogger(__name__)

LOG_EPOCH_SHIFT = 32  # log numbers and alias numbers of epoch E start at E << 32
SETTLE_LOOKUPS = 64   # hashes an earlier mount listed, looked up for aliases per checkpoint (a listing each)


class Collection:
    """Deleting, for Volume.  Needs its store, maps, stats, _lease, _lock,
    _sync_lock, _deleted, _quarantine, _aliases_written, _candidates,
    _collecting, _deleting, _deleting_pages, _writing_pages, _sweeping, _inflight,
    _map, _root, _kept_pages, _snapshotted, _fresh, record, epoch and
    checkpoint()."""

    def _put_alias(self, kind: str, content_hash: bytes, obj) -> None:
        key = alias_key(kind, content_hash, self._alias_number())
        self.store.put(key, obj)
        self._quarantine.wrote_alias(kind, content_hash, key)

    def _page_alias(self, page_hash: bytes, aliased: list[tuple[bytes, str]]) -> str | None:
        """The alias key a page being written needs (latedeletes.py), or None."""
        if not self._quarantine.needs_alias(PAGE, page_hash):
            return None
        key = alias_key(PAGE, page_hash, self._alias_number())
        aliased.append((page_hash, key))
        return key

    def _alias_number(self) -> int:
        with self._lock:
            self._aliases_written += 1
            return (self.epoch << LOG_EPOCH_SHIFT) + self._aliases_written

    def delete_guard(self, keys: list[str], attempt: int) -> None:
        """Before each delete request (store.delete): a superseded writer
        deletes nothing, and a request sent again may land late, after
        its content was uploaded anew (latedeletes.py)."""
        if self._lease is not None:
            self._lease.check()
        if attempt:
            self._quarantine_keys(keys)

    def _delete(self, keys: list[str]) -> None:
        """Delete `keys`, every request guarded.  A request that failed may
        still have reached the server and land late, whether or not a
        retry followed: its keys are quarantined (latedeletes.py)."""
        try:
            self.store.delete(keys, guard=self.delete_guard)
        except BaseException:
            self._quarantine_keys(keys)
            raise

    def _quarantine_late_deletes(self, root: Root) -> None:
        """The last writer may still have deletes of the root's doomed
        hashes in flight, and the volume this one replaced deletes of
        anything (latedeletes.py)."""
        late = still_late(self._lease.predecessor, self._lease.predecessor_state, self._quarantine.seconds)
        self._quarantine.add(BLOCK, root.doomed_blocks, late)
        self._quarantine.add(PAGE, root.doomed_pages, late)
        self._quarantine.add_unchecked(BLOCK, root.doomed_blocks)
        self._quarantine.add_unchecked(PAGE, root.doomed_pages)
        if self.record.replaced:
            age = self.store.age(layout.RECORD)
            left = self._quarantine.seconds - (age if age is not None else 0.0)
            if left > 0:
                log.info("this volume replaced another %.0f s ago: every upload also writes an alias for "
                         "%.0f s more", self._quarantine.seconds - left, left)
                self._quarantine.add_everything(left)

    def _doomed(self, kind: str, deleting_next: set[bytes]) -> list[bytes]:
        """What a root lists as doomed (latedeletes.py): the hashes of `kind`
        its writer deletes next, those a sweep is deleting beside it, and
        those the quarantine still follows."""
        with self._lock:
            sweeping = set(self._sweeping[0 if kind == BLOCK else 1])
        return sorted(deleting_next | sweeping | set(self._quarantine.recorded(kind)))

    def _quarantine_keys(self, keys: list[str]) -> None:
        self._quarantine.add(BLOCK, [h for h in map(layout.hash_of_block_key, keys) if h])
        self._quarantine.add(PAGE, [h for h in map(layout.hash_of_page_key, keys) if h])

    def _settle_aliases(self, found: list[tuple[str, bytes, str]] | None = None) -> None:
        """Put back the plain objects of aliases whose quarantine has
        passed (this mount's, those an earlier mount left of hashes its
        root listed, or `found` by a sweep), and delete the aliases."""
        if found is None:
            found = self._quarantine.settled_aliases()
            for kind, content_hash in self._quarantine.to_check(SETTLE_LOOKUPS):
                found += [(kind, content_hash, key)
                          for key in aliases_of(self.store, plain_key(kind, content_hash))]
                self._quarantine.checked(kind, content_hash)
        for kind, content_hash, key in found:
            if not self._quarantine.holds(kind, content_hash):
                settle(self.store, kind, content_hash, key, self.delete_guard,
                       lambda where, kind=kind, h=content_hash: self._reads(kind, h, where))
                self._quarantine.forget_alias(kind, content_hash)

    def _reads(self, kind: str, content_hash: bytes, key: str) -> bool:
        """Whether `key` (the plain object or an alias) holds that block or
        page intact."""
        try:
            if kind == BLOCK:
                self.maps.read_block(content_hash, alias=key)
            else:
                self.maps.read_page(content_hash, alias=key)
            return True
        except (NotFound, CorruptData):
            return False

    def _claim_pages(self, contents: Iterable[bytes]) -> list[bytes]:
        """Register the pages a checkpoint is about to write, so that a
        sweep deleting pages leaves them alone; a page a sweep is deleting
        right now is written after that delete.  Returns their hashes."""
        hashes = [self.maps.codec.page_hash(data) for data in contents if not is_zero(data)]
        with self._lock:
            while self._deleting_pages.intersection(hashes):
                self._deleted.wait()
            for h in hashes:
                self._writing_pages[h] = self._writing_pages.get(h, 0) + 1
        return hashes

    def _release_pages(self, hashes: list[bytes]) -> None:
        """Lock held."""
        for h in hashes:
            count = self._writing_pages.pop(h) - 1
            if count:
                self._writing_pages[h] = count

    def _drop_superseded(self, old: Root, new: Root, keep: set[tuple[int, int]]) -> None:
        """Delete the journals the new root covers (but not those of live
        logged pages), the root it replaces and that root's pages it does
        not use.  Anything older is left to gc."""
        covered = [layout.journal_key(e, s) for e, s in self.maps.listing().journals
                   if (e, s) <= (new.epoch, new.seq) and (e, s) not in keep]
        used = set(new.page_hashes) | self._kept_pages
        stale = covered + [layout.page_key(h) for h in set(old.page_hashes) - used if h != ZERO_HASH]
        if old.seq or old.epoch:
            stale.append(layout.root_key(old.epoch, old.seq))
        self._delete(stale)

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
            if self._snapshotted:  # a snapshot may name any object older than this mount's uploads
                dead &= self._fresh
                self._fresh -= dead
            self._collecting = set()
            self._deleting = dead
        aliases = [key for h in dead if (key := self._quarantine.forget_alias(BLOCK, h)) is not None]
        try:
            self._delete([layout.block_key(h) for h in dead] + aliases)
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
        """Delete what a sweep (sweep.py) found no durable map names
        (`block_keys`: block objects and their aliases; `other_keys`:
        pages, their aliases, roots, journals), except blocks the live map
        or an upload took up since it looked.  A root listing them is
        written first (latedeletes.py).  Needs the lease; raises Fenced
        without it."""
        if self._lease is None:
            raise ValueError("deleting needs the volume open writable")
        hashes = {_hash_of(k, BLOCK) for k in block_keys}
        pages = {h for k in other_keys if (h := _hash_of(k, PAGE))}
        # Every root written until these deletes end lists them: a root a
        # checkpoint writes meanwhile supersedes this sweep's own.
        with self._lock:
            self._sweeping = (hashes, pages)
        try:
            self.checkpoint(start=True)
            self._delete_swept(hashes, pages, block_keys, other_keys)
        finally:
            with self._lock:
                self._sweeping = (set(), set())

    def _delete_swept(self, hashes: set[bytes], pages: set[bytes], block_keys: list[str],
                      other_keys: list[str]) -> None:
        with self._lock:  # what a checkpoint or upload took up since the sweep looked stays
            # Replaced since the checkpoint above (candidates): a journal may still name them.
            dead = hashes - set(self._inflight) - self._candidates - self._collecting
            dead -= referenced_in(self._map.entries(), dead)
            dead_pages = pages - set(self._root.page_hashes) - self._kept_pages - set(self._writing_pages)
            self._deleting, self._deleting_pages = dead, dead_pages
        try:
            keys = [k for k in block_keys if _hash_of(k, BLOCK) in dead]
            keys += [k for k in other_keys if (h := _hash_of(k, PAGE)) is None or h in dead_pages]
            self._delete(keys)
            self.stats.add("blocks_collected", len(dead))
        finally:
            with self._lock:
                self._deleting, self._deleting_pages = set(), set()
                self._deleted.notify_all()

    def delete_map_objects(self, keys: list[str]) -> None:
        """Delete roots and journals no map needs, and placeholders of
        deleted snapshots (never blocks or pages: a root must list those
        first, see delete_unreferenced), every request guarded."""
        if keys:
            self._delete(keys)

    def keep_pages_of(self, snapshots) -> None:
        """The snapshots that exist now (after some were deleted): only
        their pages are kept from checkpoints' and sweeps' deletes."""
        with self._lock:
            self._kept_pages = {h for s in snapshots for h in s.page_hashes} - {ZERO_HASH}

    def settle_aliases(self, keys: list[str]) -> None:
        """A sweep found these aliases of blocks and pages the map names:
        put their plain objects back if gone, and delete them, unless a
        late delete may still land (latedeletes.py).  Needs the lease."""
        found = [(kind, h, key) for key in keys if (a := layout.alias_of(key)) for kind, h, _ in [a]]
        with self._sync_lock:
            self._settle_aliases(found)


def _hash_of(key: str, kind: str) -> bytes | None:
    """The hash of a block (BLOCK) or page (PAGE) key or of its alias."""
    alias = layout.alias_of(key)
    if alias is not None:
        return alias[1] if alias[0] == kind else None
    return (layout.hash_of_block_key if kind == BLOCK else layout.hash_of_page_key)(key)
