//! `gemma serve`'s structured output and tool calls on the real 270M model: the official
//! `openai` client end to end (scripts/serve_tools_check.py: calls whole and streamed, their
//! arguments validated with `jsonschema`, a follow-up turn, a call cut by max_tokens, both
//! response formats), and hostile constraints answered with a 400 in bounded time.
use gemma_tests::serve::{python_with_openai, setup, ServeProcess};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

#[test]
fn tool_calls_and_response_formats_through_the_openai_client() {
    let Some((_one, path)) = setup() else { return };
    let Some(py) = python_with_openai() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "1024"]);
    let script = gemma_tests::workspace_root().join("scripts/serve_tools_check.py");
    let out = Command::new(&py).arg(&script).arg(format!("http://{}/v1", server.addr)).output().unwrap();
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stderr), server.log.lock().unwrap());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{}", serde_json::to_string_pretty(&r).unwrap());
    for case in ["required", "named", "required_stream"] {
        assert_eq!(r[case]["finish_reason"], "tool_calls", "{case}");
        assert_eq!(r[case]["calls"].as_array().map(Vec::len), Some(1), "{case}");
    }
    assert_eq!(r["named"]["calls"][0]["name"], "get_time");
    assert!(r["required"]["content"].is_null());
    assert!(r["required_stream"]["tool_chunks"].as_u64().unwrap() >= 2, "arguments arrive in several chunks");
    // auto: a call or text, never both; none: text.
    let auto = &r["auto"];
    assert!(auto["finish_reason"] == "tool_calls" || auto["calls"].as_array().unwrap().is_empty(), "{auto}");
    assert!(r["none"]["calls"].as_array().unwrap().is_empty());
    for case in ["cut", "cut_stream"] {
        assert_eq!(r[case]["code"], "tool_call_incomplete", "{case}: {}", r[case]);
    }
    assert_eq!(r["cut"]["status"], 422);
    assert_eq!(r["json_schema"]["finish_reason"], "stop");
    assert!(r["json_object"]["content"].as_str().unwrap().starts_with('{'));
    assert_eq!(r["bad_schema"]["status"], 400);
    assert_eq!(r["bad_tool"]["status"], 400);
}

/// A 400 naming `param`, answered within `limit`.
fn refused(server: &ServeProcess, body: &Value, param: &str, limit: Duration) -> String {
    let start = Instant::now();
    let reply = server.post("/v1/chat/completions", body);
    let took = start.elapsed();
    assert_eq!(reply.status, 400, "{}", reply.body);
    let v = reply.json();
    assert!(took < limit, "{param}: {took:?}");
    let message = v["error"]["message"].as_str().unwrap_or_default().to_string();
    if !param.is_empty() {
        assert_eq!(v["error"]["param"], param, "{v}");
    }
    assert!(message.len() < 4096, "a short message: {} bytes", message.len());
    message
}

