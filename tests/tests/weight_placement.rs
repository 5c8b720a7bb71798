//! Where the CPU's weights live (model.rs, `load_mapped`): by default the weights that are not
//! repacked and not only gathered by row are copied onto memory advised for 2 MiB pages, the
//! file's pages under them given back; `LoadOptions::mmap` (`--mmap`) keeps them mapped.
//! The copies are the same bytes, so the logits must be bit-identical either way, on the
//! real 270M file (its 170 MiB q8_0 output projection is one of the copies). On x86-64 the
//! file's 81 q5_0 matrices (attn_q, attn_k, ffn_gate, ffn_up, half the attn_v) are copied widened to
//! q8_0, the same values in wider blocks; ggml's x86 kernel takes both types through the same
//! arithmetic, so the logits must still be bit-identical, for the prompt's batched products
//! and for the one-token steps.
use gemma_gguf::gguf::GgmlType;
use gemma_gguf::model::{LoadOptions, Model};
use gemma_gguf::session::{Outputs, Session, SessionOptions};

/// Transparent huge pages as Linux reports them (`always [madvise] never`), if it does.
fn thp_setting() -> Option<String> {
    std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok().map(|s| s.trim().to_string())
}

/// `AnonHugePages` of this process, in kB (Linux).
fn anon_huge_kb() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    s.lines().find(|l| l.starts_with("AnonHugePages:"))?.split_whitespace().nth(1)?.parse().ok()
}

fn logits(model: &Model, tokens: &[u32]) -> Vec<f32> {
    let mut s = Session::new(model, SessionOptions { n_ctx: 256, ..Default::default() }).expect("session");
    let mut out = s.decode(tokens, Outputs::All).expect("prompt");
    // Then one-token steps, the decode path that streams every weight per token.
    let mut next = 2u32;
    for _ in 0..8 {
        let step = s.decode(&[next], Outputs::Last).expect("step");
        next = step.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i as u32).unwrap();
        out.extend(step);
    }
    out
}

#[test]
fn copied_weights_give_the_mapped_files_logits() {
    let Some(path) = gemma_tests::test_model() else { return };
    let thp = thp_setting();
    println!("transparent huge pages: {}", thp.as_deref().unwrap_or("(not reported)"));
    let opts = |mmap| LoadOptions { threads: Some(2), mmap, ..Default::default() };

    let huge_before = anon_huge_kb();
    let copied = Model::load(&path, &opts(false)).expect("load, copies");
    let huge_after = anon_huge_kb();
    let mapped = Model::load(&path, &opts(true)).expect("load, mapped");
    println!(
        "default: {} tensors ({:.1} MiB, {:.1} MiB in the file) copied, {} q5_0 as q8_0, {} repacked; \
         --mmap: {} copied; AnonHugePages {:?} -> {:?} kB",
        copied.copied_weights(),
        copied.copied_bytes() as f64 / 1048576.0,
        copied.copied_file_bytes() as f64 / 1048576.0,
        copied.widened_weights(),
        copied.repacked_weights(),
        mapped.copied_weights(),
        huge_before,
        huge_after
    );
    assert_eq!((mapped.copied_weights(), mapped.copied_bytes()), (0, 0), "--mmap copies nothing");
    assert_eq!(mapped.repacked_weights(), copied.repacked_weights(), "repacking does not depend on --mmap");
    let thp_usable = cfg!(target_os = "linux") && thp.as_deref().is_some_and(|s| !s.contains("[never]"));
    if thp_usable {
        // Every matrix that is not repacked, the output projection among them.
        assert!(copied.copied_bytes() > 170 << 20, "the output projection (170 MiB) is copied");
        if cfg!(target_arch = "x86_64") {
            // Every q5_0 matrix (where ggml has llamafile's kernels, as every x86-64 build of
            // ours does).
            let q5_0: Vec<_> = mapped.gguf().tensors().iter().filter(|t| t.ggml_type == GgmlType::Q5_0).collect();
            assert!(q5_0.len() >= 72, "the 270M's q5_0 matrices (attn_q/k, ffn_gate/up, half the attn_v)");
            assert_eq!(copied.widened_weights(), q5_0.len(), "the q5_0 matrices are widened");
            // A 22-byte q5_0 block becomes a 34-byte q8_0 block.
            let q5_0_bytes: u64 = q5_0.iter().map(|t| t.n_bytes).sum();
            assert_eq!((copied.copied_bytes() - copied.copied_file_bytes()) as u64, q5_0_bytes / 22 * 12);
            // `--no-widen` copies them as they are.
            let kept = Model::load(&path, &LoadOptions { no_widen: true, ..opts(false) }).expect("load, --no-widen");
            assert_eq!(kept.widened_weights(), 0);
            assert_eq!(
                (kept.copied_weights(), kept.copied_bytes()),
                (copied.copied_weights(), copied.copied_file_bytes())
            );
        }
        // Huge pages are a request; a fragmented machine may give fewer, so only print them.
    } else {
        assert_eq!(copied.copied_weights(), 0, "no copies without transparent huge pages");
    }

    let tokens: Vec<u32> = (0..48).map(|i| 2 + (i * 7919) % 200_000).collect();
    let (a, b) = (logits(&copied, &tokens), logits(&mapped, &tokens));
    assert_eq!(a.len(), b.len());
    let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    let same = a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits());
    println!("{} logits (48 prompt rows, 8 steps): max |Δ| {max}, bit-identical: {same}", a.len());
    assert!(same, "copied and mapped weights give different logits (max |Δ| {max})");
}
