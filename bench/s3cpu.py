"""CPU per request of the s3:// store: 1 MiB GETs and PUTs, one thread.

    .venv/bin/python bench/s3cpu.py [--count 300] [--size 1M]

Starts a local SeaweedFS (ci/seaweedfs.py), opens an S3Store on it and
times `count` PUTs, then `count` GETs into a sink (get_into, as the block
device reads), of random objects: this process's CPU time (user + system,
time.process_time) per request, and the wall time.  The server runs in
its own process, so its CPU is not counted.  Prints one line per kind.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "ci"))
from seaweedfs import SeaweedFS  # noqa: E402

from bucketdisk.store.credentials import Credentials  # noqa: E402
from bucketdisk.store.s3 import S3Options, S3Store  # noqa: E402


class Sink:
    """A store Sink over one preallocated buffer (as the block cache's)."""

    def __init__(self, size: int) -> None:
        self.view = memoryview(bytearray(size + 1))
        self.used = 0

    def reset(self) -> None:
        self.used = 0

    def buffer(self) -> memoryview:
        return self.view[self.used:]

    def filled(self, count: int) -> None:
        self.used += count


def measure(label: str, count: int, one) -> None:
    cpu, wall = time.process_time(), time.perf_counter()
    for i in range(count):
        one(i)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    print(f"{label}: {cpu / count * 1000:.3f} ms CPU, {wall / count * 1000:.2f} ms wall per request ({count})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=300)
    parser.add_argument("--size", type=int, default=1 << 20, help="bytes per object (default 1 MiB)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="s3cpu-") as work, SeaweedFS(Path(work) / "sw") as server:
        server.create_bucket("cpu")
        options = S3Options(endpoint=server.endpoint, addressing="path", region=server.region, pool_size=4)
        store = S3Store("cpu", "bench", options, credentials=Credentials(server.access_key, server.secret_key))
        store.check()
        blocks = [os.urandom(args.size) for _ in range(8)]
        header = b"h" * 40
        for i in range(8):  # warm up: connections, the straggler averages
            store.put(f"warm/{i}", blocks[i])
            store.get(f"warm/{i}")
        measure("PUT (one piece)", args.count, lambda i: store.put(f"o/{i}", blocks[i % 8]))
        measure("PUT (header + block)", args.count,
                lambda i: store.put(f"p/{i}", (header, memoryview(blocks[i % 8]))))
        sink = Sink(args.size)
        measure("GET into a sink", args.count, lambda i: store.get_into(f"o/{i}", sink))
        measure("GET as bytes", args.count, lambda i: store.get(f"o/{i}"))
        store.close()


if __name__ == "__main__":
    main()
