"""The one small interface every object store implements.

Keys are plain relative paths made of `[0-9a-z_-]` segments joined by `/`
(no `.`, `..` or empty segments), so they are valid file paths and S3 keys
alike that nothing rewrites on the way; the stores refuse any other key
(names.py).  Stores know nothing about volumes, blocks or maps.
"""
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Protocol

from ..stats import Stats

# What `put` stores: bytes-like, or a sequence of bytes-like pieces stored
# one after the other as one object (a block's header and the block itself,
# so that uploading a cached block never copies it).
Body = bytes | bytearray | memoryview | Sequence


def body_pieces(data: Body) -> tuple:
    """The pieces of a body, in order (one piece for a bytes-like one)."""
    return (data,) if isinstance(data, (bytes, bytearray, memoryview)) else tuple(data)


def body_length(pieces: tuple) -> int:
    """Bytes in all `pieces` together."""
    return sum(memoryview(piece).nbytes for piece in pieces)


class Sink(Protocol):
    """Where `get_into` puts an object as it arrives, piece by piece (a
    block device decodes a block straight into its cache this way)."""

    def reset(self) -> None:
        """Start over: the object is sent again from its first byte."""

    def buffer(self) -> memoryview:
        """Where the next bytes go (never empty: once the object should be
        complete, one spare byte, so that a longer one is noticed)."""

    def filled(self, count: int) -> None:
        """`count` bytes were put at the start of the last buffer().
        Raises CorruptData when they cannot be part of the object."""


def feed(sink: Sink, data) -> None:
    """Give a whole object to `sink` (for stores without a piecewise read)."""
    view = memoryview(data).cast("B")
    sink.reset()
    done = 0
    while done < len(view):
        room = sink.buffer()
        count = min(len(room), len(view) - done)
        room[:count] = view[done : done + count]
        sink.filled(count)
        done += count

DeleteGuard = Callable[[list[str], int], None]


class ObjectStore(ABC):
    """get/put/delete/list/head on immutable-by-convention objects."""

    def __init__(self, stats: Stats | None = None) -> None:
        self.stats = stats or Stats()

    @abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; raises NotFound if it does not exist."""

    def get_into(self, key: str, sink: Sink) -> int:
        """Give the object to `sink` as it is read (see Sink; it may be
        reset and given it again when a request is retried); its length.
        Raises NotFound if it does not exist, and what `sink` raises.
        Stores read into the sink's buffers; this fallback reads it whole."""
        data = self.get(key)
        feed(sink, data)
        return len(data)

    @abstractmethod
    def put(self, key: str, data: Body, *, if_absent: bool = False) -> bool:
        """Store `data` (see Body) durably under `key`.

        With `if_absent`, an existing object is left alone and False is
        returned; the check and the write are one atomic step.  Returns True
        when this call wrote the object.
        """

    @abstractmethod
    def delete(self, keys: Iterable[str], *, guard: DeleteGuard | None = None) -> None:
        """Remove the objects; missing ones are not an error.

        `guard(keys, attempt)` is called right before each request that
        deletes `keys` is sent (attempt 0, then 1, 2... for retries); it
        may raise to stop.  A retried delete may land twice, the first
        one late: the guard is how the caller learns of it.
        """

    @abstractmethod
    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with `prefix`, in lexicographic order."""

    @abstractmethod
    def head(self, key: str) -> int | None:
        """The object's size, or None if it does not exist."""

    @abstractmethod
    def age(self, key: str) -> float | None:
        """Seconds since the object was last written, by the store's own
        clock (so no two machines' clocks are compared), or None if it
        does not exist."""

    def usage(self, prefix: str = "") -> tuple[int, int]:
        """(object count, total bytes) under a prefix."""
        count = total = 0
        for _, size in self.list_sizes(prefix):
            count += 1
            total += size
        return count, total

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """(key, size in bytes) of every key starting with `prefix`, in
        lexicographic order (a key gone meanwhile counts 0 bytes)."""
        for key in self.list(prefix):
            yield key, self.head(key) or 0

    def scratch(self) -> tuple[int, int]:
        """(files, abandoned files) the store keeps besides its objects
        (the file:// store's temporary files); (0, 0) for a store with none."""
        return 0, 0

    def tidy_scratch(self) -> int:
        """Remove the abandoned files `scratch` counts; returns how many."""
        return 0

    def close(self) -> None:
        """Release connections and file handles."""

    def describe(self) -> str:
        """Where the store lives, safe to print (no secrets)."""
        return type(self).__name__

    def url(self) -> str:
        """The volume URL of this place (file:///PATH, s3://BUCKET/PREFIX)."""
        return self.describe()

    def key_url(self, key: str) -> str:
        """The URL of one object of this place, for messages (no secrets)."""
        return f"{self.url()}/{key}"

    def unthrottled(self) -> "ObjectStore":
        """This store without a bandwidth cap (--bwlimit): the same store,
        connections and stats, for the few small requests that must never
        queue behind bulk traffic (a lease's renewal).  Itself for a store
        that has no cap; close the original, never this one."""
        return self

    def parent(self) -> "ObjectStore | None":
        """The store of the place that encloses this one (the directory or
        prefix one level up), sharing this store's connections, or None at
        the top.  Used to look for a volume around this place; never close
        it (close this store instead)."""
        return None
