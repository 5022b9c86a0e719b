#!/usr/bin/env python3
"""Where kiln's CPU path, its GPU path, llama.cpp and exact arithmetic pick different greedy tokens.

Every runtime is fed the same context: each fixture case's prompt followed by llama.cpp's own
greedy continuation (runtime/tests/fixtures/reference/{model}.json, `greedy_ids`), one token at a
time, and at each generation step the top-1 choice of kiln CPU and kiln GPU (`kiln logits
--steps`), llama.cpp (the fixture's `greedy_ids`, with its top-1/top-2 gap in `gaps`) and the
float64 pass (scripts/float_reference.py) are compared. Since the contexts are identical, a
difference is a decision of that step alone, not a consequence of an earlier one.

Command (repository root; numpy, gguf; for the GPU a Vulkan adapter, here lavapipe):
    python3 scripts/greedy_decisions.py --kiln target/release/kiln [--models gemma3,...]
Prints every step where any two of the four disagree, with the logits each gives the two
candidates. Results are in docs/correctness.md ("Greedy decisions").
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import float_reference as fr  # noqa: E402
from distance_report import MODELS  # noqa: E402


def kiln_top(kiln: str, model: Path, ids: list[int], positions: list[int], backend: str,
             pick: list[int]) -> tuple[list[list[tuple[int, float]]], list[list[float]]]:
    cmd = [
        kiln, "logits", "--model", str(model), "--backend", backend, "--json", "--steps",
        "--context", "256", "--top", "2", "--ids", ",".join(map(str, ids)),
        "--positions", ",".join(map(str, positions)), "--pick", ",".join(map(str, pick)),
    ]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"kiln failed:\n{r.stderr[-2000:]}")
    j = json.loads(r.stdout)
    return j["top"], j["picked"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=str(REPO / "target/release/kiln"))
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--backends", default="cpu,gpu")
    args = ap.parse_args()
    backends = args.backends.split(",")
    total = {}
    for key in args.models.split(","):
        path = REPO / "models" / MODELS[key]
        fixture = json.loads((REPO / "runtime/tests/fixtures/reference" / f"{key}.json").read_text())
        cases = fixture["cases"]
        seqs = [c["prompt_ids"] + c["greedy_ids"][:-1] for c in cases]
        exact = fr.Model(str(path), check=False).forward(seqs)
        print(f"== {key}")
        for c, seq, ex in zip(cases, seqs, exact):
            n0 = len(c["prompt_ids"])
            steps = list(range(n0 - 1, len(seq)))
            ex = ex[n0 - 1 :]
            picks = {}
            for b in backends:
                top, _ = kiln_top(args.kiln, path, seq, steps, b, [0])
                picks[b] = top
            for i, step in enumerate(steps):
                llama_tok = c["greedy_ids"][i]
                exact_tok = int(np.argmax(ex[i]))
                toks = {"llama.cpp": llama_tok, "exact": exact_tok}
                toks.update({b: int(picks[b][i][0][0]) for b in backends})
                for who, t in toks.items():
                    agree = t == exact_tok
                    total.setdefault((key, who), [0, 0])
                    total[(key, who)][0] += agree
                    total[(key, who)][1] += 1
                if len(set(toks.values())) == 1:
                    continue
                cand = sorted(set(toks.values()))
                order = np.argsort(-ex[i])
                ex_gap = ex[i][order[0]] - ex[i][order[1]]
                desc = ", ".join(f"{w} {t}" for w, t in toks.items())
                print(
                    f"{c['name']} step {i}: {desc}; llama.cpp gap {c['gaps'][i]:.3f}, exact gap "
                    f"{ex_gap:.3f}; exact logits "
                    + ", ".join(f"{t}: {ex[i][t]:.3f}" for t in cand)
                    + "; kiln top-2 "
                    + "; ".join(
                        f"{b} " + ", ".join(f"{t}: {v:.3f}" for t, v in picks[b][i]) for b in backends
                    )
                )
    print("top-1 = exact top-1 at the generation steps along llama.cpp's greedy path:")
    for (key, who), (a, n) in total.items():
        print(f"  {key:<8} {who:<10} {a}/{n}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/xdg")
    sys.exit(main())
