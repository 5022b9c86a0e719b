//! The `kiln` binary: usage errors (exit code 2, naming the option) for unknown options and bad
//! values; clear errors and exit code 1 for bad files; JSON output.

use std::ffi::OsStr;
use std::process::Command;

fn kiln<S: AsRef<OsStr>>(args: &[S]) -> std::process::Output {
    kiln_with(args, &[])
}

/// `kiln` with extra environment variables.
fn kiln_with<S: AsRef<OsStr>>(args: &[S], env: &[(&str, &OsStr)]) -> std::process::Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kiln"));
    cmd.args(args).env("XDG_RUNTIME_DIR", std::env::temp_dir());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run kiln")
}

fn models() -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models")
}

#[test]
fn missing_truncated_and_foreign_files_fail_clearly() {
    let out = kiln(&["generate", "--model", "/nonexistent.gguf", "--prompt", "hi"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not exist"), "{err}");

    let dir = std::env::temp_dir().join(format!("kiln-cli-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let foreign = dir.join("foreign.gguf");
    std::fs::write(&foreign, b"this is not a GGUF file at all").unwrap();
    let out = kiln(&[
        "tokenize",
        "--model",
        foreign.to_str().unwrap(),
        "--text",
        "hi",
    ]);
    assert!(!out.status.success());
    assert!(!out.stderr.is_empty());

    let real = models().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if real.exists() {
        let bytes = std::fs::read(&real).unwrap();
        let truncated = dir.join("truncated.gguf");
        std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
        let out = kiln(&[
            "generate",
            "--model",
            truncated.to_str().unwrap(),
            "--prompt",
            "hi",
            "--backend",
            "cpu",
        ]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.to_lowercase().contains("truncated"), "{err}");
    }
    std::fs::remove_dir_all(&dir).ok();

    let out = kiln(&["generate", "--prompt", "hi"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--model"));
}

#[test]
fn tokenize_and_generate_json() {
    let real = models().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !real.exists() {
        assert!(
            std::env::var("KILN_SKIP_MODEL_TESTS").is_ok_and(|v| v == "1"),
            "{} is missing: run scripts/install-models.sh",
            real.display()
        );
        skip("no model and KILN_SKIP_MODEL_TESTS=1");
        return;
    }
    let model = real.to_str().unwrap();
    let out = kiln(&[
        "tokenize",
        "--model",
        model,
        "--text",
        "Hello world",
        "--json",
    ]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // llama.cpp's ids for this text (runtime/tests/fixtures/tokenizer/smollm2.json).
    assert_eq!(v["ids"], serde_json::json!([19556, 905]));

    let out = kiln(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "The capital of France is",
        "--max-tokens",
        "4",
        "--backend",
        "cpu",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "backend",
        "adapter",
        "prompt_tokens",
        "tokens",
        "text",
        "ttft_ms",
        "prefill_tok_s",
        "decode_tok_s",
        "peak_rss_mb",
    ] {
        assert!(v.get(key).is_some(), "missing {key} in {v}");
    }
    assert_eq!(v["backend"], "cpu");
    assert_eq!(v["tokens"].as_array().unwrap().len(), 4);
    // llama.cpp's greedy continuation starts with " Paris" (id 7042).
    assert_eq!(v["tokens"][0], 7042);

    // A GPU budget below the model's needs is refused with them (or, without an adapter,
    // with that).
    let out = kiln(&[
        "generate",
        "--model",
        model,
        "--prompt",
        "hi",
        "--backend",
        "gpu",
        "--gpu-memory",
        "10MiB",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("over the 10.0 MiB allowed") || err.contains("no GPU adapter"),
        "{err}"
    );
}

/// Exit code 2 (a usage error from the parser) and stderr.
fn usage_error(args: &[&str]) -> String {
    let out = kiln(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
    err
}

#[test]
fn help_for_every_command_names_its_options() {
    let load = [
        "--model",
        "--backend",
        "--threads",
        "--context",
        "--decode-batch",
        "--profile",
    ];
    let commands: [(&str, &[&str]); 6] = [
        (
            "generate",
            &[
                "--prompt",
                "--ids",
                "--max-tokens",
                "--temperature",
                "--top-k",
                "--top-p",
                "--repeat-penalty",
                "--seed",
                "--chat",
                "--json",
            ],
        ),
        ("tokenize", &["--model", "--text", "--json"]),
        (
            "logits",
            &[
                "--ids",
                "--positions",
                "--steps",
                "--top",
                "--pick",
                "--trace",
                "--json",
            ],
        ),
        (
            "bench",
            &["--prompt-tokens", "--gen-tokens", "--reps", "--json"],
        ),
        (
            "synth",
            &[
                "--header",
                "--layout",
                "--out",
                "--layout-out",
                "--seed",
                "--gain",
            ],
        ),
        (
            "tune",
            &[
                "--model",
                "--budget-seconds",
                "--out",
                "--runs",
                "--again",
                "--json",
            ],
        ),
    ];
    for (command, options) in commands {
        let out = kiln(&[command, "--help"]);
        assert!(out.status.success(), "{command} --help");
        let help = String::from_utf8_lossy(&out.stdout);
        let shared: &[&str] = if ["tokenize", "synth", "tune"].contains(&command) {
            &[]
        } else {
            &load
        };
        for option in options.iter().chain(shared) {
            assert!(
                help.contains(option),
                "{command} --help lacks {option}:\n{help}"
            );
        }
    }
    let out = kiln(&["--version"]);
    assert!(out.status.success());
    let version = String::from_utf8_lossy(&out.stdout);
    assert!(version.contains(env!("CARGO_PKG_VERSION")), "{version}");
    // No command: the list of commands, as a usage error.
    let err = usage_error(&[]);
    assert!(err.contains("generate") && err.contains("synth"), "{err}");
}

#[test]
fn misspelled_options_are_errors_with_a_suggestion() {
    let err = usage_error(&["generate", "--model", "x", "--temprature", "0.5"]);
    assert!(
        err.contains("--temprature") && err.contains("--temperature"),
        "{err}"
    );
    let err = usage_error(&["bench", "--model", "x", "--rep", "3"]);
    assert!(err.contains("--rep") && err.contains("--reps"), "{err}");
    let err = usage_error(&[
        "tokenize",
        "--model",
        "x",
        "--text",
        "hi",
        "--backend",
        "cpu",
    ]);
    assert!(err.contains("--backend"), "{err}");
    let err = usage_error(&["generat", "--model", "x"]);
    assert!(err.contains("generate"), "{err}");
}

#[test]
fn values_are_checked_when_parsed() {
    let generate = |extra: &[&str]| {
        let mut args = vec!["generate", "--model", "x", "--prompt", "hi"];
        args.extend_from_slice(extra);
        usage_error(&args)
    };
    let err = generate(&["--top-p", "7"]);
    assert!(err.contains("--top-p"), "{err}");
    for (option, bad) in [
        ("--temperature", "-0.5"),
        ("--temperature", "inf"),
        ("--top-k", "-1"),
        ("--repeat-penalty", "0"),
        ("--max-tokens", "0"),
        ("--threads", "-2"),
        ("--context", "8"),
        ("--decode-batch", "0"),
        ("--decode-batch", "17"),
        ("--seed", "x"),
        ("--gpu-memory", "lots"),
        ("--gpu-memory", "0"),
        ("--max-buffer", "12 parsecs"),
    ] {
        let err = generate(&[option, bad]);
        assert!(err.contains(option), "{option} {bad}: {err}");
    }
    let err = generate(&["--backend", "gpx"]);
    for choice in ["gpu", "cpu", "auto"] {
        assert!(err.contains(choice), "{err}");
    }
    let err = usage_error(&["generate", "--model", "x", "--ids", "1,x,3"]);
    assert!(err.contains("--ids") && err.contains("`x`"), "{err}");
    // `--prompt` and `--ids` are one or the other.
    usage_error(&["generate", "--model", "x"]);
    usage_error(&["generate", "--model", "x", "--prompt", "hi", "--ids", "1"]);
    for (option, bad) in [
        ("--reps", "0"),
        ("--gen-tokens", "0"),
        ("--prompt-tokens", "0"),
    ] {
        let err = usage_error(&["bench", "--model", "x", option, bad]);
        assert!(err.contains(option), "{err}");
    }
    let err = usage_error(&[
        "logits",
        "--model",
        "x",
        "--ids",
        "1,2",
        "--positions",
        "0,y",
    ]);
    assert!(err.contains("`y`"), "{err}");
    // A trace is of the ids run as one prompt, not of decode steps.
    let err = usage_error(&[
        "logits", "--model", "x", "--ids", "1", "--steps", "--trace", "t.json",
    ]);
    assert!(err.contains("--trace"), "{err}");
    let err = usage_error(&["synth", "--header", "h", "--out", "o", "--gain", "0"]);
    assert!(err.contains("--gain"), "{err}");
    usage_error(&["synth", "--header", "h", "--layout", "l", "--out", "o"]);
    usage_error(&["synth", "--header", "h"]);
}

#[test]
fn missing_model_files_are_named() {
    for command in [
        &["tokenize", "--model", "/nonexistent.gguf", "--text", "hi"][..],
        &["bench", "--model", "/nonexistent.gguf"],
        &["logits", "--model", "/nonexistent.gguf", "--ids", "1"],
    ] {
        let out = kiln(command);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{command:?}: {err}");
        assert!(
            err.contains("/nonexistent.gguf") && err.contains("does not exist"),
            "{err}"
        );
    }
}

#[cfg(unix)]
#[test]
fn non_utf8_paths_fail_cleanly() {
    use std::os::unix::ffi::OsStrExt as _;

    let run = |args: &[&[u8]]| {
        let args: Vec<&OsStr> = args.iter().map(|a| OsStr::from_bytes(a)).collect();
        kiln(&args)
    };
    // A file name with the byte 0xff (not UTF-8) in a folder that does not exist.
    let dir = std::env::temp_dir().join(format!("kiln-cli-utf8-{}", std::process::id()));
    let bad = dir.join(OsStr::from_bytes(b"model-\xff.gguf"));
    let bad = bad.as_os_str().as_bytes();
    for args in [
        &[b"generate" as &[u8], b"--model", bad, b"--prompt", b"hi"][..],
        &[b"tokenize", b"--model", bad, b"--text", b"hi"],
        &[b"synth", b"--header", bad, b"--out", bad],
    ] {
        let out = run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        // 1 with a message, not the 101 of a panic.
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("kiln: ") && err.contains("model-"), "{err}");
    }
    // Text that is not UTF-8 is a usage error.
    let out = run(&[b"tokenize", b"--model", b"m", b"--text", b"\xff"]);
    assert_eq!(out.status.code(), Some(2));
}

/// `kiln tune` on this machine's adapter, twice under a small budget into a fresh cache folder:
/// the profile is written where kiln looks for it, every winner passed its check, the budget
/// is kept (within one case), the second run starts from the first's profile; then `generate
/// --json` reports the profile it used, `--profile off` uses none, and an environment override
/// is reported and applied.
#[test]
fn tune_writes_a_profile_that_generate_uses() {
    let cache = std::env::temp_dir().join(format!("kiln-tune-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    let env = [("KILN_CACHE_DIR", cache.as_os_str())];
    let budget = 20.0;
    let run = || {
        let out = kiln_with(
            &["tune", "--budget-seconds", "20", "--runs", "2", "--json"],
            &env,
        );
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        (out, err)
    };
    let (out, err) = run();
    if !out.status.success() && err.contains("no GPU adapter") {
        assert!(
            std::env::var("KILN_REQUIRE_GPU").as_deref() != Ok("1"),
            "KILN_REQUIRE_GPU=1 but: {err}"
        );
        skip("no GPU adapter for kiln tune");
        return;
    }
    assert!(out.status.success(), "{err}");
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let path = first["profile_path"].as_str().unwrap().to_string();
    assert!(
        path.starts_with(cache.join("profiles").to_str().unwrap()),
        "{path}"
    );
    let profile = &first["profile"];
    assert_eq!(profile["format"], "kiln-profile");
    let entries = profile["entries"].as_array().unwrap();
    assert!(!entries.is_empty(), "nothing measured in {budget} s");
    for e in entries {
        let status = |name: &serde_json::Value| {
            e["candidates"]
                .as_array()
                .unwrap()
                .iter()
                .find(|c| &c["name"] == name)
                .map(|c| c["status"].clone())
        };
        if !e["winner"].is_null() {
            assert_eq!(status(&e["winner"]), Some("ok".into()), "{e}");
        }
    }
    // One case runs past the budget at most (the largest standard one takes a few seconds).
    let seconds = first["seconds"].as_f64().unwrap();
    assert!(
        seconds < budget + 30.0,
        "{seconds} s for a {budget} s budget"
    );

    let (out, err) = run();
    assert!(out.status.success(), "{err}");
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(second["kept"].as_u64().unwrap() >= 1, "{second}");
    assert!(second["profile"]["entries"].as_array().unwrap().len() >= entries.len());

    let real = models().join("SmolLM2-135M-Instruct.Q4_1.gguf");
    if !real.exists() {
        skip("no SmolLM2 for kiln generate with a profile");
        return;
    }
    let generate = |extra: &[&str], env: &[(&str, &OsStr)]| {
        let mut args = vec![
            "generate",
            "--model",
            real.to_str().unwrap(),
            "--ids",
            "1,2,3",
            "--max-tokens",
            "2",
            "--backend",
            "gpu",
            "--json",
        ];
        args.extend(extra);
        let out = kiln_with(&args, env);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let v = generate(&[], &env);
    assert_eq!(v["tuning"]["profile"], path.as_str(), "{v}");
    let v = generate(&["--profile", "off"], &env);
    assert!(v["tuning"]["profile"].is_null(), "{v}");
    assert_eq!(v["overrides"]["--profile"], "off");
    let fuse = [env[0], ("KILN_FUSE", OsStr::new("1"))];
    let v = generate(&[], &fuse);
    assert_eq!(v["overrides"]["KILN_FUSE"], "1", "{v}");
    assert_eq!(v["tuning"]["fused"], true, "{v}");
    let _ = std::fs::remove_dir_all(&cache);
}

/// Says loudly that the test checked nothing, and records it where `KILN_SKIP_LOG` points
/// (scripts/test.sh lists every skip at its end), as the runtime's tests do.
fn skip(reason: &str) {
    eprintln!("\n!!!!! SKIPPED: {reason}; this test checked nothing. !!!!!\n");
    if let Some(log) = std::env::var_os("KILN_SKIP_LOG") {
        use std::io::Write;
        if let Ok(mut f) = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .open(log)
        {
            let line = format!("kiln-cli: {reason}\n");
            let _ = f.write_all(line.as_bytes());
        }
    }
}
