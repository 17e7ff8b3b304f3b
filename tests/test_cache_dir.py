"""mount --cache-dir: writes that reached the cache dir survive a kill -9 of
the daemon and are stored by the next mount (or `bucketdisk recover`)
before anything is served; clean blocks make a remount warm and are
checked against their content hash when read back; a cache dir serves one
volume and one mount at a time; a full or failing cache disk never fails
a write."""
from __future__ import annotations

import os
from contextlib import contextmanager
import random
import signal

import pytest
from conftest import MiB, assert_cli_error, assert_file_matches, run, wait_pid_gone
from test_mount import open_rw, write_model

PAGE = 4096


@contextmanager
def opened(m):
    """The mount's disk file, open for reading and writing."""
    fd = open_rw(m)
    try:
        yield fd
    finally:
        os.close(fd)


def cache_args(cache, *extra) -> list:
    return ["--cache-dir", str(cache), *extra]


def kill9(bd, m) -> None:
    """SIGKILL the daemon, then unmount the dead mount by its path."""
    os.kill(m.pid, signal.SIGKILL)
    assert wait_pid_gone(m.pid), f"daemon {m.pid} did not die after SIGKILL"
    proc = bd.run("unmount", m.path, timeout=120)
    assert proc.returncode == 0, proc.stderr


def unsynced_writes(fd: int, path, model: bytearray, rng: random.Random, size: int) -> None:
    """Whole blocks, small writes across blocks, and a punched block: none fsynced."""
    write_model(fd, model, 0, rng.randbytes(4 * MiB))
    for _ in range(300):
        off = rng.randrange(size - PAGE)
        write_model(fd, model, off, rng.randbytes(rng.choice((1, 512, 3000, PAGE))))
    punched = 2 * MiB  # a whole block of the first four
    run("fallocate", "-p", "-o", punched, "-l", MiB, path, timeout=60, check=True)
    model[punched : punched + MiB] = bytes(MiB)
    write_model(fd, model, punched + 5000, b"after the punch")


def dirty_files(cache) -> list[str]:
    return sorted(os.listdir(cache / "dirty"))


def clean_files(cache) -> list:
    return sorted(p for p in (cache / "clean").rglob("*") if p.is_file())


def test_writes_that_reached_the_cache_dir_survive_kill9(bd, tmp_path):
    vol = bd.create(size="32M", block_size="1M")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    model = bytearray(vol.size)
    with opened(m) as fd:
        os.pwrite(fd, b"fsynced", 30 * MiB)
        model[30 * MiB : 30 * MiB + 7] = b"fsynced"
        os.fsync(fd)
        unsynced_writes(fd, m.file, model, random.Random(3), vol.size)
    assert bd.stats(m.path)["cache_dir_dirty_blocks"] > 0
    kill9(bd, m)
    assert dirty_files(cache), "the killed mount left no dirty file"

    m = bd.mount(vol, m.path, extra=cache_args(cache))
    st = bd.stats(m.path)
    assert st["recovered_blocks"] > 0 and st["recovered_torn_pages"] == 0
    assert_file_matches(m.file, model)
    bd.unmount(m)
    assert dirty_files(cache) == [], "a clean unmount left dirty files"
    m = bd.mount(vol, m.path)  # without the cache dir: the store has it all
    assert_file_matches(m.file, model)


def test_an_encrypted_volume_recovers_and_starts_warm(bd, tmp_path):
    vol = bd.create_encrypted(size="16M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=[*vol.key_args, *cache_args(cache)])
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 0, random.Random(8).randbytes(2 * MiB))
        os.fsync(fd)
        write_model(fd, model, 5 * MiB, b"not fsynced" * 100)
    kill9(bd, m)
    m = bd.mount(vol, m.path, extra=[*vol.key_args, *cache_args(cache)])
    assert_file_matches(m.file, model)
    st = bd.stats(m.path)
    assert st["recovered_blocks"] >= 1 and st["cache_dir_hits"] > 0 and st["cache_dir_damaged"] == 0


def test_recover_stores_them_without_a_mount(bd, tmp_path):
    vol = bd.create(size="16M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    model = bytearray(vol.size)
    with opened(m) as fd:
        rng = random.Random(5)
        for _ in range(200):
            write_model(fd, model, rng.randrange(vol.size - 3000), rng.randbytes(3000))
    kill9(bd, m)
    proc = bd.ok("recover", vol.url, *vol.store_args, *cache_args(cache))
    assert "were stored" in proc.stdout
    assert dirty_files(cache) == []
    proc = bd.ok("recover", vol.url, *vol.store_args, *cache_args(cache))
    assert "no blocks left unsaved" in proc.stdout
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)


