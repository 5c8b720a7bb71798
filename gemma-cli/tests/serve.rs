//! `gemma serve` end to end on the real 270M model, over loopback HTTP: answers against the
//! library's own greedy generation, streaming, and each bad input or limit with its status.
//! Tests of this file run one at a time (each starts its own server; the machine has 2 cores).
use gemma_gguf::model::Model;
use gemma_tests::serve::{greedy, open_stream, request, setup, ServeProcess};
use serde_json::{json, Value};
use std::io::BufRead;
use std::path::PathBuf;
use std::time::{Duration, Instant};

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

/// The library's greedy text for a completion prompt (what the server must answer), and
/// the prompt's token count.
fn reference(model: &Model, n_ctx: u32, prompt: &str, max_tokens: usize) -> (String, usize) {
    let tok = model.tokenizer();
    let ids = tok.encode(prompt, tok.adds_bos());
    (greedy(model, n_ctx, &ids, max_tokens), ids.len())
}

fn completion(prompt: &str, max_tokens: u32) -> Value {
    json!({ "prompt": prompt, "max_tokens": max_tokens, "temperature": 0 })
}

/// Concatenated `choices[0].text` / `delta.content` of a stream's chunks, and the chunks.
fn streamed_text(events: &[String]) -> (String, Vec<Value>) {
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"), "the stream ends with [DONE]: {events:?}");
    let chunks: Vec<Value> = events[..events.len() - 1].iter().map(|e| serde_json::from_str(e).unwrap()).collect();
    let mut text = String::new();
    for c in &chunks {
        if let Some(choice) = c["choices"].get(0) {
            text.push_str(choice["text"].as_str().or(choice["delta"]["content"].as_str()).unwrap_or(""));
        }
    }
    (text, chunks)
}

#[test]
fn serve_completion_equals_the_library_greedy_generation() {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "512"]);
    let prompt = "The capital of France is";
    let (want, n_prompt) = reference(&model, 512, prompt, 24);
    let r = server.post("/v1/completions", &completion(prompt, 24));
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "text_completion");
    assert_eq!(v["choices"][0]["text"].as_str(), Some(want.as_str()));
    assert_eq!(v["usage"]["prompt_tokens"], n_prompt);
    let finish = v["choices"][0]["finish_reason"].as_str().unwrap();
    let n_out = v["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(finish == "length" && n_out == 24 || finish == "stop" && n_out < 24, "{finish} after {n_out}");
    // Streamed, the same text in pieces, then the usage chunk, then [DONE].
    let mut body = completion(prompt, 24);
    body["stream"] = json!(true);
    body["stream_options"] = json!({ "include_usage": true });
    let r = server.post("/v1/completions", &body);
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap().starts_with("text/event-stream"));
    let (text, chunks) = streamed_text(&r.events());
    assert_eq!(text, want);
    assert!(chunks.len() > 3, "text comes in pieces: {chunks:?}");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"], json!([]));
    assert_eq!(last["usage"]["completion_tokens"].as_u64(), Some(n_out));
    assert_eq!(chunks[chunks.len() - 2]["choices"][0]["finish_reason"], finish);
    println!("completion OK: {want:?}");
}

