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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone

from ..codec._hot import count_zero_entries, differing_entries
from ..codec.block import HASH_SIZE, ZERO_HASH
from ..errors import UserError
from . import layout
from .mapstore import FETCH_PARALLELISM, MapStore
from .retention import Decision, Policy, decide
from .retention import Snapshot as RetainedSnapshot
from .snapshots import Snapshot, SnapshotRecords
from .sweep import Progress, no_progress
from .volume import Volume


def take(volume: Volume, *, name: str | None = None, type: str = "manual",
         started: float | None = None, progress: Progress | None = None) -> Snapshot:
    """Snapshot the volume's map as of now; `started` (seconds since the
    epoch) dates it otherwise than now (tests of thinning, imports).
    `progress` (sweep.py's) sees the changed map pages compared and the
    new block objects sized.  Raises UserError for a bad or taken name,
    or while fsync-logged pages wait for their blocks' upload (a live
    mount's device must flush first), StoreError if the store fails."""
    progress = progress or no_progress
    started = time.time() if started is None else started
    records = SnapshotRecords.of(volume.store, volume.record)
    previous = records.list()
    root = volume.snapshot_root()
    if root.live:
        raise UserError("fsynced pages are still waiting for their blocks' upload; flush first")
    changed, new_hashes = _changes(volume.maps, previous[-1].page_hashes if previous else None,
                                   root.page_hashes, progress)
    new_bytes = _stored_bytes(volume, new_hashes, progress("sizing new blocks", len(new_hashes)))
    snapshot = records.write((root.epoch, root.seq), root.page_hashes, name=name, type=type, started=started,
                             guard=volume.delete_guard, changed_blocks=changed, new_bytes=new_bytes)
    return snapshot


def restore(volume: Volume, name: str, progress: Progress | None = None) -> tuple[Snapshot, Snapshot]:
    """Make the live disk what snapshot `name` keeps, after a `pre-restore`
    snapshot of the current state (so a restore can be undone).  Returns
    (the snapshot restored, the pre-restore one).  Raises UserError if
    there is no such snapshot.  `progress` (sweep.py's) sees the snapshot
    of now taken (as `take`), then the snapshot's map made live (its
    pages read: one step)."""
    progress = progress or no_progress
    records = SnapshotRecords.of(volume.store, volume.record)
    kept = records.find(name)
    undo = take(volume, type="pre-restore", progress=progress)
    step = progress(f"restoring snapshot {kept.number}", 1)
    volume.restore(kept.page_hashes)
    step(1)
    return kept, undo


def delete(volume: Volume, name: str, progress: Progress | None = None) -> Snapshot:
    """Delete the snapshot of that name (or number), then what only it
    kept (`progress`: as prune's).  Raises UserError if there is none."""
    records = SnapshotRecords.of(volume.store, volume.record)
    snapshot = records.find(name)
    records.delete(snapshot.number, guard=volume.delete_guard)
    _free(volume, records, [snapshot], progress or no_progress)
    return snapshot


def delete_damaged(volume: Volume, number: int) -> None:
    """Delete the snapshot record of that number, which cannot be read
    (Volume.damaged_snapshots): what it kept is unknown, so nothing else
    goes; gc finds it once no damaged record is left."""
    SnapshotRecords.of(volume.store, volume.record).delete(number, guard=volume.delete_guard)


def _free(volume: Volume, records: SnapshotRecords, gone: list[Snapshot], progress: Progress) -> None:
    """Delete the blocks and pages only the deleted snapshots `gone` named:
    each distinct page of the live disk and of every snapshot is read once
    to find them ("reading map pages", a step per page), and the store is
    not listed (gc finds the rest).  The volume checks each against its
    live map before deleting it ("deleting", one step at the end)."""
    kept = records.list()
    volume.keep_pages_of(kept)
    live = volume.maps.newest_root(volume.maps.listing()).page_hashes
    KEPT, GONE = 0, 1
    owners = [(KEPT, live)] + [(KEPT, s.page_hashes) for s in kept] + [(GONE, s.page_hashes) for s in gone]
    blocks = _unique_blocks(volume.maps, owners, progress).get(GONE, set())
    pages = {h for s in gone for h in s.page_hashes} - set(live) - {h for s in kept for h in s.page_hashes}
    doomed = ([layout.block_key(h) for h in blocks], [layout.page_key(h) for h in pages - {ZERO_HASH}])
    step = progress("deleting", len(doomed[0]) + len(doomed[1]))
    volume.delete_unreferenced(*doomed)
    step(len(doomed[0]) + len(doomed[1]))


