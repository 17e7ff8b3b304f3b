#!/usr/bin/env python3
"""Sequential write and cold read of a 256 MiB file on the file:// store.

    .venv/bin/python bench/seq_file.py [--size 256] [--runs 3] [--dir /var/tmp/bd-bench] [--fuse mfusepy]

W: dd of random data into the mounted `file` with conv=fsync, then
`bucketdisk unmount`; the clock stops when both have returned (durable).
R: remount, drop the kernel page cache, dd the file to /dev/null.
Prints the median MiB/s of each over the runs.  --fuse picks the mount's
FUSE adapter (FUSE_LIBRARY_NAME=fuse in the environment: mfusepy on libfuse 2).
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

CLI = str(Path(sys.executable).parent / "bucketdisk")


def sh(*args: str) -> None:
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def drop_caches() -> None:
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def one_run(work: Path, source: Path, size_mib: int, fuse: list[str]) -> tuple[float, float]:
    volume, mnt = f"file://{work}/volume", work / "mnt"
    shutil.rmtree(work, ignore_errors=True)
    mnt.mkdir(parents=True)
    sh(CLI, "create", volume, "--size", f"{size_mib * 2}M")
    sh(CLI, "mount", volume, str(mnt), *fuse)
    start = time.monotonic()
    sh("dd", f"if={source}", f"of={mnt}/file", "bs=1M", "conv=fsync,notrunc", "status=none")
    sh(CLI, "unmount", str(mnt))
    write = size_mib / (time.monotonic() - start)
    sh(CLI, "mount", volume, str(mnt), *fuse)
    drop_caches()
    start = time.monotonic()
    sh("dd", f"if={mnt}/file", "of=/dev/null", "bs=1M", f"count={size_mib}", "status=none")
    read = size_mib / (time.monotonic() - start)
    sh(CLI, "unmount", str(mnt))
    return write, read


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="MiB to write (default 256)")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", default="/var/tmp/bd-bench")
    parser.add_argument("--fuse", choices=("lowlevel", "mfusepy"), help="the FUSE adapter (default: the mount's)")
    args = parser.parse_args()
    work = Path(args.dir)
    source = Path(f"{work}-source")
    source.write_bytes(os.urandom(args.size << 20))
    fuse = ["--fuse", args.fuse] if args.fuse else []
    results = [one_run(work, source, args.size, fuse) for _ in range(args.runs)]
    source.unlink()
    shutil.rmtree(work, ignore_errors=True)
    writes, reads = zip(*results)
    print(f"file:// store, {args.size} MiB, median of {args.runs} runs, --fuse {args.fuse or 'default'}")
    print(f"  durable sequential write: {statistics.median(writes):7.1f} MiB/s  (runs: "
          + ", ".join(f"{w:.1f}" for w in writes) + ")")
    print(f"  cold sequential read:     {statistics.median(reads):7.1f} MiB/s  (runs: "
          + ", ".join(f"{r:.1f}" for r in reads) + ")")


if __name__ == "__main__":
    main()
