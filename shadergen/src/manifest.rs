//! The variant manifest (`shaders/manifest.txt`): which variants of which template to build.
//!
//! One line per family of variants, `#` starts a comment:
//!
//! ```text
//! # kernel     template          parameters
//! reduce       reduce.wgsl       OP=sum|max DTYPE=f32 WG_SIZE=256 SUBGROUP=0|1
//! ```
//!
//! `a|b` expands into one variant per choice (the cross product over all parameters). A bare
//! `NAME` means `NAME=1`. What a parameter gives the template:
//! - an integer `N`: `const NAME: u32 = Nu;`, and `NAME` is defined for `#ifdef` when `N != 0`;
//! - a WGSL scalar type (`f32`, `f16`, `u32`, `i32`): `alias NAME = type;`, and `NAME_TYPE`
//!   (e.g. `DTYPE_F16`) is defined;
//! - any other word `w`: `NAME_W` is defined (e.g. `OP=sum` defines `OP_SUM`).
//!
//! A variant needs SHADER_F16 when any parameter is `f16`, subgroups when `SUBGROUP` is
//! non-zero, and the WGSL language extension `packed_4x8_integer_dot_product` when `DOT4` is
//! ([`value_features`]). Its key is its parameters in name order, `DTYPE=f32,OP=sum,...`.
//!
//! [`spaces`] gives the lines unexpanded (each parameter with its choices), which the runtime
//! receives as typed data ([`crate::emit_params`]).

use std::collections::{BTreeMap, BTreeSet};

use crate::{Error, Features};

/// One variant to generate.
#[derive(Clone, Debug)]
pub struct Entry {
    pub kernel: String,
    pub template: String,
    pub params: BTreeMap<String, String>,
    /// 1-based manifest line, for errors.
    pub line: u32,
}

const SCALARS: [&str; 4] = ["f32", "f16", "u32", "i32"];

impl Entry {
    /// Canonical key: parameters sorted by name, `K=V` joined by commas.
    pub fn key(&self) -> String {
        let parts: Vec<String> = self
            .params
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(",")
    }

    /// What the variant needs: what any of its parameter values needs.
    pub fn features(&self) -> Features {
        self.params
            .iter()
            .map(|(name, value)| value_features(name, value))
            .fold(Features::default(), Features::union)
    }

    /// Names visible to `#ifdef`.
    pub fn defines(&self) -> BTreeSet<String> {
        let mut defined = BTreeSet::new();
        for (name, value) in &self.params {
            match value.parse::<u32>() {
                Ok(0) => {}
                Ok(_) => {
                    defined.insert(name.clone());
                }
                Err(_) => {
                    defined.insert(format!("{name}_{}", value.to_ascii_uppercase()));
                }
            }
        }
        defined
    }

    /// WGSL declarations for the typed constants, one per line.
    pub fn declarations(&self) -> Vec<String> {
        let mut lines = Vec::new();
        for (name, value) in &self.params {
            if let Ok(n) = value.parse::<u32>() {
                lines.push(format!("const {name}: u32 = {n}u;"));
            } else if SCALARS.contains(&value.as_str()) {
                lines.push(format!("alias {name} = {value};"));
            }
        }
        lines
    }
}

/// What a variant with parameter `name` set to `value` needs of the device: SHADER_F16 for
/// `f16`, subgroups for a non-zero `SUBGROUP`, `dot4I8Packed` for a non-zero `DOT4`.
pub fn value_features(name: &str, value: &str) -> Features {
    let nonzero = value.parse::<u32>().is_ok_and(|n| n != 0);
    Features {
        f16: value == "f16",
        subgroup: name == "SUBGROUP" && nonzero,
        dot4: name == "DOT4" && nonzero,
    }
}

/// One manifest line before expansion: its variants are the cross product of its axes.
#[derive(Clone, Debug)]
pub struct Space {
    pub kernel: String,
    pub template: String,
    /// Each parameter, in the line's order, with the values it takes.
    pub axes: Vec<(String, Vec<String>)>,
    /// 1-based manifest line, for errors.
    pub line: u32,
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Parses the manifest text into its lines, unexpanded, in manifest order.
pub fn spaces(text: &str) -> Result<Vec<Space>, Error> {
    let mut spaces = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index as u32 + 1;
        let at = |message: String| Error::Template {
            file: "manifest.txt".into(),
            line,
            message,
        };
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        let mut words = content.split_whitespace();
        let (Some(kernel), Some(template)) = (words.next(), words.next()) else {
            return Err(at("expected `kernel template.wgsl PARAM=value ...`".into()));
        };
        if !is_identifier(kernel) {
            return Err(at(format!("kernel name `{kernel}` is not an identifier")));
        }
        if !template.ends_with(".wgsl") || template.contains("..") {
            return Err(at(format!(
                "template `{template}` must be a .wgsl file in shaders/"
            )));
        }
        // Each parameter with its choices; [`parse`] expands them as a cross product.
        let mut axes: Vec<(String, Vec<String>)> = Vec::new();
        for word in words {
            let (name, values) = word.split_once('=').unwrap_or((word, "1"));
            if !is_identifier(name) || name.to_ascii_uppercase() != name {
                return Err(at(format!(
                    "parameter `{name}` must be an UPPER_CASE identifier"
                )));
            }
            if axes.iter().any(|(n, _)| n == name) {
                return Err(at(format!("parameter `{name}` given twice")));
            }
            let choices: Vec<String> = values.split('|').map(str::to_string).collect();
            if let Some(bad) = choices
                .iter()
                .find(|c| !(is_identifier(c) || c.parse::<u32>().is_ok()))
            {
                return Err(at(format!(
                    "value `{bad}` of {name} must be an unsigned integer or a word"
                )));
            }
            axes.push((name.to_string(), choices));
        }
        spaces.push(Space {
            kernel: kernel.to_string(),
            template: template.to_string(),
            axes,
            line,
        });
    }
    Ok(spaces)
}

/// Parses the manifest text into expanded entries, sorted by kernel name then key.
pub fn parse(text: &str) -> Result<Vec<Entry>, Error> {
    let mut entries = Vec::new();
    for space in spaces(text)? {
        let mut combos: Vec<BTreeMap<String, String>> = vec![BTreeMap::new()];
        for (name, choices) in &space.axes {
            combos = combos
                .into_iter()
                .flat_map(|combo| {
                    choices.iter().map(move |choice| {
                        let mut next = combo.clone();
                        next.insert(name.clone(), choice.clone());
                        next
                    })
                })
                .collect();
        }
        entries.extend(combos.into_iter().map(|params| Entry {
            kernel: space.kernel.clone(),
            template: space.template.clone(),
            params,
            line: space.line,
        }));
    }
    entries.sort_by(|a, b| (&a.kernel, a.key()).cmp(&(&b.kernel, b.key())));
    for pair in entries.windows(2) {
        if pair[0].kernel == pair[1].kernel && pair[0].key() == pair[1].key() {
            return Err(Error::Template {
                file: "manifest.txt".into(),
                line: pair[1].line,
                message: format!(
                    "variant {}[{}] is also listed on line {}",
                    pair[1].kernel,
                    pair[1].key(),
                    pair[0].line
                ),
            });
        }
    }
    Ok(entries)
}
