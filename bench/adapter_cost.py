"""What the portable FUSE adapter costs (`mount --fuse mfusepy`: libfuse's
path API through ctypes, engine/fs/mfusepy_adapter.py), bucketdisk only, on
a fresh volume of the same server, beside W1, W2 and W5 of the seq group
(which run through the default adapter, the libfuse 3 low-level binding):

  W1m  W1 (256 MiB of random data, dd conv=fsync, unmount) through mfusepy
  W2m  W2: remount, page cache dropped, a cold sequential read of it
  W5m  W5 warm: 4 jobs of 4 KiB O_DIRECT random reads right after W2m read
       everything (every read reaches the daemon: mfusepy's Python callback
       where the low-level binding answers from its block table without the GIL)
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING

from shell import Interrupted, read_through, say, sh
from systems import RssMonitor
from workloads import fio_randread_warm, timed_cold_read

if TYPE_CHECKING:
    from harness import Harness

ADAPTER_WORKLOADS = ("W1m", "W2m", "W5m")


def adapter_group(h: "Harness", run: int) -> None:
    """W1m, W2m and W5m, those the --only option selects, on one volume
    (W2m and W5m still do W1m's write as setup)."""
    wanted = [w for w in ADAPTER_WORKLOADS if w in h.args.only]
    if not wanted:
        return
    cfg, res = h.cfg, h.results
    place = h.target.place(f"r{run}-bd-mfusepy")
    rss = RssMonitor()
    disk = h.open_disk("bucketdisk", place, rss, "mfusepy")
    step = "W1m"
    try:
        disk.mount_flags = ["--fuse", "mfusepy"]
        disk.create()
        disk.mount()
        read_through(h.src)
        t = time.monotonic()
        sh("dd", f"if={h.src}", f"of={disk.file}", "bs=1M", "conv=fsync,notrunc", "status=none")
        disk.unmount()
        secs = time.monotonic() - t
        if "W1m" in wanted:
            res.add("bucketdisk", "W1m_write_MiBps", cfg.seq_mib / secs)
        say(f"bucketdisk W1m: {cfg.seq_mib / secs:.1f} MiB/s durable (through mfusepy)")
        if "W2m" in wanted or "W5m" in wanted:
            step = "W2m"
            disk.mount()
            secs = timed_cold_read(disk, h.src, cfg.seq_mib)
            if "W2m" in wanted:
                res.add("bucketdisk", "W2m_read_MiBps", cfg.seq_mib / secs)
            say(f"bucketdisk W2m: {cfg.seq_mib / secs:.1f} MiB/s (data verified, through mfusepy)")
            if "W5m" in wanted:
                step = "W5m"
                iops = fio_randread_warm(h, disk)
                res.add("bucketdisk", "W5m_warm_iops", iops)
                say(f"bucketdisk W5m warm: {iops:.0f} IOPS (through mfusepy)")
            disk.unmount()
    except Interrupted:
        raise
    except Exception as e:
        h.fail("bucketdisk", run, step, e, disk)
    finally:
        if rss.peak_kib:
            res.add("bucketdisk", "mfusepy_peak_rss_MiB", rss.peak_kib / 1024, extra=True)
        rss.close()
        h.finish(disk, place)
