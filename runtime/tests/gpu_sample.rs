//! The GPU sampling kernel, statistically: many seeded draws from a fixed small vocabulary must
//! follow the kept-set probabilities of the documented semantics (computed here in f64), with a
//! chi-square bound that a wrong temperature, cut or penalty fails by orders of magnitude.

mod common;

use common::{Rng, assert_close, gpu, guarded_output, read_guarded};
use kiln::Gpu;
use kiln::gpu::View;
use kiln::ops::sample::{NON_FINITE_ID, SampleParams, argmax, sample};

/// Draws `draws` ids from `logits` at steps 0..draws: each draw restores the logits first (the
/// kernel penalizes them in place), all in one submit. Each draw has its own stretch of the
/// token buffer: the penalty's window (`recent`) followed by its slot.
fn draw(gpu: &Gpu, logits: &[f32], recent: &[u32], s: &SampleParams, draws: usize) -> Vec<u32> {
    let n = logits.len();
    let r = recent.len();
    let src = gpu.upload("logits", bytemuck::cast_slice(logits)).unwrap();
    let work = gpu.upload("work", bytemuck::cast_slice(logits)).unwrap();
    let stretch: Vec<u32> = recent.iter().copied().chain([u32::MAX]).collect();
    let tokens: Vec<u32> = (0..draws).flat_map(|_| stretch.clone()).collect();
    let tok = gpu.upload("tokens", bytemuck::cast_slice(&tokens)).unwrap();
    let mut rec = gpu.recorder();
    for d in 0..draws {
        rec.copy((&src).into(), (&work).into()).unwrap();
        sample(
            &mut rec,
            (&work).into(),
            (&tok).into(),
            n as u32,
            r as u32,
            (d * (r + 1) + r) as u32,
            d as u32,
            s,
        )
        .unwrap();
    }
    let back = rec.read((&tok).into()).unwrap();
    rec.submit().unwrap();
    let all: Vec<u32> = bytemuck::pod_collect_to_vec(&back.wait().unwrap());
    for (d, stretch) in all.chunks(r + 1).enumerate() {
        assert_eq!(
            &stretch[..r],
            recent,
            "draw {d} wrote into its penalty window"
        );
    }
    all.chunks(r + 1).map(|c| c[r]).collect()
}

/// The kept-set probabilities of the documented semantics, in f64 (0 for ids that are cut).
fn expected(logits: &[f32], recent: &[u32], s: &SampleParams) -> Vec<f64> {
    let mut l: Vec<f64> = logits.iter().map(|&v| f64::from(v)).collect();
    let pen = f64::from(s.repetition_penalty);
    let mut seen = Vec::new();
    for &id in recent {
        if (id as usize) < l.len() && !seen.contains(&id) {
            seen.push(id);
            let v = &mut l[id as usize];
            *v = if *v > 0.0 { *v / pen } else { *v * pen };
        }
    }
    let z: Vec<f64> = l.iter().map(|v| v / f64::from(s.temperature)).collect();
    let mut sorted = z.clone();
    sorted.sort_by(|a, b| b.total_cmp(a));
    let mut cut = f64::NEG_INFINITY;
    if s.top_k > 0 && (s.top_k as usize) < z.len() {
        cut = sorted[s.top_k as usize - 1];
    }
    let max = sorted[0];
    let w: Vec<f64> = z
        .iter()
        .map(|&v| if v >= cut { (v - max).exp() } else { 0.0 })
        .collect();
    let total: f64 = w.iter().sum();
    if s.top_p < 1.0 {
        let target = f64::from(s.top_p) * total;
        let mut mass = 0.0;
        for &v in &sorted {
            if v < cut {
                break;
            }
            mass += (v - max).exp();
            if mass >= target {
                cut = v;
                break;
            }
        }
    }
    let w: Vec<f64> = z
        .iter()
        .zip(&w)
        .map(|(&v, &wi)| if v >= cut { wi } else { 0.0 })
        .collect();
    let total: f64 = w.iter().sum();
    w.iter().map(|v| v / total).collect()
}

