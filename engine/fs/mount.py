"""Serving a volume through FUSE until it is unmounted."""
import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..codec.keys import KeySource
from ..device.budget import check_cache_size
from ..device.cacheopen import free_space_limit, open_cache_dir
from ..device.device import BlockDevice
from ..errors import UserError
from ..store import S3Options, open_store
from ..volume.record import check_record_fits, read_record
from ..volume.snapshotmaps import SnapshotCatalog
from ..volume.snapshots import SnapshotRecords
from ..volume.volume import Volume
from .adapters import LOWLEVEL, check_adapter
from .control import ControlServer
from .history import HistoryService
from .mountpoints import FSTYPE, device_at
from .operations import DISK, DISK_NAME, MAX_IO, MAX_READAHEAD, DiskOperations
from .statsfile import StatsFile
from .signals import HangupReopensLog, log_file_of_stderr

log = logging.getLogger(__name__)

# mallopt parameters from glibc's malloc.h
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

# libfuse worker threads.  Each keeps a request buffer of MAX_IO for good
# (a 1 MiB write fills it) and a read of up to MAX_IO allocates its reply,
# so their memory is 2 MiB per thread at most; a fixed number keeps it out
# of --threads (which sizes the fetch and upload threads behind them).
FUSE_THREADS = 16


@dataclass(frozen=True)
class MountOptions:
    cache_size: int = 256 << 20
    threads: int = 16
    readahead: int = 8
    read_only: bool = False
    force: bool = False
    snapshot: str | None = None  # mount that snapshot alone (read-only)
    snapshot_every: float | None = None  # seconds between scheduled snapshots
    keep: dict | None = None  # prune's keep options after each (None: Time Machine's rule)
    compress_level: int | None = None  # zstd level of the blocks it stores (None: the record's)
    keys: KeySource | None = None  # an encrypted volume's key (codec/keys.py)
    cache_dir: str | None = None  # blocks on local disk as well (device/cachedir.py)
    cache_dir_size: int | None = None  # bytes it may hold (None: free_space_limit's default)
    s3: S3Options = S3Options()
    log: str | None = None  # the daemon's --log file, which SIGHUP reopens when stderr is it (signals.py)
    stats_file: str | None = None  # the metrics for node_exporter, rewritten every stats_every seconds
    stats_every: float = 15.0
    fuse: str | None = None  # the FUSE adapter, adapters.py (None: its default)
    filename: str = DISK_NAME  # the disk's name in the mount (operations.check_disk_name)


@dataclass(frozen=True)
class Served:
    """What serves a mount, as its stats say it."""
    url: str
    control: str      # the control socket's path
    adapter: str      # adapters.LOWLEVEL or MFUSEPY
    libfuse: str      # 'MAJOR.MINOR' of the libfuse it runs with
    disk_file: str    # the disk's name in the mount


def render_stats(device: BlockDevice, served: Served, started: float, warning: str | None) -> str:
    values = {"pid": os.getpid(), "uptime_seconds": int(time.time() - started),
              "read_only": int(device.read_only), **device.counters()}
    lines = [f"volume: {served.url}", f"control_socket: {served.control}", f"disk_file: {served.disk_file}",
             f"fuse_adapter: {served.adapter}", f"libfuse: {served.libfuse}"]
    lines += [f"warning: {warning}"] if warning else []  # a rolled-back store (rollback.py)
    lines += [f"{name}: {value}" for name, value in sorted(values.items())]
    error = device.store_error()
    if error is not None:  # only while storing fails
        lines.append(f"store_error: {error}")
    return "\n".join(lines) + "\n"


