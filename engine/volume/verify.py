"""`verify`: read every object a volume's maps refer to and check it.

What is checked: the newest root and the journals after it (the live map:
their chain, journalchain.py, whose missing links are reported too),
the chosen snapshots' records, every map page they name, and every block
object those maps refer to: its frame and xxh3, its seal on an encrypted
volume (sealing.py: damaged, swapped, moved or foreign objects fail), its
length and its content hash; also, on an encrypted volume, that the store
does not show an older map than this machine saw (rollback.py).  Objects
shared by several maps are read once; blocks fsck marked LOST are listed
with their ranges (checker.py does the reading and placing).

Each damaged or missing object is reported with the byte ranges of the
disk it covers, in each map that refers to it (live, or a snapshot's name).

A writer may free objects while this runs (blocks, pages, roots and
journals a checkpoint supersedes): anything found missing is looked for
again once the check is over, and reported only if the maps as they are
then still refer to it and it is still missing.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..codec.block import ZERO_HASH
from ..errors import CorruptData, NotFound, UserError
from ..store.base import ObjectStore
from . import layout
from .checker import Checker, Damage, MapView, Progress, problem
from .journalchain import problem_of
from .mapstore import ForeignObject
from .snapshots import SnapshotRecords

__all__ = ["Damage", "Report", "verify"]


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
    checker = _Verify(store, record, threads, progress)
    report = checker.run(snapshots)
    if any(d.problem == "missing" for d in report.damage):
        listing = checker.maps.listing()
        named = checker.named_now(listing.roots, listing.journals, checker.chosen(listing, snapshots, []))
        report.damage = checker.still_missing(report.damage, named)
    return report


class _Verify(Checker):
    def __init__(self, store: ObjectStore, record, threads: int, progress: Progress | None) -> None:
        super().__init__(store, record, threads, progress)
        self.records = SnapshotRecords.of(store, record)

    def run(self, snapshots: str | None) -> Report:
        listing = self.maps.listing()
        damage: list[Damage] = []
        warning = self.maps.rollback(listing)
        if warning:
            damage.append(Damage("rollback", self.store.url(), warning))
        chosen = self.chosen(listing, snapshots, damage)
        report = Report([m.name for m in chosen], damage=damage)
        pages = self.read_pages(chosen, report.damage)
        report.pages_checked = len({h for m in chosen for h in m.page_hashes} - {ZERO_HASH})
        hashes = self.named_blocks(chosen, pages)
        bad = self.check_blocks(hashes)
        report.blocks_checked = len(hashes)
        report.damage += self.place(chosen, bad, pages)
        return report

    def chosen(self, listing, snapshots: str | None, damage: list[Damage]) -> list[MapView]:
        """The maps to check: the live one, and the snapshots asked for."""
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
        return chosen + [MapView(k.name, k.page_hashes) for k in kept]

    def _live(self, listing, damage: list[Damage]) -> MapView | None:
        newest = listing.newest_root
        if newest is None:
            return MapView("live", [ZERO_HASH] * -(-self.record.block_count // self.entries))
        try:
            root = self.maps.read_root(*newest)
        except (CorruptData, NotFound) as e:
            damage.append(Damage("root", self.store.key_url(layout.root_key(*newest)), problem(e),
                                 [self.whole_disk("live")], newest))
            return None
        live = MapView("live", root.page_hashes)
        journals, unreadable = [], set()
        for name in sorted(n for n in listing.journals if n > newest):
            try:
                journals.append(self.maps.read_journal(*name))
            except (CorruptData, NotFound) as e:
                unreadable.add(name)
                damage.append(Damage("journal", self.store.key_url(layout.journal_key(*name)), problem(e),
                                     [self.whole_disk("live")], name))
        replay = self.maps.replay(journals, root, unreadable)  # their chain (journalchain.py)
        for gap in replay.chain.gaps:
            try:
                self.maps.recheck(listing, [gap])
            except NotFound:
                continue  # a writer's checkpoint superseded it meanwhile
            damage.append(Damage("root" if gap.root else "journal", self.store.key_url(gap.key),
                                 problem_of(gap, self.store.key_url), [self.whole_disk("live")],
                                 gap.missing))
        live.changes.update(replay.changes)
        return live

    def _record(self, number: int, damage: list[Damage]):
        try:
            return self.records.read(number)
        except (ForeignObject, NotFound):
            return None
        except CorruptData as e:
            damage.append(Damage("snapshot record", self.store.key_url(layout.snapshot_key(number)), problem(e)))
            return None
