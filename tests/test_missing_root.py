"""A missing root under journals of its epoch (FORMAT.md "The journal
chain"): a mount's first act is a root of its epoch, so journals of an
epoch newer than every root listed follow a root that is gone.  Their
fsynced changes are the live map's, not a superseded writer's leftovers.
On both stores, through the CLI and real mounts:

  * the only root deleted under a journal (never checkpointed since):
    a writable mount and gc refuse in one line naming the root and
    `bucketdisk fsck`, changing nothing; a read-only mount warns and shows
    the journal's block; fsck exits 2 naming the root; --repair keeps the
    journal's block, and the volume mounts writable again, fsck clean;
  * a checkpointed volume (an older epoch's root still there, the newer
    epoch's root deleted): the same, and --repair rebuilds the older root
    plus the journals after the missing one.
"""
from __future__ import annotations

from conftest import assert_cli_error, assert_file_matches, pwrite_fsync
from test_damage_found import remove
from test_fsck import BLOCK, blocks_of, fsck, keys_of, kill, refused_mount
from test_journal_chain import read_only_mount


def test_the_only_root_gone_under_a_journal_is_damage_not_a_leftover(bd):
    vol = bd.create(size="1M", block_size="4K")
    m = bd.mount(vol)
    expected = bytearray(vol.size)
    pwrite_fsync(m.file, expected, BLOCK, blocks_of("fsynced", 1))
    kill(bd, m)
    (root,) = keys_of(vol, "root")
    (journal,) = keys_of(vol, "journal")
    remove(vol, root)

    refused_everywhere(bd, vol, root, journal)
    shown_read_only(bd, vol, root, expected)
    report = fsck(bd, vol, status=2)
    reported(report, vol, root, journal, "1")
    repaired(bd, vol, root, expected)


def test_a_checkpointed_volume_whose_newer_root_is_gone_rebuilds_from_the_older(bd):
    vol = bd.create(size="1M", block_size="4K")
    m = bd.mount(vol)
    expected = bytearray(vol.size)
    pwrite_fsync(m.file, expected, 0, blocks_of("before", 8))
    bd.unmount(m)
    (older_root,) = keys_of(vol, "root")
    kept = vol.place.read(older_root)
    m = bd.mount(vol)  # a new epoch: its first root replaces the older one
    for index in (1, 3, 5):
        pwrite_fsync(m.file, expected, index * BLOCK, blocks_of(f"rewrite {index}", 1))
    kill(bd, m)
    (newer_root,) = keys_of(vol, "root")
    journals = keys_of(vol, "journal")
    assert newer_root > older_root and len(journals) == 3, (newer_root, journals)
    remove(vol, newer_root)
    vol.place.write(older_root, kept)  # as if the newer root's delete of it had failed

    refused_everywhere(bd, vol, newer_root, journals[0])
    shown_read_only(bd, vol, newer_root, expected)  # the older root and the journals after the missing one
    report = fsck(bd, vol, status=2)
    reported(report, vol, newer_root, journals[0], "1, 3, 5")
    repaired(bd, vol, newer_root, expected)


def refused_everywhere(bd, vol, root: str, journal: str) -> None:
    """A writable mount and gc refuse, naming the root, the journal that
    follows it and fsck; nothing changes."""
    before = vol.place.snapshot()
    line = refused_mount(bd, vol)
    assert f"the map root {vol.url}/{root} is missing" in line, line
    assert f"the journal {vol.url}/{journal} follows it" in line, line
    assert f"bucketdisk fsck {vol.url}" in line, line
    gc = assert_cli_error(bd.run("gc", vol.url, *vol.store_args))  # a writer: it would delete the journals
    assert f"{vol.url}/{root} is missing" in gc, gc
    assert vol.place.snapshot() == before


def shown_read_only(bd, vol, root: str, expected) -> None:
    m, warning = read_only_mount(bd, vol)
    assert f"warning: the map root {vol.url}/{root} is missing" in warning, warning
    assert_file_matches(m.file, expected)
    bd.unmount(m)


def reported(report: dict, vol, root: str, journal: str, blocks: str) -> None:
    (lost,) = [p for p in report["problems"] if p["severity"] == "damage"]
    assert lost["object"] == f"{vol.url}/{root}" and lost["kind"] == "root", lost
    assert lost["problem"].startswith(f"missing: the journal {vol.url}/{journal}"), lost["problem"]
    assert lost["problem"].endswith(f"change block(s) {blocks}"), lost["problem"]
    assert report["leftovers"]["journals"] == [], report["leftovers"]  # the journals are the live map's


def repaired(bd, vol, root: str, expected) -> None:
    """--repair keeps the journals' blocks; writable again, fsck clean after a write."""
    report = fsck(bd, vol, "--repair", status=2)  # the root's own changes are lost: 2
    assert any(f"root {root.split('/')[-1]} are lost" in line for line in report["lost"]), report["lost"]
    assert report["after"]["damaged"] == 0, report["after"]["problems"]
    m = bd.mount(vol)
    assert_file_matches(m.file, expected)
    pwrite_fsync(m.file, expected, 6 * BLOCK, blocks_of("after the repair", 1))
    bd.unmount(m)
    fsck(bd, vol, status=0)
    m = bd.mount(vol, read_only=True)
    assert_file_matches(m.file, expected)
    bd.unmount(m)
