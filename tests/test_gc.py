"""`bucketdisk gc`: what a mount that died (blocks uploaded, never
committed) and a checkpoint cut short (map pages and roots it meant to
delete) leave in the store goes, and nothing else; the data reads back
the same; a mounted volume is refused.  Both stores, through the CLI:
planted garbage of each kind, and the real leftovers of a SIGKILL."""
from __future__ import annotations

import json
import os
import random
import signal
import time

from conftest import (
    KiB, MiB, assert_cli_error, assert_file_matches, distinct_nonzero_blocks, fsync_path, wait_pid_gone,
)


def older_root(key: str) -> str:
    """The name of a root one sequence number before `key` (same epoch)."""
    epoch, seq = key.rsplit("/", 1)[1].split("-")
    return f"map/roots/{epoch}-{int(seq, 16) - 1:016x}"


def without_roots(keys) -> set[str]:
    """Keys but roots and lease objects: gc takes the lease, so its own
    epoch's root and released lease object replace the ones before."""
    return {k for k in keys if not k.startswith(("map/roots/", "lock/"))}


def gc(bd, vol, *extra) -> dict:
    proc = bd.run("gc", vol.url, "--json", *vol.store_args, *extra)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_gc_deletes_only_what_nothing_refers_to(bd):
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    rng = random.Random(5)
    model = bytearray(vol.size)
    fd = os.open(m.file, os.O_RDWR)
    try:
        for _ in range(30):
            off, data = rng.randrange(vol.size - 100_000), rng.randbytes(100_000)
            os.pwrite(fd, data, off)
            model[off : off + len(data)] = data
    finally:
        os.close(fd)
    fsync_path(m.file)
    bd.unmount(m)
    clean = vol.keys()
    (root,) = [k for k in clean if k.startswith("map/roots/")]

    # what a dead mount and an interrupted checkpoint leave behind
    orphan_hash = rng.randbytes(32).hex()
    garbage = {f"blocks/{orphan_hash[:2]}/{orphan_hash}": rng.randbytes(70_000),
               f"map/pages/{rng.randbytes(32).hex()}": rng.randbytes(300),
               older_root(root): vol.place.read(root)}
    for key, data in garbage.items():
        vol.place.write(key, data)

    before = vol.snapshot()
    found = gc(bd, vol, "--dry-run")
    assert (found["found_blocks"], found["found_map_pages"], found["found_old_roots"]) == (1, 1, 1), found
    assert vol.snapshot() == before, "a dry run changed the store (its listing or an object's bytes)"

    done = gc(bd, vol)
    assert (done["deleted_blocks"], done["deleted_map_pages"], done["deleted_old_roots"]) == (1, 1, 1), done
    assert done["stored_bytes_before"] - done["stored_bytes_after"] == 70_000
    assert without_roots(vol.keys()) == without_roots(clean), "gc deleted more or less than the garbage"
    vol.assert_clean_layout()
    again = gc(bd, vol)
    assert (again["deleted_blocks"], again["deleted_map_pages"], again["deleted_old_roots"]) == (0, 0, 0)

    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)


def test_gc_refuses_a_mounted_volume(bd):
    vol = bd.create(size="4M", block_size="64K")
    m = bd.mount(vol)
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, b"x" * MiB, 0)
    finally:
        os.close(fd)
    fsync_path(m.file)
    before = vol.keys()
    line = assert_cli_error(bd.run("gc", vol.url, *vol.store_args))
    assert "mount" in line or "lock" in line, line
    assert vol.keys() == before, "a refused gc changed the store"
    bd.unmount(m)


def test_gc_after_kill9_leaves_one_object_per_distinct_block(bd):
    """Blocks uploaded in the second before a SIGKILL, or replaced by them,
    are named by no map; after gc the store holds exactly one object per
    distinct non-zero block the volume reads back."""
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    rng = random.Random(9)
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, rng.randbytes(6 * MiB), 0)
        os.fsync(fd)
        os.pwrite(fd, rng.randbytes(6 * MiB), MiB)  # uploaded soon, journalled within 5 s
    finally:
        os.close(fd)
    time.sleep(1.0)
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid)
    assert bd.run("unmount", m.path).returncode == 0

    m = bd.mount(vol, m.path)  # takes over the dead mount's lock
    with open(m.file, "rb") as f:
        content = f.read()
    bd.unmount(m)
    distinct = distinct_nonzero_blocks(content, 64 * KiB)
    assert len(vol.object_keys()) > len(distinct), "the kill left nothing behind to collect"

    done = gc(bd, vol)
    assert done["deleted_blocks"] > 0
    assert len(vol.object_keys()) == len(distinct)
    vol.assert_clean_layout()
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, content)
    bd.unmount(m)


def test_gc_shows_its_progress_on_a_terminal_only(bd):
    """On a terminal, gc draws a bar per phase on stderr; piped, it prints
    nothing there, and its --json output is the same either way."""
    from conftest import CLI, run_with_terminal_stderr
    vol = bd.create(size="16M", block_size="64K")
    m = bd.mount(vol)
    pwrite_fsync_bytes(m.file, random.Random(3).randbytes(1 << 20))
    bd.unmount(m)
    piped = bd.run("gc", vol.url, "--json", *vol.store_args)
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    proc, drawn = run_with_terminal_stderr([str(CLI), "gc", vol.url, "--json", *vol.store_args], env=bd.env)
    assert proc.returncode == 0
    assert b"reading map pages" in drawn and b"listing objects" in drawn, drawn[-500:]
    assert json.loads(proc.stdout)["deleted_blocks"] == 0


def pwrite_fsync_bytes(path, data: bytes) -> None:
    fd = os.open(path, os.O_RDWR)
    try:
        os.pwrite(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
