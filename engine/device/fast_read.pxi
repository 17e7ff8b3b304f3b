# The contract between the device's BlockTable (which fills the table) and
# the FUSE binding (which reads from it on its own threads, without the GIL).
# A capsule named "bucketdisk.fast_read" points to a FastRead.
from libc.stdint cimport uint64_t

# Copy `size` bytes at `offset` into `out` if every block they touch is in
# the table; false (and `out` unspecified) otherwise.
ctypedef bint (*fast_read_fn)(void *table, char *out, size_t size, uint64_t offset) noexcept nogil

cdef struct FastRead:
    fast_read_fn read
    void *table
