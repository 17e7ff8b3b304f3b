"""The map's objects as bytes: roots and journals, encoded and decoded.

Binary layouts (all little-endian, each wrapped by the codec's framing):

  page     raw entries, 32 bytes each; named by its BLAKE3-256 (keyed, on an
           encrypted volume), stored once;
           an all-zero page has no object.
  root     b"BDKR" u32 version (5), u64 seq, u64 block count, u32 page
           entries, u32 page count, 16-byte volume UUID, u64 log high,
           u32 live count, u32 mark count, u64 epoch, u32 doomed block
           count, u32 doomed page count, then one 32-byte page hash per
           page, live count x (u64 log number, u64 seq of the journal
           of its epoch holding its pages, 0 if not yet stored), mark
           count x (u64 block number, u64 watermark), then the 32-byte
           hashes of the doomed blocks and of the doomed pages (volume.py,
           "Late deletes").
  journal  b"BDKJ" u32 version (4), u64 seq, 16-byte volume UUID, u32 count,
           u64 log number (0: no pages), u32 run count, u64 epoch, u64
           predecessor seq, u32 predecessor kind (1 root, 2 journal), then
           count x (u64 block number, 32-byte content hash, u64 watermark),
           then run count x (u64 block number, u32 first page, u32 page
           count, page count x 4096 bytes).  The predecessor is the map
           object of the same epoch its writer last knew stored
           (journalchain.py).
  (Root version 4 lists live log numbers alone; version 3 also lacks the
  doomed lists; version 2 also the epoch (read as 0); version 1 also the
  log fields and the watermarks.  Journal
  version 3 lacks the predecessor (its chain is not checked); version 2
  also the epoch; version 1 also the log fields and the watermarks.)
"""
import struct
import uuid
from dataclasses import dataclass, field

from ..codec.block import HASH_SIZE
from ..errors import CorruptData

ROOT_HEADER_V1 = struct.Struct("<4sIQQII16s")
ROOT_HEADER_V2 = struct.Struct("<4sIQQII16sQII")
ROOT_HEADER_V3 = struct.Struct("<4sIQQII16sQIIQ")
ROOT_HEADER = struct.Struct("<4sIQQII16sQIIQII")
MARK = struct.Struct("<QQ")
LIVE = struct.Struct("<QQ")
JOURNAL_HEADER_V1 = struct.Struct("<4sIQ16sI")
JOURNAL_HEADER_V2 = struct.Struct("<4sIQ16sIQI")
JOURNAL_HEADER_V3 = struct.Struct("<4sIQ16sIQIQ")
JOURNAL_HEADER = struct.Struct("<4sIQ16sIQIQQI")
JOURNAL_ENTRY_V1 = struct.Struct(f"<Q{HASH_SIZE}s")
JOURNAL_ENTRY = struct.Struct(f"<Q{HASH_SIZE}sQ")
RUN_HEADER = struct.Struct("<QII")
LOG_PAGE = 4096
ROOT_VERSION = 5
JOURNAL_VERSION = 4
ROOT_KIND, JOURNAL_KIND = 1, 2  # a journal's predecessor is a root or a journal


class ForeignObject(CorruptData):
    """A map object of another volume (an earlier one at the same place):
    read past, as if it were not there."""


@dataclass
class Root:
    epoch: int
    seq: int
    page_hashes: list[bytes]
    # The fsync log as of this root: the highest log number handed out, the
    # log numbers whose pages are not all in the map yet, and the watermark
    # of every block those touch.  Pages of other numbers up to log_high are
    # merged (or were never acknowledged) and are ignored.
    log_high: int = 0
    live: list[int] = field(default_factory=list)
    marks: dict[int, int] = field(default_factory=dict)
    # Blocks and pages whose plain objects its writer may still be deleting
    # (volume.py, "Late deletes").
    doomed_blocks: list[bytes] = field(default_factory=list)
    doomed_pages: list[bytes] = field(default_factory=list)
    # log number -> seq of the journal (of this root's epoch, before it)
    # that holds its pages, for the live logs whose journal was stored when
    # the root was written: that journal must be there (journalchain.py).
    live_journals: dict[int, int] = field(default_factory=dict)


