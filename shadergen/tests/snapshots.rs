//! One reviewed insta snapshot per generated variant, kept in `snapshots/` at the repository
//! root. A changed or new variant fails here until its snapshot is reviewed; a snapshot whose
//! variant is gone fails too.

use std::collections::BTreeSet;
use std::path::Path;

#[test]
fn every_variant_matches_its_snapshot() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let variants =
        kiln_shadergen::generate(&root.join("shaders")).unwrap_or_else(|e| panic!("{e}"));
    assert!(!variants.is_empty());

    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(root.join("snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.set_omit_expression(true);
    settings.bind(|| {
        for v in &variants {
            insta::assert_snapshot!(v.slug(), kiln_shadergen::snapshot_text(v));
        }
    });

    let expected: BTreeSet<String> = variants
        .iter()
        .map(|v| format!("{}.snap", v.slug()))
        .collect();
    let stale: Vec<String> = std::fs::read_dir(root.join("snapshots"))
        .expect("snapshots/ exists")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".snap") && !expected.contains(name))
        .collect();
    assert!(
        stale.is_empty(),
        "snapshots without a variant (delete them): {stale:?}"
    );
}
