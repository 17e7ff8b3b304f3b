"""bucketdisk builds as users build it: `pip wheel .` and `pipx install .`
from a checkout, each from its own copy of the source (no build/ or .so of
an earlier build in it), with only a C compiler, Python's headers (and
libfuse 3's for the fast FUSE path) on the machine: no libxxhash.

Each builds the Cython extensions once (about a minute on a busy 2-core
machine); pip and pipx fetch the build tools and dependencies from the
package index, as a user's would.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PIP = [sys.executable, "-m", "pip"]
PIPX = Path(sys.executable).parent / "pipx"  # pyproject.toml's test extras install it
EMPTY_XXH3 = 0x2D06800538D394C2  # XXH3_64bits of b"" (tests/test_xxh3.py)
# What a fresh checkout would not hold: earlier builds and local state.
NOT_SOURCE = shutil.ignore_patterns(".git", ".venv", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                    "*.c", ".pytest_cache", ".benchmarks")
BUILD_TIMEOUT = 600


def source_copy(tmp_path: Path) -> Path:
    """A copy of the checkout's source files, as a fresh clone has them."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=NOT_SOURCE)
    return src


def compiled_modules() -> list[str]:
    """The extension modules a build must contain: the FUSE binding where
    libfuse 3's headers are (ci/install.sh installs them)."""
    names = ["bucketdisk/codec/_hot", "bucketdisk/device/_bitmap", "bucketdisk/device/_table"]
    if Path("/usr/include/fuse3/fuse_lowlevel.h").exists():
        names.append("bucketdisk/fs/_fuse")
    return names


def test_pip_wheel_builds_the_compiled_modules(tmp_path):
    src, out = source_copy(tmp_path), tmp_path / "wheels"
    proc = subprocess.run([*PIP, "wheel", "--no-deps", "-q", "-w", str(out), "."], cwd=src,
                          capture_output=True, text=True, timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = out.glob("bucketdisk-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        z.extractall(tmp_path / "unpacked")
    for module in compiled_modules():
        assert [n for n in names if n.startswith(module + ".") and n.endswith(".so")], (module, names)
    (hot,) = [n for n in names if n.startswith("bucketdisk/codec/_hot.") and n.endswith(".so")]
    needed = subprocess.run(["readelf", "-d", str(tmp_path / "unpacked" / hot)], capture_output=True, text=True,
                            check=True).stdout
    assert "libxxhash" not in needed and "(NEEDED)" in needed, needed  # XXH3 comes from the xxhash package
    assert "bucketdisk/cli/main.py" in names
    assert not [n for n in names if n.startswith(("tests/", "bench/", "ci/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "bucketdisk = bucketdisk.cli.main:main" in (tmp_path / "unpacked" / entry_points).read_text()
    # The codec from the wheel loads and hashes with the xxhash package, no C library beside it.
    check = ("import json, bucketdisk.codec._hot as h; "
             "print(json.dumps([h.__file__, h.xxh3_64(b''), h.page_checksums(bytes(8192), 4096).hex()]))")
    proc = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "PYTHONPATH": str(tmp_path / "unpacked")}, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    where, empty, pages = json.loads(proc.stdout)
    assert where.startswith(str(tmp_path / "unpacked"))
    assert empty == EMPTY_XXH3
    assert pages == (0x93D76FE148C689BA).to_bytes(8, "little").hex() * 2  # XXH3 of a zero page, twice


def test_pipx_installs_from_a_checkout(tmp_path):
    src, home, bin_dir = source_copy(tmp_path), tmp_path / "pipx", tmp_path / "bin"
    env = {**os.environ, "PIPX_HOME": str(home), "PIPX_BIN_DIR": str(bin_dir),
           "PIPX_MAN_DIR": str(tmp_path / "man"), "PIPX_DEFAULT_PYTHON": sys.executable}
    proc = subprocess.run([str(PIPX), "install", str(src)], env=env, capture_output=True, text=True,
                          timeout=BUILD_TIMEOUT)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    cli = bin_dir / "bucketdisk"
    from bucketdisk import __version__
    version = subprocess.run([str(cli), "--version"], capture_output=True, text=True, timeout=60)
    assert version.returncode == 0 and version.stdout.startswith(f"bucketdisk {__version__} (FUSE adapter: "), version
    # The installed command works on a volume: its codec, compiled in pipx's venv, frames the record.
    url = f"file://{tmp_path / 'volume'}"
    made = subprocess.run([str(cli), "create", url, "--size", "16M"], capture_output=True, text=True, timeout=60)
    assert made.returncode == 0, made.stderr
    info = subprocess.run([str(cli), "info", url, "--json"], capture_output=True, text=True, timeout=60)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["size"] == 16 << 20
    venv_python = home / "venvs" / "bucketdisk" / "bin" / "python"
    where = subprocess.run([str(venv_python), "-c", "import bucketdisk.codec._hot as h; print(h.__file__)"],
                           capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert where.stdout.startswith(str(home / "venvs" / "bucketdisk")), where
