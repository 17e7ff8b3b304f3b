"""The journal chain (journal version 4, FORMAT.md "The journal chain"):
every journal names the map object it follows, so one lost from the
middle is noticed.  On both stores, through the CLI and real mounts:

  * a journal deleted from the middle: a writable mount refuses in one
    line naming it and `fsck`; a read-only mount opens, shows what remains
    and warns; `verify` reports it; `fsck` exits 2 naming it and the
    blocks its successors change; `--repair` keeps the root, the journals before it and after
    it, and the volume mounts writable again, fsck clean after;
  * a journal PUT that failed after it landed (an injected failure, on
    the real store): the next journal holds its changes and follows the
    one before it, so the failed one is off the chain: a superseded
    attempt, no damage, nothing lost;
  * a journal of fsynced pages that a root names (root version 5) gone:
    refused and reported the same way; --repair leaves the block without
    those pages;
  * a kill -9 while fsyncs write journals: fsck (before any mount) is clean.
"""
from __future__ import annotations

import os
import random
import threading

from conftest import KiB, Mount, assert_cli_error, assert_file_matches, fsync_path, is_mounted, pwrite_fsync
from crashpoints import CrashStore, InjectedFailure, Plan
from badinput import engine_store
from test_damage_found import remove
from test_fsck import BLOCK, blocks_of, fsck, journals_after_a_kill, keys_of, kill, refused_mount

from bucketdisk.volume.mapobjects import Run
from bucketdisk.volume.volume import Volume


def test_a_journal_lost_from_the_middle_is_found_and_repaired(bd):
    vol = bd.create(size="1M", block_size="4K")
    older, rewrites, (first, second, third) = journals_after_a_kill(bd, vol)  # blocks 1, 3, 5: a journal each
    remove(vol, second)
    assert keys_of(vol, "journal") == [first, third]

    before = vol.place.snapshot()
    line = refused_mount(bd, vol)
    assert f"{vol.url}/{second}" in line and "is missing" in line, line
    assert f"bucketdisk fsck {vol.url}" in line, line
    gc = assert_cli_error(bd.run("gc", vol.url, *vol.store_args))  # a writer too: it would delete what may help
    assert f"{vol.url}/{second} is missing" in gc and "opening it writable" in gc, gc
    assert vol.place.snapshot() == before  # the refusals changed nothing

    # What remains: the journal before the gap (block 1) and the one after it (block 5).
    expected = bytearray(older)
    for index in (1, 5):
        expected[index * BLOCK : (index + 1) * BLOCK] = rewrites[index]
    m, warning = read_only_mount(bd, vol)
    assert f"warning: the map journal {vol.url}/{second} is missing" in warning, warning  # on the terminal
    assert "read-only mount shows the map without them" in warning and "bucketdisk fsck" in warning, warning
    assert_file_matches(m.file, expected)
    bd.unmount(m)
    assert f"{vol.url}/{second} is missing" in m.log.read_text()  # and in its log

    verify = bd.run("verify", vol.url, *vol.store_args)
    assert verify.returncode == 2, verify.stdout
    assert f"{vol.url}/{second}: missing: the journal {vol.url}/{third}" in verify.stdout, verify.stdout

    report = fsck(bd, vol, status=2)
    (lost,) = report["problems"]
    assert lost["object"] == f"{vol.url}/{second}" and lost["kind"] == "journal", lost
    assert lost["problem"].startswith("missing") and f"{vol.url}/{third}" in lost["problem"], lost
    assert lost["problem"].endswith("change block(s) 5"), lost["problem"]
    assert "changes are lost" in lost["repair"], lost
    human = bd.run("fsck", vol.url, *vol.store_args)
    assert human.returncode == 2 and f"damaged journal: {vol.url}/{second}: missing" in human.stdout, human.stdout

    report = fsck(bd, vol, "--repair", status=2)  # something was lost: 2, as cli/fsck.py says
    assert any(second.split("/")[-1] in line and "are lost" in line for line in report["lost"]), report["lost"]
    assert report["after"]["damaged"] == 0, report["after"]["problems"]

    m = bd.mount(vol)  # writable again
    assert_file_matches(m.file, expected)
    pwrite_fsync(m.file, expected, 3 * BLOCK, blocks_of("after the repair", 1))
    bd.unmount(m)
    fsck(bd, vol, status=0)
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, expected)
    bd.unmount(m)


