//! The converter end to end on tiny random Gemma 1, 2 and 3 checkpoints made by
//! transformers (tests/data/tiny, scripts/make_tiny_checkpoints.py): each checkpoint is
//! converted to every type, and the logits of our runtime and of libllama on the converted
//! file are compared with transformers' float32 logits for the same tokens.
//!
//! Tolerance: the max abs logit difference, relative to the largest golden logit, must stay
//! within `K` times the rounding unit of the weights' type (f32: ggml keeps the KV cache and
//! some activations in f16, so f16's unit is the floor; bf16 and q8_0: 2^-8; 4- and 5-bit
//! types: 2^-4). The printed table shows each measured error next to its bound.
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::tiny_golden::{golden, Golden};
use gemma_tools::{convert_hf, ConvertOptions, OutType};
use std::path::Path;

/// How many rounding units of error the logits may show (transformers' float32 forward
/// against ggml's, through a few random layers).
const K: f64 = 16.0;

/// The rounding unit of each type's weights.
fn unit(ty: &str) -> f64 {
    match ty {
        "f32" | "f16" => 2f64.powi(-11),
        "bf16" | "q8_0" => 2f64.powi(-8),
        _ => 2f64.powi(-4),
    }
}

const TYPES: [&str; 7] = ["f32", "f16", "bf16", "q8_0", "q4_k", "q4_k_m", "q5_k_m"];

/// (max abs difference / max |golden|, mean KL(golden ‖ other) in nats, top-1 agreement).
fn distance(golden: &[f32], other: &[f32], n_vocab: usize) -> (f64, f64, f64) {
    let scale = golden.iter().fold(0f32, |m, x| m.max(x.abs())) as f64;
    let max = golden.iter().zip(other).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max) as f64;
    let rows = golden.len() / n_vocab;
    let (mut kl, mut agree) = (0.0, 0usize);
    for r in 0..rows {
        let (p, q) = (&golden[r * n_vocab..(r + 1) * n_vocab], &other[r * n_vocab..(r + 1) * n_vocab]);
        let lse = |x: &[f32]| {
            let m = x.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
            m + x.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln()
        };
        let (lp, lq) = (lse(p), lse(q));
        kl += p.iter().zip(q).map(|(&a, &b)| (a as f64 - lp).exp() * ((a as f64 - lp) - (b as f64 - lq))).sum::<f64>();
        let am = |x: &[f32]| x.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i);
        agree += (am(p) == am(q)) as usize;
    }
    (max / scale, kl / rows as f64, agree as f64 / rows as f64)
}

fn convert(g: &Golden, ty: &str, out: &Path) {
    let opts = ConvertOptions { out_type: OutType::parse(ty).unwrap(), ..ConvertOptions::default() };
    convert_hf(&g.dir, out, &opts).unwrap_or_else(|e| panic!("converting {} to {ty}: {e}", g.dir.display()));
}

fn ours(path: &Path, ids: &[u32]) -> Vec<f32> {
    let model = Model::load(path, &LoadOptions { threads: Some(2), ..Default::default() })
        .unwrap_or_else(|e| panic!("our runtime cannot load {}: {e}", path.display()));
    let mut s = Session::new(&model, SessionOptions { n_ctx: 256, ..Default::default() }).unwrap();
    s.decode(ids, Outputs::All).unwrap()
}

fn llama(path: &Path, ids: &[u32]) -> Vec<f32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 256, n_threads: 2, flash_attn: false });
    ll.eval(ids, true)
}

fn check(arch: &str) {
    let g = golden(arch);
    let tmp = tempfile::tempdir().unwrap();
    println!("{arch}: {} positions; error = max|Δlogit| / max|logit|, bound = {K} × unit", g.ids.len());
    println!(
        "{:>7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>10}",
        "type", "ours", "llama.cpp", "bound", "KL ours", "top-1", "file KiB"
    );
    let mut failures = Vec::new();
    for ty in TYPES {
        let out = tmp.path().join(format!("{arch}-{ty}.gguf"));
        convert(&g, ty, &out);
        let size = std::fs::metadata(&out).unwrap().len() / 1024;
        let bound = K * unit(ty);
        let (e_ll, _, _) = distance(&g.logits, &llama(&out, &g.ids), g.n_vocab);
        let (e_ours, kl, top1) = distance(&g.logits, &ours(&out, &g.ids), g.n_vocab);
        println!("{ty:>7} {e_ours:>10.2e} {e_ll:>10.2e} {bound:>10.2e} {kl:>10.2e} {:>7.1}% {size:>10}", top1 * 100.0);
        if e_ours > bound {
            failures.push(format!("{ty}: ours {e_ours:.3e} > {bound:.3e}"));
        }
        if e_ll > bound {
            failures.push(format!("{ty}: llama.cpp on our file {e_ll:.3e} > {bound:.3e}"));
        }
        if ty == "f32" {
            let model = Model::load(&out, &LoadOptions::default()).unwrap();
            for (text, ids) in &g.tokenizer {
                assert_eq!(&model.tokenizer().encode(text, false), ids, "tokenizer on {text:?}");
            }
        }
    }
    assert!(failures.is_empty(), "{arch}: {failures:?}");
}

#[test]
fn gemma3_tiny_all_types() {
    check("gemma3");
}

#[test]
fn gemma2_tiny_all_types() {
    check("gemma2");
}

#[test]
fn gemma_tiny_all_types() {
    check("gemma");
}
