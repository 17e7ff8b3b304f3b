"""What is mounted where, read from /proc/self/mountinfo.

stat() on a mount whose daemon died fails with ENOTCONN, so mountpoints
are looked up by path in the kernel's table instead.
"""
import os
import re

FSTYPE = "fuse.bucketdisk"


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as octal.
    out, i = [], 0
    while i < len(field):
        if field[i] == "\\" and i + 3 < len(field) + 0 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def _entry_at(path: str) -> tuple[list[str], list[str]] | None:
    """(fields before ' - ', fields after) of the mount exactly at `path`."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape(fields[4]) == target:
                found = fields, right.split()  # the last mount on a path is the visible one
    return found


def fstype_at(path: str) -> str | None:
    """The filesystem type mounted exactly at `path`, or None."""
    entry = _entry_at(path)
    return entry[1][0] if entry else None


def device_at(path: str) -> str | None:
    """The "major:minor" device number of the mount at `path`, or None."""
    entry = _entry_at(path)
    return entry[0][2] if entry else None


def is_bucketdisk_mount(path: str) -> bool:
    return fstype_at(path) == FSTYPE


def loop_backing_file(path: str) -> str | None:
    """The file behind the loop device (or a partition of one) mounted
    exactly at `path`, as the kernel names it (/sys/block/loopN/loop/
    backing_file, loop(4)); None when nothing is mounted there or its
    source is not a loop device."""
    entry = _entry_at(path)
    if entry is None or len(entry[1]) < 2:
        return None
    match = re.fullmatch(r"/dev/loop(\d+)(?:p\d+)?", _unescape(entry[1][1]))
    if match is None:
        return None
    try:
        with open(f"/sys/block/loop{match.group(1)}/loop/backing_file") as f:
            return f.read().rstrip("\n")
    except OSError:
        return None