#[test]
fn serve_chat_streams_the_same_reply_as_whole_and_stops_at_a_stop_string() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "512"]);
    let chat = json!({
        "model": "gemma-3-270m-q4_k_m",
        "messages": [{"role": "system", "content": "Answer in one sentence."}, {"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 32, "temperature": 0,
    });
    let r = server.post("/v1/chat/completions", &chat);
    assert_eq!(r.status, 200, "{}", r.body);
    let whole = r.json();
    assert_eq!(whole["object"], "chat.completion");
    assert_eq!(whole["choices"][0]["message"]["role"], "assistant");
    let reply = whole["choices"][0]["message"]["content"].as_str().unwrap().to_string();
    assert!(reply.chars().count() > 8, "{reply:?}");
    let mut body = chat.clone();
    body["stream"] = json!(true);
    let r = server.post("/v1/chat/completions", &body);
    let (text, chunks) = streamed_text(&r.events());
    assert_eq!(text, reply);
    assert_eq!(chunks[0]["object"], "chat.completion.chunk");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks.iter().all(|c| c.get("usage").is_none()), "no usage chunk unless asked");
    // A stop string from inside the reply: the text ends just before its first occurrence,
    // finish_reason stop, streamed or not.
    let mid: Vec<(usize, char)> = reply.char_indices().collect();
    let (from, to) = (mid[mid.len() / 2].0, mid.get(mid.len() / 2 + 3).map_or(reply.len(), |c| c.0));
    let stop = &reply[from..to];
    let want = &reply[..reply.find(stop).unwrap()];
    body["stop"] = json!([stop]);
    let r = server.post("/v1/chat/completions", &body);
    let (text, chunks) = streamed_text(&r.events());
    assert_eq!(text, want, "stop {stop:?}");
    assert_eq!(chunks.last().unwrap()["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(false);
    let whole = server.post("/v1/chat/completions", &body).json();
    assert_eq!(whole["choices"][0]["message"]["content"].as_str(), Some(want));
    assert_eq!(whole["choices"][0]["finish_reason"], "stop");
    println!("chat OK: {reply:?}");
}

#[test]
fn serve_health_models_and_metrics() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--parallel", "2"]);
    assert_eq!(server.get("/health").json(), json!({"status": "ok"}));
    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], "gemma-3-270m-q4_k_m");
    assert_eq!(models["data"][0]["meta"]["n_ctx"], 256);
    server.post("/v1/completions", &completion("Hello", 4));
    let page = server.get("/metrics");
    assert!(page.header("content-type").unwrap().starts_with("text/plain"));
    for family in [
        "gemma_requests_total",
        "gemma_errors_total",
        "gemma_prompt_tokens_total",
        "gemma_tokens_per_second",
        "gemma_queue_length",
        "gemma_kv_cells_used",
    ] {
        assert!(page.body.contains(&format!("# TYPE {family} ")), "{family} missing:\n{}", page.body);
    }
    assert_eq!(server.metric("gemma_requests_total{endpoint=\"completions\"}"), 1.0);
    assert_eq!(server.metric("gemma_completion_tokens_total"), 4.0);
    assert!(server.metric("gemma_tokens_per_second") > 0.0);
    assert_eq!(server.metric("gemma_kv_cells_total"), 512.0);
    // The finished sequence keeps its tokens for reuse: prompt + 3 fed tokens (the 4th is not fed).
    assert!(server.metric("gemma_kv_cells_used") >= 4.0);
}

/// A bad request: what is wrong, the endpoint, the body, the status and the field named.
type BadCase = (&'static str, &'static str, Vec<u8>, u16, Option<&'static str>);

#[test]
fn serve_refuses_each_bad_request_with_its_status_and_field() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "64", "--max-body", "4096"]);
    let raw =
        |path: &str, body: &[u8]| request(server.addr, "POST", path, &[("Content-Type", "application/json")], body);
    let cases: Vec<BadCase> = vec![
        (
            "body over --max-body",
            "/v1/completions",
            format!("{{\"prompt\":\"{}\"}}", "a".repeat(8000)).into_bytes(),
            413,
            None,
        ),
        ("invalid JSON", "/v1/completions", b"{\"prompt\": ".to_vec(), 400, None),
        (
            "a field of the wrong type",
            "/v1/completions",
            br#"{"prompt":"x","temperature":"hot"}"#.to_vec(),
            400,
            Some("temperature"),
        ),
        (
            "a field out of range",
            "/v1/chat/completions",
            br#"{"messages":[{"role":"user","content":"x"}],"top_p":2}"#.to_vec(),
            400,
            Some("top_p"),
        ),
        ("n = 2", "/v1/completions", br#"{"prompt":"x","n":2}"#.to_vec(), 400, Some("n")),
        (
            "a missing field",
            "/v1/chat/completions",
            br#"{"model":"gemma-3-270m-q4_k_m"}"#.to_vec(),
            400,
            Some("messages"),
        ),
        (
            "an unknown role",
            "/v1/chat/completions",
            br#"{"messages":[{"role":"robot","content":"x"}]}"#.to_vec(),
            400,
            Some("messages[0].role"),
        ),
        ("an unknown model", "/v1/completions", br#"{"model":"gpt-4","prompt":"x"}"#.to_vec(), 404, Some("model")),
        ("an unknown endpoint", "/v1/embeddings", br#"{}"#.to_vec(), 404, None),
    ];
    for (what, path, body, status, param) in cases {
        let r = raw(path, &body);
        assert_eq!(r.status, status, "{what}: {}", r.body);
        let e = r.json();
        assert!(e["error"]["message"].is_string(), "{what}: {e}");
        assert_eq!(e["error"]["param"].as_str(), param, "{what}: {e}");
        println!("{what}: {status} {}", e["error"]["message"]);
    }
    // A prompt longer than the context: 400 with both counts.
    let long = "word ".repeat(100);
    let r = server.post("/v1/completions", &completion(&long, 4));
    assert_eq!(r.status, 400, "{}", r.body);
    let msg = r.json()["error"]["message"].as_str().unwrap().to_string();
    let n: usize =
        msg.strip_prefix("the prompt has ").and_then(|m| m.split(' ').next()).and_then(|n| n.parse().ok()).unwrap();
    assert!(n > 100 && msg.contains("the context holds 64"), "{msg}");
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    assert_eq!(r.json()["error"]["param"], "prompt");
    assert_eq!(server.metric("gemma_errors_total{kind=\"invalid_request\"}"), 6.0);
    assert_eq!(server.metric("gemma_errors_total{kind=\"payload_too_large\"}"), 1.0);
    // The server still works.
    assert_eq!(server.post("/v1/completions", &completion("Hi", 2)).status, 200);
}

#[test]
fn serve_requires_the_api_key_when_one_is_set() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "128", "--api-key", "s3cret"]);
    let body = completion("Hi", 2).to_string();
    let post = |headers: &[(&str, &str)]| request(server.addr, "POST", "/v1/completions", headers, body.as_bytes());
    for (what, headers) in [
        ("no key", vec![]),
        ("a wrong key", vec![("Authorization", "Bearer s3cre7")]),
        ("a longer key", vec![("Authorization", "Bearer s3cret!")]),
        ("no Bearer", vec![("Authorization", "s3cret")]),
    ] {
        let r = post(&headers);
        assert_eq!(r.status, 401, "{what}");
        assert_eq!(r.json()["error"]["code"], "invalid_api_key");
        assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    }
    assert_eq!(request(server.addr, "GET", "/v1/models", &[], b"").status, 401);
    assert_eq!(request(server.addr, "GET", "/metrics", &[], b"").status, 401);
    assert_eq!(post(&[("Authorization", "Bearer s3cret")]).status, 200);
    assert_eq!(server.get("/health").status, 200, "health needs no key");
}

