"""Two small helpers on local files, shared by the file:// store and the
cache dir."""
import errno
import os


def fsync_dir(path: str) -> None:
    """fsync(2) a directory, so that names made or removed in it are on disk
    (a file system that cannot fsync directories is let be).  Raises OSError."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:
            raise
    finally:
        os.close(fd)


def unlink_quietly(path: str) -> None:
    """Delete a file if it can be (a scratch file; nothing depends on it going)."""
    try:
        os.unlink(path)
    except OSError:
        pass
