//! Decode products: one bench per (op, format, rows, k) with seeded random weights and input,
//! its CPU reference from kiln-cpu's twin of the op, and the timing of each candidate variant.

use half::f16;
use kiln::gpu::{Gpu, Recorder, View};
use kiln::model::gpu::GpuModel;
use kiln::ops::activation::Act;
use kiln::ops::gemv::{ActInput, ActQuant, GemvShape, QAct, WType, gemv_q8_with, quantize};
use kiln::ops::gemv_gated::{GatedShape, gemv_gated};
use kiln::ops::gemv_prep::{gemv_prep, gemv_prep_gated};
use kiln::ops::prep::PrepIn;
use kiln::tune::{Entry, GemvOp, GemvPick, Timing, gemv_bucket};
use kiln::{Error, Result};
use kiln_cpu::ActBuffer;
use kiln_cpu::rng::SplitMix64;

use crate::{Budget, Settings, Timer};

/// One product to tune: an op on `rows` weight rows of `k` in `wtype`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemvCase {
    pub op: GemvOp,
    pub wtype: WType,
    pub rows: u32,
    pub k: u32,
}

impl GemvCase {
    /// A shape set for tuning without a model: the products of a 1024-wide, 4096-FFN layer
    /// and a 32768-token head, in Q4_0 and Q8_0 (the formats of most small models' files).
    pub fn standard() -> Vec<GemvCase> {
        let mut cases = Vec::new();
        for wtype in [WType::Q4_0, WType::Q8_0] {
            for (op, rows, k) in [
                (GemvOp::Q8, 1024, 1024),
                (GemvOp::Q8, 1024, 4096),
                (GemvOp::Q8, 32768, 1024),
                (GemvOp::Gated, 4096, 1024),
                (GemvOp::Prep, 1024, 1024),
                (GemvOp::Prep, 1024, 4096),
                (GemvOp::PrepGated, 4096, 1024),
            ] {
                cases.push(GemvCase { op, wtype, rows, k });
            }
        }
        cases
    }

    /// The decode products of `model`'s steps, fused and unfused, in [`GemvOp::ALL`]'s order:
    /// what a model's tuning measures (natively and in the browser alike).
    pub fn of_model(model: &GpuModel) -> Vec<GemvCase> {
        let mut cases = Vec::new();
        for fused in [false, true] {
            for (op, wtype, rows, k) in model.gemv_cases(fused) {
                let case = GemvCase { op, wtype, rows, k };
                if !cases.contains(&case) {
                    cases.push(case);
                }
            }
        }
        cases.sort_by_key(|c| GemvOp::ALL.iter().position(|&o| o == c.op));
        cases
    }

    pub fn bucket(&self) -> String {
        gemv_bucket(self.wtype, self.rows, self.k)
    }
}

/// Uniform in [lo, hi).
fn range(rng: &mut SplitMix64, lo: f32, hi: f32) -> f32 {
    lo + (hi - lo) * rng.unit()
}

/// Uniform in [-1, 1).
fn signed(rng: &mut SplitMix64) -> f32 {
    2.0 * rng.unit() - 1.0
}

fn put_f16(b: &mut [u8], at: usize, v: f32) {
    b[at..at + 2].copy_from_slice(&f16::from_f32(v).to_le_bytes());
}

/// `rows` rows of `k` weights of `wtype` as random valid blocks: random quant bits, finite
/// scales of a sane size (smaller super-scales for K-quants, whose sub-scales multiply them).
fn random_blocks(rng: &mut SplitMix64, wtype: WType, rows: u32, k: u32) -> Result<Vec<u8>> {
    let bytes = wtype.row_bytes(k)? as usize * rows as usize;
    let bb = wtype.block_bytes() as usize;
    let mut out = vec![0u8; bytes];
    for b in out.chunks_exact_mut(bb) {
        for byte in b.iter_mut() {
            *byte = rng.next_u64() as u8;
        }
        match wtype {
            WType::Q4_0 | WType::Q5_0 | WType::Q8_0 => put_f16(b, 0, range(rng, 0.01, 0.1)),
            WType::Q4_1 => {
                put_f16(b, 0, range(rng, 0.01, 0.1));
                put_f16(b, 2, signed(rng) * 0.1);
            }
            WType::Q4K => {
                put_f16(b, 0, range(rng, 0.001, 0.01));
                put_f16(b, 2, range(rng, 0.001, 0.01));
            }
            WType::Q6K => put_f16(b, 208, range(rng, 0.001, 0.01)),
            WType::F16 | WType::F32 => {
                return Err(Error::Unsupported(format!(
                    "tuning {wtype:?} products (they have no variants to choose)"
                )));
            }
        }
    }
    Ok(out)
}

/// Buffers, inputs and the CPU reference of one [`GemvCase`].
pub struct GemvBench {
    pub case: GemvCase,
    gpu: Gpu,
    /// Gate rows, then (gated ops) up rows from `up_offset`.
    w: wgpu::Buffer,
    up_offset: u32,
    x: wgpu::Buffer,
    q: [wgpu::Buffer; 3],
    y: wgpu::Buffer,
    reference: Vec<f32>,
}

