"""Showing and clearing a volume's lease by hand (`bucketdisk unlock`).

A lease that was not released (its mount was killed, its machine died or
lost the store) keeps the volume from other writable mounts until it
expires (lock.py).  `unlock` shows who holds it and clears it, but only
where a mount would take it over anyway: its holder is a dead process of
this machine, or the lease has expired by the store's clock.  A live lease
of another host or PID namespace is cleared only when forced; one held by
a live process of this machine never is.

Clearing never deletes or rewrites the holder's lease object (only its
holder writes that).  It creates, create-only, the lease object of the
next epoch (computed as Lease.acquire computes it: above every lease, root
and journal) as a released tombstone that fences:

    {"released": true, "fences": true, "unlocked": true, "forced": ..., ...}

A holder still alive somewhere (a partitioned host) finds it at its next
look for a successor and fences itself, as if a mount had taken over.  The
next mount sees a released predecessor: it takes the volume at once, and
quarantines the doomed hashes for what is left of the late-delete window
since the tombstone was created (latedeletes.still_late: the holder sent
no delete after that moment, since it looks for a successor before each).
The tombstone fences (it is kept by Lease._tidy) for as long as the
holder's lease could still run.  When forced, `unlock` then waits
TAKEOVER_WAIT before it returns, so that every journal the old holder
acknowledged is stored before the next mount reads the journals; a mount
that starts sooner waits for the rest itself (Holder.takeover_wait_left).
"""
import json
import os
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UserError
from ..store.base import ObjectStore
from ..store.owner import boot_id, pid_namespace
from . import layout
from .lock import (CLOCK_SKEW, EXPIRY_MARGIN, LEASE_SECONDS, TAKEOVER_WAIT, Holder, newest_holder,
                   read_leases)
from .rollback import SeenState


@dataclass(frozen=True)
class LeaseView:
    """What `unlock` shows of the newest lease object of a volume."""
    holder: Holder
    state: str  # Holder.state: released, dead, expired, live-here, held
    now: float  # this machine's time when it was read (only for a store that cannot tell an age)

    @property
    def key(self) -> str:
        return layout.lease_key(self.holder.epoch) if self.holder.epoch > 0 else layout.LEGACY_LOCK

    def expires_in(self) -> float | None:
        """Seconds until the lease expires (negative: since it expired),
        by the store's clock when the store tells a lease object's age,
        else by the holder's own word with CLOCK_SKEW to spare; None for a
        released lease or one whose holder wrote nothing readable."""
        if self.holder.released or not self.holder.fields:
            return None
        if self.holder.age is not None:
            return LEASE_SECONDS + EXPIRY_MARGIN - self.holder.age
        expires = self.holder.fields.get("expires")
        return expires + CLOCK_SKEW - self.now if isinstance(expires, (int, float)) else None

    def facts(self) -> dict:
        """The lease as a dict for --json: key, epoch, host, pid,
        pid_namespace (only when not this process's), since (UTC, the
        holder's clock), age_seconds (since its last write, by the store's
        clock; None if the store cannot tell), expires_in_seconds
        (negative: expired that long ago; None when released), state,
        released, unlocked (a tombstone of `unlock`)."""
        f = self.holder.fields
        pidns = f.get("pidns")
        return {
            "key": self.key, "epoch": self.holder.epoch, "host": f.get("host"), "pid": f.get("pid"),
            "pid_namespace": pidns if pidns and pidns != pid_namespace() else None,
            "since": f.get("since"),
            "age_seconds": None if self.holder.age is None else round(self.holder.age, 1),
            "expires_in_seconds": _rounded(self.expires_in()),
            "state": self.state, "released": self.holder.released, "unlocked": self.holder.unlocked,
        }


@dataclass(frozen=True)
class Cleared:
    """The tombstone `clear_lease` created, and how long it then waited (s)."""
    key: str
    epoch: int
    waited: float


