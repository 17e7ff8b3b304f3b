"""A read-only view's refresh reads only what changed (follow.py).

In process, on both real stores: a writable Volume and, beside it, a
read-only Volume on a store object of its own (so its request counters are
its own) followed by a Follower.  After a checkpoint a refresh reads the
new root and the pages whose hash changed, never the others; each journal
is read once; a block with logged pages is merged reading its base once,
or not at all when its pages cover it.  And whatever it reuses, what it
shows is exactly the writer's durable state, as a read-only mount opened
afresh shows it.  Counted by the store's `objects_got`, never by time
(every refresh also reads the volume record: RECORD_READS).  And once the
volume is replaced (`create --force`) or deleted, a refresh says so and
nothing of the place is read as the volume's any more.
"""
from __future__ import annotations

import random
import re

import pytest

from crashpoints import CrashStore, Plan
from test_crash_points import places  # noqa: F401 - the fixture
from bucketdisk.codec.block import ZERO_HASH
from bucketdisk.errors import NotFound, VolumeReplaced
from bucketdisk.volume import layout
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.follow import Follower
from bucketdisk.volume.mapstore import LOG_PAGE, Run
from bucketdisk.volume.record import VolumeRecord
from bucketdisk.volume.volume import Volume

BLOCK_SIZE = 16 * 1024  # 4 logged pages per block
BLOCKS = 64
PAGE_ENTRIES = 4        # 16 map pages
RECORD_READS = 1        # a refresh reads the volume record: is the place's volume still the one shown?


class Pair:
    """A writer, a read-only volume following it, and the content the
    writer made durable (`model`)."""

    def __init__(self, places) -> None:  # noqa: F811
        name = places.new()
        store = places.open(name)
        store.put(layout.RECORD, VolumeRecord(size=BLOCKS * BLOCK_SIZE, block_size=BLOCK_SIZE,
                                              page_entries=PAGE_ENTRIES).to_bytes())
        self.writer = Volume(store, writable=True)
        self.places, self.name = places, name
        self.model = [bytes(BLOCK_SIZE)] * BLOCKS
        self.logged: dict[int, bytes] = {}  # newest content only in a log (the device's cache)
        self.reader = Volume(places.open(name), writable=False)
        self.follower = Follower(self.reader)

    def write(self, blocks: dict[int, bytes], sync: bool = True) -> None:
        for index, data in blocks.items():
            mark = self.writer.log_number()
            self.writer.commit([(index, self.writer.store_block(data, index), mark)])
            self.model[index] = data
            self.logged.pop(index, None)
        if sync:
            self.writer.sync()

    def log(self, block: int, first: int, count: int, seed: int) -> None:
        """An fsync that logs `count` pages of `block` from page `first`."""
        data = bytearray(self.model[block])
        data[first * LOG_PAGE : (first + count) * LOG_PAGE] = random.Random(seed).randbytes(count * LOG_PAGE)
        number = self.writer.next_log([block])
        self.writer.sync([Run(number, block, first, bytes(data[first * LOG_PAGE : (first + count) * LOG_PAGE]))],
                         number)
        self.model[block] = self.logged[block] = bytes(data)

    def upload_logged(self) -> None:
        """The device uploads logged blocks whole, later."""
        self.write(dict(self.logged))

    def refresh(self) -> int:
        """Refresh the follower; returns the map objects and blocks it read
        (the volume record it reads every time is not counted)."""
        before = self.reader.stats.snapshot()["objects_got"]
        self.follower.refresh()
        return self.reader.stats.snapshot()["objects_got"] - before - RECORD_READS

    def assert_shows_model(self, volume: Volume | None = None) -> None:
        volume = volume or self.reader
        for index, expected in enumerate(self.model):
            h = volume.lookup(index)
            shown = bytes(BLOCK_SIZE) if h == ZERO_HASH else volume.read_block(h)
            assert shown == expected, f"block {index} is not what the writer made durable"

    def assert_fresh_mount_agrees(self) -> None:
        """A read-only volume opened now, after its first refresh, shows the same."""
        fresh = Volume(self.places.open(self.name), writable=False)
        follower = Follower(fresh)
        follower.refresh()
        self.assert_shows_model(fresh)
        follower.close()
        fresh.close()

    def close(self) -> None:
        self.writer.close()
        self.follower.close()
        self.reader.close()


