"""The key layout of a volume inside its store (documented in FORMAT.md)."""

RECORD = "volume"
LOCK = "lock"
BLOCKS = "blocks/"
PAGES = "map/pages/"
ROOTS = "map/roots/"
JOURNAL = "map/journal/"


def block_key(content_hash: bytes) -> str:
    h = content_hash.hex()
    return f"{BLOCKS}{h[:2]}/{h}"


def hash_of_block_key(key: str) -> bytes:
    return bytes.fromhex(key.rsplit("/", 1)[1])


def page_key(page_hash: bytes) -> str:
    return PAGES + page_hash.hex()


def root_key(seq: int) -> str:
    return f"{ROOTS}{seq:016x}"


def journal_key(seq: int) -> str:
    return f"{JOURNAL}{seq:016x}"


def seq_of_key(key: str) -> int:
    return int(key.rsplit("/", 1)[1], 16)
