"""Collection: deleting the objects a volume's durable maps no longer name.

`Collection` is the half of Volume (volume.py) that deletes: after a
checkpoint, the journals, root and pages the new root supersedes and the
block objects that lost their last reference; for gc (sweep.py), what a
sweep of the store found unreferenced.  It works on the volume's state,
set up by Volume: `_lock` and its condition `_deleted`, `_map`,
`_candidates`, `_collecting`, `_deleting`, `_inflight`, `_lease`, `maps`,
`store` and `stats`.

A block object is deleted only when the newest durable root does not name
it, no journal after that root names it and no upload of the same content
is in flight; an upload of content being deleted waits for the delete
(Volume.store_block) and then stores it again.
"""
from ..codec.block import ZERO_HASH
from . import layout
from .blockmap import referenced_in
from .mapstore import Root


class Collection:
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
