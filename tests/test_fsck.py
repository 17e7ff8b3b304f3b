"""`bucketdisk fsck URL [--repair] [--json]` (issue 16), through the CLI
and real mounts, on both stores (plain and encrypted where it matters).

Exit statuses: 0 clean (leftovers reported), 1 repaired and no damage
left, 2 damage left, 8 could not check.  What is checked: a clean volume
is clean and untouched; a SIGKILL's leftovers are reported, then removed;
a damaged journal (unmountable before) loses its changes only and the
volume mounts; a missing page's range is marked lost and reads fail there
(EIO, logged) until written whole; a missing block stays an error; an
alias puts a block back; a damaged snapshot record stops every block
delete; --repair is refused beside a writable mount; bad input is one line
and exit 8; the volume record's damage is exit 2.
"""
from __future__ import annotations

import errno
import json
import os
import random
import signal
import time

import pytest

from conftest import (KiB, MiB, Mount, assert_cli_error, assert_file_matches, fsync_path, is_mounted, key_kind,
                      pwrite_fsync, run, wait_pid_gone)
from test_damage_found import forged, remove

BLOCK = 4 * KiB
PAGE_BLOCKS = 4096  # map entries per page (record.PAGE_ENTRIES): a 32M volume of 4K blocks has two pages


def fsck(bd, vol, *flags, status: int | None = None) -> dict:
    """`fsck --json`: its report; `status`: the exit status it must have."""
    proc = bd.run("fsck", vol.url, "--json", *vol.store_args, *flags)
    assert "Traceback" not in proc.stderr, proc.stderr
    report = json.loads(proc.stdout)
    assert report["exit"] == proc.returncode, report
    if status is not None:
        assert proc.returncode == status, f"fsck {flags}: exit {proc.returncode}, not {status}\n{proc.stdout}"
    return report


def read_at(path, offset: int, length: int) -> bytes:
    """Read past the page cache, without the kernel's read-ahead (a read
    must ask for exactly these blocks: the ones beside may fail)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def assert_eio(path, offset: int, length: int) -> None:
    with pytest.raises(OSError) as failed:
        read_at(path, offset, length)
    assert failed.value.errno == errno.EIO


def kill(bd, m: Mount) -> None:
    """SIGKILL a mount's daemon; unmount the stale mountpoint."""
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid)
    assert bd.run("unmount", m.path).returncode == 0


def refused_mount(bd, vol) -> str:
    mp, log = bd._name("mnt"), bd._name("daemon-log-").with_suffix(".txt")
    mp.mkdir()
    bd.janitor.push(f"refused mount {mp}", lambda: bd.cleanup_mount(Mount(vol, mp, False, log)))
    line = assert_cli_error(bd.run("mount", vol.url, mp, "--log", log, *vol.store_args))
    assert not is_mounted(mp)
    return line


def keys_of(vol, kind: str) -> list[str]:
    return sorted(k for k in vol.keys() if key_kind(k) == kind)


