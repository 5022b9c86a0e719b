#!/usr/bin/env bash
# Device run: kiln's native wgpu path on Vulkan on a real GPU, with synthetic weights in the
# real models' layouts (the weights themselves are too big to travel).
set -u
for f in .gl/*.deb; do dpkg -x $f /; done; ldconfig
export XDG_RUNTIME_DIR=/tmp KILN_BACKEND=vulkan KILN_REQUIRE_GPU=1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv | tee $OUT/gpu.txt
cd .dev
if ! ./gpu_core 2>&1 | tail -12 | tee $OUT/gpu_core.txt; then
  export VK_DRIVER_FILES=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
  ./gpu_core 2>&1 | tail -12 | tee $OUT/gpu_core.txt
fi
for m in smollm2 gemma3 qwen2; do
  ./kiln synth --header $m.head --out /tmp/$m.gguf
  for split in group thread; do
    KILN_GEMV_SPLIT=$split timeout 150 ./kiln bench --model /tmp/$m.gguf --backend gpu \
      --prompt-tokens 64 --gen-tokens 128 --reps 3 --json | tee $OUT/bench-$m-$split.json
  done
done
