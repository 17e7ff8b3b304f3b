"""Damaged and hand-edited volumes: every command refuses them in one line
that names what is wrong and where, and changes nothing.

1. A damaged object (a block, a map page, a root, a journal, the record):
   info, gc (dry run or not) and mount name its key (as a URL) in their
   one line; a read of a damaged block gets EIO and the daemon's log
   names the block's key.
2. A volume record with a wrong field (a text size, a null block size, a
   uuid that is not one, absurd page sizes, negative numbers, unknown or
   missing fields...): info, gc and mount all refuse it with the same
   line, naming the record and the field, before touching anything.
"""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal

import pytest

from conftest import MOUNT_TIMEOUT, MiB, Mount, assert_cli_error, cold_read, is_mounted, wait_pid_gone

SIZE, BLOCK = "8M", "64K"
KiB = 1024


def refused_mount(bd, vol, *flags) -> str:
    """A mount of `vol` that must be refused: its one line; nothing mounted."""
    mp = bd._name("mnt")
    mp.mkdir()
    log = bd._name("daemon-log-").with_suffix(".txt")
    bd.janitor.push(f"refused mount {mp}", lambda: bd.cleanup_mount(Mount(None, mp, False, log)))
    proc = bd.run("mount", vol.url, mp, "--log", log, *vol.store_args, *flags, timeout=MOUNT_TIMEOUT)
    line = assert_cli_error(proc)
    assert not is_mounted(mp)
    return line


def without_leases(snapshot: dict) -> dict:
    """A volume's snapshot minus its lease objects, which a command that
    takes the lease (a writable mount, gc) may turn over before it finds
    the damage."""
    return {k: v for k, v in snapshot.items() if not k.startswith("lock")}


# --------------------------------------------------------------------------
# 1. damaged objects
# --------------------------------------------------------------------------

