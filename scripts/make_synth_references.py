#!/usr/bin/env python3
"""Write llama.cpp's logits on small synthesized models of architectures no installed file covers.

No Qwen3 or Llama 3.x GGUF installs here, so runtime/tests/synth_reference.rs checks kiln on
small files with their real layout and metadata (tensor names and keys as llama.cpp's converter,
convert_hf_to_gguf.py, writes them) and seeded random weights:

  qwen3         architecture `qwen3`: per-head q/k RMSNorm (`blk.N.attn_{q,k}_norm.weight`), no
                biases, NeoX RoPE, head size from `qwen3.attention.key_length` (32, while
                embedding_length / head_count is 16), tied output.
  llama3        architecture `llama` with `rope_freqs.weight`: the per-pair frequency divisors
                that the converter computes for `rope_scaling.rope_type = "llama3"` (factor 8,
                low_freq_factor 1, high_freq_factor 4; original_max_position_embeddings 64, so
                that the divisors span 1..8 across this small head).
  llama_linear  architecture `llama` with `llama.rope.scaling.type = linear` and
                `llama.rope.scaling.factor = 4`.

Every weight is F32, so that both runtimes multiply in f32 and differ only by summation order
and their (shared) f16 KV cache. Weights follow one recipe that the Rust test rebuilds: tensor
`name`'s i-th value is `scale * u`, u in [-1, 1) from splitmix64 seeded with the FNV-1a-64 hash
of the name (`u = (z >> 40) / 2^23 - 1`); matrices have scale 1/sqrt(row length), embeddings 1,
norm weights `1 + 0.25 * u`. The tokenizer is GPT-2 byte-level BPE (the 256 byte tokens, one
merge, the model family's special tokens), enough for llama.cpp to load the file; the test
feeds token ids.

For each model the fixture (runtime/tests/fixtures/synth/{model}.json) holds the metadata the
test writes again, the rope_freqs values, the sum of all weights (to check that the test's
recipe is this one), the token ids, and llama.cpp's logits at every position (llama-cpp-python
0.3.36, CPU, the ids as one batch with logits_all, loaded as make_references.py loads models).

Command (repository root; numpy, gguf, llama-cpp-python==0.3.36; a few seconds):
    python3 scripts/make_synth_references.py
"""

from __future__ import annotations

import json
import math
import sys
import tempfile
from pathlib import Path

import numpy as np
import gguf

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import make_references as mr  # noqa: E402

OUT = REPO / "runtime" / "tests" / "fixtures" / "synth"
COMMAND = "python3 scripts/make_synth_references.py"
IDS = [256, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 10, 7, 200, 31, 99, 3]
DECIMALS = 5

MASK = (1 << 64) - 1


def fnv1a64(s: str) -> int:
    h = 0xCBF29CE484222325
    for b in s.encode():
        h = ((h ^ b) * 0x100000001B3) & MASK
    return h


def uniform(name: str, n: int) -> np.ndarray:
    """n values in [-1, 1): splitmix64 seeded with fnv1a64(name), top 24 bits of each draw."""
    state = fnv1a64(name)
    out = np.empty(n, dtype=np.float32)
    for i in range(n):
        state = (state + 0x9E3779B97F4A7C15) & MASK
        z = state
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK
        z ^= z >> 31
        out[i] = (z >> 40) / float(1 << 23) - 1.0
    return out


def byte_tokens() -> list[str]:
    """GPT-2's bytes_to_unicode: the 256 byte tokens of a byte-level BPE vocabulary, by byte."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    chars, n = {}, 0
    for b in range(256):
        if b in keep:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + n)
            n += 1
    return [chars[b] for b in range(256)]


def llama3_factors(head_dim: int, base: float, factor: float, low: float, high: float,
                   original: int) -> list[float]:
    """convert_hf_to_gguf.py's LlamaModel.generate_extra_tensors for rope_type "llama3"."""
    freqs = 1.0 / (base ** (np.arange(0, head_dim, 2, dtype=np.float32) / head_dim))
    low_wavelen = original / low
    high_wavelen = original / high
    out = []
    for freq in freqs:
        wavelen = 2 * math.pi / freq
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (original / wavelen - low) / (high - low)
            out.append(1 / ((1 - smooth) / factor + smooth))
    return [float(np.float32(f)) for f in out]


def spec(key: str) -> dict:
    if key == "qwen3":
        return {
            "arch": "qwen3", "n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
            "head_dim": 32, "d_ff": 96, "eps": 1e-6, "rope_base": 1_000_000.0,
            "specials": ["<|endoftext|>", "<|im_start|>", "<|im_end|>"], "pre": "qwen2",
            "bos": 256, "eos": 258,
        }
    s = {
        "arch": "llama", "n_layer": 2, "d_model": 64, "n_head": 4, "n_kv_head": 2,
        "head_dim": 16, "d_ff": 96, "eps": 1e-5, "rope_base": 10_000.0,
        "specials": ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"], "pre": "llama-bpe",
        "bos": 256, "eos": 257,
    }
    if key == "llama3":
        s["rope_freqs"] = llama3_factors(s["head_dim"], s["rope_base"], 8.0, 1.0, 4.0, 64)
    else:
        s["rope_scaling"] = {"type": "linear", "factor": 4.0}
    return s


