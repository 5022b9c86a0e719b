#!/usr/bin/env bash
# Builds the kiln-web package twice, SIMD128 and scalar, into web/pkg/{simd,scalar}/ (git-ignored)
# with wasm-bindgen (`--target web`: ES modules that load in browsers, and in Node from bytes).
# web/js/kiln.js picks one at run time. Needs the wasm32 target and wasm-bindgen-cli at the
# version of the wasm-bindgen crate in Cargo.lock (.ci/run installs both).
# Usage: scripts/build-web.sh [--dev]   (--dev: unoptimised, for quick checks)
set -euo pipefail
cd "$(dirname "$0")/.."

profile=release
if [ "${1:-}" = "--dev" ]; then profile=dev; fi
dir=$([ "$profile" = dev ] && echo debug || echo release)

want=$(grep -A1 '^name = "wasm-bindgen"$' Cargo.lock | sed -n 's/^version = "\(.*\)"/\1/p')
have=$(wasm-bindgen --version 2>/dev/null | awk '{print $2}')
if [ "$want" != "$have" ]; then
  echo "wasm-bindgen-cli $want is needed (found: ${have:-none}):" \
    "cargo install wasm-bindgen-cli --version $want" >&2
  exit 1
fi

build() { # flavor rustflags
  local flavor=$1 flags=$2 target=target/wasm-$1
  RUSTFLAGS="$flags" CARGO_TARGET_DIR=$target \
    cargo build -q -p kiln-web --lib --target wasm32-unknown-unknown --profile "$profile"
  rm -rf "web/pkg/$flavor"
  wasm-bindgen --target web --out-dir "web/pkg/$flavor" \
    "$target/wasm32-unknown-unknown/$dir/kiln_web.wasm"
  echo "web/pkg/$flavor: $(du -h "web/pkg/$flavor/kiln_web_bg.wasm" | cut -f1)"
}
build simd "-C target-feature=+simd128"
build scalar ""
