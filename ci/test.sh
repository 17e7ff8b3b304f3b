#!/usr/bin/env bash
# Installs everything (ci/install.sh) and runs the whole test suite, on
# BUCKETDISK_TEST_WORKERS pytest-xdist workers (default 2: most tests wait on
# mounts, fsyncs and the server rather than the CPU; 0 runs them in this process).
# Extra arguments go to pytest, e.g.  ci/test.sh -k punch
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install.sh
exec .venv/bin/pytest -n "${BUCKETDISK_TEST_WORKERS:-2}" "$@"
