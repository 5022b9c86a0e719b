#!/usr/bin/env bash
# Fetches llama.cpp's vocab-only test GGUFs and their tokenizer test cases into models/vocab/.
#
#   scripts/fetch_llama_vocab.sh
#
# They ship in the llama-cpp-python source package (vendor/llama.cpp/models/ggml-vocab-*.gguf with
# .inp/.out files: inputs separated by "\n__ggml_vocab_test__\n", one line of ids per input).
# runtime/tests/tokenizer_vocab.rs checks kiln's tokenizers against them.
set -euo pipefail
VERSION=0.3.36
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DEST="$ROOT/models/vocab"
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT

if compgen -G "$DEST/ggml-vocab-*.gguf" >/dev/null; then
    echo "llama.cpp vocab files are already in $DEST"
    exit 0
fi

# LLAMA_CPP_SDIST may name an already downloaded llama_cpp_python-$VERSION.tar.gz.
if [[ -n "${LLAMA_CPP_SDIST:-}" ]]; then
    cp "$LLAMA_CPP_SDIST" "$TMP/"
else
    python3 -m pip download --quiet --no-deps --no-binary :none: "llama-cpp-python==$VERSION" -d "$TMP"
fi
mkdir -p "$DEST"
tar -xzf "$TMP/llama_cpp_python-$VERSION.tar.gz" -C "$TMP" \
    --wildcards "llama_cpp_python-$VERSION/vendor/llama.cpp/models/ggml-vocab-*" \
    "llama_cpp_python-$VERSION/vendor/llama.cpp/models/templates/google-gemma-2-2b-it.jinja"
cp "$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp/models/"ggml-vocab-* "$DEST/"
# Gemma's chat template, for scripts/make_tokenizer_fixtures.py (Gemma 3 270M's GGUF has none).
cp "$TMP/llama_cpp_python-$VERSION/vendor/llama.cpp/models/templates/google-gemma-2-2b-it.jinja" "$DEST/"
echo "llama.cpp vocab files are in $DEST:"
ls "$DEST"
