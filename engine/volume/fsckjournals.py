"""`fsck`'s look at the journals: which make the live map (their chain,
journalchain.py), which are lost (unreadable, or missing from the chain),
and which are superseded.

Mixed into fsck.py's checker; works on its `store`, `record`, `maps`,
`report`, `damage`, `whole_disk` and `_changed`.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import CorruptData, NotFound
from . import layout
from .checker import Damage, problem, runs
from .journalchain import Gap, problem_of, successors_blocks
from .mapobjects import LOG_PAGE, ForeignObject, Journal
from .mapstore import own_journals

if TYPE_CHECKING:
    from .fsck import LiveState


class FsckJournals:
    """The journals of the live map, for fsck's checker."""

    def _journals(self, state: LiveState, journals, read_journals) -> None:
        root = state.root
        # A newer epoch's journals too: their root is missing (journalchain.py), they make the live map
        after = [n for n in journals if n[0] > root.epoch or (n[0] == root.epoch and n[1] > root.seq)]
        bad: dict[tuple[int, int], str] = {}
        for name in after:
            found = read_journals[name]
            if isinstance(found, NotFound):
                self._changed()  # covered by a writer's newer root meanwhile (on the last look: damage)
            wrong = found if isinstance(found, (CorruptData, NotFound)) else self._journal_problem(found)
            if wrong is not None and not isinstance(wrong, ForeignObject):
                bad[name] = wrong if isinstance(wrong, str) else problem(wrong)
        readable = {n: j for n, j in read_journals.items()
                    if isinstance(j, Journal) and self._journal_problem(j) is None}
        # Roots after the base were listed yet cannot be read: a link to one is no gap (reported as a root).
        listed = {n for n in read_journals if n not in readable} | {n for n in self.report.listing.roots
                                                                     if n > (root.epoch, root.seq)}
        state.replay = self.maps.replay(own_journals(readable), root, listed)
        chain = state.replay.chain
        state.journals = list(chain.used)
        for name in chain.unreadable:
            if name not in bad:
                continue  # a root: reported as one
            url = self.store.key_url(layout.journal_key(*name))
            self.report.damaged_map_keys.append(layout.journal_key(*name))
            state.lost_journals.append(name)
            self.damage.append(Damage("journal", url, bad[name], [self.whole_disk("live")], name, "cannot: its "
                                      "changes are lost; the live map keeps the state before it and the later "
                                      "journals"))
        for gap in chain.gaps:
            self._gap(state, gap, chain, readable)
        needed = set(state.journals) | set(state.replay.log_journals.values())
        self._superseded_journals(journals, read_journals, needed | set(state.lost_journals))
        pages = sum(len(r.data) for r in state.replay.runs) // LOG_PAGE
        if pages:
            blocks = len({r.block for r in state.replay.runs})
            self.report.notes.append(f"{pages} fsynced 4 KiB page(s) of {blocks} block(s) wait to be merged into "
                                     "their blocks (the next writable mount or fsck --repair merges them)")

    def _gap(self, state: LiveState, gap: Gap, chain, readable) -> None:
        """A journal (or root) of the live map that is not there: a link of
        the chain names it (journalchain.py).  Its block numbers are
        unknown: the journals after it tell only which blocks changed later."""
        if self.store.head(gap.key) is not None:
            self._changed()  # stored after the listing passed its name: look again
        state.lost_journals.append(gap.missing)
        if gap.pages:  # the root names it by its log number, not the blocks its pages are of
            self.damage.append(Damage(
                "journal", self.store.key_url(gap.key), problem_of(gap, self.store.key_url),
                [self.whole_disk("live")], gap.missing, "cannot: those pages are lost (of which blocks is "
                "unknown); their blocks keep the content they had before them"))
            return
        later = _ranges(successors_blocks(chain, readable, gap))
        self.damage.append(Damage(
            "root" if gap.root else "journal", self.store.key_url(gap.key),
            f"{problem_of(gap, self.store.key_url)}; the journals after it change block(s) {later}",
            [self.whole_disk("live")], gap.missing,
            "cannot: its changes are lost (which blocks they were is unknown); the live map keeps the root, the "
            "journals before it and those after it: any other block written since the root may read as older "
            "content"))

    def _superseded_journals(self, journals, read_journals, needed: set) -> None:
        for name in journals:
            found = read_journals[name]
            if name in needed or isinstance(found, NotFound):
                continue
            url = self.store.key_url(layout.journal_key(*name))
            if isinstance(found, CorruptData) and not isinstance(found, ForeignObject):
                self.report.damaged_map_keys.append(layout.journal_key(*name))
                self.damage.append(Damage("journal", url, problem(found), [], name, "removes it (superseded)"))
            else:
                self.report.leftovers.journals.append(layout.journal_key(*name))

    def _journal_problem(self, journal) -> str | None:
        """What makes a decoded journal unusable: blocks beyond the volume."""
        if not isinstance(journal, Journal):
            return None
        count, size = self.record.block_count, self.record.block_size
        if any(index >= count for index, _, _ in journal.changes):
            return "it names a block beyond the volume"
        if any(r.block >= count or r.first_page * LOG_PAGE + len(r.data) > size for r in journal.runs or []):
            return "its logged pages lie beyond their block"
        return None


def _ranges(blocks: list[int]) -> str:
    """Sorted block numbers as "1-3, 7" ("none" if there are none)."""
    return ", ".join(f"{a}-{b}" if a != b else f"{a}" for a, b in runs(blocks)) or "none"
