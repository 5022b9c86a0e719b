//! The variant choices of the GPU path, in one place: heuristic defaults from the adapter, the
//! winners of a tuned per-device profile over them, and the caller's explicit overrides over
//! both. The tuner itself (measuring candidates, checking them against the CPU) is the
//! `kiln-autotune` crate; this module holds what the runtime needs to read its output: the
//! profile format, the adapter key, shape buckets, candidate names and the candidate-set hash.
//!
//! A profile is JSON (see docs/autotune.md): the adapter it was measured on, the kiln version,
//! a hash of the candidate set, and per op and shape bucket every candidate's timing and the
//! winner. Unknown fields are ignored, so older readers load newer profiles; a profile whose
//! version or hash differs from this build's is stale and ignored with a note.

use std::collections::BTreeMap;
#[cfg(not(target_arch = "wasm32"))]
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::gpu::Capabilities;
use crate::gpu::ParamSpace;
use crate::gpu::kernels::KERNELS;
use crate::model::config::Config;
use crate::ops::attention::SPLIT_MIN_LEN;
use crate::ops::gemv::{IntDot, Split, WType};
use crate::ops::matmul_q::Prefill;
use crate::ops::reduce::Combine;

/// The value of the profile's `format` field.
pub const FORMAT: &str = "kiln-profile";

/// Decode steps per submit a tuner tries (the runtime takes 1 to `MAX_DECODE_BATCH`).
pub const DECODE_BATCHES: [u32; 4] = [1, 4, 8, 16];

/// Fewest positions per attention split a tuner tries (0: never split; the default on GPUs is
/// the largest).
pub const ATTN_SPLITS: [u32; 4] = [0, 64, 128, SPLIT_MIN_LEN];

/// The kernels whose variants a tuner chooses between: a change to any of their texts (or to
/// the candidate names) changes [`candidate_hash`] and makes older profiles stale.
const TUNED_KERNELS: [&str; 8] = [
    "gemv_q8",
    "gemv_prep",
    "gemv_gated",
    "gemv_prep_gated",
    "matmul_q",
    "attention",
    "attention_flash",
    "attention_combine",
];

/// An op whose variant is chosen per shape bucket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GemvOp {
    /// A decode product on prepared int8 activations (`gemv_q8`).
    Q8,
    /// A decode product preparing its own input (`gemv_prep`).
    Prep,
    /// The gate and up product of a decode step on prepared int8 activations (`gemv_gated`,
    /// which has no packed-dot variant).
    Gated,
    /// The fused gate and up product of a decode step (`gemv_prep_gated`).
    PrepGated,
}

impl GemvOp {
    pub const ALL: [GemvOp; 4] = [GemvOp::Q8, GemvOp::Prep, GemvOp::Gated, GemvOp::PrepGated];

    /// The op's name in a profile (its kernel's name).
    pub fn name(self) -> &'static str {
        match self {
            GemvOp::Q8 => "gemv_q8",
            GemvOp::Prep => "gemv_prep",
            GemvOp::Gated => "gemv_gated",
            GemvOp::PrepGated => "gemv_prep_gated",
        }
    }

    /// The workgroup sizes the op's kernel is generated with, in manifest order (the first is
    /// the default): read from the manifest's parameter spaces.
    pub fn wg_sizes(self) -> Vec<u32> {
        let mut sizes = Vec::new();
        for line in ParamSpace::of(self.name()) {
            for v in line.values("WG_SIZE") {
                if let Ok(n) = v.value.parse()
                    && !sizes.contains(&n)
                {
                    sizes.push(n);
                }
            }
        }
        sizes
    }

    /// The variants of this op a device with `caps` runs, in a fixed order: every split
    /// (per-row threads, workgroup rows reduced in shared memory or with subgroups), int8 dot
    /// product (unpacked, packed; `gemv_gated` has no packed variant) and workgroup size.
    pub fn candidates(self, caps: Capabilities) -> Vec<GemvPick> {
        let splits = [
            Split::Thread,
            Split::Group(Combine::SharedMemory),
            Split::Group(Combine::Subgroup),
        ];
        let dots: &[IntDot] = match self {
            GemvOp::Gated => &[IntDot::Unpacked],
            _ => &[IntDot::Unpacked, IntDot::Packed],
        };
        let wgs = self.wg_sizes();
        let mut picks = Vec::new();
        for split in splits {
            for &dot in dots {
                for &wg in &wgs {
                    picks.push(GemvPick { split, dot, wg });
                }
            }
        }
        picks.retain(|p| p.runs_on(caps));
        picks
    }

    /// [`Tuning::default_gemv`] as this op runs it: its default workgroup size, and the
    /// unpacked dot product for `gemv_gated`.
    fn default_of(self, pick: GemvPick) -> GemvPick {
        GemvPick {
            dot: match self {
                GemvOp::Gated => IntDot::Unpacked,
                _ => pick.dot,
            },
            wg: self.wg_sizes()[0],
            ..pick
        }
    }
}

