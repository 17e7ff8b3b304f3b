"""The self-describing volume record: everything needed to mount a volume."""
import json
import os
import time
import uuid
from dataclasses import dataclass, field, fields as dataclass_fields

from ..codec.block import COMPRESSIONS, HASH_NAME, MAX_LEVEL, Codec
from ..codec.keys import KeySource, VolumeKeys
from ..errors import DamagedRecord, NotFound, UserError
from .unlock import ENCRYPTED_VERSION, encryption_problem, unlock
from ..store.base import ObjectStore
from ..store.names import shown
from .layout import RECORD as RECORD_KEY

FORMAT_NAME = "bucketdisk"
# Version 2: writers take a lease of their own epoch (lock/<epoch>) and name
# map objects by it; version 1 volumes (one `lock` object) are read and
# upgraded by their first writable mount.
FORMAT_VERSION = 2
MIN_BLOCK_SIZE = 4 << 10
MAX_BLOCK_SIZE = 64 << 20
MAX_BLOCKS = 1 << 32
# A page of 4096 entries is 128 KiB of hashes: large enough that a 1 TiB
# volume of 1 MiB blocks has only 256 pages, small enough that a checkpoint
# after scattered writes rewrites little.
PAGE_ENTRIES = 4096

# What a volume's block map costs in memory, and how much of it a machine
# may give.  The map is one bytearray of 32 bytes per block (blockmap.py),
# and each checkpoint copies it to scan without the lock (BlockMap.entries),
# so a mount holds two at its peak: 64 bytes per block, 64 MiB per million
# blocks.  It may take at most half of the machine's memory (or of its
# cgroup's limit, when lower): the other half is for the block cache
# (--cache-size), the kernel's page cache under the filesystem inside, and
# whatever else the machine runs.  A map past that would not fail politely
# (MemoryError, or the OOM killer taking the daemon with unstored data), so
# `create` refuses such a volume and `mount`, `info` and `gc` refuse to
# open one before allocating anything.
MAP_ENTRY_BYTES = 32
MAP_COPIES = 2
MEMORY_SHARE = 0.5
_UNLIMITED = 1 << 60  # cgroup v1 says "no limit" with a number near 2**63


@dataclass(frozen=True)
class VolumeRecord:
    size: int
    block_size: int
    uuid: str = field(default_factory=lambda: uuid.uuid4().hex)
    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    hash: str = HASH_NAME
    compression: str = "zstd"
    page_entries: int = PAGE_ENTRIES
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    # Made by `create --force` in place of another volume, whose late deletes
    # may land on this one for a while (latedeletes.py).  Stored only when true.
    replaced: bool = False
    # zstd's level for new objects (1 to MAX_LEVEL); stored only when not 1.
    # Any level reads any object: it is a writer's choice, `mount
    # --compress-level` overrides it.
    compression_level: int = 1
    # An encrypted volume's cipher, KDF parameters and wrapped data key
    # (unlock.py), and the MAC of every other field under a key derived
    # from the data key: nobody without the key changes the geometry.
    encryption: dict | None = None
    mac: str | None = None
    # The unwrapped keys, once unlock.unlock() has opened the record: never stored.
    keys: VolumeKeys | None = field(default=None, compare=False, repr=False)

    @property
    def block_count(self) -> int:
        return self.size // self.block_size

    @property
    def encrypted(self) -> bool:
        return self.encryption is not None

    def codec(self, level: int | None = None) -> Codec:
        """The codec of this volume's objects; `level`: zstd's, for the
        objects it writes (default the record's).  An encrypted volume's
        record must have been unlocked (unlock.py)."""
        if self.encrypted and self.keys is None:
            raise ValueError("an encrypted volume's record must be unlocked first")
        return Codec(self.compression, level or self.compression_level, self.keys, self.uuid)

    def stored_fields(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclass_fields(self) if f.name in _FIELD_NAMES
                and not (f.name in OPTIONAL_FIELDS and getattr(self, f.name) == OPTIONAL_FIELDS[f.name])}

    def to_bytes(self) -> bytes:
        return (json.dumps(self.stored_fields(), indent=2, sort_keys=True) + "\n").encode()

    def authenticated_bytes(self) -> bytes:
        """What the record's MAC covers: every stored field but the MAC, in
        one canonical form."""
        fields = {name: value for name, value in self.stored_fields().items() if name != "mac"}
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_bytes(cls, data: bytes, where: str = RECORD_KEY) -> "VolumeRecord":
        """The record stored as `data` at `where` (its URL, for messages).

        Every field is checked here, once, so that every command refuses a
        damaged or hand-edited record alike, before using any of it: raises
        DamagedRecord (a UserError), one line naming `where` and the first
        bad field; UserError for a newer format version."""
        fields = _record_fields(data, where)
        for name, check in _FIELD_CHECKS.items():
            problem = check(fields[name])
            if problem is not None:
                raise DamagedRecord(f"the volume record {where} is not valid: \"{name}\" {problem}")
        problem = _geometry_problem(fields["size"], fields["block_size"]) or _encryption_problem(fields)
        if problem is not None:
            raise DamagedRecord(f"the volume record {where} is not valid: {problem}")
        return cls(**fields)


