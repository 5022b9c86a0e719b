//! Generation options from a plain JS object, and small helpers for building JS objects.

use std::time::Duration;

use js_sys::{Array, Object, Reflect};
use kiln::generate::GenerateOptions;
use wasm_bindgen::prelude::*;

use crate::js_err;

/// `o[key] = value`.
pub(crate) fn set(o: &Object, key: &str, value: &JsValue) -> Result<(), JsValue> {
    Reflect::set(o, &key.into(), value).map(drop)
}

/// What [`crate::Model::generate`] needs beyond kiln's own options: the stop strings.
#[derive(Debug)]
pub(crate) struct Options {
    pub generate: GenerateOptions,
    pub stop_strings: Vec<String>,
    /// Bytes of the longest stop string.
    pub longest_stop: usize,
    /// Token ids this generation already produced (`continueFrom`): it goes on after them.
    pub continue_from: Vec<u32>,
}

impl Options {
    /// Reads `{maxTokens, temperature, topK, topP, repetitionPenalty, repeatLastN, seed, stop,
    /// ignoreEog}` from `value` (undefined or null: the defaults); unknown keys are an error, so
    /// a misspelt option does not pass silently.
    pub fn parse(value: &JsValue) -> Result<Options, JsValue> {
        let mut o = Options {
            generate: GenerateOptions::default(),
            stop_strings: Vec::new(),
            longest_stop: 0,
            continue_from: Vec::new(),
        };
        let g = &mut o.generate;
        let (stop_strings, continue_from) = (&mut o.stop_strings, &mut o.continue_from);
        for_each_option("generate options", value, &mut |name, v| {
            match name {
                "maxTokens" => g.max_tokens = uint(name, &v)?,
                "temperature" => g.temperature = float(name, &v)?,
                "topK" => g.top_k = uint(name, &v)? as usize,
                "topP" => g.top_p = float(name, &v)?,
                "repetitionPenalty" => g.repetition_penalty = float(name, &v)?,
                "repeatLastN" => g.repeat_last_n = uint(name, &v)? as usize,
                "seed" => g.seed = uint(name, &v)?,
                "ignoreEog" => {
                    g.ignore_eog = v
                        .as_bool()
                        .ok_or_else(|| js_err("option `ignoreEog` must be a boolean"))?
                }
                "stop" => {
                    let list = v
                        .dyn_ref::<Array>()
                        .ok_or_else(|| js_err("option `stop` must be an array"))?;
                    for s in list.iter() {
                        match s.as_string() {
                            Some(text) if !text.is_empty() => stop_strings.push(text),
                            Some(_) => return Err(js_err("an empty stop string")),
                            None => g.stop_tokens.push(uint("stop", &s)?),
                        }
                    }
                }
                "continueFrom" => *continue_from = uints("option `continueFrom`", &v)?,
                other => {
                    return Err(js_err(format!(
                        "unknown generate option `{other}` (known: maxTokens, temperature, topK, \
                         topP, repetitionPenalty, repeatLastN, seed, stop, ignoreEog, \
                         continueFrom)"
                    )));
                }
            }
            Ok(())
        })?;
        o.longest_stop = o.stop_strings.iter().map(String::len).max().unwrap_or(0);
        Ok(o)
    }

    /// The byte offset of the first stop string in `text[from..]`, if any.
    pub fn find_stop(&self, text: &str, from: usize) -> Option<usize> {
        // Back up to a character boundary.
        let from = (0..=from).rev().find(|&i| text.is_char_boundary(i))?;
        self.stop_strings
            .iter()
            .filter_map(|s| text[from..].find(s.as_str()).map(|i| from + i))
            .min()
    }
}

/// What [`crate::Model::logits`] reads from its options.
#[derive(Debug, PartialEq)]
pub(crate) struct LogitsOptions {
    /// Positions to return the logits at, strictly increasing; `None`: the last id's.
    pub positions: Option<Vec<usize>>,
    /// Feed the ids one decode step at a time instead of each prefix as one prompt.
    pub steps: bool,
}

