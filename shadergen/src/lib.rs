//! kiln's build-time kernel generator.
//!
//! It reads `shaders/manifest.txt`, expands each listed variant of each `.wgsl` template (see
//! [`manifest`] and [`preprocess`]), validates the result with naga against exactly the
//! capabilities the variant declares, reads the workgroup size, bindings and workgroup memory
//! out of the naga IR, and returns the variants sorted by kernel name and key. [`emit_rust`]
//! turns them into the table the runtime builds its pipelines from; [`emit_params`] turns the
//! manifest's parameter spaces ([`param_spaces`]) into the data and constants its ops build
//! their keys from.
//!
//! This crate knows no GPU API: it only produces text and facts about that text.

pub mod manifest;
pub mod preprocess;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::Path;

use naga::valid::{Capabilities, ValidationFlags, Validator};

/// What went wrong, always with the template file and line it came from.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Io { path: String, message: String },
    /// A template, shared helper or manifest line is wrong.
    Template {
        file: String,
        line: u32,
        message: String,
    },
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::Io { path, message } => write!(f, "cannot read {path}: {message}"),
            Error::Template {
                file,
                line,
                message,
            } => write!(f, "shaders/{file}:{line}: {message}"),
        }
    }
}

impl std::error::Error for Error {}

/// Optional device features a variant needs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Features {
    /// `enable f16;` and SHADER_F16.
    pub f16: bool,
    /// Subgroup built-ins (SUBGROUP); browsers also need `enable subgroups;`.
    pub subgroup: bool,
    /// `dot4I8Packed` (DOT4): the WGSL language extension `packed_4x8_integer_dot_product`,
    /// declared with `requires` in both texts (naga accepts the directive).
    pub dot4: bool,
}

impl Features {
    /// What either needs.
    pub fn union(self, other: Features) -> Features {
        Features {
            f16: self.f16 || other.f16,
            subgroup: self.subgroup || other.subgroup,
            dot4: self.dot4 || other.dot4,
        }
    }
}

/// How a binding is accessed, as read from the IR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One resource binding of a variant (all live in group 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Binding {
    pub binding: u32,
    pub kind: BindingKind,
    /// Size of the bound type; for runtime-sized arrays, one element.
    pub min_size: u32,
}

/// One generated kernel variant.
#[derive(Clone, Debug)]
pub struct Variant {
    /// Kernel name from the manifest, e.g. `reduce`.
    pub name: String,
    /// Canonical parameters, e.g. `DTYPE=f32,OP=sum,SUBGROUP=1,WG_SIZE=256`.
    pub key: String,
    /// Template file it was expanded from.
    pub template: String,
    pub workgroup_size: [u32; 3],
    pub bindings: Vec<Binding>,
    pub features: Features,
    /// Bytes of `var<workgroup>` storage; checked against the adapter at run time.
    pub workgroup_storage_bytes: u32,
    /// Text for native wgpu (naga front end): no `enable subgroups;`.
    pub wgsl_native: String,
    /// Text for browsers (Tint): with `enable subgroups;` where subgroups are used.
    pub wgsl_web: String,
}

impl Variant {
    /// A file-name-safe identifier: `reduce__DTYPE-f32_OP-sum`.
    pub fn slug(&self) -> String {
        let key = self.key.replace('=', "-").replace(',', "_");
        format!("{}__{}", self.name, key)
    }
}

fn read_manifest(shaders_dir: &Path) -> Result<String, Error> {
    let path = shaders_dir.join("manifest.txt");
    std::fs::read_to_string(&path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })
}

/// Expands and validates every variant listed in `shaders_dir/manifest.txt`.
pub fn generate(shaders_dir: &Path) -> Result<Vec<Variant>, Error> {
    manifest::parse(&read_manifest(shaders_dir)?)?
        .iter()
        .map(|entry| build_variant(shaders_dir, entry))
        .collect()
}

/// The lines of `shaders_dir/manifest.txt`, unexpanded: each kernel's parameters and values.
pub fn param_spaces(shaders_dir: &Path) -> Result<Vec<manifest::Space>, Error> {
    manifest::spaces(&read_manifest(shaders_dir)?)
}

