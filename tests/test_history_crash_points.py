"""History at every crash point (issue 14): a workload that snapshots,
overwrites, restores and deletes a snapshot is stopped (or fails once) at
every PUT and DELETE, on both stores; afterwards the volume mounts, every
block reads as the last acknowledged or a later step, and every snapshot
that exists reads back exactly the disk it was taken of: a snapshot cut
short leaves nothing half made."""
from __future__ import annotations

import pytest

from crashpoints import BLOCK_SIZE, BLOCKS, HISTORY_STEPS, states
from test_crash_points import places, walk_crash_points  # noqa: F401 - the fixture
from bucketdisk.codec.block import ZERO_HASH
from bucketdisk.volume.snapshots import SnapshotRecords
from bucketdisk.volume.volume import Volume

MODES = {"exit-before": ("exit", "before"), "exit-after": ("exit", "after"),
         "fail-before": ("fail", "before"), "fail-after": ("fail", "after")}


def check_snapshots(store, kept: dict[str, dict[int, bytes]]) -> list[str]:
    """Every stored snapshot holds the disk it was taken of."""
    problems = []
    volume = Volume(store, writable=False)
    try:
        snapshots = SnapshotRecords.of(store, volume.record).list()
        undos = [s for s in snapshots if "pre-restore" in s.name]
        for snapshot in snapshots:
            if "pre-restore" not in snapshot.name:
                wants = [kept[snapshot.name]]
            elif len(undos) == 1:
                wants = [kept["pre-restore"]]
            else:  # a restore run again after a failure: before or after the first attempt's root
                wants = [kept["pre-restore"], kept["s1"]]
            for want in wants:
                found = _differences(volume, snapshot, want)
                if not found:
                    break
            problems += found
    finally:
        volume.close()
    return problems


def _differences(volume: Volume, snapshot, want: dict[int, bytes]) -> list[str]:
    problems = []
    for index in range(BLOCKS):
        number, at = divmod(index, volume.maps.page_entries)
        page_hash = snapshot.page_hashes[number]
        entry = volume.maps.read_page(page_hash, number)[at * 32:(at + 1) * 32] \
            if page_hash != ZERO_HASH else ZERO_HASH
        data = bytes(BLOCK_SIZE) if entry == ZERO_HASH else volume.read_block(entry)
        if data != want[index]:
            problems.append(f"snapshot {snapshot.name}: block {index} is not what it was")
    return problems


@pytest.mark.parametrize("mode", list(MODES))
def test_every_crash_point_of_history(places, mode):  # noqa: F811
    action, when = MODES[mode]
    kept: dict[str, dict[int, bytes]] = {}
    all_states = states(HISTORY_STEPS, kept=kept)
    before = {i: bytes(BLOCK_SIZE) for i in range(BLOCKS)}
    failures = walk_crash_points(places, HISTORY_STEPS, action, when, all_states, before,
                                 extra_check=lambda store: check_snapshots(store, kept))
    assert not failures, "\n".join(failures[:20])
