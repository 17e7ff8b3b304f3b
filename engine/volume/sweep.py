"""Mark and sweep: find, and delete, what no durable map names.

Checkpoints delete what they supersede as they go.  A mount that dies
leaves block objects it uploaded but never journalled; a checkpoint cut
short leaves pages and roots; a superseded writer leaves journals and roots
of its old epoch.  The sweep marks from durable state only, read back from
the store: the newest root's pages and every snapshot's (each distinct
page once), the journals replayed after the root, plus, in this process, whatever the live map
names or an upload in flight carries.  Everything of the volume's layout
that is not marked is garbage; keys the layout does not name are never
touched.  Aliases (latedeletes.py) of what is marked are settled: the
plain object put back if it has gone, the alias deleted, once no late
delete can land.
"""
from collections.abc import Callable
from dataclasses import dataclass

from ..codec.block import HASH_SIZE, ZERO_HASH
from ..errors import NotFound, StoreError
from . import layout
from .mapstore import Listing, MapStore, Root
from .snapshots import SnapshotRecords
from .volume import Volume


# How a long sweep tells of its progress: progress(phase, total) is called as
# each phase starts (total: items it will count, None if unknown) and returns
# step(n), called as n more items are done.
Progress = Callable[[str, "int | None"], Callable[[int], None]]


def no_progress(phase: str, total: int | None) -> Callable[[int], None]:
    return lambda n: None


@dataclass(frozen=True)
class Sweep:
    """What a sweep found nothing refers to (and deleted, unless a dry run)."""
    blocks: int    # block objects no map names
    pages: int     # map pages the newest root does not use
    roots: int     # roots older than the newest
    journals: int  # journals the newest root covers, or of a superseded writer
    aliases: int   # aliases of blocks and pages still in use, settled


SURVEY_ATTEMPTS = 5  # looks at the volume while a live writer keeps tidying what the last one read


@dataclass(frozen=True)
class _Garbage:
    blocks: list[str]         # block objects (and their aliases) nothing names
    block_aliases: list[str]  # aliases of blocks something names
    pages: list[str]          # the same for map pages
    page_aliases: list[str]
    roots: list[str]
    journals: list[str]


def sweep(volume: Volume, *, delete: bool, progress: Progress | None = None, maps_only: bool = False) -> Sweep:
    """Mark from `volume`'s durable state and sweep the rest; `maps_only`:
    only the roots and journals the newest root supersedes (fsck, while a
    damaged snapshot record or page hides which blocks and pages are kept).

    Deleting needs the volume open writable (its lease keeps every other
    writer out; a superseded one is fenced): raises ValueError otherwise.
    A dry run (delete=False) works on a read-only volume and writes nothing.
    A live writer beside it (a mount's daemon sweeping, or a dry run on a
    URL) may delete a journal or page the sweep was about to read: it then
    looks again, before anything is deleted; StoreError if it never settles.
    """
    if delete and not volume.writable:
        raise ValueError("a sweep that deletes needs the volume open writable")
    progress = progress or no_progress
    missing = set()
    for attempt in range(SURVEY_ATTEMPTS):
        try:
            found = _survey(volume, progress, maps_only)
            break
        except NotFound as e:
            missing.add(str(e))
            if attempt < SURVEY_ATTEMPTS - 1:
                continue
            if len(missing) == 1:  # the same object every time: it is gone, not changing
                raise
            raise StoreError(f"the volume kept changing while it was read ({e} was deleted meanwhile "
                             f"{SURVEY_ATTEMPTS} times); try again") from None
    if delete:
        garbage = found.pages + found.roots + found.journals
        step = progress("deleting", len(found.blocks) + len(garbage))
        volume.delete_unreferenced(found.blocks, garbage)
        step(len(found.blocks) + len(garbage))
        volume.settle_aliases(found.block_aliases + found.page_aliases)
    return Sweep(blocks=len(found.blocks), pages=len(found.pages), roots=len(found.roots),
                 journals=len(found.journals), aliases=len(found.block_aliases) + len(found.page_aliases))


