"""Load mfusepy bound to libfuse 3.

mfusepy picks libfuse 2 first when both are installed; libfuse 2 without
big_writes caps writes at 4 KiB, so libfuse 3 is selected explicitly before
the import and checked after it.
"""
import ctypes
import os

from ..errors import UserError

os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")

try:
    import mfusepy
except OSError as e:  # libfuse missing
    raise UserError(f"libfuse 3 is not installed ({e}); install the fuse3 package") from None

if mfusepy.fuse_version_major != 3:
    raise UserError(
        f"bucketdisk needs libfuse 3, found {mfusepy.fuse_version_major}.{mfusepy.fuse_version_minor}"
    )



def _view(buf, size: int) -> memoryview:
    """The kernel request's buffer as a writable byte view (no copy)."""
    address = ctypes.cast(buf, ctypes.c_void_p).value
    return memoryview((ctypes.c_ubyte * size).from_address(address)).cast("B")


class FUSE(mfusepy.FUSE):
    """mfusepy with zero-copy data callbacks.

    mfusepy copies every write into a new bytes object and every read out
    of one; here the operations see libfuse's own buffer as a memoryview
    instead: `read_into(path, view, offset, fh) -> int` fills it and
    `write(path, view, offset, fh)` reads it.  Neither may keep the view
    after returning (libfuse reuses the buffer).
    """

    def read(self, path, buf, size, offset, fip):
        fh = fip.contents if self.raw_fi else fip.contents.fh
        return self.operations.read_into(self._path(path), _view(buf, size), offset, fh)

    def write(self, path, buf, size, offset, fip):
        fh = fip.contents if self.raw_fi else fip.contents.fh
        return self.operations.write(self._path(path), _view(buf, size), offset, fh)

    def _path(self, path: bytes | None) -> str | None:
        return None if path is None else path.decode(self.encoding, self.errors)


FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
