//! Tuned profiles on a real adapter: a profile of this adapter whose winners differ from the
//! defaults changes the variants a model's decode step runs (seen in the pipelines created and
//! the plan's dispatches) and its decode batch; the same profile from another build (a changed
//! candidate set) or another adapter is ignored with a note, and the defaults stay.

mod common;

use common::tiny::tiny;
use kiln::gguf::GgmlType;
use kiln::model::Config;
use kiln::model::gpu::{DECODE_BATCH, GpuModel};
use kiln::tune::{
    AdapterKey, Entry, GemvOp, GemvPick, ModelOp, Profile, ProfileSource, model_bucket,
};
use kiln::{Gpu, GpuOptions};

/// The device with `profile` (as JSON text named "test") as its only profile source.
fn gpu_with(profile: &str) -> Gpu {
    Gpu::new_blocking(GpuOptions {
        profiles: ProfileSource {
            texts: vec![("test".into(), profile.into())],
            ..ProfileSource::off()
        },
        ..common::gpu_options()
    })
    .expect("the device opens again")
}

/// A profile of `gpu`'s adapter choosing `pick` for every decode product of `model` (both
/// fused forms), the other fusing, and 8 decode steps per submit.
fn forcing(gpu: &Gpu, model: &GpuModel, cfg: &Config, pick: GemvPick) -> Profile {
    let mut p = Profile::new(AdapterKey::of(gpu.adapter_info()), "host");
    let entry = |op: &str, bucket: String, winner: String| Entry {
        op: op.into(),
        bucket,
        shape: Vec::new(),
        default: String::new(),
        candidates: Vec::new(),
        winner: Some(winner),
    };
    for fused in [false, true] {
        for (op, wtype, rows, k) in model.gemv_cases(fused) {
            // The op's own variant of `pick`: its split, and its dot product and workgroup
            // size where it has them (gemv_gated has no packed dot; only gemv_q8 has several
            // workgroup sizes).
            let ours = op.candidates(gpu.capabilities());
            let winner = ours
                .iter()
                .find(|p| **p == pick)
                .or_else(|| {
                    ours.iter()
                        .find(|p| p.split == pick.split && p.dot == pick.dot)
                })
                .or_else(|| ours.iter().find(|p| p.split == pick.split))
                .expect("every op has every split")
                .name();
            let bucket = kiln::tune::gemv_bucket(wtype, rows, k);
            p.put(entry(op.name(), bucket, winner));
        }
    }
    let fuse = if model.fused() { "unfused" } else { "fused" };
    p.put(entry(ModelOp::Fuse.name(), model_bucket(cfg), fuse.into()));
    p.put(entry(
        ModelOp::DecodeBatch.name(),
        model_bucket(cfg),
        "8".into(),
    ));
    p
}

/// The split a variant id names (`SPLIT=thread` or `SPLIT=group`), for the decode products.
fn splits(gpu: &Gpu) -> Vec<String> {
    gpu.pipelines()
        .into_iter()
        .filter(|id| id.starts_with("gemv_q8[") || id.starts_with("gemv_prep"))
        .collect()
}

#[test]
fn a_profile_changes_the_variants_and_a_stale_one_is_ignored() {
    let Some(gpu) = common::gpu() else { return };
    let file = tiny("llama", GgmlType::Q4_0, 3);
    let cfg = Config::from_gguf(&file).expect("config");
    let load = |gpu: &Gpu| GpuModel::load(gpu, &file, &cfg, 64, &mut |_, _| {}).expect("load");
    let plain = load(&gpu);
    let default = gpu.tuning().default_gemv(GemvOp::Q8);
    // A variant other than the default that this device runs: another split, and for
    // gemv_q8 another workgroup size.
    let wide = GemvOp::Q8.wg_sizes()[1];
    let other = GemvOp::Q8
        .candidates(gpu.capabilities())
        .into_iter()
        .find(|p| p.split != default.split && p.wg == wide)
        .expect("two splits run everywhere");
    let profile = forcing(&gpu, &plain, &cfg, other);
    let default_splits = splits(&gpu);
    let dispatches = plain.decode_dispatches(1);
    assert!(!default_splits.is_empty());

    // Used: the other split's pipelines, the other fusing, 8 steps per submit.
    let tuned_gpu = gpu_with(&profile.to_json());
    assert_eq!(tuned_gpu.tuning().profile_origin(), Some("test"));
    let tuned = load(&tuned_gpu);
    assert_eq!(tuned.fused(), !plain.fused());
    assert_eq!(tuned.decode_batch(), 8);
    assert_ne!(
        tuned.decode_dispatches(1),
        dispatches,
        "fusing changes the plan"
    );
    let word = |s: kiln::ops::gemv::Split| match s {
        kiln::ops::gemv::Split::Thread => "SPLIT=thread",
        kiln::ops::gemv::Split::Group(_) => "SPLIT=group",
    };
    let tuned_splits = splits(&tuned_gpu);

    eprintln!("default: {default_splits:?}\ntuned: {tuned_splits:?}");
    assert!(tuned_splits.iter().all(|id| id.contains(word(other.split))));
    let wg = format!("WG_SIZE={wide}");
    assert!(
        tuned_splits
            .iter()
            .any(|id| id.starts_with("gemv_q8[") && id.contains(&wg)),
        "the head's product runs gemv_q8 with {wg}"
    );
    assert!(
        default_splits
            .iter()
            .all(|id| id.contains(word(default.split)))
    );
    let report = tuned.tuning_report();
    assert_eq!(report["profile"], "test");
    assert_eq!(report["decode_batch"], 8);

    // Stale: another candidate set. Ignored with a note; the defaults stay.
    let mut stale = profile.clone();
    stale.candidates = "0123456789abcdef".into();
    let stale_gpu = gpu_with(&stale.to_json());
    assert_eq!(stale_gpu.tuning().profile_origin(), None);
    let notes = stale_gpu.tuning().notes().join("\n");
    assert!(
        notes.contains("stale") && notes.contains("kiln tune"),
        "{notes}"
    );
    let model = load(&stale_gpu);
    assert_eq!(model.decode_batch(), DECODE_BATCH);
    assert_eq!(model.fused(), plain.fused());
    assert_eq!(splits(&stale_gpu), default_splits);

    // Another adapter's profile, given explicitly: ignored, and the note says whose it is.
    let mut other_adapter = profile;
    other_adapter.adapter.name = "some other GPU".into();
    let gpu = gpu_with(&other_adapter.to_json());
    assert_eq!(gpu.tuning().profile_origin(), None);
    assert!(gpu.tuning().notes()[0].contains("some other GPU"));
}