def _survey(volume: Volume, progress: Progress, maps_only: bool = False) -> _Garbage:
    """What nothing durable names (`maps_only`: of the roots and journals
    alone).  Raises NotFound when an object the listing showed went before
    it was read."""
    maps = volume.maps
    listing = maps.listing()
    root = maps.newest_root(listing)
    newest = (root.epoch, root.seq)
    kept_journals = _needed_journals(maps, listing, root)
    roots = [layout.root_key(*name) for name in listing.roots if name != newest]
    journals = [layout.journal_key(*name) for name in listing.journals if name not in kept_journals]
    if maps_only:
        return _Garbage([], [], [], [], roots, journals)
    kept = [root] + [Root(*s.root, s.page_hashes) for s in SnapshotRecords.of(volume.store, volume.record).list()]
    marked = _mark_blocks(maps, kept, kept_journals, progress) | volume.hashes_in_use()
    used_pages = {h for r in kept for h in r.page_hashes} - {ZERO_HASH}
    listed = progress("listing objects", None)
    blocks, block_aliases = _split(_counted(volume.store.list(layout.BLOCKS), listed), layout.hash_of_block_key,
                                   marked)
    pages, page_aliases = _split(_counted(volume.store.list(layout.PAGES), listed), layout.hash_of_page_key,
                                 used_pages)
    return _Garbage(blocks, block_aliases, pages, page_aliases, roots, journals)


def _counted(keys, step: Callable[[int], None]):
    for key in keys:
        step(1)
        yield key


def _split(keys, hash_of, marked: set[bytes]) -> tuple[list[str], list[str]]:
    """(keys of objects and aliases whose hash is not marked, aliases
    whose hash is); keys the layout does not name are in neither."""
    garbage, in_use = [], []
    for key in keys:
        alias = layout.alias_of(key)
        h = alias[1] if alias is not None else hash_of(key)
        if h is None:
            continue
        if h not in marked:
            garbage.append(key)
        elif alias is not None:
            in_use.append(key)
    return garbage, in_use


def _needed_journals(maps: MapStore, listing: Listing, root: Root) -> dict[tuple[int, int], list]:
    """Journals the newest root still needs, with their changes: those of
    its epoch after it, and those holding logged pages it lists as live."""
    needed = {}
    for name in listing.journals:
        after = name[0] == root.epoch and name[1] > root.seq
        if after or (root.live and name < (root.epoch, root.seq)):
            journal = maps.read_journal_if_own(name)
            if journal is not None and (after or journal.log in root.live):
                needed[name] = journal.changes
    return needed


def _mark_blocks(maps: MapStore, roots: list[Root], journals: dict, progress: Progress) -> set[bytes]:
    """Every block hash the roots' pages and the journals' changes name.
    A page shared by several roots is read once."""
    marked: set[bytes] = set()
    distinct = {h for root in roots for h in root.page_hashes} - {ZERO_HASH}
    step = progress("reading map pages", len(distinct))
    for page_hash in distinct:
        page = memoryview(maps.read_page(page_hash))
        marked.update(bytes(page[i : i + HASH_SIZE]) for i in range(0, len(page), HASH_SIZE))
        step(1)
    for changes in journals.values():
        marked.update(h for _, h, _ in changes)
    marked.discard(ZERO_HASH)
    return marked


def collect(volume: Volume, *, delete: bool, progress: Progress | None = None) -> dict:
    """`sweep`, and what it did, as gc reports it: objects of each
    kind deleted (or found, for a dry run), abandoned temporary files
    removed (file://), block bytes stored before and after.  `progress`
    is told of each phase as it goes (see Progress)."""
    store = volume.store
    before = store.usage(layout.BLOCKS)[1]
    found = sweep(volume, delete=delete, progress=progress)
    temp_files = store.tidy_scratch() if delete else store.scratch()[1]
    verb = "deleted" if delete else "found"
    return {f"{verb}_blocks": found.blocks, f"{verb}_map_pages": found.pages,
            f"{verb}_old_roots": found.roots, f"{verb}_journals": found.journals,
            f"{verb}_temp_files": temp_files,  # abandoned ones only (file://)
            "aliases_in_use": found.aliases,  # second copies written while a late delete could land
            "stored_bytes_before": before, "stored_bytes_after": store.usage(layout.BLOCKS)[1]}