impl LogitsOptions {
    /// Reads `{positions, steps}` from `value` (undefined or null: the defaults); unknown keys
    /// are an error, as for generate's options.
    pub fn parse(value: &JsValue) -> Result<LogitsOptions, JsValue> {
        let mut o = LogitsOptions {
            positions: None,
            steps: false,
        };
        for_each_option("logits options", value, &mut |name, v| {
            match name {
                "steps" => {
                    o.steps = v
                        .as_bool()
                        .ok_or_else(|| js_err("option `steps` must be a boolean"))?
                }
                "positions" => {
                    let positions: Vec<usize> = uints("option `positions`", &v)?
                        .into_iter()
                        .map(|p| p as usize)
                        .collect();
                    check_positions(&positions).map_err(js_err)?;
                    o.positions = Some(positions);
                }
                other => {
                    return Err(js_err(format!(
                        "unknown logits option `{other}` (known: positions, steps)"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(o)
    }
}

/// What [`crate::Model::tune`] reads from its options.
#[derive(Debug, PartialEq)]
pub(crate) struct TuneOptions {
    /// The most time the whole run may take.
    pub budget: Duration,
}

impl TuneOptions {
    /// Reads `{budgetMs}` from `value` (undefined or null: 30 s); unknown keys are an error.
    pub fn parse(value: &JsValue) -> Result<TuneOptions, JsValue> {
        let mut o = TuneOptions {
            budget: Duration::from_secs(30),
        };
        for_each_option("tune options", value, &mut |name, v| {
            match name {
                "budgetMs" => o.budget = budget_ms(v.as_f64()).map_err(js_err)?,
                other => {
                    return Err(js_err(format!(
                        "unknown tune option `{other}` (known: budgetMs)"
                    )));
                }
            }
            Ok(())
        })?;
        Ok(o)
    }
}

/// A `budgetMs` value: milliseconds, a positive finite number.
fn budget_ms(v: Option<f64>) -> Result<Duration, String> {
    v.filter(|ms| ms.is_finite() && *ms > 0.0)
        .and_then(|ms| Duration::try_from_secs_f64(ms / 1000.0).ok())
        .ok_or_else(|| "option `budgetMs` must be a positive number of milliseconds".into())
}

/// Positions must be some, in increasing order, each once (the rows come back in that order).
fn check_positions(positions: &[usize]) -> Result<(), String> {
    if positions.is_empty() {
        return Err("option `positions` is empty".into());
    }
    if positions.windows(2).any(|w| w[0] >= w[1]) {
        return Err(format!(
            "option `positions` must be strictly increasing (got {positions:?})"
        ));
    }
    Ok(())
}

/// Calls `f(key, value)` for each defined option of `options` (undefined or null: none);
/// `what` names them in the error for a value that is not an object.
pub(crate) fn for_each_option(
    what: &str,
    options: &JsValue,
    f: &mut dyn FnMut(&str, JsValue) -> Result<(), JsValue>,
) -> Result<(), JsValue> {
    if options.is_undefined() || options.is_null() {
        return Ok(());
    }
    let obj = options
        .dyn_ref::<Object>()
        .ok_or_else(|| js_err(format!("{what} must be an object")))?;
    for key in Object::keys(obj).iter() {
        let key = key.as_string().unwrap_or_default();
        let v = Reflect::get(obj, &key.as_str().into())?;
        if !v.is_undefined() {
            f(&key, v)?;
        }
    }
    Ok(())
}

/// Token ids or positions: a `Uint32Array`, or an array of non-negative integers (`what`
/// names them in the error).
pub(crate) fn uints(what: &str, v: &JsValue) -> Result<Vec<u32>, JsValue> {
    if let Some(ids) = v.dyn_ref::<js_sys::Uint32Array>() {
        return Ok(ids.to_vec());
    }
    let bad = || {
        js_err(format!(
            "{what} must be a Uint32Array or an array of non-negative integers"
        ))
    };
    v.dyn_ref::<Array>()
        .ok_or_else(bad)?
        .iter()
        .map(|x| {
            x.as_f64()
                .filter(|x| x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(x))
                .map(|x| x as u32)
                .ok_or_else(bad)
        })
        .collect()
}

fn float(name: &str, v: &JsValue) -> Result<f32, JsValue> {
    v.as_f64()
        .filter(|x| x.is_finite())
        .map(|x| x as f32)
        .ok_or_else(|| js_err(format!("option `{name}` must be a finite number")))
}

fn uint(name: &str, v: &JsValue) -> Result<u32, JsValue> {
    v.as_f64()
        .filter(|x| x.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(x))
        .map(|x| x as u32)
        .ok_or_else(|| js_err(format!("option `{name}` must be a non-negative integer")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_stops(stops: &[&str]) -> Options {
        Options {
            generate: GenerateOptions::default(),
            stop_strings: stops.iter().map(|s| s.to_string()).collect(),
            longest_stop: stops.iter().map(|s| s.len()).max().unwrap_or(0),
            continue_from: Vec::new(),
        }
    }

    #[test]
    fn logits_positions_are_increasing_and_unique() {
        assert!(check_positions(&[0, 3, 7]).is_ok());
        assert!(check_positions(&[]).is_err());
        assert!(check_positions(&[3, 3]).is_err());
        assert!(check_positions(&[4, 2]).is_err());
    }

    #[test]
    fn a_tune_budget_is_positive_milliseconds() {
        assert_eq!(budget_ms(Some(1500.0)), Ok(Duration::from_millis(1500)));
        assert!(budget_ms(Some(0.0)).is_err());
        assert!(budget_ms(Some(-5.0)).is_err());
        assert!(budget_ms(Some(f64::INFINITY)).is_err());
        assert!(budget_ms(Some(f64::NAN)).is_err());
        assert!(budget_ms(None).is_err());
    }

    #[test]
    fn the_earliest_stop_string_after_from_wins() {
        let o = with_stops(&["\n\n", "."]);
        assert_eq!(o.find_stop("Paris.\n\nThe", 0), Some(5));
        assert_eq!(o.find_stop("Paris\n\nThe.", 0), Some(5));
        assert_eq!(o.find_stop("Paris", 0), None);
        // Only text from `from` on is searched (earlier text was searched before).
        assert_eq!(o.find_stop("a.b.", 2), Some(3));
    }

    #[test]
    fn a_start_inside_a_character_backs_up_to_its_boundary() {
        let o = with_stops(&["é!"]);
        // "é" is 2 bytes (1..3): starting the search at byte 2 must not panic or miss it.
        assert_eq!(o.find_stop("xé!", 2), Some(1));
    }
}