def flip(vol, key: str) -> None:
    data = bytearray(vol.place.read(key))
    data[len(data) // 2] ^= 0x55
    vol.place.write(key, bytes(data))


def but_leases(snapshot: dict) -> dict:
    """A place's contents but its lease objects (--repair takes the lease: its own replaces the last one)."""
    return {k: v for k, v in snapshot.items() if not k.startswith("lock")}


def blocks_of(text: str, count: int, seed: int = 0) -> bytes:
    """`count` distinct 4K blocks of compressible text."""
    return b"".join((f"{text} {seed} block {i} ".encode() * BLOCK)[:BLOCK] for i in range(count))


# --------------------------------------------------------------------------
# a clean volume, and what a crash leaves
# --------------------------------------------------------------------------

def test_a_clean_volume_is_clean_and_fsck_changes_nothing(bd):
    vol = bd.create(size="2M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, os.urandom(5 * 64 * KiB))
    bd.ok("snapshot", "create", m.path, "--name", "first")
    pwrite_fsync(m.file, model, 3 * 64 * KiB, os.urandom(4 * 64 * KiB))
    bd.unmount(m)
    before = vol.snapshot()

    report = fsck(bd, vol, status=0)
    assert report["problems"] == [] and report["damaged"] == 0 and report["maps"] == ["live", "first"]
    assert report["checked"] == {"roots": 1, "journals": 0, "snapshot_records": 1, "pages": 2, "blocks": 9}
    left = report["leftovers"]
    assert (left["blocks"], left["pages"], left["roots"], left["journals"], left["leases"]) == (0, 0, [], [], [])
    assert report["repair"] is False and report["repaired"] == [] and report["after"] is None
    human = bd.run("fsck", vol.url, *vol.store_args)
    assert human.returncode == 0 and human.stderr == "", human.stderr
    assert human.stdout.splitlines()[-1].endswith(": clean"), human.stdout
    assert vol.snapshot() == before, "a check changed the store"

    report = fsck(bd, vol, "--repair", status=0)  # nothing to repair: it took the lease, and gave it back
    assert report["repaired"] == [] and report["lost"] == []
    assert but_leases(vol.snapshot()) == but_leases(before), "--repair changed more than its lease"
    vol.assert_clean_layout()


def test_what_a_killed_mount_leaves_is_reported_then_removed(bd):
    vol = bd.create(size="4M", block_size="64K")
    m = bd.mount(vol)
    rng = random.Random(16)
    fd = os.open(m.file, os.O_RDWR)
    try:
        os.pwrite(fd, rng.randbytes(2 * MiB), 0)
        os.fsync(fd)
        os.pwrite(fd, rng.randbytes(2 * MiB), MiB)  # uploaded soon, journalled within 5 s
    finally:
        os.close(fd)
    time.sleep(1.0)
    kill(bd, m)
    m = bd.mount(vol, read_only=True)
    with open(m.file, "rb") as f:
        content = f.read()
    bd.unmount(m)
    vol.place.write("notes.txt", b"not the volume's")  # listed, never touched
    before = vol.snapshot()

    report = fsck(bd, vol, status=0)
    assert report["problems"] == [], report["problems"]
    assert report["unknown_keys"] == ["notes.txt"]
    assert report["leftovers"]["blocks"] > 0 and report["leftovers"]["block_bytes"] > 0, report["leftovers"]
    assert vol.snapshot() == before
    human = bd.run("fsck", vol.url, *vol.store_args)
    assert human.returncode == 0 and "unreferenced block object" in human.stdout, human.stdout

    report = fsck(bd, vol, "--repair", status=1)
    assert any("removed" in line and "block object" in line for line in report["repaired"]), report["repaired"]
    assert report["after"]["problems"] == [] and report["after"]["leftovers"]["blocks"] == 0
    report = fsck(bd, vol, status=0)
    assert report["leftovers"]["blocks"] == 0 and report["problems"] == []
    assert vol.place.read("notes.txt") == b"not the volume's"
    remove(vol, "notes.txt")
    vol.assert_clean_layout()
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, content)
    bd.unmount(m)


# --------------------------------------------------------------------------
# damaged map objects: journals and pages
# --------------------------------------------------------------------------

def journals_after_a_kill(bd, vol):
    """The volume written cleanly once (blocks 0-7), then blocks 1, 3 and 5
    rewritten, each fsynced (a journal each), and the mount killed: (the
    model before the rewrites, the rewrites by block, the journals)."""
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, blocks_of("before", 8))
    bd.unmount(m)
    older = bytes(model)
    m = bd.mount(vol)
    rewrites = {}
    for index in (1, 3, 5):
        rewrites[index] = blocks_of(f"rewrite {index}", 1)
        pwrite_fsync(m.file, model, index * BLOCK, rewrites[index])
    kill(bd, m)
    journals = keys_of(vol, "journal")
    assert len(journals) == 3, journals
    return older, rewrites, journals


