"""Tests of vulkan_bench.py's pure helpers (no model, no Vulkan, no network).

  python3 -m unittest discover -s bench/vulkan -p 'test_*.py'
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
import unittest
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import vulkan_bench as vb  # noqa: E402

# A /completion answer as llama-server (build b1-7e4c0a9) gave it on lavapipe, trimmed.
COMPLETION = {
    "index": 0,
    "content": " brown fox jumps over the lazy dog.\n\nIn this example, the phrase",
    "tokens": [6354, 16438, 27003, 690, 260, 23790, 2767, 30, 198, 198, 788, 451, 1183, 28, 260,
               8715],  # fmt: skip
    "stop": True,
    "tokens_predicted": 16,
    "tokens_evaluated": 32,
    "stop_type": "limit",
    "timings": {
        "cache_n": 0,
        "prompt_n": 32,
        "prompt_ms": 3200.0,
        "prompt_per_token_ms": 100.0,
        "prompt_per_second": 10.0,
        "predicted_n": 16,
        "predicted_ms": 6000.0,
        "predicted_per_token_ms": 375.0,
        "predicted_per_second": 2.6666666666666665,
    },
}

# The lines of a llama-server -lv 4 log that the parser reads (same build, lavapipe).
SERVER_LOG = """\
0.00.025.560 I cmn  common_param: common_params_print_info: build 1 (7e4c0a9) with GNU 11.4.0 for Linux x86_64
0.00.025.631 I cmn  common_param:   - Vulkan0 : llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)
0.00.025.687 I cmn  common_param: system_info: n_threads = 2 (n_threads_batch = 2) / 2 | CPU : AVX2 = 1 |
0.00.139.916 I llama_prepare_model_devices: using device Vulkan0 (llvmpipe (LLVM 15.0.6, 256 bits)) (unknown id) - 2048 MiB free
0.00.193.057 I load_tensors: offloaded 31/31 layers to GPU
0.00.193.063 I load_tensors:   CPU_Mapped model buffer size =    28.69 MiB
0.00.193.063 I load_tensors:      Vulkan0 model buffer size =    92.10 MiB
0.00.247.753 I resolve_fused_ops: Flash Attention enabled
0.00.253.242 I sched_reserve: graph splits = 2
0.00.253.284 I cmn          init: llama threadpool init, n_threads = 2
"""

LIST_DEVICES = """\
Available devices:
  Vulkan0: llvmpipe (LLVM 15.0.6, 256 bits) (2048 MiB, 2048 MiB free)
