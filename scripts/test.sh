#!/usr/bin/env bash
# Every test: Rust (unit, integration, end-to-end on a real btcd regtest), then the bindings
# (Python, Kotlin, Swift where a toolchain exists). The workspace is built once, in release,
# and every runner shares that target directory.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
command -v go >/dev/null || { echo "error: Go is needed to install btcd (go install)"; exit 1; }
command -v cargo >/dev/null || { echo "error: Rust (cargo) is needed"; exit 1; }

# btcd is installed by the project's own code when missing; do it once up front so the
# parallel tests do not all wait for it.
cargo build --release --workspace
scripts/check-deps.sh
./target/release/flotilla regtest install

cargo test --release --workspace --no-fail-fast -- --test-threads=2
if [ -x scripts/bindings.sh ]; then
  scripts/bindings.sh
fi
