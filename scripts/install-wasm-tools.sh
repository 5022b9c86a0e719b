#!/usr/bin/env bash
# The wasm toolchain that the kiln-web build (scripts/build-web.sh) and the wasm32 tests need:
# rustup's wasm32-unknown-unknown target, and wasm-bindgen-cli (wasm-bindgen and
# wasm-bindgen-test-runner) at the wasm-bindgen version in Cargo.lock, which they must match.
# Idempotent: installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."
rustup target list --installed | grep -qx wasm32-unknown-unknown ||
  rustup target add wasm32-unknown-unknown
WBG=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
if ! wasm-bindgen --version 2>/dev/null | grep -q "$WBG" ||
  ! wasm-bindgen-test-runner --version 2>/dev/null | grep -q "$WBG"; then
  cargo install wasm-bindgen-cli --version "$WBG"
fi
