#!/usr/bin/env bash
# Installs everything (ci/install.sh) and runs the whole test suite.
# Extra arguments go to pytest, e.g.  ci/test.sh -k punch
set -euo pipefail
cd "$(dirname "$0")/.."
ci/install.sh
exec .venv/bin/pytest "$@"
