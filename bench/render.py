#!/usr/bin/env python3
"""Turn a bench/compare.py result JSON into docs/performance.md and an SVG bar chart.

  python3 bench/render.py bench/results/FILE.json [--out docs/performance.md]
                          [--svg docs/performance-decode.svg]

The generated parts are rewritten on every run. Hand-written blocks between
`<!-- keep:NAME -->` and `<!-- /keep:NAME -->` in the existing output file are carried over
(the real-GPU figures, the GPU decode figures and the profile notes), so regenerating never loses
them.
"""

from __future__ import annotations

import argparse
import html
import json
import os
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# Rows of each model table: (metric key, label, decimals).
METRICS = [
    ("decode_tok_s", "decode tok/s (higher is better)", 1),
    ("prefill_tok_s", "prefill tok/s (higher is better)", 1),
    ("ttft_ms", "time to first token, ms", 1),
    ("load_ms", "load, ms", 0),
    ("peak_rss_mb", "peak RSS, MB", 0),
]

KEEP_DEFAULTS = {
    "real-gpu": (
        "No real-GPU figures yet. Every figure above comes from the CPU of the machine named at "
        "the top; the kiln GPU rows on this machine ran on lavapipe (Mesa's CPU Vulkan) and rank "
        "nothing. When figures from a real adapter are added here, name the adapter (as `kiln "
        "bench --json` prints it), the driver, the host CPU and the date next to each one.\n"
    ),
    "profile": "No profile notes yet.\n",
    "gpu-decode": "No GPU decode figures yet.\n",
}

# Bar colours of the chart, one per runtime and thread count.
SERIES = [
    ("kiln_cpu", "1", "kiln CPU, 1 thread", "#c2410c"),
    ("llama_cpp", "1", "llama.cpp, 1 thread", "#1d4ed8"),
    ("kiln_cpu", "2", "kiln CPU, 2 threads", "#fb923c"),
    ("llama_cpp", "2", "llama.cpp, 2 threads", "#60a5fa"),
    ("kiln_wasm", "1", "kiln WASM SIMD128 (Node), 1 thread", "#15803d"),
    ("wllama", "1", "wllama (llama.cpp WASM), 1 thread", "#7e22ce"),
    ("wllama", "2", "wllama (llama.cpp WASM), 2 threads", "#c084fc"),
]

WASM_LABEL = "kiln WASM SIMD128 (Node)"
WLLAMA_LABEL = "wllama (llama.cpp WASM)"


def has(entry: dict, rt: str, t: str) -> bool:
    """Whether `entry` has runs of runtime `rt` at `t` threads."""
    return rt in entry["by_threads"].get(t, {}).get("summary", {})


def spread(s: dict, d: int) -> str:
    return f"{s['median']:.{d}f} ({s['min']:.{d}f}..{s['max']:.{d}f})"


