"""`bucketdisk unlock URL [--force] [--json]` (issue 16): shows the lease's
holder and clears it only when its holder is gone (a dead process of this
machine, or expired by the store's clock); a live lease of another host is
cleared only with --force, which fences that mount if it still runs; a
live process of this machine is never unlocked.  Real mounts, both stores;
"another host" is a UTS namespace with another host name (as in
test_two_writers), or a lease object written as such a host writes it.
"""
from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess

from conftest import (
    CLI, MiB, assert_cli_error, assert_file_matches, pwrite_fsync, run, wait_pid_gone, wait_until,
    wait_until_clean,
)
from test_strays_and_leases import plant_lease
from test_two_writers import FsyncLoop, as_other_host, assert_fenced


def lease(vol, epoch: int) -> dict | None:
    data = vol.place.read(f"lock/{epoch:016x}")
    return None if data is None else json.loads(data)


def unlock_json(bd, vol, *flags) -> tuple[int, dict]:
    proc = bd.run("unlock", vol.url, "--json", *flags, *vol.store_args)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def without(snapshot: dict, key: str) -> dict:
    """A store snapshot but for one key's content (a live holder renews its lease object)."""
    return {k: (v if k != key else "renewed by its holder") for k, v in snapshot.items()}


def test_no_lease_or_a_released_one_is_not_locked_and_changes_nothing(bd):
    vol = bd.create(size="8M", block_size="64K")
    before = vol.snapshot()
    out = bd.ok("unlock", vol.url, *vol.store_args).stdout
    assert "not locked" in out and "never mounted writable" in out, out
    code, facts = unlock_json(bd, vol)
    assert code == 0 and facts["locked"] is False and facts["lease"] is None and facts["action"] == "none", facts
    assert vol.snapshot() == before, "unlock of a volume without a lease changed the store"

    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, random.randbytes(MiB))
    bd.unmount(m)
    before = vol.snapshot()
    out = bd.ok("unlock", vol.url, "--force", *vol.store_args).stdout
    assert "not locked" in out and f"last held by pid {m.pid} on {socket.gethostname()}" in out, out
    code, facts = unlock_json(bd, vol)
    assert code == 0 and facts["locked"] is False and facts["action"] == "none", facts
    assert facts["lease"]["state"] == "released" and facts["lease"]["pid"] == m.pid, facts
    assert vol.snapshot() == before, "unlock of a released lease changed the store"


def test_a_killed_mount_is_shown_then_cleared_and_the_volume_mounts(bd):
    vol = bd.create(size="16M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, random.randbytes(3 * MiB))
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid, 30)

    out = bd.ok("unlock", vol.url, *vol.store_args).stdout
    assert f"holder: pid {m.pid} on {socket.gethostname()}" in out, out
    assert "its process is gone" in out and "lease: expires in" in out, out
    assert "cleared: wrote lock/0000000000000002" in out, out
    held, tombstone = lease(vol, 1), lease(vol, 2)
    assert held["released"] is False, "unlock rewrote the holder's own lease object"
    assert tombstone["released"] and tombstone["fences"] and tombstone["unlocked"] and not tombstone["forced"]
    assert bd.info(vol)["writer"] is None

    before = vol.snapshot()
    code, facts = unlock_json(bd, vol)
    assert code == 0 and facts["locked"] is False and facts["lease"]["unlocked"] is True, facts
    assert vol.snapshot() == before, "a second unlock changed the store"

    bd.unmount(m)  # the dead daemon's stale mountpoint
    m = bd.mount(vol)
    assert_file_matches(m.file, model)
    pwrite_fsync(m.file, model, 4 * MiB, random.randbytes(MiB))
    bd.unmount(m)
    assert lease(vol, 1) is None, "the cleared lease object was not tidied away"
    assert lease(vol, 2) is not None, "the tombstone went while it still fences"
    vol.assert_clean_layout(fence_tombstones=True)
    if vol.kind == "s3":  # S3 stamps Last-Modified itself: the tombstone cannot be aged from outside
        return
    tombstone = vol.path / "lock/0000000000000002"
    os.utime(tombstone, (os.path.getmtime(tombstone) - 200,) * 2)  # its holder's lease has run out by now
    m = bd.mount(vol)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    assert lease(vol, 2) is None, "the tombstone was kept after it stopped fencing"
    vol.assert_clean_layout()


