"""The workloads of bench/run.py, run by the Harness on one system and run:
raw (PUT and GET straight to the server), the sequential group on one
volume (W1 write, W2 read, W5 warm and cold random reads, W6 random writes)
and the tree group on a second one (W3 mkfs and copy, W4 tar), with fio's
helpers, and what snapshots cost (H1, H2: bucketdisk only, no mount).
Each group reports its figures to h.results, and a failure to h.fail,
then goes on with the next group."""
from __future__ import annotations

import json
import os
import random
import shlex
import statistics
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING

import snapshot_cost
from config import CMD_TIMEOUT, MIB, RAW_THREADS
from shell import BenchError, Interrupted, drop_caches, read_through, say, sh, warm_tree
from systems import Disk, RssMonitor

if TYPE_CHECKING:
    from harness import Harness


def seq_group(h: "Harness", system: str, run: int, rss: RssMonitor) -> None:
    """W1, W2, W5 warm, W5 cold, W6 on one volume."""
    only, cfg, res = h.args.only, h.cfg, h.results
    place = h.target.place(f"r{run}-{system[:3]}-seq")
    disk = h.open_disk(system, place, rss, f"{system}-seq")
    step = "W1"
    try:
        disk.create()
        disk.mount()
        read_through(h.src)
        say(f"{system} W1: write {cfg.seq_mib} MiB, fsync, unmount")
        t = time.monotonic()
        sh("dd", f"if={h.src}", f"of={disk.file}", "bs=1M", "conv=fsync,notrunc",
           "status=none")
        t_fsync = time.monotonic() - t
        disk.unmount()
        secs = time.monotonic() - t
        if "W1" in only:
            res.add(system, "W1_write_MiBps", cfg.seq_mib / secs)
            res.add(system, "W1_fsync_returned_s", t_fsync, extra=True)
            res.add(system, "W1_durable_s", secs, extra=True)
        say(f"{system} W1: {cfg.seq_mib / secs:.1f} MiB/s "
            f"(fsync returned at {t_fsync:.2f}s, durable at {secs:.2f}s)")

        if {"W2", "W5", "W6"} & only:
            step = "W2"
            disk.mount()
        if {"W2", "W5"} & only:
            secs = timed_cold_read(disk, h.src, cfg.seq_mib)
            if "W2" in only:
                res.add(system, "W2_read_MiBps", cfg.seq_mib / secs)
            say(f"{system} W2: {cfg.seq_mib / secs:.1f} MiB/s (data verified)")

        if "W5" in only:
            step = "W5 warm"
            iops = fio_randread_warm(h, disk)
            res.add(system, "W5_warm_iops", iops)
            say(f"{system} W5 warm: {iops:.0f} IOPS")
            step = "W5 cold"
            disk.unmount()
            disk.mount()
            drop_caches()
            iops = fio_randread_cold(h, disk)
            res.add(system, "W5_cold_iops", iops)
            say(f"{system} W5 cold: {iops:.0f} IOPS")

        if "W6" in only:
            step = "W6"
            t = time.monotonic()
            fio = run_fio(disk, "randwrite", "--numjobs=4", "--fsync=64",
                          f"--size={cfg.seq_mib}M", "--time_based",
                          f"--runtime={cfg.fio_seconds}")
            t_fio = time.monotonic() - t
            ios = fio["write"]["total_ios"]
            disk.unmount()
            secs = time.monotonic() - t
            res.add(system, "W6_iops", fio["write"]["iops"])
            res.add(system, "W6_durable_iops", ios / secs)
            res.add(system, "W6_writes", ios, extra=True)
            res.add(system, "W6_unmount_s", secs - t_fio, extra=True)
            say(f"{system} W6: {fio['write']['iops']:.0f} IOPS by fio, {ios / secs:.0f} "
                f"until durable ({ios} writes, unmount took {secs - t_fio:.1f}s)")
        elif disk.pid is not None:
            disk.unmount()
        res.add(system, "mount_s", statistics.median(disk.mount_seconds), extra=True)
    except Interrupted:
        raise
    except Exception as e:  # report, clean up, go on with the next group
        h.fail(system, run, step, e, disk)
    finally:
        h.finish(disk, place)


