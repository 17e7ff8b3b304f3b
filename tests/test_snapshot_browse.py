"""Browsing history in the live mount (issue 14), as Time Machine's backup
folders are browsed: `snapshots/<name>/file` is the disk as it was, loop-
mounted read-only while the live disk is mounted and written;
`snapshots/Latest` links to the newest; each folder's metadata is in
`user.bucketdisk.*` extended attributes.  On both stores, with ext4."""
from __future__ import annotations

import errno
import hashlib
import os
import random
import threading
import time
from pathlib import Path

import pytest

from conftest import run

LISTING_DEADLINE = 30  # seconds: only against a hang; the folder is re-listed every 2 s


def write_tree(root: Path, rng: random.Random, count: int) -> dict[str, str]:
    """`count` files of 1 to 200 KiB of random bytes; name -> SHA-256."""
    sums = {}
    for i in range(count):
        data = rng.randbytes(rng.randint(1, 200) << 10)
        (root / f"f{i:03d}").write_bytes(data)
        sums[f"f{i:03d}"] = hashlib.sha256(data).hexdigest()
    return sums


def sums_of(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.glob("f*"))}


def xattrs(path: Path) -> dict[str, str]:
    """The `user.bucketdisk.*` attributes, as getfattr shows them."""
    out = run("getfattr", "--absolute-names", "-d", "-m", "^user\\.bucketdisk\\.", path, check=True).stdout
    return {k.removeprefix("user.bucketdisk."): v.strip('"') for line in out.splitlines() if "=" in line
            for k, v in [line.split("=", 1)]}


def wait_listing(folder: Path, expected: list[str]) -> list[str]:
    end = time.monotonic() + LISTING_DEADLINE
    while sorted(os.listdir(folder)) != expected and time.monotonic() < end:
        time.sleep(0.2)
    return sorted(os.listdir(folder))


class Writer(threading.Thread):
    """Writes and fsyncs numbered files into the live filesystem until stopped."""

    def __init__(self, root: Path) -> None:
        super().__init__(daemon=True)
        self.root, self.stop, self.written, self.error = root, threading.Event(), 0, None

    def run(self) -> None:
        rng = random.Random(7)
        try:
            while not self.stop.is_set():
                with open(self.root / f"live{self.written:04d}", "wb") as f:
                    f.write(rng.randbytes(64 << 10))
                    f.flush()
                    os.fsync(f.fileno())
                self.written += 1
        except OSError as e:
            self.error = e


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
def test_old_states_are_browsed_beside_the_live_disk(bd, tmp_path):
    vol = bd.create(size="128M", block_size="64K")
    m = bd.mount(vol)
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    ext = bd.loop_mount(m.file, tmp_path / "ext")
    rng = random.Random(14)
    tree_a = write_tree(ext, rng, 40)
    bd.ok("snapshot", "create", str(m.path), "--freeze", str(ext), "--name", "s1")
    for name in sorted(tree_a)[::2]:  # half overwritten, some deleted
        (ext / name).write_bytes(rng.randbytes(50 << 10))
    for name in sorted(tree_a)[1:10:3]:
        (ext / name).unlink()
    tree_b = sums_of(ext)
    bd.ok("snapshot", "create", str(m.path), "--freeze", str(ext), "--name", "s2")

    writer = Writer(ext)
    writer.start()
    try:
        folder = m.path / "snapshots"
        assert sorted(os.listdir(m.path)) == ["file", "snapshots", "stats"]
        assert wait_listing(folder, ["Latest", "s1", "s2"]) == ["Latest", "s1", "s2"]
        assert os.readlink(folder / "Latest") == "s2"
        assert os.listdir(folder / "Latest") == ["file"]
        meta = xattrs(folder / "s1")
        assert (meta["number"], meta["name"], meta["type"], meta["state"]) == ("1", "s1", "manual", "complete")
        assert meta["started"].endswith("Z") and meta["completed"] >= meta["started"]
        assert xattrs(folder / "s2")["number"] == "2"
        with pytest.raises(OSError) as refused:
            os.open(folder / "s1" / "file", os.O_RDWR)
        assert refused.value.errno in (errno.EROFS, errno.EACCES)
        with pytest.raises(OSError):
            os.setxattr(folder / "s1", "user.bucketdisk.name", b"other")
        for name, expected in (("s1", tree_a), ("s2", tree_b)):
            image = folder / name / "file"
            old = bd.loop_mount(image, tmp_path / f"old-{name}", read_only=True)
            assert sums_of(old) == expected, f"{name} does not hold the files it was taken with"
            assert not list(old.glob("live*")), f"{name} shows writes made after it"
            bd.loop_umount(old, image)
    finally:
        writer.stop.set()
        writer.join(60)
    assert writer.error is None, writer.error
    assert writer.written > 0
    assert sums_of(ext) == tree_b  # the live disk stayed writable beside them

    bd.ok("snapshot", "delete", str(m.path), "s2")
    assert wait_listing(folder, ["Latest", "s1"]) == ["Latest", "s1"]
    assert os.readlink(folder / "Latest") == "s1"
    bd.loop_umount(ext, m.file)
    bd.unmount(m)
    assert run("e2fsck", "-fn", vol_image(bd, vol, tmp_path), timeout=180).returncode == 0


def vol_image(bd, vol, tmp_path: Path) -> Path:
    """The live disk, copied out through a read-only mount."""
    ro = bd.mount(vol, tmp_path / "ro", read_only=True)
    image = tmp_path / "live.img"
    image.write_bytes(ro.file.read_bytes())
    bd.unmount(ro)
    return image
