# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A fixed-size bitmap over a C array of 64-bit words (the dirty-block map).

Bit i lives in word i // 64 at bit position i % 64.  The bits past nbits in
the last word are always kept clear, so the whole-word loops (count, any,
next_set) never need a special case for the partial last word.

There is no internal lock: the caller serialises access with its own lock.
The word array is allocated once and never resized, and every index is
checked before memory is touched, so even a racing caller cannot read or
write out of bounds.
"""

from cpython.buffer cimport PyBUF_SIMPLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from libc.stdint cimport uint8_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memset


cdef extern from *:
    # GCC/Clang builtin: BSF/TZCNT on x86-64, RBIT+CLZ on arm64.
    int __builtin_ctzll(unsigned long long x) nogil


cdef extern from *:
    # Popcount of a word array with __builtin_popcountll.  Built for baseline
    # x86-64 (no -mpopcnt), the builtin is a libgcc call per word; a copy of
    # the loop compiled for the POPCNT instruction, picked at run time, is
    # several times faster.  Elsewhere (arm64...) the builtin is inline already.
    """
    #define BD_COUNT_LOOP { \
        Py_ssize_t total = 0, k; \
        for (k = 0; k < n; k++) total += __builtin_popcountll(w[k]); \
        return total; }
    static Py_ssize_t bd_count_generic(const uint64_t *w, Py_ssize_t n) BD_COUNT_LOOP
    #if (defined(__x86_64__) || defined(__i386__)) && defined(__GNUC__)
    __attribute__((target("popcnt")))
    static Py_ssize_t bd_count_popcnt(const uint64_t *w, Py_ssize_t n) BD_COUNT_LOOP
    static Py_ssize_t bd_popcount_words(const uint64_t *w, Py_ssize_t n) {
        return __builtin_cpu_supports("popcnt") ? bd_count_popcnt(w, n)
                                                : bd_count_generic(w, n);
    }
    #else
    #define bd_popcount_words bd_count_generic
    #endif
    """
    Py_ssize_t bd_popcount_words(const uint64_t* w, Py_ssize_t n) nogil


__all__ = ["Bitmap"]

cdef enum:
    # Releasing and retaking the GIL costs a few hundred ns uncontended, and
    # under contention the retake can wait a whole switch interval (5 ms).
    # Word loops shorter than this (2048 words = 16 KiB, i.e. under 131072
    # bits) finish faster than that, so they keep the GIL.
    _NOGIL_MIN_WORDS = 2048

cdef uint64_t _ALL = ~(<uint64_t>0)


# -- word-level helpers, all without the GIL ----------------------------------

cdef inline uint64_t _bit(Py_ssize_t i) noexcept nogil:
    return (<uint64_t>1) << (i & 63)


cdef void _fill(uint64_t* words, Py_ssize_t start, Py_ssize_t stop,
                bint value) noexcept nogil:
    """Set (value=1) or clear bits [start, stop); requires start < stop."""
    cdef Py_ssize_t first = start >> 6
    cdef Py_ssize_t last = (stop - 1) >> 6
    # Masks of the bits inside the first and the last word that are in range.
    cdef uint64_t head = _ALL << (start & 63)
    cdef uint64_t tail = _ALL >> (63 - ((stop - 1) & 63))
    if first == last:
        head &= tail
    if value:
        words[first] |= head
    else:
        words[first] &= ~head
    if first == last:
        return
    # Whole words in between: a memset, not a bit loop.
    if last - first > 1:
        memset(&words[first + 1], 0xFF if value else 0,
               <size_t>(last - first - 1) * sizeof(uint64_t))
    if value:
        words[last] |= tail
    else:
        words[last] &= ~tail


cdef bint _any(const uint64_t* words, Py_ssize_t nwords) noexcept nogil:
    cdef Py_ssize_t k
    for k in range(nwords):
        if words[k]:
            return True
    return False


cdef Py_ssize_t _next_set(const uint64_t* words, Py_ssize_t nwords,
                          Py_ssize_t start) noexcept nogil:
    """First set bit >= start, or -1; requires 0 <= start < nwords * 64."""
    cdef Py_ssize_t k = start >> 6
    # Drop the bits below start in its own word, then skip zero words whole.
    cdef uint64_t w = words[k] & (_ALL << (start & 63))
    while not w:
        k += 1
        if k >= nwords:
            return -1
        w = words[k]
    return (k << 6) + __builtin_ctzll(w)


# -- the Python-facing class ----------------------------------------------------

cdef class Bitmap:
    """Fixed-size bitmap of `nbits` bits, all clear at creation.

    Indices are 0 <= i < nbits (no negative indexing); ranges are half-open
    [start, stop).  Out-of-range indices raise IndexError, start > stop
    raises ValueError.
    """
    cdef uint64_t* _words
    cdef Py_ssize_t _nbits
    cdef Py_ssize_t _nwords

    def __cinit__(self, nbits):
        cdef Py_ssize_t n = nbits
        if n < 0:
            raise ValueError(f"nbits must be >= 0, got {n}")
        self._nbits = n
        self._nwords = n // 64 + (1 if n % 64 else 0)
        # calloc: zeroed (all clear) and overflow-checked.  At least one word
        # so a zero-size bitmap still has a valid pointer.
        self._words = <uint64_t*>calloc(max(self._nwords, 1), sizeof(uint64_t))
        if self._words == NULL:
            raise MemoryError(f"cannot allocate a bitmap of {n} bits")

    def __dealloc__(self):
        free(self._words)

    # -- argument checks (with the GIL, before any memory is touched) --------

    cdef Py_ssize_t _index(self, i) except -1:
        cdef Py_ssize_t k
        try:
            k = i
        except OverflowError:
            k = -1  # reported as out of range below
        if k < 0 or k >= self._nbits:
            raise IndexError(f"bit index {i} out of range for a {self._nbits}-bit Bitmap")
        return k

    cdef int _range(self, start, stop, Py_ssize_t* a, Py_ssize_t* b) except -1:
        cdef Py_ssize_t lo, hi
        try:
            lo = start
            hi = stop
        except OverflowError:
            lo = hi = -1
        if lo < 0 or hi < 0 or hi > self._nbits:
            raise IndexError(
                f"range [{start}, {stop}) out of bounds for a {self._nbits}-bit Bitmap")
        if lo > hi:
            raise ValueError(f"range start {start} is after stop {stop}")
        a[0] = lo
        b[0] = hi
        return 0

    cdef Py_ssize_t _start(self, start) except -2:
        # A search start may be anywhere from 0 up (past the end finds nothing).
        cdef Py_ssize_t k
        try:
            k = start
        except OverflowError:
            if start > 0:
                return self._nbits
            k = -1
        if k < 0:
            raise IndexError(f"start {start} must be >= 0")
        return k

    cdef Py_ssize_t _find(self, Py_ssize_t start) noexcept:
        cdef Py_ssize_t r
        if start >= self._nbits:
            return -1
        if self._nwords - (start >> 6) >= _NOGIL_MIN_WORDS:
            with nogil:
                r = _next_set(self._words, self._nwords, start)
        else:
            r = _next_set(self._words, self._nwords, start)
        return r

    # -- single bits ------------------------------------------------------------

    def set(self, i):
        """Set bit i."""
        cdef Py_ssize_t k = self._index(i)
        self._words[k >> 6] |= _bit(k)

    def clear(self, i):
        """Clear bit i."""
        cdef Py_ssize_t k = self._index(i)
        self._words[k >> 6] &= ~_bit(k)

    def test(self, i) -> bool:
        """True if bit i is set."""
        cdef Py_ssize_t k = self._index(i)
        return (self._words[k >> 6] & _bit(k)) != 0

    # -- ranges and whole-map operations ------------------------------------------

    def set_range(self, start, stop):
        """Set every bit in [start, stop)."""
        self._fill_range(start, stop, True)

    def clear_range(self, start, stop):
        """Clear every bit in [start, stop)."""
        self._fill_range(start, stop, False)

    cdef int _fill_range(self, start, stop, bint value) except -1:
        cdef Py_ssize_t a = 0, b = 0
        self._range(start, stop, &a, &b)
        if a == b:
            return 0
        if (b - a) >> 6 >= _NOGIL_MIN_WORDS:
            with nogil:
                _fill(self._words, a, b, value)
        else:
            _fill(self._words, a, b, value)
        return 0

    def clear_all(self):
        """Clear every bit."""
        cdef size_t size = <size_t>self._nwords * sizeof(uint64_t)
        if self._nwords >= _NOGIL_MIN_WORDS:
            with nogil:
                memset(self._words, 0, size)
        else:
            memset(self._words, 0, size)

    def count(self) -> int:
        """Number of set bits."""
        cdef Py_ssize_t r
        if self._nwords >= _NOGIL_MIN_WORDS:
            with nogil:
                r = bd_popcount_words(self._words, self._nwords)
        else:
            r = bd_popcount_words(self._words, self._nwords)
        return r

    def any(self) -> bool:
        """True if at least one bit is set."""
        cdef bint r
        if self._nwords >= _NOGIL_MIN_WORDS:
            with nogil:
                r = _any(self._words, self._nwords)
        else:
            r = _any(self._words, self._nwords)
        return r

    def next_set(self, start=0) -> int:
        """Index of the first set bit >= start, or -1 if there is none."""
        return self._find(self._start(start))

    def iter_set(self, start=0):
        """Iterate over the indices of set bits >= start, ascending.

        Each step searches from just past the previous hit, so bits changed
        while iterating are seen or not according to where the iterator is.
        """
        return _SetIterator(self, self._start(start))

    def __len__(self):
        return self._nbits

    def __repr__(self):
        return f"Bitmap({self._nbits})"

    # -- serialisation: little-endian words, ceil(nbits / 64) * 8 bytes ----------

    def to_bytes(self) -> bytes:
        """The words as little-endian bytes, ceil(nbits / 64) * 8 of them."""
        cdef Py_ssize_t size = self._nwords * 8
        cdef bytes out = PyBytes_FromStringAndSize(NULL, size)
        cdef uint8_t* dst = <uint8_t*>PyBytes_AS_STRING(out)
        if self._nwords >= _NOGIL_MIN_WORDS:
            with nogil:
                _store_le(dst, self._words, self._nwords)
        else:
            _store_le(dst, self._words, self._nwords)
        return out

    @classmethod
    def from_bytes(cls, nbits, data):
        """Rebuild a Bitmap of `nbits` bits from to_bytes() output.

        Raises ValueError if the length is wrong or a bit past nbits is set
        (the data belongs to a different bitmap or is damaged).
        """
        cdef Bitmap bm = cls(nbits)
        cdef Py_buffer view
        cdef uint64_t spare
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        try:
            if view.len != bm._nwords * 8:
                raise ValueError(
                    f"a {bm._nbits}-bit Bitmap needs {bm._nwords * 8} bytes, "
                    f"got {view.len}")
            if bm._nwords >= _NOGIL_MIN_WORDS:
                with nogil:
                    _load_le(bm._words, <const uint8_t*>view.buf, bm._nwords)
            else:
                _load_le(bm._words, <const uint8_t*>view.buf, bm._nwords)
        finally:
            PyBuffer_Release(&view)
        if bm._nbits & 63:
            spare = bm._words[bm._nwords - 1] & (_ALL << (bm._nbits & 63))
            if spare:
                raise ValueError(f"data has bits set past bit {bm._nbits}")
        return bm


# Byte by byte so the stored form is the same on any host; the compiler turns
# each word into a plain (or byte-swapped) load/store.
cdef void _store_le(uint8_t* dst, const uint64_t* words, Py_ssize_t nwords) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef uint64_t w
    for k in range(nwords):
        w = words[k]
        for j in range(8):
            dst[8 * k + j] = <uint8_t>(w >> (8 * j))


cdef void _load_le(uint64_t* words, const uint8_t* src, Py_ssize_t nwords) noexcept nogil:
    cdef Py_ssize_t k
    cdef int j
    cdef uint64_t w
    for k in range(nwords):
        w = 0
        for j in range(8):
            w |= (<uint64_t>src[8 * k + j]) << (8 * j)
        words[k] = w


cdef class _SetIterator:
    """Iterator behind Bitmap.iter_set()."""
    cdef Bitmap _bm
    cdef Py_ssize_t _pos

    def __cinit__(self, Bitmap bm, Py_ssize_t pos):
        self._bm = bm
        self._pos = pos

    def __iter__(self):
        return self

    def __next__(self):
        cdef Py_ssize_t k = self._bm._find(self._pos)
        if k < 0:
            self._pos = self._bm._nbits  # exhausted stays exhausted
            raise StopIteration
        self._pos = k + 1
        return k
