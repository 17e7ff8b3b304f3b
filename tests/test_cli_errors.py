"""The CLI's refusals: each one exits non-zero with one `bucketdisk: error:`
line, no traceback, and leaves the store and the mounts as they were.

Refusals that involve a volume or a store location run on both stores (see
conftest); pure argument errors, help and the mountpoint-only commands
(unmount, stats) never reach a store and run once, marked `stores("file")`."""
from __future__ import annotations

import importlib.metadata
import json
import os
import random
import re

import pytest

from conftest import (
    LEASE_KEY_RE,
    Mount,
    assert_cli_error,
    is_mounted,
    mounts_at,
)

COMMANDS = ("create", "mount", "unmount", "info", "stats", "unlock")

once = pytest.mark.stores("file")  # no store involved: one run is enough


def _state(vol):
    return vol.snapshot(), vol.record_bytes()


# ---------------------------------------------------------------- create

def test_create_over_existing_volume_is_refused(bd):
    vol = bd.create(size="16M", block_size="64K")
    before = _state(vol)
    for args in (("--size", "16M", "--block-size", "64K"), ("--size", "32M")):
        err = assert_cli_error(bd.run("create", vol.url, *args, *vol.store_args))
        assert "--force" in err or "exist" in err.lower(), err
        assert _state(vol) == before


def test_create_over_other_data_is_refused(bd):
    place = bd.empty_place()
    _put_foreign(place)
    before = place.snapshot()
    err = assert_cli_error(bd.run("create", place.url, "--size", "16M", "--block-size", "64K", *place.args))
    assert "--force" in err or "exist" in err.lower() or "holds" in err.lower(), err
    assert place.snapshot() == before


@once
def test_create_size_not_multiple_of_block_size(bd, tmp_path):
    target = tmp_path / "v"
    assert_cli_error(bd.run("create", f"file://{target}", "--size", "1000K", "--block-size", "64K"))
    assert not target.exists(), "a refused create left a directory behind"  # a local path: file only


@once
@pytest.mark.parametrize("block_size", ["48K", "3000", "100K", "3M"])
def test_create_block_size_not_power_of_two(bd, tmp_path, block_size):
    target = tmp_path / "v"
    assert_cli_error(bd.run("create", f"file://{target}", "--size", "96M", "--block-size", block_size))
    assert not target.exists()


@once
@pytest.mark.parametrize("block_size", ["2K", "128M", "1"])
def test_create_block_size_out_of_range(bd, tmp_path, block_size):
    target = tmp_path / "v"
    assert_cli_error(bd.run("create", f"file://{target}", "--size", "256M", "--block-size", block_size))
    assert not target.exists()


@once
@pytest.mark.parametrize("option", ["--size", "--block-size"])
@pytest.mark.parametrize("value", ["12Q", "abc", "-5M", "0", ""])
def test_create_unparseable_sizes(bd, tmp_path, option, value):
    target = tmp_path / "v"
    args = ["create", f"file://{target}", "--size", "64M", "--block-size", "64K"]
    args[args.index(option) + 1] = value
    # --opt=VALUE so that "-5M" reaches the size parser instead of looking like an option
    i = args.index(option)
    args[i:i + 2] = [f"{option}={value}"]
    assert_cli_error(bd.run(*args))
    assert not target.exists()


@once
@pytest.mark.parametrize("value, says", [("-1G", "positive"), ("\u0661G", "not a size")])
def test_create_sizes_as_a_user_types_them(bd, tmp_path, value, says):
    """`--size -1G` (separate word) is refused as a size, not as a missing
    argument; digits of other scripts are not sizes."""
    target = tmp_path / "v"
    line = assert_cli_error(bd.run("create", f"file://{target}", "--size", value))
    assert says in line and "expected one argument" not in line, line
    assert not target.exists()


@once
@pytest.mark.parametrize("value, says", [("99999999999999999999999G", "at most 4294967296 blocks of at most 64M"),
                                         ("16T --block-size 1K", "block size")])
def test_create_sizes_no_block_size_can_serve(bd, tmp_path, value, says):
    """A size past what any block size allows says so, instead of asking
    for a larger block size that would not help."""
    target = tmp_path / "v"
    line = assert_cli_error(bd.run("create", f"file://{target}", "--size", *value.split()))
    assert says in line, line
    assert not target.exists()


@once
def test_info_of_a_regular_file_says_it_is_a_file(bd, tmp_path):
    target = tmp_path / "f"
    target.write_bytes(b"not a volume")
    line = assert_cli_error(bd.run("info", f"file://{target}"))
    assert "is a file, not a directory" in line, line
    assert target.read_bytes() == b"not a volume"


