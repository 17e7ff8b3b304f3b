"""Opening a cache dir (cachedir.py) for a mount or `recover`: the checks
that keep a crashed mount's dirty files from being shown where they do
not belong, and the default size."""
import os
import shutil

from ..volume import layout
from .cachedir import STATE, CacheDir, CacheDirError


def open_cache_dir(path: str, store, record, *, limit: int, writable: bool, stale_ok: bool = False,
                   create: bool = True) -> CacheDir:
    """The cache dir at `path` for the volume with this VolumeRecord in
    `store`, checked for a mount: dirty files a crashed mount left are
    refused on a read-only mount (they would not be shown), and on a
    writable one when another mount has written the volume since
    (applying them could mix two histories), unless `stale_ok`; a writable
    one must take a write (a full disk is refused here, before the volume
    is opened).  `create`: make the directory if there is none (else
    refuse one that is not a cache dir).  Raises
    CacheDirError (one line)."""
    if not create and not os.path.isdir(path):
        raise CacheDirError(f"no cache dir at {os.path.abspath(path)}")
    if not create and not os.path.lexists(os.path.join(path, STATE)):  # nothing is made in it
        raise CacheDirError(f"{os.path.abspath(path)} is not a cache dir (no {STATE}): nothing to recover")
    cache = CacheDir(path, volume_uuid=record.uuid, url=store.url(), block_size=record.block_size, limit=limit)
    try:
        if writable:
            cache.check_writable()
        unsaved = cache.unsaved_blocks
        if unsaved and not writable:
            raise CacheDirError(f"cache dir {cache.path} holds {unsaved} blocks a mount left unsaved; mount the "
                                "volume writable with it (or run 'bucketdisk recover') first")
        if unsaved and not stale_ok:
            newest = _newest_map_epoch(store)
            if newest > cache.epoch:
                raise CacheDirError(
                    f"cache dir {cache.path} holds {unsaved} blocks a mount left unsaved, but another mount has "
                    f"written the volume since (epoch {newest}, the cache dir's {cache.epoch}); if only snapshots "
                    "or gc ran since, 'bucketdisk recover --force' stores them; 'bucketdisk recover --discard' "
                    "drops them")
    except BaseException:
        cache.close()
        raise
    return cache


def _newest_map_epoch(store) -> int:
    """The highest epoch of any root or journal in `store` (0: none)."""
    epochs = [0]
    for prefix in (layout.ROOTS, layout.JOURNAL):
        epochs += [name[0] for key in store.list(prefix) if (name := layout.name_of(key, prefix)) is not None]
    return max(epochs)


def free_space_limit(path: str, floor: int) -> int:
    """The default size of a cache dir at `path`: half the free space of
    its file system, at most 16 GiB, at least `floor` bytes."""
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    return max(floor, min(16 << 30, shutil.disk_usage(probe).free // 2))
