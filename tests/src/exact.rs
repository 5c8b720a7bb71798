//! Our runtime against llama.cpp itself (libllama from llama-cpp-sys-2) on tiny random GGUFs
//! (`tiny_model`): per-position logits of a prompt, then greedy single-token steps, with the
//! flash-attention kernel off and on. Both runtimes run the same ggml kernels on the same
//! data in the same order, so the logits are expected to be identical: [`check_cases`]
//! prints the max abs difference and requires 0.

use crate::llama_logits::{LlamaOptions, LlamaRunner};
use crate::tiny_model::{ids, TinyConfig, TinyModel};
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};
use std::path::Path;
use tempfile::TempDir;

/// Training context of the tiny files: room for the long prompt's 1024-token context.
pub const N_CTX_TRAIN: u32 = 2048;
/// Greedy single-token steps after each prompt.
pub const N_STEPS: usize = 16;

/// `n` token ids: BOS, then a fixed pseudo-random walk over the non-special tokens, so no
/// two positions see the same context.
pub fn prompt(n_vocab: u32, n: usize) -> Vec<u32> {
    let first = ids::FIRST_BYTE;
    let mut state = 0x2545_f491_u32;
    let walk = std::iter::repeat_with(move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        first + state % (n_vocab - first)
    });
    std::iter::once(ids::BOS).chain(walk).take(n).collect()
}

pub fn argmax(row: &[f32]) -> u32 {
    row.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map_or(0, |(i, _)| i as u32)
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "logit counts differ");
    a.iter().zip(b).map(|(x, y)| (x - y).abs()).fold(0.0, f32::max)
}

/// Max |Δlogit| between our runtime and libllama on `path`: over every position of a
/// `n_prompt`-token prompt, and over `N_STEPS` greedy single-token steps after it (the
/// tokens chosen from llama.cpp's logits, so both runtimes see the same sequence).
pub fn compare(path: &Path, n_ctx: u32, n_prompt: usize, flash_attn: bool) -> (f32, f32) {
    let model = Model::load(path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let opts = SessionOptions { n_ctx, flash_attn, ..Default::default() };
    let mut ses = Session::new(&model, opts).expect("session");
    let mut ll = LlamaRunner::load(path, LlamaOptions { capture: &[], n_ctx, n_threads: 1, flash_attn });
    assert_eq!(ll.n_vocab(), model.n_vocab() as usize);
    let toks = prompt(model.n_vocab(), n_prompt);
    let ours = ses.decode(&toks, Outputs::All).expect("decode the prompt");
    let theirs = ll.eval(&toks, true);
    let d_prompt = max_diff(&ours, &theirs);
    let nv = model.n_vocab() as usize;
    let mut next = argmax(&theirs[theirs.len() - nv..]);
    let (mut steps, mut steps_ll) = (Vec::new(), Vec::new());
    for _ in 0..N_STEPS {
        steps.extend(ses.decode(&[next], Outputs::Last).expect("decode one token"));
        let row = ll.eval(&[next], false);
        next = argmax(&row);
        steps_ll.extend(row);
    }
    assert!(ours.iter().chain(&steps).all(|v| v.is_finite()), "non-finite logits");
    (d_prompt, max_diff(&steps, &steps_ll))
}

/// Writes `cfg` (with the tests' training context) into `dir` as `name.gguf`.
pub fn write(dir: &TempDir, name: &str, cfg: TinyConfig) -> std::path::PathBuf {
    let path = dir.path().join(format!("{name}.gguf"));
    TinyModel::new(TinyConfig { n_ctx_train: N_CTX_TRAIN, ..cfg }).write(&path).expect("write the tiny model");
    path
}

/// Runs every (file, context, prompt length) case with flash attention off and on, prints
/// a table and requires identical logits everywhere.
pub fn check_cases(cases: &[(&str, TinyConfig, u32, usize)]) {
    let dir = TempDir::new().expect("temp dir");
    let mut worst = 0f32;
    for (i, (name, cfg, n_ctx, n_prompt)) in cases.iter().enumerate() {
        let path = write(&dir, &format!("case{i}"), cfg.clone());
        for flash in [false, true] {
            let (d_prompt, d_steps) = compare(&path, *n_ctx, *n_prompt, flash);
            let fa = if flash { "on" } else { "off" };
            print!("{name:<28} n_ctx {n_ctx:4}, flash attention {fa:3}: max |Δlogit| ");
            println!("{n_prompt:4}-token prompt = {d_prompt:e}, {N_STEPS} steps = {d_steps:e}");
            worst = worst.max(d_prompt).max(d_steps);
        }
    }
    println!("worst max |Δlogit| against llama.cpp: {worst:e}");
    assert_eq!(worst, 0.0, "logits differ from llama.cpp's");
}

/// The logits of a prompt's last position decoded for that position only, against the last
/// row of the same prompt decoded for every position, flash attention off and on, for each
/// prompt length. Decoded alone, the layers that share an earlier layer's KV cache run on
/// that one row (`arch::Pass::read_rows_inputs`); decoded whole, every layer runs on every row,
/// as libllama does. Only the ggml kernels differ (single-row against batched), so the two
/// must agree to rounding. The yardstick is another change of kernels on the same data:
/// the largest difference between the whole-prompt logits with flash attention off and on.
/// Prints both and returns (largest narrowed difference, yardstick), each relative to the
/// largest |logit|.
pub fn read_rows_only(path: &Path, n_ctx: u32, prompt_lens: &[usize]) -> (f32, f32) {
    let model = Model::load(path, &LoadOptions { threads: Some(1), ..Default::default() }).expect("load");
    let nv = model.n_vocab() as usize;
    let (mut worst, mut yardstick) = (0f32, 0f32);
    for &n in prompt_lens {
        let toks = prompt(model.n_vocab(), n);
        let mut whole = Vec::new();
        for flash_attn in [false, true] {
            let opts = SessionOptions { n_ctx, flash_attn, ..Default::default() };
            let all = Session::new(&model, opts).expect("session").decode(&toks, Outputs::All).expect("all rows");
            let last = Session::new(&model, opts).expect("session").decode(&toks, Outputs::Last).expect("last row");
            let full = all[all.len() - nv..].to_vec();
            let scale = full.iter().fold(0f32, |m, v| m.max(v.abs()));
            let rel = max_diff(&last, &full) / scale;
            let fa = if flash_attn { "on " } else { "off" };
            print!("{n:4}-token prompt, flash attention {fa}: the last row alone against every row: ");
            println!("max |Δlogit| {rel:.3e} of the largest logit, argmax {} / {}", argmax(&last), argmax(&full));
            worst = worst.max(rel);
            whole.push((full, scale));
        }
        let fa_switch = max_diff(&whole[0].0, &whole[1].0) / whole[0].1;
        println!("{n:4}-token prompt: flash attention off against on, every row: {fa_switch:.3e}");
        yardstick = yardstick.max(fa_switch);
    }
    (worst, yardstick)
}
