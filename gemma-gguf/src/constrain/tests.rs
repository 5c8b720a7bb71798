//! The constraint engine on a tiny vocabulary in Gemma's shape (specials, byte-fallback tokens,
//! multi-byte pieces). The real 262 144-token vocabulary and model are exercised in
//! `tests/tests/structured.rs`.

use super::*;
use crate::gguf::{GgufFile, GgufValue, GgufWriter};
use crate::sampler::SamplerParams;
use crate::tokenizer::keys;
use std::time::{Duration, Instant};

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const BYTE: i32 = 6;
const UNUSED: i32 = 5;

/// `<pad> <eos> <bos> <unk> <start_of_turn> <end_of_turn> <unused0>`, 256 byte tokens, then
/// pieces that span several characters, spaces as `▁`, and `é` (two bytes in UTF-8).
fn tokenizer() -> Tokenizer {
    let mut v: Vec<(String, i32)> = ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"]
        .iter()
        .map(|p| (p.to_string(), if *p == "<unk>" { 2 } else { CONTROL }))
        .collect();
    v.push(("<unused0>".into(), UNUSED));
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), BYTE)));
    for p in ["{\"", "\": ", "\"}", "▁a", "ab", "true", "false", "null", "▁", "é", "ée", "12", "\", \"", "name"] {
        v.push((p.to_string(), NORMAL));
    }
    let mut w = GgufWriter::from_writer(Vec::new());
    let kv: Vec<(&str, GgufValue)> = vec![
        (keys::MODEL, "llama".into()),
        (keys::TOKENS, v.iter().map(|e| e.0.clone()).collect::<Vec<_>>().into()),
        (keys::SCORES, v.iter().map(|_| 0.0f32).collect::<Vec<_>>().into()),
        (keys::TOKEN_TYPE, v.iter().map(|e| e.1).collect::<Vec<_>>().into()),
        (keys::BOS_ID, 2u32.into()),
        (keys::EOS_ID, 1u32.into()),
        (keys::UNK_ID, 3u32.into()),
        (keys::ADD_SPACE_PREFIX, false.into()),
    ];
    for (key, value) in kv {
        w.add_kv(key, value).unwrap();
    }
    Tokenizer::from_gguf(&GgufFile::from_bytes(w.finish().unwrap()).unwrap()).unwrap()
}

/// Generates under `spec` from random logits (a stand-in for a model) at temperature 1;
/// returns the text and whether it stopped because the constraint was complete or an end
/// token was drawn (not the budget).
fn generate(tok: &Tokenizer, spec: &ConstraintSpec, seed: u64, budget: usize) -> (String, bool) {
    let params = SamplerParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..SamplerParams::default() };
    generate_with(tok, spec, params, budget)
}

fn generate_with(tok: &Tokenizer, spec: &ConstraintSpec, params: SamplerParams, budget: usize) -> (String, bool) {
    let seed = params.seed;
    let engine = ConstraintEngine::new(tok).unwrap();
    let mut c = engine.compile(spec).unwrap();
    let mut sampler = Sampler::new(params).unwrap();
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut ids = Vec::new();
    for _ in 0..budget {
        let mut logits: Vec<f32> =
            (0..tok.vocab_size()).map(|_| (crate::sampler::splitmix64(&mut state) % 1000) as f32 / 250.0).collect();
        let t = c.sample(&mut sampler, &mut logits).unwrap();
        if tok.is_end_of_generation(t) {
            return (tok.decode(&ids), true);
        }
        ids.push(t);
        if c.accept(t).unwrap() == Progress::Complete {
            return (tok.decode(&ids), true);
        }
    }
    (tok.decode(&ids), false)
}

fn compile_err(spec: ConstraintSpec) -> ConstraintError {
    let tok = tokenizer();
    ConstraintEngine::new(&tok).unwrap().compile(&spec).unwrap_err()
}

#[test]
fn constraints_are_send() {
    fn send<T: Send>() {}
    fn send_sync<T: Send + Sync>() {}
    send::<Constraint>();
    send_sync::<ConstraintEngine>();
}

#[test]
fn json_schema_output_parses_and_fits() {
    let tok = tokenizer();
    let schema = json!({
        "type": "object",
        "properties": {
            "ok": {"type": "boolean"},
            "n": {"type": "integer", "minimum": 3, "maximum": 12},
            "tag": {"enum": ["ab", "é", "a b"]},
        },
        "required": ["ok", "n", "tag"],
        "additionalProperties": false,
    });
    for seed in 0..20 {
        let (text, done) = generate(&tok, &ConstraintSpec::JsonSchema(schema.clone()), seed, 200);
        assert!(done, "seed {seed}: not finished in 200 tokens: {text:?}");
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("seed {seed}: {text:?}: {e}"));
        let n = v["n"].as_i64().unwrap();
        assert!((3..=12).contains(&n), "{text}");
        assert!(["ab", "é", "a b"].contains(&v["tag"].as_str().unwrap()), "{text}");
        assert!(v["ok"].is_boolean(), "{text}");
        assert!(!text.contains("  ") && !text.contains('\n'), "compact layout: {text:?}");
    }
}

