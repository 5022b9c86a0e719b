#!/usr/bin/env bash
# Fuzzes kiln's file and text surfaces with cargo-fuzz (libFuzzer), each target for a bounded
# time: `gguf` (any bytes through the GGUF reader, whole and streamed, the model config and the
# tokenizer constructor), `bpe` and `spm` (any text through SmolLM2's byte-level BPE and Gemma
# 3's SentencePiece tokenizers). A panic, an abort, a leak or an allocation over 2 GiB is a
# finding: libFuzzer stops, the input lands in fuzz/artifacts/<target>/ and this script fails.
# Keep each finding as a regression test (runtime/tests/broken_files.rs or the tokenizer tests)
# once it is fixed.
#
#   scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 30; scripts/test.sh runs 20)
#
# Installs what is missing: nightly Rust (minimal profile) and cargo-fuzz 0.13.2. Seeds: the
# broken-file corpus (KILN_WRITE_CORPUS, runtime/tests/broken_files.rs) for `gguf`; the
# tokenizer fixtures' texts for `bpe` and `spm`. Needs the models (scripts/install-models.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}

rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2

seeds=fuzz/corpus
mkdir -p "$seeds/gguf" "$seeds/bpe" "$seeds/spm"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
KILN_WRITE_CORPUS="$tmp" cargo test -q --release -p kiln --test broken_files >/dev/null
cp "$tmp"/*.gguf "$seeds/gguf/"
python3 - "$seeds" <<'PY'
import glob, json, os, sys
seeds = sys.argv[1]
for path in glob.glob("runtime/tests/fixtures/reference/tokenize_*.json"):
    for i, case in enumerate(json.load(open(path)).get("cases", [])):
        text = case.get("text")
        if isinstance(text, str):
            for t in ("bpe", "spm"):
                with open(os.path.join(seeds, t, f"{os.path.basename(path)}-{i}"), "w") as f:
                    f.write(text)
PY

for target in gguf bpe spm; do
  echo "fuzz.sh: $target for ${secs}s"
  # No sanitizer: kiln is safe Rust but for the file mapping, which these targets do not use
  # on fuzzed input; debug assertions on (overflow checks).
  log="$tmp/$target.log"
  if ! cargo +nightly fuzz run --fuzz-dir fuzz -s none -a "$target" "$seeds/$target" -- \
    -max_total_time="$secs" -rss_limit_mb=2048 -malloc_limit_mb=2048 -print_final_stats=1 \
    >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz.sh: $target failed (an input that fails is kept in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E "^Done|stat::number_of_executed_units" "$log"
done