#[test]
fn hostile_schemas_and_tools_get_a_400_in_bounded_time() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256"]);
    let ask = json!([{"role": "user", "content": "hi"}]);
    let with_schema = |schema: Value| {
        json!({"messages": ask, "max_tokens": 4,
               "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}})
    };
    let limit = Duration::from_secs(10);
    // Huge: 300 KiB of properties (under the 1 MiB body limit, over the 256 KiB schema limit).
    let props: serde_json::Map<String, Value> =
        (0..12_000).map(|i| (format!("property_{i}"), json!({"type": "string"}))).collect();
    let m = refused(&server, &with_schema(json!({"type": "object", "properties": props})), "response_format", limit);
    assert!(m.contains("at most"), "{m}");
    // Deep: 100 nested arrays (the body parser allows 128 levels; the schema limit is 64).
    let mut deep = json!({"type": "integer"});
    for _ in 0..100 {
        deep = json!({"type": "array", "items": deep});
    }
    let m = refused(&server, &with_schema(deep), "response_format", limit);
    assert!(m.contains("nested"), "{m}");
    // Deeper than the JSON parser's own limit: an invalid body.
    let body = format!(r#"{{"messages": [], "x": {}{}}}"#, "[".repeat(100_000), "]".repeat(100_000));
    let reply = gemma_tests::serve::request(
        server.addr,
        "POST",
        "/v1/chat/completions",
        &[("Content-Type", "application/json")],
        body.as_bytes(),
    );
    assert_eq!(reply.status, 400);
    // Recursive $ref cycles that never produce a value, and invalid schemas.
    refused(&server, &with_schema(json!({"$ref": "#"})), "response_format", limit);
    refused(&server, &with_schema(json!({"type": "integer", "minimum": 9, "maximum": 1})), "response_format", limit);
    refused(&server, &with_schema(json!({"$ref": "#/$defs/nowhere"})), "response_format", limit);
    refused(&server, &json!({"messages": ask, "response_format": {"type": "yaml"}}), "response_format.type", limit);
    // Tools: a bad parameters schema names the tool; tool_choice of an unknown function.
    let tool = |params: Value| json!({"type": "function", "function": {"name": "f", "parameters": params}});
    refused(&server, &json!({"messages": ask, "tools": [tool(json!({"type": "nope"}))]}), "tools", limit);
    refused(
        &server,
        &json!({"messages": ask, "tools": [tool(json!({}))], "tool_choice": {"type": "function", "function": {"name": "g"}}}),
        "tool_choice",
        limit,
    );
    refused(
        &server,
        &json!({"messages": ask, "tools": [tool(json!({}))], "response_format": {"type": "json_object"}}),
        "response_format",
        limit,
    );
    let reply = server.post("/v1/completions", &json!({"prompt": "x", "tools": [tool(json!({}))]}));
    assert_eq!(reply.status, 400);
    // The server still answers afterwards.
    let ok = server.post("/v1/chat/completions", &json!({"messages": ask, "max_tokens": 2}));
    assert_eq!(ok.status, 200);
}

/// A tiny random `gemma4` file whose vocabulary has Gemma 4's turn and tool tokens (in place of
/// its last two-letter words, so every tensor keeps its shape), typed as llama.cpp's converter
/// types them: a request with tools goes through the native format, and a required call comes
/// back whole and streamed.
#[test]
fn a_gemma4_model_answers_tools_in_its_native_format() {
    use gemma_gguf::chat::encode_pieces;
    use gemma_gguf::gguf::GgufFile;
    use gemma_gguf::names::tokenizer as keys;
    use gemma_gguf::tokenizer::Tokenizer;
    use gemma_server::api::{parse_chat_with, Input};
    use gemma_server::tools::format_for;
    use gemma_tests::tiny_model::{vocabulary, vocabulary_for, TinyArch, TinyConfig, TinyModel};

    let dir = tempfile::tempdir().unwrap();
    let (control, user_defined) = (3, 4);
    let gemma4_tokens = [
        ("<|turn>", control),
        ("<turn|>", control),
        ("<|tool_response>", control),
        ("<|channel>", user_defined),
        ("<channel|>", user_defined),
        ("<|tool>", user_defined),
        ("<tool|>", user_defined),
        ("<|tool_call>", user_defined),
        ("<tool_call|>", user_defined),
        ("<|\"|>", user_defined),
        ("<tool_response|>", user_defined),
    ];
    // The gemma4 file's vocabulary ends with its turn and channel tokens; the other tool
    // tokens take the places of words before the last three (".", ",", "\n") and those.
    let mut vocab = vocabulary_for(TinyArch::Gemma4);
    let missing: Vec<_> = gemma4_tokens.iter().filter(|(p, _)| !vocab.iter().any(|v| v.0 == *p)).collect();
    let shared = vocabulary().len();
    let at = shared - 3 - missing.len();
    for (slot, &&(piece, ty)) in vocab[at..shared - 3].iter_mut().zip(&missing) {
        *slot = (piece.to_string(), 0.0, ty);
    }
    let mut model = TinyModel::new(TinyConfig { n_ctx_train: 1024, ..TinyConfig::gemma4() });
    model.set(keys::TOKENS, vocab.iter().map(|v| v.0.clone()).collect::<Vec<_>>());
    model.set(keys::TOKEN_TYPE, vocab.iter().map(|v| v.2).collect::<Vec<_>>());
    let path = model.write(&dir.path().join("tiny-gemma4-tools.gguf")).unwrap();

    let server = ServeProcess::start(&gemma(), &path, &["-c", "512"]);
    let tools = json!([{"type": "function", "function": {"name": "set_unit", "description": "Sets the unit",
        "parameters": {"type": "object", "properties": {"unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["unit"]}}}]);
    let body = json!({"messages": [{"role": "user", "content": "Which unit?"}], "tools": tools,
        "tool_choice": "required", "max_tokens": 64, "temperature": 0});
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}\n{}", r.body, server.log.lock().unwrap());
    let v = r.json();
    println!("{}", serde_json::to_string_pretty(&v).unwrap());
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    let call = &v["choices"][0]["message"]["tool_calls"][0]["function"];
    assert_eq!(call["name"], "set_unit");
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert!(args == json!({"unit": "c"}) || args == json!({"unit": "f"}), "{args}");

    // The prompt fed is the native one (Gemma 4's declarations in the system turn): the
    // server counts its tokens.
    let tok = Tokenizer::from_gguf(&GgufFile::open(&path).unwrap()).unwrap();
    let native = match parse_chat_with(body.to_string().as_bytes(), format_for("gemma4")).unwrap().input {
        Input::Pieces(p) => p,
        other => panic!("{other:?}"),
    };
    let text: String = native
        .iter()
        .map(|p| match p {
            gemma_gguf::chat::Piece::Text(t) | gemma_gguf::chat::Piece::Special(t) => t.as_str(),
        })
        .collect();
    assert!(text.contains("<|tool>declaration:set_unit{"), "{text}");
    let n_native = encode_pieces(&native, &tok).unwrap().len();
    assert_eq!(v["usage"]["prompt_tokens"], n_native);

    // Streamed: the id and name, then the arguments, then finish_reason "tool_calls".
    let mut body = body;
    body["stream"] = json!(true);
    let r = server.post("/v1/chat/completions", &body);
    assert_eq!(r.status, 200, "{}", r.body);
    let events = r.events();
    let chunks: Vec<Value> =
        events.iter().filter(|e| *e != "[DONE]").map(|e| serde_json::from_str(e).unwrap()).collect();
    let calls: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"][0]["delta"]["tool_calls"].get(0)).collect();
    assert_eq!(calls[0]["function"]["name"], "set_unit", "{events:?}");
    let streamed: String = calls.iter().filter_map(|c| c["function"]["arguments"].as_str()).collect();
    assert_eq!(streamed, call["arguments"].as_str().unwrap());
    assert!(chunks.iter().any(|c| c["choices"][0]["finish_reason"] == "tool_calls"), "{events:?}");
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}
