//! `gemma_gguf::quality` against llama.cpp on the real 270M Q4_K_M file and the shipped test
//! text (`tests/data/text/alice.txt`):
//!
//! - perplexity: ours next to llama-perplexity's method run on libllama's own all-position
//!   logits (the reference loop below follows `perplexity()` in llama.cpp's
//!   `tools/perplexity/perplexity.cpp`: BOS first in each chunk, the second half scored), for
//!   the same tokens and chunking; the bound is 1%.
//! - the top-k KL estimate against the exact KL over the whole vocabulary, for two slightly
//!   different runs of the model (f16 cache vs flash attention with a q8_0 cache).
//!
//! Four chunks of 64 tokens.

use gemma_gguf::ggml::Type;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::quality::{self, Chunks, Comparison, Scratch, DEFAULT_TOP_K};
use gemma_gguf::session::{Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};

const N_CTX: usize = 64;
const N_CHUNKS: usize = 4;

fn text() -> String {
    std::fs::read_to_string(gemma_tests::workspace_root().join("tests/data/text/alice.txt")).unwrap()
}

/// llama-perplexity's loop over libllama's logits: (PPL, its ± estimate, tokens scored).
fn llama_perplexity(runner: &mut LlamaRunner, tokens: &[u32], bos: u32) -> (f64, f64, usize) {
    let n_vocab = runner.n_vocab();
    let first = N_CTX / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    for i in 0..N_CHUNKS {
        let mut chunk = tokens[i * N_CTX..(i + 1) * N_CTX].to_vec();
        chunk[0] = bos;
        runner.clear();
        let logits = runner.eval(&chunk, true);
        for j in first..N_CTX - 1 {
            let row = &logits[j * n_vocab..(j + 1) * n_vocab];
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let sum: f64 = row.iter().map(|&x| ((x - max) as f64).exp()).sum();
            let v = max as f64 + sum.ln() - row[chunk[j + 1] as usize] as f64;
            nll += v;
            nll2 += v * v;
            count += 1;
        }
    }
    let (mean, mean2) = (nll / count as f64, nll2 / count as f64);
    let ppl = mean.exp();
    (ppl, ppl * ((mean2 - mean * mean) / (count - 1) as f64).sqrt(), count)
}

#[test]
fn perplexity_matches_llama_cpp() {
    let Some(path) = gemma_tests::test_model() else { return };
    let text = text();
    let mut runner =
        LlamaRunner::load(&path, LlamaOptions { capture: &[], n_ctx: N_CTX as u32, n_threads: 2, flash_attn: false });
    let model = Model::load(&path, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap();
    let tok = model.tokenizer();
    let tokens = tok.encode(&text, true);
    let theirs_tokens = runner.tokenize(&text, true);
    assert_eq!(tokens[..N_CTX * N_CHUNKS], theirs_tokens[..N_CTX * N_CHUNKS], "same tokens as llama.cpp");
    println!("text: {} bytes, {} tokens", text.len(), tokens.len());

    let (ref_ppl, ref_err, ref_n) = llama_perplexity(&mut runner, &tokens, tok.bos());
    let chunks = Chunks::new(&tokens, N_CTX, Some(N_CHUNKS), Some(tok.bos())).unwrap();
    let opts = SessionOptions { n_ctx: N_CTX as u32, ..Default::default() };
    let mut session = Session::new(&model, opts).unwrap();
    let ours = quality::perplexity(&mut session, &chunks, |_| {}).unwrap();
    let rel = (ours.value() / ref_ppl - 1.0).abs();
    println!(
        "llama.cpp: PPL = {ref_ppl:.4} +/- {ref_err:.5} ({ref_n} tokens); ours: {:.4} +/- {:.5} ({} tokens); \
         relative difference {rel:.2e} (bound 1e-2; the logits are bit-identical)",
        ours.value(),
        ours.uncertainty(),
        ours.n()
    );
    assert_eq!(ours.n(), ref_n);
    assert!(rel < 1e-2);
    assert!((ours.uncertainty() / ref_err - 1.0).abs() < 1e-2);
}

#[test]
fn top_k_kl_is_close_to_the_full_kl_on_the_real_model() {
    let Some(path) = gemma_tests::test_model() else { return };
    let model = Model::load(&path, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap();
    let tokens = model.tokenizer().encode(&text(), true);
    let chunks = Chunks::new(&tokens, N_CTX, Some(2), Some(model.tokenizer().bos())).unwrap();
    let plain = SessionOptions { n_ctx: N_CTX as u32, ..Default::default() };
    let q8 = SessionOptions { flash_attn: true, kv_type: Type::Q8_0, ..plain };
    // Both runs' logits, kept whole (2 × 31 rows × 1 MiB).
    let rows = |opts: SessionOptions| {
        let mut session = Session::new(&model, opts).unwrap();
        let mut rows = Vec::new();
        let mut keep = |r: &[f32], next: u32| {
            rows.push((r.to_vec(), next));
            Ok(())
        };
        quality::score_chunks(&mut session, &chunks, &mut keep, |_| {}).unwrap();
        rows
    };
    let (base_rows, model_rows) = (rows(plain), rows(q8));
    let mut base = quality::BaseLogits::new("base", 4.5, model.n_vocab() as usize, chunks, DEFAULT_TOP_K).unwrap();
    let mut s = Scratch::default();
    let mut cmp = Comparison::default();
    let mut full = 0f64;
    for (i, ((b, next), (m, _))) in base_rows.iter().zip(&model_rows).enumerate() {
        base.push_row(b, *next, &mut s).unwrap();
        cmp.add(base.row(i), m, *next, &mut s);
        full += quality::kl_full(b, m);
    }
    let full = full / base_rows.len() as f64;
    let est = cmp.summary().kl_mean;
    println!(
        "f16 cache vs flash attention + q8_0 cache, {} positions: mean KL full {full:.3e}, top-{DEFAULT_TOP_K} \
         estimate {est:.3e} ({:.1}% of it); top-1 agreement {:.3}",
        base_rows.len(),
        100.0 * est / full,
        cmp.summary().top1_agreement
    );
    assert!(full > 0.0, "the two runs differ");
    assert!(est <= full * (1.0 + 1e-6) && est >= 0.6 * full, "the top-k estimate is a close lower bound");
}
