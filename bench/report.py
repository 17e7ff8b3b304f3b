"""The results of bench/run.py: every run's values (Results), the rows of
the table (ROWS), the JSON document with the host, versions and settings,
and the printed table of medians and ratios."""
from __future__ import annotations

import datetime as dt
import hashlib
import importlib.util
import os
import platform
import shlex
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from config import (BUCKETDISK, DISK_SIZE, HISTORY, RAW_THREADS, REPO, S3BACKER_FUSE_OPTS,
                    S3BACKER_TUNING)
from shell import sh

if TYPE_CHECKING:
    from harness import Harness

# (key, label, unit, better, workload, raw key shown in the raw column)
ROWS = [
    ("W1_write_MiBps", "W1 durable seq write {seq} MiB", "MiB/s", "higher", "W1", "raw_put_MiBps"),
    ("W2_read_MiBps", "W2 cold seq read {seq} MiB", "MiB/s", "higher", "W2", "raw_get_MiBps"),
    ("W3_seconds", "W3 mkfs+cp tree+durable unmount", "s", "lower", "W3", None),
    ("W4_seconds", "W4 cold tar of the tree", "s", "lower", "W4", None),
    ("W5_warm_iops", "W5 4K rand read, warm, 4 jobs", "IOPS", "higher", "W5", None),
    ("W5_cold_iops", "W5 4K rand read, cold, 4 jobs", "IOPS", "higher", "W5", None),
    ("W6_iops", "W6 4K rand write, fsync/64 (fio)", "IOPS", "higher", "W6", None),
    ("W6_durable_iops", "W6 same, until durable unmount", "IOPS", "higher", "W6", None),
    ("W1t_write_MiBps", "W1 text-like data (zstd ~3:1)", "MiB/s", "higher", "W1t", "raw_put_MiBps"),
    ("W2t_read_MiBps", "W2 text-like data (zstd ~3:1)", "MiB/s", "higher", "W2t", "raw_get_MiBps"),
    ("W1e_write_MiBps", "W1 encrypted volume", "MiB/s", "higher", "W1e", "raw_put_MiBps"),
    ("W2e_read_MiBps", "W2 encrypted volume", "MiB/s", "higher", "W2e", "raw_get_MiBps"),
    ("W1n_write_MiBps", "W1 with --compress none", "MiB/s", "higher", "W1n", "raw_put_MiBps"),
    ("W1c_write_MiBps", "W1 with --cache-dir", "MiB/s", "higher", "W1c", "raw_put_MiBps"),
    ("W2c_read_MiBps", "W2 from a warm --cache-dir", "MiB/s", "higher", "W2c", "raw_get_MiBps"),
    ("W6c_iops", "W6 with --cache-dir (fio)", "IOPS", "higher", "W6c", None),
    ("W6c_durable_iops", "W6 same, until durable unmount", "IOPS", "higher", "W6c", None),
    ("W1m_write_MiBps", "W1 through --fuse mfusepy", "MiB/s", "higher", "W1m", "raw_put_MiBps"),
    ("W2m_read_MiBps", "W2 through --fuse mfusepy", "MiB/s", "higher", "W2m", "raw_get_MiBps"),
    ("W5m_warm_iops", "W5 warm through --fuse mfusepy", "IOPS", "higher", "W5m", None),
    ("peak_rss_MiB", "peak RSS of the mount daemon", "MiB", "lower", None, None),
    ("H1_1pct_s", "H1 snapshot, 1% of {gib} GiB changed", "s", "lower", "H1", None),
    ("H1_1pct_KiB", "H1 same, bytes written", "KiB", "lower", "H1", None),
    ("H1_10pct_s", "H1 snapshot, 10% of {gib} GiB changed", "s", "lower", "H1", None),
    ("H1_10pct_KiB", "H1 same, bytes written", "KiB", "lower", "H1", None),
    ("H2_stored_ratio", "H2 stored/live, {hours} hourly snaps", "x", "lower", "H2", None),
]


@dataclass
class Results:
    """Every run's value of each figure, by system; and what failed."""

    values: dict = field(default_factory=dict)   # system -> key -> [per-run values]
    extra: dict = field(default_factory=dict)    # system -> key -> [per-run values]
    failures: list = field(default_factory=list)

    def add(self, system: str, key: str, value: float, extra: bool = False) -> None:
        (self.extra if extra else self.values).setdefault(system, {}).setdefault(key, []).append(value)

    def median(self, system: str, key: str) -> float | None:
        v = self.values.get(system, {}).get(key)
        return statistics.median(v) if v else None


