#!/usr/bin/env bash
# Installs everything bucketdisk needs on a fresh Debian/Ubuntu machine:
# system packages (libfuse 3 and its headers, fio, e2fsprogs, a compiler and Python's headers)
# and a virtualenv in .venv with bucketdisk and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

PACKAGES=(fuse3 libfuse3-dev fio e2fsprogs util-linux gcc python3-dev python3-venv s3backer attr rsync)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/pip install -q '.[test]' 2>&1 | grep -v "is ignored" || true
.venv/bin/bucketdisk --version