#[test]
fn serve_client_disconnect_mid_stream_frees_the_sequence() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "2048", "--parallel", "1", "--api-key", "k"]);
    let auth = [("Authorization", "Bearer k")];
    let metric = |name: &str| {
        let page = request(server.addr, "GET", "/metrics", &auth, b"").body;
        page.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap()
    };
    let mut body = completion("Once upon a time", 1500);
    body["stream"] = json!(true);
    body["temperature"] = json!(1.0);
    let (status, mut conn) = open_stream(server.addr, "/v1/completions", &auth, &body);
    assert_eq!(status, 200);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        conn.read_line(&mut line).unwrap();
    }
    assert_eq!(metric("gemma_sequences_active"), 1.0);
    let hung_up = Instant::now();
    drop(conn);
    let deadline = hung_up + Duration::from_secs(5);
    while metric("gemma_sequences_active") != 0.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let freed = hung_up.elapsed();
    assert_eq!(metric("gemma_sequences_active"), 0.0);
    assert_eq!(metric("gemma_requests_cancelled_total"), 1.0);
    assert!(metric("gemma_completion_tokens_total") < 1400.0, "generation stopped early");
    println!("sequence freed {:.0} ms after the client hung up", freed.as_secs_f64() * 1e3);
    // The one sequence serves the next request at once.
    let r = request(server.addr, "POST", "/v1/completions", &auth, completion("Hi", 3).to_string().as_bytes());
    assert_eq!(r.status, 200);
}

