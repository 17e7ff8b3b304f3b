"""Persisting the block map: pages, checkpoint roots and journal deltas
(their bytes: mapobjects.py).

Roots and journals are named by (epoch, seq) (layout.py).  The newest root
is the one with the highest (epoch, seq); it contains every change of every
journal before it.  Mounting loads it and replays, in order, the journals
of its own epoch with a higher sequence that are on their chain (each
names the one it follows, journalchain.py): journals of older epochs after it
were written by a writer that had already been superseded, and were never
acknowledged (lock.py); journals of a newer epoch than every root follow
a root that is missing (journalchain.py), and are replayed after it as
what remains.  Journals may also carry 4 KiB pages an fsync wrote (see volume.py,
"fsync log"): a change's watermark is the log number current when its block
was read for upload, so pages with a higher log number are newer than it.
"""
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace

from ..codec._hot import count_zero_entries, is_zero
from ..codec.block import HASH_SIZE, ZERO_HASH, Codec
from ..errors import CorruptData, NotFound, StoreError
from ..store.base import ObjectStore
from . import layout
from .blockmap import BlockMap
from .journalchain import Chain, Gap, describe, follow, page_gaps
from .latedeletes import find_alias
from .mapobjects import (  # noqa: F401 - Root, Run, Journal, ForeignObject, LOG_PAGE: used through here too
    LOG_PAGE, ForeignObject, Journal, Root, Run, decode_journal, decode_root, encode_journal, encode_root,
)
from .rollback import SeenState

FETCH_PARALLELISM = 16
LOAD_ATTEMPTS = 5  # listings tried when a live writer keeps tidying objects away mid-load


@dataclass
class Listing:
    """The map objects a volume holds, by (epoch, seq), and the keys under
    map/ and lock/ that are named as nothing of ours (left alone)."""
    roots: list[tuple[int, int]]
    journals: list[tuple[int, int]]
    unknown: list[str]

    @property
    def newest_root(self) -> tuple[int, int] | None:
        return max(self.roots) if self.roots else None

    @property
    def max_epoch(self) -> int:
        return max([e for e, _ in self.roots + self.journals], default=0)


@dataclass
class Loaded:
    map: BlockMap
    root: Root
    last_seq: int        # the next journal or root must use a larger sequence
    last_log: int        # the next fsync log number must be larger
    runs: list[Run]      # logged pages newer than their block in `map`, oldest first
    # log number -> (epoch, seq) of the journal holding its pages, for the
    # live logs of the root and the logs of the journals replayed after it
    log_journals: dict[int, tuple[int, int]]
    listing: Listing
    # For a reader that follows a writer (follow.py): every listed journal
    # as read (None: another volume's), and the root's entry of each block
    # the journals changed, so the root's own map can be had back from `map`.
    journals: dict[tuple[int, int], "Journal | None"] = field(default_factory=dict)
    base: dict[int, bytes] = field(default_factory=dict)
    # Links of the journal chain that are missing (journalchain.py), newest
    # first: the map holds what remains, without their changes.
    gaps: list[Gap] = field(default_factory=list)


@dataclass
class Replay:
    changes: dict[int, bytes]                # block -> content hash, the last change of each
    runs: list[Run]                          # logged pages newer than their block, oldest first
    log_journals: dict[int, tuple[int, int]]
    last_log: int
    chain: Chain = field(default_factory=Chain)  # which journals after the root were replayed (journalchain.py)


class KeyTaken(StoreError):
    """A create-only map write found its name taken by different content."""


class BrokenChain(CorruptData):
    """A journal (or root) of the live map is missing: a link of the
    journal chain names it (journalchain.py).  The message is one line:
    which object, and to run fsck."""


