"""The fsync log's half of a volume: log numbers, watermarks, and merging
logged pages back into their blocks after an unclean stop.

Mixed into Volume (volume.py), whose docstring describes the fsync log;
it works on the volume's `_lock`, `_log`, `_live`, `_marks` and `_map`.
"""
import logging
from collections.abc import Iterable

from ..codec.block import ZERO_HASH
from .mapstore import LOG_PAGE, Run

log = logging.getLogger(__name__)


class FsyncLog:
    """Log numbers and merging, for Volume."""

    def log_number(self) -> int:
        """The watermark for content read for upload now."""
        return self._log

    def next_log(self, blocks: Iterable[int]) -> int:
        """A log number for pages of `blocks` about to be logged."""
        with self._lock:
            self._log += 1
            self._live[self._log] = set(blocks)
            return self._log

    def drop_log(self, number: int) -> None:
        """Forget a log number whose journal was never written."""
        with self._lock:
            self._live.pop(number, None)

    def _merge_logged(self, runs: list[Run]) -> None:
        """Mount after a crash: store each block with its newer logged pages.

        One block at a time (runs in log order, grouped by block), so this
        holds one block and its object, not every logged block at once."""
        by_block: dict[int, list[Run]] = {}
        for run in runs:
            by_block.setdefault(run.block, []).append(run)
        changes = [(index, self._merge_block(index, block_runs), self._log)
                   for index, block_runs in by_block.items()]
        self.commit(changes)
        self._live.clear()  # the next root holds every merged block
        log.warning("merged %d fsynced pages into %d blocks after an unclean stop",
                    self.unmerged_pages, len(by_block))
        self.unmerged_pages = 0

    def _merge_block(self, index: int, runs: list[Run]) -> bytes:
        """Store block `index` with `runs` (its logged pages, oldest first)
        written over it; its new content hash.  Raises StoreError."""
        content_hash = self._map.get(index)
        data = bytearray(self.block_size) if content_hash == ZERO_HASH else self.load_block(content_hash)
        for run in runs:
            start = run.first_page * LOG_PAGE
            data[start : start + len(run.data)] = run.data
        return self.store_block(data, index)

    def _prune_marks(self) -> None:
        """Keep only the watermarks of blocks in live logs (lock held).  A
        block's older mark is below any log number yet to come, so it
        answers exactly as no mark does."""
        if not self._live:
            self._marks.clear()
            return
        logged = set().union(*self._live.values())
        self._marks = {b: mark for b, mark in self._marks.items() if b in logged}

    def _split_live_logs(self) -> tuple[dict[int, set[int]], list[int]]:
        """Log numbers whose pages are not all in the map yet, and the rest
        (lock held).  A block's pages are in the map once content read for
        upload after they were logged is committed (watermark >= number)."""
        live, dead = {}, []
        for number, blocks in self._live.items():
            if any(self._marks.get(b, -1) < number for b in blocks):
                live[number] = blocks
            else:
                dead.append(number)
        return live, dead