def test_create_with_force_replaces_volume(bd):
    """The counterpart of the refusal: --force does replace it (new UUID)."""
    vol = bd.create(size="16M", block_size="64K")
    old = bd.info(vol)["uuid"]
    bd.ok("create", vol.url, "--size", "32M", "--block-size", "64K", "--force", *vol.store_args)
    new = bd.info(vol)
    assert new["uuid"] != old and new["size"] == 32 * 1024 * 1024


def test_create_force_refused_while_mounted_then_wipes(bd):
    """README: --force wipes the place, and still refuses while the volume is mounted."""
    vol = bd.create(size="16M", block_size="64K")
    m = bd.mount(vol)
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, random.Random(12).randbytes(200_000), 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    before = _state(vol)
    assert vol.object_keys(), "fsync stored no block objects"
    err = assert_cli_error(bd.run("create", vol.url, "--size", "32M", "--block-size", "64K", "--force",
                                  *vol.store_args))
    assert "mounted" in err.lower() or "lock" in err.lower(), err
    assert _state(vol) == before, "a refused create --force changed the volume"
    assert bd.stats(m.path)["pid"] == m.pid, "the mount no longer answers"
    bd.unmount(m)

    bd.ok("create", vol.url, "--size", "32M", "--block-size", "64K", "--force", *vol.store_args)
    left = sorted(vol.keys())
    # Only the record, and create's own lease object, released: it keeps
    # the new volume's epochs above the old one's (FORMAT.md, "Late deletes").
    assert left[1:] == ["volume"] and LEASE_KEY_RE.match(left[0]), left
    assert json.loads(vol.place.read(left[0]))["released"] is True
    info = bd.info(vol)
    assert info["size"] == 32 * 1024 * 1024 and info["objects"] == 0 and info["mapped_blocks"] == 0


# ---------------------------------------------------------------- mount

def _place_without_volume(bd, kind):
    """empty: an existing place with nothing in it (a directory; a prefix of an existing
    bucket); other-data: one that holds something else; missing: no such directory /
    no such bucket."""
    if kind == "missing":
        return bd.missing_place()
    place = bd.empty_place()
    if kind == "other-data":
        _put_foreign(place)
    return place


FOREIGN_KEY, FOREIGN_DATA = "notes/readme", b"not a bucketdisk volume\n"


def _put_foreign(place) -> None:
    """Store an object that is no part of any volume at the place."""
    if place.kind == "file":
        (place.path / "notes").mkdir(parents=True)
        (place.path / FOREIGN_KEY).write_bytes(FOREIGN_DATA)
    else:
        r = place.server.request("PUT", place.bucket, f"{place.prefix}/{FOREIGN_KEY}", data=FOREIGN_DATA)
        assert r.status_code == 200, r.text
    assert place.keys() == {FOREIGN_KEY: len(FOREIGN_DATA)}


PLACES = ["empty", "other-data", "missing"]


@pytest.mark.parametrize("kind", PLACES)
def test_mount_url_without_volume(bd, tmp_path, kind):
    place = _place_without_volume(bd, kind)
    before = place.snapshot()
    mp = tmp_path / "mp"
    mp.mkdir()
    proc = bd.run("mount", place.url, mp, *place.args, timeout=60)
    if proc.returncode == 0:  # clean up the unexpected mount before failing
        bd.janitor.push("unexpected mount", lambda: bd.cleanup_mount(_stub_mount(mp)))
    err = assert_cli_error(proc)
    if kind == "missing" and place.kind == "s3":
        assert "bucket" in err.lower(), err
    assert not is_mounted(mp)
    assert place.exists() == (kind != "missing")
    assert place.snapshot() == before
    assert os.listdir(mp) == []


def test_mount_missing_mountpoint(bd, tmp_path):
    vol = bd.create(size="16M", block_size="64K")
    before = _state(vol)
    mp = tmp_path / "does-not-exist"
    assert_cli_error(bd.run("mount", vol.url, mp, *vol.store_args, timeout=60))
    assert not mp.exists()
    assert _state(vol) == before


def test_mount_mountpoint_is_a_regular_file(bd, tmp_path):
    vol = bd.create(size="16M", block_size="64K")
    before = _state(vol)
    mp = tmp_path / "plainfile"
    mp.write_bytes(b"not a directory\n")
    proc = bd.run("mount", vol.url, mp, *vol.store_args, timeout=60)
    if proc.returncode == 0:
        bd.janitor.push("unexpected mount", lambda: bd.cleanup_mount(_stub_mount(mp)))
    assert_cli_error(proc)
    assert not is_mounted(mp)
    assert mp.read_bytes() == b"not a directory\n"
    assert _state(vol) == before


