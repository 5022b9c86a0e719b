//! The generated kernel table and typed keys into it.
//!
//! `build.rs` runs `kiln-shadergen` over `shaders/` and includes one [`KernelSpec`] per variant,
//! sorted by (name, key), and the manifest's parameter spaces: [`PARAM_SPACES`] (each line's
//! parameters, their values and what each value needs of the device) and [`params`] (per
//! kernel, a constant for each integer parameter with a single value, `params::gemv::WG_SIZE`).
//! Ops name a variant with a [`KernelKey`] built from typed parameters and those constants, so
//! the dispatch math reads the same values (workgroup size, tile) that the shader was generated
//! with, and a parameter that leaves the manifest fails the build.

use std::collections::BTreeMap;
use std::fmt;

use crate::error::{Error, Result};

/// How a binding is accessed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindingKind {
    Uniform,
    StorageRead,
    StorageReadWrite,
}

/// One binding of a kernel, in `@group(0)`.
#[derive(Clone, Copy, Debug)]
pub struct BindingSpec {
    pub binding: u32,
    pub kind: BindingKind,
    /// Size of the bound type (one element for runtime-sized arrays).
    pub min_size: u32,
}

/// Device features a kernel needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelFeatures {
    pub f16: bool,
    pub subgroup: bool,
    /// The WGSL language extension `packed_4x8_integer_dot_product` (`dot4I8Packed`).
    pub dot4: bool,
}

/// One generated kernel variant, validated by naga at build time.
#[derive(Debug)]
pub struct KernelSpec {
    pub name: &'static str,
    pub key: &'static str,
    pub template: &'static str,
    pub workgroup_size: [u32; 3],
    pub bindings: &'static [BindingSpec],
    pub features: KernelFeatures,
    pub workgroup_storage_bytes: u32,
    pub wgsl: &'static str,
}

/// One manifest line: a kernel and the values each of its parameters takes there (its variants
/// are their cross product).
#[derive(Debug)]
pub struct ParamSpace {
    pub kernel: &'static str,
    /// The line in `shaders/manifest.txt`.
    pub line: u32,
    pub axes: &'static [ParamAxis],
}

/// One parameter of a manifest line and its values.
#[derive(Debug)]
pub struct ParamAxis {
    pub name: &'static str,
    pub values: &'static [ParamValue],
}

/// One value of a parameter and the device features a variant with it needs.
#[derive(Debug)]
pub struct ParamValue {
    pub value: &'static str,
    pub needs: KernelFeatures,
}

include!(concat!(env!("OUT_DIR"), "/kernels.rs"));

impl ParamSpace {
    /// The manifest lines of `kernel`, in manifest order.
    pub fn of(kernel: &str) -> impl Iterator<Item = &'static ParamSpace> {
        PARAM_SPACES.iter().filter(move |s| s.kernel == kernel)
    }

    /// The values of parameter `name` on this line.
    pub fn values(&self, name: &str) -> impl Iterator<Item = &'static ParamValue> {
        let axes = self.axes;
        axes.iter()
            .filter(move |a| a.name == name)
            .flat_map(|a| a.values)
    }

    /// The integer parameter `name` where this line gives it exactly one value.
    pub fn uint(&self, name: &str) -> Option<u32> {
        let mut values = self.values(name);
        match (values.next(), values.next()) {
            (Some(v), None) => v.value.parse().ok(),
            _ => None,
        }
    }

    /// Whether this line's parameter `name` takes `value`.
    pub fn takes(&self, name: &str, value: &str) -> bool {
        self.values(name).any(|v| v.value == value)
    }
}

impl KernelSpec {
    /// `name[key]`, as in error messages and snapshots.
    pub fn id(&self) -> String {
        format!("{}[{}]", self.name, self.key)
    }

    /// A `u32` parameter of the variant's key (`TILE_M=4` -> `Some(4)`), so dispatch math reads
    /// the value the shader was generated with.
    pub fn param(&self, name: &str) -> Option<u32> {
        self.key
            .split(',')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')?.parse().ok())
    }

    /// Invocations per workgroup.
    pub fn invocations(&self) -> u32 {
        self.workgroup_size.iter().product()
    }