fn build_variant(root: &Path, entry: &manifest::Entry) -> Result<Variant, Error> {
    let features = entry.features();
    let key = entry.key();
    let manifest_origin = preprocess::Origin {
        file: "manifest.txt".into(),
        line: entry.line,
    };

    let mut expanded = preprocess::Expanded::default();
    if features.f16 {
        expanded.push_line("enable f16;", manifest_origin.clone());
    }
    if features.dot4 {
        expanded.push_line(
            "requires packed_4x8_integer_dot_product;",
            manifest_origin.clone(),
        );
    }
    expanded.push_line(
        &format!("// {}[{}] from {}", entry.kernel, key, entry.template),
        manifest_origin.clone(),
    );
    for decl in entry.declarations() {
        expanded.push_line(&decl, manifest_origin.clone());
    }
    let mut imported = BTreeSet::new();
    preprocess::expand(
        root,
        &entry.template,
        &entry.defines(),
        &mut imported,
        &mut expanded,
    )?;

    let module = naga::front::wgsl::parse_str(&expanded.text).map_err(|e| {
        let line = e.location(&expanded.text).map(|l| l.line_number);
        located(
            &expanded,
            entry,
            line,
            &e.emit_to_string_with_path(&expanded.text, &entry.template),
        )
    })?;

    // pack2x16float / unpack2x16float are core WebGPU; naga files them under a capability that
    // every wgpu backend but old GLES has (downlevel SHADER_F16_IN_F32).
    let mut caps = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    if features.f16 {
        caps |= Capabilities::SHADER_FLOAT16;
    }
    if features.subgroup {
        caps |= Capabilities::SUBGROUP | Capabilities::SUBGROUP_BARRIER;
    }
    let info = Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| {
            let line = e.location(&expanded.text).map(|l| l.line_number);
            located(
                &expanded,
                entry,
                line,
                &e.emit_to_string_with_path(&expanded.text, &entry.template),
            )
        })?;

    let fail = |message: String| Error::Template {
        file: entry.template.clone(),
        line: 1,
        message: format!("{}[{}]: {message}", entry.kernel, key),
    };
    let [entry_point] = module.entry_points.as_slice() else {
        return Err(fail("a kernel needs exactly one entry point".into()));
    };
    if entry_point.stage != naga::ShaderStage::Compute || entry_point.name != "main" {
        return Err(fail("the entry point must be `@compute fn main`".into()));
    }

    let mut layouter = naga::proc::Layouter::default();
    layouter
        .update(module.to_ctx())
        .map_err(|e| fail(format!("type layout: {e}")))?;

    let ep_info = info.get_entry_point(0);
    let mut bindings = Vec::new();
    let mut workgroup_storage_bytes = 0u32;
    for (handle, var) in module.global_variables.iter() {
        if var.space == naga::AddressSpace::WorkGroup {
            workgroup_storage_bytes += layouter[var.ty].size;
            continue;
        }
        let Some(rb) = &var.binding else { continue };
        if ep_info[handle].is_empty() {
            let name = var.name.as_deref().unwrap_or("?");
            return Err(fail(format!(
                "binding {} (`{name}`) is declared but unused; drop it or guard it with #ifdef",
                rb.binding
            )));
        }
        if rb.group != 0 {
            return Err(fail(format!("binding {} must be in @group(0)", rb.binding)));
        }
        let kind = match var.space {
            naga::AddressSpace::Uniform => BindingKind::Uniform,
            naga::AddressSpace::Storage { access } => {
                if access.contains(naga::StorageAccess::STORE) {
                    BindingKind::StorageReadWrite
                } else {
                    BindingKind::StorageRead
                }
            }
            other => return Err(fail(format!("unsupported binding space {other:?}"))),
        };
        let ty = &module.types[var.ty];
        let min_size = match &ty.inner {
            naga::TypeInner::Array {
                size: naga::ArraySize::Dynamic,
                stride,
                ..
            } => *stride,
            _ => layouter[var.ty].size,
        };
        bindings.push(Binding {
            binding: rb.binding,
            kind,
            min_size,
        });
    }
    bindings.sort_by_key(|b| b.binding);

    let wgsl_native = expanded.text.clone();
    // Tint needs the directives that naga 30 rejects: `enable subgroups;` for any subgroup
    // built-in and `requires subgroup_id;` for `subgroup_id` / `num_subgroups`.
    let mut wgsl_web = String::new();
    if features.subgroup {
        wgsl_web.push_str("enable subgroups;\n");
        if wgsl_native.contains("subgroup_id") || wgsl_native.contains("num_subgroups") {
            wgsl_web.push_str("requires subgroup_id;\n");
        }
    }
    wgsl_web.push_str(&wgsl_native);
    Ok(Variant {
        name: entry.kernel.clone(),
        key,
        template: entry.template.clone(),
        workgroup_size: entry_point.workgroup_size,
        bindings,
        features,
        workgroup_storage_bytes,
        wgsl_native,
        wgsl_web,
    })
}