@dataclass(frozen=True)
class Diff:
    """Changed byte ranges of the disk, (offset, length), in order."""
    ranges: list[tuple[int, int]]

    @property
    def total(self) -> int:
        """Bytes in all ranges."""
        return sum(length for _, length in self.ranges)

    def summary(self) -> dict:
        return {"ranges": [list(r) for r in self.ranges], "count": len(self.ranges), "bytes": self.total}


def diff(volume: Volume, a: str, b: str) -> Diff:
    """The byte ranges where the disk as snapshot `a` keeps it differs from
    snapshot `b` (or `live`: the map as this volume holds it now).  Pages
    equal by hash are skipped; the others are compared entry by entry.
    Raises UserError for an unknown snapshot."""
    records = SnapshotRecords.of(volume.store, volume.record)
    left, right = _view(volume, records, a), _view(volume, records, b)

    def compare(number: int) -> list[int]:
        if left.hashes[number] is not None and left.hashes[number] == right.hashes[number]:
            return []
        first = number * volume.maps.page_entries
        return [first + i for i in differing_entries(left.entries(number), right.entries(number), HASH_SIZE)]

    with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        blocks = [i for found in pool.map(compare, range(len(left.hashes))) for i in found]
    return Diff(_ranges(blocks, volume.block_size))


@dataclass(frozen=True)
class _MapView:
    hashes: list[bytes | None]  # page hashes (None: compare its entries)
    entries: Callable[[int], bytes]


def _view(volume: Volume, records: SnapshotRecords, name: str) -> _MapView:
    if name == "live":
        blockmap, hashes = volume.live_pages()
        return _MapView(hashes, blockmap.page)
    kept = records.find(name)
    return _MapView(list(kept.page_hashes), lambda n: _entries(volume.maps, kept.page_hashes[n], n))


def _ranges(blocks: list[int], block_size: int) -> list[tuple[int, int]]:
    """Consecutive block numbers joined into (offset, length) byte ranges."""
    ranges: list[list[int]] = []
    for index in blocks:
        if ranges and ranges[-1][0] + ranges[-1][1] == index:
            ranges[-1][1] += 1
        else:
            ranges.append([index, 1])
    return [(first * block_size, count * block_size) for first, count in ranges]


def prune(volume: Volume, policy: Policy, *, named_too: bool = False, dry_run: bool = False,
          progress: Progress | None = None) -> list[tuple[Snapshot, Decision]]:
    """Delete the snapshots `policy` does not keep (retention.py), then
    delete what only they kept; a dry run deletes nothing.  `progress`
    (sweep.py's) sees the pages read and the objects deleted.  Returns
    each snapshot with its decision, newest first."""
    records = SnapshotRecords.of(volume.store, volume.record)
    by_number = {str(s.number): s for s in records.list()}
    decisions = decide([RetainedSnapshot(n, _parse_utc(s.started), s.named) for n, s in by_number.items()],
                       policy, named_too=named_too)
    gone = [by_number[d.snapshot.name] for d in decisions if not d.keep]
    if gone and not dry_run:
        for snapshot in gone:
            records.delete(snapshot.number, guard=volume.delete_guard)
        _free(volume, records, gone, progress or no_progress)
    return [(by_number[d.snapshot.name], d) for d in decisions]


def decision_summary(snapshot: Snapshot, decision: Decision) -> dict:
    """What `prune` shows of one snapshot's fate."""
    return {**snapshot.summary(), "keep": decision.keep, "reasons": decision.reasons}


