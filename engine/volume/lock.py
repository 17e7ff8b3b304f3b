"""The single-writer lock: one `lock` object, created atomically.

It records who holds the volume (host, boot id, pid, a random token) and a
lease that the holder renews.  A lock is stale, and may be taken over, when
its holder is a dead process on this very machine (same boot id) or when its
lease has run out; anything else refuses the mount unless forced.
"""
import json
import logging
import os
import socket
import threading
import time
import uuid

from ..errors import NotFound, UserError
from ..store.base import ObjectStore
from . import layout

log = logging.getLogger(__name__)

LEASE_SECONDS = 600
RENEW_SECONDS = 60


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _process_alive(pid: int) -> bool:
    """True for a running process; a zombie (killed, not yet reaped) is dead."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in (b"Z", b"X")


class MountLock:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _content(self) -> bytes:
        return json.dumps({
            "host": socket.gethostname(),
            "boot_id": _boot_id(),
            "pid": os.getpid(),
            "token": self.token,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "expires": time.time() + LEASE_SECONDS,
        }).encode()

    def acquire(self, *, force: bool = False) -> None:
        """Take the lock or raise UserError naming who holds it.

        The create is conditional (If-None-Match), which is atomic where the
        store honours it.  On a store that ignores it, reading the holder
        first and our token back after refuse any second writer that comes
        later; two mounts started in the same instant could still both
        pass, and the renewer then reports the loser loudly.
        """
        holder = self.holder()
        if holder is not None:
            if not force and not self.is_stale(holder):
                raise UserError(
                    f"volume is already mounted writable by pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {holder.get('since')}; "
                    "use --force only if that mount is gone"
                )
            self.store.delete([layout.LOCK])  # stale or forced
        self.store.put(layout.LOCK, self._content(), if_absent=True)
        won = self.holder()
        if won is None or won.get("token") != self.token:
            raise UserError("another mount took the volume lock at the same moment")
        self._start_renewing()

    def holder(self) -> dict | None:
        try:
            return json.loads(self.store.get(layout.LOCK))
        except NotFound:
            return None
        except ValueError:
            return {}  # unreadable: treat as stale

    def release(self) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        holder = self.holder()
        if holder is not None and holder.get("token") == self.token:
            self.store.delete([layout.LOCK])

    @staticmethod
    def is_stale(holder: dict) -> bool:
        if not holder:
            return True
        if holder.get("boot_id") == _boot_id() and holder.get("host") == socket.gethostname():
            pid = holder.get("pid")
            return not isinstance(pid, int) or not _process_alive(pid) or pid == os.getpid()
        return float(holder.get("expires", 0)) < time.time()

    def _start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew, name="lock-renewer", daemon=True)
        self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            try:
                holder = self.holder()
                if holder is not None and holder.get("token") == self.token:
                    self.store.put(layout.LOCK, self._content())
                else:
                    log.error("the volume lock now belongs to pid %s on %s: another writer is mounted; "
                              "unmount one of them", (holder or {}).get("pid"), (holder or {}).get("host"))
            except Exception:  # a missed renewal is retried; the lease is long
                pass
