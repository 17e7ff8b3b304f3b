"""Snapshot records (issue 14): what one holds reads back, names are
checked, numbers never repeat, and a damaged or foreign record is named or
read past.  On both real stores."""
from __future__ import annotations

import pytest

from test_crash_points import create, places  # noqa: F401 - the fixture
from bucketdisk.codec.block import ZERO_HASH
from bucketdisk.errors import CorruptData, UserError
from bucketdisk.volume import layout
from bucketdisk.volume.record import read_record
from bucketdisk.volume.snapshots import SnapshotRecords, default_name

PAGE = bytes(range(32))


def records(store) -> SnapshotRecords:
    create(store)
    return SnapshotRecords.of(store, read_record(store))


def test_a_snapshot_record_reads_back_whole(places):  # noqa: F811
    store = places.open(places.new())
    snaps = records(store)
    pages = [PAGE] + [ZERO_HASH] * (snaps.page_count - 1)
    first = snaps.write((3, 7), pages, started=1_700_000_000.0, changed_blocks=5, new_bytes=4096)
    second = snaps.write((3, 9), pages, name="before-upgrade", type="pre-restore")
    assert first.name == "2023-11-14-221320" == default_name(1_700_000_000.0)
    assert [s.number for s in snaps.list()] == [1, 2]
    again = snaps.read(1)
    assert again == first and again.page_hashes == pages and again.root == (3, 7)
    assert again.started == "2023-11-14T22:13:20Z" and (again.changed_blocks, again.new_bytes) == (5, 4096)
    assert snaps.find("before-upgrade") == second and snaps.find("1") == first
    snaps.delete(1)
    assert [s.name for s in snaps.list()] == ["before-upgrade"]
    assert snaps.write((3, 10), pages).number == 3  # never a number used before


def test_the_newest_snapshots_number_is_not_used_again_after_its_delete(places):  # noqa: F811
    """Deleting the newest record leaves an empty placeholder under its key,
    so the next snapshot takes a higher number, and a delete request of the
    old record that lands late (latedeletes.py) cannot remove the new one.
    The placeholder goes once a higher key exists."""
    store = places.open(places.new())
    snaps = records(store)
    pages = [PAGE] + [ZERO_HASH] * (snaps.page_count - 1)
    snaps.write((1, 1), pages, name="a")
    snaps.write((1, 2), pages, name="b")
    snaps.delete(2)
    assert [s.name for s in snaps.list()] == ["a"] and store.get(layout.snapshot_key(2)) == b""
    with pytest.raises(UserError):
        snaps.find("2")
    c = snaps.write((1, 3), pages, name="c")
    assert c.number == 3 and store.head(layout.snapshot_key(2)) is None  # the placeholder went
    store.delete([layout.snapshot_key(2)])  # the old record's delete, landing late
    assert [s.name for s in snaps.list()] == ["a", "c"]


@pytest.mark.parametrize("name", ["", "Latest", "live", ".hidden", "a/b", "x" * 65, "sp ace", "é"])
def test_a_bad_name_is_refused_and_nothing_is_written(places, name):  # noqa: F811
    store = places.open(places.new())
    snaps = records(store)
    with pytest.raises(UserError):
        snaps.write((1, 1), [ZERO_HASH] * snaps.page_count, name=name)
    assert list(store.list(layout.SNAPSHOTS)) == []


def test_a_taken_name_or_number_is_not_written_over(places):  # noqa: F811
    store = places.open(places.new())
    snaps = records(store)
    pages = [ZERO_HASH] * snaps.page_count
    snaps.write((1, 1), pages, name="a")
    with pytest.raises(UserError, match="exists already"):
        snaps.write((1, 2), pages, name="a")
    # Another writer takes number 2 after our listing, before our write: we take 3.
    SnapshotRecords.of(store, read_record(store)).write((1, 2), pages, name="c")
    snaps._stored = lambda: [(1, 100)]  # our listing, from before that
    assert snaps.write((1, 3), pages, name="b").number == 3
    assert snaps.read(2).name == "c"


def test_damaged_records_are_named_and_foreign_ones_read_past(places):  # noqa: F811
    name = places.new()
    store = places.open(name)
    snaps = records(store)
    pages = [ZERO_HASH] * snaps.page_count
    snaps.write((1, 1), pages, name="kept")
    other = SnapshotRecords(store, snaps.codec, "0" * 32, snaps.page_count)  # an earlier volume's
    other.write((1, 1), pages, name="foreign")
    assert [s.name for s in snaps.list()] == ["kept"]
    store.put(layout.snapshot_key(9), snaps.codec.pack(b"BDKS" + b"\0" * 20, layout.snapshot_key(9)))
    with pytest.raises(CorruptData, match=layout.snapshot_key(9)):
        snaps.list()


def test_gc_keeps_what_a_snapshot_names(places):  # noqa: F811
    from crashpoints import CONTENT
    from bucketdisk.volume.sweep import sweep
    from bucketdisk.volume.volume import Volume

    name = places.new()
    store = places.open(name)
    snaps = records(store)
    x, y = CONTENT["A"], CONTENT["B"]
    a = Volume(places.open(name), writable=True)
    a.commit([(0, a.store_block(x, 0), 0)])
    a.checkpoint()
    root = a.durable_root()
    snaps.write((root.epoch, root.seq), root.page_hashes, name="with-x")
    a.commit([(0, a.store_block(y, 0), 0)])
    a.sync()
    a.abort()  # dies before a checkpoint: X is named by the snapshot alone

    b = Volume(places.open(name), writable=True)
    found = sweep(b, delete=True)
    assert (found.blocks, found.pages) == (0, 0)
    kept = snaps.find("with-x")
    x_hash = b.maps.read_page(kept.page_hashes[0], 0)[:32]  # block 0 as the snapshot keeps it
    assert b.read_block(x_hash) == x and b.read_block(b.lookup(0)) == y
    b.close()


def test_checkpoints_delete_only_what_this_mount_created_since_the_snapshots(places):  # noqa: F811
    from crashpoints import CONTENT
    from bucketdisk.volume.sweep import sweep
    from bucketdisk.volume.volume import Volume

    name = places.new()
    store = places.open(name)
    snaps = records(store)
    x, y, z, w = (CONTENT[c] for c in "ABCD")
    a = Volume(places.open(name), writable=True)
    x_hash = a.store_block(x, 0)
    a.commit([(0, x_hash, 0)])
    a.checkpoint()
    root = a.durable_root()
    snaps.write((root.epoch, root.seq), root.page_hashes, name="with-x")
    a.close()

    b = Volume(places.open(name), writable=True)
    b.commit([(0, b.store_block(y, 0), 0)])      # X: named by the snapshot only
    z_hash = b.store_block(z, 1)
    b.commit([(1, z_hash, 0)])
    b.commit([(1, b.store_block(w, 1), 0)])      # Z: created by this mount since, named by nothing
    b.checkpoint()
    assert store.head(layout.block_key(x_hash)) is not None
    assert store.head(layout.block_key(z_hash)) is None
    assert b.maps.read_page(snaps.find("with-x").page_hashes[0], 0)[:32] == x_hash  # its page is kept
    assert sweep(b, delete=True).blocks == 0
    assert b.read_block(x_hash) == x
    b.close()
