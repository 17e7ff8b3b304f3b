"""An hourly backup loop the way Time Machine makes one (issue 14): each
"hour" a changing source tree is copied into a dated folder of the ext4 on
the disk with `rsync -a --link-dest` to the previous folder (Time
Machine's hard-link method), a snapshot is taken with the filesystem
frozen, and history is thinned by the default rule.  An old hour, browsed
under the live mount's `snapshots/`, matches that hour's source file by
file.  On both stores."""
from __future__ import annotations

import hashlib
import os
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

from conftest import run

HOURS = 30
START = datetime(2026, 11, 28, 20, 0, tzinfo=timezone.utc)  # a Saturday evening: days and an ISO week end


def taken_at(hour: int) -> datetime:
    """When the snapshot of `hour` is dated: on the hour plus a few minutes
    that differ, so that no snapshot sits on a retention boundary."""
    return START + timedelta(hours=hour, minutes=(hour * 7) % 60)


def change(source: Path, rng: random.Random, hour: int) -> None:
    """An hour's work: two files rewritten, one added, one removed."""
    names = sorted(p.name for p in source.iterdir())
    for name in rng.sample(names, 2):
        (source / name).write_bytes(rng.randbytes(rng.randint(1, 64) << 10))
    (source / f"new-{hour:02d}").write_bytes(rng.randbytes(rng.randint(1, 64) << 10))
    (source / rng.choice(names)).unlink()


def sums(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_hourly_rsync_link_dest_backups_browsed_under_snapshots(bd, tmp_path):
    vol = bd.create(size="96M", block_size="64K")
    m = bd.mount(vol)
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    ext = bd.loop_mount(m.file, tmp_path / "ext")
    (ext / "backups").mkdir()
    source = tmp_path / "source"
    source.mkdir()
    rng = random.Random(24)
    for i in range(20):
        (source / f"file-{i:02d}").write_bytes(rng.randbytes(rng.randint(1, 64) << 10))

    at_hour: dict[int, dict[str, str]] = {}
    for hour in range(HOURS):
        if hour:
            change(source, rng, hour)
        at_hour[hour] = sums(source)
        folder = ext / "backups" / f"{hour:02d}"
        link_dest = [f"--link-dest={ext / 'backups' / f'{hour - 1:02d}'}"] if hour else []
        run("rsync", "-a", *link_dest, f"{source}/", f"{folder}/", timeout=120, check=True)
        when = taken_at(hour).strftime("%Y-%m-%dT%H:%M:%SZ")
        bd.ok("snapshot", "create", str(m.path), "--freeze", str(ext), "--time", when)

    bd.ok("prune", str(m.path))  # Time Machine's rule
    # By hand: hourly within 24 h of the newest (hour 29, 11-30 01:23) keeps
    # hours 5 (11-29 01:35) to 29; daily keeps each day's newest: 11-28's is
    # hour 3 (23:21), 11-29's hour 27; weekly (ISO weeks end on Sunday 11-29)
    # adds nothing more.  Hours 0, 1, 2 and 4 go.
    kept = [3] + list(range(5, HOURS))
    names = {hour: taken_at(hour).strftime("%Y-%m-%d-%H%M%S") for hour in range(HOURS)}
    shown = sorted(os.listdir(m.path / "snapshots"))
    assert shown == sorted([names[h] for h in kept] + ["Latest"]), shown
    assert os.readlink(m.path / "snapshots" / "Latest") == names[HOURS - 1]

    for hour in (3, 12):
        image = m.path / "snapshots" / names[hour] / "file"
        old = bd.loop_mount(image, tmp_path / f"hour-{hour}", read_only=True)
        backups = old / "backups"
        assert sorted(p.name for p in backups.iterdir()) == [f"{h:02d}" for h in range(hour + 1)]
        for h in (hour - 1, hour):
            assert sums(backups / f"{h:02d}") == at_hour[h], f"hour {h} as kept by the snapshot of hour {hour}"
        unchanged = set(at_hour[hour - 1].items()) & set(at_hour[hour].items())
        assert unchanged and all(
            (backups / f"{hour - 1:02d}" / name).stat().st_ino == (backups / f"{hour:02d}" / name).stat().st_ino
            for name, _ in unchanged), "rsync --link-dest did not hard-link the unchanged files"
        bd.loop_umount(old, image)
    bd.loop_umount(ext, m.file)
    bd.unmount(m)
