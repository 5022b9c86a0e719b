//! A small `--name value` / `--flag` argument parser (the CLI has few options; no dependency).

use std::collections::HashMap;
use std::str::FromStr;

/// Parsed options: `--name value` pairs and bare `--flag`s.
#[derive(Debug, Default)]
pub struct Args {
    values: HashMap<String, String>,
    flags: Vec<String>,
}

/// Options that take no value.
const FLAGS: &[&str] = &["json", "chat", "steps"];

impl Args {
    pub fn parse(argv: impl Iterator<Item = String>) -> Result<Args, String> {
        let mut args = Args::default();
        let mut argv = argv.peekable();
        while let Some(a) = argv.next() {
            let Some(name) = a.strip_prefix("--") else {
                return Err(format!("unexpected argument `{a}`"));
            };
            if let Some((n, v)) = name.split_once('=') {
                args.values.insert(n.to_string(), v.to_string());
            } else if FLAGS.contains(&name) {
                args.flags.push(name.to_string());
            } else {
                let v = argv
                    .next()
                    .ok_or_else(|| format!("`--{name}` needs a value"))?;
                args.values.insert(name.to_string(), v);
            }
        }
        Ok(args)
    }

    pub fn get(&self, name: &str) -> Option<String> {
        self.values.get(name).cloned()
    }

    pub fn required(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .ok_or_else(|| format!("`--{name}` is required"))
    }

    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }

    /// A comma-separated list (`--ids 1,2,3`), or None when the option is absent.
    pub fn list<T: FromStr>(&self, name: &str) -> Result<Option<Vec<T>>, String> {
        self.values
            .get(name)
            .map(|v| {
                v.split(',')
                    .filter(|s| !s.trim().is_empty())
                    .map(|s| {
                        s.trim()
                            .parse()
                            .map_err(|_| format!("`--{name}`: `{s}` is not a valid value"))
                    })
                    .collect()
            })
            .transpose()
    }

    pub fn parse_or<T: FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.values.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("`--{name} {v}`: not a valid value")),
        }
    }
}
