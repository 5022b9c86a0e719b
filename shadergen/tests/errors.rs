//! A broken template must fail generation with its file and line.

use std::path::PathBuf;

fn shaders(files: &[(&str, &str)]) -> PathBuf {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "kiln-shadergen-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("shared")).unwrap();
    for (name, text) in files {
        std::fs::write(dir.join(name), text).unwrap();
    }
    dir
}

fn error_of(files: &[(&str, &str)]) -> String {
    match kiln_shadergen::generate(&shaders(files)) {
        Ok(v) => panic!("expected an error, generated {} variants", v.len()),
        Err(e) => e.to_string(),
    }
}

const GOOD: &str = "@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
                    @compute @workgroup_size(WG_SIZE)\n\
                    fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    out[id.x] = 1.0;\n}\n";

#[test]
fn good_template_generates() {
    let dir = shaders(&[
        ("manifest.txt", "k k.wgsl WG_SIZE=64|128\n"),
        ("k.wgsl", GOOD),
    ]);
    let variants = kiln_shadergen::generate(&dir).unwrap();
    let sizes: Vec<_> = variants.iter().map(|v| v.workgroup_size).collect();
    assert_eq!(
        sizes,
        vec![[128, 1, 1], [64, 1, 1]],
        "sorted by key, sizes read from the IR"
    );
}

#[test]
fn type_error_names_template_file_and_line() {
    let broken = "@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
                  @compute @workgroup_size(WG_SIZE)\n\
                  fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    out[id.x] = vec2<f32>(1.0);\n}\n";
    let msg = error_of(&[
        ("manifest.txt", "k broken.wgsl WG_SIZE=64\n"),
        ("broken.wgsl", broken),
    ]);
    assert!(msg.starts_with("shaders/broken.wgsl:4:"), "{msg}");
}

#[test]
fn syntax_error_in_imported_helper_names_the_helper() {
    let main = "#import helper\n@compute @workgroup_size(1)\nfn main() {}\n";
    let helper = "// ok\nfn f() -> f32 { return 1.0 }\n";
    let msg = error_of(&[
        ("manifest.txt", "k k.wgsl\n"),
        ("k.wgsl", main),
        ("shared/helper.wgsl", helper),
    ]);
    assert!(msg.starts_with("shaders/shared/helper.wgsl:2:"), "{msg}");
}

#[test]
fn directive_errors_name_their_line() {
    let msg = error_of(&[("manifest.txt", "k k.wgsl\n"), ("k.wgsl", "// a\n#endif\n")]);
    assert!(msg.starts_with("shaders/k.wgsl:2: #endif without"), "{msg}");
    let msg = error_of(&[("manifest.txt", "k k.wgsl\n"), ("k.wgsl", "#ifdef X\n")]);
    assert!(
        msg.starts_with("shaders/k.wgsl:1: #ifdef is never closed"),
        "{msg}"
    );
    let msg = error_of(&[
        ("manifest.txt", "k k.wgsl\n"),
        ("k.wgsl", "\n\n#include x\n"),
    ]);
    assert!(
        msg.starts_with("shaders/k.wgsl:3: unknown directive"),
        "{msg}"
    );
    let msg = error_of(&[("manifest.txt", "\nk k.wgsl A=1 A=2\n"), ("k.wgsl", GOOD)]);
    assert!(msg.starts_with("shaders/manifest.txt:2:"), "{msg}");
}

#[test]
fn subgroup_use_without_declaring_it_fails_validation() {
    let t = "@group(0) @binding(0) var<storage, read_write> out: array<f32>;\n\
             @compute @workgroup_size(64)\n\
             fn main(@builtin(global_invocation_id) id: vec3<u32>) {\n    out[id.x] = subgroupAdd(1.0);\n}\n";
    let msg = error_of(&[("manifest.txt", "k k.wgsl\n"), ("k.wgsl", t)]);
    assert!(msg.starts_with("shaders/k.wgsl:4:"), "{msg}");
    // Declared, the same text validates and the browser text enables subgroups.
    let dir = shaders(&[("manifest.txt", "k k.wgsl SUBGROUP\n"), ("k.wgsl", t)]);
    let v = kiln_shadergen::generate(&dir).unwrap();
    assert!(v[0].features.subgroup);
    assert!(v[0].wgsl_web.starts_with("enable subgroups;"));
    assert!(!v[0].wgsl_native.contains("enable subgroups"));
}
