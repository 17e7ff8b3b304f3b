"""A lease's expiry is judged by the store's clock, never by comparing two
machines' clocks (issue 13: a taker whose clock ran ahead took a live
lease).  On both real stores."""
from __future__ import annotations

import json
import os
import time

import pytest

from test_crash_points import create, places  # noqa: F401 - the fixture
from bucketdisk.errors import UserError
from bucketdisk.volume import layout
from bucketdisk.volume.lock import LEASE_SECONDS
from bucketdisk.volume.volume import Volume


def lease_of_another_machine(expires: float) -> bytes:
    return json.dumps({"host": "elsewhere.example", "boot_id": "b", "pidns": "p", "pid": 4242,
                       "token": "t", "epoch": 1, "since": "2026-11-30T00:00:00Z",
                       "since_epoch_seconds": expires - LEASE_SECONDS, "fences": False,
                       "expires": expires, "released": False}).encode()


def test_a_fresh_lease_is_live_whatever_its_holders_clock_said(places):  # noqa: F811
    name = places.new()
    store = places.open(name)
    create(store)
    # Renewed just now by a holder whose clock runs an hour behind ours
    # (or read by a taker whose clock runs an hour ahead).
    store.put(layout.lease_key(1), lease_of_another_machine(time.time() - 3600))
    assert store.age(layout.lease_key(1)) < 5
    with pytest.raises(UserError, match="already mounted writable by pid 4242 on elsewhere.example"):
        Volume(places.open(name), writable=True)
    assert [k for k in store.list(layout.LEASES)] == [layout.lease_key(1)]  # untouched


def test_a_lease_not_renewed_for_its_term_is_expired_whatever_its_holder_said(tmp_path):
    from bucketdisk.store.file import FileStore
    store = FileStore(str(tmp_path / "v"), create=True)
    create(store)
    # Its holder's clock ran an hour ahead: it claims a long life; the store saw no renewal for 200 s.
    store.put(layout.lease_key(1), lease_of_another_machine(time.time() + 3600))
    path = tmp_path / "v" / layout.lease_key(1)
    os.utime(path, (time.time() - 200, time.time() - 200))
    assert 195 < store.age(layout.lease_key(1)) < 210
    volume = Volume(store, writable=True)
    assert volume.epoch == 2
    volume.close()


def test_a_lease_the_store_saw_no_renewal_of_is_expired(places, monkeypatch):  # noqa: F811
    from bucketdisk.volume import lock
    monkeypatch.setattr(lock, "LEASE_SECONDS", 2.0)  # a term this test can wait out
    monkeypatch.setattr(lock, "EXPIRY_MARGIN", 1.0)
    name = places.new()
    store = places.open(name)
    create(store)
    store.put(layout.lease_key(1), lease_of_another_machine(time.time() + 3600))
    with pytest.raises(UserError, match="already mounted"):
        Volume(places.open(name), writable=True)
    time.sleep(4.5)  # whole-second Last-Modified and Date: an age of 3 s at least
    volume = Volume(places.open(name), writable=True)
    assert volume.epoch == 2
    volume.close()


def test_a_tombstone_outlives_a_wall_clock_step(tmp_path, monkeypatch):
    """A forced taker keeps its lease object (released) while the mount it
    fenced may still act, even if its wall clock jumps ahead meanwhile."""
    from bucketdisk.store.file import FileStore
    from bucketdisk.volume.lock import Lease
    store = FileStore(str(tmp_path / "v"), create=True)
    create(store)
    lease = Lease(store, 2, fences=True)
    store.put(layout.lease_key(2), lease._content())
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 1000)  # an NTP step, a resumed VM
    lease.release()
    assert json.loads(store.get(layout.lease_key(2)))["released"] is True


def test_an_unreadable_lease_object_counts_as_expired(places):  # noqa: F811
    name = places.new()
    store = places.open(name)
    create(store)
    store.put(layout.lease_key(5), b"garbage{")
    volume = Volume(places.open(name), writable=True)
    assert volume.epoch == 6
    volume.close()