/// One decode-product variant: how rows are split over invocations, the int8 dot product and
/// the workgroup size (several for `gemv_q8`; the other ops have one, which their picks carry).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GemvPick {
    pub split: Split,
    pub dot: IntDot,
    pub wg: u32,
}

impl GemvPick {
    /// The candidate's name: `thread`, `group` (shared-memory reduction) or `subgroup`, with
    /// `+dot4` for the packed int8 dot product, then `/` and the workgroup size:
    /// `subgroup+dot4/128`.
    pub fn name(self) -> String {
        let split = match self.split {
            Split::Thread => "thread",
            Split::Group(Combine::SharedMemory) => "group",
            Split::Group(Combine::Subgroup) => "subgroup",
        };
        let dot = match self.dot {
            IntDot::Packed => "+dot4",
            IntDot::Unpacked => "",
        };
        format!("{split}{dot}/{}", self.wg)
    }

    /// The variant a [`GemvPick::name`] names.
    pub fn parse(name: &str) -> Option<GemvPick> {
        let (name, wg) = name.split_once('/')?;
        let (split, dot) = match name.strip_suffix("+dot4") {
            Some(s) => (s, IntDot::Packed),
            None => (name, IntDot::Unpacked),
        };
        let split = match split {
            "thread" => Split::Thread,
            "group" => Split::Group(Combine::SharedMemory),
            "subgroup" => Split::Group(Combine::Subgroup),
            _ => return None,
        };
        Some(GemvPick {
            split,
            dot,
            wg: wg.parse().ok()?,
        })
    }

    /// Whether a device with `caps` runs this variant.
    pub fn runs_on(self, caps: Capabilities) -> bool {
        (self.dot == IntDot::Unpacked || caps.dot4)
            && (self.split != Split::Group(Combine::Subgroup) || caps.subgroup)
    }
}

/// The shape bucket of a product of `rows` weight rows of `k` in format `wtype`: both sizes
/// rounded up to powers of two (`q4_0 r1024 k1024`).
pub fn gemv_bucket(wtype: WType, rows: u32, k: u32) -> String {
    format!(
        "{} r{} k{}",
        wtype.word(),
        rows.max(1).next_power_of_two(),
        k.max(1).next_power_of_two()
    )
}

/// The bucket of a model-wide choice: the residual width rounded up to a power of two and the
/// layer count (`d1024 l30`).
pub fn model_bucket(cfg: &Config) -> String {
    format!(
        "d{} l{}",
        cfg.d_model.max(1).next_power_of_two(),
        cfg.n_layer
    )
}

/// A model-wide choice a tuner measures end to end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelOp {
    /// Whether decode steps run the fused GEMVs (`fused`, `unfused`).
    Fuse,
    /// Decode steps per submit (`1`, `4`, ...).
    DecodeBatch,
    /// How prompt chunks multiply (`tiled`, `gemv`).
    Prefill,
    /// Fewest positions per attention split (`0` never splits).
    AttnSplit,
}

impl ModelOp {
    pub const ALL: [ModelOp; 4] = [
        ModelOp::Fuse,
        ModelOp::DecodeBatch,
        ModelOp::Prefill,
        ModelOp::AttnSplit,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ModelOp::Fuse => "decode_fuse",
            ModelOp::DecodeBatch => "decode_batch",
            ModelOp::Prefill => "prefill",
            ModelOp::AttnSplit => "attn_split",
        }
    }

    /// The candidates' names, in the order a tuner tries them.
    pub fn candidates(self) -> Vec<String> {
        match self {
            ModelOp::Fuse => [true, false].map(|f| fuse_word(f).into()).to_vec(),
            ModelOp::DecodeBatch => DECODE_BATCHES.iter().map(u32::to_string).collect(),
            ModelOp::Prefill => [Prefill::Tiled, Prefill::Gemv]
                .map(|p| prefill_word(p).into())
                .to_vec(),
            ModelOp::AttnSplit => ATTN_SPLITS.iter().map(u32::to_string).collect(),
        }
    }
}

/// FNV-1a, 64 bits: a stable hash (std's hashers may change between Rust releases).
fn fnv1a(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// A hash of the candidate set: the tuned kernels' variants (names, keys and texts) and every
/// candidate's name. A profile made with another set is stale.
pub fn candidate_hash() -> String {
    let mut h = 0xcbf2_9ce4_8422_2325;
    for spec in KERNELS.iter().filter(|s| TUNED_KERNELS.contains(&s.name)) {
        for part in [spec.name, spec.key, spec.wgsl] {
            h = fnv1a(h, part.as_bytes());
            h = fnv1a(h, &[0]);
        }
    }
    let all_caps = Capabilities {
        f16: true,
        subgroup: true,
        timestamps: true,
        subgroup_sizes: (1, 128),
        dot4: true,
    };
    let names = GemvOp::ALL
        .iter()
        .map(|op| op.name().to_string())
        .chain(
            GemvOp::ALL
                .iter()
                .flat_map(|op| op.candidates(all_caps))
                .map(GemvPick::name),
        )
        .chain(
            ModelOp::ALL
                .iter()
                .flat_map(|op| std::iter::once(op.name().to_string()).chain(op.candidates())),
        );
    for name in names {
        h = fnv1a(h, name.as_bytes());
        h = fnv1a(h, &[0]);
    }
    format!("{h:016x}")
}

/// What identifies an adapter for a profile: wgpu's adapter info, minus what varies per run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AdapterKey {
    pub name: String,
    pub vendor: u32,
    pub device: u32,
    /// The driver's name and its version text.
    pub driver: String,
    pub driver_info: String,
    pub backend: String,
    pub device_type: String,
}

