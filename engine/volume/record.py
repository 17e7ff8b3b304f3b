"""The self-describing volume record: everything needed to mount a volume."""
import json
import time
import uuid
from dataclasses import asdict, dataclass, field

from ..codec.block import COMPRESSIONS, HASH_NAME
from ..errors import NotFound, UserError
from ..store.base import ObjectStore
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

    @property
    def block_count(self) -> int:
        return self.size // self.block_size

    def to_bytes(self) -> bytes:
        return (json.dumps(asdict(self), indent=2, sort_keys=True) + "\n").encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> "VolumeRecord":
        try:
            fields = json.loads(data)
            if fields.get("format") != FORMAT_NAME:
                raise ValueError("not a bucketdisk volume record")
            record = cls(**fields)
        except (ValueError, TypeError) as e:
            raise UserError(f"unreadable volume record: {e}") from None
        if record.format_version > FORMAT_VERSION:
            raise UserError(
                f"volume format version {record.format_version} is newer than this bucketdisk "
                f"understands ({FORMAT_VERSION}); upgrade bucketdisk"
            )
        record.validate()
        return record

    def validate(self) -> None:
        validate_geometry(self.size, self.block_size)
        if self.hash != HASH_NAME:
            raise UserError(f"unsupported hash {self.hash!r}")
        if self.compression not in COMPRESSIONS:
            raise UserError(f"unsupported compression {self.compression!r}")
        if self.page_entries <= 0:
            raise UserError("volume record has a bad page size")


def validate_geometry(size: int, block_size: int) -> None:
    """Refuse sizes a volume cannot have, with the reason in one line."""
    if block_size & (block_size - 1) or not MIN_BLOCK_SIZE <= block_size <= MAX_BLOCK_SIZE:
        raise UserError(f"block size must be a power of two from 4K to 64M, not {block_size}")
    if size <= 0:
        raise UserError("volume size must be positive")
    if size % block_size:
        raise UserError(f"volume size {size} is not a multiple of the block size {block_size}")
    if size // block_size > MAX_BLOCKS:
        raise UserError(f"volume of {size // block_size} blocks is too large; use a larger block size")


def read_record(store: ObjectStore) -> VolumeRecord | None:
    """The volume record in `store`, or None when there is none.

    Raises UserError for a record this version cannot read."""
    try:
        return VolumeRecord.from_bytes(store.get(RECORD_KEY))
    except NotFound:
        return None