def report(h: "Harness") -> dict:
    """The JSON document of a finished run: host, server, settings, versions,
    the rows (medians, every run's value, ratios), extras and failures."""
    cfg, res = h.cfg, h.results
    systems = h.args.systems
    rows = []
    for key, label, unit, better, workload, raw_key in ROWS:
        if workload is not None and workload not in h.args.only:
            continue
        if key == "peak_rss_MiB" and not (h.needs_seq() or h.needs_tree()):
            continue  # no mount daemon ran
        bd, sb = res.median("bucketdisk", key), res.median("s3backer", key)
        raw = res.median("raw", raw_key) if raw_key else None
        label = label.format(seq=cfg.seq_mib, gib=cfg.history_size >> 30,
                             hours=cfg.history_hours)
        row = {"key": key, "workload": label, "unit": unit,
               "better": better, "bucketdisk": bd, "s3backer": sb,
               "raw": raw, "raw_key": raw_key,
               "runs": {s: res.values.get(s, {}).get(key, []) for s in ("bucketdisk", "s3backer")}}
        if raw_key:
            row["runs"]["raw"] = res.values.get("raw", {}).get(raw_key, [])
        # advantage: > 1 means bucketdisk is better, whatever the unit
        row["bd_vs_s3backer"] = (None if not bd or not sb else
                                 bd / sb if better == "higher" else sb / bd)
        row["bd_vs_raw"] = bd / raw if bd and raw else None
        rows.append(row)
    return {
        "command": shlex.join([sys.executable] + sys.argv),
        "date": dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        "host": {"cpus": os.cpu_count(), "kernel": platform.release(),
                 "loadavg_start": h.loadavg_start, "loadavg_end": os.getloadavg(),
                 "mem_GiB": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
                                  / (1 << 30), 1)},
        "server": h.args.endpoint or f"local SeaweedFS ({server_version()})",
        "config": cfg.__dict__ | {"disk_size": DISK_SIZE, "systems": systems,
                                  "workloads": sorted(h.args.only),
                                  "s3backer_options": S3BACKER_TUNING + S3BACKER_FUSE_OPTS,
                                  "raw_threads": RAW_THREADS, "link_rate": h.args.link_rate},
        "versions": versions(),
        "bucketdisk_install": h.bucketdisk_start | {
            "run_from_snapshot": str(h.work / "pkg"),
            "venv_changed_during_run": bucketdisk_fingerprint().get("installed_sha256")
            != h.bucketdisk_start.get("installed_sha256")},
        "tree": h.tree_info,
        "rows": rows,
        "extra": res.extra,
        "failures": res.failures,
    }


# (what, numerator row, denominator row or raw, bound, the bound's sense) of issue 15's targets
CODEC_CHECKS = (
    ("W1 text-like over raw PUT", "W1t_write_MiBps", "raw", 1.5, ">="),
    ("W1 encrypted over W1 plain", "W1e_write_MiBps", "W1_write_MiBps", 0.85, ">="),
    ("W2 encrypted over W2 plain", "W2e_read_MiBps", "W2_read_MiBps", 0.85, ">="),
    ("W1 zstd on incompressible over --compress none", "W1_write_MiBps", "W1n_write_MiBps", 0.90, ">="),
)


def codec_checks(rows: list[dict]) -> list[str]:
    """One line per codec target whose rows this run measured: the ratio and the bound."""
    by_key = {r["key"]: r for r in rows}
    lines = []
    for what, top, bottom, bound, sense in CODEC_CHECKS:
        if top not in by_key:
            continue
        a = by_key[top]["bucketdisk"]
        b = by_key[top]["raw"] if bottom == "raw" else (by_key.get(bottom) or {}).get("bucketdisk")
        if a and b:
            verdict = "met" if a / b >= bound else "NOT met"
            lines.append(f"{what}: {a / b:.2f}x (target {sense} {bound:.2f}x: {verdict})")
    return lines


def bucketdisk_fingerprint() -> dict:
    """What bucketdisk the venv holds: the checkout's commit and a digest of the
    installed package's files, to tell if it was reinstalled during a run."""
    info: dict = {}
    spec = importlib.util.find_spec("bucketdisk")
    if spec is not None and spec.origin:
        pkg = Path(spec.origin).parent
        h = hashlib.sha256()
        for f in sorted(pkg.rglob("*")):
            if f.is_file() and "__pycache__" not in f.parts:
                h.update(str(f.relative_to(pkg)).encode() + b"\0" + f.read_bytes())
        info["installed_at"] = str(pkg)
        info["installed_sha256"] = h.hexdigest()[:16]
    try:
        git = ["git", "-C", str(REPO)]
        info["checkout_commit"] = subprocess.run(git + ["rev-parse", "--short", "HEAD"],
                                                 capture_output=True, text=True).stdout.strip()
        info["checkout_dirty"] = bool(subprocess.run(
            git + ["status", "--porcelain", "--untracked-files=no", "--", "engine", "cli"],
            capture_output=True, text=True).stdout.strip())
    except OSError:
        pass
    return info