/// Maps a naga error at `line` of the preprocessed text back to its template file and line.
fn located(
    expanded: &preprocess::Expanded,
    entry: &manifest::Entry,
    line: Option<u32>,
    detail: &str,
) -> Error {
    let origin = line
        .and_then(|l| expanded.origin(l))
        .cloned()
        .unwrap_or(preprocess::Origin {
            file: entry.template.clone(),
            line: 1,
        });
    Error::Template {
        file: origin.file,
        line: origin.line,
        message: format!(
            "{}[{}] does not validate:\n{detail}",
            entry.kernel,
            entry.key()
        ),
    }
}

/// Which WGSL text the emitted table carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    /// wgpu on Vulkan, Metal, DX12 (naga front end).
    Native,
    /// Browsers (Tint).
    Web,
}

/// Rust source for `static KERNELS: &[KernelSpec]`, sorted by (name, key). The including module
/// must define `KernelSpec`, `BindingSpec`, `BindingKind` and `KernelFeatures` with the same
/// field names.
pub fn emit_rust(variants: &[Variant], target: Target) -> String {
    let mut out = String::from("// Generated by kiln-shadergen from shaders/: do not edit.\n");
    out.push_str("pub static KERNELS: &[KernelSpec] = &[\n");
    for v in variants {
        let wgsl = match target {
            Target::Native => &v.wgsl_native,
            Target::Web => &v.wgsl_web,
        };
        let mut bindings = String::new();
        for b in &v.bindings {
            let _ = write!(
                bindings,
                "BindingSpec {{ binding: {}, kind: BindingKind::{:?}, min_size: {} }}, ",
                b.binding, b.kind, b.min_size
            );
        }
        let _ = writeln!(
            out,
            "    KernelSpec {{ name: {:?}, key: {:?}, template: {:?}, workgroup_size: {:?}, \
             bindings: &[{bindings}], features: KernelFeatures {{ f16: {}, subgroup: {}, dot4: {} }}, \
             workgroup_storage_bytes: {}, wgsl: {:?} }},",
            v.name,
            v.key,
            v.template,
            v.workgroup_size,
            v.features.f16,
            v.features.subgroup,
            v.features.dot4,
            v.workgroup_storage_bytes,
            wgsl
        );
    }
    out.push_str("];\n");
    out
}

