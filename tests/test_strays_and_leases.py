"""Keys the layout does not name are read past, listed by `info` wherever
they are, and never deleted; leases left by other machines are taken over
only once expired (issue 13, items 2 and 7); the file:// store's temporary
files are shown by `info` and removed only once their writer is gone.
Both stores, through the CLI; plus the lease's own clock, in process,
against the real S3 server behind a proxy that can go down.
"""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid

import pytest

from conftest import MiB, assert_cli_error, assert_file_matches, fsync_path, key_kind
from faultproxy import FaultProxy

STRAYS = {
    "map/journal/0000000000000001-0000000000000009~": b"an editor backup",
    "map/roots/.nfs0000000000001234": b"an NFS silly-rename",
    "map/roots/notes.txt": b"a note",
    "lock/README": b"not a lease",
    "blocks/zz/readme": b"not a block",
    "lock/ffffffffffffffff": b"junk named like a lease of an absurd epoch",
    "lock/0000000100000000": b"an epoch whose log numbers would not fit in 64 bits",
    "notes.txt": b"a note beside the volume",
    "blocks/ab/" + "ab" * 31: b"a block name one byte short",
    "map/pages/readme": b"not a page",
    "map/other/x": b"a directory the layout does not have",
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
    assert set(info["unknown_keys"]) == set(strays), info["unknown_keys"]
    blocks = [k for k in vol.keys() if key_kind(k) == "block"]
    assert info["objects"] == len(blocks), "a stray under blocks/ counted as a block"
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

    if vol.kind == "s3":  # S3 stamps Last-Modified itself: test_lease_clock.py ages one in process
        return
    plant_lease(vol, 1, expires_in=3600)  # its holder's clock said it lives on, but...
    os.utime(vol.path / key, (time.time() - 200, time.time() - 200))  # ...the store saw no renewal for 200 s
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


# --------------------------------------------------------------------------
# the file:// store's temporary files
# --------------------------------------------------------------------------

# A writer stopped between writing its temporary file (fsynced, not yet
# linked into place) and linking it: the real store code, in a process of
# its own that then waits to be killed.
WRITER = """
import sys, time
from bucketdisk.store.file import FileStore
path = FileStore(sys.argv[1])._write_temp(b"x" * 100_000)
print(path, flush=True)
time.sleep(600)
"""


def writer_with_a_temp_file(bd, vol) -> tuple[subprocess.Popen, str]:
    """A live process holding a temporary file in `vol`; (it, the file's name)."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(vol.path)], stdout=subprocess.PIPE, text=True)
    bd.janitor.push(f"temp writer {proc.pid}", lambda: (proc.kill(), proc.wait()))
    name = os.path.basename(proc.stdout.readline().strip())
    assert name and (vol.path / ".tmp" / name).is_file(), name
    return proc, name


def kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def temp_names(vol) -> set[str]:
    return set(os.listdir(vol.path / ".tmp"))


@pytest.mark.stores("file")
def test_temp_files_are_shown_and_removed_only_once_their_writer_is_gone(bd):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    write(bd, m, model, 0, 2 * MiB, 4)
    bd.unmount(m)
    killed, killed_name = writer_with_a_temp_file(bd, vol)
    kill(killed)
    live, live_name = writer_with_a_temp_file(bd, vol)
    day = 24 * 3600
    others = {  # name: age in seconds; another machine's, and one from before owners were named
        f"0123456789abcdef-4242-{uuid.uuid4().hex}": 2 * day,
        f"0123456789abcdef-4243-{uuid.uuid4().hex}": 60,
        uuid.uuid4().hex: 2 * day,
        uuid.uuid4().hex: 600,
    }
    for name, age in others.items():
        path = vol.path / ".tmp" / name
        path.write_bytes(b"y" * 1000)
        os.utime(path, (time.time() - age, time.time() - age))
    abandoned = {killed_name} | {n for n, age in others.items() if age > day}
    kept = temp_names(vol) - abandoned

    info = bd.info(vol)
    assert (info["temp_files"], info["abandoned_temp_files"]) == (6, 3), info
    assert info["unknown_keys"] == [], "temporary files are not keys"
    before = vol.snapshot()
    dry = json.loads(bd.ok("gc", vol.url, "--dry-run", "--json").stdout)
    assert dry["found_temp_files"] == 3, dry
    assert vol.snapshot() == before, "gc --dry-run removed something"
    done = json.loads(bd.ok("gc", vol.url, "--json").stdout)
    assert done["deleted_temp_files"] == 3, done
    assert temp_names(vol) == kept, "gc removed a temporary file a live writer or a young one may still need"

    kill(live)  # the live writer dies too: the next writable mount tidies its file
    m = bd.mount(vol)
    assert live_name not in temp_names(vol)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    info = bd.info(vol)
    assert (info["temp_files"], info["abandoned_temp_files"]) == (2, 0), info
    assert temp_names(vol) == kept - {live_name}
