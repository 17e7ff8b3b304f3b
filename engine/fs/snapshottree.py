"""The mountpoint's `snapshots/` folder, as Time Machine shows its backups:
`snapshots/<name>/file` for each snapshot (the live disk's name: `mount
--filename` names both) (read-only: the disk as it was),
`snapshots/Latest`, a symbolic link to the newest, and each snapshot
folder's metadata as extended attributes `user.bucketdisk.*`.

Inode numbers: the folder is SNAPSHOTS, the link LATEST; snapshot number
n has its folder at FIRST + 2n and its file at FIRST + 2n + 1.  Snapshot
numbers are never reused (snapshots.py), so an inode always means the
same, unchanging content, and the kernel may keep its pages.
"""
from __future__ import annotations

import calendar
import errno
import stat
import time

from ..device.device import BlockDevice
from ..volume.snapshotmaps import SnapshotCatalog
from ..volume.snapshots import Snapshot
from .replies import Attr, FuseError

SNAPSHOTS, LATEST = 4, 5
SNAPSHOTS_NAME = "snapshots"
FIRST = 16
LATEST_NAME = "Latest"
XATTR_PREFIX = "user.bucketdisk."
ENTRY_TIMEOUT = 1.0  # seconds the kernel may keep a name: snapshots come and go


def folder_of(number: int) -> int:
    return FIRST + 2 * number


def file_of(number: int) -> int:
    return FIRST + 2 * number + 1


def number_of(ino: int) -> tuple[int, bool]:
    """(snapshot number, whether `ino` is its file rather than its folder)."""
    number, is_file = divmod(ino - FIRST, 2)
    return number, bool(is_file)


def _seconds(utc_text: str) -> int:
    """Nanoseconds since the epoch of a snapshot's UTC ISO 8601 time."""
    return calendar.timegm(time.strptime(utc_text, "%Y-%m-%dT%H:%M:%SZ")) * 1_000_000_000


class SnapshotTree:
    """Lookups, attributes, listings and reads under `snapshots/`."""

    def __init__(self, device: BlockDevice, catalog: SnapshotCatalog, attr, disk_name: str = "file") -> None:
        """`attr(ino, mode, nlink, size, time_ns, timeout) -> Attr` makes
        attributes the way the rest of the mount does; `disk_name`: the
        name of each snapshot's disk in its folder."""
        self.device, self.catalog, self._attr = device, catalog, attr
        self.disk_name = disk_name

    def owns(self, ino: int) -> bool:
        return ino in (SNAPSHOTS, LATEST) or ino >= FIRST

    # -- names ------------------------------------------------------------------------

    def lookup(self, parent: int, name: str) -> int:
        if parent == SNAPSHOTS:
            snapshots = self.catalog.current()
            if name == LATEST_NAME and snapshots:
                return LATEST
            for snapshot in snapshots:
                if snapshot.name == name:
                    return folder_of(snapshot.number)
            raise FuseError(errno.ENOENT)
        number, is_file = number_of(parent)
        if parent < FIRST or is_file:
            raise FuseError(errno.ENOTDIR)
        self._snapshot(number)
        if name != self.disk_name:
            raise FuseError(errno.ENOENT)
        return file_of(number)

    def readdir(self, ino: int) -> list[tuple[str, int, int]]:
        dots = [(".", ino, stat.S_IFDIR), ("..", SNAPSHOTS, stat.S_IFDIR)]
        if ino == SNAPSHOTS:
            snapshots = self.catalog.current()
            link = [(LATEST_NAME, LATEST, stat.S_IFLNK)] if snapshots else []
            return dots + [(s.name, folder_of(s.number), stat.S_IFDIR) for s in snapshots] + link
        number, is_file = number_of(ino)
        if ino == LATEST or is_file:
            raise FuseError(errno.ENOTDIR)
        self._snapshot(number)
        return dots + [(self.disk_name, file_of(number), stat.S_IFREG)]

    def readlink(self, ino: int) -> str:
        if ino != LATEST:
            raise FuseError(errno.EINVAL)
        return self._newest().name

    # -- attributes ---------------------------------------------------------------------

    def getattr(self, ino: int, mounted_ns: int) -> Attr:
        if ino == SNAPSHOTS:
            return self._attr(ino, stat.S_IFDIR | 0o555, 2, 0, mounted_ns, ENTRY_TIMEOUT)
        if ino == LATEST:
            newest = self._newest()
            return self._attr(ino, stat.S_IFLNK | 0o777, 1, len(newest.name.encode()),
                              _seconds(newest.completed), 0.0)
        number, is_file = number_of(ino)
        snapshot = self._snapshot(number)
        if is_file:
            return self._attr(ino, stat.S_IFREG | 0o444, 1, self.device.size, _seconds(snapshot.started),
                              ENTRY_TIMEOUT)
        return self._attr(ino, stat.S_IFDIR | 0o555, 2, 0, _seconds(snapshot.completed), ENTRY_TIMEOUT)

    def xattrs(self, ino: int) -> dict[str, bytes]:
        """The extended attributes of a snapshot's folder (none elsewhere)."""
        number, is_file = number_of(ino)
        if ino < FIRST or is_file:
            return {}
        s = self._snapshot(number)
        fields = {"number": s.number, "name": s.name, "type": s.type, "started": s.started,
                  "completed": s.completed, "state": "complete", "changed_blocks": s.changed_blocks,
                  "new_bytes": s.new_bytes, "named": "yes" if s.named else "no"}
        return {XATTR_PREFIX + key: str(value).encode() for key, value in fields.items()}

    # -- reading ------------------------------------------------------------------------

    def open(self, ino: int, writing: bool) -> tuple[int, bool, bool]:
        number, is_file = number_of(ino)
        if ino < FIRST or not is_file:
            raise FuseError(errno.EISDIR)
        if writing:
            raise FuseError(errno.EROFS)
        self._snapshot(number)
        return 0, False, True  # its content never changes: the kernel may keep its pages

    def read_into(self, ino: int, out: memoryview, offset: int) -> int:
        snapshot = self._snapshot(number_of(ino)[0])
        return self.device.read_snapshot_into(self.catalog.map_of(snapshot), offset, out)

    # -----------------------------------------------------------------------------------

    def _snapshot(self, number: int) -> Snapshot:
        snapshot = self.catalog.by_number(number)
        if snapshot is None:
            raise FuseError(errno.ENOENT)
        return snapshot

    def _newest(self) -> Snapshot:
        snapshots = self.catalog.current()
        if not snapshots:
            raise FuseError(errno.ENOENT)
        return snapshots[-1]
