"""A read-only view that follows a live writer.

A read-only mount beside a writable one serves the writer's durable state:
the newest root and the journals after it, with pages an fsync logged
merged into their blocks in memory (the writer uploads those blocks whole
a little later).  `refresh` catches up: the device calls it every
FOLLOW_SECONDS and whenever a block it was about to read has gone (the
writer replaced and collected it), then drops the blocks whose content
changed from its cache.  So a read never fails for data that exists; what
it shows is at most FOLLOW_SECONDS behind the writer's last journal (the
writer journals at every fsync and every 5 s while writing).
"""
from collections import defaultdict

from ..codec.block import ZERO_HASH, content_hash
from ..errors import NotFound
from .mapstore import LOG_PAGE, Listing, Loaded
from .volume import Volume

FOLLOW_SECONDS = 10.0


def merge_logged_in_memory(volume: Volume, loaded: Loaded) -> dict[bytes, bytes]:
    """Point each block that has newer logged pages at its merged content,
    in `loaded.map` only (nothing is written); returns hash -> content."""
    by_block = defaultdict(list)
    for run in loaded.runs:  # oldest first
        by_block[run.block].append(run)
    merged = {}
    for block, runs in by_block.items():
        base = loaded.map.get(block)
        data = bytearray(volume.block_size) if base == ZERO_HASH else bytearray(volume.read_block(base))
        for run in runs:
            start = run.first_page * LOG_PAGE
            data[start : start + len(run.data)] = run.data
        merged_hash = content_hash(bytes(data))
        loaded.map.set(block, merged_hash)
        merged[merged_hash] = bytes(data)
    return merged


def refresh(volume: Volume, attempts: int = 5) -> list[int]:
    """Take the writer's newest durable state, if it changed; returns the
    block numbers whose content may have changed.  Raises StoreError if
    the store fails."""
    for attempt in range(attempts):
        listing = volume.maps.listing()
        if view_of(listing) == volume.view:
            return []
        try:
            loaded = volume.maps.load(listing)
            merged = merge_logged_in_memory(volume, loaded)
        except NotFound:  # the writer tidied up between our listing and reads
            if attempt == attempts - 1:
                raise
            continue
        return volume.adopt(loaded, merged)
    return []


def view_of(listing: Listing) -> tuple:
    """What identifies a durable state: the newest root and the journals."""
    return listing.newest_root, tuple(listing.journals)
