"""The key layout of a volume inside its store (documented in FORMAT.md).

Map roots and journals are named by the writer's epoch (the number of the
lease it mounted under, see lock.py) and a sequence number, both 16 hex
digits, so keys sort in the order they were written and two writers can
never write the same name.  Keys of the first format (sequence only) are
read as epoch 0.

An alias is a second copy of a block or page, `<hash>-<number>`, under a
name used once: the number is the writer's epoch << 32 plus a count.  It
is written while an older delete of the plain name may still land
(latedeletes.py), and read when the plain name has gone.
"""
import re

RECORD = "volume"
LEASES = "lock/"
LEGACY_LOCK = "lock"  # the single lock object of record version 1
BLOCKS = "blocks/"
PAGES = "map/pages/"
ROOTS = "map/roots/"
JOURNAL = "map/journal/"
SNAPSHOTS = "snapshots/"

_HEX16 = "[0-9a-f]{16}"
_HEX64 = "[0-9a-f]{64}"
_SEQ_NAME = re.compile(rf"^(?:({_HEX16})-)?({_HEX16})$")
_NUMBER_NAME = re.compile(rf"^({_HEX16})$")  # leases and snapshot records
_BLOCK_KEY = re.compile(rf"^blocks/([0-9a-f]{{2}})/({_HEX64})$")
_PAGE_KEY = re.compile(rf"^map/pages/{_HEX64}$")
_BLOCK_ALIAS = re.compile(rf"^blocks/([0-9a-f]{{2}})/({_HEX64})-({_HEX16})$")
_PAGE_ALIAS = re.compile(rf"^map/pages/({_HEX64})-({_HEX16})$")


def block_key(content_hash: bytes) -> str:
    h = content_hash.hex()
    return f"{BLOCKS}{h[:2]}/{h}"


def hash_of_block_key(key: str) -> bytes | None:
    """The content hash a block key names, or None for any other key."""
    m = _BLOCK_KEY.match(key)
    if m is None or m.group(2)[:2] != m.group(1):
        return None
    return bytes.fromhex(m.group(2))


def page_key(page_hash: bytes) -> str:
    return PAGES + page_hash.hex()


def hash_of_page_key(key: str) -> bytes | None:
    return bytes.fromhex(key[len(PAGES):]) if _PAGE_KEY.match(key) else None


def block_alias_key(content_hash: bytes, number: int) -> str:
    return f"{block_key(content_hash)}-{number:016x}"


def page_alias_key(page_hash: bytes, number: int) -> str:
    return f"{page_key(page_hash)}-{number:016x}"


def alias_of(key: str) -> tuple[str, bytes, int] | None:
    """("block" or "page", hash, number) of an alias key, or None."""
    m = _BLOCK_ALIAS.match(key)
    if m is not None and m.group(2)[:2] == m.group(1):
        return "block", bytes.fromhex(m.group(2)), int(m.group(3), 16)
    m = _PAGE_ALIAS.match(key)
    if m is not None:
        return "page", bytes.fromhex(m.group(1)), int(m.group(2), 16)
    return None


def root_key(epoch: int, seq: int) -> str:
    return f"{ROOTS}{epoch:016x}-{seq:016x}"


def journal_key(epoch: int, seq: int) -> str:
    return f"{JOURNAL}{epoch:016x}-{seq:016x}"


def snapshot_key(number: int) -> str:
    return f"{SNAPSHOTS}{number:016x}"


def number_of_snapshot_key(key: str) -> int | None:
    """The number a snapshot record's key names, or None for any other key."""
    if not key.startswith(SNAPSHOTS):
        return None
    m = _NUMBER_NAME.match(key[len(SNAPSHOTS):])
    return int(m.group(1), 16) if m else None


def lease_key(epoch: int) -> str:
    return f"{LEASES}{epoch:016x}"


# Epochs and sequence numbers this far below 2^64 leave room for log
# numbers (epoch << 32) and for counting on; a key claiming more is not ours.
MAX_EPOCH = (1 << 31) - 1
MAX_SEQ = (1 << 62) - 1


def name_of(key: str, prefix: str) -> tuple[int, int] | None:
    """(epoch, seq) of a root or journal key under `prefix`, or None for a
    key that is not named as ours (an editor backup, a console "folder")."""
    if not key.startswith(prefix):
        return None
    m = _SEQ_NAME.match(key[len(prefix):])
    if m is None:
        return None
    epoch, seq = int(m.group(1) or "0", 16), int(m.group(2), 16)
    return (epoch, seq) if epoch <= MAX_EPOCH and seq <= MAX_SEQ else None


def epoch_of_lease_key(key: str) -> int | None:
    if not key.startswith(LEASES):
        return None
    m = _NUMBER_NAME.match(key[len(LEASES):])
    epoch = int(m.group(1), 16) if m else None
    return epoch if epoch is not None and epoch <= MAX_EPOCH else None


def is_volume_key(key: str) -> bool:
    """Whether `key` is one the documented layout names: only such keys
    are ever deleted by bucketdisk."""
    return (key in (RECORD, LEGACY_LOCK)
            or hash_of_block_key(key) is not None
            or hash_of_page_key(key) is not None
            or alias_of(key) is not None
            or name_of(key, ROOTS) is not None
            or name_of(key, JOURNAL) is not None
            or epoch_of_lease_key(key) is not None
            or number_of_snapshot_key(key) is not None)
