//! `gemma serve` with real clients and real concurrency, on the real 270M model: the
//! official `openai` Python package (scripts/serve_openai_check.py), `curl`, parallel
//! requests and a cached prefix against each request's own greedy reference. The load test
//! and the prefix-reuse bench are in serve_load.rs.
use gemma_gguf::chat::{encode_pieces, ChatFormat, Message, SpecialTokens};
use gemma_gguf::generate::{generate, StopReason};
use gemma_gguf::model::Model;
use gemma_gguf::sampler::{Sampler, SamplerParams};
use gemma_gguf::session::{Session, SessionOptions};
use gemma_tests::serve::{greedy, python_with_openai, setup, text_ids, ServeProcess, PROMPTS};
use serde_json::{json, Value};
use std::path::PathBuf;
use std::process::Command;

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

fn chat_ids(model: &Model, messages: &[Message]) -> Vec<u32> {
    let format = ChatFormat::from_gguf(model.gguf()).unwrap();
    let specials = SpecialTokens::from_tokenizer(model.tokenizer());
    encode_pieces(&format.format(messages, true, &specials).unwrap(), model.tokenizer()).unwrap()
}

#[test]
fn serve_parallel_requests_each_equal_the_request_run_alone() {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--parallel", "4"]);
    let want: Vec<String> = PROMPTS.iter().map(|p| greedy(&model, 256, &text_ids(&model, p), 20)).collect();
    let replies = gemma_tests::serve::parallel_completions(server.addr, &PROMPTS, 20);
    for ((r, want), prompt) in replies.into_iter().zip(&want).zip(PROMPTS) {
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["choices"][0]["text"].as_str(), Some(want.as_str()), "{prompt}");
    }
    println!("6 requests on 4 sequences, each equal to its greedy reference");
}