def test_a_live_mount_here_is_never_unlocked(bd):
    vol = bd.create(size="16M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, random.randbytes(2 * MiB))
    wait_until_clean(bd, m)
    assert wait_until(lambda: bd.stats(m.path)["unsaved_blocks"] == 0, 60)
    holder = vol.lease_keys()[-1]
    before = without(vol.snapshot(), holder)

    for flags in ((), ("--force",), ("--force", "--json")):
        proc = bd.run("unlock", vol.url, *flags, *vol.store_args)
        line = assert_cli_error(proc)
        assert f"pid {m.pid}, a live process of this machine" in line, line
        assert f"bucketdisk unmount {m.path}" in line, line
    assert json.loads(proc.stdout)["action"] == "refused"
    assert without(vol.snapshot(), holder) == before, "a refused unlock changed the store"

    pwrite_fsync(m.file, model, 4 * MiB, random.randbytes(MiB))  # the mount is untouched
    m = bd.remount(m)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    vol.assert_clean_layout()


def test_a_live_lease_of_another_host_is_refused_and_an_expired_one_cleared(bd):
    vol = bd.create(size="8M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, random.randbytes(MiB))
    bd.unmount(m)
    key = plant_lease(vol, 2, expires_in=300)  # written by pid 4242 of host "elsewhere", PID namespace pid:[1]
    before = vol.snapshot()

    proc = bd.run("unlock", vol.url, *vol.store_args)
    line = assert_cli_error(proc)
    assert "pid 4242 on elsewhere" in line and "lease expires in" in line and "--force" in line, line
    assert "holder: pid 4242 on elsewhere (PID namespace pid:[1]" in proc.stdout, proc.stdout
    code, facts = unlock_json(bd, vol)
    assert code == 1 and facts["action"] == "refused" and facts["locked"] is True, facts
    shown = facts["lease"]
    assert (shown["host"], shown["pid"], shown["pid_namespace"], shown["state"]) == \
        ("elsewhere", 4242, "pid:[1]", "held"), shown
    assert 0 < shown["expires_in_seconds"] <= 125 and shown["since"] == "2026-01-01T00:00:00Z", shown
    assert vol.snapshot() == before, "a refused unlock changed the store"

    if vol.kind == "s3":  # S3 stamps Last-Modified itself: a lease cannot be aged from outside
        return
    os.utime(vol.path / key, (os.path.getmtime(vol.path / key) - 200,) * 2)  # no renewal seen for 200 s
    code, facts = unlock_json(bd, vol)  # no --force: it has expired
    assert code == 0 and facts["action"] == "cleared", facts
    assert facts["lease"]["state"] == "expired" and facts["lease"]["expires_in_seconds"] < -70, facts
    assert facts["cleared"] == {"key": "lock/0000000000000003", "epoch": 3, "waited_seconds": 0.0}, facts
    assert lease(vol, 3)["fences"] and not lease(vol, 3)["forced"]
    out = bd.ok("unlock", vol.url, *vol.store_args).stdout
    assert "not locked (cleared by 'bucketdisk unlock'" in out, out

    m = bd.mount(vol)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    assert key not in vol.keys(), "the expired lease object was not tidied away"
    vol.assert_clean_layout(fence_tombstones=True)


# The one test that waits lock.TAKEOVER_WAIT (25 s) per store.  On file://
# the next mount starts while unlock still waits, and must wait out the
# rest itself; on s3:// it starts once unlock has returned.
def test_unlock_force_fences_a_live_mount_of_another_host(bd):
    vol = bd.create(size="16M", block_size="64K")
    model = bytearray(vol.size)
    m1 = bd.mount(vol)
    pwrite_fsync(m1.file, model, 0, random.randbytes(MiB))
    elsewhere = as_other_host("elsewhere")
    holder = vol.lease_keys()[-1]
    before = without(vol.snapshot(), holder)
    refused = run(*elsewhere, CLI, "unlock", vol.url, *vol.store_args, env=bd.env)
    line = assert_cli_error(refused)
    assert f"pid {m1.pid} on {socket.gethostname()}" in line and "expires in" in line, line
    assert without(vol.snapshot(), holder) == before, "a refused unlock changed the store"

    # The mount keeps fsyncing while it is unlocked from "elsewhere": every
    # fsync it acknowledges must be in what the next mount reads.
    writer = FsyncLoop(m1.file, model, 0, 4 * MiB)
    writer.start()
    unlock = subprocess.Popen([*elsewhere, str(CLI), "unlock", vol.url, "--force", *vol.store_args],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=bd.env)
    bd.janitor.push(f"unlock {unlock.pid}", lambda: (unlock.kill(), unlock.wait()))
    errors = []
    while not any("waiting" in e for e in errors) and unlock.poll() is None:
        errors.append(unlock.stderr.readline())
    early = vol.kind == "file"
    if early:
        m2 = bd.mount(vol)  # while unlock waits: this mount waits for the rest
        assert "waiting" in bd._log_tail(m2.log), "the mount did not wait for the rest of the 25 s"
    out, rest = unlock.communicate(timeout=180)
    errors = "".join(errors) + rest
    writer.stop()
    assert unlock.returncode == 0, errors
    assert "Traceback" not in errors
    assert "warning: forcing" in errors and "refused with EIO and not stored" in errors, errors
    assert "waiting 25 s" in errors, errors
    assert "cleared: wrote lock/0000000000000002" in out, out
    assert lease(vol, 2)["forced"] is True
    assert writer.acknowledged > 0 and writer.failed is not None, "the unlock fenced no fsync of the mount"
    assert_fenced(bd, m1, model)  # its next fsync and writes get EIO; unmount says why

    if not early:
        m2 = bd.mount(vol)
    writer.assert_in(m2.file, model)  # every acknowledged fsync, nothing after the fencing
    bd.unmount(m2)
    bd.ok("gc", vol.url, *vol.store_args)  # what the fenced mount stored after it lost the volume
    vol.assert_clean_layout(fence_tombstones=True)


def test_bad_input_is_one_line(bd):
    for args in (("ftp://example.com/disk",), (bd.missing_place().url,), (bd.empty_place().url,)):
        line = assert_cli_error(bd.run("unlock", *args, *bd.new_place().args))
        assert "Traceback" not in line
    assert_cli_error(bd.run("unlock"))
    assert_cli_error(bd.run("unlock", "file:///srv/disk", "--no-such-option"))
    if bd.store.kind == "s3":
        return
    vol = bd.create_encrypted(size="8M", block_size="64K")
    out = bd.ok("unlock", vol.url).stdout  # the lease needs no passphrase
    assert "not locked" in out, out
    wrong = bd.tmp / "wrong-passphrase"
    wrong.write_text("not the passphrase\n")
    before = vol.snapshot()
    line = assert_cli_error(bd.run("unlock", vol.url, "--passphrase-file", wrong))
    assert "passphrase" in line, line
    assert vol.snapshot() == before
