"""Load mfusepy bound to libfuse 3.

mfusepy picks libfuse 2 first when both are installed; libfuse 2 without
big_writes caps writes at 4 KiB, so libfuse 3 is selected explicitly before
the import and checked after it.
"""
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

FUSE = mfusepy.FUSE
FuseOSError = mfusepy.FuseOSError
Operations = mfusepy.Operations
