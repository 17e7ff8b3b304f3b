"""The FUSE adapter: a directory with `file` (the disk) and `stats`.

Translates read/write/fsync/fallocate/statfs on `file` into block-device
calls; knows nothing about stores.  Errors below become EIO for the caller
(and are counted in the stats); nothing is silently dropped.
"""
import errno
import itertools
import logging
import os
import stat
import threading
import time
from collections.abc import Callable

from ..device.device import BlockDevice
from ..errors import StoreError
from .fuse_lib import FuseOSError, Operations

log = logging.getLogger(__name__)

DISK = "/file"
STATS = "/stats"
MAX_IO = 1 << 20
MAX_READAHEAD = 4 * MAX_IO  # four requests of the largest size in flight
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10


class DiskOperations(Operations):
    use_ns = True

    def __init__(self, device: BlockDevice, render_stats: Callable[[], str],
                 on_ready: Callable[[], None] | None = None) -> None:
        self.device = device
        self.render_stats = render_stats
        self.on_ready = on_ready
        self.mounted_ns = time.time_ns()
        self.uid, self.gid = os.getuid(), os.getgid()
        self._handles = itertools.count(1)
        self._stats_snapshots: dict[int, bytes] = {}
        self._snapshots_lock = threading.Lock()
        self.close_error: BaseException | None = None

    # -- lifecycle ---------------------------------------------------------------

    def init_with_config(self, conn, config) -> None:
        if conn is not None:
            conn.max_write = MAX_IO
            conn.max_readahead = MAX_READAHEAD
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self, path: str) -> None:
        try:
            self.device.close()
        except BaseException as e:  # reported by the caller of FUSE()
            log.error("final flush failed: %s", e)
            self.close_error = e

    # -- metadata -----------------------------------------------------------------

    def getattr(self, path: str, fh=None) -> dict:
        times = {"st_atime": self.mounted_ns, "st_mtime": self.mounted_ns, "st_ctime": self.mounted_ns}
        base = {"st_uid": self.uid, "st_gid": self.gid, **times}
        if path == "/":
            return {**base, "st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        if path == DISK:
            mode = 0o400 if self.device.read_only else 0o600
            return {**base, "st_mode": stat.S_IFREG | mode, "st_nlink": 1, "st_size": self.device.size,
                    "st_blocks": self.device.size // 512, "st_blksize": self.device.block_size}
        if path == STATS:
            return {**base, "st_mode": stat.S_IFREG | 0o444, "st_nlink": 1,
                    "st_size": len(self.render_stats().encode())}
        raise FuseOSError(errno.ENOENT)

    def readdir(self, path: str, fh) -> list[str]:
        if path != "/":
            raise FuseOSError(errno.ENOTDIR)
        return [".", "..", DISK[1:], STATS[1:]]

    def statfs(self, path: str) -> dict:
        total = self.device.block_count
        used = self.device.volume.mapped_count()
        return {"f_bsize": self.device.block_size, "f_frsize": self.device.block_size,
                "f_blocks": total, "f_bfree": total - used, "f_bavail": total - used,
                "f_files": 2, "f_ffree": 0, "f_namemax": 255}

    def truncate(self, path: str, length: int, fh=None) -> None:
        if path != DISK:
            raise FuseOSError(errno.EACCES)
        if length != self.device.size:
            raise FuseOSError(errno.EINVAL)  # the disk has a fixed size

    def chmod(self, path: str, mode: int) -> None:
        raise FuseOSError(errno.EPERM)

    def chown(self, path: str, uid: int, gid: int) -> None:
        raise FuseOSError(errno.EPERM)

    def utimens(self, path: str, times=None) -> None:
        return None  # accepted and ignored: `touch` on the disk should not fail

    # -- open files -----------------------------------------------------------------

    def open(self, path: str, fi) -> int:
        writing = fi.flags & (os.O_WRONLY | os.O_RDWR)
        if path == DISK:
            if writing and self.device.read_only:
                raise FuseOSError(errno.EROFS)
            fi.keep_cache = 1  # every change passes through us, so cached pages stay valid
            fi.fh = 0
            return 0
        if path == STATS:
            if writing:
                raise FuseOSError(errno.EACCES)
            handle = next(self._handles)
            with self._snapshots_lock:
                self._stats_snapshots[handle] = self.render_stats().encode()
            fi.direct_io = 1  # the size changes between reads
            fi.fh = handle
            return 0
        raise FuseOSError(errno.ENOENT)

    def release(self, path: str, fi) -> int:
        with self._snapshots_lock:
            self._stats_snapshots.pop(fi.fh, None)
        return 0

    def read(self, path: str, size: int, offset: int, fi) -> bytes:
        """The copying form (fuse_lib.FUSE calls read_into instead)."""
        out = bytearray(size)
        return bytes(out[: self.read_into(path, memoryview(out), offset, fi)])

    def read_into(self, path: str, out: memoryview, offset: int, fi) -> int:
        if path == STATS:
            with self._snapshots_lock:
                text = self._stats_snapshots.get(fi.fh, b"")
            chunk = text[offset : offset + len(out)]
            out[: len(chunk)] = chunk
            return len(chunk)
        return self._io(self.device.read_into, offset, out)

    def write(self, path: str, data: memoryview, offset: int, fi) -> int:
        if path != DISK or self.device.read_only:
            raise FuseOSError(errno.EROFS if self.device.read_only else errno.EACCES)
        if offset + len(data) > self.device.size:
            raise FuseOSError(errno.ENOSPC)
        return self._io(self.device.write, offset, data)

    def flush(self, path: str, fi) -> int:
        return 0  # close() is not a durability point; fsync and unmount are

    def fsync(self, path: str, datasync: int, fi) -> int:
        self._io(self.device.fsync)
        return 0

    def fallocate(self, path: str, mode: int, offset: int, length: int, fi) -> int:
        if path != DISK:
            raise FuseOSError(errno.EOPNOTSUPP)
        if self.device.read_only:
            raise FuseOSError(errno.EROFS)
        if offset < 0 or length <= 0:
            raise FuseOSError(errno.EINVAL)
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            if mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
                raise FuseOSError(errno.EOPNOTSUPP)
            self._io(self.device.punch, offset, length)
            return 0
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise FuseOSError(errno.EOPNOTSUPP)
        if offset + length > self.device.size and not mode & FALLOC_FL_KEEP_SIZE:
            raise FuseOSError(errno.EFBIG)
        return 0  # every block of the disk already "exists"

    def _io(self, call, *args):
        try:
            return call(*args)
        except (StoreError, OSError) as e:
            if isinstance(e, FuseOSError):
                raise
            log.error("I/O error: %s", e)
            raise FuseOSError(errno.EIO) from None
