"""Damage is always found (issue 15), on both stores, plain and encrypted.

A flipped byte (its frame's checksum made again, so that only the content
hash or the seal can tell), a truncated object, two swapped objects and an
object copied from another volume: `verify` names each damaged object with
the bytes of the disk it covers and exits 2; a read of those bytes through
a mount gets EIO, the daemon's log names the object and `stats` counts it;
every other block still reads.  On an encrypted volume, a forged map page
or root stops a mount in one line naming it, and an older root put back
(the newest state deleted) is warned of at mount and named by verify.
"""
from __future__ import annotations

import errno
import json
import os
import signal

import pytest

from bucketdisk.codec._hot import HEADER_SIZE, frame_header, read_header
from conftest import (KiB, Mount, assert_cli_error, assert_file_matches, cold_read, key_kind, pwrite_fsync, s3_request,
                      wait_pid_gone)

BLOCK = 64 * KiB
BLOCKS = 8


def distinct_blocks(seed: int) -> bytes:
    """BLOCKS different, compressible blocks."""
    return b"".join((f"volume {seed} block {i} ".encode() * BLOCK)[:BLOCK] for i in range(BLOCKS))


def written(bd, encrypted: bool, seed: int):
    """A volume holding distinct_blocks(seed) at its start: (volume, model)."""
    vol = bd.create_encrypted(size="1M", block_size="64K") if encrypted else bd.create(size="1M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, distinct_blocks(seed))
    bd.unmount(m)
    return vol, model


def block_keys(vol) -> list[str]:
    return sorted(k for k in vol.keys() if key_kind(k) == "block")


def remove(vol, key: str) -> None:
    if vol.kind == "file":
        (vol.path / key).unlink()
    else:
        place = vol.place
        s3_request(place.server, "DELETE", place.bucket, f"{place.prefix}/{key}").raise_for_status()


def verify(bd, vol, *flags) -> tuple[int, dict]:
    proc = bd.run("verify", vol.url, "--json", *vol.store_args, *flags)
    assert "Traceback" not in proc.stderr
    return proc.returncode, json.loads(proc.stdout)


@pytest.mark.parametrize("encrypted", [False, True], ids=["plain", "encrypted"])
def test_every_kind_of_damage_is_found_at_read_and_by_verify(bd, encrypted):
    vol, model = written(bd, encrypted, 1)
    other, _ = written(bd, encrypted, 2)
    status, report = verify(bd, vol)
    assert status == 0 and report["damaged"] == 0 and report["blocks_checked"] == BLOCKS
    keys = block_keys(vol)
    assert len(keys) == BLOCKS
    data = {key: vol.place.read(key) for key in keys}
    flipped, truncated, swapped_a, swapped_b, copied = keys[:5]
    vol.place.write(flipped, forged(data[flipped]))  # its checksum made again: the content hash or seal tells
    vol.place.write(truncated, data[truncated][: len(data[truncated]) - 5])
    vol.place.write(swapped_a, data[swapped_b])
    vol.place.write(swapped_b, data[swapped_a])
    vol.place.write(copied, other.place.read(block_keys(other)[0]))

    status, report = verify(bd, vol)
    assert status == 2
    named = {d["object"].rsplit("/", 1)[1]: d for d in report["damage"]}
    assert set(named) == {k.rsplit("/", 1)[1] for k in keys[:5]}, report
    if encrypted:  # the seal is checked before zstd sees a byte of the forged body
        assert "does not authenticate" in named[flipped.rsplit("/", 1)[1]]["problem"], report
    # each covers one block of the disk: which one follows from the model
    index_of = {}
    for d in named.values():
        (r,) = d["ranges"]
        assert r["map"] == "live" and r["last_byte"] - r["first_byte"] == BLOCK - 1
        index_of[d["object"]] = r["first_byte"] // BLOCK

    m = bd.mount(vol, read_only=True)
    for url, index in index_of.items():
        with pytest.raises(OSError) as failed:
            cold_read(m.file, index * BLOCK, BLOCK)
        assert failed.value.errno == errno.EIO
        assert url in m.log.read_text(), url
    intact = set(range(BLOCKS)) - set(index_of.values())
    for index in intact:
        assert cold_read(m.file, index * BLOCK, BLOCK) == model[index * BLOCK : (index + 1) * BLOCK]
    assert bd.stats(m.path)["damaged_objects"] >= len(index_of)
    bd.unmount(m)


def test_an_older_root_put_back_is_warned_of_and_named_by_verify(bd):
    vol, model = written(bd, True, 3)
    older = {k: vol.place.read(k) for k in vol.keys() if key_kind(k) != "lock"}
    m = bd.mount(vol)
    pwrite_fsync(m.file, bytearray(model), 0, b"newer " * 1000)
    bd.unmount(m)
    lost = [key for key in vol.keys() if key_kind(key) in ("root", "journal") and key not in older]
    for key in lost:
        remove(vol, key)  # the newest state gone ...
    for key, data in older.items():
        vol.place.write(key, data)  # ... and the older one back, every object of it authentic
    status, report = verify(bd, vol)
    assert status == 2 and [d["kind"] for d in report["damage"]] == ["rollback"], report
    assert "ROLLBACK" in report["damage"][0]["problem"]
    mp, log = bd._name("mnt"), bd._name("daemon-log-").with_suffix(".txt")
    mp.mkdir()
    bd.janitor.push(f"mount {mp}", lambda: bd.cleanup_mount(Mount(vol, mp, True, log)))
    proc = bd.run("mount", vol.url, mp, "--log", log, *vol.store_args, "--read-only")
    assert proc.returncode == 0, proc.stderr
    assert "warning: ROLLBACK" in proc.stderr
    assert "ROLLBACK" in bd.stats(mp)["warning"]
    assert_file_matches(mp / "file", model)  # the older state, as it was
    bd.unmount(mp)

    # A writer after the rollback never writes under the names of the lost history.
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, 0, b"after " * 1000)
    bd.unmount(m)
    newest_lost = max(key.rsplit("/", 1)[1] for key in lost)
    roots = [key.rsplit("/", 1)[1] for key in vol.keys() if key_kind(key) == "root"]
    assert min(roots) > newest_lost.split("-")[0], (roots, lost)  # a higher epoch
    assert verify(bd, vol)[0] == 0


