"""Snapshot records: a map root kept on purpose (history, issue 14).

One immutable object per snapshot, `snapshots/<number>` (16 hex digits),
created only if absent and framed by the codec like every map object.
Payload, little-endian: b"BDKS", u32 version (1), u32 metadata length, the
metadata as UTF-8 JSON, then one 32-byte page hash per page of the map it
keeps (all zeros: an all-zero page).  The metadata:

  uuid            the volume's (a record of another volume is read past)
  number          increasing; the key's number
  name            unique among the volume's snapshots; by default the
                  UTC start time YYYY-MM-DD-HHMMSS, as Time Machine names
                  its backup folders (-pre-restore after it for the
                  snapshot a restore takes; -2, -3... if taken)
  type            "manual", "scheduled" or "pre-restore"
  started,        UTC ISO 8601 times: when it was asked for, and when its
  completed       record was written
  root            [epoch, seq] of the root whose map it keeps
  named           whether the user chose its name (prune keeps such ones
                  unless told otherwise)
  changed_blocks  blocks whose entry differs from the previous snapshot's
  new_bytes       stored bytes of the distinct objects at those blocks

The record is written in one create-only PUT after the map it keeps is
durable, so a snapshot cut short leaves nothing any listing shows.
"""
from __future__ import annotations

import json
import re
import struct
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..codec.block import HASH_SIZE, ZERO_HASH, Codec
from ..errors import CorruptData, NotFound, UserError
from ..store.base import DeleteGuard, ObjectStore
from . import layout
from .mapstore import FETCH_PARALLELISM, ForeignObject

HEADER = struct.Struct("<4sII")
VERSION = 1
TYPES = ("manual", "scheduled", "pre-restore")
RESERVED_NAMES = ("Latest", "live")  # the mountpoint's link to the newest; the live disk in diffs
_NAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}$")
NUMBER_ATTEMPTS = 16  # numbers tried when other writers take the next ones first


@dataclass(frozen=True)
class Snapshot:
    number: int
    name: str
    type: str
    started: str
    completed: str
    root: tuple[int, int]
    page_hashes: list[bytes]
    changed_blocks: int = 0
    new_bytes: int = 0
    named: bool = False

    def summary(self) -> dict:
        """What `snapshot list` shows of it."""
        return {"number": self.number, "name": self.name, "type": self.type, "started": self.started,
                "completed": self.completed, "changed_blocks": self.changed_blocks, "new_bytes": self.new_bytes,
                "named": self.named}

    def metadata(self, volume_uuid: str) -> dict:
        return {"uuid": volume_uuid, "number": self.number, "name": self.name, "type": self.type,
                "started": self.started, "completed": self.completed, "root": list(self.root),
                "changed_blocks": self.changed_blocks, "new_bytes": self.new_bytes, "named": self.named}


def utc(seconds: float) -> str:
    """ISO 8601 UTC, whole seconds."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


def default_name(started: float) -> str:
    """Time Machine's name for a backup started at `started` (seconds since the epoch), in UTC."""
    return time.strftime("%Y-%m-%d-%H%M%S", time.gmtime(started))


def check_name(name: str) -> str:
    """`name` if it can name a snapshot (a directory name in the mount's
    snapshots/ folder); raises UserError otherwise."""
    if name in RESERVED_NAMES:
        raise UserError(f"'{name}' is reserved; choose another snapshot name")
    if not _NAME.match(name):
        raise UserError(f"bad snapshot name {name!r}: use 1 to 64 of A-Z a-z 0-9 . _ -, "
                        "not starting with '.'")
    return name


def check_new_name(name: str) -> str:
    """`name` if a new snapshot may take it: check_name's rule, and not all
    digits, which commands read as a snapshot's number (a snapshot named
    12 could not be named).  Raises UserError.  Records stored before this
    rule keep their names (decode uses check_name)."""
    check_name(name)
    if name.isdigit():
        raise UserError(f"bad snapshot name {name!r}: all digits reads as a snapshot's number; "
                        "add a letter or a '-'")
    return name