def model_table(entry: dict) -> list[str]:
    threads = list(entry["by_threads"])
    head = ["metric"]
    for t in threads:
        head += [f"kiln CPU, {t}t", f"llama.cpp, {t}t", f"kiln/llama.cpp, {t}t"]
        if has(entry, "kiln_wasm", t):
            head += [f"{WASM_LABEL}, {t}t", f"kiln WASM/llama.cpp, {t}t"]
        if has(entry, "wllama", t):
            head += [f"{WLLAMA_LABEL}, {t}t", f"kiln/wllama, {t}t"]
            if has(entry, "kiln_wasm", t):
                head.append(f"kiln WASM/wllama, {t}t")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for key, label, d in METRICS:
        cells = [label]
        for t in threads:
            row = entry["by_threads"][t]
            cells.append(spread(row["summary"]["kiln_cpu"][key], d))
            cells.append(spread(row["summary"]["llama_cpp"][key], d))
            cells.append(spread(row["ratio_kiln_over_llama"][key], 2))
            if has(entry, "kiln_wasm", t):
                cells.append(spread(row["summary"]["kiln_wasm"][key], d))
                cells.append(spread(row["ratio_kiln_wasm_over_llama"][key], 2))
            if has(entry, "wllama", t):
                cells.append(spread(row["summary"]["wllama"][key], d))
                cells.append(spread(row["ratio_kiln_over_wllama"][key], 2))
                if has(entry, "kiln_wasm", t):
                    cells.append(spread(row["ratio_kiln_wasm_over_wllama"][key], 2))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines += contention_lines(entry)
    agree = ", ".join(
        f"{t} thread{'s' if t != '1' else ''}: {r['greedy_tokens_agreeing']['min']} of "
        f"{r['greedy_tokens_agreeing']['of']}"
        for t, r in entry["by_threads"].items()
    )
    agree += "".join(
        f"; {WASM_LABEL} at {t} thread: {r['greedy_tokens_agreeing_wasm']['min']} of "
        f"{r['greedy_tokens_agreeing_wasm']['of']}"
        for t, r in entry["by_threads"].items()
        if "greedy_tokens_agreeing_wasm" in r
    )
    agree += "".join(
        f"; {WLLAMA_LABEL} at {t} thread{'s' if t != '1' else ''}: "
        f"{r['greedy_tokens_agreeing_wllama']['min']} of {r['greedy_tokens_agreeing_wllama']['of']}"
        for t, r in entry["by_threads"].items()
        if "greedy_tokens_agreeing_wllama" in r
    )
    lines.append("")
    lines.append(
        f"Greedy tokens on which both runtimes agree from the start (worst pair): {agree}. "
        "Two correct runtimes part at the first near-tie of the top two logits, after which "
        "they decode different (equally long) text."
    )
    return lines


# A run counts as crowded out when its process got less than this share of its threads' CPU.
FAIR_SHARE = 0.8


def got_its_cores(run: dict, threads: int) -> bool | None:
    """Whether the run's process had ~all its threads' CPU time (None if not recorded)."""
    if "process_cpu_s" not in run or not run.get("process_wall_s"):
        return None
    return run["process_cpu_s"] / run["process_wall_s"] >= FAIR_SHARE * threads


def contention_lines(entry: dict) -> list[str]:
    """Per thread count: how many pairs ran uncrowded, and the decode ratio over those alone."""
    out = []
    for t, row in entry["by_threads"].items():
        pairs = list(zip(row["runs"]["kiln_cpu"], row["runs"]["llama_cpp"]))
        fair = [(k, ll) for k, ll in pairs
                if got_its_cores(k, int(t)) and got_its_cores(ll, int(t))]  # fmt: skip
        if any(got_its_cores(k, int(t)) is None for k, _ in pairs):
            continue
        text = (f"{t} thread{'s' if t != '1' else ''}: {len(fair)} of {len(pairs)} pairs had "
                f">= {FAIR_SHARE:.0%} of their threads' CPU in both runs")  # fmt: skip
        if fair:
            ratios = sorted(k["decode_tok_s"] / ll["decode_tok_s"] for k, ll in fair)
            text += (f"; decode kiln/llama.cpp over those: "
                     f"{', '.join(f'{r:.2f}' for r in ratios)}")  # fmt: skip
        out.append(f"- {text}.")
    if out:
        out.insert(0, "Uncrowded pairs (process CPU seconds / wall seconds, load and warm-up "
                   "included):")  # fmt: skip
    return out


def gpu_lines(result: dict) -> list[str]:
    lines = []
    for entry in result["models"]:
        g = entry.get("gpu")
        if g is None:
            lines.append(f"- {entry['name']}: not run (left out of `--gpu-models` to save time).")
            continue
        if not g["measured"]:
            lines.append(f"- {entry['name']}: not measured ({g['reason']}).")
            continue
        s = g["summary"]
        tag = "a CPU emulation, not ranked" if g["cpu_emulation"] else "a real GPU"
        lines.append(
            f"- {entry['name']} on `{g['adapter']}` ({tag}): decode "
            f"{spread(s['decode_tok_s'], 1)} tok/s, prefill {s['prefill_tok_s']['median']:.1f} "
            f"tok/s, time to first token {s['ttft_ms']['median']:.0f} ms, load "
            f"{s['load_ms']['median']:.0f} ms, peak RSS {s['peak_rss_mb']['median']:.0f} MB "
            f"({len(g['runs'])} run{'s' if len(g['runs']) != 1 else ''})."
        )
    return lines or ["- kiln's GPU path was not run (`--gpu-models none`)."]


