#!/usr/bin/env python3
"""The real-GPU verification kit (see bench/device/README.md).

Model files cannot travel to a lent GPU machine, so the kit synthesizes the three models' real
layouts (bench/device/layouts/*.json, made from the real GGUFs by `kiln synth --layout-out`)
with seeded random weights: the same bytes on every machine. `references` computes, on kiln's
CPU path here (itself checked against llama.cpp by the model tests), the logits of those exact
files at a few positions of a fixed id sequence and a short greedy continuation, and stores
them small under bench/device/references/. `check` runs kiln's GPU path there under each
variant family the defaults pick somewhere (GEMV splits, dot4, subgroups, GEMV vs tiled
prefill, split vs one-pass attention, one vs several decode steps per submit), compares, and
benchmarks decode and prefill; it writes one JSON file of results.

Python's standard library only: the lent machine has no network.
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
MODELS = ["smollm2", "gemma3", "qwen2"]
SEED = 1
# Weight scale of the synthesized files: 2x kiln synth's default, so that every layer moves the
# logits: there, changing one token of a 40-token context moves the logits at later positions
# by 0.3 to 3 standard deviations of the picked logits (measured on all three models), while the
# GPU differs from the CPU path by 0.02 to 0.15 (its activations are quantized by llama.cpp's
# rules, the CPU path's by kiln-cpu's, and 24-30 random layers amplify the last bits).
GAIN = 2
# The id sequence: 136 ids, so that prompts cross the 32-token chunks of CPU adapters and the
# 128-token chunks of GPUs' tiled prefill.
N_IDS = 136
POSITIONS = [0, 7, 31, 32, 39, 63, 127, 128, 135]
# Quick runs (lavapipe in CI) stay under 40 positions.
QUICK_POSITIONS = [0, 7, 31, 32, 39]
TOP = 16
N_PICK = 64
PROMPT = 24
GREEDY = 20
# Differences are measured in standard deviations of the reference's picked logits at each
# position. The tolerance of a model is NOISE_FACTOR times the largest difference between the
# CPU reference and kiln's GPU path on lavapipe (default, other GEMV split, step by step) when
# the reference was made, and at least MIN_TOL.
NOISE_FACTOR = 4.0
MIN_TOL = 0.1

# Variant families: (name, environment). Each runs the same comparisons.
VARIANTS = [
    ("default", {}),
    ("gemv-thread", {"KILN_GEMV_SPLIT": "thread"}),
    ("gemv-group", {"KILN_GEMV_SPLIT": "group"}),
    ("no-dot4", {"KILN_DOT4": "0"}),
    ("no-subgroups", {"KILN_SUBGROUPS": "0"}),
    ("prefill-gemv", {"KILN_PREFILL": "gemv"}),
    ("prefill-tiled", {"KILN_PREFILL": "tiled"}),
    ("attn-split-16", {"KILN_ATTN_SPLIT": "16"}),
    ("attn-one-pass", {"KILN_ATTN_SPLIT": "0"}),
    ("decode-batch-1", {"KILN_DECODE_BATCH": "1"}),
    ("fused", {"KILN_FUSE": "1"}),
    ("unfused", {"KILN_FUSE": "0"}),
]
# Quick runs (lavapipe in CI, SmolLM2 only): the defaults, and the fused GEMVs, split attention
# and tiled prefill a GPU would pick.
QUICK_VARIANTS = ["default", "fused", "prefill-tiled", "attn-split-16"]


def ids_for(vocab, n, seed):
    """n token ids below vocab from a fixed linear congruential sequence."""
    out, x = [], seed
    for _ in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % (1 << 64)
        out.append((x >> 33) % vocab)
    return out


def picks(vocab):
    """N_PICK ids spread over the vocabulary."""
    return [(i * vocab) // N_PICK + 1 for i in range(N_PICK)]


def run_json(cmd, env=None, timeout=1800):
    """Runs a kiln command that prints one JSON object; returns it (and the wall seconds)."""
    full_env = dict(os.environ, **(env or {}))
    start = time.time()
    p = subprocess.run(cmd, capture_output=True, text=True, env=full_env, timeout=timeout)
    wall = time.time() - start
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1]), wall


def synth(kiln, model, out_dir):
    path = os.path.join(out_dir, f"{model}.gguf")
    if not os.path.exists(path):
        layout = os.path.join(HERE, "layouts", f"{model}.json")
        subprocess.run([kiln, "synth", "--layout", layout, "--out", path, "--seed", str(SEED),
                        "--gain", str(GAIN)], check=True, capture_output=True)
    return path


def vocab_of(model):
    with open(os.path.join(HERE, "layouts", f"{model}.json")) as f:
        return json.load(f)["vocab"]


def logits_cmd(kiln, path, ids, positions, backend, steps=False, top=TOP, pick=()):
    cmd = [kiln, "logits", "--model", path, "--backend", backend, "--json",
           "--ids", ",".join(map(str, ids)), "--positions", ",".join(map(str, positions)),
           "--top", str(top)]
    if pick:
        cmd += ["--pick", ",".join(map(str, pick))]
    if steps:
        cmd.append("--steps")
    return cmd


def generate_cmd(kiln, path, ids, n, backend):
    return [kiln, "generate", "--model", path, "--backend", backend, "--json",
            "--ids", ",".join(map(str, ids)), "--max-tokens", str(n), "--temperature", "0"]


def make_reference(kiln, model, out_dir):
    """The CPU path's logits and greedy ids for the synthesized `model`, and the tolerance: the
    GPU path here (lavapipe) measured against them."""
    path = synth(kiln, model, out_dir)
    vocab = vocab_of(model)
    ids = ids_for(vocab, N_IDS, SEED)
    pick = picks(vocab)
    cmd = logits_cmd(kiln, path, ids, POSITIONS, "cpu", pick=pick)
    logits, _ = run_json(cmd)
    gen_cmd = generate_cmd(kiln, path, ids[:PROMPT], GREEDY, "cpu")
    gen, _ = run_json(gen_cmd)
    greedy = gen["tokens"]
    gaps = []
    if greedy:
        seq = ids[:PROMPT] + greedy
        pos = [PROMPT - 1 + i for i in range(len(greedy))]
        steps, _ = run_json(logits_cmd(kiln, path, seq, pos, "cpu", steps=True, top=2))
        gaps = [t[0][1] - t[1][1] for t in steps["top"]]
    ref = {
        "model": model,
        "layout": f"bench/device/layouts/{model}.json",
        "seed": SEED,
        "gain": GAIN,
        "made_by": "bench/device/kit.py references (kiln's CPU path: " + logits["adapter"] + ")",
        "commands": [" ".join(cmd[1:]), " ".join(gen_cmd[1:])],
        "ids": ids,
        "positions": POSITIONS,
        "pick": pick,
        "top": logits["top"],
        "picked": logits["picked"],
        "prompt": PROMPT,
        "greedy": greedy,
        "gaps": gaps,
    }
    # The noise floor: kiln's GPU path here against the CPU path, at the quick positions.
    noise, adapter = 0.0, None
    for env, steps in [({}, False), ({"KILN_FUSE": "1"}, False), ({"KILN_GEMV_SPLIT": "group"}, False),
                       ({}, True)]:
        got, _ = run_json(logits_cmd(kiln, path, ids[: max(QUICK_POSITIONS) + 1],
                                     QUICK_POSITIONS, "gpu", steps=steps, top=2,
                                     pick=check_ids(ref)), env)
        adapter = got["adapter"]
        noise = max(noise, compare(ref, got, QUICK_POSITIONS, float("inf"))[1])
    ref["noise"] = {"adapter": adapter, "worst_std": noise}
    ref["tolerance_std"] = max(NOISE_FACTOR * noise, MIN_TOL)
    return ref


def check_ids(ref):
    """The ids a GPU run reports logits for: the reference's picks, then every id in its top
    lists."""
    extra = sorted({i for top in ref["top"] for i, _ in top} - set(ref["pick"]))
    return ref["pick"] + extra


def std(values):
    m = sum(values) / len(values)
    return (sum((v - m) ** 2 for v in values) / len(values)) ** 0.5 or 1.0


def compare(ref, got, positions, tol_std):
    """The worst |gpu - cpu| over each position's reference top ids and picked ids, in standard
    deviations of the reference's picked logits there, and whether every position is within
    `tol_std` with the same top id (or reference top two closer than twice the tolerance).
    `got` is a GPU run that picked check_ids(ref)."""
    worst, ok, detail = 0.0, True, []
    for pi, p in enumerate(positions):
        ri = ref["positions"].index(p)
        rtop = ref["top"][ri]
        scale = std(ref["picked"][ri])
        values = dict(zip(got["pick"], got["picked"][pi]))
        want = list(rtop) + list(zip(ref["pick"], ref["picked"][ri]))
        d = max(abs(values[i] - v) for i, v in want) / scale
        worst = max(worst, d)
        gap = (rtop[0][1] - rtop[1][1]) / scale
        top_ok = got["top"][pi][0][0] == rtop[0][0] or gap <= 2 * tol_std
        good = d <= tol_std and top_ok
        ok &= good
        if not good:
            detail.append({"position": p, "worst_std": d, "top_ok": top_ok})
    return ok, worst, detail


def greedy_agrees(ref, tokens):
    """The GPU's greedy ids equal the reference's up to its first near-tie (a top-2 gap under
    twice the tolerance, in standard deviations of the first position's picked logits)."""
    gaps, want = ref["gaps"], ref["greedy"]
    scale = std(ref["picked"][0])
    near = 2 * ref["tolerance_std"] * scale
    stop = next((i for i, g in enumerate(gaps) if g < near), len(want))
    return tokens[:stop] == want[:stop], stop


def check_model(kiln, model, out_dir, variants, quick):
    path = synth(kiln, model, out_dir)
    with open(os.path.join(HERE, "references", f"{model}.json")) as f:
        ref = json.load(f)
    positions = QUICK_POSITIONS if quick else ref["positions"]
    positions = [p for p in positions if p in ref["positions"]]
    last = max(positions)
    ids = ref["ids"][: last + 1]
    results = []
    for name, env in variants:
        row = {"variant": name, "env": env}
        try:
            for mode in ["prefill", "steps"]:
                cmd = logits_cmd(kiln, path, ids, positions, "gpu", steps=mode == "steps",
                                 top=2, pick=check_ids(ref))
                got, wall = run_json(cmd, env)
                ok, worst, detail = compare(ref, got, positions, ref["tolerance_std"])
                row[mode] = {"ok": ok, "worst_std": worst, "failures": detail,
                             "seconds": round(wall, 2)}
                row["adapter"] = got["adapter"]
            gen, wall = run_json(generate_cmd(kiln, path, ref["ids"][: ref["prompt"]],
                                              len(ref["greedy"]), "gpu"), env)
            agree, compared = greedy_agrees(ref, gen["tokens"])
            row["greedy"] = {"ok": agree, "compared": compared, "tokens": gen["tokens"],
                             "seconds": round(wall, 2)}
            row["ok"] = row["prefill"]["ok"] and row["steps"]["ok"] and agree
            row["tolerance_std"] = ref["tolerance_std"]
        except (RuntimeError, subprocess.TimeoutExpired, json.JSONDecodeError) as e:
            row["ok"] = False
            row["error"] = str(e)[-2000:]
        print(f"  {model} {name}: {'ok' if row['ok'] else 'FAILED'}"
              + (f" (worst {max(row['prefill']['worst_std'], row['steps']['worst_std']):.3f} std,"
                 f" tolerance {ref['tolerance_std']:.3f}; greedy {row['greedy']['compared']}"
                 " ids compared)" if "greedy" in row else f" {row.get('error', '')}"),
              file=sys.stderr, flush=True)
        results.append(row)
    return results


def bench_model(kiln, model, out_dir, quick, extra=()):
    path = synth(kiln, model, out_dir)
    p, g, reps = (16, 8, 1) if quick else (512, 128, 3)
    cmd = [kiln, "bench", "--model", path, "--backend", "gpu", "--prompt-tokens", str(p),
           "--gen-tokens", str(g), "--reps", str(reps), "--context", str(p + g + 16), "--json",
           *extra]
    try:
        out, wall = run_json(cmd)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"model": model, "error": str(e)[-2000:]}
    out.pop("tokens", None)
    out["model"] = model
    out["command"] = " ".join(cmd[1:])
    out["seconds"] = round(wall, 1)
    print(f"  {model}: decode {out['decode_tok_s']:.1f} tok/s, prefill {out['prefill_tok_s']:.1f}"
          f" tok/s ({p} tokens)", file=sys.stderr, flush=True)
    return out


