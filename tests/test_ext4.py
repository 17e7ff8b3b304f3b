"""A real ext4 on a bucketdisk: mkfs, loop mount, copy a deterministic tree in,
durable unmount, remount and check every byte; then delete, fstrim, and see
objects freed in the store; after the last unmount the store holds exactly the
documented key layout. Runs on both stores (file:// and s3:// on SeaweedFS)."""
from __future__ import annotations

import hashlib
import os
import random
import shutil
from pathlib import Path

import pytest

from conftest import KiB, MiB, run, s3_list

N_FILES = 3000
N_LARGE = 40
TOP_DIRS = 24


def make_tree(root: Path, seed: int = 4154, n_files: int = N_FILES, n_large: int = N_LARGE,
              small_max: int = 32 * KiB, large: tuple[int, int] = (256 * KiB, 2 * MiB)) -> dict[str, str]:
    """Write a deterministic tree of n_files files; returns relpath -> sha256 hex.

    Mostly small files (0..small_max), n_large larger ones (sizes in `large`),
    a mix of incompressible and compressible contents, nested up to 4 levels."""
    rng = random.Random(seed)
    dirs = []
    for t in range(TOP_DIRS):
        top = Path(f"d{t:02d}")
        dirs.append(top)
        for s in range(rng.randint(1, 4)):
            sub = top / f"s{s}"
            dirs.append(sub)
            if rng.random() < 0.5:
                dirs.append(sub / "deep" / f"x{s}")
    large_ones = set(rng.sample(range(n_files), n_large))
    words = [rng.randbytes(rng.randint(3, 9)).hex().encode() for _ in range(64)]
    hashes = {}
    for i in range(n_files):
        d = rng.choice(dirs)
        rel = d / f"f{i:04d}.{rng.choice(['bin', 'txt', 'dat'])}"
        size = rng.randint(*large) if i in large_ones else rng.randint(0, small_max)
        if rng.random() < 0.3:  # compressible
            chunk = b" ".join(rng.choice(words) for _ in range(200)) + b"\n"
            data = (chunk * (size // len(chunk) + 1))[:size]
        else:
            data = rng.randbytes(size)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        hashes[rel.as_posix()] = hashlib.sha256(data).hexdigest()
    return hashes


def tree_hashes(root: Path) -> dict[str, str]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        if Path(dirpath) == root and "lost+found" in dirnames:
            dirnames.remove("lost+found")
        for fn in filenames:
            p = Path(dirpath) / fn
            h = hashlib.sha256()
            with open(p, "rb") as f:
                while chunk := f.read(MiB):
                    h.update(chunk)
            out[p.relative_to(root).as_posix()] = h.hexdigest()
    return out


def assert_tree(root: Path, expected: dict[str, str]) -> None:
    got = tree_hashes(root)
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    assert not missing, f"{len(missing)} files missing, e.g. {missing[:5]}"
    assert not extra, f"{len(extra)} unexpected files, e.g. {extra[:5]}"
    bad = sorted(k for k in expected if got[k] != expected[k])
    assert not bad, f"{len(bad)} files with wrong contents, e.g. {bad[:5]}"


@pytest.mark.fuse_adapters(mfusepy_on=("file",))
@pytest.mark.timeout(480)
def test_ext4_tree_survives_remount_and_fstrim_frees_objects(bd, tmp_path):
    src = tmp_path / "src"
    expected = make_tree(src)
    total = sum((src / k).stat().st_size for k in expected)
    assert 50 * MiB < total < 110 * MiB  # sanity of the generator itself

    vol = bd.create(size="1G", block_size="1M")
    m = bd.mount(vol)
    run("mkfs.ext4", "-q", "-F", m.file, timeout=180, check=True)
    ext = bd.loop_mount(m.file, tmp_path / "ext")
    run("cp", "-a", f"{src}/.", f"{ext}/", timeout=300, check=True)
    run("sync", timeout=180, check=True)
    bd.loop_umount(ext, m.file)
    bd.unmount(m)
    vol.assert_clean_layout()
    full = bd.info(vol)
    assert full["objects"] == len(vol.object_keys()) > 0
    assert full["mapped_blocks"] >= full["objects"]

    # remount and read every file back
    m = bd.mount(vol, m.path)
    ext = bd.loop_mount(m.file, ext, read_only=True)
    assert_tree(ext, expected)
    bd.loop_umount(ext, m.file)

    # delete half of the tree (every other top-level directory), then trim
    ext = bd.loop_mount(m.file, ext)
    kept = dict(expected)
    for t in range(0, TOP_DIRS, 2):
        shutil.rmtree(ext / f"d{t:02d}")
        prefix = f"d{t:02d}/"
        for k in [k for k in kept if k.startswith(prefix)]:
            del kept[k]
    assert 0 < len(kept) < len(expected)
    run("sync", timeout=180, check=True)
    run("fstrim", ext, timeout=300, check=True)
    bd.loop_umount(ext, m.file)
    bd.unmount(m)
    trimmed = bd.info(vol)
    assert trimmed["objects"] == len(vol.object_keys())
    assert trimmed["objects"] < full["objects"], "fstrim freed no objects"
    assert trimmed["mapped_blocks"] < full["mapped_blocks"]

    # the filesystem is consistent and the kept files are intact
    m = bd.mount(vol, m.path)
    run("e2fsck", "-f", "-n", m.file, timeout=300, check=True)
    ext = bd.loop_mount(m.file, ext, read_only=True)
    assert_tree(ext, kept)
    bd.loop_umount(ext, m.file)
    bd.unmount(m)

    # FORMAT.md: after a clean unmount the listing of the whole place is `volume`,
    # `blocks/…`, `map/pages/…` and exactly one `map/roots/…`; no journal, no lock,
    # nothing else (file://: the store's .tmp/ scratch dir empty; s3://: no key next
    # to the prefix, and nothing else in the test's bucket)
    layout = vol.assert_clean_layout()
    assert len(layout["block"]) == trimmed["objects"], "objects changed while the volume was only read"
    if vol.kind == "s3":
        everything = s3_list(vol.place.server, vol.place.bucket)
        outside = sorted(k for k in everything if not k.startswith(vol.place.prefix + "/"))
        assert not outside, f"keys outside the volume's prefix in its bucket: {outside[:10]}"
