#!/usr/bin/env bash
# Installs everything bucketdisk needs on a fresh Debian/Ubuntu machine:
# system packages (libfuse 3 and its headers, fio, e2fsprogs, a compiler and Python's headers,
# samba with its vfs modules (vfs_fruit) and smbclient for the Time Machine share test)
# and a virtualenv in .venv with bucketdisk and its test tools.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "ci/install.sh: run as root (it installs Debian packages)" >&2
    exit 1
fi

# fuse3 and libfuse3-3: fusermount3 and the library both FUSE adapters load (mfusepy through ctypes);
# libfuse3-dev: the headers setup.py builds the low-level binding against; tinyproxy: tests/test_s3_proxy.py
PACKAGES=(fuse3 libfuse3-3 libfuse3-dev fio e2fsprogs util-linux mount systemd gcc python3-dev python3-venv s3backer attr rsync samba samba-vfs-modules smbclient tinyproxy)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    # Debian's samba enables and starts smbd and nmbd for the whole machine (port 445 on
    # every interface, the stock smb.conf); the tests run a private smbd on loopback, so
    # a samba installed just now is stopped and disabled again. One installed before is left alone.
    if [[ " ${missing[*]} " == *" samba "* ]] && [ -d /run/systemd/system ]; then
        systemctl disable --now smbd nmbd >/dev/null 2>&1 || true
        echo "samba installed for the tests; its system services smbd and nmbd are stopped and disabled"
    fi
fi

PYTHON=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/pip install -q --upgrade pip 2>&1 | grep -v "is ignored" || true
.venv/bin/pip install -q '.[test]' 2>&1 | grep -v "is ignored" || true
.venv/bin/bucketdisk --version
