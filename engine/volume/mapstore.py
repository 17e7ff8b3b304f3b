"""Persisting the block map: pages, checkpoint roots and journal deltas.

Binary layouts (all little-endian, each wrapped by the codec's framing):

  page     raw entries, 32 bytes each; named by its BLAKE3-256, stored once;
           an all-zero page has no object.
  root     b"BDKR" u32 version, u64 seq, u64 block count, u32 page entries,
           u32 page count, 16-byte volume UUID, then one 32-byte page hash
           per page.
  journal  b"BDKJ" u32 version, u64 seq, 16-byte volume UUID, u32 count,
           then count x (u64 block number, 32-byte content hash).

A root with sequence S contains every change of every journal with
sequence <= S; mounting loads the newest root and replays newer journals in
order.
"""
import struct
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..codec._hot import is_zero
from ..codec.block import HASH_SIZE, ZERO_HASH, Codec, content_hash
from ..errors import CorruptData
from ..store.base import ObjectStore
from . import layout
from .blockmap import BlockMap

ROOT_HEADER = struct.Struct("<4sIQQII16s")
JOURNAL_HEADER = struct.Struct("<4sIQ16sI")
JOURNAL_ENTRY = struct.Struct(f"<Q{HASH_SIZE}s")
LAYOUT_VERSION = 1
FETCH_PARALLELISM = 16


@dataclass
class Root:
    seq: int
    page_hashes: list[bytes]


def encode_root(root: Root, block_count: int, page_entries: int, volume_uuid: str) -> bytes:
    header = ROOT_HEADER.pack(
        b"BDKR", LAYOUT_VERSION, root.seq, block_count, page_entries, len(root.page_hashes),
        uuid.UUID(volume_uuid).bytes,
    )
    return header + b"".join(root.page_hashes)


def decode_root(data: bytes, block_count: int, page_entries: int, volume_uuid: str) -> Root:
    if len(data) < ROOT_HEADER.size:
        raise CorruptData("map root is truncated")
    magic, version, seq, count, entries, pages, vol = ROOT_HEADER.unpack_from(data)
    if magic != b"BDKR" or version != LAYOUT_VERSION:
        raise CorruptData("not a map root of a known version")
    if vol != uuid.UUID(volume_uuid).bytes:
        raise CorruptData("map root belongs to another volume")
    if count != block_count or entries != page_entries:
        raise CorruptData("map root does not match the volume geometry")
    body = data[ROOT_HEADER.size :]
    if len(body) != pages * HASH_SIZE:
        raise CorruptData("map root is truncated")
    return Root(seq, [body[i : i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)])


def encode_journal(seq: int, changes: dict[int, bytes], volume_uuid: str) -> bytes:
    header = JOURNAL_HEADER.pack(b"BDKJ", LAYOUT_VERSION, seq, uuid.UUID(volume_uuid).bytes, len(changes))
    return header + b"".join(JOURNAL_ENTRY.pack(i, h) for i, h in sorted(changes.items()))


def decode_journal(data: bytes, volume_uuid: str) -> tuple[int, list[tuple[int, bytes]]]:
    if len(data) < JOURNAL_HEADER.size:
        raise CorruptData("journal entry is truncated")
    magic, version, seq, vol, count = JOURNAL_HEADER.unpack_from(data)
    if magic != b"BDKJ" or version != LAYOUT_VERSION:
        raise CorruptData("not a journal entry of a known version")
    if vol != uuid.UUID(volume_uuid).bytes:
        raise CorruptData("journal entry belongs to another volume")
    if len(data) != JOURNAL_HEADER.size + count * JOURNAL_ENTRY.size:
        raise CorruptData("journal entry is truncated")
    return seq, list(JOURNAL_ENTRY.iter_unpack(data[JOURNAL_HEADER.size :]))


class MapStore:
    """Reads and writes one volume's map objects."""

    def __init__(self, store: ObjectStore, codec: Codec, block_count: int, page_entries: int, volume_uuid: str):
        self.store = store
        self.codec = codec
        self.block_count = block_count
        self.page_entries = page_entries
        self.uuid = volume_uuid

    def latest_root_seq(self) -> int | None:
        seqs = [layout.seq_of_key(k) for k in self.store.list(layout.ROOTS)]
        return max(seqs) if seqs else None

    def journal_seqs(self) -> list[int]:
        return sorted(layout.seq_of_key(k) for k in self.store.list(layout.JOURNAL))

    def load(self) -> tuple[BlockMap, Root | None, int]:
        """The map as of the newest root plus every newer journal.

        Returns the map, the root it started from, and the highest sequence
        number seen (the next write must use a larger one).
        """
        blockmap = BlockMap(self.block_count, self.page_entries)
        root_seq = self.latest_root_seq()
        root = None
        if root_seq is not None:
            root = self.read_root(root_seq)
            self._load_pages(blockmap, root)
        last = root_seq if root_seq is not None else 0
        newer = [s for s in self.journal_seqs() if s > last]
        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            journals = list(pool.map(self.read_journal, newer))
        for seq, changes in zip(newer, journals):
            for index, content in changes:
                if index >= self.block_count:
                    raise CorruptData(f"journal {seq:016x} names block {index} beyond the volume")
                blockmap.set(index, content)
            last = seq
        return blockmap, root, last

    def read_root(self, seq: int) -> Root:
        data = self.codec.unpack(self.store.get(layout.root_key(seq)))
        root = decode_root(data, self.block_count, self.page_entries, self.uuid)
        if root.seq != seq:
            raise CorruptData(f"map root {seq:016x} names itself {root.seq:016x}")
        return root

    def read_journal(self, seq: int) -> list[tuple[int, bytes]]:
        data = self.codec.unpack(self.store.get(layout.journal_key(seq)))
        found, changes = decode_journal(data, self.uuid)
        if found != seq:
            raise CorruptData(f"journal {seq:016x} names itself {found:016x}")
        return changes

    def write_journal(self, seq: int, changes: dict[int, bytes]) -> None:
        self.store.put(layout.journal_key(seq), self.codec.pack(encode_journal(seq, changes, self.uuid)))

    def write_pages(self, pages: dict[int, bytes]) -> dict[int, bytes]:
        """Store page contents; returns page number -> page hash."""
        def put(item):
            number, data = item
            if is_zero(data):
                return number, ZERO_HASH
            page_hash = content_hash(data)
            self.store.put(layout.page_key(page_hash), self.codec.pack(data), if_absent=True)
            return number, page_hash

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            return dict(pool.map(put, pages.items()))

    def write_root(self, root: Root) -> None:
        data = encode_root(root, self.block_count, self.page_entries, self.uuid)
        self.store.put(layout.root_key(root.seq), self.codec.pack(data))

    def _load_pages(self, blockmap: BlockMap, root: Root) -> None:
        if len(root.page_hashes) != blockmap.page_count:
            raise CorruptData("map root has the wrong number of pages")

        def fetch(item):
            number, page_hash = item
            if page_hash == ZERO_HASH:
                return
            data = self.codec.unpack(self.store.get(layout.page_key(page_hash)))
            if content_hash(data) != page_hash:
                raise CorruptData(f"map page {number} does not match its hash")
            blockmap.load_page(number, data)

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            list(pool.map(fetch, enumerate(root.page_hashes)))
