"""Keys the layout does not name are read past and never deleted; leases
left by other machines are taken over only once expired (issue 13, items
2 and 7).  Both stores, through the CLI; plus the lease's own clock, in
process, against the real S3 server behind a proxy that can go down.
"""
from __future__ import annotations

import json
import os
import random
import time
import uuid

import pytest

from conftest import MiB, assert_cli_error, assert_file_matches, fsync_path
from faultproxy import FaultProxy

STRAYS = {
    "map/journal/0000000000000001-0000000000000009~": b"an editor backup",
    "map/roots/.nfs0000000000001234": b"an NFS silly-rename",
    "map/roots/notes.txt": b"a note",
    "lock/README": b"not a lease",
    "blocks/zz/readme": b"not a block",
    "lock/ffffffffffffffff": b"junk named like a lease of an absurd epoch",
    "lock/0000000100000000": b"an epoch whose log numbers would not fit in 64 bits",
}


def write(bd, m, model: bytearray, offset: int, size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    with open(m.file, "r+b") as f:
        f.seek(offset)
        f.write(data)
    fsync_path(m.file)
    model[offset : offset + size] = data


def test_stray_keys_are_read_past_reported_and_kept(bd):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    write(bd, m, model, 0, 2 * MiB, 1)
    bd.unmount(m)
    strays = dict(STRAYS)
    if vol.kind == "s3":
        strays["map/roots/"] = b""  # what an S3 console's "create folder" leaves
    for key, data in strays.items():
        vol.place.write(key, data)

    info = bd.info(vol)
    map_strays = {k for k in strays if k.startswith(("map/", "lock/"))}
    assert set(info["unknown_keys"]) == map_strays, info["unknown_keys"]
    m = bd.mount(vol)
    assert_file_matches(m.file, model)
    write(bd, m, model, 3 * MiB, MiB, 2)
    bd.unmount(m)
    assert bd.run("gc", vol.url, *vol.store_args).returncode == 0
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    for key, data in strays.items():
        assert vol.place.read(key) == data, f"{key} was changed or deleted"


def plant_lease(vol, epoch: int, expires_in: float) -> str:
    key = f"lock/{epoch:016x}"
    vol.place.write(key, json.dumps({
        "host": "elsewhere", "boot_id": str(uuid.uuid4()), "pidns": "pid:[1]", "pid": 4242,
        "token": uuid.uuid4().hex, "epoch": epoch, "since": "2026-01-01T00:00:00Z",
        "since_epoch_seconds": time.time() - 1000, "fences": False,
        "expires": time.time() + expires_in, "released": False}).encode())
    return key


def test_a_lease_from_elsewhere_is_taken_only_once_expired(bd):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    key = plant_lease(vol, 1, expires_in=300)
    before = vol.snapshot()
    mp = bd._name("mnt")
    mp.mkdir()
    line = assert_cli_error(bd.run("mount", vol.url, mp, "--log", bd._name("log"), *vol.store_args))
    assert "pid 4242 on elsewhere" in line and "--force" in line, line
    assert vol.snapshot() == before, "a refused mount changed the volume"

    plant_lease(vol, 1, expires_in=-60)  # expired a minute ago (+30 s for clock skew)
    m = bd.mount(vol)
    write(bd, m, model, 0, MiB, 3)
    bd.unmount(m)
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout(fence_tombstones=True)
    assert key not in vol.keys(), "the superseded lease object was not tidied away"


@pytest.mark.stores("s3")
def test_a_mount_that_cannot_renew_stops_acknowledging_until_it_can(bd, monkeypatch):
    from bucketdisk.store.credentials import Credentials
    from bucketdisk.store.s3 import S3Options, S3Store
    from bucketdisk.volume import lock
    from bucketdisk.volume.lock import Fenced
    from bucketdisk.volume.volume import Volume

    monkeypatch.setattr(lock, "LEASE_SECONDS", 3.0)
    monkeypatch.setattr(lock, "RENEW_SECONDS", 0.5)
    vol = bd.create(size="8M", block_size="64K")
    server = bd.store.server
    host, port = server.endpoint.rsplit("//", 1)[1].rsplit(":", 1)
    proxy = FaultProxy(host, int(port)).start()
    try:
        store = S3Store(vol.place.bucket, vol.place.prefix,
                        S3Options(endpoint=proxy.endpoint, addressing="path", region=server.region, retry_time=1,
                                  read_timeout=2), credentials=Credentials(server.access_key, server.secret_key))
        volume = Volume(store, writable=True)
        block = os.urandom(64 * 1024)
        volume.commit([(0, volume.store_block(block, 0), volume.log_number())])
        volume.sync()  # acknowledged

        proxy.set_faults(down=True)
        time.sleep(lock.LEASE_SECONDS + 1)
        assert volume.refusing is not None, "a mount that could not renew still acknowledges"
        with pytest.raises(Fenced):
            volume.sync()
        assert volume.fenced is None, "an expired lease is not a lost one"

        proxy.clear()  # the store is back and nobody took the volume: renewal resumes
        deadline = time.monotonic() + 10
        while volume.refusing is not None:
            assert time.monotonic() < deadline, "the lease was not renewed after the store came back"
            time.sleep(0.2)
        volume.commit([(1, volume.store_block(block, 1), volume.log_number())])
        volume.sync()
        volume.close()
    finally:
        proxy.stop()
    m = bd.mount(vol, read_only=True)
    with open(m.file, "rb") as f:
        assert f.read(128 * 1024) == block * 2
    bd.unmount(m)
