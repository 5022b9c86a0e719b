//! `kiln tune`: measures the GPU path's variants on this device (for a model, or a standard
//! shape set), checks each against the CPU path, and writes the profile kiln loads for this
//! adapter. A profile already at the output path is the starting point: what it holds complete
//! is kept, so a run cut short by its budget continues where it stopped.

use std::path::PathBuf;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use kiln::tune::{AdapterKey, Profile, ProfileSource, tuned_dir};
use kiln::{Gpu, GpuOptions};
use kiln_autotune::{Budget, GemvCase, Settings, model, new_profile, table, tune_gemv};

use crate::cli::TuneArgs;

/// The share of the budget the products get when a model's model-wide choices follow.
const PRODUCTS_SHARE: f64 = 0.6;

pub fn run(args: &TuneArgs) -> Result<(), String> {
    let text = |e: kiln::Error| e.to_string();
    // The tuner measures against the built-in defaults: no profile, no overrides.
    let opts = GpuOptions {
        profiles: ProfileSource::off(),
        overrides: Default::default(),
        ..GpuOptions::from_env().map_err(text)?
    };
    let cache_dir = opts.cache_dir.clone();
    let gpu = Gpu::new_blocking(opts).map_err(text)?;
    let key = AdapterKey::of(gpu.adapter_info());
    let out = match &args.out {
        Some(p) => p.clone(),
        None => tuned_dir(cache_dir.as_deref())
            .ok_or("no cache folder (set KILN_CACHE_DIR or pass --out)")?
            .join(key.file_name()),
    };
    let (mut profile, kept) = start_from(&gpu, &out, args.again);
    if !args.json {
        eprintln!("tuning on {key}");
        if kept > 0 {
            eprintln!("starting from {}: {kept} entries kept", out.display());
        }
    }
    let settings = Settings {
        runs: args.runs,
        ..Settings::default()
    };
    let total = Duration::from_secs(args.budget_seconds);
    let all = Budget::new(total);
    let bar = ProgressBar::new(1).with_style(
        ProgressStyle::with_template("{bar:30} {pos}/{len} {elapsed}/{msg}")
            .expect("a fixed template"),
    );
    let mut progress = |done: usize, n: usize, label: &str| {
        bar.set_length(n as u64);
        bar.set_position(done as u64);
        bar.set_message(format!("{}s {label}", args.budget_seconds));
    };
    let mut bench = match &args.model {
        Some(path) => {
            crate::check_model(path)?;
            profile.model = path.file_name().map(|n| n.to_string_lossy().into_owned());
            Some(model::ModelBench::load(&gpu, path).map_err(text)?)
        }
        None => None,
    };
    let (cases, products) = match &bench {
        Some(b) => (
            GemvCase::of_model(b.gpu_model()),
            Budget::new(total.mul_f64(PRODUCTS_SHARE)),
        ),
        None => (GemvCase::standard(), all),
    };
    pollster::block_on(tune_gemv(
        &gpu,
        &cases,
        &mut profile,
        &settings,
        &products,
        &mut progress,
    ))
    .map_err(text)?;
    if let Some(b) = &mut bench {
        model::tune_model(b, &mut profile, &settings, &all, &mut progress).map_err(text)?;
    }
    bar.finish_and_clear();
    profile.seconds += all.elapsed().as_secs_f64();
    if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(&out, profile.to_json()).map_err(|e| format!("{}: {e}", out.display()))?;
    if args.json {
        let v = serde_json::json!({
            "profile_path": out.display().to_string(),
            "kept": kept,
            "seconds": all.elapsed().as_secs_f64(),
            "budget_seconds": args.budget_seconds,
            "profile": serde_json::from_str::<serde_json::Value>(&profile.to_json())
                .expect("the profile's own JSON"),
        });
        println!("{v}");
    } else {
        print!("{}", table(&profile));
        eprintln!(
            "profile written to {} ({:.1} s); kiln uses it on this adapter",
            out.display(),
            all.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// The profile to start from: the one at `out` if it is this adapter's and current (and
/// `again` is off), else an empty one; with the number of entries kept.
fn start_from(gpu: &Gpu, out: &PathBuf, again: bool) -> (Profile, usize) {
    let fresh = new_profile(gpu);
    if again {
        return (fresh, 0);
    }
    let Ok(text) = std::fs::read_to_string(out) else {
        return (fresh, 0);
    };
    match Profile::parse(&text, &out.display().to_string()) {
        Ok(p) if p.adapter == fresh.adapter && p.stale().is_none() => {
            let kept = p
                .entries
                .iter()
                .filter(|e| kiln_autotune::complete(e))
                .count();
            (p, kept)
        }
        Ok(p) => {
            eprintln!(
                "kiln: {} is for another adapter or build ({}); measuring anew",
                out.display(),
                p.stale()
                    .unwrap_or_else(|| format!("adapter {}", p.adapter))
            );
            (fresh, 0)
        }
        Err(e) => {
            eprintln!("kiln: {e}; measuring anew");
            (fresh, 0)
        }
    }
}
