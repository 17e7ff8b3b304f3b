"""kill -9 in the middle of history's commands, end to end (issue 14).

Real processes, real FUSE mounts, on both stores: the mount daemon is
killed while `snapshot create MOUNTPOINT` flushes tens of MiB of dirty
data and while `gc MOUNTPOINT` sweeps; the CLI is killed while `snapshot
create URL`, `restore URL` and `gc URL` run on an unmounted volume.  After
each kill nothing is left half done: the volume mounts and fscks clean, every earlier
snapshot reads back byte for byte (through the live mount's
`snapshots/<name>/file`, or `mount --snapshot`), `snapshot list` shows no
snapshot but those the test asked for (the one cut short, if listed,
holds exactly the disk it was asked of), the live disk is what was
written (for a restore: the old disk or the restored one, whole), and the
next snapshot works.  (tests/test_history_crash_points.py stops the
volume layer at every store request; this file goes through the CLI and
the daemon, with SIGKILL at random moments.)

Each test first runs its command once uncut, to learn how long it takes
on this store and machine; the kills then land at fractions of that, drawn
from a seeded generator: a CLI that long after it took the volume's lease
(a new lease object), a daemon that long after a command could reach it
(snapshot) or after gc began reading the maps (its `objects_got`).  Every
expectation comes from what the test wrote, never from the engine; each
round's kill point and what it left are printed (shown on a failure)."""
from __future__ import annotations

import itertools
import json
import os
import random
import signal
import time
from pathlib import Path

import pytest

from conftest import KiB, MiB
from killrounds import (
    Kills,
    ask_daemon,
    assert_disk,
    bury,
    differing,
    digests,
    read_disk,
    run_url_command,
    stats_counter,
    write_blocks,
)

SEED = 1409
LISTING_DEADLINE = 10  # seconds: the snapshots folder is re-listed every 2 s


# --------------------------------------------------------------------------
# history as the test knows it
# --------------------------------------------------------------------------

def listed(bd, target, *store_args) -> list[dict]:
    return json.loads(bd.ok("snapshot", "list", target, "--json", *store_args).stdout)


def names_after_kill(bd, vol) -> list[str]:
    """The snapshots listed on the URL straight after a kill, before any
    mount took the volume over (and could tidy up)."""
    return [r["name"] for r in listed(bd, vol.url, *vol.store_args)]


def names(rows: list[dict]) -> list[str]:
    return [r["name"] for r in rows]


def snapshot_file(m, name: str) -> Path:
    folder = m.path / "snapshots" / name
    end = time.monotonic() + LISTING_DEADLINE
    while not folder.is_dir() and time.monotonic() < end:
        time.sleep(0.1)
    return folder / "file"


def check_history(bd, m, vol, kept: dict[str, list[bytes]], *, maybe: dict[str, list[list[bytes]]] = (),
                  pre_restore: list[list[bytes]] = ()) -> list[dict]:
    """Through the live mount m: `snapshot list` names every snapshot in
    `kept` and nothing else but those in `maybe` (a snapshot cut short) and
    pre-restore snapshots; each one listed reads back as the disk it was
    taken of (`kept`, one of `maybe[name]`, one of `pre_restore`); and
    `fsck` finds nothing damaged (leftovers of the kill are no damage).
    Returns the rows listed."""
    proc = bd.run("fsck", vol.url, *vol.store_args, timeout=300)
    assert proc.returncode == 0, f"fsck after the kill: exit {proc.returncode}\n{proc.stdout[-3000:]}{proc.stderr}"
    maybe = dict(maybe)
    rows = listed(bd, m.path)
    names = [r["name"] for r in rows]
    assert len(set(names)) == len(names), f"a name listed twice: {names}"
    assert [r["number"] for r in rows] == sorted({r["number"] for r in rows}), f"numbers: {rows}"
    missing = sorted(set(kept) - set(names))
    assert not missing, f"earlier snapshots gone: {missing} (listed: {names})"
    for row in rows:
        name = row["name"]
        got = read_disk(snapshot_file(m, name), vol.size, vol.block_size)
        if name in kept:
            assert_disk(got, kept[name], f"snapshot {name!r}")
            continue
        if name in maybe:
            candidates = maybe[name]
        elif row["type"] == "pre-restore" and pre_restore:
            candidates = pre_restore
        else:
            pytest.fail(f"snapshot {name!r} ({row['type']}) listed, never asked for: {rows}")
        assert any(got == c for c in candidates), (
            f"snapshot {name!r} ({row['type']}), cut short, is listed but holds another disk: "
            f"{min(len(differing(got, c)) for c in candidates)} blocks differ from what it was asked to keep")
    return rows


