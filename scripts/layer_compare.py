#!/usr/bin/env python3
"""Per-layer comparison of a runtime's hidden states with the float64 reference.

The runtime is llama.cpp or kiln. llama.cpp names its graph's intermediate tensors (`attn_norm-3`, `kqv_out-3`, `ffn_out-3`,
`l_out-3`, `result_norm`, ...); this script reads them through the context's eval callback
(`cb_eval`, CPU backend: the data is host memory) while llama.cpp evaluates a prompt as one batch
with every position's logits. With --runtime kiln-cpu or kiln-gpu it reads kiln's instead, which
`kiln logits --trace` writes under the same names for the ids run as one prompt (the CPU path:
every op below; the GPU path: kqv_out, sa_out, ffn_out, l_out and result_norm, the others
existing there only as int8 units), and kiln's logits after each prefix. Each tensor is compared
with the same op's output in scripts/float_reference.py's float64 pass (and, with --emulate, a
float64 pass with some of llama.cpp's roundings switched on). It prints, per op and layer, the
relative RMS error ||runtime - float64|| / ||float64|| over all positions and the mean signed
error, so the op where a difference enters or grows stands out.

Command (repository root; numpy, gguf; llama-cpp-python==0.3.36 for --runtime llama, a release
build of kiln, `cargo build --release -p kiln-cli`, for the kiln runtimes):
    python3 scripts/layer_compare.py models/MODEL.gguf FIXTURE.json CASE [--ops l_out,...]
        [--emulate act8,kv16,gelu16] [--runtime llama|kiln-cpu|kiln-gpu]
        [--kiln target/release/kiln]
Findings are in docs/correctness.md ("Distance from exact arithmetic", "Gemma 3: the offset
from llama.cpp").
"""

from __future__ import annotations

import argparse
import ctypes
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import float_reference as fr  # noqa: E402

DEFAULT_OPS = "attn_norm,kqv_out,attn_post_norm,sa_out,ffn_norm,ffn_out,ffn_post_norm,l_out"


def llama_tensors(model_path: str, ids: list[int], wanted: set[str]) -> tuple[dict, np.ndarray]:
    """Runs llama.cpp on ids (one batch, all logits) and returns {name: (n_tok, width)}."""
    import llama_cpp
    from llama_cpp import llama_cpp as ll

    import make_references as mr

    lib = ctypes.CDLL(str(Path(llama_cpp.__file__).parent / "lib" / "libggml-base.so"))
    lib.ggml_get_name.restype = ctypes.c_char_p
    lib.ggml_get_name.argtypes = [ctypes.c_void_p]
    lib.ggml_nelements.restype = ctypes.c_int64
    lib.ggml_nelements.argtypes = [ctypes.c_void_p]
    lib.ggml_is_contiguous.restype = ctypes.c_bool
    lib.ggml_is_contiguous.argtypes = [ctypes.c_void_p]
    lib.ggml_get_data_f32.restype = ctypes.POINTER(ctypes.c_float)
    lib.ggml_get_data_f32.argtypes = [ctypes.c_void_p]
    got: dict[str, np.ndarray] = {}

    def callback(t, ask, _user):
        name = lib.ggml_get_name(t).decode()
        if name not in wanted:
            return not ask or False
        if ask:
            return True
        ty = ctypes.c_int32.from_address(t).value
        ne = (ctypes.c_int64 * 4).from_address(t + 16)
        if ty != 0 or not lib.ggml_is_contiguous(t):  # GGML_TYPE_F32 == 0
            return True
        n = lib.ggml_nelements(t)
        data = np.ctypeslib.as_array(lib.ggml_get_data_f32(t), shape=(n,)).copy()
        got[name] = data.reshape(-1, ne[0]).astype(np.float64)
        return True

    cb = ll.ggml_backend_sched_eval_callback(callback)
    default = ll.llama_context_default_params

    def params_with_callback():
        p = default()
        p.cb_eval = cb
        return p

    mr.disable_extra_bufts()
    ll.llama_context_default_params = params_with_callback
    try:
        llm = llama_cpp.Llama(
            model_path=model_path, n_ctx=mr.N_CTX, n_batch=mr.N_CTX, n_threads=1,
            n_threads_batch=1, n_gpu_layers=0, logits_all=True, verbose=False,
        )
    finally:
        ll.llama_context_default_params = default
    llm.eval(ids)
    logits = np.array(llm.scores[: len(ids)], dtype=np.float64)
    del llm
    return got, logits


