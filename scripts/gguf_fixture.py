#!/usr/bin/env python3
"""What Python's `gguf` package (llama.cpp's own reader) reads from each model, for kiln's tests.

    python3 scripts/gguf_fixture.py

Reads the models `scripts/install-models.sh all` puts in models/ and writes
runtime/tests/fixtures/gguf/{smollm2,gemma3,qwen2}.json: version, alignment, data offset, every
tensor (name, dims in ggml order, ggml type id, absolute offset, byte size), every scalar metadata
value, and for arrays their element type, length and first and last elements.
"""
import json
import os
import sys

import gguf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "smollm2": "models/SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "models/gemma-3-270m-q4_k_m.gguf",
    "qwen2": "models/qwen2.5-coder-0.5b-instruct.gguf",
}
TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
              8: "string", 9: "array", 10: "u64", 11: "i64", 12: "f64"}


def main():
    out_dir = os.path.join(ROOT, "runtime/tests/fixtures/gguf")
    os.makedirs(out_dir, exist_ok=True)
    for name, rel in MODELS.items():
        path = os.path.join(ROOT, rel)
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: run scripts/install-models.sh all")
        r = gguf.GGUFReader(path)
        meta = {}
        for key, f in r.fields.items():
            if key.startswith("GGUF."):
                continue
            t = f.types[0]
            if t == gguf.GGUFValueType.ARRAY:
                v = f.contents()
                meta[key] = {
                    "type": "array",
                    "elem": TYPE_NAMES[f.types[1].value] if len(f.types) > 1 else None,
                    "len": len(f.data),
                    "first": list(v[:3]),
                    "last": list(v[-3:]),
                }
            else:
                meta[key] = {"type": TYPE_NAMES[t.value], "value": f.contents()}
        tensors = [
            {
                "name": t.name,
                "dims": [int(d) for d in t.shape],
                "type": int(t.tensor_type),
                "offset": int(t.data_offset),
                "n_bytes": int(t.n_bytes),
            }
            for t in r.tensors
        ]
        fixture = {
            "model": rel,
            "reference": f"gguf-py {getattr(gguf, '__version__', 'installed')} GGUFReader",
            "version": int(r.fields["GGUF.version"].contents()),
            "alignment": int(r.alignment),
            "data_offset": int(r.data_offset),
            "file_size": os.path.getsize(path),
            "metadata": meta,
            "tensors": tensors,
        }
        with open(os.path.join(out_dir, f"{name}.json"), "w") as f:
            json.dump(fixture, f, ensure_ascii=False, indent=1)
        print(name, len(tensors), "tensors", len(meta), "keys")


if __name__ == "__main__":
    main()