def svg_chart(result: dict) -> str:
    """Grouped bars of median decode tok/s per model, with min..max whiskers and labels."""
    models = result["models"]
    bar_w, gap, group_gap = 34, 6, 46
    left, top, plot_h = 60, 50, 260
    series = [s for s in SERIES if any(has(m, s[0], s[1]) for m in models)]
    group_w = len(series) * (bar_w + gap) - gap
    # At least as wide as the title (about 7 px a character).
    width = max(left + len(models) * (group_w + group_gap) + 20, 760)
    # Legend entries left to right, wrapping onto as many rows as the chart's width needs.
    legend, lx, ly = [], left, 0
    for _, _, label, colour in series:
        w = 16 + 7 * len(label) + 18
        if lx > left and lx + w > width:
            lx, ly = left, ly + 18
        legend.append((lx, ly, label, colour))
        lx += w
    height = top + plot_h + 70 + ly
    vmax = 0.0
    for m in models:
        for rt, t, _, _ in series:
            if has(m, rt, t):
                vmax = max(vmax, m["by_threads"][t]["summary"][rt]["decode_tok_s"]["max"])
    step = next(s for s in (5, 10, 20, 25, 50, 100, 200, 500, 1000, 1e9) if vmax / s <= 8)
    ymax = step * (int(vmax / step) + 1)

    def y(v: float) -> float:
        return top + plot_h - v / ymax * plot_h

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{left}" y="20" font-size="15" font-weight="bold">Decode tokens/s '
        f"(median, whiskers min..max), {html.escape(result['machine']['cpu'])}, "
        f"{result['machine']['cores']} cores</text>",
    ]
    tick = 0.0
    while tick <= ymax:
        out.append(f'<line x1="{left}" x2="{width - 10}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" '
                   'stroke="#e5e7eb"/>')  # fmt: skip
        out.append(f'<text x="{left - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{tick:g}</text>')
        tick += step
    out.append(f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="black"/>')
    for i, m in enumerate(models):
        x0 = left + group_gap / 2 + i * (group_w + group_gap)
        for j, (rt, t, _, colour) in enumerate(series):
            if not has(m, rt, t):
                continue
            s = m["by_threads"][t]["summary"][rt]["decode_tok_s"]
            x = x0 + j * (bar_w + gap)
            cx = x + bar_w / 2
            out.append(f'<rect x="{x:.1f}" y="{y(s["median"]):.1f}" width="{bar_w}" '
                       f'height="{y(0) - y(s["median"]):.1f}" fill="{colour}"/>')  # fmt: skip
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(s["min"]):.1f}" '
                       f'y2="{y(s["max"]):.1f}" stroke="black"/>')  # fmt: skip
            out.append(f'<text x="{cx:.1f}" y="{y(s["max"]) - 4:.1f}" text-anchor="middle" '
                       f'font-size="10">{s["median"]:.0f}</text>')  # fmt: skip
        out.append(f'<text x="{x0 + group_w / 2:.1f}" y="{top + plot_h + 18}" '
                   f'text-anchor="middle">{html.escape(m["name"])}</text>')  # fmt: skip
    for lx, ly, label, colour in legend:
        y0 = top + plot_h + 42 + ly
        out.append(f'<rect x="{lx}" y="{y0}" width="12" height="12" fill="{colour}"/>')
        out.append(f'<text x="{lx + 16}" y="{y0 + 10}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def kept_blocks(path: Path) -> dict[str, str]:
    blocks = dict(KEEP_DEFAULTS)
    if path.exists():
        text = path.read_text()
        for m in re.finditer(r"<!-- keep:([\w-]+) -->\n(.*?)<!-- /keep:\1 -->", text, re.S):
            blocks[m.group(1)] = m.group(2)
    return blocks


def keep(blocks: dict[str, str], name: str) -> list[str]:
    return [f"<!-- keep:{name} -->", blocks[name].rstrip("\n"), f"<!-- /keep:{name} -->"]


def kiln_isa(result: dict) -> str:
    """The instruction set kiln's CPU path ran with, as `kiln bench` reported it."""
    for entry in result["models"]:
        for row in entry["by_threads"].values():
            for run in row["runs"]["kiln_cpu"]:
                return run.get("adapter", "?").split(",")[0]
    return "?"


def render(result: dict, source: Path, svg_name: str, blocks: dict[str, str]) -> str:
    mach, st = result["machine"], result["settings"]
    threads = ", ".join(str(t) for t in st["threads"])
    lines = [
        "# Performance: kiln vs llama.cpp",
        "",
        f"Generated by `bench/render.py` from `{source}`; rerun `bench/compare.sh` to refresh "
        "(only the blocks marked `keep` are hand-written).",
        "",
        "## Machine and method",
        "",
        f"- Machine: {mach['cpu']}, {mach['cores']} cores "
        f"({', '.join(mach['cpu_flags'])}); {mach['os']}.",
        f"- Date: {result['date']}; whole run {result.get('wall_s', 0) / 60:.1f} min.",
        f"- Runtimes: kiln's CPU path (`{result['runtimes']['kiln_cpu']}`, kernels "
        f"{kiln_isa(result)}) and {result['runtimes']['llama_cpp']}"
        + (f"; at 1 thread also {result['runtimes']['kiln_wasm']}, kiln's CPU path compiled to "
           "WebAssembly (the kiln-web package, the browser build)"
           if "kiln_wasm" in result["runtimes"] else "")  # fmt: skip
        + (f"; at every thread count also {result['runtimes']['wllama']}, llama.cpp compiled to "
           "WebAssembly, given the prompt ids' text (it takes text only; checked to tokenize "
           "back to the same ids)"
           if "wllama" in result["runtimes"] else "")  # fmt: skip
        + ".",
        f"- Same GGUF, same {st['prompt_tokens']} prompt token ids, {st['gen_tokens']} generated "
        f"tokens, KV context {st['context']}, threads {threads}; greedy, end-of-generation "
        "ignored.",
        f"- {st['reps']} alternating pairs (kiln, llama.cpp, kiln, ...) per model and thread "
        "count, each run in its own process after one unmeasured warm-up generation. Cells are "
        "median (min..max) over the runs; a ratio is kiln/llama.cpp per pair, then median "
        "(min..max) over the pairs. Ratios above 1 favour kiln for tok/s, below 1 for ms and MB.",
        "- Decode tok/s counts the generated tokens after the first over the time after the first "
        "token; prefill tok/s is prompt tokens over the time to the first token; load is opening "
        "the GGUF until the model is ready; peak RSS is the process's VmHWM (llama.cpp's includes "
        "the Python interpreter and numpy, about 30-40 MB)."
        + (" wllama runs in the same alternation (kiln, llama.cpp, [kiln WASM,] wllama); its "
           "prefill and decode figures are llama.cpp's own counters inside the WebAssembly "
           "(time to first token = its prompt time), its load is the JavaScript call that "
           "starts the worker and loads the GGUF into WebAssembly memory, and its peak RSS "
           "includes Node 26 and that memory."
           if "wllama" in result["runtimes"] else ""),  # fmt: skip
        "- The machine is shared (2 cores, other builds running at times): each run records the "
        "1-minute load average before it in the JSON; treat small differences as noise.",
        "",
        f"![decode tok/s per runtime and model]({svg_name})",
        "",
        "## Summary: decode ratios, median (min..max) over pairs",
        "",
        "| model | "
        + " | ".join(f"kiln/llama.cpp, {t} thread{'s' if t != 1 else ''}" for t in st["threads"])
        + " |",
        "|---|" + "---|" * len(st["threads"]),
    ]
    wasm = any(has(e, "kiln_wasm", "1") for e in result["models"])
    if wasm:
        lines[-2] += f" {WASM_LABEL}/llama.cpp, 1 thread |"
        lines[-1] += "---|"
    wl = [str(t) for t in st["threads"] if any(has(e, "wllama", str(t)) for e in result["models"])]
    for t in wl:
        lines[-2] += f" kiln/wllama, {t} thread{'s' if t != '1' else ''} |"
        lines[-1] += "---|"
    wasm_wl = wasm and "1" in wl
    if wasm_wl:
        lines[-2] += f" **{WASM_LABEL}/wllama, 1 thread** (target >= 2) |"
        lines[-1] += "---|"
    for entry in result["models"]:
        cells = [spread(entry["by_threads"][str(t)]["ratio_kiln_over_llama"]["decode_tok_s"], 2)
                 if str(t) in entry["by_threads"] else "-" for t in st["threads"]]  # fmt: skip
        if wasm:
            cells.append(spread(entry["by_threads"]["1"]["ratio_kiln_wasm_over_llama"]
                                ["decode_tok_s"], 2) if has(entry, "kiln_wasm", "1") else "-")  # fmt: skip
        for t in wl:
            cells.append(spread(entry["by_threads"][t]["ratio_kiln_over_wllama"]["decode_tok_s"], 2)
                         if has(entry, "wllama", t) else "-")  # fmt: skip
        if wasm_wl:
            row = entry["by_threads"].get("1", {})
            cells.append(spread(row["ratio_kiln_wasm_over_wllama"]["decode_tok_s"], 2)
                         if "ratio_kiln_wasm_over_wllama" in row else "-")  # fmt: skip
        lines.append(f"| {entry['name']} | " + " | ".join(cells) + " |")
    lines.append("")
    for entry in result["models"]:
        lines += [f"## {entry['name']} (`{entry['file']}`)", ""]
        lines += model_table(entry)
        lines.append("")
    lines += ["## kiln's GPU path on this machine", ""]
    lines += gpu_lines(result)
    lines += ["", "## Not measured", ""]
    for nm in result["not_measured"]:
        lines.append(f"- {nm['runtime']}: {nm['reason']}")
    if not result["not_measured"]:
        lines.append("- Nothing: every runtime ran on every model.")
    lines += ["", "## Where kiln's CPU time goes", ""]
    lines += keep(blocks, "profile")
    lines += ["", "## GPU decode: dispatches, submits and waits per token", ""]
    lines += keep(blocks, "gpu-decode")
    lines += ["", "## Real-GPU figures", ""]
    lines += keep(blocks, "real-gpu")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("result", type=Path)
    p.add_argument("--out", type=Path, default=REPO / "docs" / "performance.md")
    p.add_argument("--svg", type=Path, default=REPO / "docs" / "performance-decode.svg")
    a = p.parse_args()
    try:
        result = json.loads(a.result.read_text())
    except (OSError, json.JSONDecodeError) as e:
        sys.exit(f"render: error: cannot read {a.result}: {e}")
    if result.get("schema") != 1:
        sys.exit(f"render: error: {a.result} is not a compare.py schema-1 result")
    try:
        source = a.result.resolve().relative_to(REPO)
    except ValueError:
        source = a.result
    blocks = kept_blocks(a.out)
    a.svg.parent.mkdir(parents=True, exist_ok=True)
    a.svg.write_text(svg_chart(result))
    svg_rel = os.path.relpath(a.svg.resolve(), a.out.resolve().parent)
    a.out.write_text(render(result, source, svg_rel, blocks))
    print(f"wrote {a.out} and {a.svg}")


if __name__ == "__main__":
    main()