# --------------------------------------------------------------------------
# the mount's daemon killed mid `snapshot create MOUNTPOINT`
# --------------------------------------------------------------------------

def test_daemon_killed_mid_snapshot_create_leaves_no_half_snapshot(bd):
    rng = random.Random(SEED)
    kills = Kills(SEED)
    bs, dirty = 64 * KiB, 32 * MiB
    vol = bd.create(size="48M", block_size="64K")
    mount = dict(cache_size="96M")  # holds every dirty block: the snapshot flushes them all
    m = bd.mount(vol, **mount)
    disk = write_blocks(m.file, [digests(bytes(bs), bs)[0]] * (vol.size // bs), rng, bs, 128, fsync=True)
    kept = {}
    bd.ok("snapshot", "create", m.path, "--name", "s0")
    kept["s0"] = disk
    # how long a command takes to reach the daemon, and a snapshot that flushes `dirty`
    reach = min(ask_daemon(bd, m, ["snapshot", "list", m.path])[3] for _ in range(2))
    disk = write_blocks(m.file, disk, rng, bs, dirty // bs, fsync=False)
    took = ask_daemon(bd, m, ["snapshot", "create", m.path, "--name", "k0"])[3]
    kept["k0"] = disk
    for i, fraction in kills:
        asked = write_blocks(m.file, disk, rng, bs, dirty // bs, fsync=False)
        delay = reach + fraction * max(took - reach, 0.05)
        status, out, err, _ = ask_daemon(bd, m, ["snapshot", "create", m.path, "--name", f"k{i}"],
                                         kill_after=delay)
        seen = names_after_kill(bd, vol)
        m = bd.mount(vol, m.path, **mount)  # takes over the dead daemon's lease
        live = read_disk(m.file, vol.size, bs)
        neither = [b for b in differing(live, asked) if live[b] != disk[b]]
        assert not neither, f"round {i}: {len(neither)} blocks are neither the old nor the new data: {neither[:8]}"
        rows = check_history(bd, m, vol, kept, maybe={f"k{i}": [asked]})
        assert names(rows) == seen, f"round {i}: listed after the kill {seen}, after the remount {names(rows)}"
        made = f"k{i}" in names(rows)
        kills.record(f"round {i}: daemon killed {delay:.3f} s into snapshot create ({took:.3f} s uncut, "
                     f"{reach:.3f} s to reach the daemon): exit {status} {err.strip()}; k{i} "
                     f"{'listed' if made else 'not listed'}, {len(differing(live, disk))} of "
                     f"{len(differing(asked, disk))} new blocks in the live disk", cut=status != 0)
        if made:
            assert_disk(live, asked, f"round {i}: the live disk after snapshot k{i} was stored")
            kept[f"k{i}"] = asked
        else:
            assert status != 0, f"round {i}: snapshot create said it made k{i}, which is not listed: {out}"
        disk = live
        bd.ok("snapshot", "create", m.path, "--name", f"next{i}")  # the next snapshot works
        assert_disk(read_disk(snapshot_file(m, f"next{i}"), vol.size, bs), disk, f"snapshot next{i}")
        kept[f"next{i}"] = disk
    kills.check()
    bd.unmount(m)


# --------------------------------------------------------------------------
# the CLI killed mid `snapshot create URL`, `restore URL`, `gc URL`
# --------------------------------------------------------------------------

CLI_BS = 16 * KiB  # small blocks: more objects, so each command has work to be cut in


def _cli_volume(bd, rng):
    vol = bd.create(size="16M", block_size="16K")
    m = bd.mount(vol)
    zero = digests(bytes(CLI_BS), CLI_BS)[0]
    disk = write_blocks(m.file, [zero] * (vol.size // CLI_BS), rng, CLI_BS, 512, fsync=True)
    return vol, m, disk


def read_alone(bd, vol, name: str) -> list[bytes]:
    """The snapshot mounted alone (`mount --snapshot NAME`, read-only, no lease)."""
    r = bd.mount(vol, extra=["--snapshot", name])
    try:
        return read_disk(r.file, vol.size, vol.block_size)
    finally:
        bd.unmount(r)


def kill_cli(bd, vol, kills: Kills, i: int, delay: float, args: list, outcome) -> tuple[int, str, str]:
    """Run `bucketdisk ARGS` on the unmounted volume and SIGKILL it `delay`
    seconds after it took the lease; `outcome()` says what it left (for the report)."""
    status, out, err, _ = run_url_command(bd, vol, args, delay)
    kills.record(f"round {i}: CLI killed {delay:.3f} s after `{args[0]}` took the lease: exit {status}; "
                 f"{outcome()}", cut=status == -signal.SIGKILL)
    assert status in (0, -signal.SIGKILL), f"round {i}: {args[0]} failed ({status}): {err}"
    return status, out, err


def records(vol) -> int:
    """How many snapshot records the store holds (a test's own listing, for the report)."""
    return sum(1 for k, size in vol.keys().items() if k.startswith("snapshots/") and size)


def root_keys(vol) -> set[str]:
    return {k for k in vol.keys() if k.startswith("map/roots/")}


def test_cli_killed_mid_snapshot_create_on_a_url_leaves_no_half_snapshot(bd):
    rng = random.Random(SEED + 1)
    kills = Kills(SEED + 1)
    vol, m, disk = _cli_volume(bd, rng)
    kept = {}
    bd.unmount(m)
    status, _, err, took = run_url_command(bd, vol, ["snapshot", "create", vol.url, "--name", "k0"], None)
    assert status == 0, err
    kept["k0"] = disk
    for i, fraction in kills:
        m = bd.mount(vol, m.path)
        disk = write_blocks(m.file, disk, rng, CLI_BS, 768, fsync=True)  # what the snapshot must look at
        bd.unmount(m)
        before = records(vol)
        status, out, _ = kill_cli(bd, vol, kills, i, fraction * took,
                                  ["snapshot", "create", vol.url, "--name", f"k{i}"],
                                  lambda: f"{records(vol) - before} snapshot record(s) written")
        seen = names_after_kill(bd, vol)
        # the next one works, taking over the killed command's lease
        bd.ok("snapshot", "create", vol.url, "--name", f"next{i}", *vol.store_args)
        kept[f"next{i}"] = disk
        m = bd.mount(vol, m.path)
        assert_disk(read_disk(m.file, vol.size, CLI_BS), disk, f"round {i}: the live disk")
        rows = check_history(bd, m, vol, kept, maybe={f"k{i}": [disk]})
        assert names(rows) == seen + [f"next{i}"], f"round {i}: listed after the kill {seen}, now {names(rows)}"
        if f"k{i}" in names(rows):
            kept[f"k{i}"] = disk
        else:
            assert status != 0, f"round {i}: snapshot create said it made k{i}, which is not listed: {out}"
        bd.unmount(m)
    kills.check()
    assert sorted(names(listed(bd, vol.url, *vol.store_args))) == sorted(kept)
    for name, want in kept.items():
        assert_disk(read_alone(bd, vol, name), want, f"snapshot {name!r} mounted alone")


@pytest.mark.stores("file")  # the suite's time: s3:// gets its kill -9 of history from the daemon tests
def test_cli_killed_mid_restore_leaves_the_old_disk_or_the_restored_one(bd):
    rng = random.Random(SEED + 2)
    kills = Kills(SEED + 2)
    vol, m, disk = _cli_volume(bd, rng)
    kept = {}
    bd.ok("snapshot", "create", m.path, "--name", "s0")
    kept["s0"] = disk
    took = None
    for i, fraction in itertools.chain([(0, None)], kills):
        # the disk moves on after the newest snapshot, so the pre-restore snapshot has work
        disk = write_blocks(m.file, disk, rng, CLI_BS, 768, fsync=True)
        bd.unmount(m)
        target = rng.choice(sorted(n for n in kept if kept[n] != disk))
        args = ["restore", vol.url, "--snapshot", target]
        if fraction is None:  # uncut: how long a restore takes here
            status, out, err, took = run_url_command(bd, vol, args, None)
            assert status == 0, err
        else:
            before, roots = records(vol), root_keys(vol)
            status, out, err = kill_cli(bd, vol, kills, i, fraction * took, args,
                                        lambda: f"{records(vol) - before} snapshot record(s) and "
                                                f"{len(root_keys(vol) - roots)} root(s) written")
        seen = names_after_kill(bd, vol)
        m = bd.mount(vol, m.path)
        live = read_disk(m.file, vol.size, CLI_BS)
        restored = live == kept[target]
        assert restored or live == disk, (
            f"round {i}: the live disk is neither the old one nor snapshot {target!r} whole "
            f"({len(differing(live, disk))} blocks differ from the old, "
            f"{len(differing(live, kept[target]))} from the snapshot)")
        assert restored or status != 0, f"round {i}: restore said it was done, the disk is the old one: {out}"
        rows = check_history(bd, m, vol, kept, pre_restore=[disk])
        assert names(rows) == seen, f"round {i}: listed after the kill {seen}, after the remount {names(rows)}"
        undo = [r for r in rows if r["type"] == "pre-restore" and r["name"] not in kept]
        assert len(undo) <= 1, f"round {i}: two pre-restore snapshots: {undo}"
        assert undo or not restored, f"round {i}: restored without a pre-restore snapshot: {rows}"
        for r in undo:
            kept[r["name"]] = disk
        disk = live
        bd.unmount(m)
        bd.ok("snapshot", "create", vol.url, "--name", f"next{i}", *vol.store_args)  # the next one works
        kept[f"next{i}"] = disk
        m = bd.mount(vol, m.path)
        assert_disk(read_disk(snapshot_file(m, f"next{i}"), vol.size, CLI_BS), disk, f"snapshot next{i}")
    kills.check()
    check_history(bd, m, vol, kept)
    bd.unmount(m)


def leave_garbage(bd, m, disk: list[bytes], rng: random.Random, vol) -> tuple[list[bytes], list[bytes]]:
    """Fsynced writes, then acknowledged ones, uploaded but not journalled
    when the daemon is killed a moment later: blocks nothing names, for gc.
    Returns (the durable disk, the disk with the later writes too)."""
    durable = write_blocks(m.file, disk, rng, vol.block_size, 256, fsync=True)
    newer = write_blocks(m.file, durable, rng, vol.block_size, 768, fsync=False)
    time.sleep(1.0)  # uploaded; the next journal is due 5 s after the first write
    os.kill(m.pid, signal.SIGKILL)
    bury(bd, m)
    return durable, newer


def _gc_start(bd, seed: int):
    """(rng, kills, volume, its mount, its disk, kept snapshots) for a gc test."""
    rng = random.Random(seed)
    vol, m, disk = _cli_volume(bd, rng)
    bd.ok("snapshot", "create", m.path, "--name", "s0")
    return rng, Kills(seed), vol, m, disk, {"s0": disk}


def _fsynced_or_later(live, durable, newer, i: int) -> None:
    neither = [b for b in differing(live, newer) if live[b] != durable[b]]
    assert not neither, f"round {i}: {len(neither)} blocks are neither the fsynced nor the later data"


def _next_snapshot_works(bd, m, vol, disk, kept: dict, i: int) -> None:
    bd.ok("snapshot", "create", m.path, "--name", f"next{i}")
    assert_disk(read_disk(snapshot_file(m, f"next{i}"), vol.size, CLI_BS), disk, f"snapshot next{i}")
    kept[f"next{i}"] = disk


@pytest.mark.stores("file")  # s3://: test_daemon_killed_mid_gc_loses_nothing
def test_cli_killed_mid_gc_loses_nothing(bd):
    rng, kills, vol, m, disk, kept = _gc_start(bd, SEED + 3)
    took = None
    for i, fraction in itertools.chain([(0, None)], kills):
        durable, newer = leave_garbage(bd, m, disk, rng, vol)
        if fraction is None:  # uncut: how long this gc takes here
            status, _, err, took = run_url_command(bd, vol, ["gc", vol.url], None)
            assert status == 0, err
        else:
            garbage = len(vol.object_keys())
            kill_cli(bd, vol, kills, i, fraction * took, ["gc", vol.url],
                     lambda: f"{garbage - len(vol.object_keys())} block objects deleted")
        seen = names_after_kill(bd, vol)
        m = bd.mount(vol, m.path)
        disk = read_disk(m.file, vol.size, CLI_BS)
        _fsynced_or_later(disk, durable, newer, i)
        rows = check_history(bd, m, vol, kept)
        assert names(rows) == seen, f"round {i}: listed after the kill {seen}, after the remount {names(rows)}"
        _next_snapshot_works(bd, m, vol, disk, kept, i)
    kills.check()
    bd.unmount(m)
    bd.ok("gc", vol.url, *vol.store_args)  # a whole one after all that
    m = bd.mount(vol, m.path, read_only=True)
    assert_disk(read_disk(m.file, vol.size, CLI_BS), disk, "the live disk after a whole gc")
    check_history(bd, m, vol, kept)
    bd.unmount(m)


# --------------------------------------------------------------------------
# the mount's daemon killed mid `gc MOUNTPOINT`
# --------------------------------------------------------------------------

def test_daemon_killed_mid_gc_loses_nothing(bd):
    rng, kills, vol, m, disk, kept = _gc_start(bd, SEED + 4)
    took = None
    for i, fraction in itertools.chain([(0, None)], kills):
        durable, newer = leave_garbage(bd, m, disk, rng, vol)
        m = bd.mount(vol, m.path)  # takes over; the garbage is still there
        disk = read_disk(m.file, vol.size, CLI_BS)  # read back from the store: durable now
        _fsynced_or_later(disk, durable, newer, i)
        got = stats_counter(m, "objects_got")
        marking = lambda: (stats_counter(m, "objects_got") or 0) > got  # noqa: E731 - gc reads the maps
        if fraction is None:  # uncut: how long this gc takes here, once it reads the maps
            took = ask_daemon(bd, m, ["gc", m.path], started=marking)[3]
        else:
            garbage = len(vol.object_keys())
            status, _, err, _ = ask_daemon(bd, m, ["gc", m.path], started=marking, kill_after=fraction * took)
            kills.record(f"round {i}: daemon killed {fraction * took:.3f} s after gc began "
                         f"({took:.3f} s uncut): exit {status} {err.strip()}; "
                         f"{garbage - len(vol.object_keys())} block objects deleted", cut=status != 0)
            seen = names_after_kill(bd, vol)
            m = bd.mount(vol, m.path)
            assert_disk(read_disk(m.file, vol.size, CLI_BS), disk, f"round {i}: the live disk")
            assert names(listed(bd, m.path)) == seen, f"round {i}: listed after the kill {seen}"
        check_history(bd, m, vol, kept)
        _next_snapshot_works(bd, m, vol, disk, kept, i)
    kills.check()
    bd.unmount(m)
