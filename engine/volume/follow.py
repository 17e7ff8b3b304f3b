"""A read-only view that follows a live writer.

A read-only mount beside a writable one serves the writer's durable state:
the newest root and the journals after it, with pages an fsync logged
merged into their blocks in memory (the writer uploads those blocks whole
a little later).  `Follower.refresh` catches up: the device calls it every
FOLLOW_SECONDS and whenever a block it was about to read has gone (the
writer replaced and collected it), then drops the blocks whose content
changed from its cache.  So a read never fails for data that exists; what
it shows is at most FOLLOW_SECONDS (plus one refresh) behind the writer's
last journal (the writer journals at every fsync and every 5 s while
writing).

A refresh costs what changed since the last one, because everything it
reads is immutable under its name: a root and a journal never change, a
map page is named by its content.  It reads the root only when a newer one
is listed, only the pages whose hash that root changed, only journals it
has not read before, and a logged block's base content only when neither
its last merge nor its logged pages alone give the result; what it does
read, it reads FETCH_PARALLELISM at a time.  This matters against a busy
writer: it checkpoints every CHECKPOINT_JOURNALS journals and then deletes
the journals, pages and blocks the new root supersedes, so a refresh that
reads slower than that finds objects gone, lists again and, if it never
keeps up, never shows anything newer.

A refresh also reads the volume record, after the listing and everything
it read for it: `create --force` at the same place deletes the record
first and writes a new one with a new UUID, so a record that still names
the volume shown proves that what the refresh read was that volume's.
A record that is gone or names another volume ends the following for
good: the volume is marked replaced (Volume.mark_replaced), nothing of it
is read again, and every refresh raises VolumeReplaced; the device then
fails every read of the disk, since whatever the place holds now (zeros,
another volume's blocks) is not the disk the mount showed.
"""
from __future__ import annotations

import logging
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ..codec.block import ZERO_HASH
from ..errors import CorruptData, NotFound, StoreError, UserError, VolumeReplaced
from .blockmap import BlockMap
from .mapstore import FETCH_PARALLELISM, LOG_PAGE, Journal, Listing, Root, Run, own_journals
from .record import read_record
from .volume import Volume

log = logging.getLogger(__name__)

FOLLOW_SECONDS = 10.0
REFRESH_ATTEMPTS = 5  # listings tried when the writer keeps deleting what a refresh is reading

Name = tuple[int, int]  # (epoch, seq) of a root or journal


@dataclass
class Merge:
    """A block shown merged with its logged pages, in memory."""
    base: bytes             # content hash of the block the runs were applied to
    runs: tuple[Run, ...]   # applied in this order
    data: bytes
    content_hash: bytes


@dataclass
class Shown:
    """What the map the volume shows was built from."""
    listed_root: Name | None  # the newest root listed (a foreign one is read past)
    root: Root | None         # None: nothing shown yet that a refresh may build on
    # the root's entry of every block whose shown entry is not the root's
    # (changed by a journal, or merged with logged pages)
    base: dict[int, bytes] = field(default_factory=dict)
    merges: dict[int, Merge] = field(default_factory=dict)
    listing: tuple | None = None  # view_of() the listing it showed; None: not yet merged


