"""Which snapshots a prune keeps: keep rules over calendar periods.

The rules are restic's `forget` policy (restic docs, "Removing snapshots
according to a policy"), applied to a volume's snapshots:

  last N              the N newest snapshots;
  hourly/daily/weekly/monthly/yearly N
                      for the N newest periods that hold a snapshot, the
                      newest snapshot of each (N = -1: every period);
  within SPAN         every snapshot taken within SPAN before the newest;
  within_hourly/... SPAN
                      the newest snapshot of each period, among those
                      taken within SPAN before the newest snapshot.

Periods follow calendar boundaries in UTC (hour, day, ISO week starting
Monday, month, year) and everything counts back from the newest snapshot,
not from now, so a volume left alone for a year keeps its history.  A
snapshot any rule keeps is kept; the newest is always kept.  Snapshots
whose name the user chose are kept unless `named_too`.

Time Machine's rule (Apple, "Back up your Mac with Time Machine": hourly
backups for the past 24 hours, daily for the past month, weekly for all
previous months) is TIME_MACHINE below.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Callable, Sequence

PERIODS: dict[str, Callable[[datetime], tuple]] = {
    "hourly": lambda t: (t.year, t.month, t.day, t.hour),
    "daily": lambda t: (t.year, t.month, t.day),
    "weekly": lambda t: tuple(t.isocalendar())[:2],
    "monthly": lambda t: (t.year, t.month),
    "yearly": lambda t: (t.year,),
}
UNLIMITED = -1
_SPAN = re.compile(r"(\d+)([ymwdh])")


MAX_SPAN_YEARS = 1000  # longer spans keep everything anyway; calendars end at year 9999


@dataclass(frozen=True)
class Span:
    """A calendar span: years, months, weeks, days, hours (restic's
    duration syntax, e.g. `24h`, `1m`, `2y5m7d3h`)."""
    years: int = 0
    months: int = 0
    days: int = 0
    hours: int = 0

    @classmethod
    def parse(cls, text: str) -> "Span":
        """Raises ValueError with a one-line reason."""
        text = text.strip()
        parts = _SPAN.findall(text)
        if not text or "".join(n + u for n, u in parts) != text:
            raise ValueError(f"{text!r} is not a span like 24h, 7d, 4w, 6m, 1y or 1y6m")
        amounts = dict.fromkeys("ymwdh", 0)
        for number, unit in parts:
            amounts[unit] += int(number)
        span = cls(amounts["y"], amounts["m"], amounts["w"] * 7 + amounts["d"], amounts["h"])
        if span.years + span.months // 12 + span.days // 365 + span.hours // 8760 > MAX_SPAN_YEARS:
            raise ValueError(f"{text!r} is longer than {MAX_SPAN_YEARS} years")
        return span

    def before(self, t: datetime) -> datetime:
        """`t` minus this span; a month back from the 31st lands on the
        last day of the shorter month."""
        months = t.year * 12 + (t.month - 1) - self.years * 12 - self.months
        year, month = divmod(months, 12)
        day = min(t.day, _days_in(year, month + 1))
        return t.replace(year=year, month=month + 1, day=day) - timedelta(days=self.days, hours=self.hours)

    def __str__(self) -> str:
        text = "".join(f"{n}{u}" for n, u in ((self.years, "y"), (self.months, "m"), (self.days, "d"),
                                              (self.hours, "h")) if n)
        return text or "0h"


def _days_in(year: int, month: int) -> int:
    following = datetime(year + month // 12, month % 12 + 1, 1)
    return (following - timedelta(days=1)).day


@dataclass(frozen=True)
class Policy:
    """Keep rules; counts are numbers of periods (UNLIMITED: all)."""
    last: int = 0
    counts: dict[str, int] = field(default_factory=dict)        # period -> N
    within: Span | None = None
    within_periods: dict[str, Span] = field(default_factory=dict)  # period -> span

    def __post_init__(self) -> None:
        for period in list(self.counts) + list(self.within_periods):
            if period not in PERIODS:
                raise ValueError(f"unknown period {period!r}")

    @property
    def empty(self) -> bool:
        return not (self.last or any(self.counts.values()) or self.within or self.within_periods)


TIME_MACHINE = Policy(counts={"weekly": UNLIMITED},
                      within_periods={"hourly": Span(hours=24), "daily": Span(months=1)})


@dataclass(frozen=True)
class Snapshot:
    """What retention needs to know of a snapshot."""
    name: str
    time: datetime  # when it was taken, timezone-aware
    named: bool = False  # the user chose its name


@dataclass
class Decision:
    snapshot: Snapshot
    keep: bool = False
    reasons: list[str] = field(default_factory=list)


def decide(snapshots: Sequence[Snapshot], policy: Policy, *, named_too: bool = False) -> list[Decision]:
    """One Decision per snapshot, newest first, each kept one with why.
    An empty policy keeps everything (a prune must not delete all)."""
    decisions = [Decision(s) for s in sorted(snapshots, key=lambda s: s.time, reverse=True)]
    if not decisions:
        return decisions
    if policy.empty:
        for d in decisions:
            _keep(d, "no keep rule given")
        return decisions
    newest = decisions[0].snapshot.time.astimezone(timezone.utc)
    _keep(decisions[0], "newest")
    for i, d in enumerate(decisions[: policy.last]):
        _keep(d, f"last {i + 1}")
    if policy.within is not None:
        since = policy.within.before(newest)
        for d in decisions:
            if d.snapshot.time >= since:
                _keep(d, f"within {policy.within}")
    for period, count in policy.counts.items():
        _keep_periods(decisions, period, count, None, f"{period}")
    for period, span in policy.within_periods.items():
        _keep_periods(decisions, period, UNLIMITED, span.before(newest), f"{period} within {span}")
    if not named_too:
        for d in decisions:
            if d.snapshot.named:
                _keep(d, "named")
    return decisions


def _keep_periods(decisions: list[Decision], period: str, count: int, since: datetime | None,
                  reason: str) -> None:
    """Keep the newest snapshot of each of the `count` newest periods (of
    those at or after `since`) that hold one."""
    bucket_of = PERIODS[period]
    last_bucket, kept = None, 0
    for d in decisions:
        t = d.snapshot.time.astimezone(timezone.utc)
        if since is not None and t < since:
            break
        bucket = bucket_of(t)
        if bucket == last_bucket:
            continue
        if count != UNLIMITED and kept >= count:
            break
        last_bucket, kept = bucket, kept + 1
        _keep(d, reason if count == UNLIMITED else f"{reason} {kept}")


def _keep(d: Decision, reason: str) -> None:
    d.keep = True
    d.reasons.append(reason)


def policy_of(options: dict) -> Policy:
    """The policy of prune's options: `last`, a count per period (`hourly`
    ... `yearly`), `within` and `within_<period>` spans as text.  No
    option at all: TIME_MACHINE.  Raises ValueError with a one-line reason."""
    options = {k: v for k, v in options.items() if v is not None}
    unknown = set(options) - {"last", "within"} - set(PERIODS) - {f"within_{p}" for p in PERIODS}
    if unknown:
        raise ValueError(f"unknown keep option {sorted(unknown)[0]!r}")
    if not options:
        return TIME_MACHINE
    for name in ["last", *PERIODS]:
        if name in options and (not isinstance(options[name], int) or options[name] < UNLIMITED):
            raise ValueError(f"--keep-{name} takes a count (or -1 for all)")
    within = Span.parse(options["within"]) if "within" in options else None
    return Policy(last=options.get("last", 0), counts={p: options[p] for p in PERIODS if p in options},
                  within=within, within_periods={p: Span.parse(options[f"within_{p}"])
                                                 for p in PERIODS if f"within_{p}" in options})
