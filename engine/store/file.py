"""The `file://` store: one file per object under a local directory.

Every put is atomic and durable: the bytes go to a temporary file that is
fsynced, then linked (create-only) or renamed (replace) into place, and the
directory is fsynced so the new name survives a crash.  The store's own
directory is made by the first put, so a place that is only looked at
(and a create that is refused) leaves nothing behind.

Temporary files live in `.tmp/` (never listed as keys).  A writer killed
between writing one and linking it leaves it there; `scratch` counts such
files and `tidy_scratch` removes them, by the rule of `_abandoned`.
"""
import errno
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterable, Iterator

from ..errors import Forbidden, NotFound, StoreError, StoreFull, UserError
from ..localfiles import fsync_dir, unlink_quietly
from ..stats import Stats
from .base import Body, DeleteGuard, ObjectStore, Sink, body_length, body_pieces
from .names import is_plain_key, shown
from .owner import place_tag, proc_is_ours, process_alive

TMP_DIR = ".tmp"
# A temporary file whose owner cannot be asked (another machine, boot or PID
# namespace, or a name from before owners were recorded) is abandoned once
# it is this old: a live writer links or removes its file seconds after
# making it, so a day leaves room for a stalled disk and for clocks that
# differ between the machines sharing the directory.
TMP_MAX_AGE = 24 * 3600.0  # seconds


