"""Which FUSE adapter serves a mount: `lowlevel`, the Cython binding of
libfuse 3's low-level API (_fuse.pyx: the Linux fast path, warm reads
served without the GIL), built by setup.py where libfuse 3's headers are;
or `mfusepy` (mfusepy_adapter.py: libfuse's path API over ctypes; macOS
with macFUSE or FUSE-T, FreeBSD, Linux without the headers).  Both serve
the same operations (operations.py)."""
from __future__ import annotations

import importlib.util

from ..errors import UserError

LOWLEVEL, MFUSEPY = "lowlevel", "mfusepy"
ADAPTERS = (LOWLEVEL, MFUSEPY)


def lowlevel_built() -> bool:
    """Whether the libfuse 3 binding was compiled into this install (not imported)."""
    return importlib.util.find_spec("bucketdisk.fs._fuse") is not None


def default_adapter() -> str:
    return LOWLEVEL if lowlevel_built() else MFUSEPY


def check_adapter(name: str | None) -> str:
    """The adapter a mount asked for (None: the default), if this install
    has it; raises UserError (one line) otherwise.  Loads mfusepy (and its
    libfuse) when that is the one, so that a missing library is said
    before anything else happens."""
    name = name or default_adapter()
    if name not in ADAPTERS:
        raise UserError(f"--fuse must be one of {', '.join(ADAPTERS)}, not {name!r}")
    if name == LOWLEVEL and not lowlevel_built():
        raise UserError("--fuse lowlevel: this install has no libfuse 3 binding (built without libfuse 3's "
                        "headers, or with BUCKETDISK_FAST_FUSE=0); use --fuse mfusepy")
    if name == MFUSEPY:
        from .mfusepy_adapter import load_mfusepy

        load_mfusepy()
    return name


def version_words() -> str:
    """What `bucketdisk --version` says about FUSE (nothing is loaded)."""
    if lowlevel_built():
        return "FUSE adapter: lowlevel, the libfuse 3 binding; --fuse mfusepy also works"
    return "FUSE adapter: mfusepy; the libfuse 3 binding was not built"
