#!/usr/bin/env bash
# The project's one test command: `scripts/test.sh` (CI runs it through .ci/run).
#
#   1. cargo fmt --all --check                               fail fast on style
#   2. cargo clippy --workspace --all-targets -D warnings    fail fast on lints
#   3. scripts/install-test-deps.sh                          peers the e2e tests talk to
#   4. cargo build --workspace --bins                        e2e tests spawn these binaries
#   5. cargo test --workspace --doc, then cargo nextest run --workspace --no-fail-fast
#      or, without cargo-nextest, cargo test --workspace --no-fail-fast (doc tests included)
#
# Extra arguments go to the test runner: a filterset with nextest (`scripts/test.sh -E
# 'test(/e2e_/)'`), a test-name filter with cargo test.
#
# Exported for the end-to-end tests:
#   FUMEGRID_TEST_VENV  Python venv with pymodbus/pyserial (target/test-venv)
#   FUMEGRID_BIN_DIR    where the built binaries are (target/debug)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --all --check"
cargo fmt --all --check

step "cargo clippy --workspace --all-targets -- -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

step "scripts/install-test-deps.sh"
scripts/install-test-deps.sh

export FUMEGRID_TEST_VENV="$root/target/test-venv"
export FUMEGRID_BIN_DIR="$target_dir/debug"

step "cargo build --workspace --bins"
cargo build --workspace --bins

status=0
if cargo nextest --version >/dev/null 2>&1; then
    # Doc tests first: nextest cannot run them, and its summary should be the last word.
    step "cargo test --workspace --doc"
    cargo test --workspace --doc || status=$?
    step "cargo nextest run --workspace --no-fail-fast $*"
    cargo nextest run --workspace --no-fail-fast "$@" || status=$?
else
    step "cargo test --workspace --no-fail-fast $* (cargo-nextest not installed)"
    cargo test --workspace --no-fail-fast "$@" || status=$?
fi

if [[ "$status" -ne 0 ]]; then
    step "FAILED (exit $status)"
fi
exit "$status"
