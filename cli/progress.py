"""Progress bars on a terminal for long commands (tqdm), nothing elsewhere.

`Bars()` is a sweep's Progress (volume/sweep.py): one bar per phase, on
stderr, shown only when stderr is a terminal, so scripts and --json
output see nothing of it.  Commands that use it: gc, verify, fsck, prune,
snapshot create and delete (of a volume URL), restore, recover, and create
--force (its wipe of the old volume); `with Bars() as bars:` closes the
last bar however the block ends.
"""
import sys
from collections.abc import Callable


class Bars:
    """One tqdm bar per phase; `close()` ends the last one."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self._bar = None  # a tqdm bar

    def __call__(self, phase: str, total: int | None) -> Callable[[int], None]:
        from tqdm import tqdm  # on use: imported with the CLI it cost every command ~30 ms at start

        self.close()
        self._bar = tqdm(desc=phase, total=total, unit=" items", file=sys.stderr, leave=False,
                         disable=not self.enabled, dynamic_ncols=True)
        return self._bar.update

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> "Bars":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
