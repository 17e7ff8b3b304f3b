"""Views of a volume's map for readers beside it: a read-only volume
following its writer (follow.py) and comparisons of maps (history.py).

Mixed into Volume (volume.py); works on its `_lock`, `_map`, `_root`,
`_merged`, `_opened`, `_inflight`, `replaced`, `unmerged_pages` and
`writable`.
"""
from .blockmap import BlockMap
from .mapstore import Loaded, Root


class Views:
    """Following and copying the map, for Volume."""

    def take_opened(self) -> Loaded | None:
        """Read-only: the state this volume was opened from, once (then
        None): a follower's first refresh starts from it instead of
        reading the map again."""
        opened, self._opened = self._opened, None
        return opened

    def mark_replaced(self, reason: str) -> None:
        """Read-only: the place no longer holds this volume (`reason` says
        how); from now on no block of it is read (load_block raises)."""
        if self.writable:
            raise ValueError("only a read-only volume follows another writer")
        self.replaced = reason

    def live_pages(self) -> tuple[BlockMap, list[bytes | None]]:
        """A copy of the live map, and its pages' hashes as of the durable
        root (None for a page changed since)."""
        with self._lock:
            hashes = list(self._root.page_hashes)
            for number in self._map.dirty_pages():
                hashes[number] = None
            return self._map.copy(), hashes

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