def test_a_remount_starts_warm_and_a_damaged_clean_file_is_never_served(bd, tmp_path):
    vol = bd.create(size="16M", block_size="1M")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 0, random.Random(1).randbytes(8 * MiB))
    bd.unmount(m)
    kept = clean_files(cache)
    assert len(kept) == 8, "a clean unmount should keep every whole written block as a clean file"
    damaged = kept[3]
    data = bytearray(damaged.read_bytes())
    data[-100] ^= 0x01
    damaged.write_bytes(data)

    m = bd.mount(vol, m.path, extra=cache_args(cache))
    assert_file_matches(m.file, model)
    st = bd.stats(m.path)
    assert st["cache_dir_hits"] == 7 and st["cache_dir_damaged"] == 1
    # deleted, and kept again as the store has it
    assert damaged.read_bytes() != bytes(data), "the damaged clean file was kept"


def test_a_cut_page_shows_what_the_store_holds(bd, tmp_path):
    """A page whose checksum does not match (a machine crash cut its write)
    is taken from the store; the other pages of the file are recovered."""
    vol = bd.create(size="8M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 0, b"A" * (64 * 1024))
        os.fsync(fd)
        write_model(fd, model, 0, b"B" * PAGE)      # page 0: to be cut
        write_model(fd, model, PAGE, b"C" * PAGE)   # page 1: to survive
    kill9(bd, m)
    (name,) = dirty_files(cache)
    path = cache / "dirty" / name
    data = bytearray(path.read_bytes())
    data[4096 + 10] ^= 0xFF  # page 0 of the block (data starts at 4096 for 64K blocks)
    path.write_bytes(data)
    m = bd.mount(vol, m.path, extra=cache_args(cache))
    model[0:PAGE] = b"A" * PAGE
    assert_file_matches(m.file, model)
    assert bd.stats(m.path)["recovered_torn_pages"] == 1
    assert "pages were cut by a crash" in m.log.read_text()


def test_refusals_change_nothing(bd, tmp_path):
    vol = bd.create(size="8M", block_size="64K")
    other = bd.create(size="8M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    mp = tmp_path / "mp"
    mp.mkdir()
    in_use = bd.run("mount", vol.url, mp, *vol.store_args, "--read-only", *cache_args(cache), timeout=120)
    assert "in use by another mount" in assert_cli_error(in_use)
    with opened(m) as fd:  # then at once the kill: before a journal can retire the dirty file
        os.pwrite(fd, b"x" * 5000, 0)
    kill9(bd, m)
    assert dirty_files(cache), "the kill came after the write was stored: the cases below need it unsaved"
    before = (vol.snapshot(), other.snapshot(), dirty_files(cache))
    cases = [
        (["mount", other.url, mp, *other.store_args, *cache_args(cache)], "belongs to another volume"),
        (["mount", vol.url, mp, *vol.store_args, "--read-only", *cache_args(cache)], "left unsaved"),
        (["mount", vol.url, mp, *vol.store_args, *cache_args(cache), "--cache-dir-size", "1M"], "at least twice"),
        (["mount", vol.url, mp, *vol.store_args, "--cache-dir-size", "1G"], "goes with --cache-dir"),
        (["mount", vol.url, mp, *vol.store_args, *cache_args(tmp_path / "cache" / "lock")], "not a directory"),
        (["recover", other.url, *other.store_args, *cache_args(cache)], "belongs to another volume"),
        (["mount", vol.url, mp, *vol.store_args, *cache_args(tmp_path)], "not a bucketdisk cache dir"),
        (["mount", vol.url, mp, *vol.store_args, *cache_args(mp / "cache")], "inside the mountpoint"),
    ]
    if vol.kind == "file":
        cases += [(["mount", vol.url, mp, *vol.store_args, *cache_args(vol.path / "cache")],
                   "inside the volume's directory"),
                  (["recover", vol.url, *vol.store_args, *cache_args(vol.path / "c")], "inside the volume's")]
    cases += [(["recover", vol.url, *vol.store_args, *cache_args(tmp_path / "typo")], "no cache dir at"),
              (["mount", vol.url, mp, *vol.store_args, "--cache-dir", ""], "empty path")]
    foreign = sorted(os.listdir(tmp_path))
    for args, words in cases:
        proc = bd.run(*args, timeout=120)
        assert words in assert_cli_error(proc), (args, proc.stderr)
    assert (vol.snapshot(), other.snapshot(), dirty_files(cache)) == before
    assert sorted(os.listdir(tmp_path)) == foreign, "a refused --cache-dir left something behind"


def test_another_writer_since_makes_dirty_files_stale(bd, tmp_path):
    """Dirty files a crashed mount left are not applied over what another
    mount wrote since; `recover --discard` drops them."""
    vol = bd.create(size="8M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    with opened(m) as fd:
        os.pwrite(fd, b"old" * 1000, 0)
    kill9(bd, m)
    m = bd.mount(vol, m.path)  # no cache dir: a new history
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 0, b"new" * 1000)
    bd.unmount(m)
    before = vol.snapshot()
    proc = bd.run("mount", vol.url, m.path, *vol.store_args, *cache_args(cache), timeout=120)
    assert "another mount has written the volume since" in assert_cli_error(proc)
    assert vol.snapshot() == before
    proc = bd.ok("recover", vol.url, *vol.store_args, *cache_args(cache), "--discard")
    assert "were dropped" in proc.stdout
    m = bd.mount(vol, m.path, extra=cache_args(cache))
    assert_file_matches(m.file, model)


def test_a_small_cache_dir_slows_writers_and_a_full_disk_fails_no_write(bd, tmp_path):
    vol = bd.create(size="64M", block_size="1M")
    # 16 dirty files at most: writers wait for journals to retire them
    small = tmp_path / "small"
    m = bd.mount(vol, cache_size="8M", extra=cache_args(small, "--cache-dir-size", "17M"))
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 0, random.Random(2).randbytes(48 * MiB))
    assert bd.stats(m.path)["cache_dir_dirty_blocks"] <= 16
    bd.unmount(m)
    # a cache dir on a 4 MiB tmpfs that claims 1G: writes go on, held in memory
    tiny = bd.tmpfs_mount(tmp_path / "tiny")
    m = bd.mount(vol, m.path, cache_size="16M", extra=cache_args(tiny / "c", "--cache-dir-size", "1G"))
    with opened(m) as fd:
        write_model(fd, model, 8 * MiB, random.Random(4).randbytes(32 * MiB))
        os.fsync(fd)
    assert bd.stats(m.path)["cache_dir_errors"] > 0
    bd.unmount(m)
    m = bd.mount(vol, m.path)
    assert_file_matches(m.file, model)


@pytest.mark.stores("file")
def test_a_read_only_file_system_is_refused(bd, tmp_path):
    vol = bd.create(size="8M", block_size="64K")
    ro = tmp_path / "ro"
    ro.mkdir()
    run("mount", "-t", "tmpfs", "-o", "size=1m,ro", "bdtest-ro", ro, timeout=60, check=True)
    bd.janitor.push("ro tmpfs", lambda: run("umount", ro, timeout=60))
    mp = tmp_path / "mp"
    mp.mkdir()
    before = vol.snapshot()
    proc = bd.run("mount", vol.url, mp, *vol.store_args, *cache_args(ro), timeout=120)
    assert "is not writable" in assert_cli_error(proc)
    assert vol.snapshot() == before


def test_a_full_cache_disk_is_refused_before_the_volume_is_touched(bd, tmp_path):
    """A crashed mount's dirty files on a disk that filled up since: the
    next mount refuses in one line naming the directory, before it takes
    the lease, and mounts and recovers them once there is room."""
    vol = bd.create(size="8M", block_size="64K")
    disk = bd.tmpfs_mount(tmp_path / "disk")  # 4 MiB
    cache = disk / "c"
    m = bd.mount(vol, cache_size="1M", extra=cache_args(cache, "--cache-dir-size", "2M"))
    model = bytearray(vol.size)
    with opened(m) as fd:
        write_model(fd, model, 100_000, random.Random(6).randbytes(200_000))
    kill9(bd, m)
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while os.write(fd, bytes(4096)):
            pass
    except OSError:  # full
        pass
    finally:
        os.close(fd)
    before = vol.snapshot()
    proc = bd.run("mount", vol.url, m.path, *vol.store_args, *cache_args(cache), timeout=120)
    assert f"cache dir {cache} does not take writes" in assert_cli_error(proc)
    assert vol.snapshot() == before, "the refused mount changed the volume"
    filler.unlink()
    m = bd.mount(vol, m.path, cache_size="1M", extra=cache_args(cache, "--cache-dir-size", "2M"))
    assert bd.stats(m.path)["recovered_blocks"] > 0
    assert_file_matches(m.file, model)


def test_recover_names_dirty_files_it_could_not_use(bd, tmp_path):
    vol = bd.create(size="8M", block_size="64K")
    cache = tmp_path / "cache"
    m = bd.mount(vol, extra=cache_args(cache))
    with opened(m) as fd:
        for n in range(4):
            os.pwrite(fd, bytes([n + 1]) * 5000, n * 65536)
    kill9(bd, m)
    first = cache / "dirty" / dirty_files(cache)[0]
    data = bytearray(first.read_bytes())
    data[0] ^= 0xFF  # its header's magic
    first.write_bytes(data)
    proc = bd.run("recover", vol.url, *vol.store_args, *cache_args(cache))
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "3 blocks" in proc.stdout and "1 dirty files could not be used" in proc.stderr
    assert os.listdir(cache / "damaged") == [first.name] and dirty_files(cache) == []