def tune_model(kiln, model, out_dir, quick):
    """`kiln tune` on the model's layout, then its benchmark with the built-in choices and with
    the tuned profile: the profile (to commit under profiles/) and the speedup."""
    path = synth(kiln, model, out_dir)
    profile = os.path.join(out_dir, f"{model}.profile.json")
    budget = 20 if quick else 240
    cmd = [kiln, "tune", "--model", path, "--budget-seconds", str(budget), "--out", profile,
           "--again", "--json"]
    try:
        out, wall = run_json(cmd)
    except (RuntimeError, subprocess.TimeoutExpired) as e:
        return {"model": model, "error": str(e)[-2000:]}
    row = {"model": model, "command": " ".join(cmd[1:]), "seconds": round(wall, 1),
           "profile": out["profile"]}
    for name, extra in [("defaults", ["--profile", "off"]), ("tuned", ["--profile", profile])]:
        row[name] = bench_model(kiln, model, out_dir, quick, extra)
    d, t = row["defaults"], row["tuned"]
    if "decode_tok_s" in d and "decode_tok_s" in t:
        row["decode_speedup"] = round(t["decode_tok_s"] / d["decode_tok_s"], 3)
        row["prefill_speedup"] = round(t["prefill_tok_s"] / d["prefill_tok_s"], 3)
        print(f"  {model} tuned: decode x{row['decode_speedup']}, prefill"
              f" x{row['prefill_speedup']} over the built-in choices", file=sys.stderr,
              flush=True)
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["references", "check"])
    ap.add_argument("--kiln", default="target/release/kiln", help="the kiln CLI binary")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--work", default=None, help="where synthesized models go (a temp dir)")
    ap.add_argument("--quick", action="store_true",
                    help="fewer positions, variants and tokens (lavapipe in CI)")
    ap.add_argument("--out", default=None, help="check: the results file")
    ap.add_argument("--kernel-tests", default=None,
                    help="check: a JSON file of kernel test results to include")
    a = ap.parse_args()
    models = [m for m in a.models.split(",") if m]
    work = a.work or tempfile.mkdtemp(prefix="kiln-device-")
    os.makedirs(work, exist_ok=True)
    if a.what == "references":
        for m in models:
            ref = make_reference(a.kiln, m, work)
            out = os.path.join(HERE, "references", f"{m}.json")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            with open(out, "w") as f:
                json.dump(ref, f, separators=(",", ":"))
                f.write("\n")
            print(f"wrote {out}", file=sys.stderr)
        return 0
    # Without an adapter: a loud skip, or a failure where one is required (CI).
    probe = subprocess.run(logits_cmd(a.kiln, synth(a.kiln, models[0], work), [1], [0], "gpu"),
                           capture_output=True, text=True)
    if probe.returncode != 0 and "no GPU adapter" in probe.stderr:
        if os.environ.get("KILN_REQUIRE_GPU") == "1":
            print(f"kit.py: KILN_REQUIRE_GPU=1 but there is no adapter:\n{probe.stderr}",
                  file=sys.stderr)
            return 1
        print("kit.py: SKIPPED the device checks: no GPU adapter (set KILN_REQUIRE_GPU=1 to "
              "make this a failure)", file=sys.stderr)
        return 0
    names = QUICK_VARIANTS if a.quick else [n for n, _ in VARIANTS]
    variants = [(n, e) for n, e in VARIANTS if n in names]
    results = {"machine": {"cpu": platform.processor() or platform.machine(),
                           "cores": os.cpu_count(), "system": platform.platform()},
               "quick": a.quick, "date": time.strftime("%Y-%m-%d"),
               "checks": {}, "bench": []}
    if a.kernel_tests:
        with open(a.kernel_tests) as f:
            results["kernel_tests"] = json.load(f)
    ok = True
    for m in models:
        print(f"checking {m}", file=sys.stderr, flush=True)
        rows = check_model(a.kiln, m, work, variants, a.quick)
        results["checks"][m] = rows
        ok &= all(r["ok"] for r in rows)
    for m in models:
        print(f"benchmarking {m}", file=sys.stderr, flush=True)
        results["bench"].append(bench_model(a.kiln, m, work, a.quick))
    # The tuner on this adapter (SmolLM2's layout): its profile, to commit under profiles/
    # with the speedup in docs/autotune.md.
    print("tuning smollm2", file=sys.stderr, flush=True)
    results["tune"] = tune_model(a.kiln, "smollm2", work, a.quick)
    if "error" in results["tune"]:
        print(f"kit.py: kiln tune failed: {results['tune']['error']}", file=sys.stderr)
        ok = False
    adapter = next((r.get("adapter") for rows in results["checks"].values() for r in rows
                    if r.get("adapter")), "unknown")
    results["adapter"] = adapter
    results["ok"] = ok
    out = a.out or os.path.join(HERE, "..", "results", "device-" + slug(adapter) + "-"
                                + results["date"] + (".quick" if a.quick else "") + ".json")
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
        f.write("\n")
    print(f"wrote {out}: {'all checks passed' if ok else 'CHECKS FAILED'}", file=sys.stderr)
    return 0 if ok else 1


def slug(name):
    s = "".join(c.lower() if c.isalnum() else "-" for c in name)
    return "-".join(p for p in s.split("-") if p)[:40]


if __name__ == "__main__":
    sys.exit(main())