def _identity(holder: Holder) -> tuple:
    """What stays the same while one holder renews its lease object."""
    return holder.epoch, holder.fields.get("token"), holder.released


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def lease_view(store: ObjectStore) -> LeaseView | None:
    """The newest lease object of the volume in `store` (a released one
    too), or None when it has none.  Reads the lease objects only."""
    holder = newest_holder(store)
    if holder is None:
        return None
    return LeaseView(holder, holder.state(), time.time())


def clear_lease(store: ObjectStore, record, view: LeaseView, *, force: bool = False,
                wait: float = TAKEOVER_WAIT, on_wait: Callable[[float], None] | None = None) -> Cleared:
    """Clear the lease `view` shows (lease_view's answer) by creating the
    fencing tombstone described in the module docstring.

    `record`: the volume's VolumeRecord (an encrypted one need not be
    unlocked).  `force`: clear a lease that is still held (state "held");
    then `on_wait(seconds)` is called and this sleeps `wait` seconds
    before returning.  Raises UserError (one line, nothing written) for a
    released lease, one held by a live process of this machine, a held one
    without `force`, or when the lease changed since `view` was read (a
    mount took the volume meanwhile)."""
    holder, state = view.holder, view.state
    if state == "released":
        raise UserError("the lease is released already; nothing to clear")
    if state == "live-here":
        raise UserError(f"the volume is held by a live process of this machine ({holder.describe()}); "
                        "unmount it (or stop it) instead")
    if state == "held" and not force:
        raise UserError(f"the volume is held by {holder.describe()}, whose lease is live; nothing cleared")
    store = store.unthrottled()  # lease objects go past --bwlimit, as a mount's (lock.Lease)
    leases = read_leases(store)
    newest = newest_holder(store, leases)
    if newest is None or _identity(newest) != _identity(holder):
        raise UserError("the lease changed while it was read (a mount took or gave back the volume); "
                        "nothing was cleared: run unlock again")
    epoch = max([map_epoch(store, record)] + [h.epoch for h in leases]) + 1
    token = uuid.uuid4().hex
    key = layout.lease_key(epoch)
    if not store.put(key, _tombstone(epoch, token, forced=state == "held"), if_absent=True):
        raise UserError(f"another mount took the volume at the same moment ({key} exists now); nothing was "
                        "cleared")
    won = read_leases(store)
    if not won or won[-1].epoch != epoch or won[-1].fields.get("token") != token:
        raise UserError("another mount took the volume at the same moment; run unlock again to see who")
    if not leases and holder.epoch == 0:  # record version 1's lock object: its holder looks for no successor
        store.delete([layout.LEGACY_LOCK])
    waited = 0.0
    if state == "held":
        if on_wait is not None:
            on_wait(wait)
        time.sleep(wait)
        waited = wait
    return Cleared(key, epoch, waited)


def map_epoch(store: ObjectStore, record) -> int:
    """The highest epoch any root or journal of the volume carries, or
    that this machine saw of an encrypted one (rollback.py): the floor of
    a new lease's epoch, as Volume gives it to Lease.acquire."""
    epochs = [0]
    for prefix in (layout.ROOTS, layout.JOURNAL):
        epochs += [name[0] for key in store.list(prefix) if (name := layout.name_of(key, prefix)) is not None]
    if record.encrypted:
        seen = SeenState(record.uuid).newest
        epochs.append(seen[0] if seen else 0)
    return max(epochs)


def _tombstone(epoch: int, token: str, *, forced: bool) -> bytes:
    """A released lease object that fences (lock.py), marked as unlock's."""
    now = time.time()
    return json.dumps({
        "host": socket.gethostname(), "boot_id": boot_id(), "pidns": pid_namespace(), "pid": os.getpid(),
        "token": token, "epoch": epoch, "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
        "since_epoch_seconds": now, "fences": True, "expires": now, "released": True,
        "unlocked": True, "forced": forced,
    }).encode()
