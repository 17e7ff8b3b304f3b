"""Collection never holds the lock that reads and writes need while it
talks to the store (issue 13, item 7).  In process, on both real stores:
a checkpoint's collection is held inside its DELETE, and meanwhile the
volume answers lookups, takes new uploads and commits; an upload of the
very content being deleted waits for the delete, then stores it again.
"""
from __future__ import annotations

import threading

from crashpoints import BLOCK_SIZE, CONTENT, CrashStore, Plan
from test_crash_points import create, places  # noqa: F401 - the fixture
from bucketdisk.volume import layout
from bucketdisk.volume.volume import Volume

HANG_GUARD = 30  # seconds: only against a hang, not a measure of speed


class HeldDeletes(CrashStore):
    """Holds every DELETE of block objects until released."""

    def __init__(self, inner) -> None:
        super().__init__(inner, Plan())
        self.entered = threading.Event()
        self.release = threading.Event()

    def delete(self, keys, *, guard=None) -> None:
        keys = list(keys)
        if any(k.startswith(layout.BLOCKS) for k in keys):
            self.entered.set()
            assert self.release.wait(HANG_GUARD)
        return super().delete(keys, guard=guard)


def test_reads_and_writes_go_on_while_collection_deletes(places):  # noqa: F811
    name = places.new()
    store = HeldDeletes(places.open(name))
    create(store)
    volume = Volume(store, writable=True)
    a, b, c = CONTENT["A"], CONTENT["B"], CONTENT["C"]
    volume.commit([(0, volume.store_block(a, 0), 0), (1, volume.store_block(b, 1), 0)])
    volume.sync()
    volume.commit([(0, volume.store_block(c, 0), 0)])  # A loses its last reference

    checkpoint = threading.Thread(target=volume.checkpoint)
    checkpoint.start()
    assert store.entered.wait(HANG_GUARD), "the checkpoint collected nothing"
    # the collection is inside its DELETE of A: the volume still answers
    answered = []

    def meanwhile() -> None:
        answered.append(volume.lookup(1) == volume.store_block(b, None))
        volume.commit([(2, volume.store_block(CONTENT["D"], 2), 0)])
        answered.append(True)

    other = threading.Thread(target=meanwhile, daemon=True)
    other.start()
    other.join(HANG_GUARD)
    assert answered == [True, True], "lookups or commits waited for the collection's DELETE"
    reuse = threading.Thread(target=lambda: volume.commit([(3, volume.store_block(a, 3), 0)]))
    reuse.start()
    reuse.join(0.5)
    assert reuse.is_alive(), "an upload of content being deleted did not wait for the delete"
    store.release.set()
    checkpoint.join(HANG_GUARD)
    reuse.join(HANG_GUARD)
    assert not checkpoint.is_alive() and not reuse.is_alive()
    volume.sync()
    assert volume.read_block(volume.lookup(3)) == a, "content uploaded again after its delete is missing"
    volume.close()

    reopened = Volume(places.open(name), writable=False)
    for index, data in ((0, c), (1, b), (2, CONTENT["D"]), (3, a)):
        assert reopened.read_block(reopened.lookup(index)) == data
    reopened.close()
    assert len(a) == BLOCK_SIZE
