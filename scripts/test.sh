#!/usr/bin/env bash
# The test command (README and CI). pytest exits 5 when it collects no test: that fails here too.
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 -m pytest -q -p no:cacheprovider --durations=15 "$@"
