#!/usr/bin/env bash
# The real-GPU verification kit (bench/device/README.md): the GPU kernel tests on this adapter,
# then kiln's GPU path on the three models' real layouts (synthesized, seeded) under every
# variant family, against the CPU-path references in bench/device/references/, then decode and
# prefill benchmarks; results in one JSON file under bench/results/.
#
#   bench/device/run.sh [--quick] [--models smollm2,gemma3,qwen2] [--out FILE]
#
# --quick: SmolLM2 only, four variant families, short benchmarks, no kernel tests (CI runs it
# on lavapipe after the workspace tests, so that the kit cannot rot). Uses the binaries of
# bench/device/pack.sh where bench/device/carry/ holds them (a lent machine), else builds them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
quick=()
models=smollm2,gemma3,qwen2
out=()
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=(--quick); models=smollm2 ;;
    --models) models="$2"; shift ;;
    --out) out=(--out "$2"); shift ;;
    *) echo "run.sh: unknown option $1 (--quick, --models LIST, --out FILE)" >&2; exit 2 ;;
  esac
  shift
done
# The kernel tests need no model file; their real-model cases skip loudly. A missing adapter
# fails the kernel tests and the checks only where KILN_REQUIRE_GPU=1 (CI, a lent machine).
export KILN_SKIP_MODEL_TESTS=1
export XDG_RUNTIME_DIR="${XDG_RUNTIME_DIR:-$(mktemp -d)}"
chmod 700 "$XDG_RUNTIME_DIR"
# A lent NVIDIA machine: its Vulkan driver's manifest where the loader does not look by itself.
nv=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -z "${VK_DRIVER_FILES:-}" ] && [ -f "$nv" ]; then export VK_DRIVER_FILES="$nv"; fi
# Not `grep -q`: it stops reading early, ldconfig dies of SIGPIPE and pipefail fails the test.
if ! ldconfig -p | grep libvulkan.so.1 >/dev/null; then
  echo "run.sh: no Vulkan loader (libvulkan.so.1): install libvulkan1 (on a lent machine, carry" \
       "its .deb)" >&2
  [ "${KILN_REQUIRE_GPU:-}" = 1 ] && exit 1
  echo "run.sh: SKIPPED the device kit (set KILN_REQUIRE_GPU=1 to make this a failure)" >&2
  exit 0
fi
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
if [ -d bench/device/carry ]; then
  mkdir -p "$work/bin/tests"
  gunzip -c bench/device/carry/kiln.gz > "$work/bin/kiln"
  for t in bench/device/carry/tests/*.gz; do
    gunzip -c "$t" > "$work/bin/tests/$(basename "$t" .gz)"
  done
  chmod +x "$work/bin/kiln" "$work"/bin/tests/*
  kiln="$work/bin/kiln"
  tests=("$work"/bin/tests/*)
else
  cargo build --release --quiet -p kiln-cli
  kiln=target/release/kiln
  tests=()
  if [ ${#quick[@]} -eq 0 ]; then
    mapfile -t tests < <(cargo test --release -p kiln --no-run --message-format=json \
      --test gpu_core --test gpu_elem --test gpu_kernels --test gpu_fused --test gpu_matmul \
      --test gpu_attention --test gpu_sample --test gpu_int8 --test gpu_recurrent \
      --test tiny_models 2>/dev/null | python3 -c '
import json, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["profile"]["test"]:
        print(m["executable"])')
  fi
fi
# 1. The kernel tests on this adapter: each binary's summary line.
echo "[" > "$work/kernel-tests.json"
sep=""
if [ ${#quick[@]} -eq 0 ]; then
  for t in "${tests[@]}"; do
    name="$(basename "$t" | sed 's/-[0-9a-f]*$//')"
    start=$(date +%s)
    if summary="$(timeout 300 "$t" 2>"$work/$name.err" | grep -E '^test result' | tail -1)"; then
      status=ok
    else
      status=failed
      tail -40 "$work/$name.err" >&2 || true
    fi
    echo "kernel tests $name: $status: $summary" >&2
    printf '%s{"test": "%s", "status": "%s", "summary": "%s", "seconds": %s}\n' \
      "$sep" "$name" "$status" "$summary" "$(( $(date +%s) - start ))" >> "$work/kernel-tests.json"
    sep=","
  done
fi
echo "]" >> "$work/kernel-tests.json"
# 2, 3. The model-level checks and benchmarks.
status=0
python3 bench/device/kit.py check --kiln "$kiln" --models "$models" --work "$work" \
  --kernel-tests "$work/kernel-tests.json" "${quick[@]}" "${out[@]}" || status=$?
if grep -q '"failed"' "$work/kernel-tests.json"; then
  echo "run.sh: kernel tests failed on this adapter" >&2
  exit 1
fi
exit "$status"
