# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Hot byte-level paths of the block codec: zero detection, hashing, framing,
and the counting and comparing of the block map's fixed-width entries.

Every function accepts any object exporting a C-contiguous buffer (bytes,
bytearray, memoryview, mmap, array...); a buffer that is only read may be
read-only.  The work on a whole buffer runs without the GIL so several flush
threads can hash and frame blocks in parallel (page_checksums excepted: see
below).

XXH3 comes from the `xxhash` package (PyPI; it bundles xxHash), so building
this needs only a C compiler and Python's headers, no libxxhash.  Its
one-shot function releases the GIL above 64 KiB (every block of 1 MiB and
up; 4.0 or later, as pyproject.toml requires).  The values are those of
XXH3_64bits with seed 0, bit for bit (tests/test_xxh3.py checks constants
recorded from the libxxhash build).

What the switch cost, bench/bench_hot_paths.py, medians of two runs, on
this 2-core machine (AVX-512) with other work on it, 2026-11-30 (us)::

    call                              libxxhash 0.8.1   xxhash 4.1.0
                                      (Debian, linked)  (package)
    xxh3_64 1 MiB                          53                9.6
    frame 1 MiB                            76                29
    frame 4 MiB                           309               120
    unframe 1 MiB                          57                11
    unframe 4 MiB                         227                49
    page_checksums 1 MiB (256 pages)       52                26
    page_checksums 4 KiB (1 page)           0.25             0.13-0.23
    cache dir write 1 MiB (256 pages)      83                56
    cache dir write 4 KiB (1 page)          3.8              3.8

Faster, not slower: the package's wheel picks SSE2, AVX2 or AVX-512 when
it loads, where Debian builds libxxhash for baseline x86-64 (SSE2).  The
call through Python costs about 65 ns a page: page_checksums of 1 MiB spends
about 17 of its 26 us on the 256 calls, a third of the 56 us a 1 MiB write
to the cache dir's dirty file takes.  On a machine without AVX2 expect the
libxxhash figures plus those 17 us.  page_checksums holds the GIL for the
whole block (the package lets it go only above 64 KiB, and a page is 4 KiB),
where the libxxhash build let it go: 26 us per MiB written with --cache-dir.

Frame format (how one block object is laid out in the store)
------------------------------------------------------------
A frame is a 24-byte header followed by the payload.  All integers are
little-endian::

    offset  size  field
    0       4     magic          b"BDKB"
    4       1     version        FORMAT_VERSION (1)
    5       1     flags          u8, opaque here; the codec uses
                                 bit 0 = payload is zstd-compressed
    6       2     reserved       must be 0
    8       4     raw_len        u32, length of the block before compression
                                 (opaque here; the codec checks it)
    12      4     payload_len    u32, must equal len(frame) - 24
    16      8     checksum       u64, XXH3_64bits of the payload
    24      ...   payload