def encode(snapshot: Snapshot, volume_uuid: str) -> bytes:
    meta = json.dumps(snapshot.metadata(volume_uuid), sort_keys=True).encode()
    return HEADER.pack(b"BDKS", VERSION, len(meta)) + meta + b"".join(snapshot.page_hashes)


def decode(data: bytes, volume_uuid: str, page_count: int) -> Snapshot:
    """Raises CorruptData for a damaged record, ForeignObject for another volume's."""
    if len(data) < HEADER.size:
        raise CorruptData("snapshot record is truncated")
    magic, version, meta_len = HEADER.unpack_from(data)
    if magic != b"BDKS" or version != VERSION:
        raise CorruptData("not a snapshot record of a known version")
    body = data[HEADER.size + meta_len:]
    try:
        meta = json.loads(data[HEADER.size:HEADER.size + meta_len])
        if meta["uuid"] != volume_uuid:
            raise ForeignObject("snapshot record belongs to another volume")
        epoch, seq = meta["root"]
        snapshot = Snapshot(int(meta["number"]), check_name(meta["name"]), meta["type"], meta["started"],
                            meta["completed"], (int(epoch), int(seq)), [], int(meta["changed_blocks"]),
                            int(meta["new_bytes"]), bool(meta.get("named", False)))
    except ForeignObject:
        raise
    except (ValueError, KeyError, TypeError, UserError):
        raise CorruptData("snapshot record's metadata is damaged") from None
    if snapshot.type not in TYPES:
        raise CorruptData(f"snapshot record has an unknown type {snapshot.type!r}")
    if len(body) != page_count * HASH_SIZE:
        raise CorruptData(f"snapshot record keeps {len(body) // HASH_SIZE} pages, expected {page_count}")
    hashes = [body[i:i + HASH_SIZE] for i in range(0, len(body), HASH_SIZE)]
    return Snapshot(**{**snapshot.__dict__, "page_hashes": hashes})


