"""An install without the libfuse 3 binding (setup.py with
BUCKETDISK_FAST_FUSE=0, as where libfuse 3's headers are missing) serves
its mounts through mfusepy.  Builds this checkout into a fresh venv with
pip, then mounts a file:// volume with it through real FUSE.  Slow-ish
(a minute or two: a venv, the dependencies from pip's cache, the Cython
hot paths compiled), so it is one test."""
from __future__ import annotations

import json
import os
import random
import shutil
import sys
from pathlib import Path

import pytest

from conftest import MOUNT_TIMEOUT, UNMOUNT_TIMEOUT, assert_cli_error, is_mounted, run, umount_path

REPO = Path(__file__).resolve().parent.parent
# what a build leaves in a checkout: the copy is built from sources only
NOT_SOURCES = shutil.ignore_patterns(".git", ".venv", "build", "*.egg-info", "*.so", "*.c", "__pycache__",
                                     ".pytest_cache", ".benchmarks")


@pytest.mark.timeout(900)
def test_an_install_without_the_fast_binding_mounts_through_mfusepy(tmp_path, janitor):
    source, venv = tmp_path / "src", tmp_path / "venv"
    shutil.copytree(REPO, source, ignore=NOT_SOURCES)
    run(sys.executable, "-m", "venv", venv, timeout=120, check=True)
    env = dict(os.environ, BUCKETDISK_FAST_FUSE="0")
    built = run(venv / "bin" / "pip", "install", "-v", source, env=env, timeout=600, check=True)
    assert "BUCKETDISK_FAST_FUSE=0: the libfuse 3 binding is skipped" in built.stdout + built.stderr
    site = next((venv / "lib").glob("python3*/site-packages"))
    assert not list((site / "bucketdisk" / "fs").glob("_fuse*")), "the binding was built anyway"
    assert list((site / "bucketdisk" / "codec").glob("_hot*.so")), "the other hot paths were not built"

    cli = venv / "bin" / "bucketdisk"
    version = run(cli, "--version", check=True).stdout
    assert "mfusepy" in version and "not built" in version, version

    url = f"file://{tmp_path / 'vol'}"
    run(cli, "create", url, "--size", "32M", "--block-size", "64K", check=True)
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    refused = run(cli, "mount", url, mnt, "--fuse", "lowlevel")
    assert "--fuse lowlevel" in assert_cli_error(refused)
    assert not is_mounted(mnt)

    janitor.push(f"mount {mnt}", lambda: is_mounted(mnt) and (run(cli, "unmount", mnt, timeout=UNMOUNT_TIMEOUT),
                                                              umount_path(mnt)))
    run(cli, "mount", url, mnt, "--log", tmp_path / "daemon.log", timeout=MOUNT_TIMEOUT, check=True)
    stats = json.loads(run(cli, "stats", mnt, "--json", check=True).stdout)
    assert stats["fuse_adapter"] == "mfusepy", stats
    payload = random.Random(17).randbytes(3 << 20)
    fd = os.open(mnt / "file", os.O_RDWR)
    try:
        assert os.pwrite(fd, payload, 100_000) == len(payload)
        os.fsync(fd)
    finally:
        os.close(fd)
    run(cli, "unmount", mnt, timeout=UNMOUNT_TIMEOUT, check=True)
    assert not is_mounted(mnt)

    run(cli, "mount", url, mnt, "--read-only", "--log", tmp_path / "daemon.log", timeout=MOUNT_TIMEOUT, check=True)
    with open(mnt / "file", "rb") as f:
        f.seek(100_000)
        assert f.read(len(payload)) == payload
    run(cli, "unmount", mnt, timeout=UNMOUNT_TIMEOUT, check=True)
    assert not is_mounted(mnt)
    assert "Traceback" not in (tmp_path / "daemon.log").read_text()
