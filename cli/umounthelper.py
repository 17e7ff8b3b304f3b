"""`umount.fuse.bucketdisk`: the helper umount(8) runs for a mount of type
fuse.bucketdisk, so that `umount DIR` (and systemd stopping a fstab
mount at shutdown) returns only once everything the mount held is
stored and its daemon has exited, as `bucketdisk unmount` does.
Without it umount(8) detaches at once and the daemon stores its data
afterwards, on its own: at shutdown, maybe after the network is gone.

The calling convention is umount(8)'s, section "EXTERNAL HELPERS":

    umount.fuse.bucketdisk DIR [-flnrv] [-N NAMESPACE] [-t TYPE.SUBTYPE]

-l (lazy) and -f (force) keep the kernel's meaning: they are handed to
`umount -i` (-i: no helper), which detaches (or aborts) without waiting;
-n, -r and -v change nothing here.
"""
import getopt
import os
import sys

PROG = "umount.fuse.bucketdisk"


def main(argv: list[str] | None = None) -> int:
    """Run as umount(8) runs a helper; returns the exit status (0 unmounted)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        flags, positional = getopt.gnu_getopt(argv, "flnrvN:t:")
    except getopt.GetoptError as e:
        return _fail(f"{e} (usage: {PROG} MOUNTPOINT [-flnrv])")
    if len(positional) != 1:
        return _fail(f"expected one mountpoint, got {len(positional)} arguments (usage: {PROG} MOUNTPOINT [-flnrv])")
    given = {flag for flag, _ in flags}
    if "-N" in given:
        return _fail("unmounting in another namespace (-N) is not supported")
    kernel = [flag for flag in ("-f", "-l") if flag in given]
    if kernel:  # as the kernel does it: nothing waits for the daemon
        os.execvp("umount", ["umount", "-i", *kernel, positional[0]])
    from .main import main as bucketdisk

    return bucketdisk(["unmount", positional[0]])


def _fail(message: str) -> int:
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