def tensors(s: dict) -> list[tuple[str, np.ndarray]]:
    """Every tensor, as (name, values shaped [rows, row length]) in file order."""
    d, hd, ff = s["d_model"], s["head_dim"], s["d_ff"]
    q, kv = s["n_head"] * hd, s["n_kv_head"] * hd
    vocab = 256 + len(s["specials"])

    def mat(name: str, rows: int, k: int) -> tuple[str, np.ndarray]:
        return name, (uniform(name, rows * k) / np.float32(math.sqrt(k))).reshape(rows, k)

    def norm(name: str, n: int) -> tuple[str, np.ndarray]:
        return name, np.float32(1.0) + np.float32(0.25) * uniform(name, n)

    out = [("token_embd.weight", uniform("token_embd.weight", vocab * d).reshape(vocab, d))]
    out.append(norm("output_norm.weight", d))
    if "rope_freqs" in s:
        out.append(("rope_freqs.weight", np.array(s["rope_freqs"], dtype=np.float32)))
    for il in range(s["n_layer"]):
        n = f"blk.{il}."
        out.append(norm(n + "attn_norm.weight", d))
        out += [mat(n + "attn_q.weight", q, d), mat(n + "attn_k.weight", kv, d),
                mat(n + "attn_v.weight", kv, d), mat(n + "attn_output.weight", d, q)]
        if s["arch"] == "qwen3":
            out += [norm(n + "attn_q_norm.weight", hd), norm(n + "attn_k_norm.weight", hd)]
        out.append(norm(n + "ffn_norm.weight", d))
        out += [mat(n + "ffn_gate.weight", ff, d), mat(n + "ffn_up.weight", ff, d),
                mat(n + "ffn_down.weight", d, ff)]
    return out


def write_gguf(path: Path, s: dict, ts: list[tuple[str, np.ndarray]]) -> None:
    arch = s["arch"]
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(f"kiln synthesized {arch}")
    w.add_context_length(256)
    w.add_embedding_length(s["d_model"])
    w.add_block_count(s["n_layer"])
    w.add_feed_forward_length(s["d_ff"])
    w.add_head_count(s["n_head"])
    w.add_head_count_kv(s["n_kv_head"])
    w.add_layer_norm_rms_eps(s["eps"])
    w.add_rope_freq_base(s["rope_base"])
    if arch == "qwen3":
        w.add_key_length(s["head_dim"])
        w.add_value_length(s["head_dim"])
    else:
        w.add_rope_dimension_count(s["head_dim"])
    if "rope_scaling" in s:
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(s["rope_scaling"]["factor"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    tokens = byte_tokens() + s["specials"]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(s["pre"])
    w.add_token_list(tokens)
    w.add_token_types([gguf.TokenType.NORMAL] * 256 + [gguf.TokenType.CONTROL] * len(s["specials"]))
    w.add_token_merges(["Ġ t"])
    w.add_bos_token_id(s["bos"])
    w.add_eos_token_id(s["eos"])
    w.add_add_bos_token(False)
    for name, values in ts:
        w.add_tensor(name, values)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def llama_logits(path: Path, ids: list[int]) -> np.ndarray:
    import llama_cpp

    mr.disable_extra_bufts()
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=64,
        n_batch=64,
        n_threads=1,
        n_threads_batch=1,
        n_gpu_layers=0,
        seed=mr.LLAMA_SEED,
        logits_all=True,
        verbose=False,
    )
    if llm.model_params.use_extra_bufts:
        mr.fail("use_extra_bufts is still on; refusing to run (see make_references.py)")
    llm.eval(ids)
    out = np.array(llm.scores[: len(ids)], dtype=np.float32)
    del llm
    return out


def main() -> int:
    import llama_cpp

    if llama_cpp.__version__ != mr.EXPECTED_VERSION:
        mr.fail(f"llama-cpp-python {llama_cpp.__version__}; the fixtures use {mr.EXPECTED_VERSION}")
    with tempfile.TemporaryDirectory() as tmp:
        for key in ["qwen3", "llama3", "llama_linear"]:
            s = spec(key)
            ts = tensors(s)
            path = Path(tmp) / f"{key}.gguf"
            write_gguf(path, s, ts)
            logits = llama_logits(path, IDS)
            fixture = {
                "model": key,
                "generator": mr.GENERATOR,
                "command": COMMAND,
                "settings": {"n_ctx": 64, "n_batch": 64, "n_threads": 1, "kv_cache": "f16",
                             "flash_attn": False, "logits_all": True},
                "spec": s,
                "weight_sum": float(sum(np.float64(v).sum() for _, v in ts)),
                "ids": IDS,
                "logits": [[round(float(x), DECIMALS) for x in row] for row in logits],
            }
            mr.write_json(OUT / f"{key}.json", fixture)
    return 0


if __name__ == "__main__":
    sys.exit(main())