@dataclass
class Run:
    """Consecutive 4 KiB pages of one block, as an fsync logged them."""
    log: int
    block: int
    first_page: int
    data: bytes


@dataclass
class Journal:
    epoch: int
    seq: int
    changes: list[tuple[int, bytes, int]]  # (block, content hash, watermark)
    log: int = 0
    runs: list[Run] | None = None
    # The (seq, kind) of the map object of its epoch this journal follows
    # (ROOT_KIND or JOURNAL_KIND): the last its writer knew stored.  None:
    # a version 3 or older journal, which names none.
    prev: tuple[int, int] | None = None

    @property
    def predecessor(self) -> tuple[int, int] | None:
        """The (epoch, seq) of the object it follows, or None (not named)."""
        return None if self.prev is None else (self.epoch, self.prev[0])


def encode_root(root: Root, block_count: int, page_entries: int, volume_uuid: str) -> bytes:
    header = ROOT_HEADER.pack(
        b"BDKR", ROOT_VERSION, root.seq, block_count, page_entries, len(root.page_hashes),
        uuid.UUID(volume_uuid).bytes, root.log_high, len(root.live), len(root.marks), root.epoch,
        len(root.doomed_blocks), len(root.doomed_pages),
    )
    live = b"".join(LIVE.pack(n, root.live_journals.get(n, 0)) for n in sorted(root.live))
    marks = b"".join(MARK.pack(b, w) for b, w in sorted(root.marks.items()))
    doomed = b"".join(sorted(root.doomed_blocks)) + b"".join(sorted(root.doomed_pages))
    return header + b"".join(root.page_hashes) + live + marks + doomed


def decode_root(data: bytes, block_count: int, page_entries: int, volume_uuid: str) -> Root:
    if len(data) < ROOT_HEADER_V1.size:
        raise CorruptData("map root is truncated")
    magic, version, seq, count, entries, pages, vol = ROOT_HEADER_V1.unpack_from(data)
    if magic != b"BDKR" or version not in (1, 2, 3, 4, 5):
        raise CorruptData("not a map root of a known version")
    epoch, log_high, live_count, mark_count, header = 0, 0, 0, 0, ROOT_HEADER_V1
    doomed_blocks = doomed_pages = 0
    if version >= 2:
        header = {2: ROOT_HEADER_V2, 3: ROOT_HEADER_V3}.get(version, ROOT_HEADER)
        if len(data) < header.size:
            raise CorruptData("map root is truncated")
        fields = header.unpack_from(data)
        log_high, live_count, mark_count = fields[7:10]
        epoch = fields[10] if version >= 3 else 0
        doomed_blocks, doomed_pages = fields[11:13] if version >= 4 else (0, 0)
    if vol != uuid.UUID(volume_uuid).bytes:
        raise ForeignObject("map root belongs to another volume")
    if count != block_count or entries != page_entries:
        raise CorruptData("map root does not match the volume geometry")
    body = data[header.size :]
    live_size = LIVE.size if version >= 5 else 8
    if len(body) != (pages + doomed_blocks + doomed_pages) * HASH_SIZE + live_count * live_size \
            + mark_count * MARK.size:
        raise CorruptData("map root is truncated")
    hashes = _hashes(body, 0, pages)
    at = pages * HASH_SIZE
    if version >= 5:
        live_journals = dict(LIVE.iter_unpack(body[at : at + live_count * LIVE.size]))
        live = sorted(live_journals)
        live_journals = {n: s for n, s in live_journals.items() if s}
        if any(s >= seq for s in live_journals.values()):
            raise CorruptData("map root names a journal of fsynced pages that does not precede it")
    else:
        live = [n for (n,) in struct.iter_unpack("<Q", body[at : at + live_count * 8])]
        live_journals = {}
    at += live_count * live_size
    marks = dict(MARK.iter_unpack(body[at : at + mark_count * MARK.size]))
    at += mark_count * MARK.size
    blocks = _hashes(body, at, doomed_blocks)
    return Root(epoch, seq, hashes, log_high, live, marks, blocks,
                _hashes(body, at + doomed_blocks * HASH_SIZE, doomed_pages), live_journals)