def test_mount_on_an_already_mounted_point(bd, tmp_path):
    a = bd.create(size="16M", block_size="64K")
    b = bd.create(size="16M", block_size="64K")
    m = bd.mount(a)
    b_before = _state(b)
    stacked_before = mounts_at(m.path)
    proc = bd.run("mount", b.url, m.path, "--cache-size", "32M", *b.store_args, timeout=60)
    assert_cli_error(proc)
    assert mounts_at(m.path) == stacked_before, "a second mount was stacked on the mountpoint"
    assert _state(b) == b_before
    assert bd.stats(m.path)["pid"] == m.pid, "the first mount no longer answers"
    assert os.stat(m.file).st_size == a.size


def test_second_writable_mount_of_same_volume(bd, tmp_path):
    vol = bd.create(size="16M", block_size="64K")
    m = bd.mount(vol)
    lock_before = vol.lock_bytes()
    assert lock_before is not None, "no lock while mounted writable"
    listing_before = sorted(vol.snapshot())
    other = tmp_path / "other"
    other.mkdir()
    proc = bd.run("mount", vol.url, other, "--cache-size", "32M", *vol.store_args, timeout=60)
    if proc.returncode == 0:
        bd.janitor.push("unexpected mount", lambda: bd.cleanup_mount(_stub_mount(other)))
    err = assert_cli_error(proc)
    assert "lock" in err.lower() or "mounted" in err.lower() or "in use" in err.lower(), err
    assert not is_mounted(other)
    assert vol.lock_bytes() == lock_before
    assert sorted(vol.snapshot()) == listing_before
    # the live mount is unharmed
    assert bd.stats(m.path)["pid"] == m.pid
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, b"still mine", 4096)
        os.fsync(fd)
        assert os.pread(fd, 10, 4096) == b"still mine"
    finally:
        os.close(fd)


# ---------------------------------------------------------------- unmount

@once
def test_unmount_plain_directory(bd, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    (d / "keep").write_text("x")
    assert_cli_error(bd.run("unmount", d, timeout=60))
    assert sorted(os.listdir(d)) == ["keep"]


@once
def test_unmount_missing_path(bd, tmp_path):
    assert_cli_error(bd.run("unmount", tmp_path / "nothing-here", timeout=60))
    assert not (tmp_path / "nothing-here").exists()


@once
def test_unmount_refuses_a_mount_that_is_not_bucketdisk(bd, tmp_path):
    t = bd.tmpfs_mount(tmp_path / "tmpfs")
    (t / "canary").write_text("alive")
    assert_cli_error(bd.run("unmount", t, timeout=60))
    assert mounts_at(t) == ["tmpfs"]
    assert (t / "canary").read_text() == "alive"


# ---------------------------------------------------------------- info / stats

@pytest.mark.parametrize("kind", PLACES)
def test_info_of_url_without_volume(bd, kind):
    place = _place_without_volume(bd, kind)
    before = place.snapshot()
    err = assert_cli_error(bd.run("info", place.url, "--json", *place.args))
    if kind == "missing" and place.kind == "s3":
        assert "bucket" in err.lower(), err
    assert place.exists() == (kind != "missing")
    assert place.snapshot() == before


@once
def test_stats_of_a_plain_directory(bd, tmp_path):
    d = tmp_path / "plain"
    d.mkdir()
    assert_cli_error(bd.run("stats", d, "--json"))


# ---------------------------------------------------------------- help / version

@once
@pytest.mark.parametrize("command", COMMANDS)
def test_help_of_each_command_shows_an_example(bd, command):
    proc = bd.run(command, "--help")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    text = proc.stdout
    assert text.startswith("usage:"), text[:200]
    assert re.search(r"example", text, re.I), f"no example in `{command} --help`"
    example_lines = [ln for ln in text.splitlines()
                     if f"bucketdisk {command}" in ln and not ln.lstrip().startswith("usage:")]
    assert example_lines, f"`{command} --help` shows no `bucketdisk {command} ...` example line"


@once
def test_top_level_help_lists_commands(bd):
    proc = bd.run("--help")
    assert proc.returncode == 0, proc.stderr
    for command in COMMANDS:
        assert command in proc.stdout


@once
def test_no_command_is_an_error(bd):
    proc = bd.run()
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr


@once
def test_version(bd):
    proc = bd.run("--version")
    assert proc.returncode == 0, proc.stderr
    expected = importlib.metadata.version("bucketdisk")
    assert expected in (proc.stdout + proc.stderr)
    assert "bucketdisk" in (proc.stdout + proc.stderr)


# ---------------------------------------------------------------- helpers

def _stub_mount(path):
    """A Mount-like record for cleaning up a mount that should never have happened."""
    return Mount(volume=None, path=path, read_only=False, log=path)
