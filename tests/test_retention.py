"""Retention rules (engine/volume/retention.py) against sets of snapshot
times whose expected survivors were worked out by hand.  2026-11-29 is a
Sunday: ISO week 48 runs Mon 23 to Sun 29 November."""
from __future__ import annotations

from datetime import datetime, timezone

import pytest

from bucketdisk.volume.retention import TIME_MACHINE, UNLIMITED, Policy, Snapshot, Span, decide


def at(text: str, named: bool = False) -> Snapshot:
    t = datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc)
    return Snapshot(text, t, named)


def kept(snapshots, policy, **kw) -> set[str]:
    return {d.snapshot.name for d in decide(snapshots, policy, **kw) if d.keep}


HOURS = [at("2026-11-29 10:00"), at("2026-11-29 08:00"), at("2026-11-28 23:00"), at("2026-11-28 01:00"),
         at("2026-11-27 12:00"), at("2026-11-22 23:00"), at("2026-11-14 09:00")]


def test_keep_last():
    assert kept(HOURS, Policy(last=3)) == {"2026-11-29 10:00", "2026-11-29 08:00", "2026-11-28 23:00"}


def test_keep_daily_takes_the_newest_of_each_day():
    assert kept(HOURS, Policy(counts={"daily": 2})) == {"2026-11-29 10:00", "2026-11-28 23:00"}


def test_keep_weekly_follows_iso_weeks():
    assert kept(HOURS, Policy(counts={"weekly": 2})) == {"2026-11-29 10:00", "2026-11-22 23:00"}
    assert kept(HOURS, Policy(counts={"weekly": UNLIMITED})) == {
        "2026-11-29 10:00", "2026-11-22 23:00", "2026-11-14 09:00"}


def test_keep_within_counts_back_from_the_newest_snapshot():
    # since 2026-11-27 10:00
    assert kept(HOURS, Policy(within=Span.parse("2d"))) == {
        "2026-11-29 10:00", "2026-11-29 08:00", "2026-11-28 23:00", "2026-11-28 01:00", "2026-11-27 12:00"}
    assert kept(HOURS, Policy(within=Span.parse("1d"))) == {
        "2026-11-29 10:00", "2026-11-29 08:00", "2026-11-28 23:00"}


def test_rules_add_up():
    policy = Policy(last=1, counts={"daily": 1, "weekly": 3})
    assert kept(HOURS, policy) == {"2026-11-29 10:00", "2026-11-22 23:00", "2026-11-14 09:00"}


SEASON = [
    at("2026-11-29 10:00"), at("2026-11-29 09:00"), at("2026-11-28 11:00"), at("2026-11-28 10:00"),
    at("2026-11-28 09:30"),                          # before the 24 h; Nov 28's newest is 11:00
    at("2026-11-10 20:00"), at("2026-11-10 08:00"),  # within the month: the day's newest stays
    at("2026-10-22 12:00"), at("2026-10-20 12:00"),  # beyond the month, one ISO week (43)
    at("2026-10-21 07:00", named=True),              # the user named it
    at("2026-09-01 12:00"),                          # alone in its week
]


def test_time_machine_rule():
    assert kept(SEASON, TIME_MACHINE) == {
        "2026-11-29 10:00", "2026-11-29 09:00", "2026-11-28 11:00", "2026-11-28 10:00",
        "2026-11-10 20:00", "2026-10-22 12:00", "2026-10-21 07:00", "2026-09-01 12:00"}
    assert "2026-10-21 07:00" not in kept(SEASON, TIME_MACHINE, named_too=True)


def test_every_kept_snapshot_says_why():
    by_name = {d.snapshot.name: d for d in decide(SEASON, TIME_MACHINE)}
    assert by_name["2026-11-29 10:00"].reasons[0] == "newest"
    assert "hourly within 24h" in by_name["2026-11-28 10:00"].reasons
    assert "daily within 1m" in by_name["2026-11-10 20:00"].reasons
    assert by_name["2026-10-21 07:00"].reasons == ["named"]
    assert not by_name["2026-11-28 09:30"].keep and not by_name["2026-11-28 09:30"].reasons


def test_no_rule_keeps_everything():
    assert kept(HOURS, Policy()) == {s.name for s in HOURS}


@pytest.mark.parametrize("text, start, expected", [
    ("1m", "2026-03-31 12:00", "2026-02-28 12:00"),
    ("1y", "2028-02-29 00:00", "2027-02-28 00:00"),
    ("2w3d", "2026-11-29 10:00", "2026-11-12 10:00"),
    ("1m24h", "2026-01-15 06:00", "2025-12-14 06:00"),
])
def test_spans_step_by_calendar(text, start, expected):
    assert Span.parse(text).before(at(start).time) == at(expected).time


@pytest.mark.parametrize("text", ["", "5", "h", "1x", "1d 2h", "-1d"])
def test_bad_spans_are_refused(text):
    with pytest.raises(ValueError):
        Span.parse(text)
