"""A delete request that lands late never removes content uploaded after
it (latedeletes.py), on both real stores.

The store wrapper below lets a delete pass the writer's lease check and
then holds the request, as a proxy or a slow network would, until the
test lets it land: after a takeover (the attacker's case: the successor
stores content equal to what its predecessor was deleting), and after a
retry (the first request of a retried delete lands after the second).
"""
from __future__ import annotations

import json
import threading
import time

import pytest

from crashpoints import BLOCK_SIZE, BLOCKS, CONTENT, CrashStore, Plan
from test_crash_points import create, places  # noqa: F401 - the fixture
from bucketdisk.codec.block import ZERO_HASH
from bucketdisk.errors import StoreError, UserError
from bucketdisk.volume import layout
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.latedeletes import BLOCK
from bucketdisk.volume.snapshots import SnapshotRecords
from bucketdisk.volume.sweep import sweep
from bucketdisk.volume.volume import Volume

HANG_GUARD = 30  # seconds: only against a hang, not a measure of speed
X, Y = CONTENT["A"], CONTENT["B"]


class DelayedDeletes(CrashStore):
    """Deletes of `prefix` keys pass the guard at once and land when released.
    With `retry`, the held request is the first of two: a second one (a
    retry, attempt 1) is sent and answered at once.  With `lost`, its answer
    never comes and no retry follows: the caller sees an error.  With
    `waiting`, the caller waits for the answer, which comes once it landed."""

    def __init__(self, inner, prefix: str, *, retry: bool = False, lost: bool = False,
                 waiting: bool = False) -> None:
        super().__init__(inner, Plan())
        self.prefix, self.retry, self.lost, self.waiting = prefix, retry, lost, waiting
        self.held = threading.Event()
        self.release = threading.Event()
        self.landed = threading.Event()
        self._thread = None

    def delete(self, keys, *, guard=None) -> None:
        keys = list(keys)
        if self._thread is not None or not any(k.startswith(self.prefix) for k in keys):
            return self.inner.delete(keys, guard=guard)
        if guard is not None:
            guard(keys, 0)
        self._thread = threading.Thread(target=self._land_later, args=(keys,))
        self._thread.start()
        self.held.wait(HANG_GUARD)
        if self.waiting:
            self._thread.join(HANG_GUARD)
        if self.lost:
            raise StoreError("timed out (gave up after 1 attempts)")
        if self.retry:
            if guard is not None:
                guard(keys, 1)
            self.inner.delete(keys)

    def _land_later(self, keys) -> None:
        self.held.set()
        assert self.release.wait(HANG_GUARD)
        self.inner.delete(keys)  # the request was signed long ago: no guard now
        self.landed.set()

    def land(self) -> None:
        self.release.set()
        assert self.landed.wait(HANG_GUARD)


def write(volume: Volume, index: int, data: bytes) -> bytes:
    content_hash = volume.store_block(data, index)
    volume.commit([(index, content_hash, volume.log_number())])
    return content_hash


def reads(volume: Volume, index: int) -> bytes:
    return volume.read_block(volume.lookup(index))


def aliases(store) -> list[str]:
    return [k for k in store.list() if layout.alias_of(k) is not None]


def test_a_predecessors_late_delete_spares_what_the_successor_stored(places):  # noqa: F811
    name = places.new()
    create(places.open(name))
    held = DelayedDeletes(places.open(name), layout.BLOCKS)
    a = Volume(held, writable=True)
    x = write(a, 0, X)
    a.sync()
    write(a, 0, Y)  # X loses its last reference: the next checkpoint deletes it
    collecting = threading.Thread(target=a.checkpoint)
    collecting.start()
    assert held.held.wait(HANG_GUARD)  # A's delete of X passed its lease check, and is held up

    b = Volume(places.open(name), writable=True)  # A's process is this one: taken over at once
    write(b, 1, X)  # content equal to what A is deleting
    b.sync()
    held.land()
    collecting.join(HANG_GUARD)
    assert places.open(name).head(layout.block_key(x)) is None  # the late delete did land
    assert reads(b, 1) == X
    b.close()

    c = Volume(places.open(name), writable=True, late_delete_seconds=0.5)
    assert reads(c, 1) == X and reads(c, 0) == Y
    time.sleep(0.6)
    sweep(c, delete=True)  # the quarantine has passed: the plain object is put back, the alias goes
    c.close()
    store = places.open(name)
    assert aliases(store) == []
    assert store.head(layout.block_key(x)) is not None
    d = Volume(store, writable=False)
    assert reads(d, 1) == X
    d.close()


def x_replaced_by_y(places, **mode):  # noqa: F811
    """(name, store, writable volume) where block 0 held X, synced, then Y:
    the next checkpoint deletes X through a DelayedDeletes of `mode`."""
    name = places.new()
    create(places.open(name))
    held = DelayedDeletes(places.open(name), layout.BLOCKS, **mode)
    a = Volume(held, writable=True, late_delete_seconds=HANG_GUARD)
    write(a, 0, X)
    a.sync()
    write(a, 0, Y)
    return name, held, a


