"""A mount's stats as Prometheus metrics, in the text exposition format.

The format (https://prometheus.io/docs/instrumenting/exposition_formats/,
"Text format details"): one `# HELP name text` and one `# TYPE name kind`
line per metric, then `name{label="value"} number`; UTF-8, `\\n` line ends,
the last line ending in one too.  Label values escape `\\`, `"` and line
feed; HELP text escapes `\\` and line feed.  Names follow Prometheus'
naming practice (https://prometheus.io/docs/practices/naming/): the
`bucketdisk_` prefix, base units (bytes, seconds), and `_total` on
counters (OpenMetrics requires it; the Python client's parser expects it).

What the stats hold comes from the `stats` file of the mount
(fs/mount.py render_stats: `name: value` lines); `parse_stats` reads it
back, `prometheus_text` formats it.  Counters are the device's monotonic
ones (engine/stats.py COUNTERS, plus those below); everything else
numeric is a gauge.
"""
from ..stats import COUNTERS

PREFIX = "bucketdisk_"

# Monotonic counts besides stats.COUNTERS (device.py, cachedir.py).
MORE_COUNTERS = ("fast_path_hits", "cache_dir_hits", "cache_dir_damaged", "cache_dir_errors",
                 "recovered_blocks", "recovered_torn_pages")

HELP = {
    "cache_hits": "Block reads served from the memory cache.",
    "cache_misses": "Block reads that had to fetch the block.",
    "fast_path_hits": "Cache hits served by libfuse's threads without Python (counted in cache_hits too).",
    "readahead_blocks": "Blocks fetched ahead of sequential reads.",
    "objects_put": "Objects stored.",
    "objects_got": "Objects read from the store.",
    "objects_headed": "HEAD requests (existence checks) sent to the store.",
    "objects_deleted": "Objects deleted from the store.",
    "bytes_put": "Bytes of objects stored.",
    "bytes_got": "Bytes of objects read from the store.",
    "blocks_deduplicated": "Blocks not uploaded because the store already held their content.",
    "blocks_collected": "Block objects deleted by garbage collection.",
    "journal_writes": "Map journal objects written.",
    "checkpoints": "Map checkpoints written.",
    "fsync_log_pages": "4 KiB pages stored in fsync logs.",
    "follow_refreshes": "Newer map states a read-only mount took from the writer.",
    "retries": "Store requests repeated after a failure.",
    "stragglers": "Store requests sent again for being far slower than usual.",
    "request_failures": "Store requests given up on after --retry-time.",
    "errors": "I/O errors the application saw, and failed flush attempts.",
    "damaged_objects": "Reads refused because an object failed its checks.",
    "cache_dir_hits": "Blocks read from the cache dir instead of the store.",
    "cache_dir_damaged": "Cache dir files that failed their check and were not served.",
    "cache_dir_errors": "Failed reads and writes of the cache dir's disk.",
    "recovered_blocks": "Blocks a crashed mount left in the cache dir, stored before serving.",
    "recovered_torn_pages": "Pages of those blocks cut by a crash.",
    "pid": "Process id of the mount's daemon.",
    "uptime_seconds": "Seconds since the mount started.",
    "read_only": "1 for a read-only mount.",
    "dirty_blocks": "Blocks in the cache holding writes not uploaded yet.",
    "cached_blocks": "Blocks in the memory cache.",
    "cache_limit_blocks": "Blocks the memory cache may hold.",
    "dirty_limit_blocks": "Dirty blocks the memory cache may hold.",
    "cache_bytes": "Bytes the memory cache holds.",
    "cache_limit_bytes": "Bytes the memory cache may hold (--cache-size).",
    "fenced": "1 once another mount took the volume over: writes fail.",
    "replaced": "1 once the volume a read-only mount shows was replaced or deleted.",
    "unsaved_blocks": "Blocks holding writes a crash now would lose.",
    "unsaved_bytes": "Bytes (an upper bound) of writes a crash now would lose.",
    "store_full": "1 while storing fails for lack of space.",
    "retry_time_seconds": "How long a failing request is retried (--retry-time).",
    "cache_dir_dirty_blocks": "Blocks whose writes are in the cache dir and not yet in the store.",
    "cache_dir_clean_blocks": "Clean blocks kept in the cache dir.",
    "cache_dir_bytes": "Bytes the cache dir holds.",
    "cache_dir_limit_bytes": "Bytes the cache dir may hold (--cache-dir-size).",
    "store_error": "1 while storing fails (the stats file says why).",
    "warning": "1 when the store showed an older state than this machine saw (a rollback).",
}

# Text fields of the stats file: the volume is the label, the control
# socket's path is no measurement; the others are said as 0/1 gauges
# (their text stays in the stats file: free text makes poor label values).
# What serves the mount is said Prometheus' way, as labels of an _info
# gauge that is always 1 (bucketdisk_info{fuse_adapter="mfusepy",...} 1).
TEXT_FIELDS = ("volume", "control_socket")
FLAG_FIELDS = ("store_error", "warning")
INFO_FIELDS = ("disk_file", "fuse_adapter", "libfuse")


def parse_stats(text: str) -> dict:
    """A `stats` file's `name: value` lines as {name: int | str}."""
    values: dict = {}
    for line in text.splitlines():
        name, _, value = line.partition(": ")
        values[name] = int(value) if value.lstrip("-").isdigit() else value
    return values


def kind(name: str) -> str:
    """`counter` or `gauge`: how Prometheus must treat the stat `name`."""
    return "counter" if name in COUNTERS or name in MORE_COUNTERS else "gauge"


def metric_name(name: str) -> str:
    """The metric of the stat `name`: bucketdisk_NAME, counters ending in _total."""
    return PREFIX + name + ("_total" if kind(name) == "counter" else "")


def prometheus_text(values: dict) -> str:
    """`values` (parse_stats of one mount's stats) in the text format,
    each metric labelled with the mount's volume URL; sorted by name."""
    volume = f'volume="{_escape_label(str(values.get("volume", "")))}"'
    label = "{" + volume + "}"
    values = {**dict.fromkeys(FLAG_FIELDS, ""), **values}  # said when absent too, so a rule can watch for 1
    info = "".join(f',{name}="{_escape_label(str(values[name]))}"' for name in INFO_FIELDS if name in values)
    lines = [f"# HELP {PREFIX}info What serves the mount: its disk file, FUSE adapter and libfuse.",
             f"# TYPE {PREFIX}info gauge", f"{PREFIX}info{{{volume}{info}}} 1"]
    for name in sorted(values):
        if name in TEXT_FIELDS or name in INFO_FIELDS:
            continue
        value = values[name]
        if name in FLAG_FIELDS:
            value = 1 if value else 0
        elif not isinstance(value, int):
            continue  # a text field this version does not know: no number to give
        metric = metric_name(name)
        help_text = HELP.get(name, f"The mount's {name} (see 'bucketdisk stats').")
        lines += [f"# HELP {metric} {_escape_help(help_text)}", f"# TYPE {metric} {kind(name)}",
                  f"{metric}{label} {value}"]
    return "\n".join(lines) + "\n"


def _escape_label(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")
