# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Clean cached blocks that FUSE threads may copy without the GIL.

A Python callback costs ~60 us here, which caps warm 4 KiB reads near
15k/s; a read served from this table never enters Python.  The device
publishes a block once it is clean and loaded, and withdraws it before any
change to its buffer, so a reader sees either the whole old content or
goes to Python for the new one.  A read-only mount whose volume has gone
from its place stops the table (`stop`): from then on it serves nothing.

One reader-writer lock guards the table: readers (FUSE threads, no GIL)
hold it shared while they copy; writers (Python, GIL held) take it
exclusively only to change a slot.  No reader takes the GIL while holding
it, so a writer may wait for it with the GIL held.

Slots use open addressing with linear probing and backward-shift deletion
(no tombstones), sized to a power of two at least twice the cache's
capacity, so probes stay short.
"""
from cpython.buffer cimport PyBUF_SIMPLE, PyBUF_WRITABLE, PyBuffer_Release, PyObject_GetBuffer
from cpython.pycapsule cimport PyCapsule_New
from cpython.ref cimport Py_DECREF, Py_INCREF, PyObject
from libc.stdint cimport int64_t, uint64_t
from libc.stdlib cimport calloc, free
from libc.string cimport memcpy

include "fast_read.pxi"

cdef extern from "<pthread.h>" nogil:
    ctypedef struct pthread_rwlock_t:
        pass
    int pthread_rwlock_init(pthread_rwlock_t *lock, const void *attr)
    int pthread_rwlock_destroy(pthread_rwlock_t *lock)
    int pthread_rwlock_rdlock(pthread_rwlock_t *lock)
    int pthread_rwlock_wrlock(pthread_rwlock_t *lock)
    int pthread_rwlock_unlock(pthread_rwlock_t *lock)

cdef extern from *:
    """
    #define bd_atomic_add(p, n) __atomic_fetch_add((p), (n), __ATOMIC_RELAXED)
    #define bd_atomic_load(p) __atomic_load_n((p), __ATOMIC_RELAXED)
    """
    uint64_t bd_atomic_add(uint64_t *p, uint64_t n) nogil
    uint64_t bd_atomic_load(uint64_t *p) nogil

DEF EMPTY = -1


cdef struct Slot:
    int64_t index       # EMPTY when free
    PyObject *owner     # a strong reference keeping `data` alive
    const char *data
    bint referenced     # read since the device last asked (second-chance eviction)


cdef struct Table:
    pthread_rwlock_t lock
    Slot *slots
    uint64_t mask
    uint64_t block_size
    uint64_t count      # occupied slots
    uint64_t hits
    bint stopped        # serves nothing more, publishes nothing more (see BlockTable.stop)


cdef inline uint64_t home(const Table *t, int64_t index) noexcept nogil:
    return (<uint64_t>index * 0x9E3779B97F4A7C15ULL >> 17) & t.mask


cdef inline Slot *find(Table *t, int64_t index) noexcept nogil:
    cdef uint64_t i = home(t, index)
    while t.slots[i].index != EMPTY:
        if t.slots[i].index == index:
            return &t.slots[i]
        i = (i + 1) & t.mask
    return NULL


cdef bint table_read(void *p, char *out, size_t size, uint64_t offset) noexcept nogil:
    cdef Table *t = <Table *>p
    cdef uint64_t first, last, index, start, stop, done = 0
    cdef Slot *slot
    if size == 0:
        return False
    first = offset // t.block_size
    last = (offset + size - 1) // t.block_size
    pthread_rwlock_rdlock(&t.lock)
    if t.stopped:
        pthread_rwlock_unlock(&t.lock)
        return False
    for index in range(first, last + 1):
        if find(t, <int64_t>index) == NULL:
            pthread_rwlock_unlock(&t.lock)
            return False
    for index in range(first, last + 1):
        slot = find(t, <int64_t>index)
        start = offset - index * t.block_size if index == first else 0
        stop = offset + size - index * t.block_size if index == last else t.block_size
        memcpy(out + done, slot.data + start, stop - start)
        done += stop - start
        slot.referenced = True
    pthread_rwlock_unlock(&t.lock)
    bd_atomic_add(&t.hits, last - first + 1)
    return True


cdef class BlockTable:
    """Block index -> the bytes of a clean cached block, readable without the GIL."""

    cdef Table t
    cdef FastRead fast_read

    def __cinit__(self, uint64_t capacity, uint64_t block_size):
        cdef uint64_t size = 16
        while size < 2 * capacity:
            size <<= 1
        self.t.slots = <Slot *>calloc(size, sizeof(Slot))
        if self.t.slots == NULL:
            raise MemoryError()
        for i in range(size):
            self.t.slots[i].index = EMPTY
        self.t.mask = size - 1
        self.t.block_size = block_size
        self.t.stopped = False
        pthread_rwlock_init(&self.t.lock, NULL)
        self.fast_read.read = table_read
        self.fast_read.table = &self.t

    def __dealloc__(self):
        if self.t.slots != NULL:
            for i in range(self.t.mask + 1):
                if self.t.slots[i].index != EMPTY:
                    Py_DECREF(<object>self.t.slots[i].owner)
            free(self.t.slots)
            pthread_rwlock_destroy(&self.t.lock)

    def publish(self, int64_t index, data) -> bool:
        """Serve block `index` from `data` (a whole block, not to be changed
        until withdrawn); False when the table is full or stopped (it
        then stays a Python-served block)."""
        cdef Py_buffer view
        PyObject_GetBuffer(data, &view, PyBUF_SIMPLE)
        # The pointer stays valid without the export: bytes never move, and
        # the device never resizes a buffer (it withdraws before writing).
        cdef const char *pointer = <const char *>view.buf
        cdef Py_ssize_t length = view.len
        PyBuffer_Release(&view)
        if <uint64_t>length != self.t.block_size:
            raise ValueError(f"block {index}: {length} bytes, expected {self.t.block_size}")
        Py_INCREF(data)
        pthread_rwlock_wrlock(&self.t.lock)
        cdef Slot *slot = find(&self.t, index)
        cdef PyObject *old = NULL
        if self.t.stopped:
            pthread_rwlock_unlock(&self.t.lock)
            Py_DECREF(data)
            return False
        if slot == NULL:
            if 4 * (self.t.count + 1) > 3 * (self.t.mask + 1):
                pthread_rwlock_unlock(&self.t.lock)
                Py_DECREF(data)
                return False
            slot = self._free_slot(index)
            self.t.count += 1
        else:
            old = slot.owner
        slot.index = index
        slot.owner = <PyObject *>data
        slot.data = pointer
        slot.referenced = False
        pthread_rwlock_unlock(&self.t.lock)
        if old != NULL:
            Py_DECREF(<object>old)
        return True

    def withdraw(self, int64_t index) -> None:
        """Stop serving block `index` (no-op when absent); returns once no
        reader is copying it."""
        pthread_rwlock_wrlock(&self.t.lock)
        cdef Slot *slot = find(&self.t, index)
        cdef PyObject *old = NULL
        if slot != NULL:
            old = slot.owner
            self._delete(slot - self.t.slots)
        pthread_rwlock_unlock(&self.t.lock)
        if old != NULL:
            Py_DECREF(<object>old)

    def stop(self) -> None:
        """Serve nothing more, for good: every read goes to Python (the
        device then refuses it), and `publish` no longer adds blocks.
        Returns once no reader is copying a block."""
        pthread_rwlock_wrlock(&self.t.lock)
        self.t.stopped = True
        pthread_rwlock_unlock(&self.t.lock)

    def referenced(self, int64_t index) -> bool:
        """Whether block `index` was read here since the last call (clears it)."""
        cdef Slot *slot = find(&self.t, index)  # only this thread moves slots (GIL held)
        if slot == NULL or not slot.referenced:
            return False
        slot.referenced = False
        return True

    def read_into(self, out, uint64_t offset) -> bool:
        """What a FUSE thread does, callable from Python (tests, benchmarks):
        fill the writable buffer `out` from `offset` if every block it
        touches is published."""
        cdef Py_buffer view
        PyObject_GetBuffer(out, &view, PyBUF_WRITABLE)
        try:
            with nogil:
                served = table_read(&self.t, <char *>view.buf, view.len, offset)
        finally:
            PyBuffer_Release(&view)
        return served

    @property
    def hits(self) -> int:
        """Blocks served from the table so far."""
        return bd_atomic_load(&self.t.hits)

    def reader(self):
        """A capsule for the FUSE binding (the table must outlive its use)."""
        return PyCapsule_New(&self.fast_read, b"bucketdisk.fast_read", NULL)

    cdef Slot *_free_slot(self, int64_t index) noexcept:
        cdef uint64_t i = home(&self.t, index)
        while self.t.slots[i].index != EMPTY:
            i = (i + 1) & self.t.mask
        return &self.t.slots[i]

    cdef void _delete(self, uint64_t hole) noexcept:
        """Empty slot `hole`, shifting later members of its probe run back."""
        cdef uint64_t i = hole, j = hole, want
        while True:
            j = (j + 1) & self.t.mask
            if self.t.slots[j].index == EMPTY:
                break
            want = home(&self.t, self.t.slots[j].index)
            # slot j may move to the hole unless its home lies cyclically in (i, j]
            if (j > i and (want <= i or want > j)) or (j < i and want <= i and want > j):
                self.t.slots[i] = self.t.slots[j]
                i = j
        self.t.slots[i].index = EMPTY
        self.t.slots[i].owner = NULL
        self.t.count -= 1