def tune_heap() -> None:
    """Keep block-sized buffers on the heap, in one arena.

    Every flush and fetch thread otherwise gets its own glibc arena, and
    buffers freed in one arena are not reused by another: each arena keeps
    its own peak, so with two a 4M-block mount with a 16M cache peaked at
    69-75 MiB, with one at 52-57 MiB (the device counts every buffer against
    --cache-size, and allocates them all at one size so that a freed one
    is reused: see codec Buffers; one arena makes that hold across
    threads).  Python's small objects have their own allocator, so one
    arena costs little contention.  glibc also serves each 1 MiB
    allocation with a fresh mmap until its adaptive threshold catches up,
    and trims the heap top after frees; both cost a page fault per 4 KiB
    touched (encoding a block took 1.4 ms instead of 0.3 ms).  A fixed
    threshold (blocks of 64M and up are mapped, freed at once) and a high
    trim threshold keep the buffers in the heap for reuse.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(M_ARENA_MAX, 1)
        libc.mallopt(M_MMAP_THRESHOLD, 64 << 20)
        libc.mallopt(M_TRIM_THRESHOLD, 512 << 20)
    except (OSError, AttributeError):
        log.info("mallopt unavailable; heap tuning skipped")


def widen_kernel_readahead(mountpoint: str, size: int) -> None:
    """Let the kernel read ahead `size` bytes of the disk file.

    A FUSE mount starts with the kernel's default window of 128 KiB, which
    splits a sequential read into 128 KiB requests, each waiting its turn
    in Python; a window of a few maximal requests keeps several in flight.
    Only root may change it; otherwise the default stays.  Called from
    FUSE init: the kernel then lowers it to the max_readahead we answer.
    """
    device = device_at(mountpoint)
    if device is None:
        return
    try:
        with open(f"/sys/class/bdi/{device}/read_ahead_kb", "w") as f:
            f.write(str(size // 1024))
    except OSError as e:
        log.info("kernel read-ahead left at its default: %s", e)


def serve(url: str, mountpoint: str, options: MountOptions,
          on_ready: Callable[[], None] | None = None, on_warning: Callable[[str], None] | None = None) -> None:
    """Open the volume, mount it, and block until it is unmounted.
    `on_warning(line)` hears what the user must know before the mount is
    used (a rolled-back store).

    Raises UserError for a refused mount (nothing was changed); raises the
    final flush's error if dirty data could not be stored at unmount.
    SIGTERM and SIGINT end the mount cleanly (flushed, unmounted); SIGHUP
    reopens the log file (signals.py).
    """
    tune_heap()  # before any thread of ours starts (the SIGHUP one): a thread may take an arena of its own
    with HangupReopensLog(log_file_of_stderr(options.log)):
        _serve(url, mountpoint, options, on_ready, on_warning)


def _serve(url: str, mountpoint: str, options: MountOptions, on_ready: Callable[[], None] | None,
           on_warning: Callable[[str], None] | None) -> None:
    adapter = check_adapter(options.fuse)  # a missing libfuse is said before the lease is taken
    store = open_store(url, s3=options.s3)
    try:
        record = read_record(store)
        if record is not None:  # (no record: Volume says so)
            check_record_fits(record)  # refuse a map this machine cannot hold before allocating it
            check_cache_size(options.cache_size, record.block_size)  # before taking the lease
    except BaseException:
        store.close()
        raise
    if options.compress_level is not None and record is not None and record.compression == "none":
        store.close()
        raise UserError("--compress-level: this volume stores blocks uncompressed (created with --compress none)")
    cache = None
    if options.cache_dir is not None and record is not None:
        limit = options.cache_dir_size or free_space_limit(options.cache_dir, 2 * options.cache_size)
        cache = open_cache_dir(options.cache_dir, store, record, limit=limit, writable=not options.read_only)
    try:
        volume = Volume(store, writable=not options.read_only, force=options.force, snapshot=options.snapshot,
                        compress_level=options.compress_level, keys=options.keys)
    except BaseException:
        if cache is not None:
            cache.close()
        raise
    if volume.rollback and on_warning is not None:
        on_warning(volume.rollback)
    if volume.broken_chain and on_warning is not None:  # (a read-only mount: a writable one refuses)
        on_warning(volume.broken_chain)
    if not options.read_only:  # temporary files a killed writer left (file://): ours to tidy now
        removed = store.tidy_scratch()
        if removed:
            log.warning("removed %d temporary files an earlier writer left behind", removed)
    # --retry-time bounds a wait for cache room on every store, file:// too:
    # the application sees EIO no later than it would for a failing request.
    device = BlockDevice(volume, cache_size=options.cache_size, threads=options.threads,
                         readahead=options.readahead, retry_time=options.s3.retry_time, cache_dir=cache)
    try:
        device.recover()  # what a crashed mount left in the cache dir, stored before anything is served
    except BaseException:
        device.abort()
        raise
    if options.read_only and options.snapshot is None:
        device.follow()  # fsynced pages not yet in their blocks are merged in memory
    started = time.time()

    served = None  # what the stats name: set once the session is made, before it is ready

    def stats() -> str:
        return render_stats(device, served, started, volume.rollback)

    stats_file: list[StatsFile] = []  # written from the moment the mount is live

    def ready() -> None:
        if options.readahead > 0:
            widen_kernel_readahead(mountpoint, MAX_READAHEAD)
        if options.stats_file is not None:
            stats_file.append(StatsFile(options.stats_file, stats, options.stats_every))
        if on_ready is not None:
            on_ready()

    # The live disk's mount shows its snapshots beside it (a snapshot's mount does not).
    catalog = None if options.snapshot is not None else \
        SnapshotCatalog(SnapshotRecords.of(store, volume.record), volume.maps)
    service = HistoryService(device, volume, on_change=catalog.changed if catalog else None)
    if options.snapshot_every:
        service.schedule(options.snapshot_every, options.keep or {})
    control = ControlServer(service.handle)

    def stop_history() -> None:
        for writer in stats_file:
            writer.close()
        service.close()
        control.close()

    operations = DiskOperations(device, stats, ready, stop_history, snapshots=catalog, disk_name=options.filename)
    fuse_options = [f"fsname={url.replace(',', '_')}", f"subtype={FSTYPE.split('.', 1)[1]}",
                    "default_permissions"] + (["ro"] if options.read_only else [])
    try:
        session, libfuse = _session(adapter, operations, mountpoint, fuse_options, device)
    except BaseException:
        stop_history()
        device.close()
        raise
    served = Served(url, control.path, adapter, libfuse, options.filename)
    log.info("serving %s on %s through %s (libfuse %s)", url, mountpoint, adapter, libfuse)
    try:
        session.run()
    except OSError:
        # libfuse refused the mount before init (it printed why on stderr).
        stop_history()
        device.close()
        raise
    finally:
        stop_history()
    if operations.close_error is not None:
        raise operations.close_error
    log.info("unmounted %s cleanly", mountpoint)


def _session(adapter: str, operations: DiskOperations, mountpoint: str, fuse_options: list[str],
             device: BlockDevice):
    """(the session that serves `operations` through `adapter`, the libfuse version it runs with)."""
    if adapter == LOWLEVEL:
        from ._fuse import Session, libfuse_version

        session = Session(operations, mountpoint, fuse_options, max_write=MAX_IO, max_readahead=MAX_READAHEAD,
                          max_threads=FUSE_THREADS, fast_ino=DISK, fast_reader=device.fast_reader())
        return session, libfuse_version()
    from .mfusepy_adapter import MfusepySession

    session = MfusepySession(operations, mountpoint, fuse_options, max_write=MAX_IO, max_readahead=MAX_READAHEAD,
                             max_threads=FUSE_THREADS)
    return session, session.library