impl std::fmt::Debug for GemvBench {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GemvBench")
            .field("case", &self.case)
            .finish_non_exhaustive()
    }
}

/// The largest error a candidate may show against the CPU reference, relative to the
/// reference's root mean square: both compute the same int8 block dot products exactly and
/// differ only in the order their f32 partial sums are added (at most 256 blocks per row, so
/// ~1e-5 relative, measured below 2e-6 on lavapipe); a wrong row is off by about the rms.
pub const TOLERANCE: f32 = 2e-3;

impl GemvBench {
    /// Uploads seeded random weights and input for `case` and computes the reference on the CPU.
    pub async fn new(gpu: &Gpu, case: GemvCase, seed: u64) -> Result<GemvBench> {
        let GemvCase { op, wtype, rows, k } = case;
        let quant = ActQuant::for_weights(wtype).ok_or_else(|| {
            Error::Unsupported(format!("tuning {wtype:?} products (f32 activations)"))
        })?;
        let gated = matches!(op, GemvOp::Gated | GemvOp::PrepGated);
        let mut rng = SplitMix64::new(seed ^ u64::from(rows) << 32 ^ u64::from(k));
        let gate = random_blocks(&mut rng, wtype, rows, k)?;
        let up = if gated {
            random_blocks(&mut rng, wtype, rows, k)?
        } else {
            Vec::new()
        };
        let up_offset = gate.len().next_multiple_of(4);
        let mut wbytes = gate.clone();
        if gated {
            wbytes.resize(up_offset, 0);
            wbytes.extend_from_slice(&up);
        }
        let x: Vec<f32> = (0..k).map(|_| signed(&mut rng) * 2.0).collect();

        // The CPU twin: the activations quantized by kiln-cpu's rules, the same block dot
        // products.
        let qtype = wtype.qtype();
        let mut act = ActBuffer::new();
        act.quantize(&x, qtype).map_err(cpu_err)?;
        let isa = kiln_cpu::Isa::detect();
        let rb = wtype.row_bytes(k)? as usize;
        let dot = |w: &[u8], r: usize| {
            kiln_cpu::quant::vec_dot(isa, qtype, &w[r * rb..(r + 1) * rb], &act, 0).map_err(cpu_err)
        };
        let mut reference = Vec::with_capacity(rows as usize);
        for r in 0..rows as usize {
            let g = dot(&gate, r)?;
            reference.push(if gated {
                kiln_cpu::ops::math::silu(g) * dot(&up, r)?
            } else {
                g
            });
        }

        let w = gpu.upload("tune weights", &wbytes)?;
        let xb = gpu.upload("tune input", bytemuck::cast_slice(&x))?;
        let (bq, bd, bs) = QAct::sizes(1, k);
        let usage = wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC;
        let q = [
            gpu.create_buffer("tune xq", bq, usage)?,
            gpu.create_buffer("tune xd", bd, usage)?,
            gpu.create_buffer("tune xs", bs.max(4), usage)?,
        ];
        let y = gpu.create_buffer("tune output", u64::from(rows) * 4, usage)?;
        let bench = GemvBench {
            case,
            gpu: gpu.clone(),
            w,
            up_offset: up_offset as u32,
            x: xb,
            q,
            y,
            reference,
        };
        // The int8 input the unfused ops read, quantized once on the GPU.
        let mut rec = gpu.recorder();
        quantize(&mut rec, (&bench.x).into(), bench.qact(quant), 1, k)?;
        rec.submit()?;
        Ok(bench)
    }

    fn qact(&self, quant: ActQuant) -> QAct<'_> {
        QAct {
            quant,
            xq: (&self.q[0]).into(),
            xd: (&self.q[1]).into(),
            xs: (&self.q[2]).into(),
        }
    }

    /// Records the op with variant `pick` over the first `rows` rows (all of them, except in a
    /// test that wants a wrong candidate).
    pub fn record(&self, rec: &mut Recorder, pick: GemvPick, rows: u32) -> Result<()> {
        let GemvCase { op, wtype, k, .. } = self.case;
        let quant = ActQuant::for_weights(wtype).expect("checked in new");
        let y: View<'_> = (&self.y).into();
        let w: View<'_> = (&self.w).into();
        let input = PrepIn::plain((&self.x).into(), k);
        let shape = GemvShape {
            wtype,
            k,
            rows,
            m: 1,
            y_stride: self.case.rows,
            y_offset: 0,
            accumulate: false,
        };
        let gated = GatedShape {
            wtype,
            act: Act::Silu,
            k,
            rows,
            m: 1,
            up_offset: self.up_offset,
            y_stride: self.case.rows,
            y_offset: 0,
        };
        match op {
            GemvOp::Q8 => gemv_q8_with(rec, pick, w, self.qact(quant), y, shape),
            GemvOp::Prep => gemv_prep(rec, pick, w, &input, y, shape),
            GemvOp::Gated => {
                gemv_gated(rec, pick.split, w, ActInput::Q8(self.qact(quant)), y, gated)
            }
            GemvOp::PrepGated => gemv_prep_gated(rec, pick, w, &input, y, gated),
        }
    }

    /// Runs `candidate` once on an output filled with NaN and compares it with the CPU
    /// reference: the largest error over the rms of the reference as a fraction of
    /// [`TOLERANCE`], or why it failed.
    async fn check(&self, candidate: &dyn Candidate) -> std::result::Result<f32, String> {
        let gpu = &self.gpu;
        let nan = vec![0xffu8; self.case.rows as usize * 4];
        gpu.write(&self.y, 0, &nan);
        let mut rec = gpu.recorder();
        candidate
            .record(self, &mut rec)
            .map_err(|e| format!("error: {e}"))?;
        let back = rec
            .read((&self.y).into())
            .map_err(|e| format!("error: {e}"))?;
        rec.submit().map_err(|e| format!("error: {e}"))?;
        let bytes = back.bytes().await.map_err(|e| format!("error: {e}"))?;
        let y: Vec<f32> = bytemuck::pod_collect_to_vec(&bytes);
        let rms = (self.reference.iter().map(|v| v * v).sum::<f32>() / self.reference.len() as f32)
            .sqrt()
            .max(f32::MIN_POSITIVE);
        let mut worst = 0f32;
        for (r, (a, b)) in y.iter().zip(&self.reference).enumerate() {
            let err = (a - b).abs() / rms;
            if err.is_nan() || err > TOLERANCE {
                return Err(format!(
                    "wrong: row {r} is {a}, the CPU reference {b} (error {err:.2e} of the rms, \
                     tolerance {TOLERANCE:.0e})"
                ));
            }
            worst = worst.max(err);
        }
        Ok(worst / TOLERANCE)
    }
}

