"""The cache dir: the device's blocks on local disk as well as in memory
(`mount --cache-dir DIR`).

Under DIR, for one volume (`volume.json` names its UUID) and one process
at a time (an flock on `lock`, let go when the process ends, even by
kill -9):

`dirty/<block>` (16 hex digits): a block written since its content was
last durable in the store.  A header (cachefiles.py: two XXH3-64s per
4 KiB page, before and after its last write; 0 for a page the file does
not hold), then the block's bytes at `data_offset`.  Pages the file does not hold are the block as the store
has it, or zeros when the block was punched (ZERO_BASE).  Every write
updates its pages and their checksums before the device acknowledges it,
so after a crash of the daemon (the kernel keeps what it wrote) the file
shows every acknowledged write to the block.  The store may hold newer
content than when the file was begun, but only content the file's own
pages were written into (a file is begun only once the block's content
is durable, see `retire`), so the file's pages over what the store holds
are the block's newest content.  A page whose checksum does not match
(a crash of the machine cut its write) is taken from the store, as if
the write had not reached the disk: the directory is synced to disk every
SYNC_SECONDS and at every fsync (before the fsync returns), so only
writes since the last sync can be cut so, as on a disk with a volatile
write cache.

`clean/<hh>/<hash>`: a block's content, named by its content hash (keyed
on an encrypted volume; the bytes are plaintext, as in the kernel's page
cache: the directory is made mode 0700), checked against that hash when
read back, so a stale or damaged file is never served.  Kept within the
size limit, the least recently used going first.

The epoch of the writable mount that used the directory last is kept in
`volume.json`: dirty files are applied only to a volume no other mount
has written since (mount.py checks, recover.py can override).
"""
from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable, Iterator

from ..errors import UserError
from ..localfiles import fsync_dir, unlink_quietly
from .cachefiles import ZERO_BASE, Layout, Recovered, read_clean, read_dirty, syncfs, write_all, write_clean

log = logging.getLogger(__name__)

SYNC_SECONDS = 1.0           # how often written files are synced to disk
MAX_OPEN_FILES = 64          # dirty files kept open at once
# Files a cache dir holds at most, whatever its size: each costs its name in
# the books (about 150 bytes) and a stat when the directory is opened, so
# with blocks of 4K a cache dir holds at most 512 MiB of them.
MAX_FILES = 65536
QUIET_SECONDS = 60.0         # one warning about a failing cache disk per this long (they are counted)
STATE = "volume.json"


class CacheDirError(UserError):
    """A cache dir that cannot serve this mount (one line: why)."""


class DirtyFile:
    """What a block's dirty file holds: each page's checksum now (8 bytes,
    0 for a page the file does not hold) and what the others are."""

    __slots__ = ("sums", "zero_base")

    def __init__(self, pages: int, zero_base: bool = False, sums: bytearray | None = None) -> None:
        self.sums = sums if sums is not None else bytearray(8 * pages)
        self.zero_base = zero_base  # pages not held are zeros (punched), else the store's

    def whole(self) -> bool:
        """Whether the file alone gives the whole block."""
        return self.zero_base or 0 not in array("Q", self.sums)


