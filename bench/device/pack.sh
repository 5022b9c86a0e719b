#!/usr/bin/env bash
# Packs what bench/device/run.sh runs on a lent GPU machine, which has no Rust toolchain and no
# network: the release `kiln` CLI and the GPU test binaries (those that need no model file),
# stripped and gzipped into bench/device/carry/ (git-ignored; about 25 MB). Name
# `bench/device/carry` in the device tool's `carry`, then run `bench/device/run.sh` there.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
out=bench/device/carry
rm -rf "$out"
mkdir -p "$out/tests"
cargo build --release -p kiln-cli
strip -o "$out/kiln" target/release/kiln
# The GPU tests that bring their own inputs (the real-model ones skip loudly there).
tests=(gpu_core gpu_elem gpu_kernels gpu_fused gpu_matmul gpu_attention gpu_sample gpu_int8
       gpu_recurrent tiny_models)
args=()
for t in "${tests[@]}"; do args+=(--test "$t"); done
cargo test --release -p kiln --no-run --message-format=json "${args[@]}" 2>/dev/null |
  python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["target"]["name"], m["executable"])
' | while read -r name exe; do strip -o "$out/tests/$name" "$exe"; done
gzip -9 "$out/kiln" "$out"/tests/*
du -sh "$out"
