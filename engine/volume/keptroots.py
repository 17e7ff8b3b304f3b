"""The roots snapshots keep, as a writable volume takes and restores them
(history.py drives both).

Mixed into Volume (volume.py); works on its `_sync_lock`, `_lock`, `_map`,
`_root`, `_seq`, `_stored`, `_pending`, `_live`, `_kept_pages`,
`_snapshotted`, `_fresh`, `_candidates` and `_journals`, and its
checkpoint and collection methods.
"""
from ..codec.block import ZERO_HASH
from .latedeletes import BLOCK, PAGE
from .mapobjects import ROOT_KIND
from .mapstore import Root


class KeptRoots:
    """Snapshot roots and restores, for Volume."""

    def snapshot_root(self) -> Root:
        """A root of every change committed so far, from which on a snapshot
        keeps it: its pages are never dropped, and no object that exists
        now is deleted by a checkpoint (only gc, marking from snapshots)."""
        with self._sync_lock:
            with self._lock:
                self._snapshotted = True
                self._fresh.clear()
            self._checkpoint(True)
            with self._lock:
                self._kept_pages |= set(self._root.page_hashes) - {ZERO_HASH}
            return self._root

    def restore(self, page_hashes: list[bytes]) -> None:
        """Make the live map the one these pages hold (a snapshot's), in one
        new root that names them: the cost follows the map's pages, not its
        blocks.  Deletes nothing a snapshot keeps (take one of the current
        state first).  Raises ValueError while changes wait for a journal."""
        loaded = self.maps.load_root(Root(0, 0, list(page_hashes)))
        with self._sync_lock:
            self._check_lease_held()
            doomed = self._doomed(BLOCK, set()), self._doomed(PAGE, set())
            with self._lock:
                if self._pending or self._map.dirty_pages() or any(self._live.values()):
                    raise ValueError("restore needs every change checkpointed first")
                self._seq += 1
                root = Root(self.epoch, self._seq, list(page_hashes), self._log,
                            doomed_blocks=doomed[0], doomed_pages=doomed[1])
            self._write_map(self.maps.write_root, root)
            self._stored = (root.seq, ROOT_KIND)
            with self._lock:
                old_root, self._root, self._map = self._root, root, loaded.map
                self._candidates, self._journals = set(), 0
            self._drop_superseded(old_root, root, set())