@pytest.fixture
def pair(places):  # noqa: F811
    p = Pair(places)
    yield p
    p.close()


def contents(seed: int, blocks) -> dict[int, bytes]:
    rng = random.Random(seed)
    return {i: rng.randbytes(BLOCK_SIZE) for i in blocks}


def test_a_refresh_after_a_checkpoint_reads_the_root_and_the_changed_pages(pair):
    pair.write(contents(1, range(BLOCKS)))
    pair.writer.checkpoint()
    pair.refresh()
    pair.assert_shows_model()

    pair.write(contents(2, [5, 6]), sync=False)  # both in map page 1
    pair.writer.checkpoint()                     # one page rewritten, the journals folded in
    assert pair.refresh() == 2, "a refresh after a checkpoint read more than its root and one page"
    pair.assert_shows_model()
    assert pair.refresh() == 0, "a refresh with nothing new read something"


@pytest.mark.parametrize("taken_back", ["rewritten", "punched"])
def test_a_change_the_writer_took_back_is_not_shown(pair, taken_back):
    """A checkpoint may leave a page as it was in the shown root (the
    journals that changed a block and changed it back are gone): the
    follower puts back what it had changed itself."""
    old = contents(8, [5])[5] if taken_back == "rewritten" else bytes(BLOCK_SIZE)
    pair.write({5: old})
    pair.writer.checkpoint()
    pair.refresh()
    pair.write(contents(9, [5]))
    pair.refresh()
    pair.assert_shows_model()
    pair.write({5: old}, sync=False)
    pair.writer.checkpoint()  # page 1 as in the root shown, no journal left
    assert pair.refresh() == 1, "expected the root alone"
    pair.assert_shows_model()


def test_each_journal_is_read_once(pair):
    pair.write(contents(3, [0, 9]))
    assert pair.refresh() == 1
    pair.write(contents(4, [1]))
    pair.write(contents(5, [40]))
    assert pair.refresh() == 2, "journals read by an earlier refresh were read again"
    pair.assert_shows_model()


