//! Expands and validates every kernel variant in `shaders/` and writes the kernel table and the
//! manifest's parameter spaces (`PARAM_SPACES`, `mod params`) that `gpu::kernels` includes. A
//! broken template fails the build with its file and line.

use std::path::PathBuf;

fn main() {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let shaders = manifest_dir.join("../shaders");
    println!("cargo:rerun-if-changed={}", shaders.display());
    for entry in walk(&shaders) {
        println!("cargo:rerun-if-changed={}", entry.display());
    }

    let (variants, spaces) = match kiln_shadergen::generate(&shaders)
        .and_then(|v| Ok((v, kiln_shadergen::param_spaces(&shaders)?)))
    {
        Ok(generated) => generated,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let target = if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("wasm32") {
        kiln_shadergen::Target::Web
    } else {
        kiln_shadergen::Target::Native
    };
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("kernels.rs");
    let mut text = kiln_shadergen::emit_rust(&variants, target);
    text.push_str(&kiln_shadergen::emit_params(&spaces));
    std::fs::write(&out, text).unwrap_or_else(|e| panic!("cannot write {}: {e}", out.display()));
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                files.extend(walk(&path));
            } else {
                files.push(path);
            }
        }
    }
    files
}