# -- checking a stored record ---------------------------------------------------------

MAX_PAGE_ENTRIES = 1 << 20  # a page of 32 MiB of hashes; PAGE_ENTRIES is 4096
_FIELD_NAMES = tuple(f for f in VolumeRecord.__dataclass_fields__ if f != "keys")
# field -> its value when absent (and then not stored)
OPTIONAL_FIELDS = {"replaced": False, "compression_level": 1, "encryption": None, "mac": None}


def _record_fields(data: bytes, where: str) -> dict:
    """The fields of a stored record, all present and none unknown; raises
    UserError for what is not a record, or a newer version's."""
    bad = f"the volume record {where} is not valid"
    try:
        fields = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise DamagedRecord(f"{bad}: it is not JSON") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT_NAME:
        raise DamagedRecord(f"{bad}: it is not a bucketdisk volume record (no \"format\": \"{FORMAT_NAME}\")")
    version = fields.get("format_version")
    if _is_int(version) and version > ENCRYPTED_VERSION:  # its fields may differ: say so before checking them
        raise UserError(f"volume format version {version} of {where} is newer than this bucketdisk "
                        f"understands ({ENCRYPTED_VERSION}); upgrade bucketdisk")
    unknown = sorted(set(fields) - set(_FIELD_NAMES))
    if unknown:
        raise DamagedRecord(f"{bad}: unknown field \"{shown(unknown[0][:40])}\"")
    missing = [name for name in _FIELD_NAMES if name not in fields and name not in OPTIONAL_FIELDS]
    if missing:  # never a default: a made-up uuid would read past every map object
        raise DamagedRecord(f"{bad}: the field \"{missing[0]}\" is missing")
    return {**OPTIONAL_FIELDS, **fields}


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shown_value(value) -> str:
    return shown(json.dumps(value)[:40])


def _whole(low: int, high: int, wanted: str):
    """A check: a whole number from `low` to `high`, described as `wanted`."""
    def check(value) -> str | None:
        if not _is_int(value) or not low <= value <= high:
            return f"must be {wanted}, not {_shown_value(value)}"
        return None
    return check


def _one_of(*allowed: str):
    def check(value) -> str | None:
        if value not in allowed:
            return f"must be {' or '.join(map(json.dumps, allowed))}, not {_shown_value(value)}"
        return None
    return check


def _uuid(value) -> str | None:
    try:
        uuid.UUID(value)
    except (TypeError, ValueError, AttributeError):
        return f"must be a UUID, not {_shown_value(value)}"
    return None


def _text(value) -> str | None:
    return None if isinstance(value, str) else f"must be a string, not {_shown_value(value)}"


