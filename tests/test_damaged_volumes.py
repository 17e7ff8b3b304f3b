"""Damaged and hand-edited volumes: every command refuses them in one line
that names what is wrong and where, and changes nothing.

2. A volume record with a wrong field (a text size, a null block size, a
   uuid that is not one, absurd page sizes, negative numbers, unknown or
   missing fields...): info, gc and mount all refuse it with the same
   line, naming the record and the field, before touching anything.
"""
from __future__ import annotations

import json

import pytest

from conftest import MOUNT_TIMEOUT, MiB, Mount, assert_cli_error, is_mounted

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
