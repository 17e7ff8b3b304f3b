"""The `file://` store: one file per object under a local directory.

Every put is atomic and durable: the bytes go to a temporary file that is
fsynced, then linked (create-only) or renamed (replace) into place, and the
directory is fsynced so the new name survives a crash.
"""
import errno
import os
import stat
import threading
import uuid
from collections.abc import Iterable, Iterator

from ..errors import NotFound, StoreError, UserError
from ..stats import Stats
from .base import ObjectStore

TMP_DIR = ".tmp"


class FileStore(ObjectStore):
    def __init__(self, root: str, stats: Stats | None = None, *, create: bool = False) -> None:
        super().__init__(stats)
        self.root = os.path.abspath(root)
        if create:
            os.makedirs(self.root, exist_ok=True)
        if not os.path.isdir(self.root):
            raise UserError(f"no such directory: {self.root}")
        self._tmp = os.path.join(self.root, TMP_DIR)
        self._known_dirs: set[str] = set()
        self._dirs_lock = threading.Lock()

    def describe(self) -> str:
        return f"file://{self.root}"

    def _path(self, key: str) -> str:
        return os.path.join(self.root, key)

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                data = f.read()
        except (FileNotFoundError, IsADirectoryError):  # a directory holds keys; it is not one
            raise NotFound(key) from None
        except OSError as e:
            self.stats.add("request_failures")
            raise StoreError(f"reading {key}: {e.strerror}") from e
        self.stats.add("objects_got")
        self.stats.add("bytes_got", len(data))
        return data

    def head(self, key: str) -> int | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return None if stat.S_ISDIR(st.st_mode) else st.st_size

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> bool:
        path = self._path(key)
        parent = os.path.dirname(path)
        self._ensure_dir(parent)
        tmp = self._write_temp(data)
        try:
            if if_absent:
                try:
                    os.link(tmp, path)
                except FileExistsError:
                    return False
            else:
                os.replace(tmp, path)
                tmp = None
            _fsync_dir(parent)
        except OSError as e:
            self.stats.add("request_failures")
            raise StoreError(f"writing {key}: {e.strerror}") from e
        finally:
            if tmp is not None:
                _unlink_quietly(tmp)
        self.stats.add("objects_put")
        self.stats.add("bytes_put", len(data))
        return True

    def delete(self, keys: Iterable[str]) -> None:
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
            _fsync_dir(parent)

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

    def _write_temp(self, data: bytes) -> str:
        self._ensure_dir(self._tmp)
        tmp = os.path.join(self._tmp, uuid.uuid4().hex)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                written = os.write(fd, view)
                view = view[written:]
            os.fsync(fd)
        except OSError as e:
            os.close(fd)
            _unlink_quietly(tmp)
            self.stats.add("request_failures")
            raise StoreError(f"writing temporary file: {e.strerror}") from e
        os.close(fd)
        return tmp

    def _ensure_dir(self, path: str) -> None:
        if path in self._known_dirs:
            return
        with self._dirs_lock:
            if path in self._known_dirs:
                return
            try:
                os.makedirs(path, exist_ok=True)
            except OSError as e:
                raise StoreError(f"creating {path}: {e.strerror}") from e
            _fsync_dir(os.path.dirname(path))
            self._known_dirs.add(path)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    except OSError as e:
        if e.errno != errno.EINVAL:  # some filesystems cannot fsync directories
            raise
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