def damaged_journals(bd, vol, damage) -> None:
    """Journals 1 and 3 of three after the root damaged: unmountable; fsck
    names them; --repair keeps the state before them plus journal 2, and
    the volume mounts."""
    older, rewrites, (first, second, third) = journals_after_a_kill(bd, vol)
    damage(vol, first)
    vol.place.write(third, vol.place.read(third)[:-7])  # truncated
    line = refused_mount(bd, vol)
    assert f"{vol.url}/{first}" in line, line

    report = fsck(bd, vol, status=2)
    named = {d["object"]: d for d in report["problems"]}
    assert set(named) == {f"{vol.url}/{first}", f"{vol.url}/{third}"}, report["problems"]
    for d in named.values():
        assert d["kind"] == "journal" and d["severity"] == "damage" and "changes are lost" in d["repair"]
        assert d["ranges"] == [{"map": "live", "first_byte": 0, "last_byte": vol.size - 1}]
    human = bd.run("fsck", vol.url, *vol.store_args)
    assert human.returncode == 2 and f"damaged journal: {vol.url}/{first}" in human.stdout, human.stdout

    report = fsck(bd, vol, "--repair", status=2)
    assert len(report["lost"]) == 2 and all("are lost" in line for line in report["lost"]), report["lost"]
    assert report["after"]["damaged"] == 0, report["after"]["problems"]
    m = bd.mount(vol, read_only=True)
    expected = bytearray(older)
    expected[3 * BLOCK : 4 * BLOCK] = rewrites[3]  # the readable journal's change; the others' are lost
    assert_file_matches(m.file, expected)
    bd.unmount(m)
    # Nothing reads as an error any more: 0, with what the repair kept for recovery as leftovers.
    report = fsck(bd, vol, status=0)
    assert report["problems"] == [] and report["leftovers"]["roots"], report["leftovers"]
    assert fsck(bd, vol, "--repair", status=1)["after"]["leftovers"]["roots"] == []
    fsck(bd, vol, status=0)
    vol.assert_clean_layout()


def test_damaged_journals_lose_their_changes_only_and_the_volume_mounts_again(bd):
    damaged_journals(bd, bd.create(size="1M", block_size="4K"), flip)


@pytest.mark.stores("file")
def test_damaged_journals_of_an_encrypted_volume(bd):
    def forge(vol, key):  # its frame's checksum made again: only the seal can tell
        vol.place.write(key, forged(vol.place.read(key)))
    damaged_journals(bd, bd.create_encrypted(size="1M", block_size="4K"), forge)


def missing_page(bd, vol) -> None:
    """Page 0's blocks written; then, by a mount killed after its fsyncs,
    blocks of page 1 and block 5 (journals after its root); page 0's
    object deleted.  The repair marks page 0's blocks lost but block 5;
    they read as EIO (logged) until written whole; the rest reads back."""
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, blocks_of("page 0", 8))
    bd.unmount(m)
    (page0,) = keys_of(vol, "page")
    m = bd.mount(vol)
    pwrite_fsync(m.file, model, PAGE_BLOCKS * BLOCK, blocks_of("page 1", 8))
    pwrite_fsync(m.file, model, 5 * BLOCK, blocks_of("after the root", 1))
    kill(bd, m)
    remove(vol, page0)
    assert page0 in refused_mount(bd, vol)  # (the mount names the key alone)

    report = fsck(bd, vol, status=2)
    (damage,) = report["problems"]
    assert (damage["kind"], damage["object"], damage["problem"]) == ("page", f"{vol.url}/{page0}", "missing")
    assert damage["ranges"] == [{"map": "live", "first_byte": 0, "last_byte": PAGE_BLOCKS * BLOCK - 1}]
    assert "lost" in damage["repair"]

    report = fsck(bd, vol, "--repair", status=2)
    assert report["lost"] == [f"{PAGE_BLOCKS - 1} block(s) marked lost: their map page could not be read"]
    (lost,) = report["after"]["problems"]
    assert lost["kind"] == "lost" and lost["problem"] == "lost (marked by fsck)"
    assert lost["ranges"] == [{"map": "live", "first_byte": 0, "last_byte": 5 * BLOCK - 1},
                              {"map": "live", "first_byte": 6 * BLOCK, "last_byte": PAGE_BLOCKS * BLOCK - 1}]

    m = bd.mount(vol)
    assert read_at(m.file, 5 * BLOCK, BLOCK) == model[5 * BLOCK : 6 * BLOCK]  # a later journal set it
    page1 = PAGE_BLOCKS * BLOCK
    assert read_at(m.file, page1, 8 * BLOCK) == model[page1 : page1 + 8 * BLOCK]
    assert read_at(m.file, vol.size - BLOCK, BLOCK) == bytes(BLOCK)
    for index in (0, 7, PAGE_BLOCKS - 1):
        assert_eio(m.file, index * BLOCK, BLOCK)  # never zeros
    assert "block 0 was lost (fsck marked it)" in m.log.read_text()
    with pytest.raises(OSError) as failed:  # a partial write needs the block's content
        pwrite_fsync(m.file, bytearray(vol.size), 2 * BLOCK + 100, b"part")
    assert failed.value.errno == errno.EIO
    pwrite_fsync(m.file, model, 0, blocks_of("written whole", 1))  # replaces the lost entry
    run("fallocate", "-p", "-o", BLOCK, "-l", BLOCK, m.file, check=True)  # a punched lost block reads zeros
    fsync_path(m.file)
    assert read_at(m.file, 0, BLOCK) == model[:BLOCK]
    assert read_at(m.file, BLOCK, BLOCK) == bytes(BLOCK)
    bd.unmount(m)
    m = bd.mount(vol, read_only=True)
    assert read_at(m.file, 0, BLOCK) == model[:BLOCK]
    bd.unmount(m)

    report = fsck(bd, vol, status=2)  # what is still lost stays listed
    (lost,) = [d for d in report["problems"] if d["kind"] == "lost"]
    assert lost["ranges"][0] == {"map": "live", "first_byte": 2 * BLOCK, "last_byte": 5 * BLOCK - 1}
    proc = bd.run("verify", vol.url, *vol.store_args)
    assert proc.returncode == 2 and "lost blocks (marked by fsck)" in proc.stdout, proc.stdout


