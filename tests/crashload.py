"""The load of the crash rounds (test_crash_rounds.py): writers whose every
acknowledged record can be checked after the daemon was killed.

- RecordLog: numbered records appended to a file in the filesystem on the
  disk, each fsynced: every record whose fsync returned must be there.
- RawRecords: numbered 4 KiB records written straight to the disk's `file`
  (past the end of the filesystem), an fsync every `sync_every`: every
  record the daemon acknowledged (the pwrite returned) must be there when
  the mount has a cache dir, every record an fsync covered in any case.
- fio: random writes of 4-64 KiB with O_DIRECT and an fsync every 8,
  reading back and checking what it wrote as it goes (--verify_backlog).

Each writer runs until a write fails (the daemon was killed under it).
"""
from __future__ import annotations

import os
import struct
import threading
import zlib
from pathlib import Path

from conftest import MiB, run

RECORD = struct.Struct("<8sQQI")  # magic, sequence number, round, crc32 of the payload
RECORD_SIZE = 512
RAW_RECORD_SIZE = 4096
MAGIC = b"BDRECORD"


def record(seq: int, round_number: int, size: int) -> bytes:
    payload = (f"{seq}:{round_number}:".encode() * size)[: size - RECORD.size]
    return RECORD.pack(MAGIC, seq, round_number, zlib.crc32(payload)) + payload


def parse(data: bytes) -> tuple[int, int] | None:
    """(sequence number, round) of an intact record, else None."""
    if len(data) < RECORD.size:
        return None
    magic, seq, round_number, crc = RECORD.unpack_from(data)
    if magic != MAGIC or zlib.crc32(data[RECORD.size:]) != crc:
        return None
    return seq, round_number


class Writer(threading.Thread):
    """A writer thread that stops at its first failed write."""

    def __init__(self, name: str) -> None:
        super().__init__(name=name, daemon=True)
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.acked = 0   # records whose write returned
        self.synced = 0  # records an fsync covered

    def run(self) -> None:
        try:
            self.write()
        except OSError as e:  # the daemon died under us
            self.error = e

    def write(self) -> None:
        raise NotImplementedError


class RecordLog(Writer):
    """Records of RECORD_SIZE appended to `path` (in the filesystem), each fsynced."""

    def __init__(self, path: Path, round_number: int) -> None:
        super().__init__("records")
        self.path, self.round = path, round_number

    def write(self) -> None:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            seq = 0
            while not self.stop.is_set():
                seq += 1
                os.write(fd, record(seq, self.round, RECORD_SIZE))
                self.acked = seq
                os.fsync(fd)
                self.synced = seq
        finally:
            os.close(fd)

    @staticmethod
    def check(path: Path, synced: int, round_number: int) -> None:
        """Every record up to `synced` is in the file, intact and in order."""
        data = path.read_bytes() if path.exists() else b""
        for seq in range(1, synced + 1):
            got = parse(data[(seq - 1) * RECORD_SIZE : seq * RECORD_SIZE])
            assert got == (seq, round_number), \
                f"{path.name}: fsynced record {seq} of {synced} is {'damaged or missing' if got is None else got}"


class RawRecords(Writer):
    """RAW_RECORD_SIZE records straight to the disk file from `start` on,
    numbered on from `first`, an fsync every `sync_every`."""

    def __init__(self, file: Path, start: int, end: int, first: int, round_number: int, sync_every: int) -> None:
        super().__init__("raw")
        self.sync_every = sync_every
        self.file, self.offset, self.end, self.first, self.round = file, start, end, first, round_number
        self.written: dict[int, int] = {}  # slot -> the last sequence number written there

    def slot_of(self, seq: int) -> int:
        return seq % ((self.end - self.offset) // RAW_RECORD_SIZE)

    def write(self) -> None:
        fd = os.open(self.file, os.O_WRONLY)
        try:
            seq = self.first
            while not self.stop.is_set():
                at = self.offset + self.slot_of(seq) * RAW_RECORD_SIZE
                os.pwrite(fd, record(seq, self.round, RAW_RECORD_SIZE), at)
                self.written[self.slot_of(seq)] = seq
                self.acked = seq
                if (seq - self.first + 1) % self.sync_every == 0:
                    os.fsync(fd)
                    self.synced = seq
                seq += 1
        finally:
            os.close(fd)

    def check(self, up_to: int) -> None:
        """Every record numbered up to `up_to` that no later acknowledged
        record replaced is there, or one written after it (in flight at the
        kill); none older."""
        fd = os.open(self.file, os.O_RDONLY)
        try:
            for slot, seq in self.written.items():
                if seq > up_to:
                    continue
                got = parse(os.pread(fd, RAW_RECORD_SIZE, self.offset + slot * RAW_RECORD_SIZE))
                assert got is not None and got[0] >= seq, \
                    f"raw record {seq} (acknowledged, up to {up_to} must be there) reads back as {got}"
        finally:
            os.close(fd)


def start_fio(target: Path, log: Path):
    """fio's random writes with fsyncs into `target` (a file it lays out),
    checking what it wrote as it goes; runs until stopped or a write fails."""
    import subprocess

    args = ["fio", "--name=storm", f"--filename={target}", "--size=16M", "--rw=randwrite", "--bsrange=4k-64k",
            "--ioengine=psync", "--direct=1", "--fsync=8", "--verify=crc32c", "--verify_backlog=32",
            "--verify_fatal=1", "--verify_state_save=0", "--time_based", "--runtime=120", "--randseed=7", f"--output={log}"]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def fio_verified(log: Path) -> bool:
    """Whether fio found no wrong data while it ran (it stops at the first: --verify_fatal)."""
    text = log.read_text(errors="replace") if log.exists() else ""
    return "verify:" not in text and "bad magic" not in text and "crc32c: verify failed" not in text


def e2fsck_clean(image: Path) -> tuple[bool, str]:
    proc = run("e2fsck", "-fn", image, timeout=300)
    return proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-1000:]


FS_SIZE = 48 * MiB  # the filesystem's part of the disk; raw records go after it
