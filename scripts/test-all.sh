#!/usr/bin/env bash
# Runs every check and test of the workspace, installing what the tests need first.
# Works on a fresh machine of the project's kind (see README.md).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo test --workspace
