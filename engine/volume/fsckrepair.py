"""`fsck --repair`: make a volume's map consistent from what can be read,
and remove what nothing refers to.

The repair is a writer: it takes the volume's lease as a writable mount
does (refused while one holds it), checks the volume again under it
(fsck.py), and then, as a mount's first act is, writes a root of its own
epoch: the map built from the newest readable root and the readable
journals after it (or a snapshot's pages, or nothing, when no root reads).
What that map cannot know is marked, never guessed:

  * a journal of the live map that cannot be read, or a journal or root
    missing from its chain (journalchain.py): its changes are lost; the
    live map keeps the state before it plus the later journals, and marks
    nothing (which blocks a missing one changed is unknown: FORMAT.md);
  * a page of the live map that cannot be read: each block of its range
    gets the LOST entry (codec.block.LOST_HASH: reads fail, EIO, until the
    block is written whole), but those a later journal set;
  * a block object that is missing or damaged stays named (reads fail and
    name it, never zeros), unless an alias of it reads correctly: then the
    plain object is put back from it first (so are pages).

Then it removes what nothing refers to with gc's machinery (sweep.py:
unreferenced blocks and pages, superseded roots and journals, aliases past
their quarantine; the lease tidies stale lease objects), the placeholders
of deleted snapshots below a higher record and abandoned temporary files.
It never deletes a snapshot record, nor an object a map names.  Two cases
hold back:

  * a snapshot record or page that cannot be read hides which blocks and
    pages it keeps: only superseded roots and journals are removed;
  * when the live map lost something (the above, or a newest root that
    cannot be read), only the damaged roots and journals go: whatever
    nothing refers to any more may hold what was lost, and is kept for
    recovery by hand until fsck --repair (or gc) runs again.

Finally the volume is checked once more (only the block objects found bad
are read again) to tell what damage is left.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..codec.block import HASH_SIZE, LOST_HASH, ZERO_HASH
from ..codec.keys import KeySource
from ..errors import CorruptData, NotFound
from ..store.base import ObjectStore
from .blockmap import BlockMap
from .checker import Damage, Progress
from .fsck import FsckReport, check
from .latedeletes import plain_key, still_late
from .mapobjects import LOG_PAGE, Root
from .mapstore import Loaded
from .sweep import sweep
from .volume import Volume


class NothingToRepair(Exception):
    """The check under the lease found nothing --repair can change."""

    def __init__(self, report: FsckReport) -> None:
        super().__init__("nothing to repair")
        self.report = report


@dataclass
class RepairResult:
    found: FsckReport                 # the check under the lease, before anything changed
    actions: list[str] = field(default_factory=list)  # what was done, one line each
    lost: list[str] = field(default_factory=list)     # what the repair could not keep, one line each
    after: FsckReport | None = None   # the check after the repair (None: nothing was done)

    @property
    def left(self) -> list[Damage]:
        """The damage left: unreadable objects still named, LOST entries."""
        return (self.after or self.found).damage

    @property
    def exit_status(self) -> int:
        """0: nothing needed doing; 1: repaired, no damage left; 2: damage left or something lost."""
        if self.left or self.lost:
            return 2
        return 1 if self.actions else 0


def repair(store: ObjectStore, record, *, threads: int = 16, progress: Progress | None = None) -> RepairResult:
    """Repair the volume with this (unlocked) record (see the module
    docstring).  Raises UserError when the volume's lease is held (nothing
    changed), StoreError when the store fails (the lease then expires or is
    released; what was written is consistent: a root is written only after
    its pages)."""
    try:
        volume = RepairVolume(store, record, threads=threads, progress=progress)
    except NothingToRepair as e:
        lost = [d.problem for d in e.report.problems if d.kind == "rollback"]
        return RepairResult(e.report, lost=lost)
    try:
        _remove(volume, volume.found, progress)
        after = check(store, record, threads=threads, progress=progress, only_blocks=volume.found.bad_blocks)
    finally:
        volume.close()
    return RepairResult(volume.found, volume.actions, volume.lost, after)


class RepairVolume(Volume):
    """A Volume whose live map is rebuilt from what can be read (see the
    module docstring); `found` is the check made under its lease."""

    READS_EARLY = False  # the repair's check is made under its lease

    def __init__(self, store: ObjectStore, record, *, threads: int, progress: Progress | None) -> None:
        self._threads, self._progress = threads, progress
        self.found: FsckReport | None = None
        self.actions: list[str] = []
        self.lost: list[str] = []
        self._opening = True
        keys = KeySource(data_key=record.keys.data_key) if record.encrypted else None
        super().__init__(store, writable=True, keys=keys, damaged_snapshots=True)
        self._opening = False
        self.actions.append(f"wrote the root {self.epoch:016x}-{self._root.seq:016x}: the live map from "
                            f"{self.found.live}")

    def _load(self, early: None = None) -> Loaded:
        found = check(self.store, self.record, threads=self._threads, progress=self._progress, rollback=False)
        if self.rollback:  # (Volume compared the map with what this machine saw, before taking the lease)
            found.problems.insert(0, Damage("rollback", self.store.url(), self.rollback, ref="rollback",
                                            repair="cannot: the store shows an older state than this machine saw"))
            self.lost.append(self.rollback)
        self.found = found
        if not found.to_repair():
            raise NothingToRepair(found)
        self._put_back(found)
        return self._rebuilt(found)

    def _put_back(self, found: FsckReport) -> None:
        """Put back, from an alias that reads, each plain object that is missing or damaged."""
        for (kind, content_hash), alias in sorted(found.restorable.items()):
            self.store.put(plain_key(kind, content_hash), self.store.get(alias))
        for kind in ("block", "page"):
            count = sum(k == kind for k, _ in found.restorable)
            if count:
                self.actions.append(f"put back {count} {kind} object(s) from their aliases")

    def _rebuilt(self, found: FsckReport) -> Loaded:
        """The live map the repair's root holds (module docstring)."""
        state = found.state
        pages = -(-self.block_count // self.record.page_entries)
        if state.root is not None:
            base = state.root
        elif state.snapshot is not None:
            base = Root(0, 0, list(state.snapshot.page_hashes))
        else:
            base = Root(0, 0, [ZERO_HASH] * pages)
        blockmap = BlockMap(self.block_count, self.record.page_entries)
        lost = set(range(pages)) if state.all_lost else set()
        for number, page_hash in enumerate(base.page_hashes):
            if page_hash == ZERO_HASH or number in lost:
                continue
            try:
                blockmap.load_page(number, self.maps.read_page(page_hash, number))
            except (CorruptData, NotFound):
                lost.add(number)
        for number in sorted(lost):
            blockmap.load_page(number, LOST_HASH * (blockmap.page_bytes(number) // HASH_SIZE))
            blockmap.mark_pages_dirty([number])
        replay = state.replay
        for index, content_hash in replay.changes.items():
            blockmap.set(index, content_hash)
        runs = self._mergeable(found, blockmap, replay.runs)
        self._tell(found, lost, blockmap, replay.runs, runs)
        listing = found.listing
        last_seq = max([s for _, s in listing.roots + listing.journals], default=0)
        return Loaded(blockmap, base, last_seq, replay.last_log, runs, replay.log_journals, listing)

    def _mergeable(self, found: FsckReport, blockmap: BlockMap, runs: list) -> list:
        """The logged pages that can be merged: those of blocks that read,
        and of blocks that do not when the pages cover them whole (then
        the block is built from them alone: its entry made ZERO_HASH)."""
        unreadable = found.bad_blocks - {h for kind, h in found.restorable if kind == "block"} | {LOST_HASH}
        covered: dict[int, set[int]] = {}
        for run in runs:
            covered.setdefault(run.block, set()).update(
                range(run.first_page, run.first_page + len(run.data) // LOG_PAGE))
        whole = self.block_size // LOG_PAGE
        for block, pages in covered.items():
            if blockmap.get(block) in unreadable and len(pages) == whole:
                blockmap.set(block, ZERO_HASH)
        return [r for r in runs if blockmap.get(r.block) not in unreadable]

    def _tell(self, found: FsckReport, lost_pages: set[int], blockmap: BlockMap, runs, kept_runs) -> None:
        state = found.state
        if state.went_back:
            self.lost.append(f"the newest root {state.went_back} cannot be read: the live map went back to "
                             f"{state.describe()}")
        roots = {d.ref for d in found.damage if d.kind == "root"}  # a missing root a journal follows
        for name in state.lost_journals:
            kind = "root" if name in roots else "journal"
            self.lost.append(f"the changes of the {kind} {name[0]:016x}-{name[1]:016x} are lost")
        if state.all_lost:
            self.lost.append("every block marked lost: no root nor snapshot could be read")
        elif lost_pages:
            marked = sum(blockmap.get(i) == LOST_HASH for n in lost_pages for i in
                         range(n * blockmap.page_entries, min((n + 1) * blockmap.page_entries, blockmap.count)))
            self.lost.append(f"{marked} block(s) marked lost: their map page could not be read")
        dropped = {r.block for r in runs} - {r.block for r in kept_runs}
        if dropped:
            self.lost.append(f"fsynced pages of block(s) {', '.join(map(str, sorted(dropped)))} are lost: "
                             "the blocks they go into cannot be read")
        if kept_runs:
            self.actions.append(f"merged {sum(len(r.data) for r in kept_runs) // LOG_PAGE} fsynced page(s) into "
                                f"{len({r.block for r in kept_runs})} block(s)")

    def _quarantine_late_deletes(self, root: Root) -> None:
        super()._quarantine_late_deletes(root)
        if self.found.state.went_back:  # the doomed hashes of the root that cannot be read are unknown
            late = still_late(self._lease.predecessor, self._lease.predecessor_state, self._quarantine.seconds)
            if late > 0:
                self._quarantine.add_everything(late)

    def _drop_superseded(self, old: Root, new: Root, keep: set[tuple[int, int]]) -> None:
        """The first root deletes nothing: what goes is _remove's to say."""
        if not self._opening:
            super()._drop_superseded(old, new, keep)


def _remove(volume: RepairVolume, found: FsckReport, progress: Progress | None) -> None:
    """Remove what nothing refers to, as far as the repair may (module docstring)."""
    left, actions = found.leftovers, volume.actions
    if found.lossy:
        volume.delete_map_objects(found.damaged_map_keys)
        if found.damaged_map_keys:
            actions.append(f"removed {len(found.damaged_map_keys)} damaged root(s) and journal(s)")
        actions.append(f"kept what nothing refers to now ({len(left.blocks)} block object(s), {len(left.pages)} "
                       "map page(s), and the roots and journals the new root supersedes): it may hold what was "
                       "lost; fsck --repair (or gc) again removes it")
    else:
        found_swept = sweep(volume, delete=True, progress=progress, maps_only=found.hidden)
        done = [(found_swept.blocks, "block object(s)"), (found_swept.pages, "map page(s)"),
                (found_swept.roots, "superseded root(s)"), (found_swept.journals, "superseded journal(s)"),
                (found_swept.aliases, "alias(es) settled")]
        if any(n for n, _ in done):
            actions.append("removed " + ", ".join(f"{n} {what}" for n, what in done if n))
        if found.hidden:
            actions.append("deleted no block object or map page: a snapshot record or page that cannot be read "
                           "hides what it keeps")
    if left.placeholders:
        volume.delete_map_objects(left.placeholders)
        actions.append(f"removed {len(left.placeholders)} placeholder(s) of deleted snapshots")
    if left.leases:  # (taking the lease tidied them)
        actions.append(f"removed {len(left.leases)} stale lease object(s)")
    temp_files = volume.store.tidy_scratch()
    if temp_files:
        actions.append(f"removed {temp_files} abandoned temporary file(s)")