#[test]
fn serve_queue_limit_answers_503_with_retry_after() {
    let Some((_one, path)) = setup() else { return };
    let server = ServeProcess::start(&gemma(), &path, &["-c", "2048", "--parallel", "1", "--queue", "1"]);
    let mut long = completion("Once upon a time", 1500);
    long["stream"] = json!(true);
    // The first runs (its first chunk has come), the second waits in the queue...
    let (s1, mut running) = open_stream(server.addr, "/v1/completions", &[], &long);
    let mut line = String::new();
    while !line.starts_with("data: ") {
        line.clear();
        running.read_line(&mut line).unwrap();
    }
    let (s2, waiting) = open_stream(server.addr, "/v1/completions", &[], &long);
    assert_eq!((s1, s2), (200, 200));
    assert_eq!(server.wait_metric("gemma_queue_length", 1.0), 1.0);
    // ...and the third is turned away.
    let r = server.post("/v1/completions", &completion("Hi", 2));
    assert_eq!(r.status, 503, "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(r.json()["error"]["code"], "queue_full");
    drop(running);
    drop(waiting);
    assert_eq!(server.wait_metric("gemma_queue_length", 0.0), 0.0);
    assert_eq!(server.wait_metric("gemma_sequences_active", 0.0), 0.0);
    assert_eq!(server.post("/v1/completions", &completion("Hi", 2)).status, 200);
}

#[test]
fn serve_request_timeout_answers_504() {
    let Some((_one, path)) = setup() else { return };
    // The first request pays for the first graph and the first read of the weights: out of
    // the timed part.
    let server = ServeProcess::start(&gemma(), &path, &["-c", "2048", "--timeout", "0.5"]);
    assert_eq!(server.post("/v1/completions", &completion("Hi", 1)).status, 200);
    let start = Instant::now();
    let r = server.post("/v1/completions", &completion("Once upon a time", 1500));
    let took = start.elapsed();
    assert_eq!(r.status, 504, "{}", r.body);
    assert_eq!(r.json()["error"]["code"], "timeout");
    assert!(took < Duration::from_secs(3), "answered after {took:?}");
    assert_eq!(server.wait_metric("gemma_sequences_active", 0.0), 0.0);
    assert_eq!(server.metric("gemma_errors_total{kind=\"timeout\"}"), 1.0);
    // Streamed, the answer has begun (200): it ends with an error event, not [DONE].
    let mut body = completion("Once upon a time", 1500);
    body["stream"] = json!(true);
    let r = server.post("/v1/completions", &body);
    assert_eq!(r.status, 200);
    let events = r.events();
    let last: Value = serde_json::from_str(events.last().unwrap()).unwrap();
    assert_eq!(last["error"]["code"], "timeout", "{events:?}");
    assert!(events.len() > 2, "text came before the timeout: {events:?}");
    assert_eq!(server.metric("gemma_errors_total{kind=\"timeout\"}"), 2.0);
}

#[test]
fn serve_sigterm_finishes_the_request_in_flight_and_exits_cleanly() {
    stop_with("-TERM");
}

#[test]
fn serve_ctrl_c_finishes_the_request_in_flight_and_exits_cleanly() {
    stop_with("-INT");
}

/// Sends `signal` while a request runs: it must be answered in full, then the server exits 0.
fn stop_with(signal: &str) {
    let Some((_one, path)) = setup() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let mut server = ServeProcess::start(&gemma(), &path, &["-c", "512"]);
    let (want, _) = reference(&model, 512, "The capital of France is", 48);
    let addr = server.addr;
    let body = completion("The capital of France is", 48).to_string();
    let in_flight = std::thread::spawn(move || request(addr, "POST", "/v1/completions", &[], body.as_bytes()));
    // Wait until it runs, then ask the server to stop.
    assert_eq!(server.wait_metric("gemma_sequences_active", 1.0), 1.0);
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill").args([signal, &pid]).status().unwrap().success());
    let r = in_flight.join().unwrap();
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["choices"][0]["text"].as_str(), Some(want.as_str()), "finished, not cut");
    let start = Instant::now();
    let status = loop {
        if let Some(s) = server.child.try_wait().unwrap() {
            break s;
        }
        assert!(start.elapsed() < Duration::from_secs(10), "still running 10 s after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(server.log.lock().unwrap().contains("gemma serve: stopped"));
    assert!(std::net::TcpStream::connect(addr).is_err(), "no longer listening");
}

#[test]
fn serve_refuses_bad_flags_naming_them() {
    let Some((_one, path)) = setup() else { return };
    let model = path.to_str().unwrap();
    for (args, named) in [
        (vec!["--parallel", "0"], "--parallel"),
        (vec!["--queue", "0"], "--queue"),
        (vec!["--timeout", "0"], "--timeout"),
        (vec!["--timeout", "NaN"], "--timeout"),
        (vec!["--api-key", ""], "--api-key"),
        (vec!["--host", "256.0.0.1"], "listening on"),
        (vec!["-c", "0"], "context size"),
    ] {
        let out = std::process::Command::new(gemma())
            .args(["serve", "-m", model, "--port", "0", "-t", "1"])
            .args(&args)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.lines().any(|l| l.starts_with("error:") && l.contains(named)), "{args:?}: {err}");
    }
}