def read_only_mount(bd, vol) -> tuple[Mount, str]:
    """`mount --read-only` run here, so that its stderr is seen: (the mount, stderr)."""
    mp, log = bd._name("mnt"), bd._name("daemon-log-").with_suffix(".txt")
    mp.mkdir()
    m = Mount(vol, mp, True, log)
    bd.janitor.push(f"read-only mount {mp}", lambda: bd.cleanup_mount(m))
    proc = bd.run("mount", vol.url, mp, "--read-only", "--log", log, *vol.store_args)
    assert proc.returncode == 0 and is_mounted(mp), proc.stderr
    m.pid = int(bd.stats(mp)["pid"])
    m.pids.add(m.pid)
    return m, proc.stderr


def test_a_journal_put_that_failed_after_landing_is_superseded_not_lost(bd):
    vol = bd.create(size="1M", block_size="64K")
    block = 64 * KiB
    contents = {i: random.Random(i).randbytes(block) for i in range(6)}
    crash = CrashStore(engine_store(vol.place), Plan())
    volume = Volume(crash, writable=True)
    volume.commit([(i, volume.store_block(contents[i], i), 0) for i in (0, 1)])
    assert volume.sync()  # journal 1
    volume.commit([(i, volume.store_block(contents[i], i), 0) for i in (2, 3)])
    crash.plan = Plan(at=crash.calls + 1, when="after", action="fail")  # the journal lands, its PUT "fails"
    try:
        volume.sync()
        raise AssertionError("the injected failure did not reach sync")
    except InjectedFailure:
        pass
    volume.commit([(i, volume.store_block(contents[i], i), 0) for i in (4,)])
    assert volume.sync()  # holds 2, 3 (the failed journal's) and 4; follows journal 1
    volume.abort()  # stops as a crash would: no checkpoint
    journals = keys_of(vol, "journal")
    assert len(journals) == 3, journals

    report = fsck(bd, vol, status=0)
    assert report["problems"] == [], report["problems"]
    assert report["leftovers"]["journals"] == [f"{vol.url}/{journals[1]}"], report["leftovers"]
    expected = bytearray(vol.size)
    for i, data in contents.items():
        if i != 5:
            expected[i * block : (i + 1) * block] = data
    m = bd.mount(vol)
    assert_file_matches(m.file, expected)
    bd.unmount(m)
    fsck(bd, vol, status=0)


