//! Gemma 4's native tool format against the official template (rendered by minijinja from the
//! fixture), its parser on whole and streamed replies, its errors, and its grammar compiled by
//! llguidance over a small vocabulary that has Gemma 4's tool tokens.

use super::*;
use crate::api::{parse_chat_with, Input};
use crate::tools::{format_for, parse_tools};
use gemma_gguf::constrain::{ConstraintEngine, Progress};
use gemma_gguf::gguf::{GgufFile, GgufValue, GgufWriter};
use gemma_gguf::tokenizer::{keys, Tokenizer};
use serde_json::json;

const TEMPLATE: &str = include_str!("../../../tests/data/tokenizer/gemma4_chat_template.jinja");
const Q: &str = STRING_DELIM;

/// Python's `str.split(sep)`, which the template's `strip_thinking` calls.
fn split_method(
    _: &minijinja::State<'_, '_>,
    value: &minijinja::Value,
    method: &str,
    args: &[minijinja::Value],
) -> Result<minijinja::Value, minijinja::Error> {
    match (value.as_str(), method, args) {
        (Some(s), "split", [sep]) => {
            let sep = sep.as_str().unwrap_or(" ");
            Ok(minijinja::Value::from(s.split(sep).map(minijinja::Value::from).collect::<Vec<_>>()))
        }
        _ => Err(minijinja::Error::from(minijinja::ErrorKind::UnknownMethod)),
    }
}

/// The official template's rendering, set up as transformers sets up Jinja.
fn official(messages: Value, tools: Option<Value>) -> String {
    let mut env = minijinja::Environment::new();
    env.set_trim_blocks(true);
    env.set_lstrip_blocks(true);
    env.set_unknown_method_callback(split_method);
    env.add_template("t", TEMPLATE).unwrap();
    let mut ctx = json!({"messages": messages, "bos_token": "<bos>", "add_generation_prompt": true});
    if let Some(t) = tools {
        ctx["tools"] = t;
    }
    env.get_template("t").unwrap().render(minijinja::Value::from_serialize(&ctx)).unwrap()
}

