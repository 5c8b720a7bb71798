//! The converter on the real Gemma 3 270M in Hugging Face form (models/gemma-3-270m-hf, made
//! by scripts/make_hf_checkpoint.py from the test GGUF): converted to f16, q8_0 and the
//! default mix, each file loads in libllama and in our runtime, greedy continuations agree
//! with transformers' on the checkpoint (tests/data/hf270m/goldens.json, from
//! scripts/make_hf_goldens.py), and quality orders f16 ≥ q8_0 ≥ mix. Also: our requantiser
//! and libllama's `llama_model_quantize` make the same blocks from the same f16 file.
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use gemma_tests::llama_logits::{LlamaOptions, LlamaRunner};
use gemma_tests::llama_quantize::{compare_tensors, llama_quantize, QuantizeRequest};
use gemma_tests::workspace_root;
use gemma_tools::{convert_hf, requantize, ConvertOptions, OutType, RequantizeOptions, RunOptions};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

/// A step where transformers' best two logits are closer than this may go either way in a
/// runtime whose arithmetic differs (ggml rounds activations to 8 bits before quantised
/// products): the continuation is compared up to the first such step.
const NEAR_TIE: f64 = 0.5;

fn goldens() -> serde_json::Value {
    let p = workspace_root().join("tests/data/hf270m/goldens.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

/// The checkpoint, checked to be the one the goldens were made from.
fn checkpoint(g: &serde_json::Value) -> Option<PathBuf> {
    let dir = gemma_tests::test_hf_checkpoint()?;
    for (file, want) in g["checkpoint"].as_object().unwrap() {
        let bytes = std::fs::read(dir.join(file)).unwrap();
        let got = format!("{:x}", Sha256::digest(&bytes));
        assert_eq!(
            &got,
            want.as_str().unwrap(),
            "{file} differs from the one the goldens were made from: rerun scripts/make_hf_checkpoint.py"
        );
    }
    Some(dir)
}

fn convert(dir: &Path, ty: &str, out: &Path) {
    let opts = ConvertOptions { out_type: OutType::parse(ty).unwrap(), ..ConvertOptions::default() };
    let s = convert_hf(dir, out, &opts).unwrap();
    println!(
        "{ty}: {:.2} bits per weight, {:.1} MiB, {:.1} s",
        s.bits_per_weight(),
        s.file_bytes as f64 / 1048576.0,
        s.seconds
    );
}

/// Greedy continuation from `prompt` of `n` tokens.
fn greedy_ours(model: &Model, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut s = Session::new(model, SessionOptions { n_ctx: 512, ..Default::default() }).unwrap();
    let mut logits = s.decode(prompt, Outputs::Last).unwrap();
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits) as u32;
        out.push(t);
        logits = s.decode(&[t], Outputs::Last).unwrap();
    }
    out
}

fn greedy_llama(path: &Path, prompt: &[u32], n: usize) -> Vec<u32> {
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx: 512, n_threads: 2, flash_attn: false });
    let mut logits = ll.eval(prompt, false);
    let mut out = Vec::new();
    for _ in 0..n {
        let t = argmax(&logits) as u32;
        out.push(t);
        logits = ll.eval(&[t], false);
    }
    out
}

fn argmax(row: &[f32]) -> usize {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i)
}

/// Steps that agree before the first near-tie in the golden (`usize::MAX`: no near-tie),
/// and the number of leading tokens equal.
fn agreement(golden: &[u32], gaps: &[f64], got: &[u32]) -> (usize, usize) {
    let same = golden.iter().zip(got).take_while(|(a, b)| a == b).count();
    let first_tie = gaps.iter().position(|&g| g < NEAR_TIE).unwrap_or(golden.len());
    (first_tie, same)
}

/// Mean negative log-likelihood (nats per token) and perplexity of `tokens`, and the
/// per-position log-softmax rows (for KL).
fn nll(model: &Model, tokens: &[u32]) -> (f64, Vec<Vec<f64>>) {
    let mut s = Session::new(model, SessionOptions { n_ctx: 2048, ..Default::default() }).unwrap();
    let logits = s.decode(tokens, Outputs::All).unwrap();
    let nv = model.n_vocab() as usize;
    let mut total = 0.0;
    let mut rows = Vec::new();
    for i in 0..tokens.len() - 1 {
        let row = &logits[i * nv..(i + 1) * nv];
        let m = row.iter().fold(f32::MIN, |a, &b| a.max(b)) as f64;
        let lse = m + row.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln();
        total += lse - row[tokens[i + 1] as usize] as f64;
        rows.push(row.iter().map(|&x| x as f64 - lse).collect());
    }
    (total / (tokens.len() - 1) as f64, rows)
}