class Follower:
    """Keeps a read-only volume up with the writer, one refresh at a time
    (the caller serialises calls)."""

    def __init__(self, volume: Volume) -> None:
        """Start from the state the volume was opened from (its map is the
        root's plus the journals' changes, nothing merged yet)."""
        self.volume = volume
        self.maps = volume.maps
        opened = volume.take_opened()
        if opened is None:  # the first refresh builds the map from nothing
            self.shown = Shown(None, None)
            self.journals: dict[Name, Journal | None] = {}  # read, by name; None: another volume's
        else:
            self.shown = Shown(opened.listing.newest_root, opened.root, dict(opened.base))
            self.journals = dict(opened.journals)
        self.pages: dict[bytes, bytes] = {}  # pages read for a root not shown yet (kept across attempts)
        self.roots: dict[Name, Root] = {}    # the newest root read, by its listed name
        # kept between refreshes: starting 16 threads for each of them costs more than the reads it does
        self.pool = ThreadPoolExecutor(FETCH_PARALLELISM, thread_name_prefix="follow")

    def close(self) -> None:
        """Stop the reading threads (after the last refresh)."""
        self.pool.shutdown(wait=True)

    def refresh(self, attempts: int = REFRESH_ATTEMPTS) -> list[int]:
        """Show the writer's newest durable state, if it changed; returns
        the block numbers whose content may have changed.  Raises
        VolumeReplaced once the volume's place holds it no more (see the
        module docstring), StoreError if the store fails (NotFound if the
        writer deleted something it was reading in each of `attempts`
        listings)."""
        if self.volume.replaced is not None:
            raise VolumeReplaced(self.volume.replaced)
        for attempt in range(attempts):
            listing = self.maps.listing()
            if view_of(listing) == self.shown.listing:
                self._check_record()
                return []
            try:
                return self._show(listing)
            except VolumeReplaced:
                raise
            except NotFound:  # the writer tidied up between our listing and reads
                if attempt == attempts - 1:
                    self._check_record()  # (or the volume was wiped)
                    raise
            except StoreError:  # (maybe an object of the volume that replaced ours)
                self._check_record()
                raise
        return []

    def _check_record(self) -> None:
        """Return if the place's record is still the shown volume's; else
        mark the volume replaced and raise VolumeReplaced, saying whether
        the record is gone or names another volume.  A record this version
        cannot read proves neither: StoreError (the next refresh retries)."""
        store, uuid = self.volume.store, self.volume.record.uuid
        try:
            record = read_record(store)
        except UserError as e:
            raise StoreError(str(e)) from None
        if record is not None and record.uuid == uuid:
            return
        if record is None:
            reason = f"the volume at {store.url()} was deleted (its volume record is gone)"
        else:
            reason = (f"the volume at {store.url()} was replaced by another volume "
                      f"(UUID {record.uuid}; this mount showed {uuid})")
        self.volume.mark_replaced(reason)
        raise VolumeReplaced(reason)

    def _show(self, listing: Listing) -> list[int]:
        """Build the map of `listing` from the one shown and show it.
        Raises NotFound if an object it names has gone."""
        root = self._root_of(listing)
        self._read_new_journals(listing.journals)
        journals = own_journals({name: self.journals[name] for name in listing.journals})
        replay = self.maps.replay(journals, root)
        broken = None
        if replay.chain.gaps:  # the writer's checkpoint between our listings, or a journal lost
            self.maps.recheck(listing, replay.chain.gaps)  # (NotFound: list again)
            broken = str(self.maps.broken_chain(replay.chain.gaps, writable=False))
            if broken != self.volume.broken_chain:
                log.warning("%s", broken)
        self.volume.broken_chain = broken
        blockmap = self._root_map(root)
        base = {index: blockmap.set(index, h) for index, h in replay.changes.items()}
        merges = self._merge(blockmap, replay.runs)
        for index, merge in merges.items():
            base.setdefault(index, blockmap.set(index, merge.content_hash))
        merged = {m.content_hash: m.data for m in merges.values()}
        pages = sum(len(r.data) for r in replay.runs) // LOG_PAGE
        self._check_record()  # after every read: proves they were of this volume
        changed = self.volume.adopt(blockmap, root, merged, pages)
        self.shown = Shown(listing.newest_root, root, base, merges, view_of(listing))
        self.pages.clear()
        return changed

    def _root_of(self, listing: Listing) -> Root:
        """The newest root of `listing`, read only if it is not the one shown."""
        name = listing.newest_root
        if name == self.shown.listed_root and self.shown.root is not None:
            return self.shown.root
        if name not in self.roots:
            self.roots = {name: self.maps.newest_root(listing)}
        return self.roots[name]

    def _read_new_journals(self, names: list[Name]) -> None:
        """Read the listed journals not read before, in parallel; forget
        those no longer listed."""
        self.journals = {name: self.journals[name] for name in names if name in self.journals}
        self._read_into(self.journals, self.maps.read_journal_if_own,
                        [name for name in names if name not in self.journals])

    def _read_into(self, found: dict, read, keys: list) -> None:
        """found[key] = read(key) for each key, on the pool.  What was read
        is kept even if another key has gone, so the next attempt (after a
        new listing) reads only the rest; then raises NotFound."""
        def attempt(key):
            try:
                found[key] = read(key)
            except NotFound as e:
                return e
            return None

        gone = [e for e in self.pool.map(attempt, keys) if e is not None]
        if gone:
            raise gone[0]

    def _root_map(self, root: Root) -> BlockMap:
        """The map `root` holds, from a copy of the shown map: the blocks
        journals or merges changed are put back, then the pages whose hash
        differs from the shown root's are loaded (read in parallel)."""
        shown = self.shown.root
        if shown is None:
            blockmap = BlockMap(self.volume.block_count, self.maps.page_entries)
            shown_hashes = [ZERO_HASH] * blockmap.page_count
        else:
            blockmap, shown_hashes = self.volume.copy_map(), shown.page_hashes
            for index, entry in self.shown.base.items():
                blockmap.set(index, entry)
        if len(root.page_hashes) != blockmap.page_count:
            raise CorruptData("map root has the wrong number of pages")
        changed = [(n, h) for n, (h, old) in enumerate(zip(root.page_hashes, shown_hashes)) if h != old]
        wanted = {h for _, h in changed}
        self.pages = {h: data for h, data in self.pages.items() if h in wanted}  # of roots passed by
        self._read_into(self.pages, self.maps.read_page,
                        list({h for _, h in changed if h != ZERO_HASH and h not in self.pages}))
        for number, page_hash in changed:
            data = self.pages.get(page_hash) or bytes(blockmap.page_bytes(number))  # ZERO_HASH: all zeros
            blockmap.load_page(number, data)
        return blockmap

    def _merge(self, blockmap: BlockMap, runs: list[Run]) -> dict[int, Merge]:
        """Each block with newer logged pages merged with them (oldest
        first), on its entry in `blockmap`.  A block merged last time from
        the same base with a prefix of these runs is only extended; one its
        runs cover whole needs no base; the other bases are read in parallel."""
        by_block: dict[int, list[Run]] = defaultdict(list)
        for run in runs:  # oldest first
            by_block[run.block].append(run)
        merges, needed = {}, {}
        for block, block_runs in by_block.items():
            merge = self._reuse(block, blockmap.get(block), tuple(block_runs))
            if merge is None:
                needed[block] = (blockmap.get(block), tuple(block_runs))
            else:
                merges[block] = merge
        merges.update(zip(needed, self.pool.map(lambda item: self._merge_from_base(*item), needed.values())))
        return merges

    def _reuse(self, block: int, base: bytes, runs: tuple[Run, ...]) -> Merge | None:
        """The merge of `runs` onto `base` without reading anything, or None."""
        last = self.shown.merges.get(block)
        if last is not None and last.base == base and runs[: len(last.runs)] == last.runs:
            if len(runs) == len(last.runs):
                return last
            return _applied(base, bytearray(last.data), runs, len(last.runs), self.volume.codec.block_hash)
        if _covers(runs, self.volume.block_size):
            return _applied(base, bytearray(self.volume.block_size), runs, 0, self.volume.codec.block_hash)
        return None

    def _merge_from_base(self, base: bytes, runs: tuple[Run, ...]) -> Merge:
        """Read the base block (NotFound if the writer collected it) and apply `runs`."""
        data = bytearray(self.volume.block_size) if base == ZERO_HASH else bytearray(self.volume.read_block(base))
        return _applied(base, data, runs, 0, self.volume.codec.block_hash)


def _applied(base: bytes, data: bytearray, runs: tuple[Run, ...], done: int, block_hash) -> Merge:
    """`data` (the base with runs[:done] applied already) with the rest applied."""
    for run in runs[done:]:
        start = run.first_page * LOG_PAGE
        data[start : start + len(run.data)] = run.data
    merged = bytes(data)
    return Merge(base, runs, merged, block_hash(merged))  # named as the volume names blocks


def _covers(runs: tuple[Run, ...], block_size: int) -> bool:
    """Whether the runs together write every 4 KiB page of the block."""
    pages = set()
    for run in runs:
        pages.update(range(run.first_page, run.first_page + len(run.data) // LOG_PAGE))
    return len(pages) == block_size // LOG_PAGE


def view_of(listing: Listing) -> tuple:
    """What identifies a durable state: the newest root and the journals."""
    return listing.newest_root, tuple(listing.journals)