fn weather() -> Value {
    json!({"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
        "parameters": {"type": "object", "properties": {
            "city": {"type": "string", "description": "The city"},
            "days": {"type": "integer"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
        "required": ["city"]}}})
}

fn book() -> Value {
    json!({"type": "function", "function": {"name": "book", "parameters": {"type": "object", "properties": {
        "guest": {"type": "object", "description": "Who", "properties": {
            "name": {"type": "string"}, "age": {"type": "integer", "nullable": true}}, "required": ["name"]},
        "address": {"type": "object", "properties": {"zip": {"type": "string"}}},
        "nights": {"type": ["integer", "null"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "rooms": {"type": "array", "description": "Rooms", "items": {"type": "object",
            "properties": {"beds": {"type": "integer"}}, "required": ["beds"]}},
        "vip": {"type": "boolean"},
        "extras": {"type": "array", "items": {"type": "string", "enum": ["wifi", "parking"]}}},
        "required": ["guest", "nights"]}}})
}

fn ping() -> Value {
    json!({"type": "function", "function": {"name": "ping"}})
}

/// The tools as our parser keeps them, in the request's shape again: what the template gets.
fn as_template_tools(tools: &Tools) -> Value {
    let list: Vec<Value> = tools
        .tools
        .iter()
        .map(|t| {
            let mut f = json!({"name": t.name, "parameters": t.parameters});
            if let Some(d) = &t.description {
                f["description"] = json!(d);
            }
            json!({"type": "function", "function": f})
        })
        .collect();
    Value::Array(list)
}

fn ours(body: &Value) -> Vec<Piece> {
    match parse_chat_with(body.to_string().as_bytes(), &Gemma4Native).unwrap().input {
        Input::Pieces(p) => p,
        other => panic!("not the native prompt: {other:?}"),
    }
}

#[test]
fn declarations_equal_the_official_templates() {
    let system = json!({"role": "system", "content": "  Be brief. "});
    let user = json!({"role": "user", "content": "Weather in <|tool_call> Paris?"});
    let cases = [
        (vec![weather()], vec![user.clone()]),
        (vec![weather(), book(), ping()], vec![user.clone()]),
        (vec![book()], vec![system.clone(), user.clone()]),
        (vec![ping(), weather()], vec![system, user]),
    ];
    for (tools, messages) in cases {
        let body = json!({"messages": messages, "tools": tools});
        let pieces = ours(&body);
        let parsed = parse_tools(Some(&json!(tools)), None).unwrap().unwrap();
        let expected = official(json!(messages), Some(as_template_tools(&parsed)));
        println!("{expected}");
        assert_eq!(show(&pieces), expected);
        // The markup is made of tokens; the user's look-alike stays text.
        assert!(pieces.contains(&Piece::Special(TOOL_START.into())));
        assert!(pieces.iter().any(|p| matches!(p, Piece::Text(t) if t.contains("<|tool_call> Paris"))));
    }
}

#[test]
fn calls_and_results_equal_the_official_templates() {
    let call = |id: &str, args: &str| json!({"id": id, "type": "function", "function": {"name": "get_weather", "arguments": args}});
    let messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant", "content": null, "tool_calls": [call("c1", r#"{"city": "Paris", "days": 2}"#), call("c2", r#"{"city": "Rome"}"#)]},
        {"role": "tool", "tool_call_id": "c1", "content": r#"{"temp": 21.5, "sky": "sunny, \"warm\""}"#},
        {"role": "tool", "tool_call_id": "c2", "content": "rainy"},
        {"role": "assistant", "content": "Paris is sunny, Rome rainy."},
        {"role": "user", "content": "And Oslo?"},
        {"role": "assistant", "tool_calls": [call("c3", r#"{"unit": "celsius", "city": "Oslo"}"#)]},
        {"role": "tool", "name": "get_weather", "content": r#"{"temp": -3, "wind": [3, 4.5], "ok": true}"#},
    ]);
    // The same conversation in the template's shape: results folded into the calling turn.
    let args = |city: &str| json!({"city": city});
    let expected_messages = json!([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Rome?"},
        {"role": "assistant",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 2}}},
                        {"function": {"name": "get_weather", "arguments": args("Rome")}}],
         "tool_responses": [{"name": "get_weather", "response": {"temp": 21.5, "sky": "sunny, \"warm\""}},
                            {"name": "get_weather", "response": "rainy"}],
         "content": "Paris is sunny, Rome rainy."},
        {"role": "user", "content": "And Oslo?"},
        {"role": "assistant",
         "tool_calls": [{"function": {"name": "get_weather", "arguments": {"unit": "celsius", "city": "Oslo"}}}],
         "tool_responses": [{"name": "get_weather", "response": {"temp": -3, "wind": [3, 4.5], "ok": true}}]},
    ]);
    for tools in [None, Some(json!([weather()]))] {
        let mut body = json!({"messages": messages});
        if let Some(t) = &tools {
            body["tools"] = t.clone();
        }
        let pieces = ours(&body);
        let template_tools = tools.as_ref().map(|t| as_template_tools(&parse_tools(Some(t), None).unwrap().unwrap()));
        let expected = official(expected_messages.clone(), template_tools);
        println!("{expected}");
        assert_eq!(show(&pieces), expected);
        assert!(pieces.contains(&Piece::Special(TOOL_RESPONSE_START.into())));
        // The last result leaves the model's turn open: no new `<|turn>model`.
        assert!(show(&pieces).ends_with("<tool_response|><|channel>thought\n<channel|>"));
    }
    // The text forms of the trait agree.
    assert_eq!(
        Gemma4Native.render_call("f", r#"{"b": [1, "x"], "a": {"k": false}}"#),
        format!("{TOOL_CALL_START}call:f{{a:{{k:false}},b:[1,{Q}x{Q}]}}{TOOL_CALL_END}")
    );
    assert_eq!(
        Gemma4Native.render_result(Some("f"), "42"),
        format!("{TOOL_RESPONSE_START}response:f{{value:{Q}42{Q}}}{TOOL_RESPONSE_END}")
    );
}

#[test]
fn a_past_call_with_arguments_that_are_not_an_object_is_a_400() {
    let body = json!({"messages": [{"role": "user", "content": "x"},
        {"role": "assistant", "tool_calls": [{"id": "a", "type": "function", "function": {"name": "f", "arguments": "[1"}}]}]});
    match parse_chat_with(body.to_string().as_bytes(), &Gemma4Native) {
        Err(ApiError::BadRequest { param, .. }) => {
            assert_eq!(param.as_deref(), Some("messages[1].tool_calls[0].function.arguments"))
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn plain_chats_are_left_to_the_chat_format() {
    let body = json!({"messages": [{"role": "user", "content": "Hi"}]});
    let r = parse_chat_with(body.to_string().as_bytes(), &Gemma4Native).unwrap();
    assert!(matches!(r.input, Input::Chat(_)));
}

fn tools(list: Value, choice: Option<Value>) -> Tools {
    parse_tools(Some(&list), choice.as_ref()).unwrap().unwrap()
}

/// Content and (name, arguments) of every call, from deltas.
fn collect(deltas: &[Delta]) -> (String, Vec<(String, String)>) {
    let (mut content, mut calls) = (String::new(), Vec::<(String, String)>::new());
    for d in deltas {
        match d {
            Delta::Content(t) => content.push_str(t),
            Delta::CallStart { index, name, .. } => {
                assert_eq!(*index, calls.len());
                calls.push((name.clone(), String::new()));
            }
            Delta::Arguments { index, text } => calls[*index].1.push_str(text),
        }
    }
    (content, calls)
}

type Parsed = (String, Vec<(String, String)>, bool);

fn run(t: &Tools, pieces: &[&str], finish: Finish) -> Result<Parsed, ApiError> {
    let mut p = Gemma4Native.parser(t);
    let mut all = Vec::new();
    for s in pieces {
        all.extend(p.push(s));
    }
    all.extend(p.finish(finish)?);
    let (content, calls) = collect(&all);
    Ok((content, calls, p.called()))
}

/// `reply` whole, split at every character boundary, and one character at a time.
fn every_split(t: &Tools, reply: &str, finish: Finish) -> Result<Parsed, ApiError> {
    let whole = run(t, &[reply], finish);
    for (i, _) in reply.char_indices() {
        assert_eq!(run(t, &[&reply[..i], &reply[i..]], finish), whole, "split at {i}");
    }
    let chars: Vec<String> = reply.chars().map(String::from).collect();
    let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
    assert_eq!(run(t, &chars, finish), whole, "one character at a time");
    whole
}

#[test]
fn replies_parse_the_same_whole_and_streamed() {
    let t = tools(json!([weather(), book()]), None);
    let reply = format!(
        "Let me check: é <|tool {TOOL_CALL_START}call:get_weather{{city:{Q}Paris, \"FR\" {{x:1}}{Q},days:3,unit:{Q}celsius{Q}}}{TOOL_CALL_END}"
    );
    let (content, calls, called) = every_split(&t, &reply, Finish::Stop).unwrap();
    assert_eq!(content, "Let me check: é <|tool ");
    assert_eq!(
        calls,
        [("get_weather".to_string(), r#"{"city":"Paris, \"FR\" {x:1}","days":3,"unit":"celsius"}"#.to_string())]
    );
    assert!(called);

    let two = format!(
        "{TOOL_CALL_START}call:get_weather{{city:{Q}Oslo{Q}}}{TOOL_CALL_END}{TOOL_CALL_START}call:book{{guest:{{name:{Q}Ann{Q}}},nights:None}}{TOOL_CALL_END}"
    );
    let (_, calls, _) = every_split(&t, &two, Finish::Stop).unwrap();
    assert_eq!(calls[1], ("book".to_string(), r#"{"guest":{"name":"Ann"},"nights":null}"#.to_string()));

    // Text that only looks like the start of a call comes out whole at the end.
    let (content, calls, called) = every_split(&t, "a < b <|tool_c", Finish::Stop).unwrap();
    assert_eq!((content.as_str(), calls.len(), called), ("a < b <|tool_c", 0, false));
}

#[test]
fn the_name_goes_out_before_the_arguments_are_complete() {
    let t = tools(json!([weather()]), None);
    let mut p = Gemma4Native.parser(&t);
    assert_eq!(p.push("Hi <|tool"), [Delta::Content("Hi ".into())]);
    assert_eq!(p.push("_call>call:get_wea"), []);
    let d = p.push("ther{city:");
    assert!(matches!(&d[..], [Delta::CallStart { index: 0, name, .. }] if name == "get_weather"), "{d:?}");
    assert!(p.called());
}

/// One case per defect: each the error of its kind, a 422, never text.
#[test]
fn malformed_and_partial_calls_are_errors() {
    let auto = tools(json!([weather()]), None);
    let required = tools(json!([weather()]), Some(json!("required")));
    let named = tools(json!([weather(), ping()]), Some(json!({"type": "function", "function": {"name": "ping"}})));
    let c = |body: &str| format!("{TOOL_CALL_START}{body}{TOOL_CALL_END}");
    let cases: Vec<(&str, &Tools, String, Finish, &str)> = vec![
        (
            "cut in the arguments",
            &auto,
            format!("{TOOL_CALL_START}call:get_weather{{city:{Q}Par"),
            Finish::Length,
            "tool_call_incomplete",
        ),
        ("cut in the name", &auto, format!("x{TOOL_CALL_START}call:get_wea"), Finish::Length, "tool_call_incomplete"),
        ("stopped inside", &auto, format!("{TOOL_CALL_START}call:get_weather{{"), Finish::Stop, "tool_call_incomplete"),
        ("no call in required", &required, "It is sunny.".into(), Finish::Stop, "tool_call_incomplete"),
        ("empty reply in required", &required, String::new(), Finish::Length, "tool_call_incomplete"),
        ("bare word", &auto, c("call:get_weather{city:Paris}"), Finish::Stop, "tool_call_invalid"),
        ("no call: prefix", &auto, c(&format!("get_weather{{city:{Q}P{Q}}}")), Finish::Stop, "tool_call_invalid"),
        ("no brace", &auto, c("call:get_weather"), Finish::Stop, "tool_call_invalid"),
        ("unclosed object", &auto, c(&format!("call:get_weather{{city:{Q}P{Q}")), Finish::Stop, "tool_call_invalid"),
        ("unknown function", &auto, c("call:get_time{}"), Finish::Stop, "tool_call_invalid"),
        (
            "not the named function",
            &named,
            c(&format!("call:get_weather{{city:{Q}P{Q}}}")),
            Finish::Stop,
            "tool_call_invalid",
        ),
        ("missing required", &auto, c("call:get_weather{days:3}"), Finish::Stop, "tool_call_invalid"),
        ("wrong type", &auto, c("call:get_weather{city:3}"), Finish::Stop, "tool_call_invalid"),
        (
            "not in the enum",
            &auto,
            c(&format!("call:get_weather{{city:{Q}P{Q},unit:{Q}kelvin{Q}}}")),
            Finish::Stop,
            "tool_call_invalid",
        ),
        (
            "integer expected",
            &auto,
            c(&format!("call:get_weather{{city:{Q}P{Q},days:2.5}}")),
            Finish::Stop,
            "tool_call_invalid",
        ),
    ];
    for (name, t, reply, finish, kind) in cases {
        let e = run(t, &[&reply], finish).unwrap_err();
        println!("{name}: {}", e.message());
        assert_eq!(e.kind(), kind, "{name}: {e:?}");
        assert_eq!(e.status().as_u16(), 422, "{name}");
        // Streamed, the same error.
        let chars: Vec<String> = reply.chars().map(String::from).collect();
        let chars: Vec<&str> = chars.iter().map(String::as_str).collect();
        assert_eq!(run(t, &chars, finish).unwrap_err().kind(), kind, "{name}, streamed");
    }
}

#[test]
fn gemma4_gets_the_native_format_and_gemma3_keeps_json() {
    let t = tools(json!([weather()]), None);
    let history = [HistoryMessage {
        role: Role::User,
        tool: false,
        content: Some("Hi".into()),
        calls: Vec::new(),
        name: None,
        tool_call_id: None,
    }];
    let g4 = format_for("gemma4").prompt(&history, Some(&t)).unwrap().expect("Gemma 4 writes the prompt");
    assert!(show(&g4).contains("<|tool>declaration:get_weather{"));
    assert_eq!(format_for("gemma4").constraint(&t).unwrap(), None);
    for arch in ["gemma3", "gemma2", "gemma"] {
        assert_eq!(format_for(arch).prompt(&history, Some(&t)).unwrap(), None);
        assert!(
            matches!(format_for(arch).constraint(&t).unwrap(), Some(ConstraintSpec::Lark(g)) if g.contains("\\\"name\\\""))
        );
    }
}

const NORMAL: i32 = 1;
const CONTROL: i32 = 3;
const USER_DEFINED: i32 = 4;
const BYTE: i32 = 6;

/// A small vocabulary with Gemma 4's turn and tool tokens typed as llama.cpp's converter
/// types them, byte fallback, and a few multi-character pieces.
fn tokenizer() -> Tokenizer {
    let mut v: Vec<(String, i32)> = ["<pad>", "<eos>", "<bos>", "<unk>", "<|turn>", "<turn|>", TOOL_RESPONSE_START]
        .iter()
        .map(|p| (p.to_string(), if *p == "<unk>" { 2 } else { CONTROL }))
        .collect();
    for p in [TOOL_CALL_START, TOOL_CALL_END, STRING_DELIM, TOOL_START, TOOL_END, TOOL_RESPONSE_END] {
        v.push((p.to_string(), USER_DEFINED));
    }
    v.extend((0..=255u8).map(|b| (format!("<0x{b:02X}>"), BYTE)));
    for p in ["▁", "call", ":", "get_weather", "city", "{", "}", "Paris", "days", "ab", "book"] {
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

/// Feeds `text`'s tokens through the constraint: `Ok` when every token is allowed and the
/// call is then complete, else the byte offset of the first refused token.
fn follows(engine: &ConstraintEngine, tok: &Tokenizer, spec: &ConstraintSpec, text: &str) -> Result<(), String> {
    let mut c = engine.compile(spec).unwrap();
    let mut logits = vec![0.0f32; tok.vocab_size()];
    let mut done = String::new();
    let mut progress = Progress::Open;
    for id in tok.encode(text, false) {
        logits.iter_mut().for_each(|l| *l = 0.0);
        c.apply(&mut logits).unwrap();
        if !c.allows(id) {
            return Err(format!("refused {:?} after {done:?}", tok.piece(id)));
        }
        progress = c.accept(id).unwrap();
        done.push_str(&String::from_utf8_lossy(&tok.token_bytes(id)));
    }
    match progress {
        Progress::Complete => Ok(()),
        Progress::Open => Err(format!("incomplete after {done:?}")),
    }
}

#[test]
fn the_grammar_admits_exactly_well_formed_calls() {
    let tok = tokenizer();
    let engine = ConstraintEngine::new(&tok).unwrap();
    let t = tools(json!([weather(), book()]), Some(json!("required")));
    let spec = Gemma4Native.constraint(&t).unwrap().expect("required calls are constrained");
    if let ConstraintSpec::Lark(g) = &spec {
        println!("{g}");
    }
    let c = |body: &str| format!("{TOOL_CALL_START}{body}{TOOL_CALL_END}");
    let good = [
        c(&format!("call:get_weather{{city:{Q}Paris{Q}}}")),
        c(&format!("call:get_weather{{city:{Q}a{Q},days:-3,unit:{Q}celsius{Q}}}")),
        c(&format!("call:get_weather{{city:{Q}a<|b \"|> {{x:1}}<|\"|<{Q},unit:{Q}fahrenheit{Q}}}")),
        c(&format!("call:get_weather{{city:{Q}{Q}}}")),
        c(&format!(
            "call:book{{address:{{zip:{Q}1{Q}}},extras:[{Q}wifi{Q},{Q}parking{Q}],guest:{{age:30,name:{Q}Ann{Q}}},nights:null,rooms:[{{beds:2}}],tags:[],vip:true}}"
        )),
        c(&format!("call:book{{guest:{{name:{Q}B{Q}}},nights:4}}")),
    ];
    for text in &good {
        follows(&engine, &tok, &spec, text).unwrap_or_else(|e| panic!("{text}: {e}"));
        // And what the grammar admits, the parser takes as a valid call.
        let (_, calls, _) = run(&t, &[text], Finish::Stop).unwrap_or_else(|e| panic!("{text}: {e:?}"));
        assert_eq!(calls.len(), 1);
    }
    let bad = [
        ("missing required", c("call:get_weather{days:3}")),
        ("bare string", c("call:get_weather{city:Paris}")),
        ("not in the enum", c(&format!("call:get_weather{{city:{Q}a{Q},unit:{Q}kelvin{Q}}}"))),
        ("integer expected", c(&format!("call:get_weather{{city:{Q}a{Q},days:1.5}}"))),
        ("unknown key", c(&format!("call:get_weather{{city:{Q}a{Q},zzz:1}}"))),
        ("unknown function", c("call:get_time{}")),
        ("text first", format!("Sure{}", c(&format!("call:get_weather{{city:{Q}a{Q}}}")))),
        ("nested required", c("call:book{guest:{age:1},nights:1}")),
        ("null not allowed", c("call:book{guest:{name:null},nights:1}")),
        ("space", c(&format!("call:get_weather{{ city:{Q}a{Q}}}"))),
        ("delimiter inside a string", c(&format!("call:get_weather{{city:{Q}a{Q}b{Q}}}"))),
    ];
    for (name, text) in &bad {
        let e = follows(&engine, &tok, &spec, text).unwrap_err();
        println!("{name}: {e}");
    }
    // A named function: only it.
    let named = tools(json!([weather(), book()]), Some(json!({"type": "function", "function": {"name": "book"}})));
    let spec = Gemma4Native.constraint(&named).unwrap().unwrap();
    assert!(follows(&engine, &tok, &spec, &good[0]).is_err());
    follows(&engine, &tok, &spec, &good[5]).unwrap();
}
