"""What `mount --cache-dir` costs and gives (issue 16), bucketdisk only, on
a fresh volume of the same server, beside W1, W2 and W6 of the seq group:

  W1c  W1 (256 MiB of random data, dd conv=fsync, unmount) with a cache
       dir: every write also reaches a local dirty file first
  W2c  remount with the same cache dir, page cache dropped: a cold read of
       the memory cache, served from the cache dir's clean files (checked
       against their hashes) instead of the store
  W6c  W6 (fio 4 KiB random writes, fsync every 64, then unmount) with the
       cache dir: each fsync also syncs the cache dir's file system
The cache dir lives under --workdir (its disk is what it costs).
"""
from __future__ import annotations

import shutil
import time
from typing import TYPE_CHECKING

from shell import Interrupted, read_through, say, sh
from systems import RssMonitor
from workloads import run_fio, timed_cold_read

if TYPE_CHECKING:
    from harness import Harness

CACHE_DIR_WORKLOADS = ("W1c", "W2c", "W6c")


def cache_dir_group(h: "Harness", run: int) -> None:
    """W1c, W2c and W6c, those the --only option selects, on one volume."""
    wanted = [w for w in CACHE_DIR_WORKLOADS if w in h.args.only]
    if not wanted:
        return
    cfg, res = h.cfg, h.results
    place = h.target.place(f"r{run}-bd-cachedir")
    rss = RssMonitor()
    disk = h.open_disk("bucketdisk", place, rss, "cachedir")
    cache = h.work / f"cachedir-r{run}"
    step = "W1c"
    try:
        shutil.rmtree(cache, ignore_errors=True)
        disk.mount_flags = ["--cache-dir", str(cache)]
        disk.create()
        disk.mount()
        read_through(h.src)
        t = time.monotonic()
        sh("dd", f"if={h.src}", f"of={disk.file}", "bs=1M", "conv=fsync,notrunc", "status=none")
        disk.unmount()
        secs = time.monotonic() - t
        res.add("bucketdisk", "W1c_write_MiBps", cfg.seq_mib / secs)
        say(f"bucketdisk W1c: {cfg.seq_mib / secs:.1f} MiB/s durable (with --cache-dir)")
        step = "W2c"
        disk.mount()
        secs = timed_cold_read(disk, h.src, cfg.seq_mib)
        res.add("bucketdisk", "W2c_read_MiBps", cfg.seq_mib / secs)
        say(f"bucketdisk W2c: {cfg.seq_mib / secs:.1f} MiB/s from the cache dir (data verified)")
        if "W6c" in wanted:
            step = "W6c"
            t = time.monotonic()
            fio = run_fio(disk, "randwrite", "--numjobs=4", "--fsync=64", f"--size={cfg.seq_mib}M",
                          "--time_based", f"--runtime={cfg.fio_seconds}")
            ios = fio["write"]["total_ios"]
            disk.unmount()
            secs = time.monotonic() - t
            res.add("bucketdisk", "W6c_iops", fio["write"]["iops"])
            res.add("bucketdisk", "W6c_durable_iops", ios / secs)
            say(f"bucketdisk W6c: {fio['write']['iops']:.0f} IOPS by fio, {ios / secs:.0f} until durable")
        else:
            disk.unmount()
    except Interrupted:
        raise
    except Exception as e:
        h.fail("bucketdisk", run, step, e, disk)
    finally:
        rss.close()
        h.finish(disk, place)
        shutil.rmtree(cache, ignore_errors=True)
