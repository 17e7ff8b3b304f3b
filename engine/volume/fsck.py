"""`fsck`: check everything a volume holds, and say what `--repair` would do.

The check reads only and takes no lease, so it runs beside a live writable
mount.  It lists the whole place once, then reads:

  * every root: the newest readable one is the base of the live map; a
    damaged newest one sends the live map back to the newest readable older
    root (and its journals), else to the newest readable snapshot's pages,
    else to nothing (every block lost); older roots are superseded;
  * every journal: those of the base root's epoch after it on their chain
    are the live map's changes (fsckjournals.py: a damaged one, or one
    missing from the chain: its changes are lost; one off the chain is a
    superseded attempt), and so are those holding fsynced pages the root
    still needs; the rest are superseded;
  * every snapshot record, every page the live map and the snapshots name,
    and every block object they name (checker.py: frame, seal, length,
    content hash), each distinct object once;
  * aliases (latedeletes.py), lease objects, the file:// store's temporary
    files, and what nothing names; keys the layout does not name are listed
    and never touched.

Each problem is a checker.Damage with the byte ranges it takes from each map
and what --repair does about it.  Severity "damage": something reads as an
error or was lost (exit 2); "repairable": it reads, yet --repair puts it
right (a plain object gone whose alias holds it).  Leftovers (what a crash
or a takeover leaves: unreferenced objects, superseded roots and journals,
stale lease objects) are not problems.  fsckrepair.py does the repair from
the same report, taken again under the volume's lease.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..codec.block import LOST_HASH, ZERO_HASH
from ..errors import CorruptData, NotFound, StoreError
from ..store.base import ObjectStore
from . import layout
from .checker import Checker, Damage, MapView, Progress, problem
from .fsckjournals import FsckJournals
from .latedeletes import LATE_DELETE_SECONDS
from .lock import read_leases
from .mapobjects import ForeignObject, Root
from .mapstore import Listing, Replay
from .snapshots import SnapshotRecords

ATTEMPTS = 5  # looks at the volume while a live writer keeps replacing its newest root or journals
CANNOT = "cannot: its range reads as an error (EIO), never as zeros, until written whole"


class _Changed(Exception):
    """A root or journal of the live map went while it was read: list again."""


@dataclass
class Leftovers:
    """What nothing refers to: not damage, removed by --repair (and gc).
    Lists of keys; those of blocks and pages hold aliases of hashes nothing
    names too."""
    blocks: list[str] = field(default_factory=list)
    block_bytes: int = 0
    pages: list[str] = field(default_factory=list)
    page_bytes: int = 0
    roots: list[str] = field(default_factory=list)         # superseded (readable) roots
    journals: list[str] = field(default_factory=list)      # superseded (readable) journals
    aliases: list[str] = field(default_factory=list)       # past their quarantine, of hashes a map names
    leases: list[str] = field(default_factory=list)        # lease objects no mount needs
    placeholders: list[str] = field(default_factory=list)  # of deleted snapshots, below a higher record
    temp_files: int = 0                                    # abandoned ones (file://)

    def count(self) -> int:
        return (len(self.blocks) + len(self.pages) + len(self.roots) + len(self.journals) + len(self.aliases)
                + len(self.leases) + len(self.placeholders) + self.temp_files)

    def summary(self, url: str) -> dict:
        """Counts and bytes of blocks, pages and aliases; the URLs of the rest."""
        urls = lambda keys: [f"{url}/{k}" for k in keys]  # noqa: E731
        return {"blocks": len(self.blocks), "block_bytes": self.block_bytes, "pages": len(self.pages),
                "page_bytes": self.page_bytes, "aliases": len(self.aliases), "roots": urls(self.roots),
                "journals": urls(self.journals), "leases": urls(self.leases),
                "placeholders": urls(self.placeholders), "temp_files": self.temp_files}


@dataclass
class LiveState:
    """What the live map is built from: a root and the journals after it,
    or (its root damaged and no older one readable) a snapshot's pages, or
    nothing (every block lost)."""
    root: Root | None = None
    snapshot: object = None                # a Snapshot
    all_lost: bool = False
    went_back: str | None = None           # the newest root's URL, when it could not be read
    journals: list[tuple[int, int]] = field(default_factory=list)       # replayed, in order
    lost_journals: list[tuple[int, int]] = field(default_factory=list)  # of the live map, unreadable
    replay: Replay = field(default_factory=lambda: Replay({}, [], {}, 0))

    def describe(self) -> str:
        if self.all_lost:
            return "nothing readable: every block lost"
        if self.snapshot is not None:
            return f"snapshot {self.snapshot.number} '{self.snapshot.name}' (no root could be read)"
        if self.root is None or not (self.root.epoch or self.root.seq):
            base = "no root (never checkpointed)"
        else:
            base = f"root {self.root.epoch:016x}-{self.root.seq:016x}"
        return base + (f" and {len(self.journals)} journal(s) after it" if self.journals else "")


@dataclass
class FsckReport:
    url: str
    live: str = ""
    maps: list[str] = field(default_factory=list)
    checked: dict = field(default_factory=dict)
    problems: list[Damage] = field(default_factory=list)
    leftovers: Leftovers = field(default_factory=Leftovers)
    notes: list[str] = field(default_factory=list)
    unknown_keys: list[str] = field(default_factory=list)
    # For the repair (fsckrepair.py), not shown:
    state: LiveState = field(default_factory=LiveState)
    listing: Listing = field(default_factory=lambda: Listing([], [], []))
    restorable: dict = field(default_factory=dict)      # (kind, hash) -> key of an alias that reads
    bad_blocks: set = field(default_factory=set)        # hashes of block objects that cannot be read
    lost_pages: list = field(default_factory=list)      # numbers of live pages that cannot be read
    damaged_records: list = field(default_factory=list)
    hidden: bool = False                 # a snapshot's record or page is unreadable: what it keeps is unknown
    damaged_map_keys: list = field(default_factory=list)  # roots and journals that fail: removed once superseded

    @property
    def damage(self) -> list[Damage]:
        return [d for d in self.problems if d.severity == "damage"]

    @property
    def lossy(self) -> bool:
        """Whether the live map a repair builds loses something."""
        s = self.state
        return bool(s.went_back or s.lost_journals or self.lost_pages or s.all_lost)

    def to_repair(self) -> bool:
        """Whether --repair has anything to do."""
        return bool(self.leftovers.count() or self.restorable or self.lossy or self.damaged_map_keys
                    or self.state.replay.runs or any(d.severity == "repairable" for d in self.problems))

    def summary(self) -> dict:
        return {"url": self.url, "live": self.live, "maps": self.maps, "checked": self.checked,
                "damaged": len(self.damage), "problems": [d.summary() for d in self.problems],
                "leftovers": self.leftovers.summary(self.url), "notes": self.notes, "unknown_keys": self.unknown_keys}


def check(store: ObjectStore, record, *, threads: int = 16, progress: Progress | None = None,
          only_blocks: set[bytes] | None = None, rollback: bool = True) -> FsckReport:
    """Check the volume with this (unlocked) record (see the module
    docstring).  `only_blocks`: read only these block objects, and those
    whose plain object is not listed (a second look after a repair);
    `rollback`: also compare the map with what this machine saw (an
    encrypted volume).  Raises StoreError when the store fails, or when a
    writer beside it keeps replacing the live map."""
    for attempt in range(ATTEMPTS):
        try:
            return _Fsck(store, record, threads, progress, attempt == ATTEMPTS - 1).run(only_blocks, rollback)
        except _Changed:
            continue
    raise StoreError(f"the volume kept changing while it was checked ({ATTEMPTS} looks); try again")


class _Fsck(Checker, FsckJournals):
    def __init__(self, store: ObjectStore, record, threads: int, progress: Progress | None, last: bool) -> None:
        super().__init__(store, record, threads, progress)
        self.records = SnapshotRecords.of(store, record)
        self.last = last  # the last look: a live map object found gone is reported, not looked for again
        self.report = FsckReport(store.url())
        self.damage = self.report.problems

    def run(self, only_blocks: set[bytes] | None, rollback: bool) -> FsckReport:
        report = self.report
        self.keys = dict(self._counted(self.store.list_sizes()))
        roots, journals = self._names(layout.ROOTS), self._names(layout.JOURNAL)
        report.listing = Listing(roots, journals, [])
        warning = self.maps.rollback(report.listing) if rollback else None
        if warning:
            self.damage.append(Damage("rollback", self.store.url(), warning, repair="cannot: the store shows an "
                                      "older state than this machine saw", ref="rollback"))
        read_roots = self._read_all(roots, self.maps.read_root, "reading roots")
        read_journals = self._read_all(journals, self.maps.read_journal, "reading journals")
        snapshots = self._snapshots()
        state = self._live(roots, read_roots, journals, read_journals, snapshots)
        report.state, report.live = state, state.describe()
        chosen = [] if state.all_lost else [self._live_view(state, snapshots)]
        chosen += [MapView(s.name, s.page_hashes) for s in snapshots]
        report.maps = [m.name for m in chosen]
        pages = self._pages(chosen)
        named = self.named_blocks(chosen, pages)
        self._blocks(chosen, pages, named, only_blocks)
        self._unreferenced(chosen, named)
        self._leases_and_scratch()
        report.unknown_keys = sorted(k for k in self.keys if k and not layout.is_volume_key(k))
        report.checked = {"roots": len(roots), "journals": len(journals),
                          "snapshot_records": len(snapshots) + len(report.damaged_records),
                          "pages": self.pages_checked, "blocks": self.blocks_checked}
        if any(d.problem == "missing" for d in self.damage):
            self._look_again()
        return report

    def _counted(self, items):
        step = self.progress("listing objects", None)
        for item in items:
            step(1)
            yield item

    def _names(self, prefix: str) -> list[tuple[int, int]]:
        return sorted(n for k in self.keys if (n := layout.name_of(k, prefix)) is not None)

    def _read_all(self, names, read, phase: str) -> dict:
        """name -> the object, or the exception reading it raised."""
        step = self.progress(phase, len(names))

        def one(name):
            try:
                return read(*name)
            except (CorruptData, NotFound) as e:
                return e
            finally:
                step(1)

        with ThreadPoolExecutor(self.threads) as pool:
            return dict(zip(names, pool.map(one, names)))

    # -- the live map ---------------------------------------------------------------

    def _live(self, roots, read_roots, journals, read_journals, snapshots) -> LiveState:
        state = LiveState()
        readable = [n for n in roots if isinstance(read_roots[n], Root)]
        base = readable[-1] if readable else None
        key = layout.root_key
        for name in roots:
            found = read_roots[name]
            if isinstance(found, NotFound):
                if base is not None and name < base:
                    continue  # superseded, and deleted meanwhile
                self._changed()  # a writer's newer root superseded it meanwhile (on the last look: damage)
            if isinstance(found, ForeignObject):
                self.report.leftovers.roots.append(key(*name))
            elif isinstance(found, (CorruptData, NotFound)):
                self.report.damaged_map_keys.append(key(*name))
                newest = name == roots[-1]
                state.went_back = self.store.key_url(key(*name)) if newest else state.went_back
                self.damage.append(Damage("root", self.store.key_url(key(*name)), problem(found),
                                          [self.whole_disk("live")] if newest else [], name,
                                          "removes it; the live map goes back to " if newest else
                                          "removes it (superseded)"))
            elif name != base:
                self.report.leftovers.roots.append(key(*name))
        if base is not None:
            state.root = read_roots[base]
        elif roots and state.went_back:
            state.snapshot = snapshots[-1] if snapshots else None
            state.all_lost = not snapshots
        else:
            state.root = Root(0, 0, [ZERO_HASH] * -(-self.record.block_count // self.entries))
        if state.root is not None:
            self._journals(state, journals, read_journals)
        else:
            self._superseded_journals(journals, read_journals, set())
        if state.went_back:
            (d,) = [d for d in self.damage if d.object == state.went_back]
            d.repair += state.describe()
        return state

    def _live_view(self, state: LiveState, snapshots) -> MapView:
        if state.snapshot is not None:
            return MapView("live", list(state.snapshot.page_hashes))
        return MapView("live", list(state.root.page_hashes), dict(state.replay.changes))

    def _changed(self) -> None:
        if not self.last:
            raise _Changed

    # -- snapshots, pages, blocks -----------------------------------------------------------

    def _snapshots(self) -> list:
        sizes = {n: size for k, size in self.keys.items() if (n := layout.number_of_snapshot_key(k)) is not None}
        newest = max(sizes, default=0)
        for number in sorted(n for n, size in sizes.items() if not size and n < newest):
            self.report.leftovers.placeholders.append(layout.snapshot_key(number))
        found = self._read_all([(n,) for n, size in sorted(sizes.items()) if size], self.records.read,
                               "reading snapshot records")
        snapshots = []
        for (number,), record in found.items():
            if isinstance(record, CorruptData) and not isinstance(record, ForeignObject):
                self.report.damaged_records.append(number)
                self.report.hidden = True
                self.damage.append(Damage("snapshot record", self.store.key_url(layout.snapshot_key(number)),
                                          problem(record), [self.whole_disk(f"snapshot {number}")], number,
                                          f"cannot: 'bucketdisk snapshot delete {self.store.url()} {number}' "
                                          "removes it; until then --repair deletes no block or page"))
            elif not isinstance(record, Exception):
                snapshots.append(record)
        return snapshots

    def _pages(self, chosen: list[MapView]) -> dict[bytes, bytes]:
        before = len(self.damage)
        pages = self.read_pages(chosen, self.damage)
        for d in self.damage[before:]:
            alias = self._readable_alias("page", d.ref)
            in_live = any(r["map"] == "live" for r in d.ranges)
            if alias is not None:
                self.report.restorable[("page", d.ref)] = alias
                d.repair = f"puts the plain object back from its alias {alias}"
                continue
            if in_live:
                numbers = [n for n, h in enumerate(chosen[0].page_hashes) if h == d.ref]
                self.report.lost_pages += numbers
                d.repair = "marks its blocks of the live disk lost (but those a later journal set)"
            if any(r["map"] != "live" for r in d.ranges):
                self.report.hidden = True
                d.repair += ("; " if d.repair else "") + "cannot: the snapshots' ranges read as errors"
        named = {h for m in chosen for h in m.page_hashes} - {ZERO_HASH}
        self.pages_checked = len(named)
        self._served_by_alias("page", named - {d.ref for d in self.damage[before:]}, chosen)
        return pages

    def _blocks(self, chosen, pages, named: set[bytes], only: set[bytes] | None) -> None:
        checked = named if only is None else (named & only) | {h for h in named
                                                                if layout.block_key(h) not in self.keys}
        bad = self.check_blocks(checked)
        self.report.bad_blocks = set(bad)
        for d in self.place(chosen, bad, pages):
            if d.kind == "lost":
                d.repair = "cannot: reads fail until the blocks are written whole (or punched)"
            else:
                alias = self._readable_alias("block", d.ref)
                if alias is not None:
                    self.report.restorable[("block", d.ref)] = alias
                    d.repair = f"puts the plain object back from its alias {alias}"
                else:
                    d.repair = CANNOT
            self.damage.append(d)
        self._served_by_alias("block", named - set(bad), chosen, pages)
        self.blocks_checked = len(checked)

    def _aliases(self, kind: str, content_hash: bytes) -> list[str]:
        plain = layout.block_key(content_hash) if kind == "block" else layout.page_key(content_hash)
        return sorted(k for k in self.keys if k.startswith(plain + "-") and layout.alias_of(k) is not None)

    def _readable_alias(self, kind: str, content_hash: bytes) -> str | None:
        """The key of an alias of that block or page that reads correctly."""
        for key in self._aliases(kind, content_hash):
            try:
                if kind == "block":
                    self.maps.read_block(content_hash, alias=key)
                else:
                    self.maps.read_page(content_hash, alias=key)
                return key
            except (CorruptData, NotFound):
                continue
        return None

    def _served_by_alias(self, kind: str, hashes: set[bytes], chosen, pages=None) -> None:
        """Named objects whose plain object is not listed that read (from
        an alias): repairable, the plain object put back."""
        key_of = layout.block_key if kind == "block" else layout.page_key
        served = {h: alias for h in sorted(h for h in hashes if key_of(h) not in self.keys)
                  if (alias := self._readable_alias(kind, h)) is not None}  # (None: written meanwhile)
        found = {h: (self.store.key_url(key_of(h)), f"missing; its alias {served[h]} holds it (reads use the "
                     "alias)") for h in served}
        if kind == "page":
            placed = [Damage(kind, *found[h], self.page_ranges(chosen, h), h) for h in served]
        else:
            placed = [d for d in self.place(chosen, found, pages) if d.kind == "block"] if served else []
        for d in placed:
            self.report.restorable[(kind, d.ref)] = served[d.ref]
            d.repair, d.severity = "puts the plain object back from its alias", "repairable"
            self.damage.append(d)

    # -- what nothing names ---------------------------------------------------------------

    def _unreferenced(self, chosen: list[MapView], named_blocks: set[bytes]) -> None:
        left = self.report.leftovers
        named = {"block": named_blocks | {LOST_HASH}, "page": {h for m in chosen for h in m.page_hashes}}
        in_use = 0
        for key, size in self.keys.items():
            alias = layout.alias_of(key)
            if alias is not None:
                kind, h, _ = alias
                if h in named[kind]:
                    age = self.store.age(key)
                    if age is not None and age < LATE_DELETE_SECONDS:
                        in_use += 1
                    elif age is not None:
                        left.aliases.append(key)
                    continue
            elif (h := layout.hash_of_block_key(key)) is not None:
                kind = "block"
            elif (h := layout.hash_of_page_key(key)) is not None:
                kind = "page"
            else:
                continue
            if h not in named[kind]:
                if kind == "block":
                    left.blocks.append(key)
                    left.block_bytes += size
                else:
                    left.pages.append(key)
                    left.page_bytes += size
        if in_use:
            self.report.notes.append(f"{in_use} alias(es) of objects in use, written while a late delete could "
                                     "land: settled once none can (by a writable mount, gc or fsck --repair)")

    def _leases_and_scratch(self) -> None:
        leases = read_leases(self.store)
        if leases:
            newest = leases[-1]
            if newest.state() in ("live-here", "held"):
                self.report.notes.append(f"mounted writable by {newest.describe()}: what it is writing may "
                                         "show as leftovers")
            self.report.leftovers.leases = [layout.lease_key(h.epoch) for h in leases[:-1] if not h.still_fences()]
        self.report.leftovers.temp_files = self.store.scratch()[1]

    # -- a writer beside the check ------------------------------------------------------------

    def _look_again(self) -> None:
        """Drop what was found missing that a writer superseded meanwhile."""
        listing = self.maps.listing()
        try:
            root = self.maps.newest_root(listing)
        except (CorruptData, NotFound):
            return  # the maps as they are now cannot be read: what was found stands
        live = MapView("live", root.page_hashes)
        for name in sorted(n for n in listing.journals if n[0] == root.epoch and n[1] > root.seq):
            try:
                live.changes.update((i, h) for i, h, _ in self.maps.read_journal(*name).changes)
            except (CorruptData, NotFound):
                continue
        snapshots, _ = self.records.read_all()
        chosen = [live] + [MapView(s.name, s.page_hashes) for s in snapshots]
        named = self.named_now(listing.roots, listing.journals, chosen)
        kept = self.still_missing(self.damage, named)
        self.damage[:] = kept
        gone = {d.ref for d in self.damage}
        self.report.bad_blocks &= gone
        state = self.report.state
        state.lost_journals = [n for n in state.lost_journals if n in gone]
        self.report.lost_pages = [n for n in self.report.lost_pages
                                  if self.report.state.root is None or self.report.state.root.page_hashes[n] in gone]