def tree_group(h: "Harness", system: str, run: int, rss: RssMonitor) -> None:
    """W3 and W4 on a second volume."""
    only, res = h.args.only, h.results
    place = h.target.place(f"r{run}-{system[:3]}-tree")
    disk = h.open_disk(system, place, rss, f"{system}-tree")
    h.loop_mnt.mkdir(exist_ok=True)
    step = "W3"
    try:
        disk.create()
        disk.mount()
        warm_tree(h.tree)
        say(f"{system} W3: mkfs.ext4, loop mount, cp -a tree, umount, unmount")
        t = time.monotonic()
        sh("mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0",
           disk.file)
        sh("mount", "-o", "loop", disk.file, h.loop_mnt)
        sh("cp", "-a", f"{h.tree}/.", f"{h.loop_mnt}/")
        sh("umount", h.loop_mnt)
        disk.unmount()
        secs = time.monotonic() - t
        if "W3" in only:
            res.add(system, "W3_seconds", secs)
        say(f"{system} W3: {secs:.1f}s ({h.tree_info['bytes'] / 1e6 / secs:.1f} MB/s)")

        if "W4" in only:
            step = "W4"
            disk.mount()
            drop_caches()
            t = time.monotonic()
            sh("mount", "-o", "loop,ro", disk.file, h.loop_mnt)
            with tempfile.TemporaryFile() as errf:
                tar = subprocess.Popen(["tar", "-C", str(h.loop_mnt), "-cf", "-", "."],
                                       stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=errf)
                nbytes = 0
                with tar.stdout:
                    while chunk := tar.stdout.read(MIB):
                        nbytes += len(chunk)
                if tar.wait() != 0:
                    errf.seek(0)
                    raise BenchError(f"tar exited {tar.returncode}: "
                                     f"{errf.read()[-1000:].decode(errors='replace')}")
            secs = time.monotonic() - t
            if nbytes < h.tree_info["bytes"]:
                raise BenchError(f"tar gave {nbytes} bytes, the tree has "
                                 f"{h.tree_info['bytes']}")
            sh("diff", "-r", "-q", "--no-dereference", "--exclude=lost+found", h.tree,
               h.loop_mnt)
            res.add(system, "W4_seconds", secs)
            say(f"{system} W4: {secs:.1f}s ({nbytes / 1e6 / secs:.1f} MB/s of tar; "
                f"tree verified)")
            sh("umount", h.loop_mnt)
            disk.unmount()
    except Interrupted:
        raise
    except Exception as e:
        h.fail(system, run, step, e, disk)
    finally:
        h.finish(disk, place)


def timed_cold_read(disk: Disk, src: Path, mib: int) -> float:
    """Seconds to read the first `mib` MiB of the disk with the page cache
    dropped; then (untimed) checks they are `src`'s."""
    drop_caches()
    t = time.monotonic()
    sh("dd", f"if={disk.file}", "of=/dev/null", "bs=1M", f"count={mib}", "status=none")
    secs = time.monotonic() - t
    sh("cmp", "-n", mib * MIB, src, disk.file)  # data came back right
    return secs


def run_fio(disk: Disk, rw: str, *extra: str, jobfile: Path | None = None) -> dict:
    """fio's JSON report of its one job: 4 KiB psync I/O on the disk's file
    (or the given job file); raises BenchError if fio reports an error."""
    base = ["fio", "--output-format=json"]
    if jobfile is not None:
        args = base + [str(jobfile)]
    else:
        args = base + ["--name=bench", f"--filename={disk.file}", f"--rw={rw}", "--bs=4k",
                       "--ioengine=psync", "--group_reporting", "--randrepeat=1",
                       *extra]
    out = sh(*args, timeout=CMD_TIMEOUT)
    doc = json.loads(out[out.index("{"):])
    job = doc["jobs"][0]
    if job.get("error"):
        raise BenchError(f"fio error {job['error']}: {shlex.join(args)}")
    return job


def fio_randread_warm(h: "Harness", disk: Disk) -> float:
    """IOPS of 4 jobs of 4 KiB O_DIRECT random reads over the written region."""
    job = run_fio(disk, "randread", "--numjobs=4", "--direct=1",
                  f"--size={h.cfg.seq_mib}M", "--time_based",
                  f"--runtime={h.cfg.fio_seconds}")
    return job["read"]["iops"]


def fio_randread_cold(h: "Harness", disk: Disk) -> float:
    """4 jobs, each a quarter of the region: one 4 KiB read in each 1 MiB block,
    blocks in a seeded random order (an iolog: fio's own random offsets
    repeat blocks once reads are block-aligned)."""
    rng = random.Random(h.cfg.seed)
    blocks = list(range(h.cfg.seq_mib))
    rng.shuffle(blocks)
    jobfile = h.work / "cold.fio"
    lines = ["[global]", "ioengine=psync", "direct=1", "replay_no_stall=1",
             "group_reporting=1"]
    for j in range(4):
        log = h.work / f"cold-{j}.iolog"
        with open(log, "w") as f:
            f.write(f"fio version 2 iolog\n{disk.file} add\n{disk.file} open\n")
            for b in blocks[j::4]:
                f.write(f"{disk.file} read {b * MIB + rng.randrange(MIB // 4096) * 4096} 4096\n")
            f.write(f"{disk.file} close\n")
        lines += [f"[cold{j}]", f"read_iolog={log}"]
    jobfile.write_text("\n".join(lines) + "\n")
    job = run_fio(disk, "randread", jobfile=jobfile)
    ios, ms = job["read"]["total_ios"], job["read"]["runtime"]
    if ios != h.cfg.seq_mib:
        raise BenchError(f"cold fio did {ios} reads, expected {h.cfg.seq_mib}")
    return ios / (max(ms, 1) / 1000)