/// Asserts the counts follow `probs`: no draw outside the kept set, and Pearson's chi-square
/// below df + 8 sqrt(2 df) + 8 (about 5 standard deviations above its mean; a correct sampler
/// fails it with probability well under 1e-5 for these seeds, and any error in the kept set or
/// the weights shifts it by hundreds at these draw counts).
fn assert_follows(what: &str, picks: &[u32], probs: &[f64]) -> Vec<usize> {
    let mut counts = vec![0usize; probs.len()];
    for &p in picks {
        assert!(
            (p as usize) < probs.len(),
            "{what}: picked {p}, out of range"
        );
        counts[p as usize] += 1;
    }
    let n = picks.len() as f64;
    let mut chi2 = 0.0;
    let mut df = 0.0f64;
    // Cells expected fewer than 5 times are pooled into one, as a chi-square test needs.
    let (mut pooled_c, mut pooled_e) = (0.0, 0.0);
    for (i, (&c, &p)) in counts.iter().zip(probs).enumerate() {
        if p == 0.0 {
            assert_eq!(
                c, 0,
                "{what}: id {i} is outside the kept set but was picked"
            );
            continue;
        }
        let e = p * n;
        if e < 5.0 {
            pooled_c += c as f64;
            pooled_e += e;
            continue;
        }
        chi2 += (c as f64 - e).powi(2) / e;
        df += 1.0;
    }
    if pooled_e > 0.0 {
        chi2 += (pooled_c - pooled_e).powi(2) / pooled_e.max(1.0);
        df += 1.0;
    }
    df -= 1.0;
    let bound = df + 8.0 * (2.0 * df.max(1.0)).sqrt() + 8.0;
    assert!(
        chi2 <= bound,
        "{what}: chi-square {chi2:.1} > {bound:.1} (df {df}); counts {counts:?}, expected {:?}",
        probs.iter().map(|p| p * n).collect::<Vec<_>>()
    );
    counts
}

const LOGITS: [f32; 10] = [1.0, 2.5, -0.5, 2.0, 0.3, 1.7, -2.0, 0.9, 2.2, 1.1];

fn params(temperature: f32, top_k: u32, top_p: f32, repetition_penalty: f32) -> SampleParams {
    SampleParams {
        temperature,
        top_k,
        top_p,
        repetition_penalty,
        seed: 1234,
    }
}

#[test]
fn draws_follow_kept_set_probabilities() {
    let Some(gpu) = gpu() else { return };
    let draws = 3000;
    for s in [
        params(1.0, 0, 1.0, 1.0),
        params(0.7, 4, 1.0, 1.0),
        params(1.3, 0, 0.8, 1.0),
        params(1.0, 6, 0.9, 1.0),
    ] {
        let picks = draw(&gpu, &LOGITS, &[], &s, draws);
        let probs = expected(&LOGITS, &[], &s);
        assert!(probs.iter().filter(|&&p| p > 0.0).count() >= 3, "{s:?}");
        assert_follows(&format!("{s:?}"), &picks, &probs);
    }
}

#[test]
fn a_wrong_distribution_fails_the_bound() {
    let Some(gpu) = gpu() else { return };
    // The check must be able to fail: draws at temperature 1 do not follow temperature 0.6.
    let picks = draw(&gpu, &LOGITS, &[], &params(1.0, 0, 1.0, 1.0), 3000);
    let wrong = expected(&LOGITS, &[], &params(0.6, 0, 1.0, 1.0));
    let result = std::panic::catch_unwind(|| assert_follows("wrong", &picks, &wrong));
    assert!(
        result.is_err(),
        "temperature 1 draws passed as temperature 0.6"
    );
}

