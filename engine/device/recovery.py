"""`bucketdisk recover`: store what a crashed mount left in its cache dir
(or drop it), without mounting.  A mount with the same --cache-dir does
the same before it serves; this is for when no mount is wanted."""
from ..codec.keys import KeySource
from ..store import S3Options, open_store
from ..volume.create import missing_volume
from ..volume.record import open_record
from ..volume.volume import Volume
from .budget import check_cache_size
from .cacheopen import free_space_limit, open_cache_dir
from .device import BlockDevice


def recover_cache_dir(url: str, path: str, *, s3: S3Options, keys: KeySource | None, cache_size: int,
                      threads: int, discard: bool = False, force: bool = False,
                      progress=None) -> tuple[int, str, dict]:
    """(blocks, "stored" or "dropped", the cache dir's counters: how many
    files were damaged, pages cut) for the dirty files of the cache dir
    at `path` (0 when it holds none).  Storing takes the volume's lease as
    a writable mount does.  `force` stores them even though another mount
    has written the volume since; `discard` deletes them instead.  Raises
    UserError (a refusal: nothing changed) or StoreError (the blocks stay
    in the cache dir).  `progress` (volume/sweep.py's Progress) sees the
    blocks read and stored."""
    store = open_store(url, s3=s3)
    try:
        record = open_record(store, keys)
        if record is None:
            raise missing_volume(store)
        check_cache_size(cache_size, record.block_size)
        cache = open_cache_dir(path, store, record, limit=free_space_limit(path, 2 * cache_size),
                               writable=True, stale_ok=force or discard, create=False)
    except BaseException:
        store.close()
        raise
    if discard or not cache.unsaved_blocks:
        try:
            return (cache.discard_dirty() if discard else 0), "dropped", cache.stats()
        finally:
            cache.close()
            store.close()
    try:  # the key once unwrapped (a passphrase costs an Argon2 run)
        opened = KeySource(data_key=record.keys.data_key, offered=True) if record.encrypted else keys
        volume = Volume(store, writable=True, keys=opened)
    except BaseException:
        cache.close()
        store.close()
        raise
    device = BlockDevice(volume, cache_size=cache_size, threads=threads, readahead=0, retry_time=s3.retry_time,
                         cache_dir=cache)
    try:
        count = device.recover(progress)
        counters = cache.stats()
    except BaseException:
        device.abort()
        raise
    device.close()
    return count, "stored", counters