fn kl(base: &[Vec<f64>], other: &[Vec<f64>]) -> f64 {
    let n = base.len() as f64;
    base.iter().zip(other).map(|(p, q)| p.iter().zip(q).map(|(a, b)| a.exp() * (a - b)).sum::<f64>()).sum::<f64>() / n
}

#[test]
fn real_checkpoint_converts_runs_and_orders_by_quality() {
    let g = goldens();
    let Some(dir) = checkpoint(&g) else { return };
    let tmp = tempfile::tempdir_in(workspace_root().join("target")).unwrap();
    let text = std::fs::read_to_string(workspace_root().join("tests/data/prompts/long_declaration.txt")).unwrap();

    let mut quality = Vec::new();
    let mut base_rows: Option<Vec<Vec<f64>>> = None;
    for ty in ["f16", "q8_0", "q4_k_m"] {
        let out = tmp.path().join(format!("{ty}.gguf"));
        convert(&dir, ty, &out);
        let model = Model::load(&out, &LoadOptions { threads: Some(2), ..Default::default() }).unwrap();
        for p in g["prompts"].as_array().unwrap() {
            let name = p["name"].as_str().unwrap();
            let prompt: Vec<u32> =
                p["prompt_ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let want: Vec<u32> = p["greedy"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            let gaps: Vec<f64> = p["top2_gap"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            // The tokenizer in the converted file must match transformers' on the checkpoint.
            let text =
                std::fs::read_to_string(workspace_root().join(format!("tests/data/prompts/{name}.txt"))).unwrap();
            assert_eq!(model.tokenizer().encode(&text, true), prompt, "{ty} {name}: tokenizer");
            let ours = greedy_ours(&model, &prompt, want.len());
            let theirs = greedy_llama(&out, &prompt, want.len());
            let (tie, same_ours) = agreement(&want, &gaps, &ours);
            let (_, same_ll) = agreement(&want, &gaps, &theirs);
            println!("{ty:>6} {name:>12}: ours {same_ours:>2}/{} tokens as transformers, libllama {same_ll:>2}, first near-tie at {tie}", want.len());
            assert!(
                same_ours >= tie.min(want.len()),
                "{ty} {name}: ours diverges at {same_ours} before a near-tie ({tie})"
            );
            assert!(
                same_ll >= tie.min(want.len()),
                "{ty} {name}: libllama diverges at {same_ll} before a near-tie ({tie})"
            );
        }
        let tokens = model.tokenizer().encode(&text, true);
        let (nll, rows) = nll(&model, &tokens);
        let k = base_rows.as_ref().map_or(0.0, |b| kl(b, &rows));
        println!("{ty:>6}: perplexity {:.4} over {} tokens, KL vs f16 {k:.3e}", nll.exp(), tokens.len());
        quality.push((ty, nll.exp(), k));
        if base_rows.is_none() {
            base_rows = Some(rows);
        }
    }
    // f16 ≥ q8_0 ≥ mix: divergence from the f16 file grows, and perplexity does not improve
    // beyond noise (0.2%) as bits go down.
    let (f16, q8, mix) = (quality[0], quality[1], quality[2]);
    assert!(q8.2 <= mix.2, "KL: q8_0 {:.3e} > mix {:.3e}", q8.2, mix.2);
    assert!(q8.1 >= f16.1 * 0.998 && mix.1 >= q8.1 * 0.998, "perplexity order: {quality:?}");
}

#[test]
fn requantize_is_bit_identical_to_llama_model_quantize_on_the_real_model() {
    let g = goldens();
    let Some(dir) = checkpoint(&g) else { return };
    let tmp = tempfile::tempdir_in(workspace_root().join("target")).unwrap();
    let f16 = tmp.path().join("f16.gguf");
    convert(&dir, "f16", &f16);
    for (ty, ftype) in [("q4_k_m", 15), ("q8_0", 7)] {
        let ours = tmp.path().join(format!("ours-{ty}.gguf"));
        let theirs = tmp.path().join(format!("llama-{ty}.gguf"));
        let opts = RequantizeOptions {
            out_type: OutType::parse(ty).unwrap(),
            overrides: vec![],
            force: false,
            allow_requantize: false,
            run: RunOptions::default(),
        };
        requantize(&f16, &ours, &opts).unwrap();
        llama_quantize(&f16, &theirs, QuantizeRequest { ftype, pure: false, threads: 2 }).unwrap();
        let same = compare_tensors(&ours, &theirs);
        println!("{ty}: {same} tensors, types and bytes identical to llama_model_quantize");
    }
}
