// Runs a wasm32-wasip1 build of an example (e.g. cpu_bench) under Node's WASI.
//
//   cargo build --release -p kiln-cpu --example cpu_bench --target wasm32-wasip1
//   RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=target/wasi-simd \
//     cargo build --release -p kiln-cpu --example cpu_bench --target wasm32-wasip1
//   node fallback-cpu/examples/run_wasi.mjs target/wasi-simd/wasm32-wasip1/release/examples/cpu_bench.wasm [filter]
//
// Threads are not used on wasm32 (the pool runs inline), so only 1-thread rows are printed.
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error("usage: node run_wasi.mjs FILE.wasm [args...]");
  process.exit(2);
}
const env = {};
if (process.env.KILN_CPU_ISA) env.KILN_CPU_ISA = process.env.KILN_CPU_ISA;
const wasi = new WASI({ version: "preview1", args: ["wasm", ...args], env });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
