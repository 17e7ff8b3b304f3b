"""Build script: maps the repository folders onto the `bucketdisk` package and
compiles the Cython hot paths.  A failed compile fails the install; there is
deliberately no pure-Python fallback."""
from Cython.Build import cythonize
from setuptools import Extension, setup

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
    Extension(
        "bucketdisk.fs._fuse",
        ["engine/fs/_fuse.pyx"],
        include_dirs=["/usr/include/fuse3"],
        libraries=["fuse3"],
        extra_compile_args=["-O3"],
    ),
]

setup(
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    ext_modules=cythonize(EXTENSIONS, language_level=3),
)
