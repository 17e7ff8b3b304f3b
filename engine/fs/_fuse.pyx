# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""A small binding of libfuse 3's low-level API.

libfuse's threads call the C callbacks below.  A read of the disk's inode
is first offered to the device's block table (fast_read.pxi) without the
GIL: warm reads never enter Python.  Everything else takes the GIL and
calls a method of the Python `operations` object, with inode numbers:

    init()                                   the kernel connection is up
    destroy()                                after the unmount (final flush)
    lookup(parent, name: str) -> int         inode, or raise FuseError
    getattr(ino) -> Attr
    setattr(ino, to_set: int, size: int) -> Attr
    readdir(ino) -> list[(name, ino, mode)]
    readlink(ino) -> str
    getxattr(ino, name: str) -> bytes        raise FuseError(ENODATA) if none
    listxattr(ino) -> list[str]
    open(ino, flags) -> (fh, direct_io: bool, keep_cache: bool)
    release(ino, fh)
    read_into(ino, fh, out: memoryview, offset) -> int   bytes filled
    write(ino, fh, data: memoryview, offset) -> int
    fsync(ino, fh, datasync: bool)
    statfs() -> Statfs
    fallocate(ino, fh, mode, offset, length)

The memoryviews are libfuse's own buffers (no copy); they are released when
the method returns, so keeping one raises rather than reads freed memory.
A method fails a request by raising FuseError(errno); any other exception
is logged and answered with EIO.  The tree is changed by no request: those
that would (create, mknod, mkdir, unlink, rmdir, symlink, rename, link),
and setting or removing extended attributes, are answered EPERM here.
Asking the disk's inode for an extended attribute (the kernel asks for
security.capability before writes) is answered ENODATA here, without the GIL.
"""
import errno
import logging
import os
import signal
import threading

from cpython.buffer cimport PyBUF_READ, PyBUF_WRITE
from cpython.memoryview cimport PyMemoryView_FromMemory
from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.errno cimport ENODATA, ENOMEM, EPERM, ERANGE
from libc.stdint cimport uint64_t
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from posix.stat cimport struct_stat
from posix.types cimport dev_t, mode_t, off_t

include "../device/fast_read.pxi"

from bucketdisk.fs.replies import FuseError  # what operations raise to fail a request

log = logging.getLogger(__name__)

include "libfuse.pxi"

DEF STACK_READ = 128 * 1024  # reads up to this size use a buffer on the worker's stack


def libfuse_version() -> str:
    """'MAJOR.MINOR' of the libfuse this process runs with."""
    cdef int version = fuse_version()
    return f"{version // 100}.{version % 100}" if version >= 100 else f"{version // 10}.{version % 10}"


cdef struct State:
    void *session       # the Session (borrowed: alive while run() is)
    fuse_ino_t fast_ino  # reads of this inode try `fast` first
    FastRead *fast
    unsigned max_write
    unsigned max_readahead


cdef class Session:
    """One mount: `run()` serves `operations` on `mountpoint` until unmounted."""

    cdef State state
    cdef object operations
    cdef object fast_owner
    cdef bytes mountpoint
    cdef list options
    cdef int max_threads

    def __init__(self, operations, mountpoint: str, options: list[str], *, max_write: int,
                 max_readahead: int, max_threads: int = 16, fast_ino: int = 0, fast_reader=None) -> None:
        self.operations = operations
        self.mountpoint = os.fsencode(mountpoint)
        self.options = options
        self.max_threads = max_threads
        self.state.session = <void *>self
        self.state.max_write = max_write
        self.state.max_readahead = max_readahead
        self.state.fast_ino = fast_ino
        self.state.fast = NULL
        if fast_reader is not None:
            self.state.fast = <FastRead *>PyCapsule_GetPointer(fast_reader, b"bucketdisk.fast_read")
            self.fast_owner = fast_reader

    def run(self) -> None:
        """Mount, serve until unmounted or signalled (SIGTERM, SIGINT, and
        SIGHUP unless it has a handler already), then unmount and call
        `destroy`.  Raises OSError if libfuse refuses the mount."""
        cdef fuse_lowlevel_ops ops
        memset(&ops, 0, sizeof(ops))
        ops.init, ops.destroy, ops.lookup, ops.getattr = _init, _destroy, _lookup, _getattr
        ops.setattr, ops.open, ops.read, ops.write = _setattr, _open, _read, _write
        ops.release, ops.fsync, ops.readdir = _release, _fsync, _readdir
        ops.statfs, ops.fallocate = _statfs, _fallocate
        ops.mknod, ops.mkdir, ops.unlink, ops.rmdir = _mknod, _mkdir, _unlink, _rmdir
        ops.symlink, ops.rename, ops.link, ops.create = _symlink, _rename, _link, _create
        ops.readlink, ops.getxattr, ops.listxattr = _readlink, _getxattr, _listxattr
        ops.setxattr, ops.removexattr = _setxattr, _removexattr

        argv = [b"bucketdisk"] + [item for option in self.options for item in (b"-o", option.encode())]
        cdef fuse_args args
        cdef char **ours = <char **>malloc((len(argv) + 1) * sizeof(char *))
        for i, item in enumerate(argv):
            ours[i] = item
        ours[len(argv)] = NULL
        args.argc, args.argv, args.allocated = len(argv), ours, 0
        cdef fuse_session *se = fuse_session_new(&args, &ops, sizeof(ops), &self.state)
        if args.allocated:  # libfuse replaced the vector with a copy of its own
            fuse_opt_free_args(&args)
        free(ours)
        if se == NULL:
            raise OSError(errno.EINVAL, f"libfuse refused the mount options {self.options}")
        if threading.current_thread() is threading.main_thread():
            # libfuse only claims signals left at their default; Ctrl-C should
            # unmount cleanly like SIGTERM does.  (SIGHUP it leaves alone when
            # the caller gave it a handler first: fs/signals.py reopens the log.)
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        fuse_set_signal_handlers(se)
        if fuse_session_mount(se, self.mountpoint) != 0:
            fuse_remove_signal_handlers(se)
            fuse_session_destroy(se)
            raise OSError(errno.EIO, f"libfuse could not mount {os.fsdecode(self.mountpoint)}")
        cdef fuse_loop_config *config = fuse_loop_cfg_create()
        fuse_loop_cfg_set_max_threads(config, self.max_threads)
        with nogil:
            fuse_session_loop_mt(se, config)
            fuse_loop_cfg_destroy(config)
            fuse_session_unmount(se)
            fuse_remove_signal_handlers(se)
            fuse_session_destroy(se)  # calls _destroy


# -- helpers (GIL held) ---------------------------------------------------------------

cdef inline Session session_of(fuse_req_t req):
    return <Session>(<State *>fuse_req_userdata(req)).session


cdef int error_code(BaseException e, str what):
    """The errno to answer for an exception raised by an operation."""
    if isinstance(e, FuseError):
        return e.errno
    log.error("%s failed", what, exc_info=e)
    return errno.EIO


cdef void fill_stat(struct_stat *st, attr) noexcept:
    memset(st, 0, sizeof(struct_stat))
    st.st_ino = attr.ino
    st.st_mode = attr.mode
    st.st_nlink = attr.nlink
    st.st_size = attr.size
    st.st_uid = attr.uid
    st.st_gid = attr.gid
    st.st_blksize = attr.blksize
    st.st_blocks = (attr.size + 511) // 512
    st.st_atim.tv_sec = st.st_mtim.tv_sec = st.st_ctim.tv_sec = attr.time_ns // 1_000_000_000
    st.st_atim.tv_nsec = st.st_mtim.tv_nsec = st.st_ctim.tv_nsec = attr.time_ns % 1_000_000_000


cdef int call_with_buffer(fuse_req_t req, str method, char *buf, size_t size, int access, fuse_ino_t ino,
                          uint64_t fh, off_t off, size_t *count) noexcept with gil:
    """`operations.<method>(ino, fh, view, off)` with `buf` as a memoryview,
    released afterwards; the errno to answer, or 0 and the result in `count`."""
    view = PyMemoryView_FromMemory(buf, size, access)
    try:
        count[0] = getattr(session_of(req).operations, method)(ino, fh, view, off)
        return 0
    except BaseException as e:
        return error_code(e, method)
    finally:
        view.release()


# -- callbacks (libfuse threads, no GIL on entry) --------------------------------------

cdef void _init(void *userdata, fuse_conn_info *conn) noexcept nogil:
    cdef State *state = <State *>userdata
    conn.max_write = state.max_write
    conn.max_readahead = state.max_readahead
    # The disk has no setuid bit or capability to drop on a write, and the
    # mount refuses chmod and setxattr: with this, the kernel stops asking
    # for security.capability before every write (a request each).
    if conn.capable & BD_KILLPRIV_V2:
        conn.want |= BD_KILLPRIV_V2
    with gil:
        try:
            (<Session>state.session).operations.init()
        except BaseException as e:
            log.error("init failed", exc_info=e)


cdef void _destroy(void *userdata) noexcept nogil:
    with gil:
        try:
            (<Session>(<State *>userdata).session).operations.destroy()
        except BaseException as e:
            log.error("destroy failed", exc_info=e)


cdef void _lookup(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil:
    cdef fuse_entry_param entry
    cdef int code = 0
    memset(&entry, 0, sizeof(entry))
    with gil:
        try:
            ops = session_of(req).operations
            attr = ops.getattr(ops.lookup(parent, os.fsdecode(<bytes>name)))
            fill_stat(&entry.attr, attr)
            entry.ino = attr.ino
            entry.attr_timeout = entry.entry_timeout = attr.timeout
        except BaseException as e:
            code = error_code(e, "lookup")
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_entry(req, &entry)


cdef void reply_attr(fuse_req_t req, fuse_ino_t ino, int to_set, off_t size, bint changing) noexcept nogil:
    cdef struct_stat st
    cdef double timeout = 0
    cdef int code = 0
    with gil:
        try:
            ops = session_of(req).operations
            attr = ops.setattr(ino, to_set, size) if changing else ops.getattr(ino)
            fill_stat(&st, attr)
            timeout = attr.timeout
        except BaseException as e:
            code = error_code(e, "setattr" if changing else "getattr")
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_attr(req, &st, timeout)


cdef void _getattr(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    reply_attr(req, ino, 0, 0, False)


cdef void _setattr(fuse_req_t req, fuse_ino_t ino, struct_stat *attr, int to_set,
                   fuse_file_info *fi) noexcept nogil:
    reply_attr(req, ino, to_set, attr.st_size, True)


cdef void _open(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    cdef int code = 0
    with gil:
        try:
            fh, direct_io, keep_cache = session_of(req).operations.open(ino, fi.flags)
            fi.fh = fh
            fi.direct_io = 1 if direct_io else 0
            fi.keep_cache = 1 if keep_cache else 0
        except BaseException as e:
            code = error_code(e, "open")
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_open(req, fi)


cdef void _release(fuse_req_t req, fuse_ino_t ino, fuse_file_info *fi) noexcept nogil:
    with gil:
        try:
            session_of(req).operations.release(ino, fi.fh)
        except BaseException as e:
            error_code(e, "release")
    fuse_reply_err(req, 0)


cdef void _read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) noexcept nogil:
    cdef State *state = <State *>fuse_req_userdata(req)
    cdef char stack[STACK_READ]
    cdef char *buf = &stack[0] if size <= STACK_READ else <char *>malloc(size)
    cdef int code = 0
    cdef size_t count = 0
    if buf == NULL:
        fuse_reply_err(req, ENOMEM)
        return
    if ino == state.fast_ino and state.fast != NULL and state.fast.read(state.fast.table, buf, size, off):
        count = size
    else:
        code = call_with_buffer(req, "read_into", buf, size, PyBUF_WRITE, ino, fi.fh, off, &count)
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_buf(req, buf, count)
    if buf != &stack[0]:
        free(buf)


cdef void _write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
                 fuse_file_info *fi) noexcept nogil:
    cdef size_t count = 0
    cdef int code = call_with_buffer(req, "write", <char *>buf, size, PyBUF_READ, ino, fi.fh, off, &count)
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_write(req, count)


cdef void _fsync(fuse_req_t req, fuse_ino_t ino, int datasync, fuse_file_info *fi) noexcept nogil:
    cdef int code = 0
    with gil:
        try:
            session_of(req).operations.fsync(ino, fi.fh, bool(datasync))
        except BaseException as e:
            code = error_code(e, "fsync")
    fuse_reply_err(req, code)


cdef void _readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off, fuse_file_info *fi) noexcept nogil:
    cdef char *buf = <char *>malloc(size)
    cdef size_t used = 0, need
    cdef struct_stat st
    cdef int code = 0
    if buf == NULL:
        fuse_reply_err(req, ENOMEM)
        return
    memset(&st, 0, sizeof(st))
    with gil:
        try:
            entries = session_of(req).operations.readdir(ino)
            for position in range(off, len(entries)):
                name, st.st_ino, st.st_mode = entries[position]
                encoded = os.fsencode(name)
                need = fuse_add_direntry(req, buf + used, size - used, encoded, &st, position + 1)
                if need > size - used:
                    break
                used += need
        except BaseException as e:
            code = error_code(e, "readdir")
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_buf(req, buf, used)
    free(buf)


cdef void _statfs(fuse_req_t req, fuse_ino_t ino) noexcept nogil:
    cdef statvfs st
    cdef int code = 0
    memset(&st, 0, sizeof(st))
    with gil:
        try:
            stats = session_of(req).operations.statfs()
            st.f_bsize = st.f_frsize = stats.block_size
            st.f_blocks = stats.blocks
            st.f_bfree = st.f_bavail = stats.free
            st.f_files = stats.files
            st.f_ffree = st.f_favail = stats.free_files
            st.f_namemax = stats.name_max
        except BaseException as e:
            code = error_code(e, "statfs")
    if code:
        fuse_reply_err(req, code)
    else:
        fuse_reply_statfs(req, &st)


cdef void _fallocate(fuse_req_t req, fuse_ino_t ino, int mode, off_t offset, off_t length,
                     fuse_file_info *fi) noexcept nogil:
    cdef int code = 0
    with gil:
        try:
            session_of(req).operations.fallocate(ino, fi.fh, mode, offset, length)
        except BaseException as e:
            code = error_code(e, "fallocate")
    fuse_reply_err(req, code)


cdef void _readlink(fuse_req_t req, fuse_ino_t ino) noexcept nogil:
    answer_readlink(req, ino)


cdef void answer_readlink(fuse_req_t req, fuse_ino_t ino) noexcept with gil:
    try:
        target = os.fsencode(session_of(req).operations.readlink(ino))
    except BaseException as e:
        fuse_reply_err(req, error_code(e, "readlink"))
        return
    fuse_reply_readlink(req, target)


cdef void reply_xattr(fuse_req_t req, bytes value, size_t size) noexcept:
    """The getxattr/listxattr protocol: size 0 asks for the length only (GIL held)."""
    if size == 0:
        fuse_reply_xattr(req, len(value))
    elif <size_t>len(value) > size:
        fuse_reply_err(req, ERANGE)
    else:
        fuse_reply_buf(req, value, len(value))


cdef void _getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) noexcept nogil:
    cdef State *state = <State *>fuse_req_userdata(req)
    if ino == state.fast_ino:  # the disk has none; asked before writes, so never wait for the GIL
        fuse_reply_err(req, ENODATA)
        return
    answer_getxattr(req, ino, name, size)


cdef void answer_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name, size_t size) noexcept with gil:
    try:
        value = bytes(session_of(req).operations.getxattr(ino, os.fsdecode(<bytes>name)))
    except BaseException as e:
        fuse_reply_err(req, error_code(e, "getxattr"))
        return
    reply_xattr(req, value, size)


cdef void _listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept nogil:
    answer_listxattr(req, ino, size)


cdef void answer_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size) noexcept with gil:
    try:
        names = b"".join(os.fsencode(n) + b"\0" for n in session_of(req).operations.listxattr(ino))
    except BaseException as e:
        fuse_reply_err(req, error_code(e, "listxattr"))
        return
    reply_xattr(req, names, size)


# -- the fixed tree: no names come or go --------------------------------------------------

cdef void _setxattr(fuse_req_t req, fuse_ino_t ino, const char *name, const char *value, size_t size,
                    int flags) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _removexattr(fuse_req_t req, fuse_ino_t ino, const char *name) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _unlink(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _rmdir(fuse_req_t req, fuse_ino_t parent, const char *name) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
                  const char *newname, unsigned int flags) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname) noexcept nogil:
    fuse_reply_err(req, EPERM)


cdef void _create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
                  fuse_file_info *fi) noexcept nogil:
    fuse_reply_err(req, EPERM)
