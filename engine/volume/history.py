"""Taking and deleting snapshots of a volume open writable (issue 14).

A snapshot keeps a root: `take` writes a checkpoint whose map holds every
acknowledged change and no fsync-logged pages still outside their blocks
(their journals would not be kept with it), then one snapshot record
(snapshots.py) naming that root's pages.  Its cost grows with what changed
since the previous snapshot: unchanged pages are compared by hash, changed
ones entry by entry in C, and only the objects new to it are looked at.
"""
from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

from ..codec._hot import differing_entries
from ..codec.block import HASH_SIZE, ZERO_HASH
from ..errors import UserError
from . import layout
from .mapstore import FETCH_PARALLELISM, MapStore
from .snapshots import Snapshot, SnapshotRecords
from .sweep import sweep
from .volume import Volume


def take(volume: Volume, *, name: str | None = None, type: str = "manual") -> Snapshot:
    """Snapshot the volume's map as of now.  Raises UserError for a bad or
    taken name, or while fsync-logged pages wait for their blocks' upload
    (a live mount's device must flush first), StoreError if the store fails."""
    started = time.time()
    records = SnapshotRecords.of(volume.store, volume.record)
    previous = records.list()
    root = volume.snapshot_root()
    if root.live:
        raise UserError("fsynced pages are still waiting for their blocks' upload; flush first")
    changed, new_hashes = _changes(volume.maps, previous[-1].page_hashes if previous else None,
                                   root.page_hashes)
    snapshot = records.write((root.epoch, root.seq), root.page_hashes, name=name, type=type, started=started,
                             changed_blocks=changed, new_bytes=_stored_bytes(volume, new_hashes))
    return snapshot


def delete(volume: Volume, name: str) -> Snapshot:
    """Delete the snapshot of that name (or number), then sweep what only
    it kept.  Raises UserError if there is none."""
    records = SnapshotRecords.of(volume.store, volume.record)
    snapshot = records.find(name)
    records.delete(snapshot.number)
    sweep(volume, delete=True)
    return snapshot


def _changes(maps: MapStore, old_pages: list[bytes] | None, new_pages: list[bytes]) -> tuple[int, set[bytes]]:
    """(blocks whose entry differs between two maps given by their page
    hashes, the hashes the new map holds at those blocks); None: an empty map."""
    pairs = [(n, old_pages[n] if old_pages else ZERO_HASH, new) for n, new in enumerate(new_pages)
             if not old_pages or old_pages[n] != new]

    def compare(pair) -> tuple[int, set[bytes]]:
        number, old, new = pair
        a, b = _entries(maps, old, number), _entries(maps, new, number)
        at = differing_entries(a, b, HASH_SIZE)
        return len(at), {b[i * HASH_SIZE:(i + 1) * HASH_SIZE] for i in at} - {ZERO_HASH}

    changed, hashes = 0, set()
    with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        for count, found in pool.map(compare, pairs):
            changed += count
            hashes |= found
    return changed, hashes


def _entries(maps: MapStore, page_hash: bytes, number: int) -> bytes:
    if page_hash == ZERO_HASH:
        return bytes(maps.page_bytes(number))
    return maps.read_page(page_hash, number)


def _stored_bytes(volume: Volume, hashes: set[bytes]) -> int:
    """Stored bytes of these block objects (a HEAD each, in parallel)."""
    with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        return sum(size or 0 for size in pool.map(lambda h: volume.store.head(layout.block_key(h)), hashes))
