"""Block and metadata codec: pure functions on bytes.

A block becomes (content hash, framed object), or (ZERO_HASH, None) when it
is all zeros, because zero blocks are never stored.  The content hash is
BLAKE3-256 of the plaintext block; it names the object, so identical blocks
are stored once.  BLAKE3 is cryptographic, has a keyed mode for encrypted
volumes, runs at several GB/s on one core and releases the GIL, so every
read can verify its block at little cost (BLAKE2b was a third of the read
path's CPU).  Objects are framed (see `_hot.pyx`: magic, version, flags,
lengths and an xxh3 checksum of the payload) and optionally zstd-compressed.
"""
import queue

import blake3
import zstandard

from ..errors import CorruptData
from ._hot import CorruptObject, frame, is_zero, unframe

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
HASH_NAME = "blake3-256"
FLAG_ZSTD = 0x01
COMPRESSIONS = ("zstd", "none")


def content_hash(data) -> bytes:
    """BLAKE3-256 of the block (the GIL is released while hashing)."""
    return blake3.blake3(data).digest(HASH_SIZE)


class Codec:
    """Encodes and decodes blocks and metadata objects.

    zstd (de)compressor objects must never be shared by two threads at once,
    and FUSE calls arrive on threads created in C where `threading.local`
    does not persist, so instances are kept in a pool and borrowed per call.
    """

    def __init__(self, compression: str = "zstd", level: int = 1) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = compression
        self.level = level
        self._compressors: queue.SimpleQueue = queue.SimpleQueue()
        self._decompressors: queue.SimpleQueue = queue.SimpleQueue()

    def encode_block(self, data) -> tuple[bytes, bytes | None]:
        """(hash, object) for a block; (ZERO_HASH, None) for a zero block."""
        if is_zero(data):
            return ZERO_HASH, None
        return content_hash(data), self.pack(data)

    def decode_block(self, obj: bytes, expected_hash: bytes, block_size: int):
        """The block's bytes (bytes or a read-only view into `obj`), after
        checking framing, length and content hash."""
        data = self._unpack_view(obj)
        if len(data) != block_size:
            raise CorruptData(f"block {expected_hash.hex()[:16]} has {len(data)} bytes, expected {block_size}")
        if content_hash(data) != expected_hash:
            raise CorruptData(f"block {expected_hash.hex()[:16]} does not match its content hash")
        return data

    def pack(self, data) -> bytes:
        """Frame `data`, compressed when that makes it smaller."""
        raw_len = len(data)
        if self.compression == "zstd":
            compressed = self._compress(data)
            if len(compressed) < raw_len:
                return frame(compressed, FLAG_ZSTD, raw_len)
        return frame(data, 0, raw_len)

    def unpack(self, obj: bytes) -> bytes:
        """The bytes `pack` was given; raises CorruptData on any damage."""
        return bytes(self._unpack_view(obj))

    def _unpack_view(self, obj: bytes):
        """Like `unpack`, but an uncompressed payload stays a view into `obj`
        (no copy of a whole block on the read path)."""
        try:
            flags, raw_len, payload = unframe(obj)
        except CorruptObject as e:
            raise CorruptData(str(e)) from None
        if flags & ~FLAG_ZSTD:
            raise CorruptData(f"unknown object flags {flags:#x}")
        if not flags & FLAG_ZSTD:
            return payload
        data = self._decompress(payload, raw_len)
        if len(data) != raw_len:
            raise CorruptData("decompressed length does not match the header")
        return data

    def _compress(self, data) -> bytes:
        try:
            compressor = self._compressors.get_nowait()
        except queue.Empty:
            compressor = zstandard.ZstdCompressor(level=self.level, write_content_size=True)
        try:
            return compressor.compress(data)
        finally:
            self._compressors.put(compressor)

    def _decompress(self, payload, raw_len: int) -> bytes:
        try:
            decompressor = self._decompressors.get_nowait()
        except queue.Empty:
            decompressor = zstandard.ZstdDecompressor()
        try:
            return decompressor.decompress(payload, max_output_size=raw_len)
        except zstandard.ZstdError as e:
            raise CorruptData(f"zstd: {e}") from None
        finally:
            self._decompressors.put(decompressor)
