"""End-to-end tests of one bucketdisk FUSE mount: byte-exact I/O, durability,
object layout (zero blocks, dedup, punch hole, GC), stats, info, read-only, fio.

Every test drives the real CLI and a real FUSE mount, once per store: a
file:// volume and an s3:// volume on a real SeaweedFS (see conftest);
expectations are computed from an in-memory model of the disk."""
from __future__ import annotations

import errno
import json
import os
import random
import re
import signal
import stat
import subprocess
import time
import uuid

import pytest

from conftest import (
    CLI,
    MiB,
    KiB,
    assert_cli_error,
    assert_file_matches,
    distinct_nonzero_blocks,
    is_mounted,
    nonzero_block_count,
    pid_alive,
    run,
    wait_pid_gone,
)

REQUIRED_STATS = (
    "pid", "dirty_blocks", "cache_hits", "cache_misses", "fast_path_hits", "objects_put", "objects_got",
    "objects_deleted", "bytes_put", "bytes_got", "errors",
)
REQUIRED_INFO = (
    "uuid", "format_version", "size", "block_size", "block_count", "compression", "hash",
    "mapped_blocks", "objects", "stored_bytes",
)


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------

def pwrite_all(fd: int, data: bytes, off: int) -> None:
    view = memoryview(data)
    while view:
        n = os.pwrite(fd, view, off)
        assert n > 0, f"pwrite returned {n} at {off}"
        view = view[n:]
        off += n


def write_model(fd: int, model: bytearray, off: int, data: bytes) -> None:
    pwrite_all(fd, data, off)
    model[off:off + len(data)] = data


def assert_range_matches(path, model, start: int, end: int, chunk: int = 4 * MiB) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        for off in range(start, end, chunk):
            n = min(chunk, end - off)
            got = os.pread(fd, n, off)
            want = bytes(model[off:off + n])
            if got != want:
                first = next((i for i in range(min(len(got), n)) if got[i] != want[i]), min(len(got), n))
                pytest.fail(f"{path}: differs from model at byte {off + first} (read {len(got)} of {n})")
    finally:
        os.close(fd)


def parse_stats_file(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        m = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)\s*:\s*(.*?)\s*", line)
        assert m, f"stats file line is not 'name: value': {line!r}"
        values[m.group(1)] = m.group(2)
    return values


def open_rw(m) -> int:
    return os.open(m.file, os.O_RDWR)


# --------------------------------------------------------------------------
# tests
# --------------------------------------------------------------------------