impl AdapterKey {
    pub fn of(info: &wgpu::AdapterInfo) -> AdapterKey {
        AdapterKey {
            name: info.name.clone(),
            vendor: info.vendor,
            device: info.device,
            driver: info.driver.clone(),
            driver_info: info.driver_info.clone(),
            backend: format!("{:?}", info.backend),
            device_type: format!("{:?}", info.device_type),
        }
    }

    /// A file name for this adapter's profile: `vendor-device-backend-name`, lowercase, with
    /// anything but letters and digits turned into `-`.
    pub fn file_name(&self) -> String {
        let raw = format!(
            "{:04x}-{:04x}-{}-{}",
            self.vendor, self.device, self.backend, self.name
        );
        let mut slug = String::with_capacity(raw.len());
        for c in raw.to_lowercase().chars() {
            let c = if c.is_ascii_alphanumeric() { c } else { '-' };
            if !(c == '-' && slug.ends_with('-')) {
                slug.push(c);
            }
        }
        format!("{}.json", slug.trim_end_matches('-'))
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "vendor": self.vendor,
            "device": self.device,
            "driver": self.driver,
            "driver_info": self.driver_info,
            "backend": self.backend,
            "device_type": self.device_type,
        })
    }

    fn from_json(v: &Value) -> Option<AdapterKey> {
        let text = |k: &str| v.get(k)?.as_str().map(str::to_string);
        let num = |k: &str| u32::try_from(v.get(k)?.as_u64()?).ok();
        Some(AdapterKey {
            name: text("name")?,
            vendor: num("vendor")?,
            device: num("device")?,
            driver: text("driver")?,
            driver_info: text("driver_info")?,
            backend: text("backend")?,
            device_type: text("device_type")?,
        })
    }
}

impl std::fmt::Display for AdapterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {} {})",
            self.name, self.backend, self.driver, self.driver_info
        )
    }
}

/// One candidate's measurement.
#[derive(Clone, Debug, PartialEq)]
pub struct Timing {
    pub name: String,
    /// Median time of one run in microseconds (None when it was not timed).
    pub median_us: Option<f64>,
    /// Runs timed.
    pub runs: u32,
    /// How far its output was from the CPU reference when it was checked and passed, as a
    /// fraction of the tolerance (1 is the limit; the tolerances are the tuner's).
    pub error: Option<f64>,
    /// `ok`, or why the candidate may not win: `wrong: ...`, `error: ...`, `over the time
    /// cap`, `not measured: ...`.
    pub status: String,
}

/// The status of a candidate a tuner's time budget left unmeasured.
pub const OUT_OF_TIME: &str = "not measured: the time budget ran out";

impl Timing {
    /// Candidate `name`, left unmeasured because the budget ran out.
    pub fn out_of_time(name: String) -> Timing {
        Timing {
            status: OUT_OF_TIME.into(),
            ..Timing::new(name)
        }
    }

    /// Candidate `name`, not measured yet.
    pub fn new(name: String) -> Timing {
        Timing {
            name,
            median_us: None,
            runs: 0,
            error: None,
            status: String::new(),
        }
    }

    pub fn ok(&self) -> bool {
        self.status == "ok" && self.median_us.is_some()
    }
}

/// The measurements of one op at one shape bucket.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// A [`GemvOp`] or [`ModelOp`] name.
    pub op: String,
    pub bucket: String,
    /// The exact shape measured (rows, k for products; d_model, layers for model choices).
    pub shape: Vec<u32>,
    /// The candidate the runtime picks without a profile.
    pub default: String,
    pub candidates: Vec<Timing>,
    /// The candidate the runtime takes: the fastest that passed its check, unless the default
    /// is as fast within [`WIN_MARGIN`] (None when none passed).
    pub winner: Option<String>,
}

/// How much faster than the default a candidate must measure to replace it: closer than this
/// is within the run-to-run noise of a median of a few runs (1-2% on lavapipe).
pub const WIN_MARGIN: f64 = 1.03;