def server_version() -> str:
    try:
        from seaweedfs import find_weed
        return sh(find_weed(), "version", timeout=30).strip().splitlines()[0]
    except Exception:
        return "weed"


def versions() -> dict:
    v = {}
    for name, cmd in (("bucketdisk", [BUCKETDISK, "--version"]), ("fio", ["fio", "--version"])):
        try:
            v[name] = sh(*cmd, timeout=30).strip()
        except Exception:
            pass
    try:
        v["s3backer"] = subprocess.run(["s3backer", "--version"], capture_output=True,
                                       text=True).stderr.splitlines()[0].strip()
    except Exception:
        pass
    return v


def fmt(v: float | None, unit: str) -> str:
    if v is None:
        return "-"
    if unit in ("s", "x"):
        return f"{v:.2f}"
    return f"{v:.0f}" if v >= 100 else f"{v:.1f}"


def ratio(v: float | None) -> str:
    if not v:
        return "-"
    return f"{v:.2f}x" if v >= 0.1 else f"{v:.2g}x"


def print_table(doc: dict) -> None:
    rows = doc["rows"]
    runs = doc["config"]["runs"]
    header = ["workload", "unit", "bucketdisk", "s3backer", "raw", "bd vs s3backer", "bd vs raw"]
    table = [header]
    failed = {(f["system"], f["workload"].split()[0]) for f in doc["failures"]}
    for r in rows:
        wl = r["key"].split("_")[0]
        cells = []
        for s in ("bucketdisk", "s3backer"):
            v = r[s]
            cells.append("FAIL" if v is None and (s, wl) in failed else fmt(v, r["unit"]))
        raw = fmt(r["raw"], r["unit"])
        if r["raw_key"] and r["raw"] is not None:
            raw += " (PUT)" if "put" in r["raw_key"] else " (GET)"
        table.append([r["workload"], r["unit"], *cells, raw,
                      ratio(r["bd_vs_s3backer"]), ratio(r["bd_vs_raw"])])
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    link = doc["config"].get("link_rate")
    print(f"\nbucketdisk vs s3backer vs raw server: {doc['server']}"
          f"{f', loopback capped at {link}' if link else ''}; median of {runs} run{'s' if runs != 1 else ''}")
    for i, row in enumerate(table):
        print("  ".join(c.ljust(widths[j]) if j == 0 else c.rjust(widths[j])
                        for j, c in enumerate(row)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    print("bd vs s3backer: > 1 means bucketdisk is better (faster, more IOPS, less memory); "
          "bd vs raw: bucketdisk MiB/s over the raw PUT/GET MiB/s.")
    if any(r["key"].startswith("W6") for r in rows) and "s3backer" in doc["config"]["systems"]:
        print("s3backer's fsync does not flush: its W6 fio IOPS are not durable; its durable "
              "points are the unmounts (fusermount -u returned and the process exited).")
    if any(r["key"].startswith(HISTORY) for r in rows):
        print("H1/H2: bucketdisk only (s3backer has no snapshots), through the engine on the "
              "same server; H2: 1% of the volume changed before each snapshot, all objects "
              "stored over the live data (target: at most 1.30x).")
    for line in codec_checks(rows):
        print(line)
    bi = doc["bucketdisk_install"]
    print(f"bucketdisk: {doc['versions'].get('bucketdisk', '?')}, installed package "
          f"{bi.get('installed_sha256', '?')}, checkout {bi.get('checkout_commit', '?')}"
          f"{' (engine/cli modified)' if bi.get('checkout_dirty') else ''}")
    if bi.get("venv_changed_during_run"):
        print("note: bucketdisk was reinstalled in the venv during this run; the run used "
              "a copy of the package taken at its start.")
    for f in doc["failures"]:
        print(f"\nFAILED: {f['system']} {f['workload']} (run {f['run']}; {f['note']}): "
              f"{f['error']}")
        if f["log_tail"]:
            print("  log tail:\n    " + f["log_tail"].replace("\n", "\n    "))
