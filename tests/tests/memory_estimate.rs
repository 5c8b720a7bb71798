//! The fit check's scratch estimate (`Session::scratch_bytes_for`) against the compute buffer
//! ggml really allocates for the largest step: the last micro-batch of a full context, on the
//! real 270M model, with and without flash attention.
//!
//! The estimate is used to refuse a context that does not fit before anything is allocated,
//! so it should neither overstate much (a context that fits would be refused) nor understate
//! much (a context that does not fit would be attempted). The bounds: from 0.8 to 1.05 times
//! the real buffer (it leaves out small tensors, such as the last row's logits).
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};

#[test]
fn scratch_estimate_is_close_to_the_real_compute_buffer() {
    let Some(path) = gemma_tests::test_model() else { return };
    let model = Model::load(&path, &LoadOptions { threads: Some(2), ..Default::default() }).expect("model loads");
    let mut rows = Vec::new();
    for (n_ctx, n_ubatch, flash_attn) in [(1024, 256, false), (1024, 256, true), (2048, 512, false)] {
        let opts = SessionOptions { n_ctx, n_ubatch, flash_attn, ..Default::default() };
        let estimate = Session::scratch_bytes_for(&model, &opts).expect("no overflow");
        let mut session = Session::new(&model, opts).expect("session");
        // A full context: n_ctx / n_ubatch micro-batches, the last one against a full cache.
        let tokens: Vec<u32> = (0..n_ctx).map(|i| 1000 + (i * 7919) % 200_000).collect();
        session.decode(&tokens, Outputs::Last).expect("decode a full context");
        let real = session.compute_bytes() as u64;
        let ratio = estimate as f64 / real as f64;
        println!(
            "n_ctx {n_ctx}, n_ubatch {n_ubatch}, flash attention {flash_attn}: estimate {:.1} MiB, \
             real {:.1} MiB, ratio {ratio:.3}",
            estimate as f64 / 1048576.0,
            real as f64 / 1048576.0
        );
        rows.push((n_ctx, n_ubatch, flash_attn, ratio));
    }
    for (n_ctx, n_ubatch, fa, ratio) in rows {
        assert!((0.8..=1.05).contains(&ratio), "n_ctx {n_ctx}, n_ubatch {n_ubatch}, fa {fa}: ratio {ratio:.3}");
    }
}
