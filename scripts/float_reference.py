#!/usr/bin/env python3
"""Float64 forward pass of a GGUF model (llama, qwen2, gemma3): the exact-arithmetic reference.

What it computes: the logits at every position of token-id sequences, with the model's quantized
weights expanded exactly and every activation kept in float64. "Exact" means exact arithmetic on
the weights the file holds, under the graph llama.cpp builds for the architecture (the semantics
kiln and llama.cpp both implement), not the original float checkpoint.

Weights. Each block format is expanded in float64 by `dequantize`, in which every product and
difference is exact (an f16 scale has 11 significant bits, the block integers at most 8, so
`d * sc * q` fits 53 bits, and so does the Q4_K/Q5_K difference `d*sc*q - dmin*m`, whose terms
are multiples of 2^-24 below 2^26). gguf-py's `gguf.quants.dequantize` computes the same values in
float32, which rounds some of them: every tensor is cross-checked against it with a bound of one
float32 rounding of each term (`check_against_gguf`), which catches any unpacking mistake while
allowing the float32 rounding. Measured on the three models (`--check-dequant`): gguf-py's float32
values are exact for Q8_0, Q5_0 and Q6_K, and rounded for some Q4_1 and Q4_K values (see below).

Architectures (from GGUF metadata; the constants llama.cpp fixes in code are named where used):
  llama   RMSNorm, RoPE on adjacent pairs, SwiGLU, GQA.
  qwen2   as llama plus q/k/v biases, RoPE on halves (NeoX), separate output matrix.
  gemma3  the GGUF's norm weights already hold Gemma's (1 + w) (llama.cpp's converter adds the 1;
          `ffn_norm` has exact zeros where w = -1), embeddings scaled by sqrt(d_model), RMSNorm
          of q and k per head, post-attention and post-FFN norms before each residual add,
          GELU (tanh form) gated FFN, q scaled by 1/sqrt(key_length) (llama.cpp's rule for every
          size but 27B), local layers (all but every 6th: llama.cpp's default pattern when the
          file gives none) attend through the sliding window with RoPE base 10000 (llama.cpp's
          default when `rope.freq_base_swa` is absent), global layers use `rope.freq_base`,
          tied output, final tanh soft-cap when `final_logit_softcapping` is present.

--emulate adds roundings like llama.cpp's CPU path, one switch each, to find which rounding
causes a difference (they emulate, they are not bit-exact):
  act8   activations quantized before each quantized matrix product as llama.cpp does: Q8_0
         blocks of 32 (f16 scale) for Q4_0/Q5_0/Q8_0 weights, Q8_1 (f16 scale and f16 block sum)
         for Q4_1/Q5_1, Q8_K blocks of 256 (f32 scale, signed extreme -> -127) for K-quants;
         act8.qkv, act8.o, act8.gateup, act8.down, act8.head: the same before one kind of
         product only;
  kv16   q, k, v rounded to f16 (the f16 KV cache, q converted to f16 for the K.q product) and the
         softmax weights rounded to f16 before they meet V;
  gelu16 GELU through llama.cpp's f16 table (input rounded to f16, f16 result).

Commands (from the repository root; python3 with numpy and gguf):
    python3 scripts/float_reference.py models/MODEL.gguf runtime/tests/fixtures/reference/M.json
        [--emulate act8,kv16,gelu16] [--save FILE.npz] [--dump FILE.npz] [--check-dequant]
prints, per fixture case, the float64 pass against llama.cpp's stored first-position logits
(`first_top`, 64 ids; `first_logits_sample`, 256 ids), as a sanity check. --save writes the
logits at every position of every case (float64; the distance report uses them), --dump the
hidden state after each named op of every layer (names as llama.cpp's graph callbacks use them:
attn_norm, kqv_out, attn_post_norm, sa_out, ffn_norm, ffn_out, ffn_post_norm, l_out; then
result_norm), for per-layer comparisons (scripts/layer_compare.py).

Results (this machine, 2 cores; the fixtures are llama-cpp-python 0.3.36's, CPU):
Sanity check, the float64 last-position logits against llama.cpp's stored first-position ones
(`max` = max |llama.cpp - float64|, `mean` = mean signed difference, over the 64 `first_top` /
256 `first_logits_sample` ids; `argmax` = float64 argmax is llama.cpp's first greedy token;
`corr` over first_top). Default command, per model:

SmolLM2-135M-Instruct.Q4_1 (llama; 8 prompts, 243 positions, float64 pass 5 s):
case             n  top max  top mean  smp max  smp mean argmax      corr
capital          5   0.2864   +0.0104   0.3852   +0.0236    yes  0.996897
story           19   0.2719   +0.0237   0.7362   +0.3147    yes  0.998327
code             6   0.4105   -0.0832   0.5315   -0.0865    yes  0.996419
list            21   0.5573   +0.1527   0.5247   +0.1963    yes  0.998386
long            78   0.2129   +0.0022   0.3990   +0.1047    yes  0.995907
chat_capital    37   0.9572   -0.6029   1.3974   -0.8737     NO  0.994844
chat_colors     35   0.2545   +0.0216   0.4731   +0.0176    yes  0.996658
chat_code       42   0.5016   +0.1396   0.6102   -0.0029    yes  0.995545

gemma-3-270m Q4_K_M (gemma3; 5 prompts, 134 positions, float64 pass 22 s):
capital          6   0.2916   +0.0415   0.5009   -0.0467    yes  0.996506
story           20   0.4535   -0.0684   0.5451   +0.0809    yes  0.997724
code             7   0.4549   +0.1278   0.9197   +0.2817    yes  0.998824
list            22   0.3889   +0.0186   0.7692   +0.1274    yes  0.997488
long            79   0.3003   -0.0230   0.3799   +0.0162    yes  0.995646

qwen2.5-coder-0.5b-instruct (qwen2; 8 prompts, 238 positions, float64 pass 26 s):
capital          5   0.2271   -0.0224   0.3082   +0.0404    yes  0.998216
story           19   0.1564   -0.0325   0.1548   -0.0213    yes  0.999564
code             4   0.1813   -0.0324   0.2477   -0.0463    yes  0.999678
list            20   0.3127   +0.0230   0.3789   -0.0160    yes  0.999355
long            79   0.1294   -0.0269   0.1844   -0.0093    yes  0.998165
chat_capital    36   0.2212   +0.0325   0.2109   +0.0563    yes  0.999286
chat_colors     34   0.1556   -0.0079   0.1678   +0.0075    yes  0.999589
chat_code       41   0.1447   -0.0251   0.1891   +0.0292    yes  0.999663

The float64 pass and llama.cpp agree on the first greedy token in 20 of 21 cases (SmolLM2's
chat_capital, where llama.cpp is furthest from exact, is the miss) with top-64 correlation
>= 0.9948: the architectures are implemented as llama.cpp implements them. `--emulate act8,kv16`
on SmolLM2 reproduces the earlier llama-only version of this script's emulation figures exactly
(capital 0.5267 / -0.0849 / 0.6098 / -0.2002, ...). The full-vocabulary, every-position
comparison of kiln and llama.cpp against this pass is scripts/distance_report.py.

--check-dequant (34 s for Gemma 3, 50 s for Qwen2.5): every tensor of the three files expands
within float32 rounding of gguf-py's values, and for these files gguf-py's float32 values are in
fact all exact (0 rounded of 134 M SmolLM2, 268 M Gemma 3 and 630 M Qwen2.5 values: their scales
are small enough that `d*sc*q - dmin*m` fits 24 bits); the float64 expansion does not depend on
that.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import gguf
import numpy as np
from gguf import GGMLQuantizationType as QT

# ---------------------------------------------------------------------------------------------
# Exact dequantization


def _f16(b: np.ndarray) -> np.ndarray:
    """Little-endian f16 fields (uint8 pairs, last axis) -> float64."""
    return np.ascontiguousarray(b).view(np.float16).astype(np.float64)


def _k_scales(scales: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 8 six-bit (scale, min) pairs of a Q4_K/Q5_K block's 12 scale bytes (ggml's
    get_scale_min_k4)."""
    s = scales.astype(np.int64)
    sc = np.empty(s.shape[:-1] + (8,), np.int64)
    m = np.empty_like(sc)
    sc[..., :4] = s[..., 0:4] & 63
    m[..., :4] = s[..., 4:8] & 63
    sc[..., 4:] = (s[..., 8:12] & 0xF) | ((s[..., 0:4] >> 6) << 4)
    m[..., 4:] = (s[..., 8:12] >> 4) | ((s[..., 4:8] >> 6) << 4)
    return sc.astype(np.float64), m.astype(np.float64)


