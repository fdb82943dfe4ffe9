#!/usr/bin/env bash
# The test command: set up (packages, build) and run every test with ctest.
# Extra arguments go to ctest (e.g. scripts/test.sh -R ops).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
source scripts/setup.sh
cd build
ctest --output-on-failure --timeout 900 "$@"
