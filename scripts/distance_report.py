#!/usr/bin/env python3
"""How far kiln's and llama.cpp's logits are from exact arithmetic on the same weights.

For each model, the prompts of runtime/tests/fixtures/reference/{model}.json (llama.cpp's token
ids) are run through
  exact       scripts/float_reference.py: float64 everywhere, weights expanded exactly;
  llama.cpp   llama-cpp-python 0.3.36, CPU, f16 KV cache, loaded as make_references.py loads it;
  kiln CPU    the `kiln logits` command (--backend cpu);
  kiln GPU    the same on the GPU backend (on this machine lavapipe, Vulkan on the CPU);
  kiln-web    kiln-web's SIMD128 build under Node, `Model.logits` (web/node/logits.mjs): the
              CPU path's kernels compiled for wasm32 + SIMD128, one thread;
and every runtime's logits at every position of every prompt, over the full vocabulary, are
compared with the exact ones: max |runtime - exact|, mean |runtime - exact|, mean signed
(runtime - exact), and how often the runtime's top-1 token is the exact top-1.

Two ways to reach a position, each a path of its own in both runtimes:
  steps    one token at a time (the decode path: what greedy generation runs after the prompt):
           llama.cpp `eval([t])` per token, kiln `logits --steps`;
  prompt   the whole prompt as one batch (the prompt path): llama.cpp evaluates it once with
           every position's logits requested; kiln evaluates each prefix as a prompt
           (`logits` without --steps), which is the same batched path. On the GPU the prompt
           path is run for each prompt's last position only (each prefix is a separate prompt,
           and lavapipe takes minutes per long prompt's prefixes).
kiln-web is run on the steps path only: each prefix as a prompt would run the prompt path once
per position, and kiln-web's logits are bit-identical both ways (web/node/check.mjs checks it).

Command (repository root; needs python3 with numpy, gguf and llama-cpp-python==0.3.36, models/
from scripts/install-models.sh, a release `kiln` binary; for the GPU rows a Vulkan adapter,
here lavapipe with XDG_RUNTIME_DIR set; for the kiln-web rows Node and scripts/build-web.sh's
web/pkg/simd):
    python3 scripts/distance_report.py --kiln target/release/kiln [--models smollm2,gemma3,qwen2]
        [--paths ...] [--cache DIR] [--write-docs]
Every runtime's logits are cached under --cache (default /tmp/kiln-distance) by model, path and
case, so a rerun recomputes only what is missing (delete the folder after changing a runtime).
--write-docs replaces the generated table in docs/correctness.md (between its markers).

Time on this machine (2 cores shared with other jobs), first run: the float64 passes 7-56 s
per model (the emulations up to 90 s each), llama.cpp 2-18 s per path and model, kiln CPU
30-80 s per path and model, kiln GPU on lavapipe 1.5 min (SmolLM2), 5 min (Gemma 3) and
13 min (Qwen2.5) for both paths; about 30 minutes in all. kiln-web (SIMD128, Node 20, one
thread) 20 s (SmolLM2), 27 s (Gemma 3) and 67 s (Qwen2.5).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

MODELS = {
    "smollm2": "SmolLM2-135M-Instruct.Q4_1.gguf",
    "gemma3": "gemma-3-270m-q4_k_m.gguf",
    "qwen2": "qwen2.5-coder-0.5b-instruct.gguf",
}
PATHS = [
    "llama-steps", "llama-prompt", "cpu-steps", "cpu-prompt", "web-steps", "gpu-steps",
    "gpu-prompt",
]
# float64 passes with some of llama.cpp's roundings (float_reference.py --emulate): which
# rounding the distance comes from. Not in the default set.
EMULATED = {
    "emu-act8": "act8",
    "emu-kv16": "kv16",
    "emu-gelu16": "gelu16",
    "emu-all": "act8,kv16,gelu16",
    "emu-act8.qkv": "act8.qkv",
    "emu-act8.o": "act8.o",
    "emu-act8.gateup": "act8.gateup",
    "emu-act8.down": "act8.down",
    "emu-act8.head": "act8.head",
}
LABELS = {
    "llama-steps": ("llama.cpp", "steps"),
    "llama-prompt": ("llama.cpp", "prompt"),
    "cpu-steps": ("kiln CPU", "steps"),
    "cpu-prompt": ("kiln CPU", "prompt"),
    "web-steps": ("kiln-web (Node, SIMD128)", "steps"),
    "gpu-steps": ("kiln GPU", "steps"),
    "gpu-prompt": ("kiln GPU", "prompt, last"),
    "emu-act8": ("float64 + int8 activations", "prompt"),
    "emu-kv16": ("float64 + f16 q/k/v, softmax", "prompt"),
    "emu-gelu16": ("float64 + f16 GELU table", "prompt"),
    "emu-all": ("float64 + all three", "prompt"),
    "emu-act8.qkv": ("float64 + int8 into q/k/v only", "prompt"),
    "emu-act8.o": ("float64 + int8 into attn output only", "prompt"),
    "emu-act8.gateup": ("float64 + int8 into gate/up only", "prompt"),
    "emu-act8.down": ("float64 + int8 into down only", "prompt"),
    "emu-act8.head": ("float64 + int8 into the head only", "prompt"),
}
# Logits printed per `kiln logits --json` call (JSON text of ~20 bytes each).
KILN_FLOATS_PER_CALL = 4_000_000
DOC = REPO / "docs" / "correctness.md"
BEGIN = "<!-- distance_report.py: begin -->"
END = "<!-- distance_report.py: end -->"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# Runtimes: each returns, per case, an array (positions, vocab) and the positions it covers.


def exact_logits(model_path: Path, cases: list[dict], emulate: str = "") -> list[np.ndarray]:
    import float_reference as fr

    m = fr.Model(str(model_path), frozenset(e for e in emulate.split(",") if e), check=not emulate)
    return m.forward([c["prompt_ids"] for c in cases])


def llama_logits(model_path: Path, cases: list[dict], steps: bool, threads: int):
    import llama_cpp
    import make_references as mr

    mr.disable_extra_bufts()
    llm = llama_cpp.Llama(
        model_path=str(model_path),
        n_ctx=mr.N_CTX,
        n_batch=mr.N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        seed=mr.LLAMA_SEED,
        logits_all=not steps,
        verbose=False,
    )
    if llm.model_params.use_extra_bufts:
        sys.exit("use_extra_bufts is still on; refusing to run (see make_references.py)")
    n_vocab = llm.n_vocab()
    out = []
    for c in cases:
        ids = c["prompt_ids"]
        llm.reset()
        if steps:
            rows = []
            for t in ids:
                llm.eval([t])
                rows.append(mr.last_logits(llm, n_vocab).astype(np.float32))
            out.append(np.stack(rows))
        else:
            llm.eval(ids)
            out.append(np.array(llm.scores[: len(ids)], dtype=np.float32))
    del llm
    return out


def kiln_logits(kiln: str, model_path: Path, ids: list[int], positions: list[int], backend: str,
                steps: bool, vocab: int) -> np.ndarray:
    per_call = max(1, KILN_FLOATS_PER_CALL // vocab)
    rows = []
    for a in range(0, len(positions), per_call):
        chunk = positions[a : a + per_call]
        cmd = [
            kiln, "logits", "--model", str(model_path), "--backend", backend, "--json",
            "--context", "256", "--ids", ",".join(map(str, ids)),
            "--positions", ",".join(map(str, chunk)),
        ] + (["--steps"] if steps else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd[:6])} ... failed:\n{r.stderr[-2000:]}")
        j = json.loads(r.stdout)
        if j["backend"] != backend:
            sys.exit(f"kiln ran on {j['backend']}, not {backend}")
        rows.append(np.asarray(j["logits"], dtype=np.float32))
    return np.concatenate(rows)


def web_logits(node: str, model_path: Path, ids: list[int], positions: list[int], steps: bool,
               vocab: int) -> np.ndarray:
    """kiln-web's SIMD128 build under Node (web/node/logits.mjs): raw float32 through a file."""
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "logits.f32"
        cmd = [
            node, str(REPO / "web/node/logits.mjs"), "--model", str(model_path), "--flavor", "simd",
            "--context", "256", "--ids", ",".join(map(str, ids)),
            "--positions", ",".join(map(str, positions)), "--out", str(out),
        ] + (["--steps"] if steps else [])
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            sys.exit(f"{' '.join(cmd[:4])} ... failed:\n{r.stderr[-2000:]}")
        j = json.loads(r.stdout)
        if j["backend"] != "cpu" or not j["simd128"] or j["vocab"] != vocab:
            sys.exit(f"kiln-web ran as {j}, not the SIMD128 CPU path with vocab {vocab}")
        return np.fromfile(out, dtype="<f4").reshape(len(positions), vocab)


