//! Structured output on the real 270M model: 50 varied JSON Schemas (nested objects and arrays,
//! enums, integer and number ranges, `multipleOf`, required and optional properties, string
//! lengths, patterns and formats, `anyOf`, `const`), each sampled at temperature 1 with and
//! without the constraint. Every output is checked by an independent validator, the Python
//! `jsonschema` package (Draft 2020-12 with its format checker): all constrained outputs must
//! parse and validate; the share of unconstrained ones that do is measured and printed.
use gemma_gguf::chat::{encode_pieces, format, Message};
use gemma_gguf::constrain::{ConstraintEngine, ConstraintSpec};
use gemma_gguf::generate::{generate_constrained, StopReason};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{Session, SessionOptions};
use serde_json::{json, Value};
use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Instant;

/// Token budgets: the schemas are small enough that a constrained answer ends well before.
const CONSTRAINED_MAX: usize = 96;
const FREE_MAX: usize = 32;

/// The property kinds the schemas are made of.
fn kinds() -> Vec<Value> {
    let int = |lo: i64, hi: i64| json!({"type": "integer", "minimum": lo, "maximum": hi});
    vec![
        int(0, 120),
        int(-50, 50),
        json!({"type": "number", "minimum": 0, "maximum": 1}),
        json!({"type": "number", "minimum": -10, "maximum": 10, "multipleOf": 0.5}),
        json!({"type": "boolean"}),
        json!({"enum": ["red", "green", "blue"]}),
        json!({"type": "string", "minLength": 1, "maxLength": 12}),
        json!({"type": "string", "pattern": "^[A-Z]{2}[0-9]{3}$"}),
        json!({"type": "string", "format": "date"}),
        json!({"type": "string", "format": "email", "maxLength": 40}),
        json!({"type": "string", "format": "uuid"}),
        json!({"type": "string", "format": "ipv4"}),
        json!({"type": "array", "items": int(0, 99), "minItems": 1, "maxItems": 4}),
        json!({"type": "array", "items": {"enum": ["a", "b", "c"]}, "maxItems": 3}),
        json!({"type": "object", "properties": {"x": int(0, 9), "label": {"type": "string", "maxLength": 8}},
               "required": ["x"], "additionalProperties": false}),
        json!({"type": "array", "maxItems": 3, "items": {"type": "object", "properties": {
               "id": int(1, 999), "ok": {"type": "boolean"}}, "required": ["id", "ok"], "additionalProperties": false}}),
        json!({"type": "array", "maxItems": 3, "items": {"type": "array", "items": int(0, 9), "maxItems": 3}}),
        json!({"anyOf": [int(0, 9), {"type": "null"}]}),
        json!({"const": "v1"}),
        json!({"type": "object", "properties": {"inner": {"type": "object", "properties": {
               "depth": int(2, 3), "tags": {"type": "array", "items": {"type": "string", "maxLength": 6}, "maxItems": 2}},
               "required": ["depth", "tags"], "additionalProperties": false}}, "required": ["inner"],
               "additionalProperties": false}),
    ]
}

const NAMES: [&str; 12] =
    ["name", "age", "score", "colour", "code", "when", "email", "id", "items", "point", "active", "notes"];

/// Schema `i` of 50: 2 to 4 properties of rotating kinds, some required, some optional; every
/// tenth one is a top-level array or enum instead.
fn schema(i: usize) -> Value {
    let kinds = kinds();
    if i % 10 == 9 {
        return match i / 10 % 2 {
            0 => json!({"type": "array", "items": kinds[(i * 7) % kinds.len()], "minItems": 1, "maxItems": 3}),
            _ => json!({"enum": ["yes", "no", "maybe", 1, null]}),
        };
    }
    let n = 2 + i % 3;
    let mut props = serde_json::Map::new();
    let mut required = Vec::new();
    for k in 0..n {
        let name = NAMES[(i + 5 * k) % NAMES.len()];
        if props.contains_key(name) {
            continue;
        }
        props.insert(name.to_string(), kinds[(i * 3 + k * 11) % kinds.len()].clone());
        // The last property of every third schema is optional.
        if !(i.is_multiple_of(3) && k == n - 1) {
            required.push(name);
        }
    }
    json!({"type": "object", "properties": props, "required": required, "additionalProperties": false})
}

/// One reply under `constraint` (or free), sampled at temperature 1 with `seed`. A session
/// that holds the prompt already (the other reply's) keeps it but for its last token.
fn reply(
    session: &mut Session<'_>,
    prompt: &[u32],
    engine: Option<(&ConstraintEngine, &ConstraintSpec)>,
    seed: u64,
) -> (String, StopReason) {
    let keep = prompt.len() - 1;
    let prompt = if session.n_past() as usize > keep && session.truncate_seq(0, keep as u32) {
        &prompt[keep..]
    } else {
        session.reset();
        prompt
    };
    let params = SamplerParams { temperature: 1.0, top_k: 0, top_p: 1.0, min_p: 0.0, seed, ..SamplerParams::default() };
    let mut sampler = Sampler::new(params).unwrap();
    let mut constraint = engine.map(|(e, s)| e.compile(s).unwrap());
    let max = if constraint.is_some() { CONSTRAINED_MAX } else { FREE_MAX };
    let mut text = String::new();
    let out = generate_constrained(
        session,
        &mut sampler,
        constraint.as_mut(),
        prompt,
        max,
        |_, _| {},
        |t| {
            text.push_str(t);
            true
        },
    )
    .unwrap();
    (text, out.stop)
}