def raw(h: "Harness", run: int) -> None:
    """PUT then GET 1 MiB objects with RAW_THREADS threads, straight to the server (MiB/s)."""
    cfg = h.cfg
    place = h.target.place(f"r{run}-raw")
    try:
        keys = [f"{place.prefix}/obj-{i:06d}" for i in range(cfg.raw_objects)]
        bodies = [os.urandom(MIB) for _ in range(RAW_THREADS)]

        def worker(t: int, method: str, todo: list[str], errors: list) -> None:
            """requests and requests-aws4auth, nothing else: one connection,
            each body signed (SHA-256) and sent or read in one piece."""
            client = h.s3.lean_client()
            try:
                for key in todo:
                    status, body = client.send(method, place.bucket, key,
                                               bodies[t] if method == "PUT" else None)
                    if status != 200 or (method == "GET" and len(body) != MIB):
                        errors.append(f"{method} {key}: HTTP {status} {body[:200]!r}")
                        return
            except Exception as e:
                errors.append(f"{method}: {e}")
            finally:
                client.close()

        def phase(method: str, todo: list[str]) -> float:
            errors: list[str] = []
            threads = [threading.Thread(target=worker, args=(t, method, todo[t::RAW_THREADS],
                                                             errors))
                       for t in range(RAW_THREADS)]
            t0 = time.monotonic()
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            secs = time.monotonic() - t0
            if errors:
                raise BenchError(errors[0])
            return len(todo) / secs  # MiB/s: objects are 1 MiB

        put = phase("PUT", keys)
        get = phase("GET", keys * cfg.raw_get_passes)
        h.results.add("raw", "raw_put_MiBps", put)
        h.results.add("raw", "raw_get_MiBps", get)
        say(f"raw: PUT {put:.1f} MiB/s, GET {get:.1f} MiB/s "
            f"({RAW_THREADS} threads, {cfg.raw_objects} x 1 MiB)")
    except Interrupted:
        raise
    except Exception as e:
        h.fail("raw", run, "raw", e, None)
    finally:
        h.release(place)


def snapshot_costs(h: "Harness", run: int) -> None:
    """H1 and H2, for bucketdisk only (s3backer has no snapshots), each on a
    fresh volume on the same server, through the engine in this process
    (snapshot_cost.py, as bench/history_cost.py measures them)."""
    cfg, res, s3 = h.cfg, h.results, h.engine_s3()
    rng = random.Random(cfg.seed)

    def change(url: str) -> None:
        say(f"bucketdisk H1: {cfg.history_size >> 30} GiB volume, snapshots after "
            + " and ".join(f"{s:.0%}" for s in snapshot_cost.CHANGE_SHARES) + " changed")
        for cost in snapshot_cost.cost_follows_change(url, cfg.history_size, s3, rng):
            pct = f"{cost.share * 100:.0f}pct"
            res.add("bucketdisk", f"H1_{pct}_s", cost.seconds)
            res.add("bucketdisk", f"H1_{pct}_KiB", cost.bytes_put / 1024)
            say(f"bucketdisk H1: snapshot after {cost.share:.0%} changed: {cost.seconds:.2f} s, "
                f"{cost.bytes_put / 1024:.0f} KiB written")

    def hourly(url: str) -> None:
        say(f"bucketdisk H2: {cfg.history_live >> 20} MiB of live data, "
            f"{cfg.history_hours} hourly snapshots")
        cost = snapshot_cost.hourly(url, cfg.history_live, cfg.history_hours, s3, rng)
        res.add("bucketdisk", "H2_stored_ratio", cost.ratio)
        res.add("bucketdisk", "H2_stored_MiB", cost.stored / MIB, extra=True)
        say(f"bucketdisk H2: {cost.ratio:.2f}x the live data stored "
            f"({cost.stored / MIB:.0f} MiB, {cost.snapshots} snapshots)")

    for workload, measure in (("H1", change), ("H2", hourly)):
        if workload in h.args.only:
            on_fresh_place(h, run, workload, measure)


def on_fresh_place(h: "Harness", run: int, workload: str, measure) -> None:
    """measure(url) on a new bucket or prefix for bucketdisk's `workload`;
    a failure is reported and the place deleted either way."""
    place = h.target.place(f"r{run}-bd-{workload.lower()}")
    try:
        measure(f"s3://{place.bucket}/{place.prefix}")
    except Interrupted:
        raise
    except Exception as e:
        h.fail("bucketdisk", run, workload, e, None)
    finally:
        h.release(place)