def test_fsck_is_clean_after_a_kill_during_fsyncs(bd):
    vol = bd.create(size="8M", block_size="64K")
    m = bd.mount(vol)
    stop = threading.Event()

    def write() -> None:
        rng = random.Random(7)
        try:
            with open(m.file, "r+b", buffering=0) as f:
                while not stop.is_set():
                    f.seek(rng.randrange(vol.size // 4096) * 4096)
                    f.write(rng.randbytes(4096 * rng.choice((1, 4, 16))))
                    os.fsync(f.fileno())
        except OSError:
            pass  # the mount died under it

    writer = threading.Thread(target=write)
    writer.start()
    try:
        assert wait_journals(vol, 4)
    finally:
        kill(bd, m)
        stop.set()
        writer.join()
    assert keys_of(vol, "journal")
    report = fsck(bd, vol, status=0)
    assert report["problems"] == [], report["problems"]
    m = bd.mount(vol)
    fsync_path(m.file)
    bd.unmount(m)
    fsck(bd, vol, status=0)


def wait_journals(vol, count: int) -> bool:
    from conftest import wait_until

    return wait_until(lambda: len(keys_of(vol, "journal")) >= count, 60, 0.2)


def test_a_journal_of_fsynced_pages_a_root_needs_is_missed_when_gone(bd):
    vol = bd.create(size="1M", block_size="64K")
    block = 64 * KiB
    base = random.Random(1).randbytes(block)
    page = random.Random(2).randbytes(4096)
    volume = Volume(engine_store(vol.place), writable=True)
    volume.commit([(0, volume.store_block(base, 0), volume.log_number())])
    volume.sync()
    number = volume.next_log({0})
    volume.sync([Run(number, 0, 1, page)], number)  # page 1 of block 0, logged
    (logged,) = keys_of(vol, "journal")[-1:]
    volume.checkpoint()  # the root lists the log as live and names its journal
    volume.abort()
    assert logged in keys_of(vol, "journal")
    expected = bytearray(vol.size)
    expected[:block] = base
    expected[4096:8192] = page

    fsck(bd, vol, status=0)
    m = bd.mount(vol, read_only=True)  # merges the page in memory
    assert_file_matches(m.file, expected)
    bd.unmount(m)

    remove(vol, logged)
    line = refused_mount(bd, vol)
    assert f"{vol.url}/{logged} is missing" in line and "fsynced pages" in line, line
    report = fsck(bd, vol, status=2)
    (lost,) = report["problems"]
    assert lost["object"] == f"{vol.url}/{logged}" and "needs the fsynced pages" in lost["problem"], lost
    fsck(bd, vol, "--repair", status=2)
    m = bd.mount(vol)
    expected[4096:8192] = base[4096:8192]  # the page is lost: the block as it was before it
    assert_file_matches(m.file, expected)
    bd.unmount(m)
    fsck(bd, vol, status=0)


def as_version_3(vol, key: str) -> None:
    """Rewrite the journal at `key` as older bucketdisk wrote it (version
    3: no predecessor), through the engine's own codec."""
    import struct
    import uuid as uuidlib

    from bucketdisk.volume import layout
    from bucketdisk.volume.mapobjects import JOURNAL_ENTRY, JOURNAL_HEADER_V3
    from bucketdisk.volume.mapstore import MapStore
    from bucketdisk.volume.record import read_record

    store = engine_store(vol.place)
    record = read_record(store)
    maps = MapStore.of(store, record)
    journal = maps.read_journal(*layout.name_of(key, layout.JOURNAL))
    assert journal.prev is not None and not journal.runs
    data = JOURNAL_HEADER_V3.pack(b"BDKJ", 3, journal.seq, uuidlib.UUID(record.uuid).bytes, len(journal.changes),
                                  journal.log, 0, journal.epoch)
    data += b"".join(JOURNAL_ENTRY.pack(*change) for change in journal.changes)
    assert struct.unpack_from("<I", data, 4) == (3,)
    vol.place.write(key, record.codec().pack(data, key))
    assert maps.read_journal(*layout.name_of(key, layout.JOURNAL)).prev is None
    store.close()


def test_version_3_journals_still_read_and_below_one_nothing_is_checked(bd):
    """Journals 1-3 after a root, the second rewritten as version 3 (as a
    volume older bucketdisk wrote, then this one): the third's link leads
    to it, and from it on down every journal is replayed unchecked, as
    before version 4; the first gone is not noticed (it could not be)."""
    vol = bd.create(size="1M", block_size="64K")
    block = 64 * KiB
    m = bd.mount(vol)
    model = bytearray(vol.size)
    for index in (1, 3, 5):
        pwrite_fsync(m.file, model, index * block, random.Random(index).randbytes(block))  # whole: no logged pages
    kill(bd, m)
    first, second, third = keys_of(vol, "journal")
    as_version_3(vol, second)
    fsck(bd, vol, status=0)
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, model)
    bd.unmount(m)

    remove(vol, first)
    fsck(bd, vol, status=0)
    model[block : 2 * block] = bytes(block)  # what the first journal held
    m = bd.mount(vol)
    assert_file_matches(m.file, model)
    bd.unmount(m)