# ---------------------------------------------------------------------------------------------


def cached(cache: Path, key: str, make):
    """make() -> dict of arrays, stored as cache/key.npz."""
    f = cache / f"{key}.npz"
    if f.exists():
        with np.load(f) as z:
            return {k: z[k] for k in z.files}
    t0 = time.time()
    d = make()
    np.savez(f, **d)
    log(f"  {key}: {time.time() - t0:.0f} s")
    return d


def metrics(ref: list[np.ndarray], got: list[np.ndarray], pos: list[list[int]]) -> dict:
    diffs, agree, n = [], 0, 0
    for r, g, p in zip(ref, got, pos):
        r = r[p]
        d = g.astype(np.float64) - r
        diffs.append(d)
        agree += int(np.sum(np.argmax(g, axis=1) == np.argmax(r, axis=1)))
        n += len(p)
    d = np.concatenate(diffs)
    c = d - d.mean(axis=1, keepdims=True)  # without each position's uniform shift
    return {
        "positions": n,
        "max": float(np.abs(d).max()),
        "mean": float(np.abs(d).mean()),
        "signed": float(d.mean()),
        "shift_sd": float(d.mean(axis=1).std()),
        "centered_max": float(np.abs(c).max()),
        "centered_mean": float(np.abs(c).mean()),
        "top1": agree,
    }


