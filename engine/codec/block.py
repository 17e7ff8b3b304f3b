"""Block and metadata codec: pure functions on bytes.

A block becomes (content hash, framed object), or (ZERO_HASH, None) when it
is all zeros, because zero blocks are never stored.  The content hash is
BLAKE3-256 of the plaintext block; it names the object, so identical blocks
are stored once.  BLAKE3 is cryptographic, has a keyed mode for encrypted
volumes, runs at several GB/s on one core and releases the GIL, so every
read can verify its block at little cost (BLAKE2b was a third of the read
path's CPU).  Objects are framed (see `_hot.pyx`: magic, version, flags,
lengths and an xxh3 checksum of the payload), optionally zstd-compressed, and
on an encrypted volume sealed (sealing.py: AES-256-GCM bound to the volume
and the object's name) and named by a keyed BLAKE3 hash (keys.py).

Buffers: every buffer that holds a block or a block's object is allocated
at one size, the block plus OBJECT_OVERHEAD (`object_buffer`,
`block_buffer`: a header, and a seal's nonce and tag): a
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
from . import sealing
from ._hot import HEADER_SIZE, CorruptObject, Xxh3, frame, frame_header, is_zero, read_header, unframe
from .keys import VolumeKeys

HASH_SIZE = 32
ZERO_HASH = bytes(HASH_SIZE)
# The map entry of a block whose content is lost (`fsck --repair` found the
# map page that named it missing or damaged): it names no object, so a
# read of it fails (LostBlock) until the block is written whole or punched.
LOST_HASH = b"\xff" * HASH_SIZE
HASH_NAME = "blake3-256"
FLAG_ZSTD = 0x01
FLAG_SEALED = 0x02  # the payload is sealed (sealing.py): every object of an encrypted volume
OBJECT_OVERHEAD = HEADER_SIZE + sealing.OVERHEAD  # bytes an object may have beyond its block
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


def content_hash(data, key: bytes | None = None) -> bytes:
    """BLAKE3-256 of the block, keyed by `key` (32 bytes) when given (the
    GIL is released while hashing)."""
    if key is None:
        return blake3.blake3(data).digest(HASH_SIZE)
    return blake3.blake3(data, key=key).digest(HASH_SIZE)


def object_buffer(block_size: int) -> bytearray:
    """A zeroed buffer for one object of a `block_size` block: the block
    and OBJECT_OVERHEAD (see Buffers above)."""
    return bytearray(block_size + OBJECT_OVERHEAD)


def block_buffer(block_size: int, source=None) -> bytearray:
    """A `block_size` bytearray of zeros, or a copy of `source` (exactly
    `block_size` bytes), allocated as `object_buffer` (see Buffers)."""
    buf = bytearray(block_size + OBJECT_OVERHEAD)
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
    """Encodes and decodes blocks and metadata objects of one volume.

    With `keys` (an encrypted volume, whose UUID is `volume_uuid`) every
    object is sealed and bound to its name, and content hashes are keyed;
    such a codec refuses unsealed objects, and a plain one sealed objects.

    zstd (de)compressor objects must never be shared by two threads at once,
    and FUSE calls arrive on threads created in C where `threading.local`
    does not persist, so instances are kept in a pool and borrowed per call;
    at most CONTEXTS of each kind exist, and a caller waits for one.
    """

    def __init__(self, compression: str = "zstd", level: int = 1, keys: VolumeKeys | None = None,
                 volume_uuid: str | None = None) -> None:
        if compression not in COMPRESSIONS:
            raise ValueError(f"unknown compression {compression!r}")
        self.compression = compression
        self.level = level
        self.sealer = sealing.Sealer(keys, volume_uuid) if keys is not None else None
        self._block_names = keys.block_names if keys is not None else None
        self._page_names = keys.page_names if keys is not None else None
        self._sealed = FLAG_SEALED if keys is not None else 0
        self._compressors: queue.SimpleQueue = queue.SimpleQueue()
        self._decompressors: queue.SimpleQueue = queue.SimpleQueue()
        self._compressing = threading.BoundedSemaphore(CONTEXTS)
        self._decompressing = threading.BoundedSemaphore(CONTEXTS)

    def block_hash(self, data) -> bytes:
        """The content hash that names a block (keyed on an encrypted volume)."""
        return content_hash(data, self._block_names)

    def page_hash(self, data) -> bytes:
        """The content hash that names a map page (keyed on an encrypted volume)."""
        return content_hash(data, self._page_names)

    # -- blocks -------------------------------------------------------------------

    def encode_block(self, data) -> tuple[bytes, tuple | None]:
        """(hash, object) for a block; (ZERO_HASH, None) for a zero block.

        The object comes as pieces to store one after the other: one
        object_buffer (compressed or sealed), or a header and `data` itself,
        not a copy, when it is stored as it is; so `data` must not change
        until it is stored.  Besides `data`, this holds one object_buffer
        at most."""
        if is_zero(data):
            return ZERO_HASH, None
        block_hash = self.block_hash(data)
        return block_hash, self._pack_block(data, block_hash)

    def _pack_block(self, data, block_hash: bytes) -> tuple:
        raw_len = len(data)
        body_at = HEADER_SIZE + (sealing.NONCE_SIZE if self.sealer else 0)
        out = None
        flags = self._sealed
        if self.compression == "zstd":
            out = object_buffer(raw_len)
            view = memoryview(out)
            size = self._compress_into(data, view[body_at : body_at + raw_len - 1])
            if size is not None:
                flags |= FLAG_ZSTD
                data = view[body_at : body_at + size]  # sealed in place, if sealed
        if not self.sealer:
            if flags & FLAG_ZSTD:
                out[:HEADER_SIZE] = frame_header(data, flags, raw_len)
                return (memoryview(out)[: HEADER_SIZE + len(data)],)
            del out
            return frame_header(data, 0, raw_len), data
        if out is None:
            out = object_buffer(raw_len)
        view = memoryview(out)
        size = self.sealer.seal_into(data, view[HEADER_SIZE:], sealing.block_name(block_hash), flags, raw_len)
        out[:HEADER_SIZE] = frame_header(view[HEADER_SIZE : HEADER_SIZE + size], flags, raw_len)
        return (view[: HEADER_SIZE + size],)

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

    def pack(self, data, name: str) -> bytes:
        """Frame `data`, the object stored at key `name`, compressed when
        that makes it smaller and sealed (bound to `name`) on an encrypted
        volume, as one bytes object (for metadata; it holds up to three
        times `data` at once)."""
        raw_len = len(data)
        flags = self._sealed
        if self.compression == "zstd":
            compressed = self._compress(data)
            if len(compressed) < raw_len:
                data, flags = compressed, flags | FLAG_ZSTD
            del compressed
        if self.sealer:
            data = self.sealer.seal(data, sealing.key_name(name), flags, raw_len)
        return frame(data, flags, raw_len)

    def unpack(self, obj: bytes, name: str) -> bytes:
        """The bytes `pack` was given for `name`; raises CorruptData on any
        damage, or when the object is not `name`'s of this volume."""
        flags, raw_len, payload = self._unframe(obj)
        if self.sealer:
            payload = self.sealer.open(payload, sealing.key_name(name), flags, raw_len)
        if not flags & FLAG_ZSTD:
            return bytes(payload)
        data = self._decompress(payload, raw_len)
        if len(data) != raw_len:
            raise CorruptData("decompressed length does not match the header")
        return data

    def _unframe(self, obj):
        """(flags, raw_len, payload view) of a frame; raises CorruptData."""
        try:
            flags, raw_len, payload = unframe(obj)
        except CorruptObject as e:
            raise CorruptData(str(e)) from None
        self.check_flags(flags)
        return flags, raw_len, payload

    def check_flags(self, flags: int) -> None:
        """Raises CorruptData for flags this volume's objects cannot have."""
        if flags & ~(FLAG_ZSTD | FLAG_SEALED):
            raise CorruptData(f"unknown object flags {flags:#x}")
        if flags & FLAG_SEALED != self._sealed:
            raise CorruptData("an encrypted object in a volume that is not encrypted" if not self._sealed
                              else "not encrypted, in an encrypted volume: not this volume's object")

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

    The header comes first, then the payload: a sealed one's nonce, body
    and tag (sealing.py), a plain one's body alone.  An uncompressed body
    is read straight into the block, a compressed one a STAGE at a time
    into a staging buffer, from which a zstd stream decompresses it into
    the block.  A sealed body is decrypted in place as it arrives, and
    nothing of it is used before its tag holds: a sealed compressed body is
    held whole (in a buffer smaller than the block) and decompressed only
    then, so zstd never parses bytes the store could have chosen.  The
    payload's xxh3 is taken as it passes.  A compressed read holds one of
    the codec's CONTEXTS decompressors (and its staging or holding buffer)
    until `close`.
    """

    def __init__(self, codec: Codec, block_size: int, expected_hash: bytes) -> None:
        self.block = block_buffer(block_size)
        self._codec = codec
        self._block_size = block_size
        self._expected = expected_hash
        self._view = memoryview(self.block)
        self._header = bytearray(HEADER_SIZE)
        self._nonce = bytearray(sealing.NONCE_SIZE)
        self._tag = bytearray(sealing.TAG_SIZE)
        self._spare = memoryview(bytearray(1))  # takes the first byte too many
        self._staging: memoryview | None = None
        self._decompressor = None
        self.reset()

    def reset(self) -> None:
        self._got = 0            # bytes of the object so far
        self._flags = self._payload_len = self._checksum = 0
        self._nonce_end = self._body_end = 0  # where the payload's parts end, counted in the object
        self._hash = Xxh3()
        self._opener = None      # the decryption of a sealed body, once its nonce is in
        self._writer = None      # the zstd stream into the block, once compressed
        self._held: memoryview | None = None  # a sealed compressed body, until its tag holds
        self._out = _Sink(self._view)

    def buffer(self) -> memoryview:
        got = self._got
        if got < HEADER_SIZE:
            return memoryview(self._header)[got:]
        if got < self._nonce_end:
            return memoryview(self._nonce)[got - HEADER_SIZE :]
        if got < self._body_end:
            left = self._body_end - got
            if self._held is not None:
                return self._held[got - self._nonce_end :]
            if self._writer is None:
                return self._view[self._out.size : self._out.size + left]
            return self._staging[: min(STAGE, left)]
        left = HEADER_SIZE + self._payload_len - got
        if not left:
            return self._spare
        return memoryview(self._tag)[sealing.TAG_SIZE - left :]

    def filled(self, count: int) -> None:
        got = self._got
        if got < HEADER_SIZE:
            self._got += count
            if self._got == HEADER_SIZE:
                self._start_payload()
            return
        if got + count > HEADER_SIZE + self._payload_len:
            raise CorruptData(f"{self._name()}: object longer than its header says")
        self._got += count
        if got < self._nonce_end:
            self._hash.update(memoryview(self._nonce)[got - HEADER_SIZE : self._got - HEADER_SIZE])
            if self._got == self._nonce_end:
                self._open()
        elif self._held is not None and got < self._body_end:
            piece = self._held[got - self._nonce_end : self._got - self._nonce_end]
            self._hash.update(piece)
            self._opener.decrypt_in_place(piece)
        elif got < self._body_end:
            self._take_body(count)
        else:
            self._hash.update(memoryview(self._tag)[got - self._body_end : self._got - self._body_end])

    def _take_body(self, count: int) -> None:
        if self._writer is None:
            piece = self._view[self._out.size : self._out.size + count]
            self._out.size += count
        else:
            piece = self._staging[:count]
        self._hash.update(piece)
        if self._opener is not None:
            self._opener.decrypt_in_place(piece)
        if self._writer is None:
            return
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
            self._codec.check_flags(self._flags)
        except CorruptObject as e:
            raise CorruptData(f"{self._name()}: {e}") from None
        except CorruptData as e:
            raise CorruptData(f"{self._name()}: {e}") from None
        if raw_len != self._block_size:
            raise CorruptData(f"{self._name()} has {raw_len} bytes, expected {self._block_size}")
        sealed = self._flags & FLAG_SEALED
        self._nonce_end = HEADER_SIZE + (sealing.NONCE_SIZE if sealed else 0)
        self._body_end = HEADER_SIZE + self._payload_len - (sealing.TAG_SIZE if sealed else 0)
        if self._body_end < self._nonce_end:
            raise CorruptData(f"{self._name()}: object shorter than its seal")
        if not self._flags & FLAG_ZSTD:
            if self._body_end - self._nonce_end != self._block_size:
                raise CorruptData(f"{self._name()} has {self._body_end - self._nonce_end} bytes, "
                                  f"expected {self._block_size}")
            return
        if self._decompressor is None:
            self._codec._decompressing.acquire()
            self._decompressor = self._codec._borrow(self._codec._decompressors, zstandard.ZstdDecompressor)
        if sealed:
            if self._body_end - self._nonce_end >= self._block_size:
                raise CorruptData(f"{self._name()}: a compressed body no smaller than its block")
            self._held = memoryview(bytearray(self._body_end - self._nonce_end))
            return
        if self._staging is None:
            self._staging = memoryview(bytearray(STAGE))
        self._writer = self._decompressor.stream_writer(self._out, closefd=False)

    def _open(self) -> None:
        self._opener = self._codec.sealer.opener(self._nonce, sealing.block_name(self._expected),
                                                 self._flags, self._block_size)

    def finish(self) -> bytearray:
        """The block, once the whole object has arrived; raises CorruptData
        unless framing, checksum, seal, length and content hash hold."""
        if self._got != HEADER_SIZE + self._payload_len or self._got < HEADER_SIZE:
            raise CorruptData(f"{self._name()}: object shorter than its header says")
        if self._hash.digest() != self._checksum:
            raise CorruptData(f"{self._name()}: checksum mismatch")
        if self._opener is not None:
            try:
                self._opener.finish(self._tag)
            except CorruptData as e:
                raise CorruptData(f"{self._name()} {e}") from None
        if self._held is not None:  # authentic: now it may be decompressed
            self._decompress_held()
        if self._out.size != self._block_size:
            raise CorruptData(f"{self._name()} decompresses to {self._out.size} bytes, expected {self._block_size}")
        if self._codec.block_hash(self.block) != self._expected:
            raise CorruptData(f"{self._name()} does not match its content hash")
        return self.block

    def _decompress_held(self) -> None:
        writer = self._decompressor.stream_writer(self._out, closefd=False)
        try:
            writer.write(self._held)
        except _Full:
            raise CorruptData(f"{self._name()} decompresses to more than {self._block_size} bytes") from None
        except zstandard.ZstdError as e:
            raise CorruptData(f"zstd: {e}") from None

    def close(self) -> None:
        """Give back the decompressor (and drop the buffers), if this read took one."""
        self._writer = None
        self._held = None
        if self._decompressor is not None:
            self._codec._decompressors.put(self._decompressor)
            self._decompressor = None
            self._codec._decompressing.release()

    def _name(self) -> str:
        return f"block {self._expected.hex()[:16]}"