#[test]
fn byte_tokens_complete_a_character_and_specials_never_appear() {
    let tok = tokenizer();
    let engine = ConstraintEngine::new(&tok).unwrap();
    let mut c = engine.compile(&ConstraintSpec::Regex("é+".into())).unwrap();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    c.apply(&mut logits).unwrap();
    let allowed: Vec<&str> =
        (0..tok.vocab_size() as u32).filter(|&t| c.allows(t)).map(|t| tok.piece(t).unwrap()).collect();
    // "é" is C3 A9: the piece, the piece followed by "e"… no ("ée" has an "e"), or the first byte.
    assert_eq!(allowed, ["<0xC3>", "é"]);
    let c3 = tok.token_id("<0xC3>").unwrap();
    assert_eq!(c.accept(c3).unwrap(), Progress::Open);
    let mut logits = vec![0.0f32; tok.vocab_size()];
    c.apply(&mut logits).unwrap();
    let allowed: Vec<&str> =
        (0..tok.vocab_size() as u32).filter(|&t| c.allows(t)).map(|t| tok.piece(t).unwrap()).collect();
    assert_eq!(allowed, ["<0xA9>"]);
    assert_eq!(logits.iter().filter(|l| l.is_finite()).count(), 1);
    c.accept(tok.token_id("<0xA9>").unwrap()).unwrap();
    // Complete but extendable: the end tokens are allowed along with more "é".
    c.apply(&mut logits).unwrap();
    assert!(c.allows(tok.eos()) && c.allows(tok.end_of_turn().unwrap()));
    assert!(!c.allows(tok.bos()) && !c.allows(tok.token_id("<unused0>").unwrap()));
    assert!(c.is_accepting());
}

