"""Which journals after a root make the live map: following their chain.

Every journal of version 4 names its predecessor: the root or journal of
its epoch that its writer last knew stored (Volume.sync and checkpoint
move it on only once a write succeeded).  A journal write that failed
leaves the predecessor where it was, and its changes go back to the
pending ones that the next journal (or root) records: so when a failed
write did land after all, two journals name the same predecessor, and the
newer holds every change of the older.  Hence the rule: the live map's
journals are the chain followed back from the newest journal of the
root's epoch after it, until a link reaches the root or anything before
it (a writer whose root write failed, yet landed, names an object before
that root, and its journal then holds the root's changes too).  A journal
after the root that is not on the chain is a superseded attempt, not
damage: reading it would add nothing the chain does not hold newer.

A link to an object that is not listed is a gap: that journal (or root)
is lost, and with it the map changes it held, which no other object
names.  Following goes on from the newest journal listed below the gap,
so what remains is used.  A version 3 journal names no predecessor: from
one on down every journal after the root is used, in order, as before
version 4 (nothing there is checked).

A root names no predecessor: it holds the whole map.  It needs only the
journals holding the fsync log's pages it lists as live, and a version 5
root names those (by seq, in its own epoch) when they were stored before
it: one that is not listed is a gap too (`pages`).

A writer's first act is a root of its epoch, before any journal: so
version 4 journals of an epoch newer than `root`'s follow a root that is
missing, and their chain (the newest such epoch's) is followed down to it,
a gap, and replayed after `root`'s own (FORMAT.md).

What the chain cannot tell: the newest journals all gone (nothing after
them names them), and a journal of an older epoch after the root (a
superseded writer's: never read, lock.py).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from . import layout
from .mapobjects import ROOT_KIND, Journal

Name = tuple[int, int]  # (epoch, seq)


@dataclass
class Gap:
    """A link of the chain that is not there: `missing` (a journal, or a
    root when `root`) is named as its predecessor by `successor`."""
    missing: Name
    successor: Name
    root: bool = False
    pages: bool = False  # a journal holding fsynced pages that the root `successor` lists

    @property
    def key(self) -> str:
        return (layout.root_key if self.root else layout.journal_key)(*self.missing)


@dataclass
class Chain:
    """The journals after a root that make the live map, and the rest."""
    used: list[Name] = field(default_factory=list)        # replayed, in order
    superseded: list[Name] = field(default_factory=list)  # off the chain: failed attempts a newer journal holds
    gaps: list[Gap] = field(default_factory=list)         # newest first
    unreadable: list[Name] = field(default_factory=list)  # on the chain, listed, but unreadable


def follow(root: Name, journals: dict[Name, Journal], listed: set[Name]) -> Chain:
    """The chain of the journals of `root`'s epoch after it, then of the
    newest epoch above it (whose root is missing: `_newer_epoch`).  `journals`:
    those that were read (readable, of this volume), by name; `listed`:
    every name listed after `root` in its epoch, roots too (one listed but
    not in `journals` cannot be read, and is not a gap: the caller says
    so).  Reads nothing."""
    after = sorted(n for n in set(journals) | listed if n[0] == root[0] and n > root)
    chain = Chain()
    on_chain: set[Name] = set()
    current = after[-1] if after else None
    while current is not None:
        journal = journals.get(current)
        if journal is None:  # listed, unreadable (or a root newer than the base, which it cannot read)
            chain.unreadable.append(current)
            current = _below(after, current)
            continue
        on_chain.add(current)
        if journal.prev is None:  # version 3: every journal below, unchecked
            on_chain |= {n for n in after if n < current and n in journals}
            chain.unreadable += [n for n in after if n < current and n not in journals]
            break
        prev = journal.predecessor
        if prev <= root:
            break
        if prev in journals or prev in listed:
            current = prev
            continue
        chain.gaps.append(Gap(prev, current, journal.prev[1] == ROOT_KIND))
        current = _below(after, prev)
    chain.used = sorted(on_chain)
    chain.superseded = [n for n in after if n in journals and n not in on_chain]
    _newer_epoch(root, journals, listed, chain)
    return chain


def _newer_epoch(root: Name, journals: dict[Name, Journal], listed: set[Name], chain: Chain) -> None:
    """Add to `chain` the journals of the newest epoch above `root`'s, when
    its newest is of version 4.  A writer's first act is a root of its
    epoch, before any journal (volume.py), and a root of a newer epoch
    would be the base: so such journals mean their epoch's roots are gone.
    Their chain is followed down to the missing root (a gap), and what
    remains is replayed after `root`'s own chain (FORMAT.md: a missing
    root).  Journals of epochs between are a superseded writer's: that
    epoch's first root deleted every journal before it (collection.py)."""
    newer = [n for n in journals if n[0] > root[0]]
    if not newer:
        return
    epoch = max(e for e, _ in newer)
    own = {n: j for n, j in journals.items() if n[0] == epoch}
    if own[max(own)].prev is None:  # version 3: names no root, unchecked as before
        return
    later = follow((epoch, -1), own, {n for n in listed if n[0] == epoch})
    chain.used += later.used
    chain.superseded += later.superseded
    chain.gaps = later.gaps + chain.gaps
    chain.unreadable += later.unreadable


def page_gaps(root, names: set[Name]) -> list[Gap]:
    """The journals a root (mapobjects.Root) names as holding the pages of
    its live logs that are not among `names` (those listed)."""
    wanted = sorted({(root.epoch, seq) for seq in root.live_journals.values()})
    return [Gap(name, (root.epoch, root.seq), pages=True) for name in wanted if name not in names]


def _below(names: list[Name], name: Name) -> Name | None:
    """The highest of the sorted `names` below `name`, or None."""
    lower = [n for n in names if n < name]
    return lower[-1] if lower else None


def successors_blocks(chain: Chain, journals: dict[Name, Journal], gap: Gap) -> list[int]:
    """The blocks the journals of the chain after `gap` change or log
    pages of, sorted: that newest content is known (those journals are
    newer than the lost one)."""
    later = [journals[name] for name in chain.used if name > gap.missing]
    return sorted({index for j in later for index, _, _ in j.changes} | {r.block for j in later for r in j.runs or []})


def describe(gap: Gap, url_of) -> str:
    """One line: which object is missing and which names it."""
    if gap.pages:
        return (f"the map journal {url_of(gap.key)} is missing: the root {url_of(layout.root_key(*gap.successor))} "
                "needs the fsynced pages it held, and they are lost")
    kind = "root" if gap.root else "journal"
    return (f"the map {kind} {url_of(gap.key)} is missing: the journal "
            f"{url_of(layout.journal_key(*gap.successor))} follows it, and the map changes it held are lost")


def problem_of(gap: Gap, url_of) -> str:
    """What a report says of the missing object: "missing: " and which
    object names it."""
    if gap.pages:
        return f"missing: the root {url_of(layout.root_key(*gap.successor))} needs the fsynced pages it held"
    return f"missing: the journal {url_of(layout.journal_key(*gap.successor))} follows it"
