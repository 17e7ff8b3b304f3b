"""`verify`: read every object a volume's maps refer to and check it.

What is checked: the newest root and the journals after it (the live map),
the chosen snapshots' records, every map page they name, and every block
object those maps refer to: its frame and xxh3, its seal on an encrypted
volume (sealing.py: damaged, swapped, moved or foreign objects fail), its
length and its content hash; also, on an encrypted volume, that the store
does not show an older map than this machine saw (rollback.py).  Objects
shared by several maps are read once.

Each damaged or missing object is reported with the byte ranges of the
disk it covers, in each map that refers to it (live, or a snapshot's name).
Block objects are read in parallel, holding one block buffer per thread;
the maps are read a page at a time, and again only when something is damaged.

A writer may free objects while this runs (blocks, pages, roots and
journals a checkpoint supersedes): anything found missing is looked for
again once the check is over, and reported only if the maps as they are
then still refer to it and it is still missing.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..codec.block import HASH_SIZE, ZERO_HASH
from ..errors import CorruptData, NotFound, UserError
from ..store.base import ObjectStore
from . import layout

from .mapstore import ForeignObject, MapStore
from .snapshots import SnapshotRecords

Progress = Callable[[str, "int | None"], Callable[[int], None]]


def _no_progress(phase: str, total: int | None) -> Callable[[int], None]:
    return lambda count: None


@dataclass
class Damage:
    """One damaged or missing object and what it takes from the disk."""
    kind: str     # block, page, root, journal, snapshot record, rollback
    object: str   # its URL
    problem: str
    ranges: list[dict] = field(default_factory=list)  # {"map", "first_byte", "last_byte"}
    ref: object = None  # a block's or page's hash, a root's or journal's (epoch, seq)

    def summary(self) -> dict:  # (ref is internal: the object names it)
        return {"kind": self.kind, "object": self.object, "problem": self.problem, "ranges": self.ranges,
                "maps": sorted({r["map"] for r in self.ranges})}


@dataclass
class _Map:
    """One map to check: the live one (root pages, then journal changes) or a snapshot's."""
    name: str
    page_hashes: list[bytes]
    changes: dict[int, bytes] = field(default_factory=dict)


@dataclass
class Report:
    maps: list[str]
    blocks_checked: int = 0
    pages_checked: int = 0
    damage: list[Damage] = field(default_factory=list)

    def summary(self) -> dict:
        return {"maps": self.maps, "blocks_checked": self.blocks_checked, "pages_checked": self.pages_checked,
                "damaged": len(self.damage), "damage": [d.summary() for d in self.damage]}


def verify(store: ObjectStore, record, *, snapshots: str | None = None, threads: int = 16,
           progress: Progress | None = None) -> Report:
    """Check the volume with this (unlocked) record; `snapshots`: None (the
    live map alone), "all", or one snapshot's name.  Raises UserError for an
    unknown snapshot name, StoreError when the store fails."""
    checker = _Checker(store, record, threads, progress or _no_progress)
    report = checker.run(snapshots)
    if any(d.problem == "missing" for d in report.damage):
        report.damage = checker.still_missing(report.damage, snapshots)
    return report