_FIELD_CHECKS = {
    "format": _one_of(FORMAT_NAME),
    "format_version": _whole(1, ENCRYPTED_VERSION, f"a whole number from 1 to {ENCRYPTED_VERSION}"),
    "uuid": _uuid,
    "size": _whole(1, 1 << 63, "a positive whole number of bytes"),  # its block count is checked next
    "block_size": _whole(MIN_BLOCK_SIZE, MAX_BLOCK_SIZE,
                         f"a whole number of bytes from {MIN_BLOCK_SIZE} to {MAX_BLOCK_SIZE}"),
    "hash": _one_of(HASH_NAME),
    "compression": _one_of(*COMPRESSIONS),
    "page_entries": _whole(1, MAX_PAGE_ENTRIES, f"a whole number from 1 to {MAX_PAGE_ENTRIES}"),
    "created": _text,
    "compression_level": _whole(1, MAX_LEVEL, f"a whole number from 1 to {MAX_LEVEL}"),
    "replaced": lambda value: None if isinstance(value, bool) else f"must be true or false, not {_shown_value(value)}",
    "encryption": lambda value: None if value is None else encryption_problem(value),
    "mac": lambda value: None if value is None or _is_hex_mac(value) else "must be 64 hex digits",
}


def _is_hex_mac(value) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def _encryption_problem(fields: dict) -> str | None:
    """What ties the encryption fields to the version, said of the record."""
    encrypted = fields["encryption"] is not None
    if encrypted != (fields["mac"] is not None):
        return "\"encryption\" and \"mac\" go together"
    if encrypted != (fields["format_version"] == ENCRYPTED_VERSION):
        return f"format version {ENCRYPTED_VERSION} is that of encrypted volumes, and only theirs"
    return None


def _geometry_problem(size: int, block_size: int) -> str | None:
    """What validate_geometry refuses, said of the record's fields (each
    already a whole number in its range)."""
    if block_size & (block_size - 1):
        return f"\"block_size\" must be a power of two, not {block_size}"
    if size % block_size:
        return f"\"size\" {size} is not a multiple of \"block_size\" {block_size}"
    if size // block_size > MAX_BLOCKS:
        return f"\"size\" holds {size // block_size} blocks, more than {MAX_BLOCKS}"
    return None


def validate_geometry(size: int, block_size: int) -> None:
    """Refuse sizes a volume cannot have, with the reason in one line."""
    if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise UserError(f"block size must be a power of two from 4K to 64M, not {block_size}")
    if size <= 0:
        raise UserError("volume size must be positive")
    if size % block_size:
        shown_block = f"{block_size >> 20}M" if block_size >= 1 << 20 else f"{block_size >> 10}K"
        raise UserError(f"volume size {size} (bytes) is not a multiple of the block size, {shown_block} "
                        f"({block_size} bytes)")
    if size // block_size > MAX_BLOCKS:
        if size // MAX_BLOCK_SIZE > MAX_BLOCKS:
            raise UserError(f"volume size {size} is too large: at most {MAX_BLOCKS} blocks of at most "
                            f"{MAX_BLOCK_SIZE >> 20}M ({MAX_BLOCKS * MAX_BLOCK_SIZE >> 50}P)")
        raise UserError(f"volume of {size // block_size} blocks is too large; use a larger block size")


def read_record(store: ObjectStore) -> VolumeRecord | None:
    """The volume record in `store`, as stored (an encrypted one locked:
    see open_record), or None when there is none.

    Raises UserError, naming the record's URL and the field, for a record
    this version cannot read (VolumeRecord.from_bytes)."""
    try:
        data = store.get(RECORD_KEY)
    except NotFound:
        return None
    return VolumeRecord.from_bytes(data, store.key_url(RECORD_KEY))


def open_record(store: ObjectStore, keys: KeySource | None) -> VolumeRecord | None:
    """The volume record in `store`, unlocked with `keys` when it is
    encrypted (unlock.unlock), or None when there is none.  Raises
    UserError as read_record and unlock do."""
    record = read_record(store)
    return None if record is None else unlock(record, keys, store.url())


def map_memory(block_count: int) -> int:
    """Bytes a mount of `block_count` blocks needs for its block map at
    its peak (MAP_COPIES copies of MAP_ENTRY_BYTES per block)."""
    return block_count * MAP_ENTRY_BYTES * MAP_COPIES