def test_a_missing_page_is_marked_lost_and_reads_fail_there_until_written(bd):
    missing_page(bd, bd.create(size="32M", block_size="4K"))


@pytest.mark.stores("file")
def test_a_missing_page_of_an_encrypted_volume(bd):
    missing_page(bd, bd.create_encrypted(size="32M", block_size="4K"))


@pytest.mark.stores("file")
def test_a_damaged_newest_root_sends_the_live_disk_back_to_the_newest_snapshot(bd):
    vol = bd.create(size="1M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, os.urandom(3 * 64 * KiB))
    kept = bytes(model)
    bd.ok("snapshot", "create", m.path, "--name", "kept")
    pwrite_fsync(m.file, model, 0, os.urandom(64 * KiB))
    bd.unmount(m)
    (root,) = keys_of(vol, "root")
    flip(vol, root)
    report = fsck(bd, vol, status=2)
    (damage,) = report["problems"]
    assert (damage["kind"], damage["object"]) == ("root", f"{vol.url}/{root}")
    assert "goes back to snapshot 1 'kept'" in damage["repair"], damage
    report = fsck(bd, vol, "--repair", status=2)
    assert any("went back to snapshot 1 'kept'" in line for line in report["lost"]), report["lost"]
    assert report["after"]["problems"] == [] and root not in vol.keys()
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, kept)
    bd.unmount(m)


# --------------------------------------------------------------------------
# block objects
# --------------------------------------------------------------------------

def block_key(data: bytes) -> str:
    """The key of a plain volume's block object of this content."""
    import blake3
    h = blake3.blake3(data).hexdigest()
    return f"blocks/{h[:2]}/{h}"