def test_a_block_with_logged_pages_is_merged_reading_its_base_once(pair):
    pair.write(contents(6, [2, 3]))
    pair.writer.checkpoint()
    pair.refresh()
    pair.log(2, 1, 1, 101)
    assert pair.refresh() == 2, "expected the journal and block 2's base"
    pair.assert_shows_model()
    pair.log(2, 3, 1, 102)  # more pages of the same block: the last merge is extended
    assert pair.refresh() == 1, "block 2's base was read again"
    pair.log(3, 0, BLOCK_SIZE // LOG_PAGE, 103)  # every page of block 3: no base needed
    assert pair.refresh() == 1, "a block its logged pages cover was read"
    pair.assert_shows_model()
    pair.upload_logged()
    pair.refresh()
    pair.assert_shows_model()
    assert pair.reader.unmerged_pages == 0


def test_a_read_only_volume_opened_beside_logged_pages_reads_only_their_bases(pair):
    pair.write(contents(7, [4, 8]))
    pair.log(4, 2, 1, 104)
    pair.log(8, 0, BLOCK_SIZE // LOG_PAGE, 105)
    reader = Volume(pair.places.open(pair.name), writable=False)  # reads the root, pages and journals
    before = reader.stats.snapshot()["objects_got"]
    follower = Follower(reader)
    follower.refresh()
    assert reader.stats.snapshot()["objects_got"] - before == 1 + RECORD_READS, \
        "the first refresh read the map again"
    pair.assert_shows_model(reader)
    follower.close()
    reader.close()


class OnceGone(CrashStore):
    """Answers NotFound to the first GET of `key`, as if the writer had
    just deleted it (the next listing no longer names it)."""

    def __init__(self, inner) -> None:
        super().__init__(inner, Plan())
        self.key: str | None = None

    def get(self, key: str) -> bytes:
        if key == self.key:
            self.key = None
            raise NotFound(key)
        return super().get(key)


def test_a_refresh_that_finds_an_object_gone_keeps_what_it_read(pair):
    store = OnceGone(pair.places.open(pair.name))
    reader = Volume(store, writable=False)
    follower = Follower(reader)
    for seed in range(6):
        pair.write(contents(10 + seed, [seed * 5]))
    store.key = layout.journal_key(*reader.maps.listing().journals[3])
    before = reader.stats.snapshot()["objects_got"]
    follower.refresh()
    assert reader.stats.snapshot()["objects_got"] - before == 6 + RECORD_READS, \
        "journals read before the miss were read again"
    pair.assert_shows_model(reader)
    follower.close()
    reader.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_what_a_refresh_shows_is_the_writers_durable_state(pair, seed):
    """Random writes, logged pages, uploads, checkpoints and refreshes:
    after each refresh the follower shows the model, as a fresh mount does."""
    rng = random.Random(seed)
    pages = BLOCK_SIZE // LOG_PAGE
    for step in range(60):
        action = rng.choice(["write", "write", "log", "log", "upload", "checkpoint", "refresh"])
        if action == "write":
            blocks = contents(rng.randrange(1 << 30), rng.sample(range(BLOCKS), rng.randint(1, 6)))
            for index in blocks:
                if rng.random() < 0.3:  # a punch, or the content it had
                    blocks[index] = rng.choice([bytes(BLOCK_SIZE), pair.model[index]])
            pair.write(blocks)
        elif action == "log":
            first = rng.randrange(pages)
            pair.log(rng.randrange(BLOCKS), first, rng.randint(1, pages - first), rng.randrange(1 << 30))
        elif action == "upload":
            pair.upload_logged()
        elif action == "checkpoint":
            pair.writer.checkpoint()
        else:
            pair.refresh()
            pair.assert_shows_model()
    pair.refresh()
    pair.assert_shows_model()
    pair.assert_fresh_mount_agrees()


@pytest.mark.parametrize("how", ["replaced", "deleted"])
def test_a_refresh_after_the_volume_was_replaced_or_deleted_reads_none_of_the_place(places, how):  # noqa: F811
    name = places.new()
    store = places.open(name)
    store.put(layout.RECORD, VolumeRecord(size=BLOCKS * BLOCK_SIZE, block_size=BLOCK_SIZE,
                                          page_entries=PAGE_ENTRIES).to_bytes())
    writer = Volume(store, writable=True)
    old = contents(12, range(BLOCKS))
    for index, data in old.items():
        writer.commit([(index, writer.store_block(data, index), writer.log_number())])
    writer.close()  # (create --force replaces only a volume no writer holds)
    reader = Volume(places.open(name), writable=False)
    follower = Follower(reader)
    follower.refresh()
    assert reader.read_block(reader.lookup(7)) == old[7]
    uuid = reader.record.uuid

    place = places.open(name)
    if how == "replaced":
        record = create_volume(place, BLOCKS * BLOCK_SIZE, BLOCK_SIZE, force=True)
        new_writer = Volume(place, writable=True)  # the new volume gets data of its own
        for index, data in contents(13, range(BLOCKS)).items():
            new_writer.commit([(index, new_writer.store_block(data, index), new_writer.log_number())])
        new_writer.close()
        said = f"was replaced by another volume (UUID {record.uuid}; this mount showed {uuid})"
    else:
        place.delete(sorted(place.list(), key=lambda key: key != layout.RECORD))  # the record first
        said = "was deleted (its volume record is gone)"
    with pytest.raises(VolumeReplaced, match=r"the volume at \S+ " + re.escape(said)):
        follower.refresh()
    assert reader.replaced is not None and said in reader.replaced
    before = reader.stats.snapshot()["objects_got"]
    with pytest.raises(VolumeReplaced):
        follower.refresh()
    with pytest.raises(VolumeReplaced):
        reader.load_block(reader.lookup(7))  # the old volume's block: not read either
    assert reader.stats.snapshot()["objects_got"] == before, "a replaced volume was read again"
    follower.close()
    reader.close()
