"""What bench/run.py measures with: paths, sizes, the systems' settings and
the per-invocation Config (full or --quick)."""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
BUCKETDISK = Path(sys.executable).parent / "bucketdisk"
MIB = 1 << 20
WORKLOADS = ("W1", "W2", "W3", "W4", "W5", "W6", "W1t", "W2t", "W1e", "W2e", "W1n", "W1c", "W2c", "W6c",
             "W1m", "W2m", "W5m", "H1", "H2")
CODEC = ("W1t", "W2t", "W1e", "W2e", "W1n")  # bucketdisk only: codec_cost.py
CACHE_DIR = ("W1c", "W2c", "W6c")  # bucketdisk only: cachedir_cost.py
ADAPTER = ("W1m", "W2m", "W5m")  # bucketdisk only, through --fuse mfusepy: adapter_cost.py
HISTORY = ("H1", "H2")  # bucketdisk only, through the engine: s3backer has no snapshots
SYSTEMS = ("bucketdisk", "s3backer", "raw")
DISK_SIZE = "2G"
S3BACKER_TUNING = ["--blockSize=1M", "--blockCacheSize=300", "--blockCacheThreads=20",
                   "--listBlocks"]
# s3backer links libfuse 2: without big_writes the kernel hands it 4 KiB writes
# (measured here: ~57 MiB/s instead of ~88 for W1). A tuned mount sets it.
S3BACKER_FUSE_OPTS = ["-o", "big_writes"]
RAW_THREADS = 16
TIMEOUT = (10, 120)  # requests (connect, read)
CMD_TIMEOUT = 1800  # seconds for any one command


@dataclass
class Config:
    runs: int = 3
    seq_mib: int = 256
    tree_files: int = 20_000
    tree_bytes: int = 200_000_000
    fio_seconds: int = 10
    raw_objects: int = 512
    raw_get_passes: int = 2
    seed: int = 1
    history_size: int = 20 << 30  # bytes: H1's volume (the issue's 20 GiB)
    history_live: int = 1 << 30   # bytes: H2's volume, all of it live data
    history_hours: int = 24       # H2's hourly snapshots

    @classmethod
    def quick(cls) -> "Config":
        return cls(runs=1, seq_mib=64, tree_files=2_000, tree_bytes=20_000_000,
                   fio_seconds=3, raw_objects=64, raw_get_passes=1,
                   history_size=2 << 30, history_live=256 << 20)