#[test]
fn top_k_one_and_tiny_top_p_are_argmax() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(30);
    for n in [10usize, 4099, 262_144] {
        let logits = rng.vec(n);
        let want = kiln_cpu::sample::argmax(&logits).unwrap();
        for s in [params(0.8, 1, 1.0, 1.0), params(1.5, 0, 1e-6, 1.0)] {
            let picks = draw(&gpu, &logits, &[], &s, 4);
            assert!(
                picks.iter().all(|&p| p == want),
                "n={n} {s:?}: {picks:?}, argmax {want}"
            );
        }
        // Temperature 0 is the argmax kernel's answer.
        let picks = draw(&gpu, &logits, &[], &params(0.0, 0, 1.0, 1.0), 1);
        let lb = gpu.upload("l", bytemuck::cast_slice(&logits)).unwrap();
        let (tok, off) = guarded_output(&gpu, 1);
        let mut rec = gpu.recorder();
        argmax(&mut rec, (&lb).into(), View::new(&tok, off, 4), n as u32, 0).unwrap();
        rec.submit().unwrap();
        assert_eq!(picks, read_guarded(&gpu, &tok, 1), "n={n} greedy");
        assert_eq!(picks[0], want);
    }
}

#[test]
fn large_vocabulary_picks_stay_in_the_kept_set() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    let n = 262_144;
    let logits: Vec<f32> = rng.vec(n).into_iter().map(|v| v * 8.0).collect();
    let s = params(0.9, 40, 0.9, 1.0);
    let probs = expected(&logits, &[], &s);
    let kept = probs.iter().filter(|&&p| p > 0.0).count();
    assert!((2..=40).contains(&kept), "kept {kept}");
    let picks = draw(&gpu, &logits, &[], &s, 8);
    for p in &picks {
        assert!(probs[*p as usize] > 0.0, "picked {p}, outside the kept set");
    }
    let distinct: std::collections::BTreeSet<_> = picks.iter().collect();
    assert!(distinct.len() > 1, "8 draws all gave {picks:?}");
}

#[test]
fn temperature_sharpens_and_flattens() {
    let Some(gpu) = gpu() else { return };
    let draws = 3000;
    let top = kiln_cpu::sample::argmax(&LOGITS).unwrap() as usize;
    let mut top_counts = Vec::new();
    for t in [0.5f32, 1.0, 2.0] {
        let s = params(t, 0, 1.0, 1.0);
        let picks = draw(&gpu, &LOGITS, &[], &s, draws);
        let counts = assert_follows(&format!("T={t}"), &picks, &expected(&LOGITS, &[], &s));
        top_counts.push(counts[top]);
    }
    assert!(
        top_counts[0] > top_counts[1] && top_counts[1] > top_counts[2],
        "the most likely id's count must fall as the temperature rises: {top_counts:?}"
    );
}

#[test]
fn repetition_penalty_lowers_repeated_ids_once_each() {
    let Some(gpu) = gpu() else { return };
    let draws = 3000;
    // Id 1 (the largest logit, positive) three times and id 2 (negative) once: each is
    // penalized once; out-of-range ids are ignored.
    let recent = [1u32, 2, 1, 1, 99];
    let s = params(1.0, 0, 1.0, 1.5);
    let picks = draw(&gpu, &LOGITS, &recent, &s, draws);
    let counts = assert_follows("penalty", &picks, &expected(&LOGITS, &recent, &s));
    let base = draw(&gpu, &LOGITS, &[], &params(1.0, 0, 1.0, 1.0), draws);
    let base_1 = base.iter().filter(|&&p| p == 1).count();
    assert!(
        counts[1] * 3 < base_1 * 2,
        "penalized id 1 drawn {} times, unpenalized {base_1}",
        counts[1]
    );
    // The in-place penalty is visible in the logits buffer afterwards.
    let lb = gpu.upload("l", bytemuck::cast_slice(&LOGITS)).unwrap();
    let window: Vec<u32> = recent.iter().copied().chain([0]).collect();
    let tok = gpu.upload("tokens", bytemuck::cast_slice(&window)).unwrap();
    let mut rec = gpu.recorder();
    sample(
        &mut rec,
        (&lb).into(),
        (&tok).into(),
        LOGITS.len() as u32,
        recent.len() as u32,
        recent.len() as u32,
        0,
        &s,
    )
    .unwrap();
    let back = rec.read((&lb).into()).unwrap();
    rec.submit().unwrap();
    let got: Vec<f32> = bytemuck::cast_slice(&back.wait().unwrap()).to_vec();
    let mut want = LOGITS;
    want[1] /= 1.5;
    want[2] *= 1.5;
    // One division or multiplication each (WGSL allows a division a few ulp off).
    assert_close("penalized logits", &got, &want, 0.0, 1e-6);
}

