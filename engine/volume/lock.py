"""The single-writer lease, and the epoch that fences out a superseded writer.

Each writable mount takes a lease object `lock/<epoch>`, created only if
absent (If-None-Match: *), with an epoch one above every epoch the volume
has seen.  Exactly one mount can create a given epoch, and every map object
it writes carries that epoch in its name (layout.py), so two writers never
write the same key, and readers take the newest epoch's root as the truth.

A holder renews by rewriting its own lease object (no one else writes that
key) and proves it still holds the volume by finding no `lock/<epoch+1>`:
it looks before and after each renewal and before any delete.  A holder
that finds a successor, or that has not renewed for LEASE_SECONDS (by the
CLOCK_BOOTTIME clock, which keeps counting through a suspend), is fenced:
it raises Fenced and acknowledges nothing more.

Acknowledging a journal needs no request of its own.  A look that found no
successor and started at time s vouches for every write that was durable
before s + CONFIRM_SECONDS: a successor's lease was created after s, and
the successor waits TAKEOVER_WAIT > CONFIRM_SECONDS after creating it
before it reads the journals, so it sees every such write.  Only when the
last look is older than that does acknowledging cost a HEAD.  (It was one
HEAD per fsync before: about 15% of W6's IOPS.)  Deletes still look first,
every time: a delete acts after the look, not before it.

Taking over a lease that was not released:
  * held by a live process of this machine and PID namespace: refused,
    even with --force;
  * its process is gone (same machine, boot and PID namespace): taken;
  * anything else (another host, another PID namespace we cannot see
    into): taken once the lease has expired, or with --force after
    TAKEOVER_WAIT (so the holder's last acknowledgements are in the
    journals read).
Expiry is judged by the store's clock alone: the lease object's age, the
store's time now minus the time it stamped on the holder's last renewal
(store.age), so a taker whose clock runs ahead cannot take a live lease.
A released lease object stays (a tombstone): it keeps its epoch taken,
its age tells the next mount how long ago its holder's last delete was
sent (latedeletes.py), and one that fenced a live predecessor must be
found by that predecessor.  A taker deletes older lease objects once no
predecessor can still need them.
"""
import json
import logging
import os
import socket
import threading
import time
import uuid
from dataclasses import dataclass

from ..errors import NotFound, StoreError, UserError
from ..store.base import ObjectStore
from ..store.owner import boot_id, pid_namespace, proc_is_ours, process_alive
from . import layout

log = logging.getLogger(__name__)

LEASE_SECONDS = 120.0  # a holder that has not renewed for this long stops acknowledging writes
RENEW_SECONDS = 15.0   # how often the holder renews (several tries fit in one lease)
CLOCK_SKEW = 30.0      # seconds two machines' wall clocks may differ (where they must be compared)
# Added to LEASE_SECONDS before a lease object's age (by the store's clock)
# counts as expired: whole-second HTTP dates, and clocks running at
# slightly different rates over a lease.
EXPIRY_MARGIN = 5.0
CONFIRM_SECONDS = 20.0  # how long after it started a look that found no successor vouches for writes
# A forced taker waits this long after creating its lease before reading the
# journals; the margin covers two machines' clocks running at slightly
# different rates and the time between a journal's PUT and its acknowledgement.
TAKEOVER_WAIT = CONFIRM_SECONDS + 5.0


class Fenced(StoreError):
    """This mount no longer holds the volume's lease: it must not
    acknowledge anything more.  The message says why."""