def run_model(key: str, args) -> list[dict]:
    model_path = REPO / "models" / MODELS[key]
    fixture = json.loads((REPO / "runtime/tests/fixtures/reference" / f"{key}.json").read_text())
    cases = fixture["cases"]
    vocab = int(fixture["n_vocab"])
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    log(f"{key}: {len(cases)} prompts, {sum(len(c['prompt_ids']) for c in cases)} positions")
    ref_d = cached(
        cache, f"{key}.exact",
        lambda: {c["name"]: l for c, l in zip(cases, exact_logits(model_path, cases))},
    )
    ref = [ref_d[c["name"]] for c in cases]
    if ref[0].shape[1] != vocab:
        sys.exit(f"{key}: float64 vocab {ref[0].shape[1]} != fixture's {vocab}")
    rows = []
    for path in args.paths:
        if path in EMULATED:
            if path == "emu-gelu16" and key != "gemma3":
                continue
            emu = EMULATED[path]
            got_d = cached(
                cache, f"{key}.{path}",
                lambda emu=emu: {
                    c["name"]: l.astype(np.float32)
                    for c, l in zip(cases, exact_logits(model_path, cases, emu))
                },
            )
            got = [got_d[c["name"]] for c in cases]
            pos = [list(range(len(c["prompt_ids"]))) for c in cases]
            m = metrics(ref, got, pos)
            m.update(model=key, path=path)
            rows.append(m)
            log(f"  {path:<13} max {m['max']:.4f} mean {m['mean']:.4f} signed {m['signed']:+.4f}")
            continue
        runtime, mode = path.split("-")
        steps = mode == "steps"
        if runtime == "gpu" and mode == "prompt":
            pos = [[len(c["prompt_ids"]) - 1] for c in cases]
        else:
            pos = [list(range(len(c["prompt_ids"]))) for c in cases]
        if runtime == "llama":
            make = lambda: {  # noqa: E731
                c["name"]: l
                for c, l in zip(cases, llama_logits(model_path, cases, steps, args.threads))
            }
        elif runtime == "web":

            def make(steps=steps, pos=pos):
                return {
                    c["name"]: web_logits(args.node, model_path, c["prompt_ids"], p, steps, vocab)
                    for c, p in zip(cases, pos)
                }
        else:
            backend = runtime

            def make(backend=backend, steps=steps, pos=pos):
                return {
                    c["name"]: kiln_logits(
                        args.kiln, model_path, c["prompt_ids"], p, backend, steps, vocab
                    )
                    for c, p in zip(cases, pos)
                }
        got_d = cached(cache, f"{key}.{path}", make)
        got = [got_d[c["name"]] for c in cases]
        m = metrics(ref, got, pos)
        m.update(model=key, path=path)
        rows.append(m)
        log(
            f"  {path:<13} max {m['max']:.4f} mean {m['mean']:.4f} signed {m['signed']:+.4f} "
            f"top1 {m['top1']}/{m['positions']}"
        )
    return rows