fn cpu_err(e: kiln_cpu::CpuError) -> Error {
    Error::Unsupported(format!("the CPU reference: {e}"))
}

/// A variant the tuner may choose: the real ones are [`GemvPick`]s; a test adds one that is
/// fast and wrong to show that it never wins.
pub trait Candidate {
    fn name(&self) -> String;
    fn record(&self, bench: &GemvBench, rec: &mut Recorder) -> Result<()>;
}

impl Candidate for GemvPick {
    fn name(&self) -> String {
        GemvPick::name(*self)
    }

    fn record(&self, bench: &GemvBench, rec: &mut Recorder) -> Result<()> {
        bench.record(rec, *self, bench.case.rows)
    }
}

/// Measures every candidate on `bench`: each is checked against the CPU reference first (a
/// wrong or failing one is disqualified untimed), then run `settings.runs` times, `reps`
/// dispatches per submit; one over the time cap is disqualified. The entry's winner is the
/// fastest that passed. Stops timing (and says so) when `budget` runs out.
pub async fn measure(
    bench: &GemvBench,
    candidates: &[&dyn Candidate],
    default: &str,
    settings: &Settings,
    budget: &Budget,
) -> Entry {
    let gpu = &bench.gpu;
    // The default first, so that a budget running out never leaves it unmeasured while others
    // were timed.
    let mut order: Vec<&&dyn Candidate> = candidates.iter().collect();
    order.sort_by_key(|c| c.name() != default);
    let mut timings = Vec::new();
    for c in order {
        if budget.spent() {
            timings.push(Timing::out_of_time(c.name()));
            continue;
        }
        let mut t = Timing::new(c.name());
        match bench.check(*c).await {
            Err(why) => t.status = why,
            Ok(err) => {
                t.error = Some(f64::from(err));
                match time(gpu, bench, *c, settings).await {
                    Ok((median, runs)) => {
                        t.median_us = Some(median);
                        t.runs = runs;
                        t.status = if median * 1e-6 > settings.time_cap.as_secs_f64() {
                            format!(
                                "over the time cap ({:.0} ms a run)",
                                settings.time_cap.as_secs_f64() * 1e3
                            )
                        } else {
                            "ok".into()
                        };
                    }
                    Err(e) => t.status = format!("error: {e}"),
                }
            }
        }
        timings.push(t);
    }
    Entry {
        op: bench.case.op.name().to_string(),
        bucket: bench.case.bucket(),
        shape: vec![bench.case.rows, bench.case.k],
        default: default.to_string(),
        winner: Entry::choose(&timings, default),
        candidates: timings,
    }
}

/// The median time of one dispatch of `c` in microseconds, over `settings.runs` submits of
/// `settings.reps` dispatches each (the first submit, which compiles, is not counted).
async fn time(
    gpu: &Gpu,
    bench: &GemvBench,
    c: &dyn Candidate,
    settings: &Settings,
) -> Result<(f64, u32)> {
    let mut samples = Vec::with_capacity(settings.runs as usize);
    for run in 0..=settings.runs {
        let mut rec = gpu.recorder();
        for _ in 0..settings.reps {
            c.record(bench, &mut rec)?;
        }
        let us = Timer::of(gpu).run(gpu, rec).await? / f64::from(settings.reps);
        if run > 0 {
            samples.push(us);
        }
        if us * 1e-6 > settings.time_cap.as_secs_f64() {
            // One run over the cap is enough to disqualify it; do not wait for more.
            samples = vec![us];
            break;
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok((samples[samples.len() / 2], samples.len() as u32))
}
