"""The compression choice (issue 15): `create --compress zstd[:LEVEL]|none`
is recorded in the volume record and decides how blocks are stored;
`mount --compress-level` changes the level of the blocks that mount
stores.  Everything reads back whatever it was stored with."""
from __future__ import annotations

import json

import pytest

from conftest import KiB, assert_cli_error, assert_file_matches, pwrite_fsync

BLOCK = 64 * KiB
BLOCKS = 16
HEADER = 24  # the frame header of every object (FORMAT.md, "Objects")
once = pytest.mark.stores("file")  # the codec does not depend on the store


def compressible(seed: int) -> bytes:
    """BLOCKS blocks of text that zstd shrinks well, each different."""
    return b"".join((f"block {seed}-{i} ".encode() * BLOCK)[:BLOCK] for i in range(BLOCKS))


def stored(bd, compress: str, *mount_args: str) -> tuple[dict, int]:
    """(the record, block bytes stored) of a volume made with `compress`
    and written once through a mount with `mount_args`."""
    vol = bd.create(size="4M", block_size="64K", extra=["--compress", compress])
    m = bd.mount(vol, extra=list(mount_args))
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, compressible(len(compress)))
    bd.unmount(m)
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)
    return json.loads(vol.record_bytes()), vol.object_bytes()


@once
def test_the_chosen_compression_decides_what_is_stored(bd):
    record, raw = stored(bd, "none")
    assert record["compression"] == "none"
    assert raw == BLOCKS * (BLOCK + HEADER)  # every block as it is
    record, fast = stored(bd, "zstd")
    assert record["compression"] == "zstd" and "compression_level" not in record  # level 1: the default
    assert fast < raw / 10
    record, strong = stored(bd, "zstd:19")
    assert record["compression_level"] == 19 and strong <= fast
    record, relevelled = stored(bd, "zstd", "--compress-level", "19")
    assert "compression_level" not in record  # the mount's choice, not the volume's
    assert relevelled == strong


@once
@pytest.mark.parametrize("value", ["zstd:0", "zstd:20", "zstd:", "zstd:x", "lz4", "none:3", "ZSTD", ""])
def test_a_compression_that_does_not_exist_is_refused(bd, tmp_path, value):
    target = tmp_path / "v"
    line = assert_cli_error(bd.run("create", f"file://{target}", "--size", "4M", f"--compress={value}"))
    assert "not a compression" in line, line
    assert not target.exists()


@once
def test_a_level_for_an_uncompressed_volume_is_refused(bd, tmp_path):
    vol = bd.create(size="4M", block_size="64K", extra=["--compress", "none"])
    (tmp_path / "mp").mkdir()
    line = assert_cli_error(bd.run("mount", vol.url, str(tmp_path / "mp"), "--compress-level", "3"))
    assert "uncompressed" in line, line
    assert not vol.has_lock()
    line = assert_cli_error(bd.run("mount", vol.url, str(tmp_path / "mp"), "--compress-level", "0"))
    assert "not a compression" in line, line