class FileStore(ObjectStore):
    def __init__(self, root: str, stats: Stats | None = None, *, create: bool = False) -> None:
        """A store in the directory `root`.  It must exist unless `create`
        (then the first put makes it); raises UserError when it does not,
        or when a file that is not a directory stands in its way."""
        super().__init__(stats)
        self.root = os.path.abspath(root)
        if not create and not os.path.isdir(self.root):
            if os.path.exists(self.root):
                raise UserError(f"{self.root} is a file, not a directory: a file:// volume is a directory")
            raise UserError(f"no such directory: {self.root}")
        if create:
            _check_can_be_directory(self.root)
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._known_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def describe(self) -> str:
        return f"file://{self.root}"

    def url(self) -> str:
        return f"file://{self.root}"

    def parent(self) -> "FileStore | None":
        """The enclosing directory's store (maybe missing), None for `/`."""
        up = os.path.dirname(self.root)
        return None if up == self.root else FileStore(up, self.stats, create=True)

    def _path(self, key: str) -> str:
        """The file of `key`; a key that is not plain (names.py) could
        name a file outside the store and raises StoreError."""
        if not is_plain_key(key):
            raise StoreError(f"refusing the key {shown(key)}: not a plain relative path")
        return os.path.join(self.root, key)

    def get(self, key: str) -> bytes:
        data = self._read(key, lambda f: f.read())
        self._count_got(len(data))
        return data

    def get_into(self, key: str, sink: Sink) -> int:
        def into(f) -> int:
            sink.reset()
            return _read_into(f, sink)
        size = self._read(key, into)
        self._count_got(size)
        return size

    def _read(self, key: str, read):
        """read(the object's file, unbuffered), its errors as the store's."""
        try:
            with open(self._path(key), "rb", buffering=0) as f:
                return read(f)
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):  # a directory holds keys; it is not one
            raise NotFound(key, self.key_url(key)) from None
        except PermissionError as e:
            raise Forbidden(f"reading {key}: {e.strerror}") from None
        except OSError as e:
            self.stats.add("request_failures")
            raise StoreError(f"reading {key}: {e.strerror}") from e

    def _count_got(self, size: int) -> None:
        self.stats.add("objects_got")
        self.stats.add("bytes_got", size)

    def head(self, key: str) -> int | None:
        self.stats.add("objects_headed")
        try:
            st = os.stat(self._path(key))
        except (FileNotFoundError, NotADirectoryError):
            return None
        except PermissionError as e:
            raise Forbidden(f"looking at {key}: {e.strerror}") from None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def age(self, key: str) -> float | None:
        """A fresh probe file's mtime minus the object's: both stamped by
        the file system holding the store (an NFS server's clock, when
        machines share it), not by this machine's clock."""
        try:
            written = os.stat(self._path(key)).st_mtime
        except (FileNotFoundError, NotADirectoryError):
            return None
        probe = self._write_temp(b"")
        try:
            now = os.stat(probe).st_mtime
        finally:
            unlink_quietly(probe)
        return now - written

    def put(self, key: str, data: Body, *, if_absent: bool = False) -> bool:
        path = self._path(key)
        parent = os.path.dirname(path)
        self._ensure_dir(parent)
        pieces = body_pieces(data)
        tmp = self._write_temp(pieces)
        try:
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
                tmp = None
            fsync_dir(parent)
        except OSError as e:
            self.stats.add("request_failures")
            raise self._write_error(f"writing {key}", e) from e
        finally:
            if tmp is not None:
                unlink_quietly(tmp)
        self.stats.add("objects_put")
        self.stats.add("bytes_put", body_length(pieces))
        return True

    def delete(self, keys: Iterable[str], *, guard: DeleteGuard | None = None) -> None:
        keys = list(keys)
        if guard is not None and keys:
            guard(keys, 0)  # an unlink is not retried: one attempt
        touched: set[str] = set()
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            touched.add(os.path.dirname(path))
            self.stats.add("objects_deleted")
        for parent in touched:
            fsync_dir(parent)

    def list(self, prefix: str = "") -> Iterator[str]:
        # Walk only the directories that can hold matching keys.
        base = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._path(base) if base else self.root
        keys = []
        for dirpath, dirnames, filenames in os.walk(start):
            rel = os.path.relpath(dirpath, self.root)
            rel = "" if rel == "." else rel + "/"
            if rel == "":
                dirnames[:] = [d for d in dirnames if d != TMP_DIR]
            for name in filenames:
                key = rel + name
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))

    def scratch(self) -> tuple[int, int]:
        """(temporary files, of which abandoned) in `.tmp/` (see _abandoned)."""
        names = self._temp_names()
        now = time.time()
        return len(names), sum(1 for name in names if self._abandoned(name, now))

    def tidy_scratch(self) -> int:
        """Remove the abandoned temporary files; returns how many went."""
        now, removed = time.time(), 0
        for name in self._temp_names():
            if self._abandoned(name, now):
                try:
                    os.unlink(os.path.join(self._tmp, name))
                    removed += 1
                except OSError:  # gone meanwhile, or not ours to remove: left for another time
                    pass
        return removed

    def _temp_names(self) -> "list[str]":  # (`list` is a method here)
        try:
            return sorted(os.listdir(self._tmp))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def _abandoned(self, name: str, now: float) -> bool:
        """Whether the temporary file `name` can no longer be linked into
        place by anyone, so removing it is safe.

        Its name is `<place tag>-<pid>-<random>` (owner.place_tag: host,
        boot and PID namespace).  A file of this place's tag is abandoned
        when its pid is no running process (a live pid, maybe a reused one,
        keeps it); any other file once it is TMP_MAX_AGE old.  A file
        being written right now is always young, and its writer alive."""
        tag, _, rest = name.partition("-")
        pid = rest.partition("-")[0]
        if tag == place_tag() and pid.isdigit() and proc_is_ours() and not process_alive(int(pid)):
            return True
        try:
            age = now - os.lstat(os.path.join(self._tmp, name)).st_mtime
        except FileNotFoundError:
            return False  # linked or removed by its writer meanwhile
        return age > TMP_MAX_AGE

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, bytes) of every key listed; the keys came from the
        directory itself, so any name (a stray one too) is looked at."""
        for key in self.list(prefix):
            try:
                yield key, os.lstat(os.path.join(self.root, key)).st_size
            except (FileNotFoundError, NotADirectoryError):
                yield key, 0  # gone meanwhile

    def _write_temp(self, data: Body) -> str:
        """A new file in the scratch dir holding `data` (bytes-like, or its
        pieces one after the other), fsynced; its path."""
        self._ensure_dir(self._tmp)
        # named by its owner, so that one left by a killed writer is known (_abandoned)
        tmp = os.path.join(self._tmp, f"{place_tag()}-{os.getpid()}-{uuid.uuid4().hex}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as e:  # ENOSPC too, when no inode is left
            self.stats.add("request_failures")
            raise self._write_error("creating a temporary file", e) from e
        try:
            for piece in body_pieces(data):
                view = memoryview(piece).cast("B")
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            unlink_quietly(tmp)
            self.stats.add("request_failures")
            raise self._write_error("writing temporary file", e) from e
        os.close(fd)
        return tmp

    def _ensure_dir(self, path: str) -> None:
        """Make `path` and any missing directories above it, each one's
        name made durable by fsyncing the directory that holds it."""
        if path in self._known_dirs:
            return
        with self._dirs_lock:
            if path in self._known_dirs:
                return
            missing = []
            top = path
            while not os.path.isdir(top) and os.path.dirname(top) != top:
                missing.append(top)
                top = os.path.dirname(top)
            try:
                os.makedirs(path, exist_ok=True)
                for made in reversed(missing):
                    fsync_dir(os.path.dirname(made))
            except OSError as e:
                raise self._write_error(f"creating {path}", e) from e
            self._known_dirs.add(path)

    def _write_error(self, doing: str, e: OSError) -> StoreError:
        """The StoreError for a failed write; StoreFull, naming the store's
        directory, when its filesystem (or the owner's quota there) is full."""
        if e.errno == errno.ENOSPC:
            return StoreFull(f"the store's disk is full: no space left on the filesystem of {self.root}")
        if e.errno == errno.EDQUOT:
            return StoreFull(f"the store's disk quota is used up: no space left for this user in {self.root}")
        return StoreError(f"{doing}: {e.strerror}")


def _check_can_be_directory(path: str) -> None:
    """Refuse, with UserError, a path where a directory cannot be: it, or
    the nearest of its ancestors that exists, is not a directory."""
    while not os.path.lexists(path):
        path = os.path.dirname(path)
    if not os.path.isdir(path):
        raise UserError(f"{path} is not a directory")


def _read_into(f, sink: Sink) -> int:
    """Read the unbuffered file `f` to its end straight into the sink's
    buffers; the bytes read."""
    got = 0
    while True:
        count = f.readinto(sink.buffer())
        if not count:
            return got
        sink.filled(count)
        got += count
