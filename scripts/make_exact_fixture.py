#!/usr/bin/env python3
"""Write the float64 reference fixtures of runtime/tests/exact_reference.rs.

For one prompt per model (the `story` case of runtime/tests/fixtures/reference/{model}.json,
llama.cpp's token ids), at every position: the float64 logits (scripts/float_reference.py:
exact weights, float64 activations) of the 16 best ids and of 48 ids drawn at random (numpy
default_rng(seed 0x65786163 + position), without replacement, outside the 16), the exact top-1
id and its gap to the second, and llama.cpp's logits at the same ids (llama-cpp-python 0.3.36,
CPU, the prompt as one batch with every position's logits: loaded as make_references.py loads
it). The test compares kiln's logits with the exact ones and kiln's distance with llama.cpp's.

Command (repository root; numpy, gguf, llama-cpp-python==0.3.36; 5 minutes for all three on
two busy cores):
    python3 scripts/make_exact_fixture.py
writes runtime/tests/fixtures/exact/{smollm2,gemma3,qwen2}.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import distance_report as dr  # noqa: E402
import float_reference as fr  # noqa: E402
import make_references as mr  # noqa: E402

CASE = "story"
N_TOP = 16
N_RANDOM = 48
SEED = 0x65786163  # "exac"
DECIMALS = 5
OUT = REPO / "runtime" / "tests" / "fixtures" / "exact"
COMMAND = "python3 scripts/make_exact_fixture.py"


def main() -> int:
    OUT.mkdir(parents=True, exist_ok=True)
    for key, file in dr.MODELS.items():
        path = REPO / "models" / file
        fixture = json.loads((REPO / "runtime/tests/fixtures/reference" / f"{key}.json").read_text())
        case = next(c for c in fixture["cases"] if c["name"] == CASE)
        ids = case["prompt_ids"]
        exact = fr.Model(str(path)).forward([ids])[0]
        llama = dr.llama_logits(path, [case], steps=False, threads=1)[0]
        positions = []
        for p in range(len(ids)):
            e = exact[p]
            order = np.argsort(-e, kind="stable")
            top = order[:N_TOP]
            rng = np.random.default_rng(SEED + p)
            rest = np.setdiff1d(np.arange(len(e)), top)
            pick = np.concatenate([top, np.sort(rng.choice(rest, N_RANDOM, replace=False))])
            positions.append(
                {
                    "ids": [int(i) for i in pick],
                    "exact": [round(float(e[i]), DECIMALS) for i in pick],
                    "llama": [round(float(llama[p][i]), DECIMALS) for i in pick],
                    "exact_top1": int(order[0]),
                    "exact_gap": round(float(e[order[0]] - e[order[1]]), DECIMALS),
                }
            )
        out = {
            "model": file,
            "sha256": fixture["sha256"],
            "command": COMMAND,
            "generator": "scripts/float_reference.py (float64); llama.cpp: llama-cpp-python "
            "0.3.36, CPU, f16 KV cache, prompt as one batch, all logits",
            "case": CASE,
            "prompt_ids": ids,
            "positions": positions,
        }
        (OUT / f"{key}.json").write_text(json.dumps(out, indent=1) + "\n")
        d = np.array([np.subtract(q["llama"], q["exact"]) for q in positions])
        print(f"{key}: {len(ids)} positions; llama.cpp - exact on the stored ids: max "
              f"{np.abs(d).max():.4f}, mean {np.abs(d).mean():.4f}")
    return 0


if __name__ == "__main__":
    mr.disable_extra_bufts()
    sys.exit(main())
