"""Noticing a rolled-back store: the newest map state this machine has seen.

Encryption stops the store from forging or moving objects, but not from
showing an older, authentic state: deleting the newest roots and journals,
putting back an old root, or restoring the bucket from an old copy would
silently take a volume back in time.  So each machine remembers, per
volume UUID, the newest root it has seen and the journals it has seen
after that root, in a small file of its local state (XDG_STATE_HOME, by
default ~/.local/state/bucketdisk/seen/UUID), and warns when the store
shows an older root, an older newest object, or lacks one of those
journals.  It cannot notice a rollback to a state newer than any this
machine saw: another machine's writes are unknown here.

Kept for encrypted volumes, whose owners do not trust the store.  Each
machine also remembers the places (URLs) where it opened an encrypted
volume (seen/places/), so a volume it knows as encrypted, by UUID or by
place, is never opened as a plain one (unlock.py); and a writer takes an
epoch above any seen here, so that a rolled-back store never makes it
write again under the names of the history that was lost.
"""
import json
import logging
import os

import blake3

log = logging.getLogger(__name__)

Name = tuple[int, int]  # (epoch, seq) of a root or journal


def state_directory() -> str:
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "bucketdisk", "seen")


class SeenState:
    """The newest root of one volume seen on this machine, and the journals
    seen after it."""

    def __init__(self, volume_uuid: str, directory: str | None = None) -> None:
        self.path = os.path.join(directory or state_directory(), volume_uuid)
        self.root: Name | None = None
        self.journals: set[Name] = set()
        self._read()

    @property
    def newest(self) -> Name | None:
        return max([n for n in [self.root, *self.journals] if n is not None], default=None)

    @staticmethod
    def knows(volume_uuid: str, directory: str | None = None) -> bool:
        """Whether this machine has seen that volume (as an encrypted one:
        only those are remembered)."""
        return os.path.exists(os.path.join(directory or state_directory(), volume_uuid))

    def rollback(self, roots: list[Name], journals: list[Name], url: str) -> str | None:
        """A warning (one line) when the store, listing `roots` and
        `journals`, shows an older state than one seen here; else None."""
        newest_root = max(roots, default=None)
        newest = max(roots + journals, default=None)
        if self.root is not None and (newest_root is None or newest_root < self.root):
            problem = f"its newest checkpoint is {_shown(newest_root)}, older than {_shown(self.root)}"
        elif self.newest is not None and (newest is None or newest < self.newest):
            problem = f"its newest map object is {_shown(newest)}, older than {_shown(self.newest)}"
        elif newest_root == self.root and (gone := sorted(self.journals - set(journals))):
            problem = f"the journal {_shown(gone[0])} seen after its newest checkpoint is gone"
        else:
            return None
        return (f"ROLLBACK: {url}: {problem}, which this machine saw before ({self.path}): the store may have "
                "been rolled back or its newest objects deleted; writes acknowledged since then may be missing")

    def saw(self, roots: list[Name], journals: list[Name]) -> None:
        """Remember what a listing shows (only what is newer than what was seen)."""
        newest_root = max(roots, default=None)
        if newest_root is not None and (self.root is None or newest_root > self.root):
            self._set_root(newest_root)
        self.journals |= {j for j in journals if self.root is None or j > self.root}
        self._write()

    def saw_root(self, name: Name) -> None:
        if self.root is None or name > self.root:
            self._set_root(name)
            self._write()

    def saw_journal(self, name: Name) -> None:
        if (self.root is None or name > self.root) and name not in self.journals:
            self.journals.add(name)
            self._write()

    def _set_root(self, name: Name) -> None:
        self.root = name
        self.journals = {j for j in self.journals if j > name}

    def _read(self) -> None:
        try:
            with open(self.path) as f:
                state = json.load(f)
            self.root = tuple(state["root"]) if state["root"] else None
            self.journals = {tuple(j) for j in state["journals"]}
        except (OSError, ValueError, KeyError, TypeError):
            pass  # never seen here (or unreadable: nothing to compare with)

    def _write(self) -> None:
        """Merge with what another process (a writer, an `info`) stored
        meanwhile, and store it: what is remembered never goes back.  Best
        effort: a failure to write local state is logged, never raised."""
        mine = self.root, self.journals
        self._read()
        if mine[0] is not None and (self.root is None or mine[0] > self.root):
            self.root, self.journals = mine[0], self.journals | mine[1]
        else:
            self.journals |= mine[1]
        self.journals = {j for j in self.journals if self.root is None or j > self.root}
        state = {"root": self.root, "journals": sorted(self.journals)}
        _write_file(self.path, json.dumps(state) + "\n")


def _shown(name: Name | None) -> str:
    return "none" if name is None else f"{name[0]:x}-{name[1]:x}"


# -- places known to hold an encrypted volume ------------------------------------------


def _place_path(url: str, directory: str | None) -> str:
    return os.path.join(directory or state_directory(), "places", blake3.blake3(url.encode()).hexdigest()[:32])


def encrypted_place(url: str, directory: str | None = None) -> str | None:
    """The state file saying this machine opened an encrypted volume at
    `url`, or None."""
    path = _place_path(url, directory)
    return path if os.path.exists(path) else None


def remember_place(url: str, encrypted: bool, directory: str | None = None) -> None:
    """Remember (or, for a plain volume this machine created there, forget)
    that `url` holds an encrypted volume."""
    path = _place_path(url, directory)
    if encrypted:
        if not os.path.exists(path):
            _write_file(path, url + "\n")
    else:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


def _write_file(path: str, text: str) -> None:
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        temporary = f"{path}.{os.getpid()}.tmp"
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, path)
    except OSError as e:
        log.warning("cannot remember what this machine saw in %s: %s", path, e)