class _Checker:
    def __init__(self, store: ObjectStore, record, threads: int, progress: Progress) -> None:
        self.store, self.record, self.threads, self.progress = store, record, threads, progress
        self.maps = MapStore.of(store, record)
        self.records = SnapshotRecords.of(store, record)
        self.entries = record.page_entries

    def run(self, snapshots: str | None) -> Report:
        listing = self.maps.listing()
        damage: list[Damage] = []
        warning = self.maps.rollback(listing)
        if warning:
            damage.append(Damage("rollback", self.store.url(), warning))
        chosen = self._maps(listing, snapshots, damage)
        report = Report([m.name for m in chosen], damage=damage)
        pages = self._read_pages(chosen, report)
        hashes = {h for entries in pages.values() for h in _hashes(entries)}
        hashes |= {h for m in chosen for h in m.changes.values() if h != ZERO_HASH}
        bad = self._check_blocks(hashes, report)
        if bad:
            self._place(chosen, bad, report)
        return report

    def still_missing(self, damage: list[Damage], snapshots: str | None) -> list[Damage]:
        """`damage` without the objects found missing that a writer has
        superseded since: the maps are read again as they are now, and a
        missing object stays only if they still name it and it is still
        missing (the second look costs the maps' pages, not the blocks)."""
        listing = self.maps.listing()
        current = self._maps(listing, snapshots, [])
        pages = self._read_pages(current, Report([]), quiet=True)
        blocks = {h for entries in pages.values() for h in _hashes(entries)}
        blocks |= {h for m in current for h in m.changes.values()}
        named = {"root": set(listing.roots), "journal": set(listing.journals),
                 "page": {h for m in current for h in m.page_hashes}, "block": blocks}
        kept = []
        for d in damage:
            if d.problem != "missing" or d.kind not in named:
                kept.append(d)
            elif d.ref in named[d.kind] and not self._found_now(d):
                kept.append(d)
        return kept

    def _found_now(self, damage: Damage) -> bool:
        """Whether a missing object reads now (written again meanwhile)."""
        if damage.kind == "block":
            return self._check_block(damage.ref) is None
        try:
            if damage.kind == "page":
                self.maps.read_page(damage.ref)
            elif damage.kind == "root":
                self.maps.read_root(*damage.ref)
            else:
                self.maps.read_journal(*damage.ref)
            return True
        except (CorruptData, NotFound):
            return False

    # -- maps ---------------------------------------------------------------------------

    def _maps(self, listing, snapshots: str | None, damage: list[Damage]) -> list[_Map]:
        chosen = []
        live = self._live(listing, damage)
        if live is not None:
            chosen.append(live)
        if snapshots is None:
            return chosen
        # Every record is read (a damaged one reported) before one is chosen by name.
        kept = [k for number in self.records.numbers() if (k := self._record(number, damage)) is not None]
        if snapshots != "all":
            kept = [k for k in kept if k.name == snapshots or str(k.number) == snapshots] or \
                (kept[-1:] if snapshots == "Latest" else [])
            if not kept:
                raise UserError(f"no snapshot named {snapshots!r}")
        return chosen + [_Map(k.name, k.page_hashes) for k in kept]

    def _live(self, listing, damage: list[Damage]) -> _Map | None:
        newest = listing.newest_root
        if newest is None:
            return _Map("live", [ZERO_HASH] * -(-self.record.block_count // self.entries))
        try:
            root = self.maps.read_root(*newest)
        except (CorruptData, NotFound) as e:
            damage.append(Damage("root", self.store.key_url(layout.root_key(*newest)), _problem(e),
                                 [self._whole_disk("live")], newest))
            return None
        live = _Map("live", root.page_hashes)
        for name in sorted(n for n in listing.journals if n > newest):
            try:
                journal = self.maps.read_journal(*name)
            except (CorruptData, NotFound) as e:
                damage.append(Damage("journal", self.store.key_url(layout.journal_key(*name)), _problem(e),
                                     [self._whole_disk("live")], name))
                continue
            live.changes.update((index, h) for index, h, _ in journal.changes)
        return live

    def _record(self, number: int, damage: list[Damage]):
        try:
            return self.records.read(number)
        except (ForeignObject, NotFound):
            return None
        except CorruptData as e:
            damage.append(Damage("snapshot record", self.store.key_url(layout.snapshot_key(number)), _problem(e)))
            return None

    def _read_pages(self, chosen: list[_Map], report: Report, quiet: bool = False) -> dict[bytes, bytes]:
        """Every page the maps name, by hash (read once each); damaged ones
        are reported, with the ranges they cover in each map, and left out."""
        wanted = {h: number for m in chosen for number, h in enumerate(m.page_hashes) if h != ZERO_HASH}
        step = _no_progress("", None) if quiet else self.progress("reading map pages", len(wanted))

        def read(item):
            page_hash, number = item
            try:
                return page_hash, self.maps.read_page(page_hash, number), None
            except (CorruptData, NotFound) as e:
                return page_hash, None, e
            finally:
                step(1)

        pages = {}
        with ThreadPoolExecutor(self.threads) as pool:
            for page_hash, entries, error in pool.map(read, wanted.items()):
                if error is None:
                    pages[page_hash] = entries
                    continue
                ranges = [self._page_range(m.name, n) for m in chosen
                          for n, h in enumerate(m.page_hashes) if h == page_hash]
                report.damage.append(Damage("page", self.store.key_url(layout.page_key(page_hash)),
                                            _problem(error), ranges, page_hash))
        report.pages_checked = len(wanted)
        return pages

    # -- blocks ---------------------------------------------------------------------------

    def _check_blocks(self, hashes: set[bytes], report: Report) -> dict[bytes, tuple[str, str]]:
        """hash -> (object URL, problem) of each damaged or missing block object."""
        step = self.progress("reading blocks", len(hashes))

        def check(block_hash: bytes):
            try:
                return block_hash, self._check_block(block_hash)
            finally:
                step(1)

        bad = {}
        with ThreadPoolExecutor(self.threads) as pool:
            for block_hash, problem in pool.map(check, hashes):
                if problem is not None:
                    bad[block_hash] = problem
        report.blocks_checked = len(hashes)
        return bad

    def _check_block(self, block_hash: bytes) -> tuple[str, str] | None:
        """None, or (object URL, problem) of a damaged or missing block object."""
        try:
            self.maps.read_block(block_hash)
            return None
        except NotFound:
            return self.store.key_url(layout.block_key(block_hash)), "missing"
        except CorruptData as e:
            return e.where, e.detail

    def _place(self, chosen: list[_Map], bad: dict[bytes, tuple[str, str]], report: Report) -> None:
        """Report each bad block with the byte ranges it covers in each map."""
        where: dict[bytes, list[dict]] = {h: [] for h in bad}
        for m in chosen:
            blocks: dict[bytes, list[int]] = {}
            for number, page_hash in enumerate(m.page_hashes):
                if page_hash == ZERO_HASH:
                    continue
                try:
                    entries = self.maps.read_page(page_hash, number)
                except (CorruptData, NotFound):
                    continue  # reported as a page
                for slot, h in enumerate(_entries(entries)):
                    if h in bad and number * self.entries + slot not in m.changes:
                        blocks.setdefault(h, []).append(number * self.entries + slot)
            for index, h in m.changes.items():
                if h in bad:
                    blocks.setdefault(h, []).append(index)
            for h, indexes in blocks.items():
                where[h] += [self._range(m.name, first, last) for first, last in _runs(sorted(indexes))]
        for h, (url, problem) in bad.items():
            report.damage.append(Damage("block", url, problem, where[h], h))

    def _range(self, name: str, first: int, last: int) -> dict:
        size = self.record.block_size
        return {"map": name, "first_byte": first * size, "last_byte": (last + 1) * size - 1}

    def _page_range(self, name: str, number: int) -> dict:
        first = number * self.entries
        return self._range(name, first, min(first + self.entries, self.record.block_count) - 1)

    def _whole_disk(self, name: str) -> dict:
        return self._range(name, 0, self.record.block_count - 1)


def _entries(entries: bytes):
    return (entries[at : at + HASH_SIZE] for at in range(0, len(entries), HASH_SIZE))


def _hashes(entries: bytes) -> set[bytes]:
    return set(_entries(entries)) - {ZERO_HASH}


def _runs(indexes: list[int]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for index in indexes:
        if runs and runs[-1][1] == index - 1:
            runs[-1] = (runs[-1][0], index)
        else:
            runs.append((index, index))
    return runs


def _problem(error: Exception) -> str:
    if isinstance(error, NotFound):
        return "missing"
    return str(error)