impl Entry {
    /// The winner among `candidates`: the fastest that is `ok`, unless `default` is `ok` and
    /// within [`WIN_MARGIN`] of it (then the default stays). None while the default is among
    /// them unmeasured: nothing is known to beat it.
    pub fn choose(candidates: &[Timing], default: &str) -> Option<String> {
        if candidates
            .iter()
            .any(|t| t.name == default && t.status == OUT_OF_TIME)
        {
            return None;
        }
        let fastest = candidates
            .iter()
            .filter(|t| t.ok())
            .min_by(|a, b| a.median_us.partial_cmp(&b.median_us).expect("finite"))?;
        let default_time = candidates
            .iter()
            .find(|t| t.name == default && t.ok())
            .and_then(|t| t.median_us);
        match (default_time, fastest.median_us) {
            (Some(d), Some(f)) if d <= f * WIN_MARGIN => Some(default.to_string()),
            _ => Some(fastest.name.clone()),
        }
    }

    /// The default's time over the winner's (None unless both were timed).
    pub fn speedup(&self) -> Option<f64> {
        let time = |name: &str| {
            self.candidates
                .iter()
                .find(|t| t.name == name && t.ok())?
                .median_us
        };
        Some(time(&self.default)? / time(self.winner.as_deref()?)?)
    }
}

/// A tuned profile of one adapter.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    pub adapter: AdapterKey,
    /// The kiln version that measured it.
    pub kiln: String,
    /// [`candidate_hash`] of the build that measured it.
    pub candidates: String,
    /// How it was measured: `timestamps` (GPU timestamp queries) or `host` (host clock around
    /// a device wait).
    pub timer: String,
    /// The model measured, if any (its file name).
    pub model: Option<String>,
    /// Seconds the tuner ran.
    pub seconds: f64,
    pub entries: Vec<Entry>,
}

impl Profile {
    /// An empty profile of `adapter` for this build.
    pub fn new(adapter: AdapterKey, timer: &str) -> Profile {
        Profile {
            adapter,
            kiln: env!("CARGO_PKG_VERSION").to_string(),
            candidates: candidate_hash(),
            timer: timer.to_string(),
            model: None,
            seconds: 0.0,
            entries: Vec::new(),
        }
    }

    /// Why this build may not use the profile (None when it may).
    pub fn stale(&self) -> Option<String> {
        if self.kiln != env!("CARGO_PKG_VERSION") {
            return Some(format!(
                "it was tuned by kiln {}, this is {}",
                self.kiln,
                env!("CARGO_PKG_VERSION")
            ));
        }
        let hash = candidate_hash();
        if self.candidates != hash {
            return Some(format!(
                "it was tuned over another candidate set ({} here, {hash} in this build)",
                self.candidates
            ));
        }
        None
    }

    /// The entry of `op` at `bucket`.
    pub fn entry(&self, op: &str, bucket: &str) -> Option<&Entry> {
        self.entries
            .iter()
            .find(|e| e.op == op && e.bucket == bucket)
    }

    /// The winner of `op` at `bucket`.
    pub fn winner(&self, op: &str, bucket: &str) -> Option<&str> {
        self.entry(op, bucket)?.winner.as_deref()
    }

    /// Adds `entry`, replacing one of the same op and bucket.
    pub fn put(&mut self, entry: Entry) {
        self.entries
            .retain(|e| !(e.op == entry.op && e.bucket == entry.bucket));
        self.entries.push(entry);
    }

    /// The profile as JSON text (pretty, entries in the order they were measured).
    pub fn to_json(&self) -> String {
        let entries: Vec<Value> = self
            .entries
            .iter()
            .map(|e| {
                let candidates: Vec<Value> = e
                    .candidates
                    .iter()
                    .map(|t| {
                        json!({
                            "name": t.name,
                            "median_us": t.median_us,
                            "runs": t.runs,
                            "error": t.error,
                            "status": t.status,
                        })
                    })
                    .collect();
                json!({
                    "op": e.op,
                    "bucket": e.bucket,
                    "shape": e.shape,
                    "default": e.default,
                    "winner": e.winner,
                    "candidates": candidates,
                })
            })
            .collect();
        let v = json!({
            "format": FORMAT,
            "kiln": self.kiln,
            "candidates": self.candidates,
            "adapter": self.adapter.to_json(),
            "timer": self.timer,
            "model": self.model,
            "seconds": self.seconds,
            "entries": entries,
        });
        serde_json::to_string_pretty(&v).expect("a JSON value prints")
    }

