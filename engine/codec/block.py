"""Block and metadata codec: pure functions on bytes.

A block becomes (content hash, framed object), or (ZERO_HASH, None) when it
is all zeros, because zero blocks are never stored.  The content hash is
BLAKE3-256 of the plaintext block; it names the object, so identical blocks
are stored once.  BLAKE3 is cryptographic, has a keyed mode for encrypted
volumes, runs at several GB/s on one core and releases the GIL, so every
read can verify its block at little cost (BLAKE2b was a third of the read
path's CPU).  Objects are framed (see `_hot.pyx`: magic, version, flags,
lengths and an xxh3 checksum of the payload) and optionally zstd-compressed.

Buffers: every buffer that holds a block or a block's object is allocated
at one size, the block plus a header (`object_buffer`, `block_buffer`): a
block is compressed into one, and fetched into one (`BlockReader`: an
uncompressed object is read straight into it, a compressed one
decompressed into it as it arrives, a fixed-size piece at a time).  glibc
then reuses a freed buffer for the next one instead of growing its heap
(a freed buffer of 1 MiB + 1 byte cannot hold a fetched 1 MiB + 24 object),
and a fetch needs no buffer besides the block's: the daemon's memory
stays what the block device counts (see device/budget.py).
"""
import os
import queue
import threading

import blake3
import zstandard

from ..errors import CorruptData
from ._hot import HEADER_SIZE, CorruptObject, Xxh3, frame, frame_header, is_zero, read_header, unframe

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
HASH_NAME = "blake3-256"
FLAG_ZSTD = 0x01
COMPRESSIONS = ("zstd", "none")
# zstd levels a volume may choose: 20-22 ("ultra") want windows of up to
# 128 MiB per context, past what a block needs and what the cache allows.
MAX_LEVEL = 19
# At most this many (de)compressions run at once: each holds a zstd context
# (about 1.4 MiB to compress at level 1, 0.1 MiB to decompress, whatever the
# block size above 1 MiB), so their memory stays fixed whatever --threads is;
# more at once than cores would not run any faster.
CONTEXTS = max(4, os.cpu_count() or 1)
STAGE = 256 << 10  # bytes of a compressed object a BlockReader takes at a time


def content_hash(data) -> bytes:
    """BLAKE3-256 of the block (the GIL is released while hashing)."""
    return blake3.blake3(data).digest(HASH_SIZE)


def object_buffer(block_size: int) -> bytearray:
    """A zeroed buffer for one object of a `block_size` block: a header and
    the block (see Buffers above)."""
    return bytearray(block_size + HEADER_SIZE)


def block_buffer(block_size: int, source=None) -> bytearray:
    """A `block_size` bytearray of zeros, or a copy of `source` (exactly
    `block_size` bytes), allocated as `object_buffer` (see Buffers)."""
    buf = bytearray(block_size + HEADER_SIZE)
    if source is not None:
        buf[:block_size] = source
    del buf[block_size:]  # a shorter bytearray keeps its allocation
    return buf


class _Full(Exception):
    """A compressed block would not be smaller than the block."""


class _Sink:
    """Where a zstd stream writer puts its output: a fixed view, no further."""

    __slots__ = ("view", "size")

    def __init__(self, view: memoryview) -> None:
        self.view = view
        self.size = 0

    def write(self, chunk) -> int:
        end = self.size + len(chunk)
        if end > len(self.view):
            raise _Full
        self.view[self.size : end] = chunk
        self.size = end
        return len(chunk)


