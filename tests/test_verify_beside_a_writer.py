"""verify beside a writer (issue 15): an object a checkpoint supersedes and
deletes while verify runs is not reported as missing, while one that the
maps still name and that stays missing is.

Deterministic: the store verify reads through lets the writer replace and
collect a block at the moment verify first asks for a block object."""
from __future__ import annotations

import os

from test_crash_points import places  # noqa: F401 - the fixture
from bucketdisk.volume import layout
from bucketdisk.volume.create import create_volume
from bucketdisk.volume.record import read_record
from bucketdisk.volume.verify import verify
from bucketdisk.volume.volume import Volume

BLOCK = 64 << 10


class WriterStrikes:
    """A store that runs `strike()` once, before the first block GET."""

    def __init__(self, inner, strike) -> None:
        self.inner, self.strike, self.struck = inner, strike, False

    def get_into(self, key, sink):
        if key.startswith(layout.BLOCKS) and not self.struck:
            self.struck = True
            self.strike()
        return self.inner.get_into(key, sink)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_block_superseded_during_verify_is_not_missing_but_a_lost_one_is(places):  # noqa: F811
    name = places.new()
    store = places.open(name)
    create_volume(store, 16 * BLOCK, BLOCK)
    writer = Volume(store, writable=True)
    blocks = [os.urandom(BLOCK) for _ in range(4)]
    for index, data in enumerate(blocks):
        writer.commit([(index, writer.store_block(data, index), writer.log_number())])
    writer.checkpoint()

    def rewrite_everything() -> None:  # each old block superseded and deleted by the checkpoint
        for index in range(len(blocks)):
            writer.commit([(index, writer.store_block(os.urandom(BLOCK), index), writer.log_number())])
        writer.checkpoint()

    reader = places.open(name)
    report = verify(WriterStrikes(reader, rewrite_everything), read_record(reader))
    assert report.damage == [], [d.summary() for d in report.damage]

    lost = layout.block_key(writer.lookup(2))
    store.delete([lost])  # gone while the map still names it
    report = verify(reader, read_record(reader))
    assert [(d.kind, d.problem, d.object.endswith(lost)) for d in report.damage] == [("block", "missing", True)]
    assert report.damage[0].ranges == [{"map": "live", "first_byte": 2 * BLOCK, "last_byte": 3 * BLOCK - 1}]
    writer.close()
