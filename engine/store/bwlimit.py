"""A store that caps the bandwidth of the store it wraps (--bwlimit,
--bwlimit-down), as restic's backends wrap one another: it works the same
for file:// and s3://.

One token bucket per direction, shared by every thread of the store.  An
object's bytes are paid for in one piece: an upload before it is sent, a
download once it has arrived (its size is known only then).  The bucket
may go into debt by one object, and whoever pays next waits for that debt
to be repaid at the rate, so N threads together get the rate, in turns,
whatever the object size; the burst (what an idle bucket saves up) is
small, so the cap holds over any second, not just on average.
"""
import threading
import time
from collections.abc import Iterable, Iterator

from .base import Body, DeleteGuard, ObjectStore, Sink, body_length, body_pieces

BURST_SECONDS = 0.05  # an idle bucket saves up this many seconds of the rate...
MIN_BURST = 64 << 10  # ...at least this many bytes


class TokenBucket:
    """`rate` bytes per second, with a burst of `burst` bytes; thread-safe.

    take(n) waits until n bytes may pass and returns the seconds waited.
    Taking more than the burst is allowed (the bucket goes into debt and
    the caller waits for it), so any n passes."""

    def __init__(self, rate: float, burst: float | None = None, clock=time.monotonic, sleep=time.sleep) -> None:
        if not rate > 0:
            raise ValueError("the rate must be positive")
        self.rate = float(rate)
        self.burst = float(burst if burst is not None else max(MIN_BURST, rate * BURST_SECONDS))
        self._clock, self._sleep = clock, sleep
        self._lock = threading.Lock()
        self._tokens = self.burst
        self._stamp = clock()

    def take(self, count: int) -> float:
        with self._lock:
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate) - count
            self._stamp = now
            wait = -self._tokens / self.rate if self._tokens < 0 else 0.0
        if wait > 0:
            self._sleep(wait)
        return wait


class RateLimited(ObjectStore):
    """`inner` with its object uploads capped at `up` and downloads at
    `down` bytes per second (None: not capped), all threads together.

    Only object bodies count (PUT and GET), not listings, HEADs or deletes.
    The seconds waited go to the counters bwlimit_up_wait_ms and
    bwlimit_down_wait_ms of the inner store's stats (milliseconds)."""

    def __init__(self, inner: ObjectStore, up: float | None = None, down: float | None = None) -> None:
        super().__init__(inner.stats)
        self.inner = inner
        self._up = TokenBucket(up) if up else None
        self._down = TokenBucket(down) if down else None
        for name in ("bwlimit_up_wait_ms", "bwlimit_down_wait_ms"):
            self.stats.add(name, 0)  # listed (as 0) from the start, like every counter

    @classmethod
    def around(cls, inner: ObjectStore, up: float | None, down: float | None) -> ObjectStore:
        """`inner` itself when neither direction is capped, else wrapped."""
        return cls(inner, up, down) if (up or down) else inner

    def _pay(self, bucket: TokenBucket | None, count: int, counter: str) -> None:
        if bucket is not None and count:
            waited = bucket.take(count)
            if waited:
                self.stats.add(counter, round(waited * 1000))

    def get(self, key: str) -> bytes:
        data = self.inner.get(key)
        self._pay(self._down, len(data), "bwlimit_down_wait_ms")
        return data

    def get_into(self, key: str, sink: Sink) -> int:
        size = self.inner.get_into(key, sink)
        self._pay(self._down, size, "bwlimit_down_wait_ms")
        return size

    def put(self, key: str, data: Body, *, if_absent: bool = False) -> bool:
        self._pay(self._up, body_length(body_pieces(data)), "bwlimit_up_wait_ms")
        return self.inner.put(key, data, if_absent=if_absent)

    def delete(self, keys: Iterable[str], *, guard: DeleteGuard | None = None) -> None:
        self.inner.delete(keys, guard=guard)

    def list(self, prefix: str = "") -> Iterator[str]:
        return self.inner.list(prefix)

    def list_sizes(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        return self.inner.list_sizes(prefix)

    def usage(self, prefix: str = "") -> tuple[int, int]:
        return self.inner.usage(prefix)

    def head(self, key: str) -> int | None:
        return self.inner.head(key)

    def age(self, key: str) -> float | None:
        return self.inner.age(key)

    def scratch(self) -> tuple[int, int]:
        return self.inner.scratch()

    def tidy_scratch(self) -> int:
        return self.inner.tidy_scratch()

    def close(self) -> None:
        self.inner.close()

    def describe(self) -> str:
        return self.inner.describe()

    def url(self) -> str:
        return self.inner.url()

    def key_url(self, key: str) -> str:
        return self.inner.key_url(key)

    def unthrottled(self) -> ObjectStore:
        """The inner store, uncapped: a lease renewal waiting behind a debt
        of megabytes at a low rate could outlast the lease itself."""
        return self.inner.unthrottled()

    def parent(self) -> "ObjectStore | None":
        """The inner store's parent, under the same caps (the same buckets)."""
        up = self.inner.parent()
        if up is None:
            return None
        wrapped = RateLimited.__new__(RateLimited)
        ObjectStore.__init__(wrapped, up.stats)
        wrapped.inner, wrapped._up, wrapped._down = up, self._up, self._down
        return wrapped