    /// Looks a variant up in the generated table.
    pub fn find(key: &KernelKey) -> Result<&'static KernelSpec> {
        let wanted = key.params_string();
        KERNELS
            .binary_search_by(|s| (s.name, s.key).cmp(&(key.name, wanted.as_str())))
            .map(|i| &KERNELS[i])
            .map_err(|_| Error::MissingKernel {
                name: key.name.to_string(),
                key: wanted,
                available: KERNELS
                    .iter()
                    .filter(|s| s.name == key.name)
                    .map(|s| s.key)
                    .collect::<Vec<_>>()
                    .join("; "),
            })
    }

    /// Index of this spec in [`KERNELS`], a stable small id for caches.
    pub(crate) fn index(&self) -> usize {
        KERNELS
            .binary_search_by(|s| (s.name, s.key).cmp(&(self.name, self.key)))
            .expect("spec comes from KERNELS")
    }
}

/// A typed request for one kernel variant: the kernel name and its parameters, kept in name
/// order so that equal requests hash and print the same.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KernelKey {
    name: &'static str,
    params: BTreeMap<&'static str, String>,
}

impl KernelKey {
    pub fn new(name: &'static str) -> Self {
        KernelKey {
            name,
            params: BTreeMap::new(),
        }
    }

    /// An unsigned integer parameter (`WG_SIZE=256`).
    pub fn uint(mut self, name: &'static str, value: u32) -> Self {
        self.params.insert(name, value.to_string());
        self
    }

    /// A word parameter (`OP=sum`, `DTYPE=f16`).
    pub fn word(mut self, name: &'static str, value: &str) -> Self {
        self.params.insert(name, value.to_string());
        self
    }

    /// A 0/1 flag parameter (`SUBGROUP=1`).
    pub fn flag(self, name: &'static str, on: bool) -> Self {
        self.uint(name, u32::from(on))
    }

    pub fn name(&self) -> &'static str {
        self.name
    }

    fn params_string(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(",")
    }
}

impl fmt::Display for KernelKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}[{}]", self.name, self.params_string())
    }
}

/// Storage element type of a kernel variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F32,
    F16,
}

impl DType {
    pub fn wgsl(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
        }
    }

    pub fn size(self) -> u64 {
        match self {
            DType::F32 => 4,
            DType::F16 => 2,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_spaces_follow_the_manifest() {
        let lines: Vec<_> = ParamSpace::of("attention_flash").collect();
        assert_eq!(lines.len(), 4);
        assert!(
            lines
                .iter()
                .all(|l| l.takes("OUT", "split") && !l.takes("OUT", "none"))
        );
        assert_eq!(
            lines[0].uint("WG_SIZE"),
            Some(params::attention_flash::WG_SIZE)
        );
        assert_eq!(lines[0].uint("OUT"), None, "two values, and words");
        let gemv = ParamSpace::of("gemv").next().unwrap();
        let needs = |name, value| {
            gemv.values(name)
                .find(|v| v.value == value)
                .map(|v| v.needs)
                .unwrap()
        };
        assert!(needs("SUBGROUP", "1").subgroup && !needs("SUBGROUP", "0").subgroup);
        assert!(needs("ADTYPE", "f16").f16 && !needs("ADTYPE", "f32").f16);
    }

    #[test]
    fn table_is_sorted_and_unique() {
        for pair in KERNELS.windows(2) {
            assert!((pair[0].name, pair[0].key) < (pair[1].name, pair[1].key));
        }
    }

    #[test]
    fn typed_keys_find_their_variant() {
        let key = KernelKey::new("reduce")
            .word("OP", "max")
            .flag("SUBGROUP", true)
            .uint("WG_SIZE", 256);
        let spec = KernelSpec::find(&key).unwrap();
        assert_eq!(spec.key, "OP=max,SUBGROUP=1,WG_SIZE=256");
        assert_eq!(spec.workgroup_size, [256, 1, 1]);
        assert!(spec.features.subgroup);
    }

    #[test]
    fn missing_variant_names_the_alternatives() {
        let key = KernelKey::new("reduce")
            .word("OP", "min")
            .uint("WG_SIZE", 256);
        let err = KernelSpec::find(&key).unwrap_err().to_string();
        assert!(err.contains("reduce[OP=min,WG_SIZE=256]"), "{err}");
        assert!(err.contains("OP=max,SUBGROUP=0,WG_SIZE=256"), "{err}");
    }
}