#[test]
fn serve_reuses_the_cached_prefix_of_a_chat_s_next_turn() {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "512", "--parallel", "2"]);
    let turn1 = [Message::user("Name one colour of the rainbow.")];
    let ask = |messages: &[Message]| {
        let m: Vec<Value> = messages.iter().map(|m| json!({"role": m.role.as_str(), "content": m.content})).collect();
        let r = server.post("/v1/chat/completions", &json!({ "messages": m, "max_tokens": 40, "temperature": 0 }));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let a1 = ask(&turn1);
    let reply = a1["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert_eq!(a1["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
    // What the sequence holds after turn 1: its prompt and the reply's tokens (the last one is
    // not fed when max_tokens ends the reply; an end-of-turn token is never fed).
    let ids1 = chat_ids(&model, &turn1);
    let mut session = Session::new(&model, SessionOptions { n_ctx: 512, ..SessionOptions::default() }).unwrap();
    let mut sampler = Sampler::new(SamplerParams::greedy()).unwrap();
    let g = generate(&mut session, &mut sampler, &ids1, 40, |_| true).unwrap();
    let mut held = ids1.clone();
    held.extend(&g.tokens[..g.tokens.len() - usize::from(g.stop == StopReason::MaxTokens)]);
    assert_eq!(a1["usage"]["completion_tokens"], g.tokens.len());
    let turn2 = [turn1[0].clone(), Message::model(&reply), Message::user("Name another one.")];
    let ids2 = chat_ids(&model, &turn2);
    assert!(ids2.starts_with(&held), "the premise: turn 2's prompt starts with what turn 1 left in the cache");
    let a2 = ask(&turn2);
    let cached = a2["usage"]["prompt_tokens_details"]["cached_tokens"].as_u64().unwrap();
    assert_eq!(cached, held.len() as u64, "turn 2 reuses turn 1's prompt and reply");
    assert_eq!(a2["usage"]["prompt_tokens"], ids2.len());
    assert_eq!(server.metric("gemma_prompt_tokens_cached_total"), held.len() as f64);
    let want = greedy(&model, 512, &ids2, 40);
    assert_eq!(
        a2["choices"][0]["message"]["content"].as_str(),
        Some(want.as_str()),
        "same reply as from an empty cache"
    );
    println!("turn 2 reused {cached} of {} prompt tokens", a2["usage"]["prompt_tokens"]);
}

#[test]
fn serve_answers_curl() {
    let Some((_one, path)) = setup() else { return };
    if Command::new("curl").arg("--version").output().is_err() {
        assert!(!gemma_tests::in_ci(), "CI=true: curl is missing");
        return eprintln!("notice: no curl; skipping");
    }
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--api-key", "k"]);
    let url = format!("http://{}/v1/completions", server.addr);
    let curl_as = |key: &str, body: &Value, extra: &[&str]| {
        let out = Command::new("curl")
            .args(["-sS", "-H", "Content-Type: application/json", "-H", &format!("Authorization: Bearer {key}")])
            .args(["-d", &body.to_string()])
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let curl = |body: &Value, extra: &[&str]| curl_as("k", body, extra);
    let want = greedy(&model, 256, &text_ids(&model, PROMPTS[0]), 12);
    let body = json!({ "prompt": PROMPTS[0], "max_tokens": 12, "temperature": 0 });
    let whole: Value = serde_json::from_str(&curl(&body, &[])).unwrap();
    assert_eq!(whole["choices"][0]["text"].as_str(), Some(want.as_str()));
    let mut stream_body = body.clone();
    stream_body["stream"] = json!(true);
    let events = curl(&stream_body, &["-N"]);
    let data: Vec<&str> = events.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{events}");
    let text: String = data[..data.len() - 1]
        .iter()
        .map(|d| serde_json::from_str::<Value>(d).unwrap()["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, want);
    let denied = curl_as("wrong", &body, &["-o", "/dev/null", "-w", "%{http_code}"]);
    assert_eq!(denied, "401");
    println!("curl OK: {want:?}");
}

#[test]
fn serve_answers_the_openai_python_client() {
    let Some((_one, path)) = setup() else { return };
    let Some(py) = python_with_openai() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "512", "--api-key", "sk-test"]);
    let prompt = "Write one sentence about the sea.";
    let script = gemma_tests::workspace_root().join("scripts/serve_openai_check.py");
    let base = format!("http://{}/v1", server.addr);
    let out = Command::new(&py).arg(&script).args([&base, "sk-test", prompt, "24"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    println!("{v:#}");
    assert_eq!(v["models"], json!(["gemma-3-270m-q4_k_m"]));
    let chat = greedy(&model, 512, &chat_ids(&model, &[Message::user(prompt)]), 24);
    assert_eq!(v["chat"]["text"].as_str(), Some(chat.as_str()));
    assert_eq!(v["chat_stream"]["text"], v["chat"]["text"]);
    assert_eq!(v["chat_stream"]["finish_reason"], v["chat"]["finish_reason"]);
    assert_eq!(v["chat_stream"]["usage"]["completion_tokens"], v["chat"]["usage"]["completion_tokens"]);
    let text = greedy(&model, 512, &text_ids(&model, prompt), 24);
    assert_eq!(v["completion"]["text"].as_str(), Some(text.as_str()));
    assert_eq!(v["completion_stream"]["text"], v["completion"]["text"]);
    assert_eq!(v["unknown_model"], 404);
}

#[test]
fn serve_batching_decodes_every_sequence_in_one_graph_per_step() {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--parallel", "4", "--batching"]);
    assert_eq!(server.metric("gemma_kv_cells_total"), 1024.0);
    // Alone in the shared cache, a request is bit-identical to the library's lone run.
    let want: Vec<String> = PROMPTS.iter().map(|p| greedy(&model, 256, &text_ids(&model, p), 12)).collect();
    let body = |p: &str| json!({ "prompt": p, "max_tokens": 12, "temperature": 0 });
    let r = server.post("/v1/completions", &body(PROMPTS[1]));
    assert_eq!(r.json()["choices"][0]["text"].as_str(), Some(want[1].as_str()));
    // Together: every request is answered in full. Each answer equals its lone run except
    // where a near-tie falls the other way (tests/tests/multi_seq.rs checks that rule on the
    // logits); here only the first token, from the prompt, is held equal.
    let addr = server.addr;
    let threads: Vec<_> = PROMPTS
        .iter()
        .map(|p| {
            let b = body(p).to_string();
            std::thread::spawn(move || gemma_tests::serve::request(addr, "POST", "/v1/completions", &[], b.as_bytes()))
        })
        .collect();
    for ((t, want), prompt) in threads.into_iter().zip(&want).zip(PROMPTS) {
        let v = t.join().unwrap().json();
        let got = v["choices"][0]["text"].as_str().unwrap().to_string();
        println!("{prompt:?} → {got:?} (alone: {want:?})");
        assert!(v["usage"]["completion_tokens"].as_u64().unwrap() >= 1);
        let first = |s: &str| s.split_whitespace().next().map(String::from);
        assert_eq!(first(&got), first(want), "{prompt}");
    }
    assert_eq!(server.wait_metric("gemma_sequences_active", 0.0), 0.0);
}

#[test]
fn serve_batching_with_a_small_context_splits_prompts_across_steps() {
    let Some((_one, path)) = setup() else { return };
    // Two 40-token prompts and a 64-token context per sequence: a step holds at most 64.
    let server = ServeProcess::start(&gemma(), &path, &["-c", "64", "--parallel", "2", "--batching"]);
    let prompt = "one two three four five six seven eight nine ten ".repeat(4);
    let addr = server.addr;
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let b = json!({ "prompt": prompt, "max_tokens": 8, "temperature": 0 }).to_string();
            std::thread::spawn(move || gemma_tests::serve::request(addr, "POST", "/v1/completions", &[], b.as_bytes()))
        })
        .collect();
    for t in threads {
        let r = t.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["usage"]["completion_tokens"], 8);
    }
}

#[test]
fn serve_reuses_a_shared_system_prompt_and_answers_as_from_an_empty_cache() {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "512", "--parallel", "1"]);
    let system = "You are a helpful assistant for a museum of natural history. Answer visitors' \
                  questions about the exhibits in one or two short sentences.";
    let turn = |q: &str| [Message::system(system), Message::user(q)];
    let ask = |q: &str| {
        let body = json!({ "messages": [{"role": "system", "content": system}, {"role": "user", "content": q}],
                           "max_tokens": 24, "temperature": 0 });
        let r = server.post("/v1/chat/completions", &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let (q1, q2) = ("Where are the dinosaurs?", "When does the museum open?");
    ask(q1);
    let (ids1, ids2) = (chat_ids(&model, &turn(q1)), chat_ids(&model, &turn(q2)));
    let common = ids1.iter().zip(&ids2).take_while(|(a, b)| a == b).count();
    assert!(common >= 16, "the premise: both prompts share the system prompt ({common} tokens)");
    let a2 = ask(q2);
    assert_eq!(a2["usage"]["prompt_tokens_details"]["cached_tokens"], common, "the shared start is reused");
    let want = greedy(&model, 512, &ids2, 24);
    assert_eq!(
        a2["choices"][0]["message"]["content"].as_str(),
        Some(want.as_str()),
        "same reply as from an empty cache"
    );
    println!("reused {common} of {} prompt tokens: {want:?}", ids2.len());
}