/// Validates every (schema, text) pair with Python's jsonschema; one "ok" or error line each.
fn validate(py: &std::path::Path, cases: &[(Value, String)]) -> Vec<Result<(), String>> {
    const SCRIPT: &str = r#"
import json, sys
from jsonschema import Draft202012Validator
for line in sys.stdin:
    case = json.loads(line)
    try:
        value = json.loads(case["text"])
    except ValueError as e:
        print(json.dumps("not JSON: " + str(e))); continue
    v = Draft202012Validator(case["schema"], format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = [e.message for e in v.iter_errors(value)]
    print(json.dumps("; ".join(errors) if errors else "ok"))
"#;
    let mut child = Command::new(py)
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("running python");
    let mut stdin = child.stdin.take().unwrap();
    for (schema, text) in cases {
        writeln!(stdin, "{}", json!({"schema": schema, "text": text})).unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "the validator failed");
    let lines: Vec<Result<(), String>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| match serde_json::from_str::<String>(l).unwrap().as_str() {
            "ok" => Ok(()),
            e => Err(e.to_string()),
        })
        .collect();
    assert_eq!(lines.len(), cases.len());
    lines
}

fn python_with_jsonschema() -> Option<std::path::PathBuf> {
    let py = gemma_tests::python()
        .filter(|p| Command::new(p).args(["-c", "import jsonschema"]).status().is_ok_and(|s| s.success()));
    if py.is_none() {
        assert!(
            !gemma_tests::in_ci(),
            "CI=true: no Python with jsonschema (scripts/venv.sh -r scripts/requirements.txt)"
        );
        eprintln!("notice: no Python with jsonschema (.venv or $GEMMA_PYTHON); skipping");
    }
    py
}

#[test]
fn fifty_schemas_at_temperature_one_all_validate_under_the_constraint() {
    let Some(path) = gemma_tests::test_model() else { return };
    let Some(py) = python_with_jsonschema() else { return };
    let model = Model::load(&path, &LoadOptions { threads: Some(1), ..LoadOptions::default() }).unwrap();
    let tok = model.tokenizer();
    let start = Instant::now();
    let engine = ConstraintEngine::new(tok).unwrap();
    println!("constraint engine for {} tokens: {:.2} s", tok.vocab_size(), start.elapsed().as_secs_f64());
    let mut session = Session::new(&model, SessionOptions { n_ctx: 1024, ..SessionOptions::default() }).unwrap();
    let (mut constrained, mut free) = (Vec::new(), Vec::new());
    let start = Instant::now();
    for i in 0..50 {
        let schema = schema(i);
        let ask = format!("Reply with only a JSON value that matches this JSON Schema:\n{schema}");
        let prompt = encode_pieces(&format(&[Message::user(ask)], true).unwrap(), tok).unwrap();
        let spec = ConstraintSpec::JsonSchema(schema.clone());
        session.reset();
        let (text, stop) = reply(&mut session, &prompt, Some((&engine, &spec)), i as u64);
        assert!(matches!(stop, StopReason::EndOfGeneration(_)), "schema {i}: {stop} after {text:?}");
        constrained.push((schema.clone(), text));
        let (text, _) = reply(&mut session, &prompt, None, i as u64);
        free.push((schema, text));
    }
    println!("generation: {:.1} s", start.elapsed().as_secs_f64());
    let checked = validate(&py, &constrained);
    let bad: Vec<String> = checked
        .iter()
        .zip(&constrained)
        .enumerate()
        .filter_map(|(i, (r, (s, t)))| r.as_ref().err().map(|e| format!("schema {i} {s}: {t:?}: {e}")))
        .collect();
    let free_checked = validate(&py, &free);
    let free_ok = free_checked.iter().filter(|r| r.is_ok()).count();
    for (i, ((_, text), r)) in constrained.iter().zip(&checked).enumerate().take(5) {
        println!("constrained {i}: {text} ({})", if r.is_ok() { "valid" } else { "INVALID" });
    }
    for ((_, text), r) in free.iter().zip(&free_checked).take(3) {
        println!("free: {text:?}: {}", r.as_ref().err().map_or("valid", String::as_str));
    }
    println!(
        "valid: constrained {}/50 ({}%), unconstrained {free_ok}/50 ({}%; {} fail)",
        50 - bad.len(),
        2 * (50 - bad.len()),
        2 * free_ok,
        50 - free_ok
    );
    assert!(bad.is_empty(), "constrained outputs that do not validate:\n{}", bad.join("\n"));
    assert!(free_ok < 50, "every unconstrained output validated: the test would not see a broken mask");
}
