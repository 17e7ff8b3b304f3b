"""The live block map: block number -> content hash, held compactly.

One flat bytearray of `count * 32` bytes (32 MiB for a 1 TiB volume of 1 MiB
blocks) rather than a dict of objects.  An all-zero entry means the block is
all zeros and has no object.  The map is cut into pages of `page_entries`
entries; pages touched since the last checkpoint are remembered so a
checkpoint rewrites only those.
"""
from __future__ import annotations

from ..codec._hot import count_zero_entries, differing_entries
from ..codec.block import HASH_SIZE, ZERO_HASH


class BlockMap:
    def __init__(self, count: int, page_entries: int) -> None:
        self.count = count
        self.page_entries = page_entries
        self.page_count = (count + page_entries - 1) // page_entries
        self._entries = bytearray(count * HASH_SIZE)
        self._dirty_pages: set[int] = set()
        self.mapped_count = 0  # entries that are not ZERO_HASH

    def get(self, index: int) -> bytes:
        start = index * HASH_SIZE
        return bytes(self._entries[start : start + HASH_SIZE])

    def set(self, index: int, content_hash: bytes) -> bytes:
        """Point `index` at `content_hash`; returns the hash it replaced."""
        start = index * HASH_SIZE
        old = bytes(self._entries[start : start + HASH_SIZE])
        if old != content_hash:
            self._entries[start : start + HASH_SIZE] = content_hash
            self._dirty_pages.add(index // self.page_entries)
            self.mapped_count += (old == ZERO_HASH) - (content_hash == ZERO_HASH)
        return old

    def dirty_pages(self) -> set[int]:
        """The pages changed since the last checkpoint (a copy)."""
        return set(self._dirty_pages)

    def page(self, page: int) -> bytes:
        start = page * self.page_entries * HASH_SIZE
        return bytes(self._entries[start : start + self.page_entries * HASH_SIZE])

    def page_bytes(self, page: int) -> int:
        """How many bytes of entries page number `page` holds (the last may be short)."""
        return min(self.page_entries, self.count - page * self.page_entries) * HASH_SIZE

    def load_page(self, page: int, data: bytes) -> None:
        """Replace a whole page of entries; ValueError if `data` is not
        `page_bytes(page)` long."""
        start = page * self.page_entries * HASH_SIZE
        expected = self.page_bytes(page)
        if len(data) != expected:
            raise ValueError(f"map page {page} has {len(data)} bytes, expected {expected}")
        before = count_zero_entries(memoryview(self._entries)[start : start + expected], HASH_SIZE)
        self._entries[start : start + expected] = data
        self.mapped_count += before - count_zero_entries(data, HASH_SIZE)

    def copy(self) -> "BlockMap":
        """An independent copy of the entries (no dirty pages): what a
        read-only view builds its next map on (follow.py)."""
        twin = object.__new__(BlockMap)
        twin.count, twin.page_entries, twin.page_count = self.count, self.page_entries, self.page_count
        twin._entries = bytearray(self._entries)
        twin._dirty_pages = set()
        twin.mapped_count = self.mapped_count
        return twin

    def changed_from(self, other: "BlockMap") -> list[int]:
        """Block numbers whose entry differs from `other`'s (same
        geometry), compared in C without copying either map (an unchanged
        32 MiB map costs a few memcmp calls); neither may change meanwhile."""
        return differing_entries(other._entries, self._entries, HASH_SIZE)

    def entries(self) -> bytes:
        """A copy of every entry (count * 32 bytes), for scanning without a lock."""
        return bytes(self._entries)

    def take_dirty_pages(self) -> list[int]:
        pages = sorted(self._dirty_pages)
        self._dirty_pages.clear()
        return pages

    def mark_pages_dirty(self, pages: list[int]) -> None:
        self._dirty_pages.update(pages)

    def distinct(self) -> set[bytes]:
        return {h for h in self._iter_hashes() if h != ZERO_HASH}

    def _iter_hashes(self, start: int = 0, stop: int | None = None):
        view = memoryview(self._entries)
        for offset in range(start, len(view) if stop is None else stop, HASH_SIZE):
            yield bytes(view[offset : offset + HASH_SIZE])


def referenced_in(entries: bytes, hashes: set[bytes]) -> set[bytes]:
    """The members of `hashes` that occur as an entry of `entries` (a copy
    of a map's entries).  A few hashes are searched for with bytes.find
    (C speed, about 3 ms per 32 MiB); many, by one pass over the entries."""
    if not hashes or not entries:
        return set()
    if len(hashes) <= 16:
        return {h for h in hashes if _occurs_aligned(entries, h)}
    view = memoryview(entries)
    return {bytes(view[i : i + HASH_SIZE]) for i in range(0, len(view), HASH_SIZE)} & hashes


def _occurs_aligned(entries: bytes, content_hash: bytes) -> bool:
    at = entries.find(content_hash)
    while at >= 0:
        if at % HASH_SIZE == 0:
            return True
        at = entries.find(content_hash, at + 1)
    return False

