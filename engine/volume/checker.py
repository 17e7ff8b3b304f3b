"""Reading and checking what a volume's maps name: the part `verify`
(verify.py) and `fsck` (fsck.py) share.

A map to check (MapView) is a list of page hashes (a root's, or a snapshot
record's) plus the block changes of the journals replayed after it.  The
Checker reads every page the maps name (each distinct page once), checks
every block object they name (MapStore.read_block: frame, seal, length,
content hash), and places each damaged object, and every LOST entry
(fsck --repair's marker, codec.block.LOST_HASH), in the byte ranges of the
disk it covers in each map.  Reads run `threads` at a time; a block read
holds one block buffer per thread.

A writer may free objects while this runs: `still_missing` drops the
objects found missing that the maps as they are afterwards no longer name,
or that read now.
"""
from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..codec.block import HASH_SIZE, LOST_HASH, ZERO_HASH
from ..errors import CorruptData, NotFound
from ..store.base import ObjectStore
from . import layout
from .mapstore import MapStore

# How a long check tells of its progress: progress(phase, total) is called as
# each phase starts (total: items it will count, None if unknown) and returns
# step(n), called as n more items are done.
Progress = Callable[[str, "int | None"], Callable[[int], None]]

LOST_PROBLEM = "lost (marked by fsck)"


def no_progress(phase: str, total: int | None) -> Callable[[int], None]:
    return lambda count: None


@dataclass
class Damage:
    """One damaged or missing object and what it takes from the disk.
    `ranges`: {"map", "first_byte", "last_byte"} (inclusive) in each map
    (live, or a snapshot's name) that uses it.  fsck sets `repair` (what
    --repair does about it) and `severity` ("damage": something reads as
    an error or was lost; "repairable": it reads, yet --repair has
    something to put right)."""
    kind: str     # block, lost, page, root, journal, snapshot record, record, rollback, alias
    object: str   # its URL
    problem: str
    ranges: list[dict] = field(default_factory=list)
    ref: object = None  # a block's or page's hash, a root's or journal's (epoch, seq); not shown
    repair: str = ""
    severity: str = "damage"

    def summary(self) -> dict:
        shown = {"kind": self.kind, "object": self.object, "problem": self.problem, "ranges": self.ranges,
                 "maps": sorted({r["map"] for r in self.ranges})}
        if self.repair:
            shown.update(severity=self.severity, repair=self.repair)
        return shown


@dataclass
class MapView:
    """One map to check: the live one (root pages, then journal changes) or a snapshot's."""
    name: str
    page_hashes: list[bytes]
    changes: dict[int, bytes] = field(default_factory=dict)