def boottime() -> float:
    """Seconds since boot, counting time spent suspended."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


@dataclass(frozen=True)
class Holder:
    """What a lease object says about the mount that holds (or held) it."""
    epoch: int
    fields: dict
    age: float | None = None  # seconds since its last renewal, by the store's clock

    @property
    def released(self) -> bool:
        return bool(self.fields.get("released"))

    @property
    def unlocked(self) -> bool:
        """Whether this is the tombstone `bucketdisk unlock` left (leaseclear.py)."""
        return bool(self.fields.get("unlocked"))

    def describe(self) -> str:
        f = self.fields
        if self.unlocked:
            return f"'bucketdisk unlock' (pid {f.get('pid')} on {f.get('host')}) at {f.get('since')}"
        return f"pid {f.get('pid')} on {f.get('host')} since {f.get('since')}"

    def takeover_wait_left(self) -> float:
        """Seconds a mount taking over after this lease object must still
        wait before it reads the journals: what is left of TAKEOVER_WAIT
        after an `unlock --force` tombstone was created (its age, by the
        store's clock; all of it when the store cannot tell), else 0."""
        if not (self.released and self.unlocked and self.fields.get("forced")):
            return 0.0
        if self.age is None:
            return TAKEOVER_WAIT
        return max(0.0, min(TAKEOVER_WAIT, TAKEOVER_WAIT - self.age))

    def state(self, now: float | None = None) -> str:
        """'released', 'dead', 'expired', 'live-here' (a live process on this
        machine: never taken over) or 'held' (taken over only with --force)."""
        f, now = self.fields, time.time() if now is None else now
        if self.released:
            return "released"
        if not f:  # unreadable: its holder wrote nothing we can trust
            return "expired"
        if f.get("host") == socket.gethostname() and f.get("boot_id") == boot_id() \
                and f.get("pidns") == pid_namespace() and proc_is_ours():
            pid = f.get("pid")
            if isinstance(pid, int) and pid != os.getpid() and process_alive(pid):
                return "live-here"
            return "dead"
        if self.age is not None:
            return "expired" if self.age > LEASE_SECONDS + EXPIRY_MARGIN else "held"
        expires = f.get("expires")  # a store that cannot tell an age: the holder's word, with skew to spare
        if not isinstance(expires, (int, float)) or expires + CLOCK_SKEW < now:
            return "expired"
        return "held"

    def still_fences(self, now: float | None = None) -> bool:
        """Whether this lease object must be kept: a predecessor it took
        over from may act until its lease runs out.  Its age counts from
        its last write, which came after its creation, and the
        predecessor's last renewal came before that."""
        if not self.fields.get("fences"):
            return False
        if self.age is not None:
            return self.age <= LEASE_SECONDS + EXPIRY_MARGIN
        since = float(self.fields.get("since_epoch_seconds", 0))
        return (time.time() if now is None else now) <= since + LEASE_SECONDS + CLOCK_SKEW


def read_leases(store: ObjectStore) -> list[Holder]:
    """Every lease object, oldest epoch first.  An unreadable one counts as
    expired (its holder wrote nothing we can trust)."""
    store = store.unthrottled()  # a lease is read past --bwlimit (Lease)
    holders = []
    for key in store.list(layout.LEASES):
        epoch = layout.epoch_of_lease_key(key)
        if epoch is None:
            continue
        try:
            fields = json.loads(store.get(key))
            if not isinstance(fields, dict):
                raise ValueError
        except NotFound:
            continue
        except ValueError:
            fields = {}
        holders.append(Holder(epoch, fields, store.age(key)))
    return sorted(holders, key=lambda h: h.epoch)


def newest_holder(store: ObjectStore, leases: list[Holder] | None = None) -> Holder | None:
    """The lease object of the highest epoch (released or not), else the
    lock object of record version 1, else None.  `leases`: read_leases's
    answer, when the caller has it."""
    leases = read_leases(store) if leases is None else leases
    return leases[-1] if leases else _legacy_holder(store)


def current_holder(store: ObjectStore) -> Holder | None:
    """The holder of the newest lease, unless it was released."""
    leases = read_leases(store)
    if leases and not leases[-1].released:
        return leases[-1]
    return _legacy_holder(store)


def _legacy_holder(store: ObjectStore) -> Holder | None:
    """The lock object of record version 1, read as a lease of epoch 0."""
    store = store.unthrottled()
    try:
        fields = json.loads(store.get(layout.LEGACY_LOCK))
    except NotFound:
        return None
    except ValueError:
        fields = {}
    return Holder(0, fields if isinstance(fields, dict) else {}, store.age(layout.LEGACY_LOCK))


class Lease:
    """A writable mount's hold on its volume (see the module docstring).

    Its objects are read and written past any bandwidth cap of the store
    (ObjectStore.unthrottled): at --bwlimit 64K a renewal queued behind a
    few MiB of blocks would wait longer than the lease lasts."""

    def __init__(self, store: ObjectStore, epoch: int, fences: bool, volume_uuid: str | None = None) -> None:
        self.store = store.unthrottled()
        self.volume_uuid = volume_uuid
        self.epoch = epoch
        self.token = uuid.uuid4().hex
        self._fences = fences
        self._since = time.time()
        self._valid_until = boottime() + LEASE_SECONDS
        self._fenced: str | None = None
        self._check_lock = threading.Lock()
        self._confirmed_at = boottime()  # just created: no successor can exist yet
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None
        # The lease this one followed, and its state then (Holder.state): how
        # long its holder's deletes may still land depends on them (latedeletes.py).
        self.predecessor: Holder | None = None
        self.predecessor_state: str | None = None
        self.conditional_puts = True  # whether the store refused a second create-only PUT (acquire)

    # -- taking and giving back ------------------------------------------------------

    @classmethod
    def acquire(cls, store: ObjectStore, *, min_epoch: int, force: bool = False,
                volume_uuid: str | None = None) -> "Lease":
        """Take the volume, or raise UserError naming who holds it.

        `min_epoch` is the highest epoch any map object of the volume
        carries; the new epoch is above it and above every lease object.
        `volume_uuid`: the record's, so that a holder whose lease ran out
        notices a volume created anew in its place.
        """
        store = store.unthrottled()
        leases, newest, state = cls.refuse_if_held(store, force=force)
        # A volume that has map objects but no lease object at all lost it
        # (deleted by hand, a lifecycle rule): its writer may still be
        # running, so this is taken as from a live holder (it must find our
        # lease, and we wait until it can acknowledge nothing more).
        vanished = newest is None and min_epoch > 0
        # A predecessor that may still be running must find our lease object.
        fences = state in ("held", "expired") or vanished
        epoch = max([min_epoch] + [h.epoch for h in leases]) + 1
        lease = cls(store, epoch, fences, volume_uuid)
        lease.predecessor, lease.predecessor_state = newest, state
        # A create-only PUT that finds the name taken may have been taken by
        # its own first attempt, whose answer a reset lost (the store's retry
        # then hears 412): the token read back tells.  Another mount's, or a
        # store that ignores If-None-Match letting two through, is refused.
        store.put(layout.lease_key(epoch), lease._content(), if_absent=True)
        won = read_leases(store)
        if not won or won[-1].epoch != epoch or won[-1].fields.get("token") != lease.token:
            raise UserError("another mount took the volume at the same moment")
        # Does the store honour If-None-Match?  Writing our own lease object
        # again, only if absent, must be refused.  (Where it is not, create-
        # only PUTs tell nothing: the volume then trusts none of them.)
        lease.conditional_puts = not store.put(layout.lease_key(epoch), lease._content(), if_absent=True)
        if not lease.conditional_puts:
            log.warning("the store ignores If-None-Match (conditional PUTs); objects created meanwhile are "
                        "left for gc to collect")
        lease._tidy(leases)
        if newest is not None and newest.epoch == 0 and not leases:
            store.delete([layout.LEGACY_LOCK])
        lease._start_renewing()
        if state == "held":  # forced: the holder may still acknowledge writes
            log.warning("took the volume from %s with --force; waiting %.0f s until it can acknowledge "
                        "nothing more", newest.describe(), TAKEOVER_WAIT)
            time.sleep(TAKEOVER_WAIT)
        elif vanished:
            log.warning("the volume has map objects (epoch %d) but no lease object: a mount may hold it "
                        "with its lease deleted; waiting %.0f s until such a mount can acknowledge nothing "
                        "more", min_epoch, TAKEOVER_WAIT)
            time.sleep(TAKEOVER_WAIT)
        elif newest is not None and newest.takeover_wait_left() > 0:
            # `unlock --force` fenced a live holder moments ago and was stopped
            # (or this mount started) before its own wait was over
            left = newest.takeover_wait_left()
            log.warning("%s fenced a live holder %.0f s ago; waiting %.0f s until it can acknowledge "
                        "nothing more", newest.describe(), TAKEOVER_WAIT - left, left)
            time.sleep(left)
        return lease

    @staticmethod
    def refuse_if_held(store: ObjectStore, *, force: bool = False
                       ) -> tuple[list[Holder], Holder | None, str | None]:
        """(every lease object, the newest, its state: Holder.state); raises
        UserError naming the holder while a mount holds the volume: a live
        process of this machine, or, unless `force`, a lease of another."""
        leases = read_leases(store)
        newest = newest_holder(store, leases)
        state = newest.state() if newest is not None else None
        if state == "live-here":
            raise UserError(f"volume is mounted writable by {newest.describe()} (a live process on "
                            "this machine); unmount it first")
        if state == "held" and not force:
            raise UserError(f"volume is already mounted writable by {newest.describe()}; its lease "
                            "runs for up to "
                            f"{LEASE_SECONDS + EXPIRY_MARGIN:.0f} s after that mount stops renewing it; use "
                            "--force only if that mount is gone")
        return leases, newest, state

    def _content(self, *, released: bool = False) -> bytes:
        return json.dumps({
            "host": socket.gethostname(), "boot_id": boot_id(), "pidns": pid_namespace(),
            "pid": os.getpid(), "token": self.token, "epoch": self.epoch,
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._since)),
            "since_epoch_seconds": self._since, "fences": self._fences,
            "expires": time.time() + LEASE_SECONDS, "released": released,
        }).encode()

    def _tidy(self, older: list[Holder]) -> None:
        """Delete older lease objects no superseded writer can still need."""
        stale = [layout.lease_key(h.epoch) for h in older if h.epoch < self.epoch and not h.still_fences()]
        if stale:
            self.store.delete(stale)

    def release(self) -> None:
        """Stop renewing and give the volume back.  The lease object stays,
        marked released: a predecessor it fenced may still look for it, the
        next mount learns from its age how long ago this mount's last
        delete was sent (latedeletes.py), and its epoch stays taken."""
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join()
        if self._fenced is not None:
            return  # not ours any more
        self.store.put(layout.lease_key(self.epoch), self._content(released=True))

    # -- proving we still hold it ----------------------------------------------------

    @property
    def fenced(self) -> str | None:
        """Why this mount lost the volume, or None while it holds it."""
        return self._fenced

    @property
    def refusing(self) -> str | None:
        """Why this mount must not acknowledge writes now: fenced, or its
        lease ran out (until a renewal succeeds), else None."""
        if self._fenced is None and boottime() >= self._valid_until:
            return f"this mount has not renewed its lease for {LEASE_SECONDS:.0f} s (is the store reachable?)"
        return self._fenced

    def check(self) -> None:
        """Raise Fenced unless this mount provably still holds the volume:
        renewed within LEASE_SECONDS and no successor lease exists now
        (one HEAD).  Call before deletes."""
        reason = self.refusing  # an expired lease is not final: a renewal that finds no successor restores it
        if reason is not None:
            raise Fenced(reason)
        self.check_successor()

    def confirm(self) -> None:
        """Raise Fenced unless every write that is durable by now is surely
        read by any successor (see the module docstring): call after a write,
        before acknowledging it.  Costs a HEAD only when the last look for a
        successor started CONFIRM_SECONDS ago or more."""
        reason = self.refusing
        if reason is not None:
            raise Fenced(reason)
        if boottime() - self._confirmed_at >= CONFIRM_SECONDS:
            self.check_successor()

    def fence(self, reason: str) -> None:
        """Mark this mount fenced for good (another has the volume); raises Fenced."""
        with self._check_lock:
            first = self._fenced is None
            if first:
                self._fenced = reason
                log.error("%s: this mount refuses all further writes, and stores nothing more of what "
                          "it holds", reason)
        if first:
            self._stop.set()
            try:  # our own lease object no longer holds anything: say so, so no mount waits on it
                self.store.put(layout.lease_key(self.epoch), self._content(released=True))
            except StoreError:
                pass
        raise Fenced(self._fenced)

    # -- renewing --------------------------------------------------------------------

    def _start_renewing(self) -> None:
        self._renewer = threading.Thread(target=self._renew_loop, name="lease-renewer", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(RENEW_SECONDS):
            if self._fenced is not None:
                return
            try:
                self.renew()
            except Fenced:
                return
            except StoreError as e:
                left = self._valid_until - boottime()
                log.warning("renewing the lease failed (%s); %.0f s left before writes are refused", e, left)

    def renew(self) -> None:
        """Extend the lease by LEASE_SECONDS from now (raises Fenced or StoreError)."""
        started = boottime()
        # Look first: a successor may have tidied our lease object away, and
        # writing it again would make a fenced mount look like a live holder.
        if started >= self._valid_until:
            # Our lease ran out: a successor may have come and gone, its lease
            # object tidied away, so look for any newer epoch at all.
            self._check_no_newer_epoch()
        self.check_successor()
        self.store.put(layout.lease_key(self.epoch), self._content())
        self.check_successor()
        self._valid_until = started + LEASE_SECONDS

    def check_successor(self) -> None:
        """Raise Fenced if a lease of the next epoch exists."""
        started = boottime()
        if self.store.head(layout.lease_key(self.epoch + 1)) is not None:
            successor = next((h for h in read_leases(self.store) if h.epoch == self.epoch + 1), None)
            self.fence(f"the volume was taken over by {successor.describe() if successor else 'another mount'}")
        with self._check_lock:
            self._confirmed_at = max(self._confirmed_at, started)

    def _check_no_newer_epoch(self) -> None:
        newer = [h.epoch for h in read_leases(self.store) if h.epoch > self.epoch]
        newer += [name[0] for name in map(lambda k: layout.name_of(k, layout.ROOTS), self.store.list(layout.ROOTS))
                  if name is not None and name[0] > self.epoch]
        if newer:
            self.fence(f"the volume was taken over (epoch {min(newer)}) while this mount could not renew its lease")
        if self.volume_uuid is not None:
            try:
                uuid_now = json.loads(self.store.get(layout.RECORD)).get("uuid")
            except (NotFound, ValueError, AttributeError):
                uuid_now = None
            if uuid_now != self.volume_uuid:
                self.fence("the volume was deleted or created anew while this mount could not renew its lease")