class Codec:
    """Encodes and decodes blocks and metadata objects.

    zstd (de)compressor objects must never be shared by two threads at once,
    and FUSE calls arrive on threads created in C where `threading.local`
    does not persist, so instances are kept in a pool and borrowed per call;
    at most CONTEXTS of each kind exist, and a caller waits for one.
    """

    def __init__(self, compression: str = "zstd", level: int = 1) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = compression
        self.level = level
        self._compressors: queue.SimpleQueue = queue.SimpleQueue()
        self._decompressors: queue.SimpleQueue = queue.SimpleQueue()
        self._compressing = threading.BoundedSemaphore(CONTEXTS)
        self._decompressing = threading.BoundedSemaphore(CONTEXTS)

    # -- blocks -------------------------------------------------------------------

    def encode_block(self, data) -> tuple[bytes, tuple | None]:
        """(hash, object) for a block; (ZERO_HASH, None) for a zero block.

        The object comes as pieces to store one after the other: the framed
        compressed block (one object_buffer), or a header and `data` itself,
        not a copy, when compression would not make it smaller; so `data`
        must not change until it is stored.  Besides `data`, this holds one
        object_buffer at most."""
        if is_zero(data):
            return ZERO_HASH, None
        return content_hash(data), self._pack_block(data)

    def _pack_block(self, data) -> tuple:
        raw_len = len(data)
        if self.compression == "zstd":
            out = object_buffer(raw_len)
            size = self._compress_into(data, memoryview(out)[HEADER_SIZE : HEADER_SIZE + raw_len - 1])
            if size is not None:
                payload = memoryview(out)[HEADER_SIZE : HEADER_SIZE + size]
                out[:HEADER_SIZE] = frame_header(payload, FLAG_ZSTD, raw_len)
                return (memoryview(out)[: HEADER_SIZE + size],)
            del out
        return frame_header(data, 0, raw_len), data

    def block_reader(self, block_size: int, expected_hash: bytes) -> "BlockReader":
        """A store sink (store.base.Sink) that decodes the object of the
        block `expected_hash` into a new block_buffer as it arrives; call
        `finish()` for the block, and `close()` in any case."""
        return BlockReader(self, block_size, expected_hash)

    def _compress_into(self, data, dest: memoryview) -> int | None:
        """Compress `data` into `dest`; the compressed size, or None when it
        would not fit (then it is not worth storing compressed)."""
        sink = _Sink(dest)
        with self._compressing:
            compressor = self._borrow(self._compressors, self._new_compressor)
            try:
                writer = compressor.stream_writer(sink, size=len(data), closefd=False)
                writer.write(data)
                writer.flush(zstandard.FLUSH_FRAME)
                return sink.size
            except _Full:
                return None  # the compressor starts afresh at its next stream
            finally:
                self._compressors.put(compressor)

    # -- metadata -------------------------------------------------------------------

    def pack(self, data) -> bytes:
        """Frame `data`, compressed when that makes it smaller, as one bytes
        object (for metadata; it holds up to three times `data` at once)."""
        raw_len = len(data)
        if self.compression == "zstd":
            compressed = self._compress(data)
            if len(compressed) < raw_len:
                return frame(compressed, FLAG_ZSTD, raw_len)
            del compressed
        return frame(data, 0, raw_len)

    def unpack(self, obj: bytes) -> bytes:
        """The bytes `pack` was given; raises CorruptData on any damage."""
        flags, raw_len, payload = self._unframe(obj)
        if not flags & FLAG_ZSTD:
            return bytes(payload)
        data = self._decompress(payload, raw_len)
        if len(data) != raw_len:
            raise CorruptData("decompressed length does not match the header")
        return data

    @staticmethod
    def _unframe(obj):
        """(flags, raw_len, payload view) of a frame; raises CorruptData."""
        try:
            flags, raw_len, payload = unframe(obj)
        except CorruptObject as e:
            raise CorruptData(str(e)) from None
        if flags & ~FLAG_ZSTD:
            raise CorruptData(f"unknown object flags {flags:#x}")
        return flags, raw_len, payload

    def _compress(self, data) -> bytes:
        with self._compressing:
            compressor = self._borrow(self._compressors, self._new_compressor)
            try:
                return compressor.compress(data)
            finally:
                self._compressors.put(compressor)

    def _decompress(self, payload, raw_len: int) -> bytes:
        with self._decompressing:
            decompressor = self._borrow(self._decompressors, zstandard.ZstdDecompressor)
            try:
                return decompressor.decompress(payload, max_output_size=raw_len)
            except zstandard.ZstdError as e:
                raise CorruptData(f"zstd: {e}") from None
            finally:
                self._decompressors.put(decompressor)

    def _new_compressor(self) -> zstandard.ZstdCompressor:
        return zstandard.ZstdCompressor(level=self.level, write_content_size=True)

    @staticmethod
    def _borrow(pool: queue.SimpleQueue, make):
        """An idle instance from `pool`, or a new one from `make()` (the
        caller holds the pool's semaphore and puts it back)."""
        try:
            return pool.get_nowait()
        except queue.Empty:
            return make()


