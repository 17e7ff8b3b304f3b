"""Serving a volume through FUSE until it is unmounted."""
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..device.device import BlockDevice
from ..store import S3Options, open_store
from ..volume.volume import Volume
from .fuse_lib import FUSE
from .mountpoints import FSTYPE
from .operations import DiskOperations

log = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter from glibc's malloc.h


@dataclass(frozen=True)
class MountOptions:
    cache_size: int = 256 << 20
    threads: int = 8
    readahead: int = 8
    read_only: bool = False
    force: bool = False
    s3: S3Options = S3Options()


def render_stats(device: BlockDevice, url: str, started: float) -> str:
    values = {"pid": os.getpid(), "uptime_seconds": int(time.time() - started),
              "read_only": int(device.read_only), **device.counters()}
    lines = [f"volume: {url}"] + [f"{name}: {value}" for name, value in sorted(values.items())]
    return "\n".join(lines) + "\n"


def limit_heap_growth() -> None:
    """Keep freed block buffers from inflating the daemon's RSS.

    Every flush and fetch thread otherwise gets its own glibc arena, and
    1 MiB buffers freed in one arena are not reused by another; two arenas
    cut peak RSS of a 256 MiB write + read from 520 to 425 MiB here.  (A
    fixed low mmap threshold cut it to 309 MiB but cost a third of the cold
    read speed in page faults; block buffers should come from a pool.)
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, 2)
    except (OSError, AttributeError):
        log.info("mallopt unavailable; heap tuning skipped")


def serve(url: str, mountpoint: str, options: MountOptions,
          on_ready: Callable[[], None] | None = None) -> None:
    """Open the volume, mount it, and block until it is unmounted.

    Raises UserError for a refused mount (nothing was changed); raises the
    final flush's error if dirty data could not be stored at unmount.
    """
    limit_heap_growth()
    store = open_store(url, s3=options.s3)
    volume = Volume(store, writable=not options.read_only, force=options.force)
    device = BlockDevice(volume, cache_size=options.cache_size, threads=options.threads,
                         readahead=options.readahead)
    started = time.time()
    operations = DiskOperations(device, lambda: render_stats(device, url, started), on_ready)
    fuse_options = {"fsname": url.replace(",", "_"), "subtype": FSTYPE.split(".", 1)[1], "default_permissions": True}
    if options.read_only:
        fuse_options["ro"] = True
    log.info("serving %s on %s", url, mountpoint)
    try:
        FUSE(operations, mountpoint, foreground=True, raw_fi=True, **fuse_options)
    except RuntimeError as e:
        # libfuse refused the mount before init (it printed why on stderr).
        device.close()
        raise OSError(f"libfuse could not mount {mountpoint} (code {e})") from None
    if operations.close_error is not None:
        raise operations.close_error
    log.info("unmounted %s cleanly", mountpoint)
