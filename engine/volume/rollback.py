"""Noticing a rolled-back store: the newest map state this machine has seen.

Encryption stops the store from forging or moving objects, but not from
showing an older, authentic state: deleting the newest roots and journals
(or restoring the bucket from an old copy) would silently take a volume
back in time.  So each machine remembers, per volume UUID, the newest map
object (epoch, sequence) it has seen, in a small file of its local state
(XDG_STATE_HOME, by default ~/.local/state/bucketdisk/seen/UUID), and warns
when the store's newest is older.  It cannot notice a rollback to a state
newer than any this machine saw: another machine's writes are unknown here.
Kept for encrypted volumes, whose owners do not trust the store; so a
volume this machine knows as encrypted is never opened as a plain one
(unlock.py), and a writer takes an epoch above any seen here, so that a
rolled-back store never makes it write again under the names of the
history that was lost.
"""
import logging
import os
import time

log = logging.getLogger(__name__)

NOTHING = (0, 0)  # seen, before any map object existed (a volume just created)


def state_directory() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "bucketdisk", "seen")


class SeenState:
    """The newest (epoch, seq) of one volume's map seen on this machine."""

    def __init__(self, volume_uuid: str, directory: str | None = None) -> None:
        self.path = os.path.join(directory or state_directory(), volume_uuid)
        self._newest = self._read()

    @property
    def newest(self) -> tuple[int, int] | None:
        return self._newest

    @staticmethod
    def knows(volume_uuid: str, directory: str | None = None) -> bool:
        """Whether this machine has seen that volume (as an encrypted one:
        only those are remembered)."""
        return os.path.exists(os.path.join(directory or state_directory(), volume_uuid))

    def _read(self) -> tuple[int, int] | None:
        try:
            with open(self.path) as f:
                epoch, seq = f.read().split()[:2]
            return int(epoch, 16), int(seq, 16)
        except (OSError, ValueError):
            return None  # never seen here (or unreadable: nothing to compare with)

    def rollback(self, newest: tuple[int, int] | None, url: str) -> str | None:
        """A warning (one line) when the store's `newest` map object is older
        than one seen here; None when it is not."""
        if self._newest in (None, NOTHING) or (newest is not None and newest >= self._newest):
            return None
        shown = "no map at all" if newest is None else f"map state {newest[0]:x}-{newest[1]:x}"
        return (f"ROLLBACK: {url} shows {shown}, older than {self._newest[0]:x}-{self._newest[1]:x} which this "
                f"machine saw before ({self.path}): the store may have been rolled back or its newest objects "
                "deleted; writes acknowledged since then may be missing")

    def saw(self, name: tuple[int, int] | None) -> None:
        """Remember `name` if it is newer than what was seen, or (None: no
        map yet) that the volume was seen at all.  Best effort: a failure to
        write local state is logged, never raised."""
        name = name or NOTHING
        if self._newest is not None and name <= self._newest:
            return
        self._newest = name
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            temporary = f"{self.path}.{os.getpid()}.tmp"
            with open(temporary, "w") as f:
                f.write(f"{name[0]:x} {name[1]:x} {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}\n")
            os.replace(temporary, self.path)
        except OSError as e:
            log.warning("cannot remember the newest map state in %s: %s", self.path, e)