def test_a_retried_delete_that_lands_late_spares_the_content_stored_again(places):  # noqa: F811
    name, held, a = x_replaced_by_y(places, retry=True)
    a.checkpoint()  # X's delete: the first request is held up, the retry deleted it
    write(a, 1, X)  # uploaded again, after the retry's answer
    a.sync()
    held.land()
    assert reads(a, 1) == X
    a.close()
    b = Volume(places.open(name), writable=False)
    assert reads(b, 1) == X and reads(b, 0) == Y
    b.close()


def test_a_late_delete_of_a_map_page_spares_the_page_stored_again(places):  # noqa: F811
    name = places.new()
    create(places.open(name))
    held = DelayedDeletes(places.open(name), layout.PAGES)
    a = Volume(held, writable=True)
    write(a, 0, X)
    a.checkpoint()  # a root whose first page names X
    write(a, 0, Y)
    collecting = threading.Thread(target=a.checkpoint)  # that page is superseded: deleted
    collecting.start()
    assert held.held.wait(HANG_GUARD)

    b = Volume(places.open(name), writable=True)
    write(b, 0, X)  # the first page holds what it held before, under the same name
    b.checkpoint()
    held.land()
    collecting.join(HANG_GUARD)
    b.close()
    c = Volume(places.open(name), writable=False)
    assert reads(c, 0) == X
    c.close()


def test_a_delete_that_failed_without_a_retry_still_quarantines(places):  # noqa: F811
    name, held, a = x_replaced_by_y(places, lost=True)
    with pytest.raises(StoreError):
        a.checkpoint()  # X's delete: sent, no answer, no retry
    a.checkpoint()      # X deleted by a new request
    write(a, 1, X)      # uploaded again
    a.sync()
    held.land()         # the first request lands now
    assert reads(a, 1) == X
    a.close()
    b = Volume(places.open(name), writable=False)
    assert reads(b, 1) == X and reads(b, 0) == Y
    b.close()


SHORT = 4.0  # seconds of quarantine in the tests below; ages are whole seconds on S3


def test_a_quarantine_ends_when_the_predecessors_deletes_can_no_longer_land(places):  # noqa: F811
    """A mount that opens soon after a clean unmount quarantines what that
    mount may still have been deleting, but only for what is left of the
    quarantine since the unmount (its lease object's age), so short mounts
    one after another do not keep restarting it (the aliases would never
    settle)."""
    name = places.new()
    create(places.open(name))
    a = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    x = write(a, 0, X)
    a.sync()
    write(a, 0, Y)
    a.close()  # its last root dooms X, then it deletes X
    b = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    assert b._quarantine.holds(BLOCK, x)  # A's delete may still be on its way
    write(b, 1, X)
    b.sync()
    assert len(aliases(places.open(name))) == 1
    b.close()  # its root carries X's quarantine forward
    time.sleep(SHORT + 2.5)  # since B's unmount, past the quarantine
    c = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    assert not c._quarantine.holds(BLOCK, x)
    assert reads(c, 1) == X
    sweep(c, delete=True)  # the alias settles at once
    c.close()
    assert aliases(places.open(name)) == []


def test_a_volume_made_with_create_force_survives_the_old_volumes_late_deletes(places):  # noqa: F811
    """`create --force` in place of a volume whose writer may still have
    deletes on their way: the new volume's epochs go on above the old one's
    (its roots and journals get other names), and for the quarantine every
    upload also writes an alias, so a late delete of equal content loses
    nothing."""
    name = places.new()
    create(places.open(name))
    old = Volume(places.open(name), writable=True)
    write(old, 0, X)
    old.close()
    old_epoch = old.epoch
    create_volume(places.open(name), BLOCKS * BLOCK_SIZE, BLOCK_SIZE, force=True)
    new = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    assert new.epoch > old_epoch + 1  # above the old mount's and create's own
    x = write(new, 0, X)
    new.sync()
    store = places.open(name)
    store.delete([layout.block_key(x)])  # the old writer's delete of X, landing now
    assert reads(new, 0) == X  # from the alias
    new.close()
    time.sleep(SHORT + 2.5)
    later = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    sweep(later, delete=True)  # the quarantine has passed: X is put back, the alias goes
    later.close()
    assert aliases(store) == [] and store.head(layout.block_key(x)) is not None
    assert json.loads(store.get(layout.RECORD))["replaced"] is True