    /// Reads a profile; fields it does not know are ignored. `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Profile> {
        let bad = |why: &str| Error::Profile {
            origin: origin.to_string(),
            detail: why.to_string(),
        };
        let v: Value = serde_json::from_str(text).map_err(|e| bad(&e.to_string()))?;
        if v.get("format").and_then(Value::as_str) != Some(FORMAT) {
            return Err(bad(&format!(
                "not a kiln profile (no `\"format\": \"{FORMAT}\"`)"
            )));
        }
        let text_of = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let adapter = v
            .get("adapter")
            .and_then(AdapterKey::from_json)
            .ok_or_else(|| bad("`adapter` lacks a field"))?;
        let mut entries = Vec::new();
        for e in v
            .get("entries")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let (Some(op), Some(bucket)) = (text_of(e, "op"), text_of(e, "bucket")) else {
                return Err(bad("an entry lacks `op` or `bucket`"));
            };
            let candidates = e
                .get("candidates")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| {
                    Some(Timing {
                        name: text_of(t, "name")?,
                        median_us: t.get("median_us").and_then(Value::as_f64),
                        runs: t
                            .get("runs")
                            .and_then(Value::as_u64)
                            .and_then(|r| u32::try_from(r).ok())
                            .unwrap_or(0),
                        error: t.get("error").and_then(Value::as_f64),
                        status: text_of(t, "status").unwrap_or_default(),
                    })
                })
                .collect();
            entries.push(Entry {
                shape: e
                    .get("shape")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .filter_map(|n| u32::try_from(n.as_u64()?).ok())
                    .collect(),
                default: text_of(e, "default").unwrap_or_default(),
                winner: text_of(e, "winner"),
                candidates,
                op,
                bucket,
            });
        }
        Ok(Profile {
            adapter,
            kiln: text_of(&v, "kiln").ok_or_else(|| bad("no `kiln` version"))?,
            candidates: text_of(&v, "candidates").ok_or_else(|| bad("no `candidates` hash"))?,
            timer: text_of(&v, "timer").unwrap_or_default(),
            model: text_of(&v, "model"),
            seconds: v.get("seconds").and_then(Value::as_f64).unwrap_or(0.0),
            entries,
        })
    }
}

/// Where [`crate::Gpu::new`] looks for a profile of its adapter, first match first.
#[derive(Clone, Debug)]
pub struct ProfileSource {
    /// Profiles given as JSON text (an app's shipped profiles, a browser's stored one), with a
    /// name for messages.
    pub texts: Vec<(String, String)>,
    /// Folders of shipped profiles (natively): every `*.json` in them is read, after the
    /// tuned folder.
    #[cfg(not(target_arch = "wasm32"))]
    pub dirs: Vec<PathBuf>,
    /// Also the folder `kiln tune` writes to: `profiles/` in the cache folder
    /// ([`crate::GpuOptions::cache_dir`]), searched after `texts` and before `dirs`. On by
    /// default.
    pub tuned: bool,
}

impl Default for ProfileSource {
    fn default() -> Self {
        ProfileSource {
            texts: Vec::new(),
            #[cfg(not(target_arch = "wasm32"))]
            dirs: Vec::new(),
            tuned: true,
        }
    }
}

impl ProfileSource {
    /// No profile: the heuristic defaults only.
    pub fn off() -> ProfileSource {
        ProfileSource {
            tuned: false,
            ..ProfileSource::default()
        }
    }
}

/// The folder `kiln tune` writes profiles to: `profiles/` in the cache folder.
#[cfg(not(target_arch = "wasm32"))]
pub fn tuned_dir(cache_dir: Option<&Path>) -> Option<PathBuf> {
    crate::gpu::pipelines::cache_dir(cache_dir).map(|d| d.join("profiles"))
}

/// Overrides of the variant choices: set by the caller (the CLI from its flags and `KILN_*`
/// variables), applied over the profile and the heuristics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Overrides {
    /// How decode products split their rows (`KILN_GEMV_SPLIT=thread|group`).
    pub gemv_split: Option<SplitKind>,
    /// How prompt chunks multiply (`KILN_PREFILL=tiled|gemv`).
    pub prefill: Option<Prefill>,
    /// Whether decode steps run the fused GEMVs (`KILN_FUSE=1|0`).
    pub fused: Option<bool>,
    /// Fewest positions per attention split, 0 never splits (`KILN_ATTN_SPLIT=N`).
    pub attn_split: Option<u32>,
}

/// A split as an override names it (the reduction follows the device).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SplitKind {
    Thread,
    Group,
}

/// The choices as they were resolved for one device: where they came from and what they are.
#[derive(Clone, Debug)]
pub struct Tuning {
    caps: Capabilities,
    software: bool,
    /// The default variant of each decode product, in [`GemvOp::ALL`] order (worked out once:
    /// ops record from it per matrix).
    defaults: [GemvPick; 4],
    overrides: Overrides,
    profile: Option<(String, Profile)>,
    notes: Vec<String>,
}

impl Tuning {
    /// The choices of a device: `profile` (with where it came from) over heuristics from the
    /// adapter, `overrides` over both. `notes` says which profiles were passed over and why.
    pub fn new(
        info: &wgpu::AdapterInfo,
        caps: Capabilities,
        overrides: Overrides,
        profile: Option<(String, Profile)>,
        notes: Vec<String>,
    ) -> Tuning {
        let software = info.device_type == wgpu::DeviceType::Cpu;
        // Apple's GPUs run the packed int8 dot product slower than unpacking (llama.cpp's
        // WebGPU backend turns it off there for the same reason).
        let apple = info.vendor == 0x106b;
        let pick = default_pick(caps, software, apple, overrides.gemv_split);
        Tuning {
            caps,
            software,
            defaults: GemvOp::ALL.map(|op| op.default_of(pick)),
            overrides,
            profile,
            notes,
        }
    }

