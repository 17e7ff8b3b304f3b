"""What each name of a mount does: a directory with `file` (the disk;
`mount --filename` names it otherwise), `stats`, and `snapshots/`
(snapshottree.py) on a mount of the live disk.

Both FUSE adapters serve these operations and only translate: the
libfuse 3 low-level binding (_fuse.pyx) calls them by inode number, the
mfusepy one (mfusepy_adapter.py) resolves its paths to inode numbers with
`lookup` first.  Translates read/write/fsync/fallocate/statfs on the disk
into block-device calls; knows nothing about stores.  Errors below become
EIO for the caller (and are counted in the stats); nothing is silently
dropped.
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
from ..errors import StoreError, VolumeReplaced
from ..volume.snapshotmaps import SnapshotCatalog
from .replies import Attr, FuseError, Statfs
from .snapshottree import SNAPSHOTS, SNAPSHOTS_NAME, SnapshotTree

log = logging.getLogger(__name__)

ROOT, DISK, STATS = 1, 2, 3  # inode numbers (1 is the root by FUSE convention)
DISK_NAME = "file"  # the disk's name unless `mount --filename` gives another
STATS_NAME = "stats"
NAME_MAX = 255  # bytes in one name (NAME_MAX of limits.h)
MAX_IO = 1 << 20
MAX_READAHEAD = 4 * MAX_IO  # four requests of the largest size in flight
ATTR_TIMEOUT = 1.0          # seconds the kernel may keep attributes that never change
FALLOC_FL_KEEP_SIZE = 0x01
FALLOC_FL_PUNCH_HOLE = 0x02
FALLOC_FL_ZERO_RANGE = 0x10
SET_ATTR_MODE, SET_ATTR_UID, SET_ATTR_GID, SET_ATTR_SIZE = 1 << 0, 1 << 1, 1 << 2, 1 << 3


def check_disk_name(name: str) -> None:
    """Refuse a name the disk cannot have in the mount's directory (and in
    each snapshot's folder): raises ValueError saying why.  One path
    component of at most NAME_MAX bytes, without control characters, none
    of the names beside it."""
    if name in ("", ".", ".."):
        raise ValueError(f"{name!r} is not a file name")
    if "/" in name or "\0" in name:
        raise ValueError(f"{name!r}: one file name, without '/'")
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in name):
        # A line break would split the stats file's disk_file line (and the
        # name unmount and the metrics read back from it).
        raise ValueError(f"{name!r} holds a control character")
    if name in (STATS_NAME, SNAPSHOTS_NAME):
        raise ValueError(f"{name!r} is taken: the mount shows its own {name!r} beside the disk")
    if len(os.fsencode(name)) > NAME_MAX:
        raise ValueError(f"longer than {NAME_MAX} bytes")


class DiskOperations:
    """The operations both FUSE adapters call, by inode number (see
    _fuse.pyx's docstring for their shapes)."""

    def __init__(self, device: BlockDevice, render_stats: Callable[[], str],
                 on_ready: Callable[[], None] | None = None, on_close: Callable[[], None] | None = None,
                 snapshots: SnapshotCatalog | None = None, disk_name: str = DISK_NAME) -> None:
        """`snapshots`: the catalog the `snapshots/` folder shows (None: no
        folder); `disk_name`: the disk's name (check_disk_name's rules)."""
        check_disk_name(disk_name)
        self.device = device
        self.render_stats = render_stats
        self.on_ready = on_ready
        self.on_close = on_close  # before the final flush (the control channel stops)
        self.mounted_ns = time.time_ns()
        self.uid, self.gid = os.getuid(), os.getgid()
        self._handles = itertools.count(1)
        self._stats_snapshots: dict[int, bytes] = {}
        self._snapshots_lock = threading.Lock()
        self.close_error: BaseException | None = None
        self.disk_name = disk_name
        self.tree = None if snapshots is None else SnapshotTree(device, snapshots, self._attr, disk_name)
        self.names = {disk_name: DISK, STATS_NAME: STATS, **({SNAPSHOTS_NAME: SNAPSHOTS} if self.tree else {})}

    # -- lifecycle ---------------------------------------------------------------

    def init(self) -> None:
        if self.on_ready is not None:
            self.on_ready()

    def destroy(self) -> None:
        if self.on_close is not None:
            self.on_close()
        try:
            self.device.close()
        except BaseException as e:  # reported by the caller of FUSE()
            log.error("final flush failed: %s", e)
            self.close_error = e

    # -- metadata -----------------------------------------------------------------

    def _tree(self, ino: int) -> SnapshotTree | None:
        """The snapshots folder if it serves `ino`."""
        return self.tree if self.tree is not None and self.tree.owns(ino) else None

    def lookup(self, parent: int, name: str) -> int:
        if self._tree(parent):
            return self._io(self.tree.lookup, parent, name)
        if parent != ROOT:
            raise FuseError(errno.ENOTDIR)
        if name not in self.names:
            raise FuseError(errno.ENOENT)
        return self.names[name]

    def getattr(self, ino: int) -> Attr:
        if ino == ROOT:
            return self._attr(ino, stat.S_IFDIR | 0o755, 2, 0, self.mounted_ns, ATTR_TIMEOUT)
        if ino == DISK:
            mode = 0o400 if self.device.read_only else 0o600
            return self._attr(ino, stat.S_IFREG | mode, 1, self.device.size, self.mounted_ns, ATTR_TIMEOUT)
        if ino == STATS:  # its size changes with every read
            return self._attr(ino, stat.S_IFREG | 0o444, 1, len(self.render_stats().encode()), self.mounted_ns, 0.0)
        if self._tree(ino):
            return self._io(self.tree.getattr, ino, self.mounted_ns)
        raise FuseError(errno.ENOENT)

    def _attr(self, ino: int, mode: int, nlink: int, size: int, time_ns: int, timeout: float) -> Attr:
        return Attr(ino=ino, mode=mode, nlink=nlink, size=size, uid=self.uid, gid=self.gid,
                    time_ns=time_ns, blksize=self.device.block_size, timeout=timeout)

    def readlink(self, ino: int) -> str:
        if self._tree(ino):
            return self._io(self.tree.readlink, ino)
        raise FuseError(errno.EINVAL)

    def getxattr(self, ino: int, name: str) -> bytes:
        """The value of extended attribute `name`; ENODATA if there is none."""
        value = self._io(self.tree.xattrs, ino).get(name) if self._tree(ino) else None
        if value is None:
            raise FuseError(errno.ENODATA)
        return value

    def listxattr(self, ino: int) -> list[str]:
        return list(self._io(self.tree.xattrs, ino)) if self._tree(ino) else []

    def setattr(self, ino: int, to_set: int, size: int) -> Attr:
        """Mode, owner and size changes are refused (truncating the disk to
        its own size is accepted); times are accepted and ignored (`touch`
        on the disk should not fail)."""
        if to_set & (SET_ATTR_MODE | SET_ATTR_UID | SET_ATTR_GID):
            raise FuseError(errno.EPERM)
        if to_set & SET_ATTR_SIZE:
            if ino != DISK:
                raise FuseError(errno.EACCES)
            if size != self.device.size:
                raise FuseError(errno.EINVAL)  # the disk has a fixed size
        return self.getattr(ino)

    def readdir(self, ino: int) -> list[tuple[str, int, int]]:
        if self._tree(ino):
            return self._io(self.tree.readdir, ino)
        if ino != ROOT:
            raise FuseError(errno.ENOTDIR)
        return [(".", ROOT, stat.S_IFDIR), ("..", ROOT, stat.S_IFDIR)] + \
            [(name, ino, stat.S_IFDIR if ino == SNAPSHOTS else stat.S_IFREG) for name, ino in self.names.items()]

    def statfs(self) -> Statfs:
        total = self.device.block_count
        free = total - self.device.volume.mapped_count()
        return Statfs(block_size=self.device.block_size, blocks=total, free=free,
                      files=2, free_files=0, name_max=255)

    # -- open files -----------------------------------------------------------------

    def open(self, ino: int, flags: int) -> tuple[int, bool, bool]:
        """(handle, direct_io, keep_cache)"""
        writing = flags & (os.O_WRONLY | os.O_RDWR)
        if ino == DISK:
            if writing and self.device.read_only:
                raise FuseError(errno.EROFS)
            # A writable mount sees every change pass through it, so the
            # kernel's cached pages stay valid; a read-only one follows a
            # writer elsewhere, so each open starts with a cold page cache.
            return 0, False, not self.device.read_only
        if ino == STATS:
            if writing:
                raise FuseError(errno.EACCES)
            handle = next(self._handles)
            with self._snapshots_lock:
                self._stats_snapshots[handle] = self.render_stats().encode()
            return handle, True, False  # direct: the size changes between reads
        if self._tree(ino):
            return self._io(self.tree.open, ino, bool(writing))
        raise FuseError(errno.EISDIR if ino == ROOT else errno.ENOENT)

    def release(self, ino: int, fh: int) -> None:
        with self._snapshots_lock:
            self._stats_snapshots.pop(fh, None)

    def read_into(self, ino: int, fh: int, out: memoryview, offset: int) -> int:
        if ino == STATS:
            with self._snapshots_lock:
                text = self._stats_snapshots.get(fh, b"")
            chunk = text[offset : offset + len(out)]
            out[: len(chunk)] = chunk
            return len(chunk)
        if ino != DISK and self._tree(ino):
            return self._io(self.tree.read_into, ino, out, offset)
        return self._io(self.device.read_into, offset, out)

    def write(self, ino: int, fh: int, data: memoryview, offset: int) -> int:
        if ino != DISK or self.device.read_only:
            raise FuseError(errno.EROFS if self.device.read_only else errno.EACCES)
        if offset + len(data) > self.device.size:
            raise FuseError(errno.ENOSPC)
        return self._io(self.device.write, offset, data)

    def fsync(self, ino: int, fh: int, datasync: bool) -> None:
        self._io(self.device.fsync)

    def fallocate(self, ino: int, fh: int, mode: int, offset: int, length: int) -> None:
        if ino != DISK:
            raise FuseError(errno.EOPNOTSUPP)
        if self.device.read_only:
            raise FuseError(errno.EROFS)
        if offset < 0 or length <= 0:
            raise FuseError(errno.EINVAL)
        if mode & (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE):
            if mode & ~(FALLOC_FL_PUNCH_HOLE | FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE):
                raise FuseError(errno.EOPNOTSUPP)
            self._io(self.device.punch, offset, length)
            return
        if mode & ~FALLOC_FL_KEEP_SIZE:
            raise FuseError(errno.EOPNOTSUPP)
        if offset + length > self.device.size and not mode & FALLOC_FL_KEEP_SIZE:
            raise FuseError(errno.EFBIG)
        # every block of the disk already "exists"

    def _io(self, call, *args):
        """Run a device (or snapshot folder) call; store and OS errors become EIO (logged)."""
        try:
            return call(*args)
        except (StoreError, OSError) as e:
            if isinstance(e, FuseError):
                raise
            if not isinstance(e, VolumeReplaced):  # logged once, when it was found: not at every read
                log.error("I/O error: %s", e)
            raise FuseError(errno.EIO) from None