The checksum covers the payload only.  A damaged flags or raw_len field is
caught one level up: decompression fails or yields the wrong length.
"""

from cpython.buffer cimport PyBUF_READ, PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdint cimport uint8_t, uint32_t, uint64_t, uintptr_t
from libc.string cimport memcmp, memcpy


from xxhash import xxh3_64 as _Xxh3State, xxh3_64_intdigest as _xxh3


__all__ = [
    "CorruptObject", "FORMAT_VERSION", "HEADER_SIZE", "MAGIC",
    "Xxh3", "count_zero_entries", "differing_entries", "frame", "frame_header",
    "is_zero", "page_checksums", "read_header", "unframe", "xxh3_64",
]

HEADER_SIZE = 24
FORMAT_VERSION = 1
MAGIC = b"BDKB"

cdef enum:
    _HEADER_SIZE = 24  # C-level twin of HEADER_SIZE

# Releasing and retaking the GIL costs a few hundred ns uncontended, and under
# contention the retake can wait a whole switch interval (5 ms).  Below this
# size the work is cheaper than that, so small buffers keep the GIL.  Blocks
# (KiBs to MiBs) are always above it.
cdef enum:
    _NOGIL_MIN = 16 * 1024


class CorruptObject(ValueError):
    """A stored object is not a valid frame (damaged, truncated or foreign)."""


# -- little-endian field access, byte by byte so it is right on any host -----

cdef inline void _put_le16(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)


cdef inline void _put_le32(uint8_t* p, uint32_t v) noexcept nogil:
    p[0] = <uint8_t>v
    p[1] = <uint8_t>(v >> 8)
    p[2] = <uint8_t>(v >> 16)
    p[3] = <uint8_t>(v >> 24)


cdef inline void _put_le64(uint8_t* p, uint64_t v) noexcept nogil:
    _put_le32(p, <uint32_t>v)
    _put_le32(p + 4, <uint32_t>(v >> 32))


cdef inline uint32_t _get_le16(const uint8_t* p) noexcept nogil:
    return <uint32_t>p[0] | (<uint32_t>p[1] << 8)


cdef inline uint32_t _get_le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] | (<uint32_t>p[1] << 8)
            | (<uint32_t>p[2] << 16) | (<uint32_t>p[3] << 24))


cdef inline uint64_t _get_le64(const uint8_t* p) noexcept nogil:
    return <uint64_t>_get_le32(p) | (<uint64_t>_get_le32(p + 4) << 32)


# -- zero detection -----------------------------------------------------------

cdef inline uint64_t _load64(const uint8_t* p) noexcept nogil:
    # memcpy rather than a uint64_t* cast: no aliasing or alignment rules to
    # break, and the compiler turns it into a single load.
    cdef uint64_t w = 0
    memcpy(&w, p, 8)
    return w


cdef bint _all_zero(const uint8_t* p, size_t n) noexcept nogil:
    # Head: single bytes until p is 8-byte aligned, so the body loads whole
    # aligned words and never straddles a cache line.
    while n and (<uintptr_t>p & 7):
        if p[0]:
            return False
        p += 1
        n -= 1
    # Body: OR one cache line (8 words) together and branch once per line;
    # the compiler vectorises the OR chain.
    while n >= 64:
        if (_load64(p) | _load64(p + 8) | _load64(p + 16) | _load64(p + 24)
                | _load64(p + 32) | _load64(p + 40) | _load64(p + 48)
                | _load64(p + 56)):
            return False
        p += 64
        n -= 64
    while n >= 8:
        if _load64(p):
            return False
        p += 8
        n -= 8
    # Tail: the last 0..7 bytes.
    while n:
        if p[0]:
            return False
        p += 1
        n -= 1
    return True


def is_zero(buf) -> bool:
    """True if every byte of `buf` is zero (an empty buffer is all zero)."""
    cdef Py_buffer view
    cdef bint result
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if view.len >= _NOGIL_MIN:
            with nogil:
                result = _all_zero(<const uint8_t*>view.buf, <size_t>view.len)
        else:
            result = _all_zero(<const uint8_t*>view.buf, <size_t>view.len)
    finally:
        PyBuffer_Release(&view)
    return result


# -- fixed-width entries (the block map's content hashes) ----------------------

cdef enum:
    _SPAN_ENTRIES = 4096  # entries compared as one memcmp before looking closer


def count_zero_entries(buf, Py_ssize_t width) -> int:
    """How many of the `width`-byte entries `buf` is cut into are all
    zeros.  ValueError if `width` < 1 or the length is not a multiple of it."""
    cdef Py_buffer view
    cdef Py_ssize_t at, count = 0
    if width < 1:
        raise ValueError("entry width must be at least 1")
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if view.len % width:
            raise ValueError(f"{view.len} bytes are not whole entries of {width}")
        with nogil:
            at = 0
            while at < view.len:
                count += _all_zero(<const uint8_t*>view.buf + at, <size_t>width)
                at += width
    finally:
        PyBuffer_Release(&view)
    return count


def differing_entries(old, new, Py_ssize_t width) -> list:
    """The numbers of the `width`-byte entries at which two buffers of the
    same length differ, in order.  Runs of equal entries are skipped a span
    at a time, so two equal maps cost one memcmp per span.  ValueError if
    the lengths differ or are not whole entries."""
    cdef Py_buffer a, b
    cdef Py_ssize_t at, stop, span
    cdef const uint8_t* p
    cdef const uint8_t* q
    cdef list out = []
    if width < 1:
        raise ValueError("entry width must be at least 1")
    PyObject_GetBuffer(old, &a, PyBUF_SIMPLE)
    try:
        PyObject_GetBuffer(new, &b, PyBUF_SIMPLE)
        try:
            if a.len != b.len or a.len % width:
                raise ValueError(f"cannot compare {a.len} and {b.len} bytes as entries of {width}")
            p, q, span = <const uint8_t*>a.buf, <const uint8_t*>b.buf, width * _SPAN_ENTRIES
            for at in range(0, a.len, span):
                stop = min(at + span, a.len)
                if memcmp(p + at, q + at, <size_t>(stop - at)) == 0:
                    continue
                while at < stop:
                    if memcmp(p + at, q + at, <size_t>width):
                        out.append(at // width)
                    at += width
        finally:
            PyBuffer_Release(&b)
    finally:
        PyBuffer_Release(&a)
    return out


# -- hashing ------------------------------------------------------------------

cdef inline uint64_t _hash(const uint8_t* p, Py_ssize_t n) except? 0:
    """XXH3_64bits of n bytes at p (GIL held; the package lets it go above
    64 KiB).  The memoryview only points at the bytes: the caller keeps
    them alive and unchanged for the call."""
    if n == 0:  # (an empty buffer's pointer may be NULL, which a memoryview may not hold)
        return _xxh3(b"")
    return _xxh3(PyMemoryView_FromMemory(<char*>p, n, PyBUF_READ))


def xxh3_64(buf) -> int:
    """XXH3_64bits (seed 0) of `buf`, as an unsigned int (0 <= h < 2**64).
    Raises TypeError for an object that is not a buffer, BufferError for a
    non-contiguous one."""
    return _xxh3(buf)


def page_checksums(buf, Py_ssize_t page_size) -> bytes:
    """XXH3_64bits of each `page_size` piece of `buf` (whose length is a
    multiple of it), as little-endian u64s, one per page; a checksum that
    comes out 0 is given as 1, so that 0 can mean "no page" (the cache
    dir's dirty files: device/cachedir.py).  ValueError if `buf` is not a
    whole number of pages.  Holds the GIL: one package call per page."""
    cdef Py_buffer view
    cdef Py_ssize_t count, i
    cdef uint8_t* dest
    cdef uint64_t h
    PyObject_GetBuffer(buf, &view, PyBUF_SIMPLE)
    try:
        if page_size <= 0 or view.len % page_size:
            raise ValueError("the buffer is not a whole number of pages")
        count = view.len // page_size
        out = PyBytes_FromStringAndSize(NULL, count * 8)
        dest = <uint8_t*>PyBytes_AS_STRING(out)
        for i in range(count):
            h = _hash(<const uint8_t*>view.buf + i * page_size, page_size)
            _put_le64(dest + i * 8, h if h else 1)
    finally:
        PyBuffer_Release(&view)
    return out


cdef class Xxh3:
    """XXH3_64bits (seed 0) of bytes that come in pieces: `update` each
    (any contiguous buffer), then `digest`; equals xxh3_64 of the pieces
    joined."""

    cdef object _state  # the xxhash package's streaming xxh3_64

    def __cinit__(self):
        self._state = _Xxh3State()

    def update(self, buf) -> None:
        self._state.update(buf)

    def digest(self) -> int:
        return self._state.intdigest()


# -- framing ------------------------------------------------------------------

cdef void _check_header(const uint8_t* p) except *:
    """Raise CorruptObject unless magic, version and reserved bytes hold."""
    if memcmp(p, <const char*>b"BDKB", 4) != 0:
        raise CorruptObject(f"bad magic {bytes(p[:4])!r}, expected {MAGIC!r}")
    if p[4] != 1:
        raise CorruptObject(f"unknown format version {p[4]}, expected {FORMAT_VERSION}")
    if _get_le16(p + 6) != 0:
        raise CorruptObject("reserved header bytes are not zero")


def read_header(header) -> tuple:
    """(flags, raw_len, payload_len, checksum) from the first HEADER_SIZE
    bytes of a frame, for a reader that takes the payload in pieces (and
    checks the checksum with Xxh3).  Raises CorruptObject as `unframe`."""
    cdef Py_buffer view
    cdef const uint8_t* p
    PyObject_GetBuffer(header, &view, PyBUF_SIMPLE)
    try:
        if view.len < _HEADER_SIZE:
            raise CorruptObject(f"object too short: {view.len} bytes, header is {_HEADER_SIZE}")
        p = <const uint8_t*>view.buf
        _check_header(p)
        return p[5], _get_le32(p + 8), _get_le32(p + 12), _get_le64(p + 16)
    finally:
        PyBuffer_Release(&view)


cdef void _write_header(uint8_t* dst, size_t n, uint64_t checksum,
                        uint8_t flags, uint32_t raw_len) noexcept nogil:
    memcpy(dst, <const char*>b"BDKB", 4)
    dst[4] = 1  # FORMAT_VERSION
    dst[5] = flags
    _put_le16(dst + 6, 0)  # reserved
    _put_le32(dst + 8, raw_len)
    _put_le32(dst + 12, <uint32_t>n)
    _put_le64(dst + 16, checksum)


cdef _check_frame(long long flags, long long raw_len, Py_ssize_t payload_len):
    """ValueError unless the header fields fit their widths."""
    if not 0 <= flags <= 0xFF:
        raise ValueError(f"flags must fit in one byte, got {flags}")
    if not 0 <= raw_len <= 0xFFFFFFFF:
        raise ValueError(f"raw_len must fit in 32 bits, got {raw_len}")
    if payload_len > 0xFFFFFFFF:
        raise ValueError(f"payload of {payload_len} bytes is too large to frame")


def frame(payload, long long flags, long long raw_len) -> bytes:
    """Return header + payload as one new bytes object (the payload is copied once)."""
    cdef Py_buffer view
    cdef bytes out
    cdef uint8_t* dst
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        _check_frame(flags, raw_len, view.len)
        out = PyBytes_FromStringAndSize(NULL, _HEADER_SIZE + view.len)
        dst = <uint8_t*>PyBytes_AS_STRING(out)
        if view.len >= _NOGIL_MIN:
            with nogil:
                memcpy(dst + _HEADER_SIZE, view.buf, <size_t>view.len)
        else:
            memcpy(dst + _HEADER_SIZE, view.buf, <size_t>view.len)
        # Hash the copy, not the source: a bytearray source may be written by
        # another thread while the GIL is released, and the checksum must
        # describe exactly the bytes that get stored.
        _write_header(dst, <size_t>view.len, _hash(dst + _HEADER_SIZE, view.len),
                      <uint8_t>flags, <uint32_t>raw_len)
    finally:
        PyBuffer_Release(&view)
    return out


def frame_header(payload, long long flags, long long raw_len) -> bytes:
    """The 24-byte header that makes `header + payload` a frame, without
    copying the payload (an upload sends the two one after the other, so
    a block in the cache is never copied to be stored).

    The checksum describes the payload as it is now: the caller must not
    change it until the object is stored (the device uploads a buffer no
    writer touches: writers copy it first).  Raises ValueError as `frame`.
    """
    cdef Py_buffer view
    cdef bytes out
    cdef uint64_t checksum
    PyObject_GetBuffer(payload, &view, PyBUF_SIMPLE)
    try:
        _check_frame(flags, raw_len, view.len)
        checksum = _hash(<const uint8_t*>view.buf, view.len)
        out = PyBytes_FromStringAndSize(NULL, _HEADER_SIZE)
        _write_header(<uint8_t*>PyBytes_AS_STRING(out), <size_t>view.len, checksum,
                      <uint8_t>flags, <uint32_t>raw_len)
    finally:
        PyBuffer_Release(&view)
    return out


def unframe(obj):
    """Check a frame and return (flags, raw_len, payload).

    `payload` is a zero-copy memoryview slice of `obj`.  Raises CorruptObject
    if the header or the checksum does not hold.
    """
    cdef Py_buffer view
    cdef const uint8_t* p
    cdef Py_ssize_t n
    cdef uint32_t payload_len
    cdef uint64_t stored, actual
    cdef int flags
    cdef uint32_t raw_len
    # Take the buffer through a flat byte view so the slice returned at the end
    # is over the very bytes that were checked, whatever obj's item format.
    mv = memoryview(obj)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    PyObject_GetBuffer(mv, &view, PyBUF_SIMPLE)
    try:
        p = <const uint8_t*>view.buf
        n = view.len
        if n < _HEADER_SIZE:
            raise CorruptObject(f"object too short: {n} bytes, header is {_HEADER_SIZE}")
        _check_header(p)
        payload_len = _get_le32(p + 12)
        if payload_len != n - _HEADER_SIZE:
            raise CorruptObject(
                f"payload length mismatch: header says {payload_len}, "
                f"object holds {n - _HEADER_SIZE}")
        flags = p[5]
        raw_len = _get_le32(p + 8)
        stored = _get_le64(p + 16)
        actual = _hash(p + _HEADER_SIZE, n - _HEADER_SIZE)
        if actual != stored:
            raise CorruptObject(
                f"checksum mismatch: header {stored:#018x}, payload {actual:#018x}")
    finally:
        PyBuffer_Release(&view)
    return flags, raw_len, mv[_HEADER_SIZE:]