def volume_with_every_kind_of_object(bd):
    """A volume holding blocks, pages, a root and a journal: written and
    unmounted cleanly once, then written, fsynced and killed."""
    vol = bd.create(size=SIZE, block_size=BLOCK)
    rng = random.Random(31)
    for offset, kill in ((0, False), (4 * MiB, True)):
        m = bd.mount(vol)
        fd = os.open(m.file, os.O_RDWR)
        try:
            os.pwrite(fd, rng.randbytes(MiB), offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        if kill:
            os.kill(m.pid, signal.SIGKILL)
            assert wait_pid_gone(m.pid)
        assert bd.run("unmount", m.path).returncode == 0
    return vol


def keys_of(vol, prefix: str) -> list[str]:
    keys = sorted(k for k in vol.keys() if k.startswith(prefix))
    assert keys, f"the volume holds no {prefix} object"
    return keys


def damage(vol, key: str) -> bytes:
    """Flip one byte in the middle of `key` (the record, JSON that may
    survive a flipped byte, becomes binary junk); returns its original bytes."""
    data = vol.place.read(key)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0x55
    vol.place.write(key, b"\x00\xff junk" if key == "volume" else bytes(bad))
    return data


def test_a_damaged_object_is_named_by_every_command(bd):
    vol = volume_with_every_kind_of_object(bd)
    for prefix in ("map/roots/", "map/journal/", "map/pages/", "volume"):
        key = keys_of(vol, prefix)[-1]
        original = damage(vol, key)
        where = f"{vol.url}/{key}"
        before = vol.snapshot()
        for argv in (("info",), ("info", "--json"), ("gc", "--dry-run")):
            line = assert_cli_error(bd.run(argv[0], vol.url, *argv[1:], *vol.store_args))
            assert where in line, f"{argv}: {line}"
        assert vol.snapshot() == before, f"{key}: a refused command changed the volume"
        for argv in (("gc",),):
            line = assert_cli_error(bd.run(argv[0], vol.url, *vol.store_args))
            assert where in line, f"{argv}: {line}"
        for flags in (("--read-only",), ()):
            line = refused_mount(bd, vol, *flags)
            assert where in line, f"mount {flags}: {line}"
        assert without_leases(vol.snapshot()) == without_leases(before)
        vol.place.write(key, original)
    # whole again: every command works
    assert bd.info(vol)["mapped_blocks"] == 32


def test_a_missing_map_page_is_named_by_every_command(bd):
    """A map page that is gone (not damaged): each command names its URL,
    says it is missing and points at fsck, and changes nothing."""
    vol = volume_with_every_kind_of_object(bd)
    key = keys_of(vol, "map/pages/")[-1]
    original = vol.place.read(key)
    vol.place.delete(key)
    before = vol.snapshot()
    missing = f"{vol.url}/{key} is missing; run 'bucketdisk fsck'"
    for argv in (("info",), ("gc", "--dry-run"), ("gc",)):
        line = assert_cli_error(bd.run(argv[0], vol.url, *argv[1:], *vol.store_args))
        assert missing in line, f"{argv}: {line}"
    for flags in (("--read-only",), ()):
        line = refused_mount(bd, vol, *flags)
        assert missing in line, f"mount {flags}: {line}"
    assert without_leases(vol.snapshot()) == without_leases(before), "a refused command changed the volume"
    vol.place.write(key, original)
    assert bd.info(vol)["mapped_blocks"] == 32


def test_a_damaged_block_reads_as_eio_and_the_log_names_it(bd):
    vol = volume_with_every_kind_of_object(bd)
    originals = {key: damage(vol, key) for key in keys_of(vol, "blocks/")}
    m = bd.mount(vol, read_only=True)
    with pytest.raises(OSError) as failure:
        cold_read(m.file, 0, 64 * KiB)
    assert failure.value.errno == errno.EIO
    named = re.findall(rf"{re.escape(vol.url)}/(blocks/[0-9a-f]{{2}}/[0-9a-f]{{64}}) is damaged", m.log.read_text())
    assert named and set(named) <= set(originals), m.log.read_text()[-2000:]
    bd.unmount(m)
    for key, data in originals.items():
        vol.place.write(key, data)
    m = bd.mount(vol, read_only=True)
    assert len(cold_read(m.file, 0, 64 * KiB)) == 64 * KiB
    bd.unmount(m)


# --------------------------------------------------------------------------
# 2. hand-edited records
# --------------------------------------------------------------------------

GONE = object()
RECORD_EDITS = {
    "size-text": ({"size": "big"}, "size"),
    "size-negative": ({"size": -8 * MiB}, "size"),
    "size-float": ({"size": 8.0 * MiB}, "size"),
    "size-bool": ({"size": True}, "size"),
    "size-not-multiple": ({"size": 8 * MiB + 4096}, "size"),
    "block-size-null": ({"block_size": None}, "block_size"),
    "block-size-negative": ({"block_size": -65536}, "block_size"),
    "block-size-not-power": ({"block_size": 48 * KiB}, "block_size"),
    "uuid-not-a-uuid": ({"uuid": "not-a-uuid"}, "uuid"),
    "uuid-number": ({"uuid": 12345}, "uuid"),
    "uuid-missing": ({"uuid": GONE}, "uuid"),
    "page-entries-huge": ({"page_entries": 2 ** 40}, "page_entries"),
    "page-entries-zero": ({"page_entries": 0}, "page_entries"),
    "page-entries-text": ({"page_entries": "4096"}, "page_entries"),
    "version-zero": ({"format_version": 0}, "format_version"),
    "version-text": ({"format_version": "2"}, "format_version"),
    "compression": ({"compression": "lz4"}, "compression"),
    "hash": ({"hash": "md5"}, "hash"),
    "created-number": ({"created": 5}, "created"),
    "unknown-field": ({"colour": "blue"}, "colour"),
}
RAW_RECORDS = {
    "not-json": (b"\x89PNG\r\n\x1a\n\x00\xff", "JSON"),
    "json-list": (b'[{"format": "bucketdisk"}]', "not a bucketdisk volume record"),
    "json-null": (b"null", "not a bucketdisk volume record"),
}


def edited_record(vol, edit: dict) -> bytes:
    fields = json.loads(vol.record_bytes())
    for name, value in edit.items():
        if value is GONE:
            del fields[name]
        else:
            fields[name] = value
    return json.dumps(fields).encode()


def assert_every_command_refuses(bd, vol, *named: str) -> str:
    """info, gc and mount refuse `vol` with one and the same line, naming
    the record and every string in `named`; the volume is untouched."""
    before = vol.snapshot()
    lines = [assert_cli_error(bd.run(*argv, vol.url, *extra, *vol.store_args, timeout=60))
             for *argv, extra in (("info", ()), ("info", ("--json",)), ("gc", ()), ("gc", ("--dry-run",)))]
    lines += [refused_mount(bd, vol), refused_mount(bd, vol, "--read-only"), refused_mount(bd, vol, "--foreground")]
    assert len(set(lines)) == 1, "the commands refuse it differently:\n" + "\n".join(lines)
    line = lines[0]
    assert f"{vol.url}/volume" in line and "internal error" not in line, line
    for text in named:
        assert text in line, line
    assert vol.snapshot() == before, "a refused command changed the volume"
    return line


@pytest.mark.stores("file")
@pytest.mark.parametrize("case", list(RECORD_EDITS) + list(RAW_RECORDS))
def test_a_hand_edited_record_is_refused_alike_naming_the_field(bd, case):
    vol = bd.create(size=SIZE, block_size=BLOCK)
    m = bd.mount(vol)
    with open(m.file, "r+b") as f:
        f.write(b"data before the edit")
    bd.unmount(m)
    if case in RECORD_EDITS:
        edit, field = RECORD_EDITS[case]
        vol.place.write("volume", edited_record(vol, edit))
        assert_every_command_refuses(bd, vol, f'"{field}"')
    else:
        data, named = RAW_RECORDS[case]
        vol.place.write("volume", data)
        assert_every_command_refuses(bd, vol, named)


def test_a_hand_edited_record_is_refused_on_every_store(bd):
    vol = bd.create(size=SIZE, block_size=BLOCK)
    good = vol.record_bytes()
    for edit, field in (RECORD_EDITS["size-text"], RECORD_EDITS["page-entries-huge"]):
        vol.place.write("volume", edited_record(vol, edit))
        assert_every_command_refuses(bd, vol, f'"{field}"')
        vol.place.write("volume", good)
    assert bd.info(vol)["size"] == 8 * MiB
