"""The portable FUSE adapter: the same operations (operations.py) served
through mfusepy, ctypes bindings of libfuse's high-level path API (libfuse
2 or 3 on Linux, macFUSE or FUSE-T on macOS, FreeBSD's).  It only
translates: a path is resolved to an inode number with the operations'
`lookup`, name by name, and every answer comes from them.

What the path API cannot say per inode, mount options say for all:
attributes and names are kept by the kernel for ATTR_TIMEOUT (the `stats`
file, whose size changes, is opened direct_io, so its reads never stop at
a stale size), and `use_ino` keeps the operations' inode numbers.
Requests run on libfuse's threads (multithreaded; at most FUSE_THREADS on
libfuse 3.12 and later), up to MAX_IO bytes each (big_writes on libfuse 2,
whose kernel interface caps a request at 128 KiB).

mfusepy loads libfuse 2 when both are installed; on Linux libfuse 3 is
chosen here unless FUSE_LIBRARY_NAME or FUSE_LIBRARY_PATH names another
(mfusepy's own variables).  Sources: mfusepy's README and module
(FUSE, Operations, init_with_config), libfuse's fuse.h and helper.c
(fuse_main_real and its options), fuse(4).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import errno
import functools
import itertools
import logging
import os
import platform
import threading

from ..errors import UserError
from .operations import ROOT, SET_ATTR_GID, SET_ATTR_MODE, SET_ATTR_SIZE, SET_ATTR_UID, DiskOperations
from .replies import Attr, FuseError

log = logging.getLogger(__name__)

ATTR_TIMEOUT = 1.0  # seconds, as the low-level adapter answers for names and attributes that never change
MAX_THREADS_SINCE = (3, 12)  # libfuse's `-o max_threads`


def load_mfusepy():
    """The mfusepy module, bound to libfuse 3 where Linux has it.  Raises
    UserError (one line) when mfusepy or a usable libfuse is missing."""
    if platform.system() == "Linux" and not (os.environ.get("FUSE_LIBRARY_NAME")
                                             or os.environ.get("FUSE_LIBRARY_PATH")):
        if ctypes.util.find_library("fuse3"):
            os.environ["FUSE_LIBRARY_NAME"] = "fuse3"  # read by mfusepy on import
    try:
        import mfusepy
    except ImportError:
        raise UserError("--fuse mfusepy: the mfusepy package is not installed (pip install mfusepy)") from None
    except (OSError, AttributeError) as e:  # no libfuse, or one mfusepy cannot drive
        raise UserError(f"--fuse mfusepy: no usable libfuse ({e}); install libfuse 3 (Debian: fuse3), "
                        "macFUSE or FUSE-T") from None
    return mfusepy


def library_version(mfusepy) -> str:
    """'MAJOR.MINOR' of the libfuse mfusepy loaded."""
    return f"{mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}"


def _answered(method):
    """Fail a request whose operation raised anything but FuseError with
    EIO, logged (as the low-level adapter does; mfusepy would answer EINVAL)."""
    @functools.wraps(method)
    def call(self, *args):
        try:
            return method(self, *args)
        except FuseError:
            raise
        except Exception as e:
            log.error("%s failed", method.__name__, exc_info=e)
            raise FuseError(errno.EIO) from None
    return call


def _refused(self, *args) -> None:
    """The tree is changed by no request (as in the low-level adapter)."""
    raise FuseError(errno.EPERM)


class PathOperations:
    """mfusepy's operations object (raw_fi: `fi` is libfuse's
    fuse_file_info) over DiskOperations."""

    use_ns = True  # times in nanoseconds (mfusepy)

    def __init__(self, operations: DiskOperations, *, max_write: int, max_readahead: int) -> None:
        self.ops = operations
        self.max_write, self.max_readahead = max_write, max_readahead
        self.initialised = False  # set once the kernel connection is up
        self._handles: dict[int, tuple[int, int]] = {}  # our fi.fh -> (inode, the operations' handle)
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()

    def _ino(self, path: str) -> int:
        ino = ROOT
        for name in path.split("/"):
            if name:
                ino = self.ops.lookup(ino, name)
        return ino

    def _handle(self, fi) -> tuple[int, int]:
        try:
            return self._handles[fi.fh]
        except KeyError:
            raise FuseError(errno.EBADF) from None

    # -- lifecycle -----------------------------------------------------------------------

    @_answered
    def init_with_config(self, conn, config) -> None:
        """libfuse 3 hands `config` too (None on libfuse 2)."""
        if conn is not None:
            # libfuse 2 has sized its request buffer by then (128 KiB): a
            # larger max_write would hand it requests it cannot read
            conn.max_write = min(conn.max_write, self.max_write)
            conn.max_readahead = self.max_readahead
        if config is not None:
            config.use_ino = 1
        self.initialised = True
        self.ops.init()

    def destroy(self, path: str) -> None:
        self.ops.destroy()  # (records its own failure as close_error)

    # -- metadata ------------------------------------------------------------------------

    @_answered
    def getattr(self, path: str, fi=None) -> dict:
        return _stat(self.ops.getattr(self._ino(path)))

    @_answered
    def readdir(self, path: str, fh: int) -> list:
        return [(name, {"st_ino": ino, "st_mode": mode}, 0) for name, ino, mode in self.ops.readdir(self._ino(path))]

    @_answered
    def readlink(self, path: str) -> str:
        return self.ops.readlink(self._ino(path))

    @_answered
    def getxattr(self, path: str, name: str, position: int = 0) -> bytes:
        return self.ops.getxattr(self._ino(path), name)

    @_answered
    def listxattr(self, path: str) -> list[str]:
        return self.ops.listxattr(self._ino(path))

    @_answered
    def statfs(self, path: str) -> dict:
        s = self.ops.statfs()
        return {"f_bsize": s.block_size, "f_frsize": s.block_size, "f_blocks": s.blocks, "f_bfree": s.free,
                "f_bavail": s.free, "f_files": s.files, "f_ffree": s.free_files, "f_favail": s.free_files,
                "f_namemax": s.name_max}

    @_answered
    def truncate(self, path: str, length: int, fi=None) -> None:
        self.ops.setattr(self._ino(path), SET_ATTR_SIZE, length)

    @_answered
    def chmod(self, path: str, mode: int) -> None:
        self.ops.setattr(self._ino(path), SET_ATTR_MODE, 0)

    @_answered
    def chown(self, path: str, uid: int, gid: int) -> None:
        to_set = (SET_ATTR_UID if uid != -1 else 0) | (SET_ATTR_GID if gid != -1 else 0)
        self.ops.setattr(self._ino(path), to_set, 0)

    @_answered
    def utimens(self, path: str, times=None) -> None:
        self.ops.setattr(self._ino(path), 0, 0)  # accepted and ignored, as setattr says

    mknod = mkdir = unlink = rmdir = symlink = rename = link = create = _refused
    setxattr = removexattr = _refused

    # -- open files ----------------------------------------------------------------------

    @_answered
    def open(self, path: str, fi) -> int:
        ino = self._ino(path)
        fh, direct_io, keep_cache = self.ops.open(ino, fi.flags)
        with self._lock:
            number = next(self._numbers)
            self._handles[number] = (ino, fh)
        fi.fh, fi.direct_io, fi.keep_cache = number, int(direct_io), int(keep_cache)
        return 0

    @_answered
    def release(self, path: str, fi) -> None:
        with self._lock:
            ino, fh = self._handles.pop(fi.fh, (0, 0))
        if ino:
            self.ops.release(ino, fh)

    @_answered
    def read(self, path: str, size: int, offset: int, fi):
        ino, fh = self._handle(fi)
        out = bytearray(size)
        count = self.ops.read_into(ino, fh, memoryview(out), offset)
        # a view of the bytes read, which mfusepy copies into libfuse's buffer (no copy here)
        return (ctypes.c_char * count).from_buffer(out) if count else b""

    @_answered
    def write(self, path: str, data: bytes, offset: int, fi) -> int:
        ino, fh = self._handle(fi)
        return self.ops.write(ino, fh, memoryview(data), offset)

    @_answered
    def fsync(self, path: str, datasync: int, fi) -> None:
        ino, fh = self._handle(fi)
        self.ops.fsync(ino, fh, bool(datasync))

    @_answered
    def fallocate(self, path: str, mode: int, offset: int, length: int, fi) -> None:
        ino, fh = self._handle(fi)
        self.ops.fallocate(ino, fh, mode, offset, length)


def _stat(attr: Attr) -> dict:
    return {"st_ino": attr.ino, "st_mode": attr.mode, "st_nlink": attr.nlink, "st_size": attr.size,
            "st_uid": attr.uid, "st_gid": attr.gid, "st_blksize": attr.blksize,
            "st_blocks": (attr.size + 511) // 512,
            "st_atime": attr.time_ns, "st_mtime": attr.time_ns, "st_ctime": attr.time_ns}


class MfusepySession:
    """One mount through mfusepy: `run()` serves `operations` on
    `mountpoint` until unmounted or signalled, as _fuse.Session does."""

    def __init__(self, operations: DiskOperations, mountpoint: str, options: list[str], *, max_write: int,
                 max_readahead: int, max_threads: int = 16) -> None:
        """`options`: libfuse -o options, "name" or "name=value"; sizes in bytes."""
        self.mfusepy = load_mfusepy()
        self.paths = PathOperations(operations, max_write=max_write, max_readahead=max_readahead)
        self.mountpoint = mountpoint
        self.options = dict(_option(o) for o in options)
        self.options.update(foreground=True, use_ino=True, attr_timeout=ATTR_TIMEOUT, entry_timeout=ATTR_TIMEOUT,
                            negative_timeout=0)
        version = (self.mfusepy.fuse_version_major, self.mfusepy.fuse_version_minor)
        if version[0] == 2:
            self.options["big_writes"] = True  # else every write is one 4 KiB request
        elif version >= MAX_THREADS_SINCE:
            self.options["max_threads"] = max_threads
            # said too: libfuse 3.14 passes an unset one on as an invalid max_threads and logs a
            # line about it at every mount (libfuse issue 1003); idle threads never exceed max_threads
            self.options["max_idle_threads"] = max_threads

    @property
    def library(self) -> str:
        return library_version(self.mfusepy)

    def run(self) -> None:
        """Mount, serve until unmounted (or SIGTERM, SIGINT; SIGHUP unless
        it has a handler already: libfuse claims only signals left at
        their default), unmount, and call `destroy`.  Raises OSError if
        libfuse refuses the mount."""
        try:
            self.mfusepy.FUSE(self.paths, self.mountpoint, raw_fi=True, **self.options)
        except RuntimeError as e:
            # fuse_main_real's status: 1 before the mount is up, 7 when its
            # loop ended on a signal (then the unmount and destroy are done)
            if not self.paths.initialised:
                raise OSError(errno.EIO, f"libfuse could not mount {self.mountpoint} (status {e})") from None


def _option(text: str) -> tuple[str, object]:
    name, is_set, value = text.partition("=")
    return name, value if is_set else True