class BlockReader:
    """Decodes one block's object while a store reads it (a store Sink).

    The header comes first; then an uncompressed payload is read straight
    into the block, and a compressed one a STAGE at a time into a staging
    buffer, from which a zstd stream decompresses it into the block.  The
    payload's xxh3 is taken as it passes.  A compressed read holds one of
    the codec's CONTEXTS decompressors until `close`.
    """

    def __init__(self, codec: Codec, block_size: int, expected_hash: bytes) -> None:
        self.block = block_buffer(block_size)
        self._codec = codec
        self._block_size = block_size
        self._expected = expected_hash
        self._view = memoryview(self.block)
        self._header = bytearray(HEADER_SIZE)
        self._spare = memoryview(bytearray(1))  # takes the first byte too many
        self._staging: memoryview | None = None
        self._decompressor = None
        self.reset()

    def reset(self) -> None:
        self._got = 0            # bytes of the object so far
        self._flags = self._payload_len = self._checksum = 0
        self._hash = Xxh3()
        self._writer = None      # the zstd stream into the block, once compressed
        self._out = _Sink(self._view)

    def buffer(self) -> memoryview:
        if self._got < HEADER_SIZE:
            return memoryview(self._header)[self._got :]
        left = HEADER_SIZE + self._payload_len - self._got
        if not left:
            return self._spare
        if self._writer is None:
            return self._view[self._out.size : self._out.size + left]
        return self._staging[: min(STAGE, left)]

    def filled(self, count: int) -> None:
        if self._got < HEADER_SIZE:
            self._got += count
            if self._got == HEADER_SIZE:
                self._start_payload()
            return
        if self._got + count > HEADER_SIZE + self._payload_len:
            raise CorruptData(f"{self._name()}: object longer than its header says")
        self._got += count
        if self._writer is None:
            self._hash.update(self._view[self._out.size : self._out.size + count])
            self._out.size += count
            return
        piece = self._staging[:count]
        self._hash.update(piece)
        try:
            self._writer.write(piece)
        except _Full:
            raise CorruptData(f"{self._name()} decompresses to more than {self._block_size} bytes") from None
        except zstandard.ZstdError as e:
            raise CorruptData(f"zstd: {e}") from None

    def _start_payload(self) -> None:
        """Check the header; set up decompression for a compressed payload."""
        try:
            self._flags, raw_len, self._payload_len, self._checksum = read_header(self._header)
        except CorruptObject as e:
            raise CorruptData(f"{self._name()}: {e}") from None
        if self._flags & ~FLAG_ZSTD:
            raise CorruptData(f"unknown object flags {self._flags:#x}")
        if raw_len != self._block_size:
            raise CorruptData(f"{self._name()} has {raw_len} bytes, expected {self._block_size}")
        if not self._flags & FLAG_ZSTD:
            if self._payload_len != self._block_size:
                raise CorruptData(f"{self._name()} has {self._payload_len} bytes, expected {self._block_size}")
            return
        if self._decompressor is None:
            self._codec._decompressing.acquire()
            self._decompressor = self._codec._borrow(self._codec._decompressors, zstandard.ZstdDecompressor)
            self._staging = memoryview(bytearray(STAGE))
        self._writer = self._decompressor.stream_writer(self._out, closefd=False)

    def finish(self) -> bytearray:
        """The block, once the whole object has arrived; raises CorruptData
        unless framing, checksum, length and content hash hold."""
        if self._got != HEADER_SIZE + self._payload_len or self._got < HEADER_SIZE:
            raise CorruptData(f"{self._name()}: object shorter than its header says")
        if self._hash.digest() != self._checksum:
            raise CorruptData(f"{self._name()}: checksum mismatch")
        if self._out.size != self._block_size:
            raise CorruptData(f"{self._name()} decompresses to {self._out.size} bytes, expected {self._block_size}")
        if content_hash(self.block) != self._expected:
            raise CorruptData(f"{self._name()} does not match its content hash")
        return self.block

    def close(self) -> None:
        """Give back the decompressor, if this read took one."""
        self._writer = None
        if self._decompressor is not None:
            self._codec._decompressors.put(self._decompressor)
            self._decompressor = None
            self._codec._decompressing.release()

    def _name(self) -> str:
        return f"block {self._expected.hex()[:16]}"