def _hashes(data: bytes, at: int, count: int) -> list[bytes]:
    return [data[i : i + HASH_SIZE] for i in range(at, at + count * HASH_SIZE, HASH_SIZE)]


def encode_journal(journal: Journal, volume_uuid: str) -> bytes:
    runs = journal.runs or []
    if journal.prev is None or journal.prev[0] >= journal.seq:
        raise ValueError("a journal follows an object of its epoch with a lower sequence")
    header = JOURNAL_HEADER.pack(b"BDKJ", JOURNAL_VERSION, journal.seq, uuid.UUID(volume_uuid).bytes,
                                 len(journal.changes), journal.log, len(runs), journal.epoch, *journal.prev)
    parts = [header]
    parts += [JOURNAL_ENTRY.pack(i, h, w) for i, h, w in sorted(journal.changes)]
    for run in runs:
        parts.append(RUN_HEADER.pack(run.block, run.first_page, len(run.data) // LOG_PAGE))
        parts.append(run.data)
    return b"".join(parts)


def decode_journal(data: bytes, volume_uuid: str) -> Journal:
    if len(data) < JOURNAL_HEADER_V1.size:
        raise CorruptData("journal entry is truncated")
    magic, version, seq, vol, count = JOURNAL_HEADER_V1.unpack_from(data)
    if magic != b"BDKJ" or version not in (1, 2, 3, 4):
        raise CorruptData("not a journal entry of a known version")
    if vol != uuid.UUID(volume_uuid).bytes:
        raise ForeignObject("journal entry belongs to another volume")
    if version == 1:
        if len(data) != JOURNAL_HEADER_V1.size + count * JOURNAL_ENTRY_V1.size:
            raise CorruptData("journal entry is truncated")
        changes = [(i, h, 0) for i, h in JOURNAL_ENTRY_V1.iter_unpack(data[JOURNAL_HEADER_V1.size :])]
        return Journal(0, seq, changes)
    header = {2: JOURNAL_HEADER_V2, 3: JOURNAL_HEADER_V3}.get(version, JOURNAL_HEADER)
    if len(data) < header.size:
        raise CorruptData("journal entry is truncated")
    fields = header.unpack_from(data)
    log, run_count = fields[5:7]
    epoch = fields[7] if version >= 3 else 0
    prev = tuple(fields[8:10]) if version >= 4 else None
    if prev is not None and (prev[0] >= seq or prev[1] not in (ROOT_KIND, JOURNAL_KIND)):
        raise CorruptData(f"journal names a predecessor ({prev[0]:x}, kind {prev[1]}) that cannot precede it")
    at = header.size + count * JOURNAL_ENTRY.size
    if len(data) < at:
        raise CorruptData("journal entry is truncated")
    changes = list(JOURNAL_ENTRY.iter_unpack(data[header.size : at]))
    runs = []
    for _ in range(run_count):
        if len(data) < at + RUN_HEADER.size:
            raise CorruptData("journal entry is truncated")
        block, first, pages = RUN_HEADER.unpack_from(data, at)
        at += RUN_HEADER.size
        if len(data) < at + pages * LOG_PAGE:
            raise CorruptData("journal entry is truncated")
        runs.append(Run(log, block, first, bytes(data[at : at + pages * LOG_PAGE])))
        at += pages * LOG_PAGE
    if at != len(data):
        raise CorruptData("journal entry has trailing bytes")
    return Journal(epoch, seq, changes, log, runs, prev)
