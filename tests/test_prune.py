"""`bucketdisk prune` (issue 14) keeps exactly the snapshots the rules
keep, on both stores.  Snapshots are dated with `snapshot create --time`;
every expected set below is worked out by hand in the comments."""
from __future__ import annotations

import json

import pytest

from conftest import assert_cli_error

TIMES = {  # number: UTC start (ISO week in brackets)
    1: "2026-10-01T00:00:00Z",   # Thu [40]
    2: "2026-10-15T08:00:00Z",   # Thu [42]
    3: "2026-11-02T10:00:00Z",   # Mon [45], named "before-upgrade"
    4: "2026-11-02T18:00:00Z",   # Mon [45]
    5: "2026-11-20T09:00:00Z",   # Fri [47]
    6: "2026-11-29T10:00:00Z",   # Sun [48]
    7: "2026-11-29T23:00:00Z",   # Sun [48]
    8: "2026-11-30T09:00:00Z",   # Mon [49]
    9: "2026-11-30T11:00:00Z",   # Mon [49]
    10: "2026-11-30T11:30:00Z",  # Mon [49]
    11: "2026-11-30T12:00:00Z",  # Mon [49], the newest
}

CASES = [
    # Time Machine: hourly within 24 h of the newest (since 11-29 12:00: hours 12, 11, 09, 23 ->
    # 11, 10, 8, 7); daily within a month (since 10-30 12:00: days 30, 29, 20, 02 -> 11, 7, 5, 4);
    # every week (49, 48, 47, 45, 42, 40 -> 11, 7, 5, 4, 2, 1); 3 is named.
    ([], {1, 2, 3, 4, 5, 7, 8, 10, 11}),
    (["--named-too"], {1, 2, 4, 5, 7, 8, 10, 11}),
    (["--keep-last", "3"], {3, 9, 10, 11}),
    (["--keep-daily", "3"], {3, 5, 7, 11}),                        # days 30, 29, 20
    (["--keep-within", "1d", "--keep-monthly", "2"], {2, 3, 7, 8, 9, 10, 11}),  # since 11-29 12:00; Nov, Oct
    (["--keep-weekly", "2", "--keep-hourly", "2", "--named-too"], {7, 10, 11}),  # weeks 49, 48; hours 12, 11
]


@pytest.fixture
def dated(bd):
    vol = bd.create(size="4M", block_size="64K")
    for number, time in TIMES.items():
        name = ["--name", "before-upgrade"] if number == 3 else []
        bd.ok("snapshot", "create", vol.url, "--time", time, *name, *vol.store_args)
    return vol


def kept(rows) -> set[int]:
    return {row["number"] for row in rows if row["keep"]}


def test_prune_keeps_exactly_what_the_rules_keep(bd, dated):
    vol = dated
    before = vol.snapshot()
    for options, expected in CASES:
        rows = json.loads(bd.ok("prune", vol.url, "--dry-run", "--json", *options, *vol.store_args).stdout)
        assert kept(rows) == expected, (options, sorted(kept(rows)))
        assert all(row["reasons"] for row in rows if row["keep"]), "a kept snapshot without a reason"
    assert vol.snapshot() == before, "a dry run changed the volume"

    rows = json.loads(bd.ok("prune", vol.url, "--json", *vol.store_args).stdout)
    assert kept(rows) == CASES[0][1]
    listed = json.loads(bd.ok("snapshot", "list", vol.url, "--json", *vol.store_args).stdout)
    assert {s["number"] for s in listed} == CASES[0][1]


def test_bad_keep_options_are_refused_in_one_line(bd, dated):
    vol = dated
    before = vol.snapshot()
    for options in (["--keep-daily", "x"], ["--keep-last", "-5"], ["--keep-within", "3x"]):
        line = assert_cli_error(bd.run("prune", vol.url, *options, *vol.store_args))
        assert "count" in line or "span" in line, line
    assert vol.snapshot() == before


def test_a_mount_takes_scheduled_snapshots_and_prunes_after_each(bd):
    import os
    import time

    from conftest import MiB, pwrite_fsync
    vol = bd.create(size="4M", block_size="64K")
    model = bytearray(vol.size)
    m = bd.mount(vol, extra=["--snapshot-every", "1s", "--keep-last", "2"])
    seen: set[int] = set()
    deadline = time.monotonic() + 60
    while len(seen) < 4 and time.monotonic() < deadline:  # only a guard against a hang
        pwrite_fsync(m.file, model, len(seen) * MiB // 4, os.urandom(4096))
        listed = json.loads(bd.ok("snapshot", "list", str(m.path), "--json").stdout)
        assert len(listed) <= 3, listed  # two kept, and one just taken before its prune
        assert all(s["type"] == "scheduled" for s in listed)
        seen |= {s["number"] for s in listed}
        time.sleep(0.5)
    assert len(seen) >= 4, "no scheduled snapshots were taken"
    line = assert_cli_error(bd.run("mount", vol.url, str(m.path) + "-x", "--keep-daily", "3", *vol.store_args))
    assert "--snapshot-every" in line
    bd.unmount(m)
    listed = json.loads(bd.ok("snapshot", "list", vol.url, "--json", *vol.store_args).stdout)
    assert 1 <= len(listed) <= 2