def _parse_utc(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=timezone.utc)


def mapped_blocks(maps: MapStore, snapshots: list[Snapshot]) -> int:
    """Blocks with an object, summed over `snapshots`; each distinct page
    is read once, so the cost follows the distinct pages."""
    counted: dict[bytes, int] = {ZERO_HASH: 0}
    pages = {(h, n) for s in snapshots for n, h in enumerate(s.page_hashes) if h != ZERO_HASH}

    def count(item) -> tuple[bytes, int]:
        page_hash, number = item
        entries = maps.read_page(page_hash, number)
        return page_hash, len(entries) // HASH_SIZE - count_zero_entries(entries, HASH_SIZE)

    with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        counted.update(pool.map(count, pages))
    return sum(counted[h] for s in snapshots for h in s.page_hashes)


def _changes(maps: MapStore, old_pages: list[bytes] | None, new_pages: list[bytes],
             progress: Progress = no_progress) -> tuple[int, set[bytes]]:
    """(blocks whose entry differs between two maps given by their page
    hashes, the hashes the new map holds at those blocks); None: an empty map."""
    pairs = [(n, old_pages[n] if old_pages else ZERO_HASH, new) for n, new in enumerate(new_pages)
             if not old_pages or old_pages[n] != new]
    step = progress("comparing changed map pages", len(pairs))

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
            step(1)
    return changed, hashes


def listed(volume: Volume) -> list[dict]:
    """Every snapshot's summary, oldest first, with `unique_blocks` and
    `unique_bytes`: the blocks no other snapshot and not the live disk (as
    of its newest durable root) names, and their stored bytes, which is
    what deleting that snapshot would free.  Reads each distinct map page
    once and HEADs each unique block."""
    snapshots = SnapshotRecords.of(volume.store, volume.record).list()
    live = volume.maps.newest_root(volume.maps.listing()).page_hashes
    unique = _unique_blocks(volume.maps, [(0, live)] + [(s.number, s.page_hashes) for s in snapshots])
    return [{**s.summary(), "unique_blocks": len(unique.get(s.number, ())),
             "unique_bytes": _stored_bytes(volume, unique.get(s.number, set()))} for s in snapshots]


def _unique_blocks(maps: MapStore, owners: list[tuple[int, list[bytes]]],
                   progress: Progress = no_progress) -> dict[int, set[bytes]]:
    """For each owner (a number; its map's page hashes), the block hashes
    only its map names.  A page several owners share names nothing unique."""
    page_owners: dict[bytes, set[int]] = {}
    for owner, page_hashes in owners:
        for page_hash in page_hashes:
            page_owners.setdefault(page_hash, set()).add(owner)
    step = progress("reading map pages", len(page_owners.keys() - {ZERO_HASH}))
    SHARED = -1
    block_owner: dict[bytes, int] = {}
    for page_hash, who in page_owners.items():
        if page_hash == ZERO_HASH:
            continue
        owner = next(iter(who)) if len(who) == 1 else SHARED
        page = memoryview(maps.read_page(page_hash))
        for i in range(0, len(page), HASH_SIZE):
            block = bytes(page[i : i + HASH_SIZE])
            if block != ZERO_HASH:
                block_owner[block] = owner if block_owner.get(block, owner) == owner else SHARED
        step(1)
    unique: dict[int, set[bytes]] = {}
    for block, owner in block_owner.items():
        if owner != SHARED:
            unique.setdefault(owner, set()).add(block)
    return unique


def _entries(maps: MapStore, page_hash: bytes, number: int) -> bytes:
    if page_hash == ZERO_HASH:
        return bytes(maps.page_bytes(number))
    return maps.read_page(page_hash, number)


def _stored_bytes(volume: Volume, hashes: set[bytes], step: Callable[[int], None] = lambda n: None) -> int:
    """Stored bytes of these block objects (a HEAD each, in parallel;
    `step(1)` after each)."""
    total = 0
    with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
        for size in pool.map(lambda h: volume.store.head(layout.block_key(h)), hashes):
            total += size or 0
            step(1)
    return total