    /// These choices with `profile` (named `origin`) in place of the one found for the device.
    pub fn with_profile(&self, origin: &str, profile: Profile) -> Tuning {
        Tuning {
            profile: Some((origin.to_string(), profile)),
            ..self.clone()
        }
    }

    /// Where the profile in use came from (a path or a name), if one is.
    pub fn profile_origin(&self) -> Option<&str> {
        self.profile.as_ref().map(|(o, _)| o.as_str())
    }

    /// The profile in use.
    pub fn profile(&self) -> Option<&Profile> {
        self.profile.as_ref().map(|(_, p)| p)
    }

    /// Profiles passed over, and why.
    pub fn notes(&self) -> &[String] {
        &self.notes
    }

    pub fn overrides(&self) -> Overrides {
        self.overrides
    }

    /// The default variant of `op` ([`default_pick`] with the op's workgroup size and dot
    /// product).
    pub fn default_gemv(&self, op: GemvOp) -> GemvPick {
        self.defaults[op as usize]
    }

    /// The variant of `op` for a product of `rows` rows of `k` in `wtype`: the profile's winner
    /// for its bucket where there is one the device runs, else [`Tuning::default_gemv`]. A
    /// split override wins over the profile.
    pub fn gemv(&self, op: GemvOp, wtype: WType, rows: u32, k: u32) -> GemvPick {
        let default = self.default_gemv(op);
        let Some(profile) = self
            .profile()
            .filter(|_| self.overrides.gemv_split.is_none())
        else {
            return default;
        };
        Some(profile)
            .and_then(|p| p.winner(op.name(), &gemv_bucket(wtype, rows, k)))
            .and_then(GemvPick::parse)
            .filter(|p| op.candidates(self.caps).contains(p))
            .unwrap_or(default)
    }

    /// The profile's winner of a model-wide `op` for `cfg`, parsed by `parse`.
    fn model_winner<T>(
        &self,
        op: ModelOp,
        cfg: &Config,
        parse: fn(&str) -> Option<T>,
    ) -> Option<T> {
        self.profile()?
            .winner(op.name(), &model_bucket(cfg))
            .and_then(parse)
    }

    /// How prompt chunks of `cfg` multiply: the tiled matmul on GPUs, GEMVs over the chunk's
    /// rows on software adapters (there the per-row thread split measured 1.0-2.2x faster than
    /// the tiled kernel's barriers).
    pub fn prefill(&self, cfg: &Config) -> Prefill {
        self.overrides
            .prefill
            .or_else(|| self.model_winner(ModelOp::Prefill, cfg, parse_prefill))
            .unwrap_or(if self.software {
                Prefill::Gemv
            } else {
                Prefill::Tiled
            })
    }

    /// Whether decode steps of `cfg` prepare each product's input inside its GEMV: on GPUs,
    /// where a dispatch costs more than the prologue every workgroup repeats; not on software
    /// adapters, where the fused kernels run slower than the two dispatches each replaces
    /// (measured on lavapipe: docs/performance.md, "GPU decode").
    pub fn fused(&self, cfg: &Config) -> bool {
        self.overrides
            .fused
            .or_else(|| {
                self.model_winner(ModelOp::Fuse, cfg, |w| {
                    [true, false].into_iter().find(|&f| fuse_word(f) == w)
                })
            })
            .unwrap_or(!self.software)
    }

    /// Fewest positions per attention split for `cfg` (0: never split): no split on software
    /// adapters, whose few cores gain nothing from more workgroups (there a split decode step at
    /// 2048 positions took 2.3x the one-pass kernel's time), [`SPLIT_MIN_LEN`] on GPUs.
    pub fn attn_split(&self, cfg: &Config) -> u32 {
        self.overrides
            .attn_split
            .or_else(|| self.model_winner(ModelOp::AttnSplit, cfg, |w| w.parse().ok()))
            .unwrap_or(if self.software { 0 } else { SPLIT_MIN_LEN })
    }

    /// Decode steps per submit for `cfg` where the caller does not say: the profile's winner,
    /// else `default`.
    pub fn decode_batch(&self, cfg: &Config, default: u32) -> u32 {
        self.model_winner(ModelOp::DecodeBatch, cfg, |w| w.parse().ok())
            .unwrap_or(default)
    }

    /// The candidate name of what these choices take for the model-wide `op` on `cfg`, with
    /// `batch` decode steps per submit where neither the caller nor the profile says.
    pub fn model_choice(&self, op: ModelOp, cfg: &Config, batch: u32) -> String {
        match op {
            ModelOp::Fuse => fuse_word(self.fused(cfg)).to_string(),
            ModelOp::DecodeBatch => self.decode_batch(cfg, batch).to_string(),
            ModelOp::Prefill => prefill_word(self.prefill(cfg)).to_string(),
            ModelOp::AttnSplit => self.attn_split(cfg).to_string(),
        }
    }