def forged(obj: bytes) -> bytes:
    """`obj` with a byte of its ciphertext changed and its frame's checksum
    made again, as someone who means it would: only the seal can tell."""
    flags, raw_len, _, _ = read_header(obj[:HEADER_SIZE])
    payload = bytearray(obj[HEADER_SIZE:])
    payload[30] ^= 0x01
    return frame_header(payload, flags, raw_len) + bytes(payload)


def test_a_damaged_map_object_of_an_encrypted_volume_is_one_line_and_named_by_verify(bd):
    vol, model = written(bd, True, 4)
    for kind in ("page", "root"):
        (key,) = [k for k in vol.keys() if key_kind(k) == kind]
        good = vol.place.read(key)
        vol.place.write(key, forged(good))
        mp = bd._name("mnt")
        mp.mkdir()
        line = assert_cli_error(bd.run("mount", vol.url, mp, *vol.store_args, "--read-only"))
        assert f"{vol.url}/{key} is damaged" in line and "does not authenticate" in line, line
        status, report = verify(bd, vol)
        assert status == 2 and [d["kind"] for d in report["damage"]] == [kind], report
        assert report["damage"][0]["ranges"][0]["first_byte"] == 0  # the whole (one-page) map
        vol.place.write(key, good)
    status, report = verify(bd, vol)
    assert status == 0, report


def test_journals_deleted_after_a_crash_are_warned_of(bd):
    vol, model = written(bd, True, 5)
    m = bd.mount(vol)
    for i in range(4):  # one journal each (the fsync log)
        pwrite_fsync(m.file, model, i * BLOCK, f"fsync {i} ".encode() * 100)
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid)
    bd.ok("unmount", m.path)  # the stale mountpoint
    journals = sorted(k for k in vol.keys() if key_kind(k) == "journal")
    assert len(journals) >= 4, journals
    remove(vol, journals[1])  # an acknowledged fsync gone, the newest journal kept
    status, report = verify(bd, vol)
    # this machine saw it (rollback.py), and the journal after it names it (the journal chain)
    assert status == 2 and [d["kind"] for d in report["damage"]] == ["rollback", "journal"], report
    assert "seen after its newest checkpoint is gone" in report["damage"][0]["problem"]
    gap = report["damage"][1]
    assert gap["object"] == f"{vol.url}/{journals[1]}" and gap["problem"].startswith("missing: the journal "), gap
