"""What is mounted where, read from /proc/self/mountinfo.

stat() on a mount whose daemon died fails with ENOTCONN, so mountpoints
are looked up by path in the kernel's table instead.
"""
import os

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


def fstype_at(path: str) -> str | None:
    """The filesystem type mounted exactly at `path`, or None."""
    target = os.path.abspath(path)
    found = None
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            if len(fields) >= 5 and _unescape(fields[4]) == target:
                found = right.split()[0]  # the last mount on a path is the visible one
    return found


def is_bucketdisk_mount(path: str) -> bool:
    return fstype_at(path) == FSTYPE