"""


def kiln_run(decode: float, prefill: float, tokens: list[int], share: float = 0.0) -> dict:
    return {
        "adapter": "llvmpipe (LLVM 15.0.6, 256 bits)",
        "backend": "gpu",
        "decode_batch": 4,
        "decode_tok_s": decode,
        "prefill_tok_s": prefill,
        "ttft_ms": 32_000.0 / prefill,
        "tokens": tokens,
        "per_token": {"dispatches": 184.0, "submits": 0.27, "waits": 0.27},
        "foreign_cpu_share": share,
    }


def llama_run(decode: float, prefill: float, tokens: list[int] | None) -> dict:
    return {
        "decode_tok_s": decode,
        "prefill_tok_s": prefill,
        "ttft_ms": 32_000.0 / prefill,
        "tokens": tokens,
        "content": " brown fox",
        "foreign_cpu_share": 0.01,
    }


class Stats(unittest.TestCase):
    def test_summary_odd_even_empty(self):
        self.assertEqual(vb.summary([3.0, 1.0, 2.0]), {"median": 2.0, "min": 1.0, "max": 3.0, "n": 3})
        self.assertEqual(vb.summary([4.0, 1.0])["median"], 2.5)
        self.assertEqual(vb.summary([]), {"median": None, "min": None, "max": None, "n": 0})

    def test_common_prefix(self):
        self.assertEqual(vb.common_prefix([1, 2, 3], [1, 2, 4]), 2)
        self.assertEqual(vb.common_prefix([1, 2], [1, 2, 3]), 2)
        self.assertEqual(vb.common_prefix([], [1]), 0)

    def test_ratio(self):
        self.assertEqual(vb.ratio(6.0, 2.0), 3.0)
        self.assertIsNone(vb.ratio(6.0, 0.0))
        self.assertIsNone(vb.ratio(None, 2.0))

    def test_wait_for_quiet(self):
        # Busy CPU seconds as /proc/stat would give them: 2 busy cores, then an idle machine.
        readings = iter([0.0, 4.0, 4.0, 4.1])
        clock = [0.0]
        saved = (vb.system_busy_s, vb.time.sleep, vb.time.monotonic)
        vb.system_busy_s = lambda: next(readings)
        vb.time.sleep = lambda s: clock.__setitem__(0, clock[0] + s)
        vb.time.monotonic = lambda: clock[0]
        try:
            with contextlib.redirect_stderr(io.StringIO()) as err:
                got = vb.wait_for_quiet(60, 2, sample_s=2.0)
        finally:
            vb.system_busy_s, vb.time.sleep, vb.time.monotonic = saved
        self.assertEqual(got["busy_share_before"], 0.025)
        self.assertEqual(got["waited_s"], 14.0)  # 2 s sample, 10 s pause, 2 s sample
        self.assertIn("100%", err.getvalue())

    def test_cpu_share(self):
        self.assertAlmostEqual(vb.cpu_share(2.0, 10.0, 2), 0.1)
        self.assertEqual(vb.cpu_share(-1.0, 10.0, 2), 0.0)
        self.assertEqual(vb.cpu_share(1.0, 0.0, 2), 0.0)


class LlamaServer(unittest.TestCase):
    def test_completion_timings(self):
        r = vb.parse_llama_completion(COMPLETION)
        self.assertEqual(r["prompt_tokens"], 32)
        self.assertEqual(r["cache_n"], 0)
        self.assertAlmostEqual(r["prefill_tok_s"], 10.0)
        # 15 decode steps after the first token in 6 s, not llama-server's 16 / 6 s.
        self.assertAlmostEqual(r["decode_tok_s"], 2.5)
        self.assertAlmostEqual(r["predicted_per_second_reported"], 16 / 6)
        self.assertEqual(r["tokens"][:3], [6354, 16438, 27003])
        self.assertEqual(r["stop_type"], "limit")

    def test_completion_one_token_and_no_tokens(self):
        resp = json.loads(json.dumps(COMPLETION))
        resp["timings"].update(predicted_n=1, predicted_ms=0.001)
        del resp["tokens"]
        r = vb.parse_llama_completion(resp)
        self.assertEqual(r["decode_tok_s"], 0.0)
        self.assertIsNone(r["tokens"])
        self.assertTrue(r["content"].startswith(" brown"))

    def test_completion_without_timings(self):
        with self.assertRaises(vb.BenchError):
            vb.parse_llama_completion({"content": "x"})
        with self.assertRaises(vb.BenchError):
            vb.parse_llama_completion({"timings": {"prompt_n": 3}})

    def test_list_devices(self):
        devs = vb.parse_list_devices(LIST_DEVICES)
        self.assertEqual(devs, [{"id": "Vulkan0", "name": "llvmpipe (LLVM 15.0.6, 256 bits)",
                                 "total_mib": 2048, "free_mib": 2048}])  # fmt: skip
        self.assertEqual(vb.parse_list_devices("Available devices:\n  (none)\n"), [])
        gpu = vb.parse_list_devices("  Vulkan0: NVIDIA H200 (143771 MiB, 142000 MiB free)\n")
        self.assertEqual(gpu[0]["name"], "NVIDIA H200")

    def test_pick_vk_device(self):
        devices = {0: "llvmpipe (LLVM 15.0.6, 256 bits)", 1: "NVIDIA H200"}
        self.assertEqual(vb.pick_vk_device(devices, "NVIDIA H200", None), 1)
        self.assertEqual(vb.pick_vk_device(devices, "llvmpipe (LLVM 15.0.6, 256 bits)", None), 0)
        self.assertEqual(vb.pick_vk_device(devices, "H200", None), 1)
        self.assertEqual(vb.pick_vk_device(devices, "something else", "h200"), 1)
        self.assertIsNone(vb.pick_vk_device(devices, "AMD Radeon", None))
        self.assertIsNone(vb.pick_vk_device({}, "NVIDIA H200", None))

    def test_server_log(self):
        f = vb.parse_server_log(SERVER_LOG)
        self.assertEqual(f["build"]["number"], "1")
        self.assertEqual(f["build"]["commit"], "7e4c0a9")
        self.assertEqual(f["build"]["target"], "Linux x86_64")
        self.assertEqual(f["devices_used"],
                         [{"id": "Vulkan0", "name": "llvmpipe (LLVM 15.0.6, 256 bits)"}])
        self.assertEqual((f["layers_offloaded"], f["layers_total"]), (31, 31))
        self.assertEqual(f["model_buffers_mib"], {"CPU_Mapped": 28.69, "Vulkan0": 92.1})
        self.assertEqual(f["graph_splits"], 2)
        self.assertTrue(f["flash_attn"])
        off = vb.parse_server_log("0.00.9 I llama_context: flash_attn            = disabled\n")
        self.assertEqual((off["flash_attn"], off["flash_attn_setting"]), (False, "disabled"))
        self.assertEqual(f["n_threads"], 2)
        self.assertEqual(vb.offload_problems(f, "llvmpipe (LLVM 15.0.6, 256 bits)"), [])

    def test_weight_placement(self):
        log = ("0.00.251.124 D done_getting_tensors: tensor 'output.weight' (q8_0) (and 0 others) "
               "cannot be used with preferred buffer type Vulkan0, using AMX instead\n")  # fmt: skip
        self.assertEqual(vb.parse_weight_placement(log), [
            {"tensor": "output.weight", "type": "q8_0", "others": 0, "preferred": "Vulkan0",
             "used": "AMX"}])  # fmt: skip
        self.assertEqual(vb.parse_weight_placement(SERVER_LOG), [])
        # Gemma 3 on lavapipe: the tied output matrix goes to AMX under the embedding's name; the
        # input embedding's move off the host buffer is normal. Both load passes log it.
        gemma = ("D done_getting_tensors: tensor 'token_embd.weight' (q8_0) (and 1 others) cannot be "
                 "used with preferred buffer type Vulkan_Host, using CPU instead\n" * 2
                 + "D ggml_backend_amx_buffer_set_tensor: amx repack tensor token_embd.weight of "
                 "type q8_0\n")  # fmt: skip
        self.assertEqual(vb.parse_weight_placement(gemma), [
            {"tensor": "token_embd.weight", "type": "q8_0", "others": 0, "preferred": None,
             "used": "AMX"}])  # fmt: skip
        both = log + "D ggml_backend_amx_buffer_set_tensor: amx repack tensor output.weight of type q8_0\n"
        self.assertEqual(len(vb.parse_weight_placement(both)), 1)
        rep = vb.parse_weight_placement("repack: repack tensor blk.0.ffn_up.weight with q4_0_8x8\n")
        self.assertEqual(rep[0]["used"], "CPU_REPACK")

    def test_offload_problems(self):
        partial = vb.parse_server_log(SERVER_LOG.replace("31/31", "20/31"))
        self.assertIn("offloaded only 20/31", vb.offload_problems(partial, "")[0])
        cpu = vb.parse_server_log("load_tensors: offloaded 0/31 layers to GPU\n")
        problems = vb.offload_problems(cpu, "llvmpipe")
        self.assertTrue(any("no Vulkan device" in p for p in problems))
        other = vb.offload_problems(vb.parse_server_log(SERVER_LOG), "NVIDIA H200")
        self.assertTrue(any("not `NVIDIA H200`" in p for p in other))
        self.assertIn("does not say", " ".join(vb.offload_problems({"devices_used": []}, "")))


class Assembly(unittest.TestCase):
    def entry(self) -> dict:
        same = [6354, 16438, 27003, 690, 260, 23790, 2767, 30, 198]
        kiln = [kiln_run(9.0, 8.0, same), kiln_run(10.0, 9.0, same, share=0.4),
                kiln_run(11.0, 10.0, same)]  # fmt: skip
        llama = [llama_run(2.0, 8.0, same), llama_run(2.5, 10.0, same[:5] + [1, 2, 3, 4]),
                 llama_run(3.0, 12.0, same)]  # fmt: skip
        server = {"device_name": "llvmpipe (LLVM 15.0.6, 256 bits)", "log_facts": {}}
        return vb.model_entry("smollm2", "SmolLM2-135M", "f.gguf", [1, 2, 3], kiln, llama, server, 9)

    def test_model_entry(self):
        e = self.entry()
        self.assertEqual(e["kiln"]["adapter"], "llvmpipe (LLVM 15.0.6, 256 bits)")
        self.assertEqual(e["llama_cpp"]["adapter"], "llvmpipe (LLVM 15.0.6, 256 bits)")
        self.assertEqual(e["kiln"]["summary"]["decode_tok_s"]["median"], 10.0)
        self.assertEqual(e["llama_cpp"]["summary"]["decode_tok_s"]["median"], 2.5)
        self.assertEqual(e["llama_cpp"]["summary"]["prefill_tok_s"]["min"], 8.0)
        r = e["ratio_kiln_over_llama"]
        self.assertEqual(r["decode_tok_s"]["of_medians"], 4.0)
        self.assertEqual(r["decode_tok_s"]["per_pair"]["max"], 4.5)  # 9 / 2
        self.assertAlmostEqual(r["prefill_tok_s"]["of_medians"], 0.9)
        g = e["greedy"]
        self.assertEqual(len(g["kiln_first_ids"]), vb.FIRST_IDS)
        self.assertEqual(g["kiln_first_ids"], g["llama_cpp_first_ids"])
        self.assertEqual(g["agreeing_prefix"], {"min": 5, "of": 9})
        self.assertEqual(len(e["crowded_runs"]), 1)
        self.assertIn("kiln run 2", e["crowded_runs"][0])
        self.assertEqual(e["kiln"]["decode_batch"], 4)

    def test_model_entry_without_llama_tokens(self):
        kiln = [kiln_run(9.0, 8.0, [1, 2, 3])]
        llama = [llama_run(2.0, 8.0, None)]
        e = vb.model_entry("qwen2", "Q", "q.gguf", [1], kiln, llama, {"device_name": "x"}, 3)
        self.assertEqual(e["greedy"]["llama_cpp_first_ids"], [])
        self.assertEqual(e["greedy"]["llama_cpp_content"], " brown fox")
        self.assertEqual(e["greedy"]["agreeing_prefix"]["min"], 0)

    def test_markdown_table(self):
        result = {"models": [self.entry()],
                  "not_measured": [{"model": "qwen2", "reason": "timed out"}]}  # fmt: skip
        table = vb.markdown_table(result)
        lines = table.splitlines()
        self.assertTrue(lines[0].startswith("| model | adapter |"))
        self.assertTrue(lines[1].startswith("| --- |"))
        self.assertIn("| smollm2 | llvmpipe (LLVM 15.0.6, 256 bits) | 10.00 (9.00..11.00) |", table)
        self.assertIn("4.00 (pairs 3.67..4.50)", table)
        self.assertIn("5/9", table)
        self.assertIn("NOT MEASURED: qwen2: timed out", table)
        self.assertIn("CROWDED: smollm2: kiln run 2", table)
        e = self.entry()
        e["llama_cpp"]["server"]["fallback"] = {"reason": "crashed; measured with -fa off"}
        e["llama_cpp"]["server"]["weights_off_device"] = [
            {"tensor": "output.weight", "type": "q8_0", "others": 0, "preferred": "Vulkan0",
             "used": "AMX"}]  # fmt: skip
        table = vb.markdown_table({"models": [e]})
        self.assertIn("NOTE: smollm2: crashed; measured with -fa off", table)
        self.assertIn("llama.cpp keeps output.weight (q8_0) in its AMX CPU buffer, off the Vulkan "
                      "device", table)

    def test_merge_and_write(self):
        a = self.entry()
        b = dict(self.entry(), key="qwen2")
        c = dict(self.entry(), key="gemma3")
        merged = vb.merge_models([b, a], [dict(a, name="rerun")])
        self.assertEqual([e["key"] for e in merged], ["smollm2", "qwen2"])
        self.assertEqual(merged[0]["name"], "rerun")
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "r.json"
            first = {"date": "d1", "commands": {"run": "run.sh"}, "models": [a, b],
                     "not_measured": []}  # fmt: skip
            vb.write_result(out, first, None)
            earlier = json.loads(out.read_text())
            second = {"date": "d2", "commands": {"run": "run.sh --models gemma3"}, "models": [c],
                      "not_measured": [{"model": "smollm2", "reason": "x"}]}  # fmt: skip
            final = vb.write_result(out, second, earlier)
            self.assertEqual([e["key"] for e in final["models"]], ["smollm2", "gemma3", "qwen2"])
            self.assertEqual(final["not_measured"], [])  # smollm2 kept from the earlier run
            self.assertEqual(final["earlier_runs"][0]["date"], "d1")
            self.assertEqual(json.loads(out.read_text())["date"], "d2")

    def test_default_out_and_slug(self):
        p = vb.default_out("llvmpipe (LLVM 15.0.6, 256 bits)", "2026-12-03")
        self.assertEqual(p.name, "vulkan-llvmpipe-llvm-15-0-6-256-bits-2026-12-03.json")
        self.assertEqual(p.parent, vb.REPO / "bench" / "results")
        self.assertEqual(vb.slug("NVIDIA H200"), "nvidia-h200")
        self.assertEqual(vb.slug("???"), "unknown")

    def test_last_json_skips_progress(self):
        out = 'loading [###] 100%\r{"adapter": "x", "tokens": [1]}\n'
        self.assertEqual(vb.last_json(out, "kiln")["adapter"], "x")
        with self.assertRaises(vb.BenchError):
            vb.last_json("no json here", "kiln")

    def test_public_argv_and_args(self):
        argv = ["--pid-file", "/tmp/p", "--models", "smollm2", "--install-command=pip x", "--reps", "1"]
        self.assertEqual(vb.public_argv(argv), ["--models", "smollm2", "--reps", "1"])
        a = vb.parse_args(["--models", "smollm2,qwen2", "--reps", "2"])
        self.assertEqual(a.model_keys, ["smollm2", "qwen2"])
        self.assertEqual((a.prompt_tokens, a.gen_tokens, a.context), (32, 16, 512))
        for bad in (["--models", "llama3"], ["--prompt-tokens", "500", "--gen-tokens", "16"]):
            with self.assertRaises(SystemExit), contextlib.redirect_stderr(io.StringIO()) as err:
                vb.parse_args(bad)
            self.assertIn("error:", err.getvalue())

    def test_flash_attn_arg(self):
        self.assertTrue(vb.has_flash_attn_arg(["-t", "1", "-fa", "on"]))
        self.assertTrue(vb.has_flash_attn_arg(["--flash-attn=off"]))
        self.assertFalse(vb.has_flash_attn_arg(["-t", "1"]))

    def test_help(self):
        with self.assertRaises(SystemExit) as done, contextlib.redirect_stdout(io.StringIO()) as out:
            vb.parse_args(["--help"])
        self.assertEqual(done.exception.code, 0)
        self.assertIn("--retry-crowded", out.getvalue())
        self.assertIn("15% of the cores", out.getvalue())

    def test_completion_body(self):
        body = vb.completion_body([1, 2], 16)
        self.assertEqual(body, {"prompt": [1, 2], "n_predict": 16, "temperature": 0,
                                "cache_prompt": False, "ignore_eos": True,
                                "return_tokens": True})  # fmt: skip


if __name__ == "__main__":
    unittest.main()