def kiln_tensors(
    kiln: str, model_path: str, ids: list[int], backend: str
) -> tuple[dict, np.ndarray]:
    """Runs `kiln logits --trace` on ids (`backend` cpu or gpu) and returns its trace as
    {name: (n_tok, width)} and the logits after each prefix."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "trace.json"
        out = subprocess.run(
            [kiln, "logits", "--model", model_path, "--backend", backend, "--json",
             "--ids", ",".join(map(str, ids)), "--trace", str(path)],
            check=True, capture_output=True, text=True,
        ).stdout
        trace = json.loads(path.read_text())
    got = {name: np.asarray(t["data"], np.float64).reshape(t["shape"]) for name, t in trace.items()}
    return got, np.asarray(json.loads(out)["logits"], np.float64)


def rel(a: np.ndarray, e: np.ndarray) -> float:
    return float(np.linalg.norm(a - e) / np.linalg.norm(e))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf")
    ap.add_argument("fixture")
    ap.add_argument("case")
    ap.add_argument("--ops", default=DEFAULT_OPS)
    ap.add_argument("--emulate", default="", help="also a float64 pass with these roundings")
    ap.add_argument("--runtime", choices=("llama", "kiln-cpu", "kiln-gpu"), default="llama",
                    help="whose tensors to compare with the float64 pass")
    ap.add_argument("--kiln", default="target/release/kiln", help="the kiln binary (kiln-*)")
    args = ap.parse_args()
    case = next(c for c in json.loads(Path(args.fixture).read_text())["cases"]
                if c["name"] == args.case)
    ids = case["prompt_ids"]
    exact = fr.Model(args.gguf)
    ops = args.ops.split(",")
    dump: dict = {}
    ref = exact.forward([ids], dump)[0]
    emu_dump: dict = {}
    emu = None
    if args.emulate:
        m = fr.Model(args.gguf, frozenset(args.emulate.split(",")), check=False)
        emu = m.forward([ids], emu_dump)[0]
    wanted = {f"{op}-{il}" for op in ops for il in range(exact.n_layer)} | {"result_norm"}
    if args.runtime == "llama":
        got, logits = llama_tensors(args.gguf, ids, wanted)
        who = "llama.cpp"
    else:
        got, logits = kiln_tensors(args.kiln, args.gguf, ids, args.runtime.removeprefix("kiln-"))
        who = args.runtime
    cols = f"{'rel err':>9} {'mean err':>10}" + (f" {'emu rel':>9} {'emu mean':>10}" if emu is not None else "")
    print(f"{exact.arch}, case {args.case} ({len(ids)} tokens): {who} vs float64; "
          f"rel err = ||{who} - exact|| / ||exact||, mean err = mean({who} - exact)"
          + ("; emu = float64 with " + args.emulate + " vs exact" if emu is not None else ""))
    print(f"{'op':<16} {'layer':>5} " + cols)
    for il in range(exact.n_layer):
        for op in ops:
            key = f"{op}-{il}"
            if key not in dump or key not in got:
                continue
            e, a = dump[key][0], got[key]
            line = f"{op:<16} {il:>5} {rel(a, e):>9.2e} {np.mean(a - e):>+10.2e}"
            if emu is not None:
                line += f" {rel(emu_dump[key][0], e):>9.2e} {np.mean(emu_dump[key][0] - e):>+10.2e}"
            print(line)
    if "result_norm" in got:
        e, a = dump["result_norm"][0], got["result_norm"]
        print(f"{'result_norm':<16} {'':>5} {rel(a, e):>9.2e} {np.mean(a - e):>+10.2e}")
    d = logits - ref
    line = (f"logits: max |{who} - exact| {np.abs(d).max():.4f}, mean |.| "
            f"{np.abs(d).mean():.4f}, mean {d.mean():+.4f}")
    if emu is not None:
        de = emu - ref
        line += f"; emulated: max {np.abs(de).max():.4f}, mean |.| {np.abs(de).mean():.4f}, mean {de.mean():+.4f}"
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