class SnapshotRecords:
    """Reads and writes one volume's snapshot records."""

    def __init__(self, store: ObjectStore, codec: Codec, volume_uuid: str, page_count: int) -> None:
        self.store, self.codec, self.uuid, self.page_count = store, codec, volume_uuid, page_count

    @classmethod
    def of(cls, store: ObjectStore, record) -> "SnapshotRecords":
        """The snapshot records of the volume with this VolumeRecord."""
        pages = -(-record.block_count // record.page_entries)
        return cls(store, record.codec(), record.uuid, pages)

    def numbers(self) -> list[int]:
        """The numbers of the stored records, ascending (not of placeholders)."""
        return [n for n, size in self._stored() if size]

    def _stored(self) -> list[tuple[int, int]]:
        """(number, size in bytes) of every key under snapshots/, ascending;
        size 0: a placeholder (see delete)."""
        return sorted((n, size) for k, size in self.store.list_sizes(layout.SNAPSHOTS)
                      if (n := layout.number_of_snapshot_key(k)) is not None)

    def read(self, number: int) -> Snapshot:
        """Raises NotFound (also for a deleted one's placeholder), CorruptData
        (naming the key) or ForeignObject."""
        key = layout.snapshot_key(number)
        data = self.store.get(key)
        if not data:
            raise NotFound(key, self.store.key_url(key))
        try:
            snapshot = decode(self.codec.unpack(data, key), self.uuid, self.page_count)
        except CorruptData as e:
            raise e.at(self.store.key_url(key)) from None
        if snapshot.number != number:
            raise CorruptData(f"it names itself snapshot {snapshot.number}").at(self.store.key_url(key))
        return snapshot

    def list(self) -> list[Snapshot]:
        """Every snapshot of this volume, oldest first (read in parallel).
        Raises CorruptData naming a damaged record."""
        snapshots, damaged = self.read_all()
        if damaged:
            raise next(iter(damaged.values()))
        return snapshots

    def read_all(self) -> tuple[list[Snapshot], dict[int, CorruptData]]:
        """(every readable snapshot of this volume, oldest first; the
        damaged records' numbers -> their CorruptData), read in parallel."""
        def read_own(number: int) -> Snapshot | CorruptData | None:
            try:
                return self.read(number)
            except (ForeignObject, NotFound):  # another volume's, or deleted meanwhile
                return None
            except CorruptData as e:
                return e

        with ThreadPoolExecutor(FETCH_PARALLELISM) as pool:
            numbers = self.numbers()
            found = list(pool.map(read_own, numbers))
        return ([s for s in found if isinstance(s, Snapshot)],
                {n: e for n, e in zip(numbers, found) if isinstance(e, CorruptData)})

    def kept(self, damaged_ok: bool = False) -> tuple[bool, set[bytes], list[int]]:
        """What a writer must keep for the snapshots: (whether any exists,
        the pages they keep, the numbers of damaged records).  A damaged
        record's pages are unknown, so while one exists every page stored
        counts as kept; raises its CorruptData unless `damaged_ok`."""
        snapshots, damaged = self.read_all()
        if damaged and not damaged_ok:
            raise next(iter(damaged.values()))
        pages = {h for s in snapshots for h in s.page_hashes} - {ZERO_HASH}
        if damaged:
            pages |= {h for key in self.store.list(layout.PAGES) if (h := layout.hash_of_page_key(key)) is not None}
        return bool(snapshots or damaged), pages, sorted(damaged)

    def find(self, name: str) -> Snapshot:
        """The snapshot of that name (or number, or Latest: the newest);
        raises UserError if none."""
        snapshots = self.list()
        if name == "Latest" and snapshots:
            return snapshots[-1]
        for snapshot in snapshots:
            if snapshot.name == name or name == str(snapshot.number):
                return snapshot
        raise UserError(f"no snapshot named {name!r}")

    def write(self, root: tuple[int, int], page_hashes: list[bytes], *, name: str | None = None,
              type: str = "manual", started: float | None = None, changed_blocks: int = 0,
              new_bytes: int = 0, guard: DeleteGuard | None = None) -> Snapshot:
        """Store a new snapshot keeping the map of `root` (whose pages,
        and the blocks they name, must be durable), numbered one above
        every record stored.  `guard` checks each delete request (of
        placeholders, see delete).  Raises UserError for a bad or taken name."""
        started = time.time() if started is None else started
        if len(page_hashes) != self.page_count:
            raise ValueError(f"{len(page_hashes)} page hashes for a map of {self.page_count} pages")
        if type not in TYPES:
            raise ValueError(f"unknown snapshot type {type!r}")
        taken = {s.name for s in self.list()}
        named = name is not None
        if named:
            check_new_name(name)
            if name in taken:
                raise UserError(f"a snapshot named {name!r} exists already")
        else:  # the start time, and -2, -3... for more in the same second
            base = default_name(started) + ("-pre-restore" if type == "pre-restore" else "")
            name = next(n for n in [base] + [f"{base}-{i}" for i in range(2, len(taken) + 2)] if n not in taken)
        stored = self._stored()
        # Above damaged, foreign and deleted records too: keys are never reused.
        number = max([0] + [n for n, _ in stored]) + 1
        for _ in range(NUMBER_ATTEMPTS):
            snapshot = Snapshot(number, name, type, utc(started), utc(time.time()), root, list(page_hashes),
                                changed_blocks, new_bytes, named)
            key = layout.snapshot_key(number)
            if self.store.put(key, self.codec.pack(encode(snapshot, self.uuid), key), if_absent=True):
                placeholders = [layout.snapshot_key(n) for n, size in stored if not size]
                if placeholders:  # a higher key keeps their numbers taken now
                    self.store.delete(placeholders, guard=guard)
                return snapshot
            number += 1
        raise UserError("other writers keep taking the next snapshot number; try again")

    def delete(self, number: int, guard: DeleteGuard | None = None) -> None:
        """Delete a snapshot's record.  The highest-numbered key is replaced
        by an empty placeholder instead, so that its number is never given
        to another snapshot: a delete request of the old record that lands
        late (latedeletes.py) must not remove a new one."""
        stored = self._stored()
        if stored and number == stored[-1][0]:
            self.store.put(layout.snapshot_key(number), b"")
        else:
            self.store.delete([layout.snapshot_key(number)], guard=guard)