def machine_memory() -> int:
    """Bytes of memory this process may use: MemTotal from /proc/meminfo
    (else the page count), lowered to the memory limit of its cgroup (v2
    memory.max up its hierarchy, v1 memory.limit_in_bytes) if one is set."""
    total = _meminfo_total()
    for limit in _cgroup_limits():
        total = min(total, limit)
    return total


def map_budget() -> int:
    """Bytes a block map may take on this machine (MEMORY_SHARE of it)."""
    return int(machine_memory() * MEMORY_SHARE)


def check_map_fits(size: int, block_size: int) -> None:
    """Refuse (UserError, one line) to create a volume whose block map
    would not fit in this machine's map budget; the line says how much the
    map needs and the smallest block size whose map would fit."""
    blocks = -(-size // block_size)
    need, budget = map_memory(blocks), map_budget()
    if need <= budget:
        return
    text = (f"a {human_size(size)} volume of {human_size(block_size)} blocks needs {human_size(need)} of memory "
            f"for its block map ({_map_rule()}), more than {_share()} of this machine's "
            f"{human_size(machine_memory())}; ")
    fitting = next((b for b in _powers_of_two(block_size * 2, MAX_BLOCK_SIZE)
                    if map_memory(-(-size // b)) <= budget), None)
    if fitting is None:
        text += f"even {human_size(MAX_BLOCK_SIZE)} blocks do not fit: make it smaller or use a larger machine"
    else:
        text += f"use --block-size {human_size(fitting)} or larger"
        if size % fitting:
            text += " (and a size that is a multiple of it)"
    raise UserError(text)


def check_record_fits(record: "VolumeRecord") -> None:
    """Refuse (UserError, one line) to open a volume whose block map would
    not fit in this machine's map budget (one made on a larger machine, or
    by a version without this rule), before anything is allocated."""
    need = map_memory(record.block_count)
    if need <= map_budget():
        return
    raise UserError(f"this volume ({human_size(record.size)} in {human_size(record.block_size)} blocks) needs "
                    f"{human_size(need)} of memory for its block map ({_map_rule()}), more than {_share()} of "
                    f"this machine's {human_size(machine_memory())}; open it on a machine with at least "
                    f"{human_size(int(need / MEMORY_SHARE))} of memory")


def _map_rule() -> str:
    return f"{MAP_COPIES} x {MAP_ENTRY_BYTES} bytes per block"


def _share() -> str:
    return "half" if MEMORY_SHARE == 0.5 else f"{MEMORY_SHARE:.0%}"


def _powers_of_two(low: int, high: int):
    size = low
    while size <= high:
        yield size
        size *= 2


def human_size(n: int) -> str:
    """A byte count in binary units: 4K, 128K, 23.5G, 256G."""
    for unit, scale in (("T", 1 << 40), ("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= scale:
            value = n / scale
            return f"{value:.0f}{unit}" if value == int(value) or value >= 100 else f"{value:.1f}{unit}"
    return str(n)


def _meminfo_total() -> int:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError):
        return 1 << 62  # cannot tell: no limit from us


def _cgroup_limits() -> list[int]:
    """Memory limits (bytes) of this process's cgroups that are set."""
    limits = []
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return limits
    for line in lines:
        _, controllers, path = (line.split(":", 2) + ["", ""])[:3]
        if controllers == "":  # v2: the limit of each cgroup up to the root counts
            while True:
                limits += _read_limit(f"/sys/fs/cgroup{path.rstrip('/')}/memory.max")
                if path in ("/", ""):
                    break
                path = os.path.dirname(path)
        elif "memory" in controllers.split(","):
            limits += _read_limit(f"/sys/fs/cgroup/memory{path.rstrip('/')}/memory.limit_in_bytes")
    return limits


def _read_limit(path: str) -> list[int]:
    try:
        with open(path) as f:
            text = f.read().strip()
    except OSError:
        return []
    if not text.isdigit() or int(text) >= _UNLIMITED:
        return []  # "max", or v1's "no limit"
    return [int(text)]
