#!/usr/bin/env bash
# The whole test suite: unit tests (cargo) and the integration tests, which
# need root and build real namespaces, veths and AF_XDP sockets.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
# Lint gates: formatting and clippy (warnings are errors).
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --release --locked
cargo test --release --locked --workspace
exec .venv/bin/python -m pytest -v -p no:cacheprovider tests/integration "$@"