def test_a_missing_block_stays_an_error_never_zeros(bd):
    vol = bd.create(size="2M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, b"".join(bytes([i + 1]) * 64 * KiB for i in range(6)))
    bd.ok("snapshot", "create", m.path, "--name", "kept")
    pwrite_fsync(m.file, model, 4 * 64 * KiB, os.urandom(2 * 64 * KiB))
    bd.unmount(m)
    gone = block_key(bytes([3]) * 64 * KiB)  # block 2, in the live disk and the snapshot
    remove(vol, gone)

    report = fsck(bd, vol, status=2)
    (damage,) = report["problems"]
    assert (damage["kind"], damage["object"], damage["problem"]) == ("block", f"{vol.url}/{gone}", "missing")
    assert damage["ranges"] == [{"map": m, "first_byte": 2 * 64 * KiB, "last_byte": 3 * 64 * KiB - 1}
                                for m in ("live", "kept")]
    assert damage["maps"] == ["kept", "live"] and "never as zeros" in damage["repair"]
    before = vol.snapshot()
    report = fsck(bd, vol, "--repair", status=2)  # nothing it can do: the map keeps naming it
    assert report["repaired"] == [] and report["after"] is None
    assert but_leases(vol.snapshot()) == but_leases(before), "--repair changed more than its lease"
    assert fsck(bd, vol, status=2)["problems"][0]["object"] == f"{vol.url}/{gone}"
    m = bd.mount(vol, read_only=True)
    assert_eio(m.file, 2 * 64 * KiB, 64 * KiB)
    assert read_at(m.file, 0, 2 * 64 * KiB) == model[: 2 * 64 * KiB]
    assert read_at(m.file, 3 * 64 * KiB, 3 * 64 * KiB) == model[3 * 64 * KiB : 6 * 64 * KiB]
    bd.unmount(m)


@pytest.mark.stores("file")
def test_an_alias_puts_a_missing_or_damaged_block_back(bd):
    vol = bd.create(size="2M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, b"".join(bytes([i + 1]) * 64 * KiB for i in range(4)))
    bd.unmount(m)
    missing, damaged = block_key(bytes([1]) * 64 * KiB), block_key(bytes([2]) * 64 * KiB)
    good = {key: vol.place.read(key) for key in (missing, damaged)}
    for key in good:  # a second copy, as a mount writes while a late delete may land
        vol.place.write(f"{key}-0000000100000001", good[key])
    remove(vol, missing)
    flip(vol, damaged)

    report = fsck(bd, vol, status=2)  # the damaged one reads as an error until repaired
    named = {d["object"]: d for d in report["problems"]}
    assert named[f"{vol.url}/{missing}"]["severity"] == "repairable", named
    assert named[f"{vol.url}/{damaged}"]["severity"] == "damage", named
    assert all("puts the plain object back" in d["repair"] for d in named.values())

    report = fsck(bd, vol, "--repair", status=1)
    assert any("put back 2 block object(s)" in line for line in report["repaired"]), report["repaired"]
    assert report["after"]["problems"] == []
    assert {key: vol.place.read(key) for key in good} == good
    assert not [k for k in vol.keys() if key_kind(k) == "alias"], "the aliases were not settled"
    assert fsck(bd, vol, status=0)["problems"] == []
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)


# --------------------------------------------------------------------------
# snapshots
# --------------------------------------------------------------------------

@pytest.mark.stores("file")
def test_a_damaged_snapshot_record_stops_every_block_delete(bd):
    vol = bd.create(size="2M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, os.urandom(4 * 64 * KiB))
    bd.ok("snapshot", "create", m.path, "--name", "first")
    pwrite_fsync(m.file, model, 0, os.urandom(2 * 64 * KiB))
    bd.ok("snapshot", "create", m.path, "--name", "second")
    pwrite_fsync(m.file, model, 2 * 64 * KiB, os.urandom(64 * KiB))
    bd.unmount(m)
    orphan = os.urandom(32).hex()
    vol.place.write(f"blocks/{orphan[:2]}/{orphan}", os.urandom(1000))  # what a dead mount leaves
    record = "snapshots/0000000000000001"
    flip(vol, record)

    report = fsck(bd, vol, status=2)
    (damage,) = report["problems"]
    assert (damage["kind"], damage["object"]) == ("snapshot record", f"{vol.url}/{record}")
    assert f"snapshot delete {vol.url} 1" in damage["repair"] and damage["maps"] == ["snapshot 1"]
    # the planted block, and the two only that record names (unknown now: nothing the check can read names them)
    assert report["leftovers"]["blocks"] == 3 and report["maps"] == ["live", "second"]
    kept = {k for k in vol.keys() if k.startswith(("blocks/", "map/pages/"))}

    report = fsck(bd, vol, "--repair", status=2)
    assert any("deleted no block object or map page" in line for line in report["repaired"]), report
    assert {k for k in vol.keys() if k.startswith(("blocks/", "map/pages/"))} == kept
    assert record in vol.keys()
    line = bd.ok("snapshot", "delete", vol.url, "1", *vol.store_args).stdout
    assert "deleted the damaged snapshot record 1" in line, line
    report = fsck(bd, vol, status=0)
    assert report["leftovers"]["blocks"] == 3 and report["problems"] == [], report["leftovers"]
    fsck(bd, vol, "--repair", status=1)
    assert fsck(bd, vol, status=0)["leftovers"]["blocks"] == 0
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)


# --------------------------------------------------------------------------
# refusals and bad input
# --------------------------------------------------------------------------

def without_lease_bytes(snapshot: dict) -> dict:
    """A place's contents, the lease objects' bytes aside (a mount renews
    its own every 15 s); their names stay."""
    return {k: (None if k.startswith("lock/") else v) for k, v in snapshot.items()}


def test_repair_is_refused_beside_a_writable_mount_and_the_check_works(bd):
    vol = bd.create(size="2M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    pwrite_fsync(m.file, model, 0, os.urandom(3 * 64 * KiB))
    before = without_lease_bytes(vol.snapshot())
    report = fsck(bd, vol, status=0)
    assert any("mounted writable by" in note for note in report["notes"]), report["notes"]
    line = assert_cli_error(bd.run("fsck", vol.url, "--repair", *vol.store_args))
    assert "mounted writable" in line, line
    assert bd.run("fsck", vol.url, "--repair", *vol.store_args).returncode == 8
    assert without_lease_bytes(vol.snapshot()) == before, "a refused repair changed the store"
    bd.unmount(m)


@pytest.mark.stores("file")
def test_bad_input_is_one_line_and_exit_8_and_changes_nothing(bd, tmp_path):
    empty = bd.empty_place()
    for argv in (("fsck", empty.url), ("fsck", empty.url, "--repair"), ("fsck", bd.missing_place().url),
                 ("fsck", "ftp://host/x"), ("fsck",), ("fsck", empty.url, "--threads", "0"),
                 ("fsck", empty.url, "--threads", "many"), ("fsck", empty.url, "--no-such-option"),
                 ("fsck", "s3://bucket/disk", "--endpoint", "http://127.0.0.1:9", "--retry-time", "1")):
        proc = bd.run(*argv)
        assert_cli_error(proc)
        assert proc.returncode == 8, (argv, proc.returncode, proc.stderr)
    assert list(empty.path.iterdir()) == []

    vol = bd.create_encrypted(size="1M", block_size="64K")
    wrong = tmp_path / "wrong.txt"
    wrong.write_text("not the passphrase\n")
    before = vol.snapshot()
    for flags in (("--passphrase-file", str(wrong)), ("--passphrase-file", str(wrong), "--repair"), ()):
        proc = bd.run("fsck", vol.url, *flags)
        line = assert_cli_error(proc)
        assert proc.returncode == 8, (flags, line)
    assert vol.snapshot() == before

    record = vol.record_bytes()
    fields = json.loads(record)
    vol.place.write("volume", json.dumps({**fields, "format_version": 9}).encode())
    assert bd.run("fsck", vol.url, *vol.store_args).returncode == 8  # a format it does not know: no damage
    vol.place.write("volume", record[:-40])
    before = vol.snapshot()
    for flags in ((), ("--repair",)):
        proc = bd.run("fsck", vol.url, *vol.store_args, *flags)
        assert proc.returncode == 2 and "damaged record" in proc.stdout, proc.stdout
        assert "cannot rebuild a volume record" in proc.stdout
    report = fsck(bd, vol, status=2)
    assert [d["kind"] for d in report["problems"]] == ["record"]
    assert vol.snapshot() == before


@pytest.mark.stores("file")
def test_progress_shows_on_a_terminal_only(bd):
    from conftest import CLI, run_with_terminal_stderr
    vol = bd.create(size="1M", block_size="64K")
    piped = bd.run("fsck", vol.url, "--json")
    assert piped.returncode == 0 and piped.stderr == "", piped.stderr
    proc, drawn = run_with_terminal_stderr([str(CLI), "fsck", vol.url, "--json"], env=bd.env)
    assert proc.returncode == 0 and json.loads(proc.stdout) == json.loads(piped.stdout)
    assert b"listing objects" in drawn and b"reading blocks" in drawn, drawn[-500:]