class MapStore:
    """Reads and writes one volume's map objects."""

    def __init__(self, store: ObjectStore, codec: Codec, block_count: int, page_entries: int, volume_uuid: str,
                 block_size: int):
        self.block_size = block_size
        self.store = store
        self.codec = codec
        self.block_count = block_count
        self.page_entries = page_entries
        self.uuid = volume_uuid
        # An encrypted volume's owner does not trust the store: remember the
        # newest map state seen, to notice a rollback (rollback.py).
        self.seen = SeenState(volume_uuid) if codec.sealer is not None else None

    @classmethod
    def of(cls, store: ObjectStore, record) -> "MapStore":
        """The map objects of the volume with this VolumeRecord."""
        return cls(store, record.codec(), record.block_count, record.page_entries, record.uuid, record.block_size)

    def rollback(self, listing: Listing) -> str | None:
        """A warning when `listing`'s newest map object is older than one
        this machine saw (an encrypted volume only), which it remembers."""
        if self.seen is None:
            return None
        warning = self.seen.rollback(listing.roots, listing.journals, self.store.url())
        self.seen.saw(listing.roots, listing.journals)
        return warning

    def seen_epoch(self) -> int:
        """The highest epoch of this volume's map this machine saw (0: none)."""
        return self.seen.newest[0] if self.seen is not None and self.seen.newest else 0

    def listing(self) -> Listing:
        roots, journals, unknown = [], [], []
        for prefix, found in ((layout.ROOTS, roots), (layout.JOURNAL, journals)):
            for key in self.store.list(prefix):
                name = layout.name_of(key, prefix)
                if name is None:
                    unknown.append(key)
                else:
                    found.append(name)
        unknown += [k for k in self.store.list(layout.LEASES) if layout.epoch_of_lease_key(k) is None]
        return Listing(sorted(roots), sorted(journals), unknown)

    def load(self, listing: Listing | None = None) -> "Loaded":
        """The map as of the newest root plus its epoch's newer journals,
        and the logged pages that are newer than their block's content."""
        listing = listing or self.listing()
        blockmap = BlockMap(self.block_count, self.page_entries)
        root = self.newest_root(listing)
        if root.page_hashes and (root.epoch or root.seq):
            self._load_pages(blockmap, root)
        journals = self.read_journals(listing.journals)
        replay = self.replay(own_journals(journals), root)
        if replay.chain.gaps:
            self.recheck(listing, replay.chain.gaps)
        base = {index: blockmap.set(index, content) for index, content in replay.changes.items()}
        last_seq = max([s for _, s in listing.roots + listing.journals], default=0)
        return Loaded(blockmap, root, last_seq, replay.last_log, replay.runs, replay.log_journals, listing,
                      journals, base, replay.chain.gaps)

    def recheck(self, listing: Listing, gaps: list[Gap]) -> None:
        """Raise NotFound (list again) if the gaps may be a live writer's
        doing: the newest root changed since `listing` (it deleted the
        journals it covers between the listing of roots and of journals),
        or a missing object reads now (listed past before it was stored)."""
        if self.listing().newest_root != listing.newest_root:
            raise NotFound("the map changed while it was read")
        if any(self.store.head(gap.key) is not None for gap in gaps):
            raise NotFound("the map changed while it was read")

    def broken_chain(self, gaps: list[Gap], writable: bool = True) -> BrokenChain:
        """The error a writable open raises for these gaps (`writable`
        False: the warning of a read-only one): one line."""
        doing = "opening it writable would make that loss permanent" if writable else \
            "this read-only mount shows the map without them"
        error = BrokenChain(f"{describe(gaps[0], self.store.key_url)}; {doing}: run "
                            f"'bucketdisk fsck {self.store.url()}'")
        error.where = self.store.key_url(gaps[0].key)
        return error

    def load_root(self, root: Root) -> "Loaded":
        """The map `root` holds alone (a snapshot's: no journals apply)."""
        blockmap = BlockMap(self.block_count, self.page_entries)
        self._load_pages(blockmap, root)
        return Loaded(blockmap, root, root.seq, root.log_high, [], {}, Listing([], [], []))

    def count(self) -> tuple[int, int, Listing]:
        """(blocks that have an object, fsynced pages not yet in their
        blocks, the listing), without holding the map: pages are counted
        one at a time (info on a volume of any size)."""
        for attempt in range(LOAD_ATTEMPTS):
            listing = self.listing()
            try:
                root = self.newest_root(listing)
                replay = self.replay(own_journals(self.read_journals(listing.journals)), root)
                mapped = self._count_mapped(root, replay.changes)
            except NotFound:  # a live writer tidied up between the listing and a read
                if attempt == LOAD_ATTEMPTS - 1:
                    raise
                continue
            return mapped, sum(len(r.data) for r in replay.runs) // LOG_PAGE, listing

    def newest_root(self, listing: Listing) -> Root:
        """The root with the highest (epoch, seq) that belongs to this
        volume; an empty one (epoch 0, seq 0) if there is none."""
        for name in reversed(listing.roots):
            try:
                return self.read_root(*name)
            except ForeignObject:
                continue
        return Root(0, 0, [ZERO_HASH] * -(-self.block_count // self.page_entries))

    def read_journal_if_own(self, name: tuple[int, int]) -> "Journal | None":
        """The journal of that name, or None if it belongs to another volume."""
        try:
            return self.read_journal(*name)
        except ForeignObject:
            return None

    def read_journals(self, names: list[tuple[int, int]]) -> dict[tuple[int, int], "Journal | None"]:
        """The journals of these names, FETCH_PARALLELISM at a time; None
        for one of another volume.  Raises NotFound if one has gone (a live
        writer deleted it after a checkpoint: list again)."""
        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            return dict(zip(names, pool.map(self.read_journal_if_own, names)))

    def replay(self, journals: list[Journal], root: Root, listed: set[tuple[int, int]] = frozenset()) -> "Replay":
        """What the journals (in name order) add to `root`: the changes of
        the chain of those of its epoch after it (journalchain.py: a gap
        is in `chain.gaps`, what remains is replayed), in order, and the
        logged pages newer than their block.  `listed`: names listed but
        not readable (journalchain.follow).  Reads nothing."""
        changes: dict[int, bytes] = {}
        marks = dict(root.marks)
        runs: list[Run] = []
        log_journals: dict[int, tuple[int, int]] = {}
        last_log = root.log_high
        chain = follow((root.epoch, root.seq), {(j.epoch, j.seq): j for j in journals}, set(listed))
        chain.gaps += page_gaps(root, {(j.epoch, j.seq) for j in journals} | set(listed))
        used = set(chain.used)
        for journal in journals:
            replayed = (journal.epoch, journal.seq) in used
            if replayed:
                last_log = max(last_log, journal.log)
                for index, content, watermark in journal.changes:
                    if index >= self.block_count:
                        raise CorruptData(f"it names block {index}, beyond the volume").at(
                            self.store.key_url(layout.journal_key(journal.epoch, journal.seq)))
                    changes[index] = content
                    marks[index] = watermark
            # The root's live logs: their pages may sit in a journal before it,
            # or after it (the log number was taken before the root and its
            # journal written after, while fsync waited for uploads).
            before = (journal.epoch, journal.seq) < (root.epoch, root.seq)
            live = (before or replayed) and journal.log in root.live
            if journal.runs and (live or (replayed and journal.log > root.log_high)):
                runs += journal.runs
                log_journals[journal.log] = (journal.epoch, journal.seq)
        newer = [r for r in runs if r.log > marks.get(r.block, -1)]
        for run in newer:
            if run.block >= self.block_count or (run.first_page + len(run.data) // LOG_PAGE) * LOG_PAGE \
                    > self.block_size:
                raise CorruptData(f"its logged pages of block {run.block} lie beyond it").at(
                    self.store.key_url(layout.journal_key(*log_journals[run.log])))
        newer.sort(key=lambda r: r.log)
        return Replay(changes, newer, log_journals, last_log, chain)

    def _count_mapped(self, root: Root, changes: dict[int, bytes]) -> int:
        def count_page(item) -> int:
            number, page_hash = item
            first = number * self.page_entries
            entries = bytes(self.page_bytes(number))
            if page_hash != ZERO_HASH:
                entries = self.read_page(page_hash, number)
            mapped = (len(entries) - count_zero_entries(entries, HASH_SIZE) * HASH_SIZE) // HASH_SIZE
            for index in range(first, first + len(entries) // HASH_SIZE):
                if index in changes:
                    old = entries[(index - first) * HASH_SIZE : (index - first + 1) * HASH_SIZE]
                    mapped += (changes[index] != ZERO_HASH) - (old != ZERO_HASH)
            return mapped

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            return sum(pool.map(count_page, enumerate(root.page_hashes)))

    def load_latest(self, listing: Listing | None = None) -> "Loaded":
        """`load` of `listing` (default: a fresh one), listed again if a live
        writer tidied away an object between the listing and the read (NotFound)."""
        for attempt in range(LOAD_ATTEMPTS):
            try:
                return self.load(listing if listing is not None and attempt == 0 else self.listing())
            except NotFound:
                if attempt == LOAD_ATTEMPTS - 1:
                    raise

    def still(self, loaded: "Loaded") -> "Loaded | None":
        """`loaded`, with a fresh listing, if no root or journal came or went
        since it was listed (objects are never rewritten, so its map is the
        same); else None."""
        now = self.listing()
        if (now.roots, now.journals) != (loaded.listing.roots, loaded.listing.journals):
            return None
        return replace(loaded, listing=now)

    def _read(self, key: str, decode, name: str | None = None):
        """decode(unpacked bytes of `key`, the object named `name`, by
        default `key`; an alias is its plain key's copy); a CorruptData
        raised on the way names the key's URL."""
        data = self.store.get(key)
        try:
            return decode(self.codec.unpack(data, name or key))
        except CorruptData as e:
            raise e.at(self.store.key_url(key)) from None

    def read_root(self, epoch: int, seq: int) -> Root:
        """The root of that name; raises CorruptData (naming its key) for a
        damaged one, ForeignObject for another volume's."""
        return self._read(layout.root_key(epoch, seq), lambda data: self._decode_root(data, epoch, seq))

    def _decode_root(self, data: bytes, epoch: int, seq: int) -> Root:
        root = decode_root(data, self.block_count, self.page_entries, self.uuid)
        if root.seq != seq or (root.epoch and root.epoch != epoch):
            raise CorruptData(f"map root {epoch:x}-{seq:x} names itself {root.epoch:x}-{root.seq:x}")
        if len(root.page_hashes) != -(-self.block_count // self.page_entries):
            raise CorruptData(f"map root has {len(root.page_hashes)} pages for {self.block_count} blocks")
        root.epoch = epoch  # a version 2 root carries no epoch: its name's (0) holds
        return root

    def read_journal(self, epoch: int, seq: int) -> Journal:
        """The journal of that name; raises CorruptData (naming its key) for
        a damaged one, ForeignObject for another volume's."""
        return self._read(layout.journal_key(epoch, seq), lambda data: self._decode_journal(data, epoch, seq))

    def _decode_journal(self, data: bytes, epoch: int, seq: int) -> Journal:
        journal = decode_journal(data, self.uuid)
        if journal.seq != seq or (journal.epoch and journal.epoch != epoch):
            raise CorruptData(f"journal {epoch:x}-{seq:x} names itself {journal.epoch:x}-{journal.seq:x}")
        journal.epoch = epoch
        return journal

    def write_journal(self, journal: Journal) -> None:
        """Store a journal under its own name, never over another (raises KeyTaken)."""
        key = layout.journal_key(journal.epoch, journal.seq)
        self._put_new(key, self.codec.pack(encode_journal(journal, self.uuid), key))
        if self.seen is not None:
            self.seen.saw_journal((journal.epoch, journal.seq))

    def write_root(self, root: Root) -> None:
        """Store a root under its own name, never over another (raises KeyTaken)."""
        data = encode_root(root, self.block_count, self.page_entries, self.uuid)
        key = layout.root_key(root.epoch, root.seq)
        self._put_new(key, self.codec.pack(data, key))
        if self.seen is not None:
            self.seen.saw_root((root.epoch, root.seq))

    def _put_new(self, key: str, data: bytes) -> None:
        if self.store.put(key, data, if_absent=True):
            return
        # Taken: by our own earlier attempt whose answer was lost, or not.
        try:
            if self.store.get(key) == data:
                return
        except NotFound:
            pass
        raise KeyTaken(f"{key} already exists with other content: another writer uses this epoch")

    def write_pages(self, pages: dict[int, bytes], alias=None) -> dict[int, bytes]:
        """Store page contents; returns page number -> page hash.
        `alias(page_hash)` gives the key of a second copy to write as well
        (layout.page_alias_key), or None."""
        def put(item):
            number, data = item
            if is_zero(data):
                return number, ZERO_HASH
            page_hash = self.codec.page_hash(data)
            key = layout.page_key(page_hash)
            packed = self.codec.pack(data, key)
            self.store.put(key, packed, if_absent=True)
            alias_key = alias(page_hash) if alias is not None else None
            if alias_key is not None:
                self.store.put(alias_key, packed)
            return number, page_hash

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            return dict(pool.map(put, pages.items()))

    def read_page(self, page_hash: bytes, number: int | None = None, alias: str | None = None) -> bytes:
        """The entries of the page with that hash; with its `number`, also
        checked to be that page's length.  Falls back to an alias when the
        plain object has gone; `alias`: read that alias's key only.  Raises
        CorruptData naming the key, NotFound."""
        def check(data: bytes) -> bytes:
            if self.codec.page_hash(data) != page_hash:
                raise CorruptData("map page does not match its hash")
            if number is not None and len(data) != self.page_bytes(number):
                raise CorruptData(f"map page has {len(data)} bytes for page {number}, "
                                  f"expected {self.page_bytes(number)}")
            return data
        key = layout.page_key(page_hash)
        if alias is not None:
            return self._read(alias, check, key)
        try:
            return self._read(key, check)
        except NotFound:
            return self._read(find_alias(self.store, key), check, key)  # a late delete took it (latedeletes.py)

    def read_block(self, block_hash: bytes, alias: str | None = None) -> bytearray:
        """The block with this content hash, in a new block_buffer decoded
        as it is read (codec.BlockReader: no other block-sized buffer).
        Falls back to an alias when the plain object has gone; `alias`:
        read that alias's key only.  Raises CorruptData naming the key,
        NotFound."""
        key = alias or layout.block_key(block_hash)
        reader = self.codec.block_reader(self.block_size, block_hash)
        try:
            try:
                self.store.get_into(key, reader)
            except NotFound:
                if alias is not None:
                    raise
                reader.reset()
                key = find_alias(self.store, key)  # a late delete took it (latedeletes.py)
                self.store.get_into(key, reader)
            return reader.finish()
        except CorruptData as e:
            raise e.at(self.store.key_url(key)) from None
        finally:
            reader.close()

    def page_bytes(self, number: int) -> int:
        """Bytes of entries page `number` holds (the last one may be short)."""
        return min(self.page_entries, self.block_count - number * self.page_entries) * HASH_SIZE

    def _load_pages(self, blockmap: BlockMap, root: Root) -> None:
        def fetch(item):
            number, page_hash = item
            if page_hash != ZERO_HASH:
                blockmap.load_page(number, self.read_page(page_hash, number))

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            list(pool.map(fetch, enumerate(root.page_hashes)))


def own_journals(journals: dict[tuple[int, int], "Journal | None"]) -> list[Journal]:
    """The journals of this volume, in name order."""
    return [journals[name] for name in sorted(journals) if journals[name] is not None]