# type -> (block size in values, bytes per block)
BLOCKS = {
    QT.Q4_0: (32, 18),
    QT.Q4_1: (32, 20),
    QT.Q5_0: (32, 22),
    QT.Q5_1: (32, 24),
    QT.Q8_0: (32, 34),
    QT.Q4_K: (256, 144),
    QT.Q5_K: (256, 176),
    QT.Q6_K: (256, 210),
}


def dequantize(raw: np.ndarray, qtype: QT, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a tensor (raw bytes, or float values for F32/F16/BF16) -> (values, terms), both
    float64 of shape (rows, k). `values` are exact; `terms` is the sum of the magnitudes of the
    terms each value is made of, which bounds the float32 rounding of gguf-py's version."""
    if qtype == QT.F32:
        v = np.asarray(raw, np.float32).reshape(-1, k).astype(np.float64)
        return v, np.abs(v)
    if qtype == QT.F16:
        v = np.asarray(raw).view(np.float16).reshape(-1, k).astype(np.float64)
        return v, np.abs(v)
    if qtype == QT.BF16:
        u = np.asarray(raw).view(np.uint16).reshape(-1, k).astype(np.uint32) << 16
        v = u.view(np.float32).astype(np.float64)
        return v, np.abs(v)
    if qtype not in BLOCKS:
        raise ValueError(f"no exact dequantization for {qtype.name}")
    bs, nb = BLOCKS[qtype]
    b = np.asarray(raw, np.uint8).reshape(-1, nb)
    if qtype in (QT.Q4_0, QT.Q4_1, QT.Q5_0, QT.Q5_1, QT.Q8_0):
        d = _f16(b[:, 0:2])
        if qtype == QT.Q8_0:
            q = b[:, 2:].view(np.int8).astype(np.float64)
            v = d * q
            return v.reshape(-1, k), np.abs(v).reshape(-1, k)
        has_min = qtype in (QT.Q4_1, QT.Q5_1)
        m = _f16(b[:, 2:4]) if has_min else np.zeros_like(d)
        at = 4 if has_min else 2
        if qtype in (QT.Q5_0, QT.Q5_1):
            qh = b[:, at : at + 4].copy().view(np.uint32).astype(np.int64)  # (n, 1)
            at += 4
            j = np.arange(32)
            high = ((qh >> j) & 1) << 4
        else:
            high = 0
        qs = b[:, at:].astype(np.int64)
        q = np.concatenate([qs & 0xF, qs >> 4], axis=1) + high
        if not has_min:
            q = q - (16 if qtype == QT.Q5_0 else 8)
        dq = d * q.astype(np.float64)
        v = dq + m
        return v.reshape(-1, k), (np.abs(dq) + np.abs(m)).reshape(-1, k)
    d = None
    if qtype in (QT.Q4_K, QT.Q5_K):
        d, dmin = _f16(b[:, 0:2]), _f16(b[:, 2:4])
        sc, mn = _k_scales(b[:, 4:16])
        if qtype == QT.Q4_K:
            qs = b[:, 16:144].astype(np.int64).reshape(-1, 4, 32)
            # chunk c of 64 values: 32 low nibbles (sub-block 2c), 32 high nibbles (2c + 1)
            q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
        else:
            qh = b[:, 16:48].astype(np.int64)  # (n, 32)
            qs = b[:, 48:176].astype(np.int64).reshape(-1, 4, 32)
            q = np.stack([qs & 0xF, qs >> 4], axis=2).reshape(-1, 8, 32)
            bit = ((qh[:, None, :] >> np.arange(8)[None, :, None]) & 1) << 4
            q = q + bit
        scaled = (d * sc)[:, :, None] * q.astype(np.float64)  # exact: 17 + 5 bits
        mins = (dmin * mn)[:, :, None]
        v = scaled - mins
        t = np.abs(scaled) + np.abs(mins)
        return v.reshape(-1, k), np.broadcast_to(t, v.shape).reshape(-1, k)
    # Q6_K: ql[128] qh[64] scales[16] (int8) d (f16); two halves of 128 values
    ql = b[:, 0:128].astype(np.int64).reshape(-1, 2, 64)
    qh = b[:, 128:192].astype(np.int64).reshape(-1, 2, 32)
    sc = b[:, 192:208].view(np.int8).astype(np.float64).reshape(-1, 2, 8)
    d = _f16(b[:, 208:210])[:, :, None]  # (n, 1, 1)
    lo, hi = ql[:, :, :32], ql[:, :, 32:]
    q = np.stack(
        [
            (lo & 0xF) | (((qh >> 0) & 3) << 4),
            (hi & 0xF) | (((qh >> 2) & 3) << 4),
            (lo >> 4) | (((qh >> 4) & 3) << 4),
            (hi >> 4) | (((qh >> 6) & 3) << 4),
        ],
        axis=2,
    ) - 32  # (n, 2, 4, 32): quarter j of each half uses scales 2j (first 16) and 2j + 1
    s = sc.reshape(-1, 2, 4, 2)  # (half, quarter, which 16)
    scale = np.repeat(s, 16, axis=3)  # (n, 2, 4, 32)
    v = (d[:, :, :, None] * scale) * q.astype(np.float64)
    return v.reshape(-1, k), np.abs(v).reshape(-1, k)


def check_against_gguf(raw: np.ndarray, qtype: QT, v: np.ndarray, terms: np.ndarray) -> int:
    """Compares the exact values with gguf-py's float32 dequantization: each may differ by at
    most one float32 rounding per term. Returns how many values differ at all."""
    ref = gguf.quants.dequantize(np.asarray(raw), qtype).astype(np.float64).reshape(v.shape)
    diff = np.abs(v - ref)
    bound = terms * 2.0**-23 + 1e-300
    if np.any(diff > bound):
        i = int(np.argmax(diff - bound))
        raise ValueError(
            f"{qtype.name}: exact value {v.flat[i]!r} vs gguf-py {ref.flat[i]!r} "
            f"beyond float32 rounding"
        )
    return int(np.count_nonzero(diff))


# ---------------------------------------------------------------------------------------------
# Emulated roundings (llama.cpp's CPU path, approximately)


def f16(x: np.ndarray) -> np.ndarray:
    return np.asarray(x).astype(np.float16).astype(np.float64)


def act_kind(qtype: QT) -> str | None:
    if qtype in (QT.Q4_0, QT.Q5_0, QT.Q8_0):
        return "q8_0"
    if qtype in (QT.Q4_1, QT.Q5_1):
        return "q8_1"
    if qtype in (QT.Q4_K, QT.Q5_K, QT.Q6_K):
        return "q8_k"
    if qtype == QT.F16:
        return "f16"
    return None


def quantize_act(x: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray | None]:
    """llama.cpp's activation quantization of rows of x: (values the integer product sees,
    Q8_1 block sums in f16 or None)."""
    n, k = x.shape
    if kind == "f16":
        return f16(x), None
    if kind == "q8_k":
        xb = x.astype(np.float32).reshape(n, k // 256, 256)
        idx = np.argmax(np.abs(xb), axis=-1)[..., None]
        mx = np.take_along_axis(xb, idx, axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            iscale = np.where(mx == 0, np.float32(0), np.float32(-127) / mx).astype(np.float32)
            d = np.where(mx == 0, np.float32(0), np.float32(1) / iscale).astype(np.float32)
        q = np.minimum(np.rint(xb * iscale), 127).astype(np.float64)
        return (q * d.astype(np.float64)).reshape(n, k), None
    xb = x.astype(np.float32).reshape(n, k // 32, 32)
    amax = np.abs(xb).max(axis=-1, keepdims=True)
    with np.errstate(divide="ignore"):
        d = amax / np.float32(127)
        inv = np.where(amax == 0, np.float32(0), np.float32(127) / amax).astype(np.float32)
    q = np.rint(xb * inv).astype(np.float64)
    values = (q * f16(d)).reshape(n, k)
    sums = f16(d.astype(np.float64)[..., 0] * q.sum(axis=-1)) if kind == "q8_1" else None
    return values, sums


GELU_A = 0.044715
SQRT_2_OVER_PI = np.sqrt(2.0 / np.pi)


def gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + np.tanh(SQRT_2_OVER_PI * x * (1.0 + GELU_A * x * x)))


def gelu_f16_table(x: np.ndarray) -> np.ndarray:
    """ggml's GGML_GELU_FP16 path: x rounded to f16, gelu in f32, result stored as f16;
    x <= -10 gives 0 and x >= 10 gives x."""
    h = x.astype(np.float16).astype(np.float32)
    c = np.float32(SQRT_2_OVER_PI)
    a = np.float32(GELU_A)
    g = (np.float32(0.5) * h * (np.float32(1) + np.tanh(c * h * (np.float32(1) + a * h * h))))
    y = g.astype(np.float16).astype(np.float64)
    return np.where(x <= -10, 0.0, np.where(x >= 10, x, y))


# ---------------------------------------------------------------------------------------------
# The model


def field(r: gguf.GGUFReader, key: str, default=None):
    f = r.fields.get(key)
    if f is None:
        if default is None:
            raise KeyError(f"GGUF metadata lacks {key}")
        return default
    return f.contents()


# act8 on every product, or on one kind of product only (act8.down: the FFN's down projection)
PRODUCTS = {
    "qkv": ("attn_q", "attn_k", "attn_v"),
    "o": ("attn_output",),
    "gateup": ("ffn_gate", "ffn_up"),
    "down": ("ffn_down",),
    "head": ("output", "token_embd"),
}
EMULATIONS = ("act8", "kv16", "gelu16") + tuple(f"act8.{k}" for k in PRODUCTS)


def product_kind(name: str) -> str:
    base = name.split(".")[-2]
    return next(k for k, v in PRODUCTS.items() if base in v)


class Model:
    def __init__(self, path: str, emulate: frozenset[str] = frozenset(), check: bool = True):
        bad = set(emulate) - set(EMULATIONS)
        if bad:
            raise ValueError(f"unknown --emulate {sorted(bad)}; known: {EMULATIONS}")
        self.emulate = frozenset(emulate)
        self.check = check
        self.inexact: dict[str, list[int]] = {}  # type -> [values gguf-py rounds, values]
        r = gguf.GGUFReader(path)
        self.tensors = {t.name: t for t in r.tensors}
        arch = field(r, "general.architecture")
        if arch not in ("llama", "qwen2", "gemma3"):
            raise ValueError(f"architecture {arch!r}: llama, qwen2 or gemma3 expected")
        self.arch = arch

        def meta(key, default=None):
            return field(r, f"{arch}.{key}", default)

        self.n_layer = int(meta("block_count"))
        self.d = int(meta("embedding_length"))
        self.n_head = int(meta("attention.head_count"))
        self.n_kv = int(meta("attention.head_count_kv"))
        self.hd = int(meta("attention.key_length", self.d // self.n_head))
        self.rot = int(meta("rope.dimension_count", self.hd))
        self.base = float(meta("rope.freq_base", 10000.0))
        self.eps = float(meta("attention.layer_norm_rms_epsilon"))
        self.neox = arch in ("qwen2", "gemma3")  # llama.cpp's LLAMA_ROPE_TYPE_NEOX
        self.gemma = arch == "gemma3"
        self.embed_scale = np.sqrt(self.d) if self.gemma else 1.0
        self.attn_scale = 1.0 / np.sqrt(self.hd)
        self.final_softcap = float(meta("final_logit_softcapping", 0.0))
        self.attn_softcap = float(meta("attn_logit_softcapping", 0.0))
        self.window = int(meta("attention.sliding_window", 0)) if self.gemma else 0
        self.swa_pattern = int(meta("attention.sliding_window_pattern", 6)) if self.window else 0
        self.base_local = float(meta("rope.freq_base_swa", 10000.0)) if self.window else self.base
        if meta("rope.scaling.type", "none") not in ("none",) and float(
            meta("rope.scaling.factor", 1.0)
        ) != 1.0:
            raise ValueError("RoPE scaling is not implemented")
        self.output = "output.weight" if "output.weight" in self.tensors else "token_embd.weight"
        self.vocab = int(self.tensors[self.output].shape[1])

    # -- weights

    def qtype(self, name: str) -> QT:
        return self.tensors[name].tensor_type

    def rows(self, name: str, start: int = 0, stop: int | None = None, idx=None) -> np.ndarray:
        """Rows of a tensor (all, a range, or the ids in idx), exactly, as float64 (rows, k)."""
        t = self.tensors[name]
        k = int(t.shape[0])
        raw = np.asarray(t.data)
        raw = raw.reshape(-1, raw.size // int(np.prod([int(s) for s in t.shape[1:]]) or 1))
        raw = raw[idx] if idx is not None else raw[start:stop]
        v, terms = dequantize(raw, t.tensor_type, k)
        if self.check:
            n = check_against_gguf(raw, t.tensor_type, v, terms)
            c = self.inexact.setdefault(t.tensor_type.name, [0, 0])
            c[0] += n
            c[1] += v.size
        return v

    def vec(self, name: str) -> np.ndarray:
        return self.rows(name)[0]

    def linear(self, name: str, x: np.ndarray, start: int = 0, stop: int | None = None):
        """x @ W[start:stop].T; with act8, x is first quantized as llama.cpp does."""
        w = self.rows(name, start, stop)
        qtype = self.qtype(name)
        kind = act_kind(qtype)
        on = "act8" in self.emulate or f"act8.{product_kind(name)}" in self.emulate
        if not on or kind is None:
            return x @ w.T
        xv, sums = quantize_act(x, kind)
        if sums is None:
            return xv @ w.T
        # Q8_1 x Q4_1/Q5_1: the integer part meets q * d, the block minimum the stored f16 sum
        raw = np.asarray(self.tensors[name].data)
        raw = raw.reshape(-1, raw.shape[-1])[start:stop]
        mins = _f16(raw.reshape(-1, BLOCKS[qtype][1])[:, 2:4]).reshape(w.shape[0], -1)
        return xv @ (w - np.repeat(mins, 32, axis=1)).T + sums @ mins.T

    # -- ops

    def rmsnorm(self, x: np.ndarray, g: np.ndarray) -> np.ndarray:
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + self.eps) * g

    def rope(self, x: np.ndarray, pos: np.ndarray, base: float) -> np.ndarray:
        """x: (n, heads, hd), the first `rot` dims of each head rotated by pos * base^(-2i/rot):
        pairs (2i, 2i+1) for llama, (i, i + rot/2) for NeoX."""
        r = self.rot
        theta = pos[:, None].astype(np.float64) * base ** (-np.arange(0, r, 2) / r)[None, :]
        c, s = np.cos(theta)[:, None, :], np.sin(theta)[:, None, :]
        out = x.copy()
        if self.neox:
            x0, x1 = x[..., : r // 2], x[..., r // 2 : r]
            out[..., : r // 2] = x0 * c - x1 * s
            out[..., r // 2 : r] = x0 * s + x1 * c
        else:
            x0, x1 = x[..., 0:r:2], x[..., 1:r:2]
            out[..., 0:r:2] = x0 * c - x1 * s
            out[..., 1:r:2] = x0 * s + x1 * c
        return out

    def is_local(self, il: int) -> bool:
        return self.window > 0 and self.swa_pattern > 0 and (il % self.swa_pattern) < (
            self.swa_pattern - 1
        )

    def attention(self, q, k, v, local: bool) -> np.ndarray:
        """One sequence: q (n, nh, hd), k/v (n, nkv, hd) -> (n, nh * hd), causal."""
        n, nh, hd = q.shape
        g = nh // self.n_kv
        i = np.arange(n)
        masked = i[None, :] > i[:, None]
        if local:  # llama.cpp's standard window: key j is visible from i while i - j < window
            masked |= (i[:, None] - i[None, :]) >= self.window
        out = np.empty((n, nh, hd))
        for h in range(nh):
            kv = h // g
            s = q[:, h, :] @ k[:, kv, :].T * self.attn_scale
            if self.attn_softcap:
                s = self.attn_softcap * np.tanh(s / self.attn_softcap)
            s = np.where(masked, -np.inf, s)
            p = np.exp(s - s.max(axis=-1, keepdims=True))
            p /= p.sum(axis=-1, keepdims=True)
            if "kv16" in self.emulate:
                p = f16(p)
            out[:, h, :] = p @ v[:, kv, :]
        return out.reshape(n, nh * hd)

    def forward(self, prompts: list[list[int]], dump: dict | None = None) -> list[np.ndarray]:
        """Logits (len(p), vocab) at every position of each prompt. The prompts share each
        matrix product (their rows are stacked); attention stays within a prompt. With `dump`,
        each op's output is stored there as dump[f"{op}-{layer}"] = list per prompt."""
        lens = [len(p) for p in prompts]
        cuts = np.cumsum([0] + lens)
        ids = np.concatenate([np.asarray(p, np.int64) for p in prompts])
        pos = np.concatenate([np.arange(n) for n in lens])
        nh, nkv, hd = self.n_head, self.n_kv, self.hd

        def keep(name, il, x):
            if dump is not None:
                key = f"{name}-{il}" if il >= 0 else name
                dump[key] = [x[cuts[j] : cuts[j + 1]].copy() for j in range(len(lens))]

        uniq, inv = np.unique(ids, return_inverse=True)
        x = self.rows("token_embd.weight", idx=uniq)[inv] * self.embed_scale
        for il in range(self.n_layer):
            p = f"blk.{il}."
            local = self.is_local(il)
            base = self.base_local if local else self.base
            h = self.rmsnorm(x, self.vec(p + "attn_norm.weight"))
            keep("attn_norm", il, h)
            q = self.linear(p + "attn_q.weight", h)
            k = self.linear(p + "attn_k.weight", h)
            v = self.linear(p + "attn_v.weight", h)
            if p + "attn_q.bias" in self.tensors:
                q += self.vec(p + "attn_q.bias")
                k += self.vec(p + "attn_k.bias")
                v += self.vec(p + "attn_v.bias")
            q, k, v = q.reshape(-1, nh, hd), k.reshape(-1, nkv, hd), v.reshape(-1, nkv, hd)
            if self.gemma:
                q = self.rmsnorm(q, self.vec(p + "attn_q_norm.weight"))
                k = self.rmsnorm(k, self.vec(p + "attn_k_norm.weight"))
            q, k = self.rope(q, pos, base), self.rope(k, pos, base)
            if "kv16" in self.emulate:
                q, k, v = f16(q), f16(k), f16(v)
            att = np.concatenate(
                [
                    self.attention(q[a:b], k[a:b], v[a:b], local)
                    for a, b in zip(cuts[:-1], cuts[1:])
                ]
            )
            keep("kqv_out", il, att)
            o = self.linear(p + "attn_output.weight", att)
            if self.gemma:
                o = self.rmsnorm(o, self.vec(p + "post_attention_norm.weight"))
                keep("attn_post_norm", il, o)
            x = x + o
            keep("sa_out", il, x)
            h = self.rmsnorm(x, self.vec(p + "ffn_norm.weight"))
            keep("ffn_norm", il, h)
            g = self.linear(p + "ffn_gate.weight", h)
            u = self.linear(p + "ffn_up.weight", h)
            if self.gemma:
                act = gelu_f16_table(g) if "gelu16" in self.emulate else gelu(g)
            else:
                act = g / (1.0 + np.exp(-g))
            f = self.linear(p + "ffn_down.weight", act * u)
            keep("ffn_out", il, f)
            if self.gemma:
                f = self.rmsnorm(f, self.vec(p + "post_ffw_norm.weight"))
                keep("ffn_post_norm", il, f)
            x = x + f
            keep("l_out", il, x)
        h = self.rmsnorm(x, self.vec("output_norm.weight"))
        keep("result_norm", -1, h)
        logits = np.empty((len(ids), self.vocab))
        step = 16384
        for a in range(0, self.vocab, step):
            b = min(a + step, self.vocab)
            logits[:, a:b] = self.linear(self.output, h, a, b)
        if self.final_softcap:
            logits = self.final_softcap * np.tanh(logits / self.final_softcap)
        return [logits[a:b] for a, b in zip(cuts[:-1], cuts[1:])]


# ---------------------------------------------------------------------------------------------
# Command line


def sanity(case: dict, logits: np.ndarray) -> dict:
    """The float64 last-position logits against llama.cpp's stored first-position ones."""
    last = logits[-1]
    top = np.asarray(case["first_top"], dtype=np.float64)
    sample = np.asarray(case["first_logits_sample"], dtype=np.float64)
    dt = top[:, 1] - last[top[:, 0].astype(int)]
    ds = sample[:, 1] - last[sample[:, 0].astype(int)]
    return {
        "name": case["name"],
        "n": len(case["prompt_ids"]),
        "top_max": float(np.max(np.abs(dt))),
        "top_mean": float(np.mean(dt)),
        "sample_max": float(np.max(np.abs(ds))),
        "sample_mean": float(np.mean(ds)),
        "argmax": int(np.argmax(last)) == case["greedy_ids"][0],
        "corr": float(np.corrcoef(top[:, 1], last[top[:, 0].astype(int)])[0, 1]),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("fixture", help="a runtime/tests/fixtures/reference/*.json file")
    ap.add_argument("--emulate", default="", help=f"comma-separated subset of {EMULATIONS}")
    ap.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    ap.add_argument("--save", help="write every position's logits of every case here (.npz)")
    ap.add_argument("--dump", help="write each op's output per layer here (.npz)")
    ap.add_argument(
        "--check-dequant",
        action="store_true",
        help="also expand every tensor of the file and report where gguf-py's float32 rounds",
    )
    args = ap.parse_args()
    with open(args.fixture) as f:
        fixture = json.load(f)
    emulate = frozenset(e for e in args.emulate.split(",") if e)
    model = Model(args.gguf, emulate)
    cases = [c for c in fixture["cases"] if not args.cases or c["name"] in args.cases.split(",")]
    if args.check_dequant:
        t0 = time.time()
        for name in model.tensors:
            model.rows(name)
        print(f"dequantized all {len(model.tensors)} tensors in {time.time() - t0:.0f} s")
        for ty, (n, total) in sorted(model.inexact.items()):
            print(f"  {ty:<5} {total:>11} values, gguf-py float32 rounds {n}")
        model.inexact.clear()
    t0 = time.time()
    dump: dict | None = {} if args.dump else None
    out = model.forward([c["prompt_ids"] for c in cases], dump)
    print(
        f"{model.arch}: {len(cases)} prompts, {sum(len(c['prompt_ids']) for c in cases)} "
        f"positions, float64 pass {time.time() - t0:.0f} s (emulate: {sorted(emulate) or 'none'})"
    )
    if args.save:
        np.savez(
            args.save,
            **{c["name"]: l for c, l in zip(cases, out)},
            **{f"ids:{c['name']}": np.asarray(c["prompt_ids"]) for c in cases},
        )
    if dump is not None:
        flat = {f"{k}:{c['name']}": v[i] for k, v in dump.items() for i, c in enumerate(cases)}
        np.savez(args.dump, **flat)
    print(
        f"{'case':<14} {'n':>3} {'top max':>8} {'top mean':>9} {'smp max':>8} {'smp mean':>9} "
        f"{'argmax':>6} {'corr':>9}"
    )
    rows = [sanity(c, l) for c, l in zip(cases, out)]
    for r in rows:
        print(
            f"{r['name']:<14} {r['n']:>3} {r['top_max']:>8.4f} {r['top_mean']:>+9.4f} "
            f"{r['sample_max']:>8.4f} {r['sample_mean']:>+9.4f} "
            f"{'yes' if r['argmax'] else 'NO':>6} {r['corr']:>9.6f}"
        )
    ok = sum(r["argmax"] for r in rows) * 2 > len(rows) and min(r["corr"] for r in rows) > 0.99
    if not ok:
        print("sanity check FAILED: the float64 pass disagrees with llama.cpp", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