class CacheDir:
    """A volume's cache dir, opened by one process (see the module docstring).

    Thread-safe: the device calls the dirty-file methods under its own
    lock, fetch threads the clean ones; an internal lock guards the books.
    """

    def __init__(self, path: str, *, volume_uuid: str, url: str, block_size: int, limit: int) -> None:
        """Open (or make) the cache dir at `path` for the volume with this
        UUID and block size; `limit`: bytes of files it may hold.  Raises
        CacheDirError (one line) when the directory belongs to another
        volume, is in use, is not writable or is not a cache dir.  Blocks
        are kept and served once `attach` says how they are named."""
        self.path = os.path.abspath(path)
        self.uuid = volume_uuid
        self.url, self.block_size = url, block_size
        self.layout = Layout(block_size, volume_uuid)
        self.pages = self.layout.pages
        self.capacity = min(MAX_FILES, limit // self.layout.file_size)  # files it may hold
        self._block_hash: Callable[[bytes], bytes] | None = None
        self._lock = threading.Lock()
        self._dirty: dict[int, DirtyFile] = {}  # block -> what its dirty file holds
        self._files: OrderedDict[int, int] = OrderedDict()  # block -> open fd of its dirty file
        self._clean: OrderedDict[bytes, None] = OrderedDict()  # hashes of clean files, oldest use first
        self._writes = 0   # files written (or made, or removed) so far...
        self._synced = 0   # ...and how many of those a sync has covered
        self.counters = {"cache_dir_hits": 0, "cache_dir_damaged": 0, "cache_dir_errors": 0,
                         "recovered_blocks": 0, "recovered_torn_pages": 0}
        self._lock_fd = -1
        self._warned = -QUIET_SECONDS
        # Why no write is taken any more: a dirty file that no longer shows
        # its block's newest content could not be deleted (see `drop`).
        self.broken: str | None = None
        self._open()
        self._stop = threading.Event()
        self._syncer = threading.Thread(target=self._sync_loop, name="cache-dir-sync", daemon=True)
        self._syncer.start()

    # -- opening ----------------------------------------------------------------------

    def _open(self) -> None:
        self._make_dir()
        self._refuse_foreign()  # before anything is made in it
        try:
            self._lock_fd = os.open(os.path.join(self.path, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as e:
            raise CacheDirError(f"cache dir {self.path} is not writable: {e.strerror}") from None
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise CacheDirError(f"cache dir {self.path} is in use by another mount") from None
        try:
            self.state = self._check_state()
            for sub in ("dirty", "clean"):
                os.makedirs(os.path.join(self.path, sub), mode=0o700, exist_ok=True)
            probe = os.path.join(self.path, "dirty", ".probe")  # (a file system mounted read-only, say)
            os.close(os.open(probe, os.O_WRONLY | os.O_CREAT, 0o600))
            os.unlink(probe)
            self._dirty = {index: DirtyFile(self.pages) for index in self._dirty_files()}  # (recover reads them)
            self._load_clean()
        except OSError as e:
            os.close(self._lock_fd)
            raise CacheDirError(f"cache dir {self.path} is not usable: {e.strerror or e}") from None
        except BaseException:
            os.close(self._lock_fd)
            raise

    def _make_dir(self) -> None:
        try:
            os.makedirs(self.path, mode=0o700, exist_ok=True)
        except OSError as e:
            raise CacheDirError(f"cannot make cache dir {self.path}: {e.strerror}") from None
        if not os.access(self.path, os.R_OK | os.W_OK | os.X_OK):
            raise CacheDirError(f"cache dir {self.path} is not writable by this user")

    def _check_state(self) -> dict:
        """The directory's record of its volume, made if the directory is
        new (empty); CacheDirError if it is another volume's or not a cache dir."""
        where = os.path.join(self.path, STATE)
        try:
            with open(where, "rb") as f:
                state = json.loads(f.read())
            if not isinstance(state, dict):
                raise ValueError
        except FileNotFoundError:
            self._refuse_foreign()
            state = {"uuid": self.uuid, "volume": self.url, "block_size": self.block_size, "epoch": 0}
            self._write_state(state)
            return state
        except ValueError:
            raise CacheDirError(f"cache dir {self.path}: {STATE} is damaged; delete the directory to "
                                "start it afresh") from None
        if state.get("uuid") != self.uuid or state.get("block_size") != self.block_size:
            raise CacheDirError(f"cache dir {self.path} belongs to another volume ({state.get('volume')}, "
                                f"UUID {state.get('uuid')}); use another directory, or delete this one")
        return state

    def _refuse_foreign(self) -> None:
        """CacheDirError if the directory holds anything but a cache dir's files."""
        if os.path.exists(os.path.join(self.path, STATE)):
            return
        if set(os.listdir(self.path)) - {"lock", "dirty", "clean", "damaged"}:
            raise CacheDirError(f"{self.path} is not empty and is not a bucketdisk cache dir")

    def _write_state(self, state: dict) -> None:
        where = os.path.join(self.path, STATE)
        scratch = where + ".new"
        with open(scratch, "wb") as f:
            f.write(json.dumps(state, sort_keys=True).encode())
            f.flush()
            os.fsync(f.fileno())
        os.replace(scratch, where)
        fsync_dir(self.path)

    def _dirty_files(self) -> list[int]:
        found = []
        for name in os.listdir(os.path.join(self.path, "dirty")):
            try:
                found.append(int(name, 16))
            except ValueError:
                continue  # (a scratch file: never ours to read)
        return sorted(found)

    def _load_clean(self) -> None:
        """Know the clean files, least recently used first (by mtime: a read touches it)."""
        found = []
        top = os.path.join(self.path, "clean")
        for sub in os.listdir(top):
            for name in os.listdir(os.path.join(top, sub)) if len(sub) == 2 else ():
                if name.endswith(".new"):  # a copy cut short
                    unlink_quietly(os.path.join(top, sub, name))
                    continue
                try:
                    content_hash = bytes.fromhex(name)
                    found.append((os.stat(os.path.join(top, sub, name)).st_mtime, content_hash))
                except (ValueError, OSError):
                    continue
        for _, content_hash in sorted(found):
            self._clean[content_hash] = None

    @property
    def epoch(self) -> int:
        """The epoch of the writable mount that last used this directory (0: none)."""
        return int(self.state.get("epoch", 0))

    @property
    def unsaved_blocks(self) -> int:
        """Blocks whose dirty files the store may not hold yet."""
        with self._lock:
            return len(self._dirty)

    def check_writable(self) -> None:
        """Write the directory's record again: CacheDirError (naming the
        directory) if its disk does not take it (full, read-only)."""
        try:
            self._write_state(self.state)
        except OSError as e:
            raise CacheDirError(f"cache dir {self.path} does not take writes: {e.strerror or e}") from None

    def attach(self, block_hash: Callable[[bytes], bytes], epoch: int | None) -> None:
        """Serve a device whose blocks are named by `block_hash(data)`;
        `epoch`: its writable mount's (recorded durably before it writes
        anything here), None for a read-only one."""
        self._block_hash = block_hash
        if epoch is not None:
            self.state = {**self.state, "epoch": epoch, "volume": self.url}
            try:
                self._write_state(self.state)
            except OSError as e:
                raise CacheDirError(f"cache dir {self.path}: recording this mount failed: {e.strerror or e}") \
                    from None

    # -- dirty files ------------------------------------------------------------------

    def write(self, index: int, block, first: int, last: int) -> None:
        """Pages `first` to `last` (4 KiB each) of the block changed; `block`
        is its whole content (a buffer of block_size bytes).  Raises OSError
        (the file is then dropped: see `drop`)."""
        with self._lock:
            self._refuse_if_broken()
            fd = self._file(index, zero_base=False)
            sums = self._dirty[index].sums
            span = slice(8 * first, 8 * (last + 1))
            data, after, pairs, data_at, pairs_at = self.layout.pages_of(block, first, last, bytes(sums[span]))
            write_all(fd, pairs, pairs_at)  # both checksums first: see cachefiles.py
            write_all(fd, data, data_at)
            sums[span] = after
            self._writes += 1

    def punch(self, index: int) -> None:
        """The block is all zeros now: its file starts afresh, holding no page."""
        with self._lock:
            self._refuse_if_broken()
            self._close_file(index)
            self._dirty.pop(index, None)
            self._file(index, zero_base=True)
            self._writes += 1

    def _file(self, index: int, zero_base: bool) -> int:
        """The open dirty file of the block, begun (header, no page) if the
        block has none (lock held)."""
        fd = self._files.get(index)
        if fd is not None:
            self._files.move_to_end(index)
            return fd
        path = self._dirty_path(index)
        if index in self._dirty:
            fd = os.open(path, os.O_RDWR)
        else:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
            try:
                write_all(fd, self.layout.header(index, ZERO_BASE if zero_base else 0, self.epoch), 0)
                os.ftruncate(fd, self.layout.file_size)  # a sparse file: pages not written are holes
            except BaseException:
                os.close(fd)
                raise
            self._dirty[index] = DirtyFile(self.pages, zero_base)
        self._files[index] = fd
        while len(self._files) > MAX_OPEN_FILES:
            os.close(self._files.popitem(last=False)[1])
        return fd

    def holds(self, index: int) -> bool:
        """Whether the block has a dirty file."""
        with self._lock:
            return index in self._dirty

    def dirty_blocks(self) -> list[int]:
        with self._lock:
            return list(self._dirty)

    def has_dirty_room(self) -> bool:
        """Whether one more block may get a dirty file within the size limit."""
        with self._lock:
            return len(self._dirty) < self.capacity

    def retire(self, index: int, content_hash: bytes | None) -> None:
        """The block's content is durable in the store and unchanged since:
        its dirty file goes, kept as a clean file under `content_hash` (None
        or zeros: not kept) when it holds the whole block."""
        with self._lock:
            dirty = self._dirty.pop(index, None)
            if dirty is None:
                return
            self._close_file(index)
            whole = dirty.whole()
            path = self._dirty_path(index)
            self._writes += 1
            try:
                if content_hash is not None and whole and content_hash not in self._clean:
                    os.makedirs(os.path.dirname(self._clean_path(content_hash)), mode=0o700, exist_ok=True)
                    os.replace(path, self._clean_path(content_hash))
                    self._clean[content_hash] = None
                    self._evict_clean()
                else:
                    os.unlink(path)
            except OSError as e:
                self._error(f"could not retire the dirty file of block {index}", e)

    def drop(self, index: int, error: OSError) -> None:
        """A write to the block's dirty file failed (a full disk, say): the
        file goes (it no longer shows the block's newest content), and the
        block is held in memory only until it is stored.  If even that fails
        (a disk gone bad or read-only), the file would be applied over newer
        data at the next mount: from then on every write is refused (raises
        OSError, EIO) until the mount is restarted on a sound disk."""
        self._error(f"a write of block {index} failed; it is held in memory only until stored", error)
        with self._lock:
            self._dirty.pop(index, None)
            try:
                self._close_file(index)
                os.unlink(self._dirty_path(index))
            except FileNotFoundError:
                pass
            except OSError as e:
                self.broken = (f"cache dir {self.path}: {self._dirty_path(index)} could not be deleted "
                               f"({e.strerror or e}) after a failed write; this mount takes no more writes: "
                               "unmount it, and delete that file or repair the disk before mounting again")
                log.error("%s", self.broken)
                raise OSError(errno.EIO, self.broken) from None

    def _refuse_if_broken(self) -> None:
        if self.broken is not None:
            raise OSError(errno.EIO, self.broken)

    def _close_file(self, index: int) -> None:
        fd = self._files.pop(index, None)
        if fd is not None:
            os.close(fd)

    def _dirty_path(self, index: int) -> str:
        return os.path.join(self.path, "dirty", f"{index:016x}")

    # -- recovery ---------------------------------------------------------------------

    def recover(self) -> Iterator[Recovered]:
        """Each dirty file a mount left, read back and checked.  A file whose
        header is damaged or another's is moved to DIR/damaged/ (counted,
        `cache_dir_damaged`, and logged): its block shows what the store holds."""
        for index in self._dirty_files():
            found = self._read_dirty(index)
            with self._lock:
                if found is None:
                    self._dirty.pop(index, None)
                    continue
                self._dirty[index] = DirtyFile(self.pages, found.zero_base, bytearray(found.checksums))
                self.counters["recovered_torn_pages"] += found.torn.bit_count()
            if found.torn:
                log.warning("cache dir: block %d: %d pages were cut by a crash; they show what the store "
                            "holds", index, found.torn.bit_count())
            yield found

    def _read_dirty(self, index: int) -> Recovered | None:
        try:
            found = read_dirty(self._dirty_path(index), self.layout, index)
        except OSError as e:
            self._error(f"could not read the dirty file of block {index}", e)
            return None
        if found is None:
            aside = os.path.join(self.path, "damaged", f"{index:016x}")
            try:
                os.makedirs(os.path.dirname(aside), mode=0o700, exist_ok=True)
                os.replace(self._dirty_path(index), aside)
            except OSError as e:
                self._error(f"could not move the damaged dirty file of block {index} aside", e)
            log.warning("cache dir: the dirty file of block %d is damaged (moved to %s); its block shows what "
                        "the store holds", index, aside)
            with self._lock:
                self.counters["cache_dir_damaged"] += 1
        return found

    def discard_dirty(self) -> int:
        """Delete every dirty file (their writes are dropped); how many."""
        with self._lock:
            for index in list(self._files):
                self._close_file(index)
            blocks = self._dirty_files()
            for index in blocks:
                os.unlink(self._dirty_path(index))
            self._dirty.clear()
            self._writes += 1
        return len(blocks)

    # -- clean files ------------------------------------------------------------------

    def read_clean(self, content_hash: bytes) -> bytearray | None:
        """The block with this content hash if a clean file holds it intact
        (checked against the hash), else None (a damaged one is deleted)."""
        with self._lock:
            if content_hash not in self._clean or self._block_hash is None:
                return None
            self._clean.move_to_end(content_hash)
        path = self._clean_path(content_hash)
        try:
            data = read_clean(path, self.layout)
            os.utime(path)  # its use, for the order of eviction after a remount
        except OSError as e:
            with self._lock:
                self._clean.pop(content_hash, None)
            if e.errno != errno.ENOENT:
                self._error("could not read a clean file", e)
            return None
        if data is None or self._block_hash(data) != content_hash:
            log.warning("cache dir: %s is damaged or stale; deleted, the block is read from the store", path)
            with self._lock:
                self.counters["cache_dir_damaged"] += 1
                self._clean.pop(content_hash, None)
            unlink_quietly(path)
            return None
        with self._lock:
            self.counters["cache_dir_hits"] += 1
        return data

    def keep_clean(self, content_hash: bytes, data) -> None:
        """Keep a block read from the store (`data`: block_size bytes, not
        to change while this runs) as a clean file, evicting the least
        recently used ones beyond the limit."""
        with self._lock:
            if content_hash in self._clean or self.capacity - len(self._dirty) < 1:
                return
        try:
            write_clean(self._clean_path(content_hash), self.layout, data)
        except OSError as e:
            self._error("could not keep a clean file", e)
            return
        with self._lock:
            self._clean[content_hash] = None
            self._writes += 1
            self._evict_clean()

    def _evict_clean(self) -> None:
        """Delete the least recently used clean files beyond the limit (lock held)."""
        while self._clean and len(self._clean) + len(self._dirty) > self.capacity:
            content_hash, _ = self._clean.popitem(last=False)
            unlink_quietly(self._clean_path(content_hash))

    def _clean_path(self, content_hash: bytes) -> str:
        name = content_hash.hex()
        return os.path.join(self.path, "clean", name[:2], name)

    # -- durability and the rest ------------------------------------------------------

    def sync(self) -> None:
        """Put everything written here so far on disk (files and names)."""
        with self._lock:
            writes = self._writes
            if writes == self._synced:
                return
        syncfs(self._lock_fd)
        with self._lock:
            self._synced = max(self._synced, writes)

    def _sync_loop(self) -> None:
        while not self._stop.wait(SYNC_SECONDS):
            try:
                self.sync()
            except OSError as e:
                self._error("syncing to disk failed", e)

    def _error(self, what: str, error: OSError) -> None:
        """Count a failure of the cache disk, and say so (at most once per QUIET_SECONDS)."""
        with self._lock:
            self.counters["cache_dir_errors"] += 1
            now = time.monotonic()
            if now - self._warned < QUIET_SECONDS:
                return
            self._warned = now
        log.warning("cache dir: %s: %s (further failures in the next %.0f s are only counted: stats "
                    "cache_dir_errors)", what, error.strerror or error, QUIET_SECONDS)

    def stats(self) -> dict[str, int]:
        with self._lock:
            files = len(self._dirty) + len(self._clean)
            return {**self.counters, "cache_dir_dirty_blocks": len(self._dirty),
                    "cache_dir_clean_blocks": len(self._clean), "cache_dir_bytes": files * self.layout.file_size,
                    "cache_dir_limit_bytes": self.capacity * self.layout.file_size}

    def close(self) -> None:
        """Sync, and let the directory go (another mount may use it then)."""
        self._stop.set()
        self._syncer.join()
        with self._lock:
            for index in list(self._files):
                self._close_file(index)
        try:
            self.sync()
        finally:
            os.close(self._lock_fd)
