//! `gemma serve` under load, on the real 270M model, with the official `openai` Python
//! package: a bounded load test (scripts/serve_load.py) whose answers must each equal their
//! greedy reference and after which the server's memory must be back to what it held idle,
//! and the prompt-prefix-reuse bench (scripts/serve_ttft.py), checked for what it measures
//! (a hit reuses, a miss does not, both answer the same). Timings are printed, never asserted.
use gemma_gguf::model::Model;
use gemma_tests::serve::{greedy, python_with_openai, setup, text_ids, ServeProcess, PROMPTS};
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn gemma() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_gemma"))
}

/// Runs a script of scripts/ with the project's Python; its stdout as JSON.
fn script(py: &Path, name: &str, args: &[&str]) -> Value {
    let path = gemma_tests::workspace_root().join("scripts").join(name);
    let out = Command::new(py).arg(&path).args(args).output().unwrap();
    assert!(out.status.success(), "{name}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{name}: not JSON ({e})"))
}

/// How much more than idle the server may hold once the load is over: 5% of its idle RSS.
/// Everything it allocates per request (the queue, buffers of connections and streams) is
/// freed when the request ends; what stays (the model's mapped pages, the KV caches, the
/// graphs' compute buffers and the allocator's arenas) was already there after the warm-up,
/// which ran the same load on fewer requests.
const RSS_MARGIN: f64 = 0.05;

/// The RSS (KiB) once it is back within `bound`, or the last one seen after 5 s: memory
/// is given back when the last handler and connection end, a moment after the last answer.
fn settled_rss(server: &ServeProcess, bound: u64) -> u64 {
    let start = Instant::now();
    loop {
        let rss = server.rss_kib().expect("the server's /proc/PID/status");
        if rss <= bound || start.elapsed() > Duration::from_secs(5) {
            return rss;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn serve_load_test_many_clients_each_answer_equals_its_reference() {
    let Some((_one, path)) = setup() else { return };
    let Some(py) = python_with_openai() else { return };
    let model = Model::load(&path, &gemma_tests::serve::one_thread()).unwrap();
    // Two lengths per prompt; the script picks one of these at random for each request.
    let refs: Vec<Value> = PROMPTS
        .iter()
        .enumerate()
        .flat_map(|(i, p)| [3 + i, 8 + 2 * i].map(|max_tokens| (p, max_tokens)))
        .map(|(p, max_tokens)| {
            json!({ "prompt": p, "max_tokens": max_tokens, "text": greedy(&model, 256, &text_ids(&model, p), max_tokens) })
        })
        .collect();
    drop(model);
    let dir = tempfile::tempdir().unwrap();
    let refs_path = dir.path().join("refs.json");
    std::fs::write(&refs_path, serde_json::to_string(&refs).unwrap()).unwrap();
    let refs_arg = refs_path.to_str().unwrap();
    let server = ServeProcess::start(&gemma(), &path, &["-c", "256", "--parallel", "4", "--queue", "64"]);
    let base = format!("http://{}/v1", server.addr);
    let (n, concurrency, cancel_every) = (64, 16, 8);
    let load = |n: usize, seed: &str| {
        let v = script(
            &py,
            "serve_load.py",
            &[&base, refs_arg, &n.to_string(), &concurrency.to_string(), &cancel_every.to_string(), seed],
        );
        assert_eq!(v["errors"], json!([]));
        assert_eq!(v["mismatches"], json!([]));
        assert_eq!(v["cancelled"], n / cancel_every);
        assert_eq!(v["ok"], n - n / cancel_every);
        assert_eq!(server.wait_metric("gemma_sequences_active", 0.0), 0.0);
        v
    };
    // Warm-up: every sequence, every kind of request and the allocator's arenas have been
    // used once, so what the server holds idle after it is what it holds for good.
    load(concurrency, "1");
    std::thread::sleep(Duration::from_millis(500));
    let idle = server.rss_kib().expect("the server's /proc/PID/status");
    let v = load(n, "2");
    let bound = idle + (idle as f64 * RSS_MARGIN) as u64;
    let after = settled_rss(&server, bound);
    println!(
        "load: {n} requests, {concurrency} clients, {} cancelled: {:.1} s, p50 {:.0} ms, p99 {:.0} ms, {:.1} generated tokens/s",
        v["cancelled"], v["wall_s"].as_f64().unwrap(), v["p50_ms"].as_f64().unwrap(), v["p99_ms"].as_f64().unwrap(),
        v["tokens_per_s"].as_f64().unwrap()
    );
    println!(
        "server RSS: idle after warm-up {:.1} MiB, after the load {:.1} MiB (bound {:.1} MiB)",
        idle as f64 / 1024.0,
        after as f64 / 1024.0,
        bound as f64 / 1024.0
    );
    assert!(after <= bound, "RSS after the load {after} KiB, idle {idle} KiB: more than {RSS_MARGIN} above idle");
    assert!(v["wall_s"].as_f64().unwrap() < 60.0);
    // Every sequence is free again, and nothing waits.
    assert_eq!(server.metric("gemma_queue_length"), 0.0);
    assert!(server.metric("gemma_errors_total{kind=\"internal\"}").is_nan(), "no internal error was counted");
}

#[test]
fn serve_prefix_reuse_bench_hits_reuse_misses_do_not_and_both_answer_alike() {
    let Some((_one, path)) = setup() else { return };
    let Some(py) = python_with_openai() else { return };
    // One sequence: the bench's unrelated request must take the cache a miss would reuse.
    let server = ServeProcess::start(&gemma(), &path, &["-c", "1024", "--parallel", "1"]);
    let base = format!("http://{}/v1", server.addr);
    let v = script(&py, "serve_ttft.py", &[&base, "2"]);
    println!("{}", v["markdown"].as_str().unwrap_or_default());
    let prompt_tokens = v["prompt_tokens"].as_u64().unwrap();
    assert!(prompt_tokens >= 400, "the premise: a long chat ({prompt_tokens} tokens)");
    for cached in v["hit"]["cached_tokens"].as_array().unwrap() {
        let cached = cached.as_u64().unwrap();
        assert!(cached >= prompt_tokens * 3 / 4, "a hit reuses turn 1 ({cached} of {prompt_tokens})");
    }
    assert!(v["miss"]["cached_tokens"].as_array().unwrap().iter().all(|c| c == 0), "{}", v["miss"]);
    let replies: Vec<&Value> = ["hit", "miss"].iter().flat_map(|m| v[m]["replies"].as_array().unwrap()).collect();
    assert!(!replies[0].as_str().unwrap().is_empty());
    assert!(replies.iter().all(|r| *r == replies[0]), "every run answers alike: {replies:?}");
}
