"""Snapshots as a live mount shows them beside its disk: which snapshots
exist (a catalog re-read now and then) and what each one's disk holds (its
block map, a page at a time, loaded on first use).

Snapshot records are immutable and their numbers never reused
(snapshots.py), so a record read once stays true for as long as it is
listed, and a page, named by its content hash, never changes.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict

from ..codec.block import HASH_SIZE, ZERO_HASH
from ..errors import CorruptData, NotFound
from .mapstore import ForeignObject, MapStore
from .snapshots import Snapshot, SnapshotRecords

log = logging.getLogger(__name__)

CATALOG_SECONDS = 2.0  # how stale the list of snapshots may be (one listing each time it is older)
MAP_PAGES = 16         # pages each snapshot's map keeps in memory (128 KiB each with 4096 entries)


class SnapshotMap:
    """The block map one snapshot keeps.  Thread-safe."""

    def __init__(self, maps: MapStore, snapshot: Snapshot, pages: int = MAP_PAGES) -> None:
        self.maps, self.snapshot, self._most = maps, snapshot, pages
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def lookup(self, index: int) -> bytes:
        """The content hash of block `index` (ZERO_HASH: all zeros).
        Raises StoreError (CorruptData, NotFound) when its page cannot be read."""
        number, slot = divmod(index, self.maps.page_entries)
        entries = self._page(number)
        return entries[slot * HASH_SIZE:(slot + 1) * HASH_SIZE]

    def _page(self, number: int) -> bytes:
        with self._lock:
            entries = self._pages.get(number)
            if entries is not None:
                self._pages.move_to_end(number)
                return entries
        page_hash = self.snapshot.page_hashes[number]
        if page_hash == ZERO_HASH:
            entries = bytes(self.maps.page_bytes(number))
        else:  # read outside the lock: two readers of one page may both fetch it
            entries = self.maps.read_page(page_hash, number)
        with self._lock:
            self._pages[number] = entries
            while len(self._pages) > self._most:
                self._pages.popitem(last=False)
        return entries


class SnapshotCatalog:
    """The volume's snapshots, newest last, re-listed at most every
    CATALOG_SECONDS; each record is read once.  Thread-safe."""

    def __init__(self, records: SnapshotRecords, maps: MapStore, *, open_maps: int = 4) -> None:
        self.records, self.maps = records, maps
        self._known: dict[int, Snapshot] = {}
        self._listed_at = -CATALOG_SECONDS
        self._maps: OrderedDict[int, SnapshotMap] = OrderedDict()
        self._open_maps = open_maps
        self._lock = threading.Lock()

    def current(self) -> list[Snapshot]:
        """Every snapshot, oldest first.  Raises StoreError."""
        with self._lock:
            if time.monotonic() - self._listed_at < CATALOG_SECONDS:
                return list(self._known.values())
            numbers = self.records.numbers()
            known = {n: s for n, s in self._known.items() if n in numbers}
            for number in numbers:
                if number not in known:
                    try:
                        known[number] = self.records.read(number)
                    except (NotFound, ForeignObject):  # deleted since the listing; another volume's
                        continue
                    except CorruptData as e:  # shown nowhere: `snapshot list` names it
                        log.warning("snapshot %d is not shown: %s", number, e)
            self._known = dict(sorted(known.items()))
            self._listed_at = time.monotonic()
            return list(self._known.values())

    def changed(self) -> None:
        """Snapshots were taken or deleted here: list them again next time."""
        with self._lock:
            self._listed_at = -CATALOG_SECONDS

    def by_number(self, number: int) -> Snapshot | None:
        return next((s for s in self.current() if s.number == number), None)

    def map_of(self, snapshot: Snapshot) -> SnapshotMap:
        """The map of `snapshot`; the last few used stay open (their pages
        in memory)."""
        with self._lock:
            found = self._maps.get(snapshot.number)
            if found is None:
                found = self._maps[snapshot.number] = SnapshotMap(self.maps, snapshot)
                while len(self._maps) > self._open_maps:
                    self._maps.popitem(last=False)
            self._maps.move_to_end(snapshot.number)
            return found
