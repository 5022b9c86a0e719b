//! Tokenizers of the real models against llama.cpp's ids (fixtures from
//! scripts/make_tokenizer_fixtures.py).

mod common;

use kiln::gguf::GgufFile;
use kiln::tokenizer::{ChatTemplate, Message, Tokenizer};
use serde_json::Value as Json;

fn load(name: &str) -> Option<(Tokenizer, Json)> {
    let file = common::MODELS.iter().find(|m| m.0 == name).unwrap().1;
    let path = common::model_file(file, common::INSTALL_MODELS)?;
    let f = GgufFile::open(path).unwrap();
    Some((
        Tokenizer::from_gguf(&f).unwrap(),
        common::fixture(&format!("tokenizer/{name}.json")),
    ))
}

fn ids(j: &Json) -> Vec<u32> {
    j.as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn check(name: &str) {
    let Some((tok, fx)) = load(name) else { return };
    assert_eq!(tok.vocab_size() as u64, fx["n_vocab"].as_u64().unwrap());
    assert_eq!(tok.bos().map(u64::from), fx["bos"].as_u64());
    assert_eq!(tok.eos().map(u64::from), fx["eos"].as_u64());
    assert_eq!(tok.eog_ids(), &ids(&fx["eog"])[..], "end-of-generation ids");
    let mut failures = Vec::new();
    for case in fx["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let plain = tok.encode(text, false, false);
        let special = tok.encode(text, false, true);
        let with_bos = tok.encode(text, true, false);
        for (what, got, want) in [
            ("special=false", &plain, ids(&case["ids"])),
            ("special=true", &special, ids(&case["ids_special"])),
            ("add_special", &with_bos, ids(&case["ids_add_special"])),
        ] {
            if *got != want {
                failures.push(format!(
                    "{text:?} {what}:\n  kiln  {got:?}\n  llama {want:?}"
                ));
            }
        }
        // Decoding gives llama.cpp's bytes, and the text back wherever llama.cpp's does.
        let want = hex(case["decoded_hex"].as_str().unwrap());
        let got = tok.decode_bytes(&plain);
        if got != want {
            failures.push(format!("{text:?} decode: kiln {got:?} llama {want:?}"));
        }
        if want == text.as_bytes() {
            assert_eq!(tok.decode(&plain), text);
        }
        // Streaming yields the same text as decoding all at once.
        let mut stream = tok.stream_decoder();
        let mut streamed: String = plain.iter().map(|&id| stream.push(id)).collect();
        streamed += &stream.finish();
        assert_eq!(streamed, tok.decode(&plain), "{text:?} streamed");
    }
    assert!(
        failures.is_empty(),
        "{name}: {} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn smollm2_matches_llama_cpp() {
    check("smollm2");
}

#[test]
fn gemma3_matches_llama_cpp() {
    check("gemma3");
}

#[test]
fn qwen2_matches_llama_cpp() {
    check("qwen2");
}

fn check_chat(name: &str, expected: ChatTemplate) {
    let Some((tok, fx)) = load(name) else { return };
    let tmpl = tok.chat_template().unwrap();
    match (&tmpl, &expected) {
        (ChatTemplate::ChatMl { .. }, ChatTemplate::ChatMl { .. })
        | (ChatTemplate::Gemma, ChatTemplate::Gemma) => {}
        _ => panic!("{name}: detected {tmpl:?}"),
    }
    let chats = fx["chats"].as_array().unwrap();
    assert!(!chats.is_empty());
    for chat in chats {
        let messages: Vec<Message> = chat["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Message::new(m["role"].as_str().unwrap(), m["content"].as_str().unwrap()))
            .collect();
        let agp = chat["add_generation_prompt"].as_bool().unwrap();
        assert_eq!(
            tmpl.apply(&messages, agp),
            chat["prompt"].as_str().unwrap(),
            "{name}"
        );
    }
}

#[test]
fn chat_templates_match_jinja() {
    check_chat(
        "smollm2",
        ChatTemplate::ChatMl {
            default_system: None,
        },
    );
    check_chat(
        "qwen2",
        ChatTemplate::ChatMl {
            default_system: None,
        },
    );
    check_chat("gemma3", ChatTemplate::Gemma);
}

#[test]
fn gemma_folds_the_system_prompt_into_the_first_turn() {
    let msgs = [
        Message::new("system", "Be brief."),
        Message::new("user", "Hi"),
    ];
    assert_eq!(
        ChatTemplate::Gemma.apply(&msgs, true),
        "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\n"
    );
}

#[test]
fn stream_decoder_holds_back_split_chars() {
    let Some((tok, _)) = load("gemma3") else {
        return;
    };
    // Gemma spells chars it has no token for with byte tokens: feed them one by one.
    let text = "𓀀𓀁";
    let ids = tok.encode(text, false, false);
    assert!(ids.len() >= 2, "{ids:?}");
    let mut stream = tok.stream_decoder();
    let mut pieces = Vec::new();
    for &id in &ids {
        let p = stream.push(id);
        assert!(!p.contains('\u{fffd}'), "{p:?}");
        pieces.push(p);
    }
    assert_eq!(stream.finish(), "");
    assert_eq!(pieces.concat(), text);
    assert!(
        pieces.iter().filter(|p| p.is_empty()).count() > 0,
        "some tokens completed no char"
    );
    // An unfinished char comes out as U+FFFD at the end.
    let mut stream = tok.stream_decoder();
    let first = stream.push(ids[0]);
    assert_eq!(first, "");
    assert_eq!(stream.finish(), "\u{fffd}");
}

#[test]
fn encode_10kb_is_fast() {
    for name in ["smollm2", "gemma3", "qwen2"] {
        let Some((tok, fx)) = load(name) else { return };
        let para = fx["cases"].as_array().unwrap().last().unwrap()["text"]
            .as_str()
            .unwrap()
            .to_string();
        let mut text = String::new();
        while text.len() < 10_000 {
            text += &para;
            text += "日本語 😀 x = [1, 2, 3]\n<ul><li><unused>a</li><u>b</u></ul>\n";
        }
        text += &"a".repeat(2000); // one long word
        let _ = tok.encode(&text, true, true);
        let runs = 5;
        let start = std::time::Instant::now();
        for _ in 0..runs {
            std::hint::black_box(tok.encode(&text, true, true));
        }
        let per = start.elapsed() / runs;
        eprintln!("{name}: encode of {} bytes took {per:?}", text.len());
        // Generous for unoptimised test builds on a loaded 2-core machine.
        assert!(
            per.as_millis() < 50,
            "{name}: {per:?} for {} bytes",
            text.len()
        );
    }
}