def test_create_force_stops_while_the_delete_of_its_record_may_land_late(places):  # noqa: F811
    """The record's name and the newest snapshot number would be used again
    by the volume `create --force` makes: a delete of them that lands late
    must not remove the new ones.  A record delete without an answer stops
    the replacement (one line, run again later); the newest old snapshot
    record becomes a placeholder, so the new volume's numbers go above it."""
    name = places.new()
    create(places.open(name))
    old = Volume(places.open(name), writable=True)
    write(old, 0, X)
    old.close()
    records = SnapshotRecords.of(places.open(name), old.record)
    for _ in range(2):
        records.write((old.epoch, 1), [ZERO_HASH] * records.page_count)
    held = DelayedDeletes(places.open(name), layout.RECORD, retry=True)
    with pytest.raises(UserError, match="run this command again after"):
        create_volume(held, BLOCKS * BLOCK_SIZE, BLOCK_SIZE, force=True)
    assert places.open(name).head(layout.snapshot_key(2)) is not None  # nothing else was deleted
    held.land()  # its first request lands after all

    store = places.open(name)
    record = create_volume(store, BLOCKS * BLOCK_SIZE, BLOCK_SIZE, force=True)  # later: it goes through
    fresh = SnapshotRecords.of(store, record)
    new = fresh.write((0, 1), [ZERO_HASH] * fresh.page_count)
    assert new.number == 3
    store.delete([layout.snapshot_key(1), layout.snapshot_key(2)])  # the old volume's, landing late
    assert [s.number for s in SnapshotRecords.of(store, record).list()] == [3]
    Volume(store, writable=False).close()  # the new record is there


def test_a_sweeps_late_delete_is_in_every_root_written_meanwhile(places):  # noqa: F811
    """A sweep beside a mount deletes outside the mount's sync lock; a
    checkpoint that writes a newer root meanwhile must still list what the
    sweep is deleting, or a mount taking over after a crash would not
    quarantine it and would store it again plainly."""
    name = places.new()
    create(places.open(name))
    crashed = Volume(places.open(name), writable=True)
    x = crashed.store_block(X, 1)  # stored, never committed: garbage for the sweep
    del crashed  # killed: its lease is left as it was
    held = DelayedDeletes(places.open(name), layout.BLOCKS, waiting=True)
    a = Volume(held, writable=True)
    sweeping = threading.Thread(target=lambda: _ignoring_fenced(sweep, a, delete=True))
    sweeping.start()
    assert held.held.wait(HANG_GUARD)  # the sweep's delete of X passed its lease check, held up
    write(a, 0, Y)
    a.checkpoint()  # a newer root than the sweep's
    b = Volume(places.open(name), writable=True)  # a crashed: taken over at once
    write(b, 2, X)
    b.sync()
    held.land()
    sweeping.join(HANG_GUARD)
    assert places.open(name).head(layout.block_key(x)) is None  # the late delete did land
    assert reads(b, 2) == X and reads(b, 0) == Y
    b.close()


def _ignoring_fenced(call, *args, **kwargs) -> None:
    try:
        call(*args, **kwargs)
    except StoreError:  # Fenced: the mount was taken over meanwhile
        pass


def test_later_mounts_settle_the_aliases_an_earlier_short_mount_left(places):  # noqa: F811
    """Aliases are settled by later mounts, not only by the mount that wrote
    them or by gc: each root lists the hashes whose aliases are unsettled."""
    name = places.new()
    create(places.open(name))
    old = Volume(places.open(name), writable=True)
    write(old, 0, X)
    old.close()
    create_volume(places.open(name), BLOCKS * BLOCK_SIZE, BLOCK_SIZE, force=True)
    short = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    write(short, 0, X)
    write(short, 1, Y)
    short.close()  # within the quarantine: its aliases stay
    assert len(aliases(places.open(name))) >= 2
    time.sleep(SHORT + 2.5)
    later = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    later.close()
    store = places.open(name)
    assert aliases(store) == []
    check = Volume(store, writable=False)
    assert reads(check, 0) == X and reads(check, 1) == Y
    check.close()


def test_settling_an_alias_keeps_the_copy_that_reads(places):  # noqa: F811
    """An alias is deleted only when its plain object reads back intact: a
    damaged plain object is put back from the alias first."""
    name = places.new()
    create(places.open(name))
    a = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    x = write(a, 0, X)
    a.sync()
    write(a, 0, Y)
    a.close()  # dooms X and deletes it
    b = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    write(b, 1, X)  # within A's quarantine: X gets an alias
    b.sync()
    b.close()
    store = places.open(name)
    assert len(aliases(store)) == 1
    plain = layout.block_key(x)
    damaged = bytearray(store.get(plain))
    damaged[-1] ^= 0x01
    store.put(plain, bytes(damaged))
    time.sleep(SHORT + 2.5)
    c = Volume(places.open(name), writable=True, late_delete_seconds=SHORT)
    sweep(c, delete=True)  # settles the alias
    c.close()
    store = places.open(name)
    assert aliases(store) == []
    assert store.get(plain) != bytes(damaged), "the damaged plain object was kept and its good alias deleted"
    check = Volume(store, writable=False)
    assert reads(check, 1) == X
    check.close()