/// Rust source for the manifest's parameter spaces:
/// - `static PARAM_SPACES: &[ParamSpace]`, one per manifest line, sorted by kernel name (stable,
///   so a kernel's lines keep their order): each parameter with its values, each value with the
///   features it needs ([`manifest::value_features`]);
/// - `mod params`, one module per kernel with a `pub const NAME: u32` for each integer
///   parameter that takes a single value wherever the kernel's lines give it
///   (`params::gemv::WG_SIZE`).
///
/// The including module must define `ParamSpace`, `ParamAxis`, `ParamValue` and
/// `KernelFeatures` with the same field names.
pub fn emit_params(spaces: &[manifest::Space]) -> String {
    let mut sorted: Vec<&manifest::Space> = spaces.iter().collect();
    sorted.sort_by(|a, b| a.kernel.cmp(&b.kernel));
    let mut out =
        String::from("// Generated by kiln-shadergen from shaders/manifest.txt: do not edit.\n");
    out.push_str("pub static PARAM_SPACES: &[ParamSpace] = &[\n");
    // Per kernel, per parameter, every value any of its lines gives.
    let mut taken: BTreeMap<&str, BTreeMap<&str, BTreeSet<&str>>> = BTreeMap::new();
    for space in &sorted {
        let mut axes = String::new();
        for (name, values) in &space.axes {
            let mut listed = String::new();
            for value in values {
                let needs = manifest::value_features(name, value);
                let _ = write!(
                    listed,
                    "ParamValue {{ value: {value:?}, needs: KernelFeatures {{ f16: {}, \
                     subgroup: {}, dot4: {} }} }}, ",
                    needs.f16, needs.subgroup, needs.dot4
                );
                taken
                    .entry(&space.kernel)
                    .or_default()
                    .entry(name)
                    .or_default()
                    .insert(value);
            }
            let _ = write!(
                axes,
                "ParamAxis {{ name: {name:?}, values: &[{listed}] }}, "
            );
        }
        let _ = writeln!(
            out,
            "    ParamSpace {{ kernel: {:?}, line: {}, axes: &[{axes}] }},",
            space.kernel, space.line
        );
    }
    out.push_str("];\n\n");
    out.push_str("pub mod params {\n");
    for (kernel, params) in &taken {
        let _ = writeln!(out, "    pub mod {kernel} {{");
        for (name, values) in params {
            let mut values = values.iter();
            if let (Some(value), None) = (values.next(), values.next())
                && let Ok(n) = value.parse::<u32>()
            {
                let _ = writeln!(out, "        pub const {name}: u32 = {n};");
            }
        }
        out.push_str("    }\n");
    }
    out.push_str("}\n");
    out
}

/// The reviewed text of one variant, as kept in `snapshots/`.
pub fn snapshot_text(v: &Variant) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "kernel: {}", v.name);
    let _ = writeln!(s, "key: {}", v.key);
    let _ = writeln!(s, "template: {}", v.template);
    let _ = writeln!(s, "workgroup_size: {:?}", v.workgroup_size);
    let _ = writeln!(s, "workgroup_storage_bytes: {}", v.workgroup_storage_bytes);
    // `dot4` is printed only where it is used, so that the snapshots of the variants that
    // predate it stay as they were reviewed.
    let _ = writeln!(
        s,
        "features: f16={} subgroup={}{}",
        v.features.f16,
        v.features.subgroup,
        if v.features.dot4 { " dot4=true" } else { "" }
    );
    for b in &v.bindings {
        let _ = writeln!(
            s,
            "binding {}: {:?} (min {} bytes)",
            b.binding, b.kind, b.min_size
        );
    }
    let web_only: Vec<&str> = v
        .wgsl_web
        .lines()
        .take_while(|l| l.starts_with("enable ") || l.starts_with("requires "))
        .filter(|l| !v.wgsl_native.lines().any(|n| n == *l))
        .collect();
    let _ = writeln!(
        s,
        "web adds: {}",
        if web_only.is_empty() {
            "nothing".into()
        } else {
            web_only.join(" ")
        }
    );
    s.push_str("---\n");
    s.push_str(&v.wgsl_native);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_give_single_integers_as_constants() {
        let spaces = manifest::spaces(
            "k a.wgsl WG_SIZE=64 SUBGROUP=0|1 DTYPE=f32|f16 ROWS=4\n\
             k a.wgsl WG_SIZE=64 SUBGROUP=0 DTYPE=f32\n\
             j b.wgsl TILE=8 KV=f16\n\
             j b.wgsl TILE=16 KV=f32\n",
        )
        .unwrap();
        let text = emit_params(&spaces);
        let consts: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("pub const"))
            .map(str::trim)
            .collect();
        assert_eq!(
            consts,
            ["pub const ROWS: u32 = 4;", "pub const WG_SIZE: u32 = 64;"],
            "{text}"
        );
        let spaces_j = text.find("kernel: \"j\"").unwrap();
        let spaces_k = text.find("kernel: \"k\", line: 1").unwrap();
        assert!(spaces_j < spaces_k, "sorted by kernel: {text}");
        assert!(text.contains(
            "ParamValue { value: \"1\", needs: KernelFeatures { f16: false, subgroup: true, dot4: false } }"
        ));
        assert!(text.contains(
            "ParamValue { value: \"f16\", needs: KernelFeatures { f16: true, subgroup: false, dot4: false } }"
        ));
    }
}