#[test]
fn a_finished_constraint_completes_without_an_end_token() {
    let tok = tokenizer();
    let engine = ConstraintEngine::new(&tok).unwrap();
    let mut c = engine.compile(&ConstraintSpec::Lark(r#"start: "ab" "12""#.into())).unwrap();
    let mut logits = vec![1.0f32; tok.vocab_size()];
    c.apply(&mut logits).unwrap();
    assert!(!c.allows(tok.eos()), "incomplete: no end token");
    assert_eq!(c.accept(tok.token_id("ab").unwrap()).unwrap(), Progress::Open);
    assert_eq!(c.accept(tok.token_id("12").unwrap()).unwrap(), Progress::Complete);
}

#[test]
fn all_samplers_draw_only_allowed_tokens() {
    let tok = tokenizer();
    let spec = ConstraintSpec::Regex("(true|false|null)".into());
    for params in [
        SamplerParams::greedy(),
        SamplerParams { temperature: 1.0, ..SamplerParams::default() },
        SamplerParams { temperature: 1.5, top_k: 3, top_p: 0.5, min_p: 0.2, ..SamplerParams::default() },
    ] {
        for seed in 0..10 {
            let (text, done) = generate_with(&tok, &spec, SamplerParams { seed, ..params }, 50);
            assert!(done && ["true", "false", "null"].contains(&text.as_str()), "{params:?}: {text:?}");
        }
    }
}

#[test]
fn nan_logits_still_give_an_allowed_token() {
    let tok = tokenizer();
    let engine = ConstraintEngine::new(&tok).unwrap();
    let mut c = engine.compile(&ConstraintSpec::Regex("ab".into())).unwrap();
    let mut sampler = Sampler::new(SamplerParams::default()).unwrap();
    let mut logits = vec![f32::NAN; tok.vocab_size()];
    let t = c.sample(&mut sampler, &mut logits).unwrap();
    assert!(c.allows(t), "{:?}", tok.piece(t));
}

#[test]
fn json_object_and_lark_with_json_inside() {
    let tok = tokenizer();
    for seed in 0..5 {
        let (text, _) = generate(&tok, &ConstraintSpec::JsonObject, seed, 400);
        if let Ok(v) = serde_json::from_str::<Value>(&text) {
            assert!(v.is_object(), "{text}");
        } else {
            assert!(text.starts_with('{'), "an object under way: {text:?}");
        }
    }
    let lark = r#"start: "name" %json {"type": "integer", "minimum": 1, "maximum": 9}"#;
    let (text, done) = generate(&tok, &ConstraintSpec::Lark(lark.into()), 1, 50);
    assert!(done && text.starts_with("name") && text[4..].parse::<u8>().is_ok_and(|n| (1..=9).contains(&n)), "{text}");
}

// Hostile constraints: each ends in a typed error, fast.

/// Compiles `spec` and checks it fails within `limit`.
fn fails_fast(spec: ConstraintSpec, limit: Duration) -> ConstraintError {
    let start = Instant::now();
    let e = compile_err(spec);
    assert!(start.elapsed() < limit, "took {:?}: {e}", start.elapsed());
    e
}

#[test]
fn an_oversized_source_is_refused_before_compiling() {
    let big = format!("start: {}", vec!["\"x\""; 100_000].join(" | "));
    assert!(matches!(fails_fast(ConstraintSpec::Lark(big), Duration::from_secs(1)), ConstraintError::TooLarge { .. }));
    let props: serde_json::Map<String, Value> =
        (0..20_000).map(|i| (format!("p{i}"), json!({"type": "string"}))).collect();
    let schema = json!({"type": "object", "properties": props});
    let e = fails_fast(ConstraintSpec::JsonSchema(schema), Duration::from_secs(1));
    assert!(matches!(e, ConstraintError::TooLarge { kind: "JSON schema", .. }), "{e}");
    let rx = "a".repeat(300_000);
    assert!(matches!(fails_fast(ConstraintSpec::Regex(rx), Duration::from_secs(1)), ConstraintError::TooLarge { .. }));
}

#[test]
fn a_deeply_nested_schema_is_refused() {
    let mut schema = json!({"type": "integer"});
    for _ in 0..100 {
        schema = json!({"type": "array", "items": schema});
    }
    let e = fails_fast(ConstraintSpec::JsonSchema(schema), Duration::from_secs(1));
    assert_eq!(e, ConstraintError::TooDeep { max: 64 });
}

#[test]
fn a_grammar_over_the_limits_is_refused_in_bounded_time() {
    let tok = tokenizer();
    let small = ConstraintLimits { max_grammar_size: 2000, ..ConstraintLimits::default() };
    let engine = ConstraintEngine::with_limits(&tok, small).unwrap();
    let names: Vec<String> = (0..3000).map(|i| format!("r{i}")).collect();
    let rules: String = names.iter().map(|r| format!("{r}: \"{r}\" \"x\"\n")).collect();
    let spec = ConstraintSpec::Lark(format!("start: {}\n{rules}", names.join(" | ")));
    let e = engine.compile(&spec).unwrap_err();
    assert!(matches!(&e, ConstraintError::Invalid { kind: "grammar", message } if message.contains("too big")), "{e}");
    // Deep nesting in a grammar and in a regex: an error, not a stack overflow.
    let deep = format!("start: {}\"x\"{}", "(".repeat(5000), ")".repeat(5000));
    assert!(matches!(fails_fast(ConstraintSpec::Lark(deep), Duration::from_secs(5)), ConstraintError::Invalid { .. }));
    let deep = format!("{}x{}", "(".repeat(5000), ")".repeat(5000));
    assert!(matches!(fails_fast(ConstraintSpec::Regex(deep), Duration::from_secs(5)), ConstraintError::Invalid { .. }));
}

#[test]
fn huge_repetition_counts_stay_cheap() {
    // llguidance expands neither counted repetitions nor a DFA eagerly: these compile at once
    // and each step stays small (2^40 DFA states for the last one if built naively).
    let tok = tokenizer();
    for spec in [
        ConstraintSpec::Lark(r#"start: "ab"{100000000}"#.into()),
        ConstraintSpec::Regex("(ab{1000}){1000}".into()),
        ConstraintSpec::Regex("(a|b)*a(a|b){40}".into()),
    ] {
        let start = Instant::now();
        let (text, _) = generate(&tok, &spec, 5, 60);
        assert!(text.bytes().all(|b| b == b'a' || b == b'b'), "{text}");
        assert!(start.elapsed() < Duration::from_secs(10), "{spec:?}: {:?}", start.elapsed());
    }
}

#[test]
fn invalid_constraints_are_named() {
    for (spec, kind) in [
        (ConstraintSpec::Lark("start: (".into()), "grammar"),
        (ConstraintSpec::Lark("start: missing_rule".into()), "grammar"),
        (ConstraintSpec::Regex("a(".into()), "regex"),
        (ConstraintSpec::JsonSchema(json!({"type": "no-such-type"})), "JSON schema"),
        (ConstraintSpec::JsonSchema(json!({"type": "integer", "minimum": 5, "maximum": 1})), "JSON schema"),
        (ConstraintSpec::JsonSchema(json!({"$ref": "#/$defs/missing"})), "JSON schema"),
        (ConstraintSpec::JsonSchema(json!(42)), "JSON schema"),
        (ConstraintSpec::JsonSchema(json!({"$ref": "#"})), "JSON schema"),
        (ConstraintSpec::Lark("start: start".into()), "grammar"),
    ] {
        match fails_fast(spec.clone(), Duration::from_secs(5)) {
            ConstraintError::Invalid { kind: k, message } => {
                assert_eq!(k, kind, "{spec:?}");
                assert!(!message.is_empty() && message.len() < 4096, "{spec:?}: {} bytes", message.len());
                assert!(!message.contains("<non-verbose/>"), "{message}");
            }
            e => panic!("{spec:?}: {e}"),
        }
    }
    assert!(ConstraintSpec::json_schema_str("{not json").is_err());
}

#[test]
fn a_recursive_schema_compiles_and_terminates() {
    let tok = tokenizer();
    let schema = json!({
        "$defs": {"node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/node"}}, "additionalProperties": false}},
        "$ref": "#/$defs/node",
    });
    let (text, _) = generate(&tok, &ConstraintSpec::JsonSchema(schema), 3, 100);
    assert!(text.starts_with('{'), "{text}");
}