class Checker:
    """Reads and checks the pages and blocks of maps (MapView) of one volume."""

    def __init__(self, store: ObjectStore, record, threads: int, progress: Progress | None = None) -> None:
        self.store, self.record, self.threads = store, record, threads
        self.progress = progress or no_progress
        self.maps = MapStore.of(store, record)
        self.entries = record.page_entries

    # -- pages --------------------------------------------------------------------------

    def read_pages(self, chosen: list[MapView], damage: list[Damage], quiet: bool = False) -> dict[bytes, bytes]:
        """Every page the maps name, by hash (read once each); damaged ones
        are added to `damage`, with the ranges they cover in each map, and
        left out."""
        wanted = {h: number for m in chosen for number, h in enumerate(m.page_hashes) if h != ZERO_HASH}
        step = no_progress("", None) if quiet else self.progress("reading map pages", len(wanted))

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
                damage.append(Damage("page", self.store.key_url(layout.page_key(page_hash)), problem(error),
                                     self.page_ranges(chosen, page_hash), page_hash))
        return pages

    def page_ranges(self, chosen: list[MapView], page_hash: bytes) -> list[dict]:
        """The ranges the page with this hash covers in each map."""
        return [self.page_range(m.name, n) for m in chosen for n, h in enumerate(m.page_hashes) if h == page_hash]

    # -- blocks ---------------------------------------------------------------------------

    @staticmethod
    def named_blocks(chosen: list[MapView], pages: dict[bytes, bytes]) -> set[bytes]:
        """Every block hash the maps name that should have an object (not
        ZERO_HASH nor LOST_HASH)."""
        hashes = {h for entries in pages.values() for h in hashes_of(entries)}
        hashes |= {h for m in chosen for h in m.changes.values()}
        return hashes - {ZERO_HASH, LOST_HASH}

    def check_blocks(self, hashes: set[bytes]) -> dict[bytes, tuple[str, str]]:
        """hash -> (object URL, problem) of each damaged or missing block object."""
        step = self.progress("reading blocks", len(hashes))

        def check(block_hash: bytes):
            try:
                return block_hash, self.check_block(block_hash)
            finally:
                step(1)

        bad = {}
        with ThreadPoolExecutor(self.threads) as pool:
            for block_hash, found in pool.map(check, hashes):
                if found is not None:
                    bad[block_hash] = found
        return bad

    def check_block(self, block_hash: bytes) -> tuple[str, str] | None:
        """None, or (object URL, problem) of a damaged or missing block object."""
        try:
            self.maps.read_block(block_hash)
            return None
        except NotFound:
            return self.store.key_url(layout.block_key(block_hash)), "missing"
        except CorruptData as e:
            return e.where, e.detail

    def place(self, chosen: list[MapView], bad: dict[bytes, tuple[str, str]], pages: dict[bytes, bytes]
              ) -> list[Damage]:
        """Each bad block (hash -> (URL, problem)) with the byte ranges it
        covers in each map, and one Damage ("lost") for the LOST entries
        of the maps, if any.  `pages`: the maps' pages by hash (those
        missing are reported as pages)."""
        bad = dict(bad)
        bad[LOST_HASH] = (self.store.url(), LOST_PROBLEM)
        where: dict[bytes, list[dict]] = {h: [] for h in bad}
        for m in chosen:
            blocks: dict[bytes, list[int]] = {}
            for number, page_hash in enumerate(m.page_hashes):
                entries = pages.get(page_hash)
                if entries is None:
                    continue  # all zeros, or reported as a page
                first = number * self.entries
                for slot, h in enumerate(entries_of(entries)):
                    if h in bad and first + slot not in m.changes:
                        blocks.setdefault(h, []).append(first + slot)
            for index, h in m.changes.items():
                if h in bad:
                    blocks.setdefault(h, []).append(index)
            for h, indexes in blocks.items():
                where[h] += [self.range_of(m.name, first, last) for first, last in runs(sorted(indexes))]
        found = [Damage("block", url, what, where[h], h) for h, (url, what) in bad.items() if h != LOST_HASH]
        if where[LOST_HASH]:
            found.append(Damage("lost", self.store.url(), LOST_PROBLEM, where[LOST_HASH], LOST_HASH))
        return found

    # -- a writer beside the check ------------------------------------------------------

    def named_now(self, roots, journals, chosen: list[MapView]) -> dict[str, set]:
        """What these maps (as read again) name, by kind, and the roots and
        journals listed now: for `still_missing`."""
        pages = self.read_pages(chosen, [], quiet=True)
        return {"root": set(roots), "journal": set(journals),
                "page": {h for m in chosen for h in m.page_hashes}, "block": self.named_blocks(chosen, pages)}

    def still_missing(self, damage: list[Damage], named: dict[str, set]) -> list[Damage]:
        """`damage` without the objects found missing that a writer has
        superseded since: a missing object stays only if `named` (the maps
        as they are now, named_now) still names it and it is still missing."""
        kept = []
        for d in damage:
            if d.problem != "missing" or d.kind not in named:
                kept.append(d)
            elif d.ref in named[d.kind] and not self.found_now(d):
                kept.append(d)
        return kept

    def found_now(self, damage: Damage) -> bool:
        """Whether a missing object reads now (written again meanwhile)."""
        if damage.kind == "block":
            return self.check_block(damage.ref) is None
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

    # -- ranges -------------------------------------------------------------------------

    def range_of(self, name: str, first: int, last: int) -> dict:
        """Blocks first..last (inclusive) of map `name` as a byte range."""
        size = self.record.block_size
        return {"map": name, "first_byte": first * size, "last_byte": (last + 1) * size - 1}

    def page_range(self, name: str, number: int) -> dict:
        first = number * self.entries
        return self.range_of(name, first, min(first + self.entries, self.record.block_count) - 1)

    def whole_disk(self, name: str) -> dict:
        return self.range_of(name, 0, self.record.block_count - 1)


def entries_of(entries: bytes):
    """The 32-byte entries of a page, in order."""
    return (entries[at : at + HASH_SIZE] for at in range(0, len(entries), HASH_SIZE))


def hashes_of(entries: bytes) -> set[bytes]:
    """The distinct entries of a page other than ZERO_HASH."""
    return set(entries_of(entries)) - {ZERO_HASH}


def runs(indexes: list[int]) -> list[tuple[int, int]]:
    """Sorted numbers as (first, last) runs of consecutive ones."""
    found: list[tuple[int, int]] = []
    for index in indexes:
        if found and found[-1][1] == index - 1:
            found[-1] = (found[-1][0], index)
        else:
            found.append((index, index))
    return found


def problem(error: Exception) -> str:
    """What a failed read says of its object: "missing", or the damage."""
    if isinstance(error, NotFound):
        return "missing"
    if isinstance(error, CorruptData) and error.detail is not None:
        return error.detail
    return str(error)