    /// The choices for `cfg` as JSON (for `--json` reports).
    pub fn report(&self, cfg: &Config, decode_batch: u32) -> Value {
        let gemv: BTreeMap<&str, String> = GemvOp::ALL
            .iter()
            .map(|&op| (op.name(), self.default_gemv(op).name()))
            .collect();
        json!({
            "profile": self.profile_origin(),
            "profile_notes": self.notes,
            "gemv_default": gemv,
            "gemv_from_profile": self.profile().map_or(0, |p| p.entries.iter()
                .filter(|e| GemvOp::ALL.iter().any(|op| op.name() == e.op) && e.winner.is_some())
                .count()),
            "prefill": prefill_word(self.prefill(cfg)),
            "fused": self.fused(cfg),
            "attn_split": self.attn_split(cfg),
            "decode_batch": decode_batch,
        })
    }
}

/// The default decode-product variant: per-row threads on software adapters (lavapipe,
/// SwiftShader), one workgroup per row on GPUs (or as `split` says), reduced with subgroups
/// where the device has them no wider than the kernels' narrowest workgroups (Adreno's can be
/// 128 wide) and in shared memory elsewhere; the packed int8 dot product where the device has
/// it, except on Apple's GPUs; `gemv_q8`'s default workgroup size.
fn default_pick(
    caps: Capabilities,
    software: bool,
    apple: bool,
    split: Option<SplitKind>,
) -> GemvPick {
    let narrowest = GemvOp::ALL
        .iter()
        .flat_map(|op| op.wg_sizes())
        .min()
        .unwrap_or(0);
    let combine = if caps.subgroup && caps.subgroup_sizes.1 <= narrowest {
        Combine::Subgroup
    } else {
        Combine::SharedMemory
    };
    let split = match split {
        Some(SplitKind::Thread) => Split::Thread,
        Some(SplitKind::Group) => Split::Group(combine),
        None if software => Split::Thread,
        None => Split::Group(combine),
    };
    let dot = if caps.dot4 && !apple {
        IntDot::Packed
    } else {
        IntDot::Unpacked
    };
    GemvOp::Q8.default_of(GemvPick { split, dot, wg: 0 })
}

/// A [`Prefill`]'s candidate name.
pub fn prefill_word(prefill: Prefill) -> &'static str {
    match prefill {
        Prefill::Tiled => "tiled",
        Prefill::Gemv => "gemv",
    }
}

/// Fusing's candidate name.
pub fn fuse_word(fused: bool) -> &'static str {
    if fused { "fused" } else { "unfused" }
}

/// A [`Prefill`] from its candidate name.
pub fn parse_prefill(name: &str) -> Option<Prefill> {
    [Prefill::Tiled, Prefill::Gemv]
        .into_iter()
        .find(|&p| prefill_word(p) == name)
}