#[test]
fn bad_settings_are_errors() {
    let Some(gpu) = gpu() else { return };
    let lb = gpu.upload("l", &[0u8; 40]).unwrap();
    let (tok, off) = guarded_output(&gpu, 1);
    for s in [
        params(f32::NAN, 0, 1.0, 1.0),
        params(1.0, 0, f32::NAN, 1.0),
        params(1.0, 0, 1.0, 0.0),
    ] {
        let mut rec = gpu.recorder();
        let err = sample(
            &mut rec,
            (&lb).into(),
            View::new(&tok, off, 4),
            10,
            0,
            0,
            0,
            &s,
        );
        assert!(
            matches!(err, Err(kiln::Error::Shape { .. })),
            "{s:?}: {err:?}"
        );
    }
}

#[test]
fn ties_and_negative_logits_at_the_cut_stay() {
    let Some(gpu) = gpu() else { return };
    // The 3rd largest is -2, held by three ids: all five ids at or above it are kept.
    let logits = [-1.0f32, -3.0, -2.0, -2.0, -2.0, -4.0, -0.5, -2.5];
    for s in [params(1.0, 3, 1.0, 1.0), params(0.9, 3, 0.7, 1.0)] {
        let probs = expected(&logits, &[], &s);
        if s.top_p >= 1.0 {
            assert_eq!(probs.iter().filter(|&&p| p > 0.0).count(), 5);
        }
        let picks = draw(&gpu, &logits, &[], &s, 3000);
        assert_follows(&format!("ties {s:?}"), &picks, &probs);
    }
}

#[test]
fn deep_top_k_cuts_follow_too() {
    let Some(gpu) = gpu() else { return };
    // 10 likely ids among 3000 that are each about e^-20 less likely: top-k cuts deep in the
    // vocabulary (the radix selection must find the 1500th/900th largest among near-equal
    // keys), then top-p; rare ids are pooled by the chi-square check.
    let n = 3000;
    let mut logits: Vec<f32> = (0..n).map(|i| -20.0 - i as f32 * 1e-3).collect();
    for (j, &l) in LOGITS.iter().enumerate() {
        logits[j * 297 + 5] = l;
    }
    for s in [
        params(1.0, 1500, 1.0, 1.0),
        params(1.0, 1500, 0.9, 1.0),
        params(1.0, 900, 0.9, 1.0),
    ] {
        let probs = expected(&logits, &[], &s);
        let picks = draw(&gpu, &logits, &[], &s, 2000);
        assert_follows(&format!("n={n} {s:?}"), &picks, &probs);
    }
}

/// A NaN or +inf logit anywhere (a corrupt model) leaves nothing to choose from: greedy or
/// sampled, with or without cuts, the kernel writes the sentinel; -inf (a masked id) does not.
#[test]
fn nan_or_inf_logits_write_the_sentinel() {
    let Some(gpu) = gpu() else { return };
    let mut rng = Rng::new(31);
    let settings = [
        params(0.0, 0, 1.0, 1.0),
        params(0.8, 0, 1.0, 1.0),
        params(1.0, 5, 0.9, 1.3),
    ];
    for n in [7usize, 3000] {
        for (at, bad) in [(0, f32::NAN), (n - 1, -f32::NAN), (n / 2, f32::INFINITY)] {
            let mut logits = rng.vec(n);
            logits[at] = bad;
            for s in &settings {
                let got = draw(&gpu, &logits, &[1, 2], s, 3);
                assert_eq!(
                    got,
                    vec![NON_FINITE_ID; 3],
                    "n={n} logit {at} = {bad} {s:?}"
                );
            }
        }
        let mut masked = rng.vec(n);
        masked[n / 2] = f32::NEG_INFINITY;
        for s in &settings {
            let got = draw(&gpu, &masked, &[1, 2], s, 3);
            assert!(
                got.iter()
                    .all(|&id| (id as usize) < n && id as usize != n / 2),
                "n={n} with a -inf logit {s:?}: {got:?}"
            );
        }
    }
}
