"""Thread-safe named counters shared by the layers of one mount."""
import threading


# Counters every mount reports, zero until something happens.
COUNTERS = (
    "cache_hits", "cache_misses", "readahead_blocks",
    "objects_put", "objects_got", "objects_headed", "objects_deleted", "bytes_put", "bytes_got",
    "blocks_deduplicated", "blocks_collected", "journal_writes", "checkpoints", "fsync_log_pages",
    "follow_refreshes",  # a read-only mount took a newer state of the writer's map
    # store level: attempts repeated, requests sent again at once for being far
    # slower than usual, requests given up on
    "retries", "stragglers", "request_failures",
    "errors",  # I/O errors seen by the application, and failed flush attempts
    "damaged_objects",  # reads refused because the object failed its checks (never returned as data)
)


class Stats:
    """Monotonic counters (`add`) and gauges (`set`), read as one snapshot."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[str, int] = dict.fromkeys(COUNTERS, 0)

    def add(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._values[name] = self._values.get(name, 0) + amount

    def set(self, name: str, value: int) -> None:
        with self._lock:
            self._values[name] = value

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._values)