/// The profiles in `source`'s folders (and the tuner's, where it is searched), as (path,
/// text), with notes on files that could not be read.
#[cfg(not(target_arch = "wasm32"))]
fn profile_files(
    source: &ProfileSource,
    cache_dir: Option<&Path>,
) -> (Vec<(String, String)>, Vec<String>) {
    let mut found = Vec::new();
    let mut notes = Vec::new();
    // The user's tuned profiles before the shipped ones: a profile measured here wins.
    let tuned = tuned_dir(cache_dir).filter(|_| source.tuned);
    let dirs = tuned.into_iter().chain(source.dirs.iter().cloned());
    for dir in dirs {
        let Ok(read) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut files: Vec<PathBuf> = read
            .filter_map(|e| Some(e.ok()?.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for file in files {
            match std::fs::read_to_string(&file) {
                Ok(text) => found.push((file.display().to_string(), text)),
                Err(e) => notes.push(format!("{}: {e}", file.display())),
            }
        }
    }
    (found, notes)
}

/// The profile of `info`'s adapter from `source`: the first that matches it and is not stale,
/// with notes on those passed over. `cache_dir` is the options' cache folder (natively).
pub(crate) fn find_profile(
    info: &wgpu::AdapterInfo,
    source: &ProfileSource,
    #[cfg(not(target_arch = "wasm32"))] cache_dir: Option<&Path>,
) -> (Option<(String, Profile)>, Vec<String>) {
    let key = AdapterKey::of(info);
    #[cfg(not(target_arch = "wasm32"))]
    let (files, mut notes) = profile_files(source, cache_dir);
    #[cfg(target_arch = "wasm32")]
    let (files, mut notes): (Vec<(String, String)>, Vec<String>) = (Vec::new(), Vec::new());
    let candidates = source.texts.iter().cloned().chain(files);
    let explicit = source.texts.len();
    for (i, (origin, text)) in candidates.into_iter().enumerate() {
        let profile = match Profile::parse(&text, &origin) {
            Ok(p) => p,
            Err(e) => {
                notes.push(e.to_string());
                continue;
            }
        };
        if profile.adapter != key {
            if i < explicit {
                notes.push(format!(
                    "profile {origin} ignored: it is for {}, this adapter is {key}",
                    profile.adapter
                ));
            }
            continue;
        }
        if let Some(why) = profile.stale() {
            notes.push(format!(
                "profile {origin} ignored as stale: {why}; run `kiln tune` again"
            ));
            continue;
        }
        return (Some((origin, profile)), notes);
    }
    (None, notes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caps(subgroup: bool, dot4: bool) -> Capabilities {
        Capabilities {
            f16: true,
            subgroup,
            timestamps: false,
            subgroup_sizes: (32, 32),
            dot4,
        }
    }

    #[test]
    fn candidate_names_round_trip_and_follow_the_device() {
        let wgs = GemvOp::Q8.wg_sizes();
        assert_eq!(wgs[0], 64, "the manifest lists the default first");
        let all = GemvOp::Q8.candidates(caps(true, true));
        assert_eq!(all.len(), 6 * wgs.len());
        for p in &all {
            assert_eq!(GemvPick::parse(&p.name()), Some(*p));
        }
        let plain = GemvOp::Prep.candidates(caps(false, false));
        assert_eq!(
            plain.iter().map(|p| p.name()).collect::<Vec<_>>(),
            ["thread/64", "group/64"]
        );
        assert_eq!(GemvOp::Gated.candidates(caps(true, true)).len(), 3);
        assert_eq!(GemvPick::parse("warp+dot4/64"), None);
        assert_eq!(GemvPick::parse("thread"), None);
    }

    #[test]
    fn buckets_round_up_to_powers_of_two() {
        assert_eq!(gemv_bucket(WType::Q4_0, 960, 576), "q4_0 r1024 k1024");
        assert_eq!(gemv_bucket(WType::Q6K, 1024, 1024), "q6_k r1024 k1024");
    }

    fn adapter() -> AdapterKey {
        AdapterKey {
            name: "llvmpipe (LLVM 15.0.7, 256 bits)".into(),
            vendor: 0x10005,
            device: 0,
            driver: "llvmpipe".into(),
            driver_info: "Mesa 23.2.1".into(),
            backend: "Vulkan".into(),
            device_type: "Cpu".into(),
        }
    }

    #[test]
    fn a_profile_round_trips_and_ignores_unknown_fields() {
        let mut p = Profile::new(adapter(), "host");
        p.put(Entry {
            op: "gemv_q8".into(),
            bucket: "q4_0 r1024 k1024".into(),
            shape: vec![960, 576],
            default: "thread".into(),
            candidates: vec![
                Timing {
                    name: "thread".into(),
                    median_us: Some(20.0),
                    runs: 5,
                    error: Some(1e-6),
                    status: "ok".into(),
                },
                Timing {
                    name: "group".into(),
                    median_us: Some(10.0),
                    runs: 5,
                    error: None,
                    status: "ok".into(),
                },
            ],
            winner: Some("group".into()),
        });
        let text = p.to_json();
        assert_eq!(Profile::parse(&text, "t").unwrap(), p);
        assert_eq!(p.entries[0].speedup(), Some(2.0));
        let mut v: Value = serde_json::from_str(&text).unwrap();
        v["future_field"] = json!({"x": 1});
        v["entries"][0]["variance"] = json!(0.5);
        assert_eq!(Profile::parse(&v.to_string(), "t").unwrap(), p);
        assert!(p.stale().is_none());
        assert_eq!(
            adapter().file_name(),
            "10005-0000-vulkan-llvmpipe-llvm-15-0-7-256-bits.json"
        );
        let err = Profile::parse("{\"format\": \"other\"}", "x.json").unwrap_err();
        assert!(err.to_string().contains("x.json"), "{err}");
    }

    #[test]
    fn a_changed_candidate_set_makes_a_profile_stale() {
        let mut p = Profile::new(adapter(), "host");
        p.candidates = "0000000000000000".into();
        assert!(p.stale().unwrap().contains("candidate set"));
        let mut p = Profile::new(adapter(), "host");
        p.kiln = "0.0.1".into();
        assert!(p.stale().unwrap().contains("0.0.1"));
    }

    #[test]
    fn the_fastest_checked_candidate_wins() {
        let t = |name: &str, us: f64, status: &str| Timing {
            name: name.into(),
            median_us: Some(us),
            runs: 3,
            error: None,
            status: status.into(),
        };
        let c = [
            t("a", 5.0, "ok"),
            t("b", 1.0, "wrong: max error 3"),
            t("c", 4.0, "ok"),
        ];
        assert_eq!(Entry::choose(&c, "a").as_deref(), Some("c"));
        assert_eq!(Entry::choose(&c[1..2], "b"), None);
        // Within the margin, the default stays.
        let d = [t("a", 1.02, "ok"), t("c", 1.0, "ok")];
        assert_eq!(Entry::choose(&d, "a").as_deref(), Some("a"));
        // An unmeasured default is not beaten by what was measured.
        let e = [Timing::out_of_time("a".into()), t("c", 1.0, "ok")];
        assert_eq!(Entry::choose(&e, "a"), None);
        assert_eq!(Entry::choose(&e, "b").as_deref(), Some("c"));
    }
}