@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_mount_shape_lock_and_clean_unmount(bd):
    vol = bd.create(size="96M", block_size="64K")
    m = bd.mount(vol)
    assert sorted(os.listdir(m.path)) == ["file", "snapshots", "stats"]
    st = os.stat(m.file)
    assert stat.S_ISREG(st.st_mode)
    assert st.st_size == vol.size == 96 * MiB
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert m.stats_file.is_file()
    # the tree is fixed: names neither come nor go
    for attempt in (lambda: os.open(m.path / "new", os.O_CREAT | os.O_WRONLY, 0o600),
                    lambda: os.mkdir(m.path / "dir"), lambda: os.unlink(m.file),
                    lambda: os.rename(m.file, m.path / "renamed"), lambda: os.symlink("file", m.path / "link"),
                    lambda: os.link(m.file, m.path / "hard")):
        with pytest.raises(PermissionError) as refused:
            attempt()
        assert refused.value.errno == errno.EPERM
    assert sorted(os.listdir(m.path)) == ["file", "snapshots", "stats"]
    assert vol.has_lock(), "no lock object while mounted writable"
    assert json.loads(vol.lock_bytes())["pid"] == m.pid, "the lock does not name the daemon"
    assert pid_alive(m.pid)
    bd.unmount(m)  # asserts: exit 0, not mounted, daemon gone
    assert not vol.has_lock(), "lock left behind after a clean unmount"


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_unaligned_io_matches_model_and_survives_remount(bd):
    bs = 64 * KiB
    vol = bd.create(size="64M", block_size="64K")
    size = vol.size
    m = bd.mount(vol)
    model = bytearray(size)
    rng = random.Random(20240611)

    fd = open_rw(m)
    try:
        # a write spanning 3 blocks (tail of block 4, all of 5, head of 6)
        write_model(fd, model, 5 * bs - 100, rng.randbytes(bs + 200))
        # a write covering exactly 3 whole blocks, unaligned neighbours around it
        write_model(fd, model, 10 * bs, rng.randbytes(3 * bs))
        write_model(fd, model, 10 * bs - 7, rng.randbytes(7))
        write_model(fd, model, 13 * bs, rng.randbytes(9))
        # 1-byte writes on both sides of block edges
        for k in (1, 2, 7, 100, 511, size // bs - 1):
            write_model(fd, model, k * bs - 1, bytes([rng.randrange(1, 256)]))
            write_model(fd, model, k * bs, bytes([rng.randrange(1, 256)]))
        # first and last byte of the disk, and a write ending exactly at the end
        write_model(fd, model, 0, b"\xa5")
        write_model(fd, model, size - 3 * bs - 5, rng.randbytes(3 * bs + 4))
        write_model(fd, model, size - 1, b"\x5a")

        # random unaligned writes; half of them packed into the first 2 MiB so they overlap
        for i in range(240):
            region = 2 * MiB if i % 2 == 0 else size
            off = rng.randrange(region)
            length = rng.randint(1, min(3 * bs + 17, size - off))
            write_model(fd, model, off, rng.randbytes(length))
            if i % 3 == 0:  # interleaved reads, some straddling block edges
                roff = rng.randrange(size)
                rlen = rng.randint(1, 2 * bs)
                want = bytes(model[roff:roff + rlen])
                assert os.pread(fd, rlen, roff) == want, f"read at {roff}+{rlen} differs"

        # reads at and past the end
        assert os.pread(fd, 1, size - 1) == bytes(model[-1:]) == b"\x5a"
        assert os.pread(fd, 100, size - 10) == bytes(model[size - 10:]), "read crossing the end is not short"
        assert os.pread(fd, 10, size) == b"", "read at the end is not empty"
        assert os.pread(fd, 10, size + 12345) == b"", "read past the end is not empty"
        assert os.fstat(fd).st_size == size, "writes changed the disk size"
    finally:
        os.close(fd)

    assert_file_matches(m.file, model)
    m = bd.remount(m)
    assert os.stat(m.file).st_size == size
    assert_file_matches(m.file, model)


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_fsynced_bytes_survive_kill9(bd):
    bs = 64 * KiB
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(99)
    synced_end = 32 * MiB  # unsynced writes go above this; only below is checked

    fd = open_rw(m)
    try:
        for _ in range(60):
            off = rng.randrange(8 * MiB)
            write_model(fd, model, off, rng.randbytes(rng.randint(1, 3 * bs)))
        os.fsync(fd)
        # overwrite part of it, add more, sync with fdatasync this time
        for _ in range(40):
            off = rng.randrange(16 * MiB)
            write_model(fd, model, off, rng.randbytes(rng.randint(1, 2 * bs)))
        write_model(fd, model, synced_end - bs - 3, rng.randbytes(bs + 3))
        os.fdatasync(fd)
        # acknowledged but never synced: may or may not survive, must not harm the rest
        pwrite_all(fd, rng.randbytes(MiB + 5), synced_end + 1)
    finally:
        os.close(fd)

    pid = bd.stats(m.path)["pid"]
    assert pid == m.pid
    os.kill(pid, signal.SIGKILL)
    assert wait_pid_gone(pid), f"daemon {pid} did not die after SIGKILL"
    with pytest.raises(OSError) as exc:
        os.stat(m.file)
    # "Transport endpoint is not connected" (or, on newer kernels, "connection abort")
    assert exc.value.errno in (errno.ENOTCONN, errno.ECONNABORTED), exc.value

    # cleaning up the dead mount is a success, not an error
    proc = bd.run("unmount", m.path, timeout=120)
    assert proc.returncode == 0, f"unmount of a dead mount failed: {proc.stderr}"
    assert "Traceback" not in proc.stderr
    assert not is_mounted(m.path)

    # the stale lock of the dead daemon is taken over on remount
    m2 = bd.mount(vol, m.path)
    assert_range_matches(m2.file, model, 0, synced_end)
    fd = os.open(m2.file, os.O_RDONLY)
    try:
        assert len(os.pread(fd, 2 * MiB, synced_end)) == 2 * MiB
    finally:
        os.close(fd)
    # and the volume is healthy for writing and a clean unmount afterwards
    fd = open_rw(m2)
    try:
        write_model(fd, model, 3 * bs + 1, rng.randbytes(bs))
        os.fsync(fd)
    finally:
        os.close(fd)
    m3 = bd.remount(m2)
    assert_range_matches(m3.file, model, 0, synced_end)


def test_zero_blocks_have_no_objects_and_identical_blocks_dedup(bd):
    bs = 64 * KiB
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(7)
    a, b, d, e, h = (rng.randbytes(bs) for _ in range(5))
    f4 = rng.randbytes(bs) * 4  # four identical blocks in one write
    last = vol.size // bs - 1

    fd = open_rw(m)
    try:
        write_model(fd, model, 0 * bs, a)
        write_model(fd, model, 1 * bs, bytes(bs))          # explicit zeros
        write_model(fd, model, 2 * bs, b)
        write_model(fd, model, 3 * bs, a)                   # same as block 0
        write_model(fd, model, 5 * bs, rng.randbytes(bs // 2))  # half data, half zeros
        write_model(fd, model, 7 * bs, a)
        write_model(fd, model, 9 * bs, d)
        write_model(fd, model, 13 * bs, h)
        os.fsync(fd)                                        # d and h reach the store
        write_model(fd, model, 7 * bs, bytes(bs))           # back to zeros
        write_model(fd, model, 9 * bs, e)                   # d dropped
        write_model(fd, model, 13 * bs, bytes(bs))          # h dropped
        write_model(fd, model, 12 * bs, b[:1000])           # b again, in two unaligned pieces
        write_model(fd, model, 12 * bs + 1000, b[1000:])
        write_model(fd, model, 20 * bs, f4)
        write_model(fd, model, 30 * bs, b"\x01" * bs)       # compressible but non-zero
        write_model(fd, model, 40 * bs + 17, bytes(3 * bs)) # zeros over never-written blocks
        write_model(fd, model, last * bs, rng.randbytes(bs))
    finally:
        os.close(fd)

    bd.unmount(m)
    vol.assert_clean_layout()
    expected_objects = len(distinct_nonzero_blocks(model, bs))
    expected_mapped = nonzero_block_count(model, bs)
    assert len(vol.object_keys()) == expected_objects
    info = bd.info(vol)
    assert info["objects"] == expected_objects
    assert info["mapped_blocks"] == expected_mapped

    m = bd.mount(vol)
    assert_range_matches(m.file, model, 0, 41 * bs)
    assert_range_matches(m.file, model, last * bs, vol.size)


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_punch_hole_zeroes_range_and_frees_objects(bd):
    bs = 64 * KiB
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    rng = random.Random(5)
    fd = open_rw(m)
    try:
        write_model(fd, model, 0, rng.randbytes(16 * bs))
        os.fsync(fd)
    finally:
        os.close(fd)
    bd.unmount(m)
    before_model = bytes(model)
    before_keys = vol.object_keys()
    assert len(before_keys) == len(distinct_nonzero_blocks(model, bs))

    m = bd.mount(vol)
    # whole blocks 3..6 plus partial edges of blocks 2 and 7
    punches = [
        (2 * bs + 100, 5 * bs),
        (10 * bs + 5, 100),        # inside one block
        (40 * bs, 2 * bs),         # never written: a no-op
    ]
    for off, length in punches:
        proc = run("fallocate", "-p", "-o", off, "-l", length, m.file, timeout=60)
        assert proc.returncode == 0, f"fallocate -p -o {off} -l {length}: {proc.stderr}"
        model[off:off + length] = bytes(length)
    assert os.stat(m.file).st_size == vol.size, "punch hole changed the size"
    fd = os.open(m.file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        off, length = punches[0]
        assert os.pread(fd, length, off) == bytes(length)
        assert os.pread(fd, 100, off - 100) == before_model[off - 100:off]
        assert os.pread(fd, 100, off + length) == before_model[off + length:off + length + 100]
    finally:
        os.close(fd)
    assert_range_matches(m.file, model, 0, 42 * bs)
    bd.unmount(m)
    vol.assert_clean_layout()

    after_keys = vol.object_keys()
    old_contents = distinct_nonzero_blocks(before_model, bs)
    new_contents = distinct_nonzero_blocks(model, bs)
    assert len(after_keys) == len(new_contents)
    assert len(before_keys - after_keys) == len(old_contents - new_contents), "dropped blocks' objects not freed"
    assert len(after_keys - before_keys) == len(new_contents - old_contents)
    info = bd.info(vol)
    assert info["mapped_blocks"] == nonzero_block_count(model, bs)
    assert info["objects"] == len(new_contents)

    m = bd.mount(vol)
    assert_range_matches(m.file, model, 0, 42 * bs)


def test_stats_file_and_counters_move(bd):
    bs = 64 * KiB
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)

    st0 = bd.stats(m.path)
    missing = [k for k in REQUIRED_STATS if k not in st0]
    assert not missing, f"stats --json lacks {missing}; it has {sorted(st0)}"
    for key in REQUIRED_STATS:
        assert isinstance(st0[key], int) and st0[key] >= 0, f"{key}={st0[key]!r}"
    assert st0["pid"] == m.pid and pid_alive(st0["pid"])
    text = m.stats_file.read_text()
    from_file = parse_stats_file(text)
    for key, value in st0.items():
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            assert key in from_file, f"stats file lacks {key}"
    assert int(from_file["pid"]) == m.pid

    data = random.Random(3).randbytes(16 * bs)
    fd = open_rw(m)
    try:
        pwrite_all(fd, data, 0)
        os.fsync(fd)
    finally:
        os.close(fd)
    st1 = bd.stats(m.path)
    assert st1["objects_put"] > st0["objects_put"]
    # 16 incompressible blocks went to the store (stored size never shrinks random data)
    assert st1["bytes_put"] - st0["bytes_put"] >= len(data) * 0.99
    assert st1["dirty_blocks"] == 0, "dirty blocks remain after fsync"
    assert st1["errors"] == 0
    from_file = parse_stats_file(m.stats_file.read_text())
    assert int(from_file["objects_put"]) >= st1["objects_put"] > 0
    assert int(from_file["errors"]) == 0

    m = bd.remount(m)
    cold = bd.stats(m.path)
    fd = os.open(m.file, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        assert os.pread(fd, len(data), 0) == data
    finally:
        os.close(fd)
    warm = bd.stats(m.path)
    assert warm["objects_got"] > cold["objects_got"]
    assert warm["bytes_got"] > cold["bytes_got"]
    assert warm["cache_misses"] > cold["cache_misses"]
    assert warm["errors"] == 0


def test_info_json_figures_with_default_options(bd):
    vol = bd.create(size="256M", block_size=None)  # default block size
    info = bd.info(vol)
    missing = [k for k in REQUIRED_INFO if k not in info]
    assert not missing, f"info --json lacks {missing}; it has {sorted(info)}"
    uuid.UUID(str(info["uuid"]))
    assert isinstance(info["format_version"], int) and info["format_version"] >= 1
    assert info["size"] == 256 * MiB
    assert info["block_size"] == MiB
    assert info["block_count"] == info["size"] // info["block_size"]
    assert isinstance(info["compression"], str) and info["compression"]
    assert isinstance(info["hash"], str) and info["hash"]
    assert info["mapped_blocks"] == 0
    assert info["objects"] == 0
    assert info["stored_bytes"] == 0
    other = bd.create(size="4M", block_size="4K")
    assert bd.info(other)["uuid"] != info["uuid"], "two volumes share a UUID"

    bs = MiB
    model = bytearray(vol.size)
    rng = random.Random(11)
    x = rng.randbytes(bs)
    m = bd.mount(vol, cache_size=None, threads=None)  # daemon defaults
    fd = open_rw(m)
    try:
        write_model(fd, model, 0, x)
        write_model(fd, model, 1 * bs, rng.randbytes(bs))
        write_model(fd, model, 2 * bs, rng.randbytes(bs))
        write_model(fd, model, 100 * bs, x)                    # duplicate
        write_model(fd, model, 200 * bs + 12345, b"tail")      # partial block
    finally:
        os.close(fd)
    bd.unmount(m)

    after = bd.info(vol)
    assert after["uuid"] == info["uuid"]
    assert after["size"] == info["size"] and after["block_size"] == bs
    assert after["mapped_blocks"] == nonzero_block_count(model, bs)
    assert after["objects"] == len(distinct_nonzero_blocks(model, bs)) == len(vol.object_keys())
    assert after["stored_bytes"] == vol.object_bytes()

    # human form works too
    proc = bd.ok("info", vol.url, *vol.store_args)
    assert info["uuid"] in proc.stdout


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_read_only_mount_reads_and_refuses_writes(bd):
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    model = bytearray(vol.size)
    fd = open_rw(m)
    try:
        write_model(fd, model, 100_000, random.Random(8).randbytes(256 * KiB))
    finally:
        os.close(fd)
    bd.unmount(m)
    before = vol.snapshot()

    ro = bd.mount(vol, read_only=True)
    st = os.stat(ro.file)
    assert stat.S_IMODE(st.st_mode) == 0o400
    assert st.st_size == vol.size
    for flags in (os.O_RDWR, os.O_WRONLY):
        with pytest.raises(OSError) as exc:
            fd = os.open(ro.file, flags)
            try:  # if open were allowed, the write itself must fail
                os.pwrite(fd, b"x", 0)
                os.fsync(fd)
            finally:
                os.close(fd)
        assert exc.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM), exc.value
    proc = run("fallocate", "-p", "-o", "0", "-l", str(MiB), ro.file, timeout=60)
    assert proc.returncode != 0, "punch hole succeeded on a read-only mount"
    assert_range_matches(ro.file, model, 0, 2 * MiB)
    bd.unmount(ro)
    assert vol.snapshot() == before, "a read-only mount changed the store"


def _fio(args, cwd, tag):
    out = cwd / f"fio-{tag}.json"
    proc = run("fio", *args, "--output-format=json", f"--output={out}", timeout=600, cwd=cwd)
    text = out.read_text() if out.exists() else ""
    assert proc.returncode == 0, f"fio {tag} failed ({proc.returncode}):\n{proc.stderr}\n{proc.stdout}\n{text[-3000:]}"
    result = json.loads(text[text.index("{"):])
    job = result["jobs"][0]
    assert job["error"] == 0, f"fio {tag} job error {job['error']}"
    return job


@pytest.mark.parametrize(
    "bs,offset",
    [("4k", 0), ("64k", 12 * KiB)],  # the second: every 64k I/O straddles two 64K blocks
    ids=["bs4k-aligned", "bs64k-straddling"],
)
def test_fio_verify_and_reverify_after_remount(bd, tmp_path, bs, offset):
    vol = bd.create(size="64M", block_size="64K")
    m = bd.mount(vol)
    size = 32 * MiB
    job = [
        "--name=verify", f"--filename={m.file}", "--rw=randwrite", f"--bs={bs}",
        f"--offset={offset}", f"--size={size}", "--verify=crc32c", "--ioengine=psync",
        "--randrepeat=1", "--iodepth=1", "--numjobs=1", "--fallocate=none", "--verify_fatal=1",
    ]
    w = _fio(job + ["--do_verify=1", "--direct=0"], tmp_path, "write")
    assert w["write"]["io_bytes"] == size
    assert w["read"]["io_bytes"] == size, "verify phase did not read back everything written"

    m = bd.remount(m)
    v = _fio(job + ["--verify_only"], tmp_path, "reverify")
    # (fio accounts verify_only's skipped writes as written; it only reads)
    assert v["read"]["io_bytes"] == size

    # nothing outside fio's region was touched
    model = bytearray(vol.size)
    fd = os.open(m.file, os.O_RDONLY)
    try:
        assert os.pread(fd, offset, 0) == bytes(offset)
    finally:
        os.close(fd)
    assert_range_matches(m.file, model, offset + size, vol.size)


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_foreground_mount_runs_until_unmount(bd, tmp_path, janitor):
    vol = bd.create(size="16M", block_size="64K")
    mp = tmp_path / "fg"
    mp.mkdir()
    out = open(tmp_path / "fg.out", "w")
    proc = subprocess.Popen(
        [str(CLI), "mount", vol.url, str(mp), "-f", "--cache-size", "32M", "--threads", "4",
         *vol.store_args, *bd.fuse_args],
        stdout=out, stderr=subprocess.STDOUT, env=bd.env,
    )

    def stop():
        try:
            if is_mounted(mp):
                bd.run("unmount", mp, timeout=120)
            if is_mounted(mp):
                run("fusermount3", "-u", "-z", mp, timeout=60)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(timeout=15)
        finally:
            out.close()

    janitor.push("foreground mount", stop)

    deadline = time.monotonic() + 60
    while not is_mounted(mp) or not (mp / "file").exists():
        assert proc.poll() is None, f"foreground mount exited {proc.returncode}: {(tmp_path / 'fg.out').read_text()}"
        assert time.monotonic() < deadline, "foreground mount never became live"
        time.sleep(0.05)

    assert bd.stats(mp)["pid"] == proc.pid
    payload = random.Random(1).randbytes(100_000)
    fd = os.open(mp / "file", os.O_RDWR)
    try:
        pwrite_all(fd, payload, 70_000)
    finally:
        os.close(fd)
    assert proc.poll() is None
    res = bd.run("unmount", mp, timeout=120)
    assert res.returncode == 0, res.stderr
    assert proc.wait(timeout=120) == 0, (tmp_path / "fg.out").read_text()
    assert not is_mounted(mp)

    m = bd.mount(vol)
    fd = os.open(m.file, os.O_RDONLY)
    try:
        assert os.pread(fd, len(payload), 70_000) == payload
    finally:
        os.close(fd)


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
@pytest.mark.stores("file")  # a name in the mount: the store does not know it
def test_filename_names_the_disk_in_the_mount_and_in_each_snapshot(bd):
    vol = bd.create(size="16M", block_size="64K")
    for bad in ("", ".", "..", "a/b", "/file", "stats", "snapshots", "x" * 256, "a\nb", "tab\there", "del\x7f"):
        mp = bd._name("refused")
        mp.mkdir()
        line = assert_cli_error(bd.run("mount", vol.url, mp, f"--filename={bad}", *bd.fuse_args))
        assert "--filename" in line, line
        assert not is_mounted(mp)
    assert not vol.has_lock(), "a refused mount took the lease"

    m = bd.mount(vol, filename="backup.dmg")
    assert sorted(os.listdir(m.path)) == ["backup.dmg", "snapshots", "stats"]
    assert bd.stats(m.path)["disk_file"] == "backup.dmg"
    payload = random.Random(2).randbytes(300_000)
    fd = open_rw(m)
    try:
        pwrite_all(fd, payload, 12_345)
    finally:
        os.close(fd)
    bd.ok("snapshot", "create", m.path, "--name", "one")
    assert os.listdir(m.path / "snapshots" / "one") == ["backup.dmg"]
    with open(m.path / "snapshots" / "Latest" / "backup.dmg", "rb") as f:
        f.seek(12_345)
        assert f.read(len(payload)) == payload
    fd = open_rw(m)  # written again, never fsynced: the unmount stores it through the named disk
    try:
        pwrite_all(fd, payload[::-1], MiB)
    finally:
        os.close(fd)
    bd.unmount(m)

    m = bd.mount(vol)  # the name belongs to the mount, not the volume
    assert sorted(os.listdir(m.path)) == ["file", "snapshots", "stats"]
    fd = os.open(m.file, os.O_RDONLY)
    try:
        assert os.pread(fd, len(payload), 12_345) == payload
        assert os.pread(fd, len(payload), MiB) == payload[::-1]
    finally:
        os.close(fd)
