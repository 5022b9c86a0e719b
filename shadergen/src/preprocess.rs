//! The template preprocessor: `#import`, `#ifdef/#ifndef/#else/#endif`, with a line map back to
//! the template files so that every error names a file and a line.
//!
//! Directives must start a line (after optional white space):
//! - `#import name` pastes `shared/name.wgsl` once per variant (a second import is a no-op);
//! - `#ifdef NAME` / `#ifndef NAME` / `#else` / `#endif` keep or drop lines by whether NAME is
//!   defined for the variant (see [`crate::manifest`] for what defines a name).
//!
//! Anything else starting with `#` is an error.

use std::collections::BTreeSet;
use std::path::Path;

use crate::Error;

/// Where one line of preprocessed source came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Origin {
    /// Path relative to the shaders folder, e.g. `reduce.wgsl` or `shared/reduce.wgsl`.
    pub file: String,
    /// 1-based line in that file.
    pub line: u32,
}

/// Preprocessed text with one [`Origin`] per output line.
#[derive(Debug, Default)]
pub struct Expanded {
    pub text: String,
    pub origins: Vec<Origin>,
}

impl Expanded {
    /// Appends one line that came from `origin`.
    pub fn push_line(&mut self, line: &str, origin: Origin) {
        self.text.push_str(line);
        self.text.push('\n');
        self.origins.push(origin);
    }

    /// The origin of a 1-based output line, if it exists.
    pub fn origin(&self, line: u32) -> Option<&Origin> {
        self.origins.get((line as usize).checked_sub(1)?)
    }
}

/// Expands `file` (relative to `root`) into `out`, following imports and conditionals.
pub fn expand(
    root: &Path,
    file: &str,
    defined: &BTreeSet<String>,
    imported: &mut BTreeSet<String>,
    out: &mut Expanded,
) -> Result<(), Error> {
    let path = root.join(file);
    let source = std::fs::read_to_string(&path).map_err(|e| Error::Io {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;

    // Each frame: (this branch is active, some branch of this #if chain was taken, line of #if).
    let mut stack: Vec<(bool, bool, u32)> = Vec::new();
    let active = |stack: &[(bool, bool, u32)]| stack.iter().all(|f| f.0);

    for (index, line) in source.lines().enumerate() {
        let line_no = index as u32 + 1;
        let at = |message: String| Error::Template {
            file: file.to_string(),
            line: line_no,
            message,
        };
        let trimmed = line.trim_start();
        let Some(directive) = trimmed.strip_prefix('#') else {
            if active(&stack) {
                out.push_line(
                    line,
                    Origin {
                        file: file.to_string(),
                        line: line_no,
                    },
                );
            }
            continue;
        };
        let mut words = directive.split_whitespace();
        let keyword = words.next().unwrap_or("");
        let argument = words.next();
        if let Some(extra) = words.next() {
            return Err(at(format!("unexpected `{extra}` after #{keyword}")));
        }
        match (keyword, argument) {
            ("import", Some(name)) => {
                if active(&stack) && imported.insert(name.to_string()) {
                    let shared = format!("shared/{name}.wgsl");
                    if !root.join(&shared).is_file() {
                        return Err(at(format!("#import {name}: no file {shared}")));
                    }
                    expand(root, &shared, defined, imported, out)?;
                }
            }
            ("ifdef", Some(name)) => {
                let taken = defined.contains(name);
                stack.push((taken, taken, line_no));
            }
            ("ifndef", Some(name)) => {
                let taken = !defined.contains(name);
                stack.push((taken, taken, line_no));
            }
            ("else", None) => {
                let Some(frame) = stack.last_mut() else {
                    return Err(at("#else without #ifdef".into()));
                };
                frame.0 = !frame.1;
                frame.1 = true;
            }
            ("endif", None) => {
                if stack.pop().is_none() {
                    return Err(at("#endif without #ifdef".into()));
                }
            }
            ("import" | "ifdef" | "ifndef", None) => {
                return Err(at(format!("#{keyword} needs a name")));
            }
            ("else" | "endif", Some(arg)) => {
                return Err(at(format!("unexpected `{arg}` after #{keyword}")));
            }
            _ => {
                return Err(at(format!(
                    "unknown directive `#{keyword}` (known: #import, #ifdef, #ifndef, #else, #endif)"
                )));
            }
        }
    }
    if let Some(&(_, _, opened)) = stack.last() {
        return Err(Error::Template {
            file: file.to_string(),
            line: opened,
            message: "#ifdef is never closed by #endif".into(),
        });
    }
    Ok(())
}