NAMES = {"smollm2": "SmolLM2-135M Q4_1", "gemma3": "Gemma 3 270M Q4_K_M", "qwen2": "Qwen2.5-Coder 0.5B"}


def table(rows: list[dict]) -> str:
    out = [
        "| model | runtime | path | positions | max \\|Δ\\| | mean \\|Δ\\| | mean Δ | sd of s | "
        "max \\|Δ−s\\| | mean \\|Δ−s\\| | top-1 = exact |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        who, mode = LABELS[r["path"]]
        top1 = f"{r['top1']}/{r['positions']}" if not r["path"].startswith("emu") else "—"
        out.append(
            f"| {NAMES[r['model']]} | {who} | {mode} | {r['positions']} | {r['max']:.3f} | "
            f"{r['mean']:.4f} | {r['signed']:+.4f} | {r['shift_sd']:.3f} | "
            f"{r['centered_max']:.3f} | {r['centered_mean']:.4f} | {top1} |"
        )
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--kiln", default=str(REPO / "target/release/kiln"))
    ap.add_argument("--node", default="node", help="Node for the kiln-web rows")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--paths", default=",".join(PATHS + list(EMULATED)))
    ap.add_argument("--cache", default="/tmp/kiln-distance")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (1: see README)")
    ap.add_argument("--write-docs", action="store_true")
    args = ap.parse_args()
    args.paths = [p for p in args.paths.split(",") if p]
    for p in args.paths:
        if p not in PATHS and p not in EMULATED:
            sys.exit(f"unknown path {p}; known: {PATHS + list(EMULATED)}")
    rows = []
    for key in args.models.split(","):
        rows += run_model(key, args)
    runtimes = [r for r in rows if not r["path"].startswith("emu")]
    emulated = [r for r in rows if r["path"].startswith("emu")]
    t = "\n\n".join(table(x) for x in (runtimes, emulated) if x)
    print(t)
    if args.write_docs:
        text = DOC.read_text()
        if BEGIN not in text or END not in text:
            sys.exit(f"{DOC} lacks the markers {BEGIN} / {END}")
        pre, rest = text.split(BEGIN, 1)
        _, post = rest.split(END, 1)
        DOC.write_text(f"{pre}{BEGIN}\n{t}\n{END}{post}")
        log(f"wrote the table into {DOC}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp/xdg")
    sys.exit(main())
