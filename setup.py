"""Build script: maps the repository folders onto the `bucketdisk` package and
compiles the Cython hot paths.  A failed compile fails the install; there is
deliberately no pure-Python fallback for them.

The libfuse 3 low-level binding (bucketdisk.fs._fuse, the Linux fast FUSE
adapter) is built only where libfuse 3's headers are found (pkg-config
fuse3, else /usr/include/fuse3/fuse_lowlevel.h); BUCKETDISK_FAST_FUSE=0
leaves it out even then.  Without it, mounts are served through mfusepy
(engine/fs/adapters.py)."""
import glob
import os
import shutil
import subprocess

from Cython.Build import cythonize
from setuptools import Extension, setup

FUSE3_HEADER = "/usr/include/fuse3/fuse_lowlevel.h"


def fuse3_include_dirs() -> list[str] | None:
    """libfuse 3's include directories, or None when its headers are not here."""
    if shutil.which("pkg-config"):
        found = subprocess.run(["pkg-config", "--cflags-only-I", "fuse3"], capture_output=True, text=True)
        if found.returncode == 0:
            dirs = [flag[2:] for flag in found.stdout.split() if flag.startswith("-I")]
            if any(os.path.exists(os.path.join(d, "fuse_lowlevel.h")) for d in dirs):
                return dirs
    return [os.path.dirname(FUSE3_HEADER)] if os.path.exists(FUSE3_HEADER) else None


def forget_built_binding() -> None:
    """Delete a binding an earlier build of this checkout left in build/:
    setuptools installs everything under build/lib*, so it would be
    installed though this build skips it."""
    for built in glob.glob("build/lib*/bucketdisk/fs/_fuse*.so"):
        os.remove(built)
        print(f"bucketdisk: removed {built}, left by an earlier build")


def fast_fuse() -> list[Extension]:
    """The libfuse 3 binding's Extension, or none (saying why, in one line)."""
    if os.environ.get("BUCKETDISK_FAST_FUSE", "1").strip().lower() in ("0", "no", "false", "off"):
        print("bucketdisk: BUCKETDISK_FAST_FUSE=0: the libfuse 3 binding is skipped; mounts use mfusepy")
        forget_built_binding()
        return []
    include_dirs = fuse3_include_dirs()
    if include_dirs is None:
        print("bucketdisk: libfuse 3 headers not found (pkg-config fuse3, " + FUSE3_HEADER + "): the libfuse 3 "
              "binding is skipped; mounts use mfusepy")
        forget_built_binding()
        return []
    return [Extension(
        "bucketdisk.fs._fuse",
        ["engine/fs/_fuse.pyx"],
        include_dirs=include_dirs,
        libraries=["fuse3"],
        extra_compile_args=["-O3"],
    )]


PACKAGES = {
    "bucketdisk": "engine",
    "bucketdisk.store": "engine/store",
    "bucketdisk.codec": "engine/codec",
    "bucketdisk.volume": "engine/volume",
    "bucketdisk.device": "engine/device",
    "bucketdisk.fs": "engine/fs",
    "bucketdisk.cli": "cli",
}

EXTENSIONS = [
    Extension(
        "bucketdisk.codec._hot",
        ["engine/codec/_hot.pyx"],  # XXH3 from the xxhash package: no C library to link
        extra_compile_args=["-O3"],
    ),
    Extension(
        "bucketdisk.device._bitmap",
        ["engine/device/_bitmap.pyx"],
        extra_compile_args=["-O3"],
    ),
    Extension(
        "bucketdisk.device._table",
        ["engine/device/_table.pyx"],
        extra_compile_args=["-O3"],
    ),
]
EXTENSIONS += fast_fuse()

setup(
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    ext_modules=cythonize(EXTENSIONS, language_level=3),
)
