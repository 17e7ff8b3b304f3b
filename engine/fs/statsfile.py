"""The mount's metrics written to a file every few seconds, for
node_exporter's textfile collector.

The collector (node_exporter's README, "Textfile Collector") reads every
`*.prom` file of its directory at each scrape; a file must be replaced
atomically, so it is written under another name (a leading dot and no
`.prom` ending, which the collector skips) in the same directory and
renamed over the old one (rename(2) is atomic within a filesystem).
"""
import logging
import os
import threading
from collections.abc import Callable

from ..errors import UserError
from .metrics import parse_stats, prometheus_text

log = logging.getLogger(__name__)

SUFFIX = ".prom"


def check_stats_file(path: str) -> str:
    """The absolute path of a --stats-file, checked: it ends in .prom and
    its directory exists and is writable.  Raises UserError (one line)."""
    if not path.endswith(SUFFIX) or os.path.basename(path) == SUFFIX:
        raise UserError(f"--stats-file must end in {SUFFIX} (node_exporter's textfile collector reads only those): "
                        f"{path}")
    path = os.path.abspath(path)
    where = os.path.dirname(path)
    if not os.path.isdir(where):
        raise UserError(f"--stats-file: no such directory: {where}")
    if not os.access(where, os.W_OK):
        raise UserError(f"--stats-file: cannot write in {where}")
    if os.path.isdir(path):
        raise UserError(f"--stats-file: is a directory: {path}")
    return path


def write_atomically(path: str, text: str) -> None:
    """Replace `path` with `text` at once: readers see the old or the new
    file, never a part.  Raises OSError."""
    temp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.{os.getpid()}.tmp")
    try:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fchmod(f.fileno(), 0o644)  # the collector may run as another user
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except OSError:
            pass
        raise


class StatsFile:
    """Writes `prometheus_text` of `render()` (the mount's stats text) to
    `path` every `interval` seconds from a thread of its own, first at
    once; `close()` stops it and removes the file (a mount that is gone
    has no metrics; node_exporter's `node_textfile_mtime_seconds` shows a
    file left by a daemon that was killed)."""

    def __init__(self, path: str, render: Callable[[], str], interval: float) -> None:
        self.path, self._render, self._interval = path, render, interval
        self._stop = threading.Event()
        self._failing = False
        self.write()
        self._thread = threading.Thread(target=self._run, name="stats-file", daemon=True)
        self._thread.start()

    def write(self) -> None:
        """Write the metrics now; a failure is logged once until it heals."""
        try:
            write_atomically(self.path, prometheus_text(parse_stats(self._render())))
        except OSError as e:
            if not self._failing:
                log.warning("cannot write the stats file %s: %s", self.path, e.strerror or e)
            self._failing = True
        else:
            if self._failing:
                log.warning("the stats file %s is written again", self.path)
            self._failing = False

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.write()

    def close(self) -> None:
        if self._stop.is_set():
            return
        self._stop.set()
        self._thread.join()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        except OSError as e:
            log.warning("cannot remove the stats file %s: %s", self.path, e.strerror or e)
