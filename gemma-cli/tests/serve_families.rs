//! `gemma serve` on the families added after Gemma 3: tiny random Gemma 3n and Gemma 4 files
//! (`gemma_tests::tiny_model`: 3n with AltUp, LAuReL, per-layer embeddings, sparsity and
//! shared KV; Gemma 4 shaped like E2B, with per-layer embeddings and shared KV, and like
//! 26B-A4B, with experts). Six completions on two parallel sequences, each answer equal to the
//! library's greedy generation of the same prompt run alone (so batching several sequences in
//! one step changes nothing), and a chat completion in the file's chat format. The text is
//! random-weight noise; the logits themselves are checked against libllama elsewhere
//! (tests/tests/exactness_gemma3n.rs, exactness_gemma4.rs).
use gemma_gguf::gguf::GgmlType;
use gemma_gguf::model::Model;
use gemma_tests::serve::{greedy, text_ids, ServeProcess, PROMPTS};
use gemma_tests::tiny_model::{TinyConfig, TinyModel};
use serde_json::json;
use std::path::PathBuf;

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

/// Serves the tiny file of `cfg` and checks its answers; `what` names it in messages.
fn serve_matches_the_library(what: &str, cfg: TinyConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(format!("{what}.gguf"));
    let cfg = TinyConfig { weight_type: GgmlType::Q8_0, n_ctx_train: 8192, ..cfg };
    TinyModel::new(cfg).write(&path).expect("write the tiny model");
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--parallel", "2"]);
    let want: Vec<String> = PROMPTS.iter().map(|p| greedy(&model, 256, &text_ids(&model, p), 12)).collect();
    let replies = gemma_tests::serve::parallel_completions(server.addr, &PROMPTS, 12);
    for ((r, want), prompt) in replies.into_iter().zip(&want).zip(PROMPTS) {
        assert_eq!(r.status, 200, "{what}: {}", r.body);
        let v = r.json();
        assert_eq!(v["choices"][0]["text"].as_str(), Some(want.as_str()), "{what}: {prompt}");
        assert_eq!(v["usage"]["prompt_tokens"], text_ids(&model, prompt).len(), "{what}: {prompt}");
    }
    let chat = json!({
        "messages": [{"role": "user", "content": "What is the capital of France?"}],
        "max_tokens": 8, "temperature": 0,
    });
    let r = server.post("/v1/chat/completions", &chat);
    assert_eq!(r.status, 200, "{what}: {}", r.body);
    let v = r.json();
    assert_eq!(v["object"], "chat.completion", "{what}");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant", "{what}");
    assert!(v["usage"]["completion_tokens"].as_u64().is_some_and(|n| (1..=8).contains(&n)), "{what}: {v}");
    let models = server.get("/v1/models").json();
    assert_eq!(models["data"][0]["id"], what, "{what}: {models}");
    println!("{what}: {} completions on 2 sequences, each equal to its greedy reference; chat answered", PROMPTS.len());
}

#[test]
fn serve_gemma3n_equals_the_library() {
    serve_matches_the_library("gemma3n", TinyConfig::gemma3n());
}

#[test]
fn serve_gemma4_e2b_like_equals_the_library() {
    serve_matches_the_library("gemma4-e2b", TinyConfig::gemma4());
}

#[test]
fn serve_gemma4_moe_equals_the_library() {
    serve_matches_the_library("gemma4-moe", TinyConfig::gemma4_moe());
}
