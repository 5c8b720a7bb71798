//! Chunking, statistics and the base-logits file on synthetic logits (no model needed).

use super::*;
use rand::{Rng, SeedableRng};

const N_VOCAB: usize = 300;

/// A logits row: smooth random values with a few spikes, like a model's.
fn row(rng: &mut impl Rng) -> Vec<f32> {
    (0..N_VOCAB).map(|i| rng.gen_range(-4.0..4.0) + if i % 37 == 0 { 6.0 } else { 0.0 }).collect()
}

fn chunks() -> Chunks {
    let tokens: Vec<u32> = (0..40).map(|i| (i * 7 % N_VOCAB) as u32).collect();
    Chunks::new(&tokens, 8, None, Some(2)).unwrap()
}

/// A complete base record over `chunks()` with random rows, and the rows themselves.
fn base(top_k: usize, seed: u64) -> (BaseLogits, Vec<Vec<f32>>) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let c = chunks();
    let mut b = BaseLogits::new("base.gguf", 16.0, N_VOCAB, c.clone(), top_k).unwrap();
    let mut s = Scratch::default();
    let mut rows = Vec::new();
    for i in 0..c.n_chunk() {
        let ch = c.chunk(i);
        for p in c.n_ctx() / 2..c.n_ctx() - 1 {
            let r = row(&mut rng);
            b.push_row(&r, ch[p + 1], &mut s).unwrap();
            rows.push(r);
        }
    }
    assert!(b.is_complete());
    (b, rows)
}

fn bytes_of(b: &BaseLogits) -> Vec<u8> {
    let mut out = Vec::new();
    b.write_to(&mut out).unwrap();
    out
}

fn read(bytes: &[u8]) -> Result<BaseLogits> {
    BaseLogits::read_from(bytes, bytes.len() as u64)
}

#[test]
fn chunks_follow_llama_perplexity() {
    let tokens: Vec<u32> = (100..141).collect();
    let c = Chunks::new(&tokens, 8, None, Some(2)).unwrap();
    assert_eq!(c.n_chunk(), 5, "41 tokens / 8, the rest dropped");
    assert_eq!(c.chunk(0), &[2, 101, 102, 103, 104, 105, 106, 107]);
    assert_eq!(c.chunk(1), &[2, 109, 110, 111, 112, 113, 114, 115], "first token of every chunk is BOS");
    assert_eq!(c.scored_per_chunk(), 3, "positions 4, 5, 6 predict 5, 6, 7");
    assert_eq!(c.n_scored(), 15);
    assert_eq!(Chunks::new(&tokens, 8, Some(2), None).unwrap().chunk(1)[0], 108, "no BOS: kept");
    assert_eq!(Chunks::new(&tokens, 8, Some(2), None).unwrap().n_chunk(), 2);
    assert_eq!(Chunks::new(&tokens, 7, None, None).unwrap().scored_per_chunk(), 3, "odd sizes: 7 - 1 - 3");
    for (n_ctx, max) in [(21, None), (3, None), (8, Some(0)), (MAX_CHUNK + 1, None)] {
        assert!(Chunks::new(&tokens, n_ctx, max, None).is_err(), "n_ctx {n_ctx}, max {max:?}");
    }
}

#[test]
fn perplexity_and_its_uncertainty_are_llama_cpp_formulas() {
    let nlls = [1.0f64, 2.0, 4.0, 0.5];
    let mut p = Perplexity::default();
    nlls.iter().for_each(|&x| p.add(x));
    let mean = nlls.iter().sum::<f64>() / 4.0;
    let var = nlls.iter().map(|x| x * x).sum::<f64>() / 4.0 - mean * mean;
    assert!((p.value() - mean.exp()).abs() < 1e-12);
    assert!((p.uncertainty() - mean.exp() * (var / 3.0).sqrt()).abs() < 1e-12);
    assert_eq!(Perplexity::default().uncertainty(), 0.0);
    // A uniform row over n tokens has perplexity n.
    let mut u = Perplexity::default();
    (0..10).for_each(|_| u.add(nll(&[0.5; 64], 3)));
    assert!((u.value() - 64.0).abs() < 1e-9, "{}", u.value());
}

#[test]
fn top_k_orders_by_value_then_id_and_skips_nan() {
    let row = [1.0, 5.0, f32::NAN, 5.0, -1.0, 3.0, f32::INFINITY];
    let mut out = Vec::new();
    top_k(&row, 4, &mut out);
    assert_eq!(out, vec![(6, f32::INFINITY), (1, 5.0), (3, 5.0), (5, 3.0)]);
    top_k(&row, 100, &mut out);
    assert_eq!(out.len(), 6);
    top_k(&row, 0, &mut out);
    assert!(out.is_empty());
}

#[test]
fn a_model_against_itself_has_zero_kl_and_full_agreement() {
    let (b, rows) = base(DEFAULT_TOP_K, 1);
    let mut cmp = Comparison::default();
    let mut s = Scratch::default();
    let c = b.chunks().clone();
    let nexts: Vec<u32> = (0..c.n_chunk()).flat_map(|i| c.chunk(i)[c.n_ctx() / 2 + 1..].to_vec()).collect();
    for (i, r) in rows.iter().enumerate() {
        cmp.add(b.row(i), r, nexts[i], &mut s);
    }
    let sum = cmp.summary();
    println!("{sum:?}");
    assert_eq!(sum.n_tokens, 15);
    assert_eq!((sum.kl_mean, sum.kl_max), (0.0, 0.0));
    assert_eq!((sum.top1_agreement, sum.top5_overlap, sum.rms_dp), (1.0, 1.0, 0.0));
    assert!((sum.ppl_ratio - 1.0).abs() < 1e-6, "{}", sum.ppl_ratio);
    assert!((b.perplexity().value() - sum.base_ppl).abs() < 1e-9);
}

#[test]
fn top_k_kl_is_a_close_lower_bound_of_the_full_kl() {
    let (b, rows) = base(32, 2);
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut s = Scratch::default();
    let (mut worst_gap, mut total_full) = (0.0f64, 0.0f64);
    for (i, r) in rows.iter().enumerate() {
        // A "quantised" model: the base's logits plus noise.
        let q: Vec<f32> = r.iter().map(|&x| x + rng.gen_range(-0.3..0.3)).collect();
        let mut one = Comparison::default();
        one.add(b.row(i), &q, 0, &mut s);
        let (est, full) = (one.summary().kl_mean, kl_full(r, &q));
        assert!(est <= full + 1e-6, "row {i}: estimate {est} above the full KL {full}");
        worst_gap = worst_gap.max((full - est) / full);
        total_full += full;
    }
    println!("mean full KL {:.5}, worst relative gap of the top-32 estimate {worst_gap:.3}", total_full / 15.0);
    assert!(total_full > 0.0);
    // Flat random rows put ~half their mass outside the top 32: the bound is loose there;
    // real models' rows are far more peaked (the real-model test measures the gap).
    assert!(worst_gap < 0.9);
}

#[test]
fn a_different_model_is_detected() {
    let (b, rows) = base(DEFAULT_TOP_K, 4);
    let mut cmp = Comparison::default();
    let mut s = Scratch::default();
    for (i, r) in rows.iter().enumerate() {
        let mut q = r.clone();
        q.reverse();
        cmp.add(b.row(i), &q, 1, &mut s);
    }
    let sum = cmp.summary();
    println!("{sum:?}");
    assert!(sum.kl_mean > 0.1 && sum.top1_agreement < 0.5 && sum.rms_dp >= 0.0);
    assert!(sum.kl_median <= sum.kl_p99 && sum.kl_p99 <= sum.kl_max);
    // NaN logits (a broken model): no panic, NaN figures.
    let mut bad = Comparison::default();
    bad.add(b.row(0), &vec![f32::NAN; N_VOCAB], 1, &mut s);
    assert!(bad.summary().kl_mean.is_nan() && bad.summary().kl_max.is_nan());
}

#[test]
fn the_file_round_trips_and_its_length_is_exact() {
    let (b, _) = base(8, 5);
    let bytes = bytes_of(&b);
    assert_eq!(bytes.len(), 40 + "base.gguf".len() + 4 * 40 + 15 * (8 * 8 + 8));
    assert_eq!(read(&bytes).unwrap(), b);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("base.logits");
    b.save(&path).unwrap();
    assert_eq!(BaseLogits::load(&path).unwrap(), b);
    assert!(!path.with_extension("partial").exists());
    let err = BaseLogits::load(&dir.path().join("missing")).unwrap_err().to_string();
    assert!(err.contains("missing"), "{err}");
}

#[test]
fn an_incomplete_or_broken_base_is_refused() {
    let c = chunks();
    let mut b = BaseLogits::new("x", 4.5, N_VOCAB, c, 8).unwrap();
    assert!(b.write_to(Vec::new()).is_err(), "no rows yet");
    let mut s = Scratch::default();
    assert!(b.push_row(&vec![f32::NAN; N_VOCAB], 1, &mut s).is_err());
    assert!(b.push_row(&[0.0; 10], 1, &mut s).is_err(), "wrong row length");
    assert!(b.push_row(&vec![0.0; N_VOCAB], N_VOCAB as u32, &mut s).is_err(), "next token outside");
    for k in [0, 4, MAX_TOP_K + 1, N_VOCAB + 1] {
        assert!(BaseLogits::new("x", 4.5, N_VOCAB, chunks(), k).is_err(), "top_k {k}");
    }
    assert!(BaseLogits::new("x", f64::NAN, N_VOCAB, chunks(), 8).is_err());
}

/// Offsets in a file made by `base(8, _)` with the label "base.gguf".
const LABEL_AT: usize = 40;
const TOKENS_AT: usize = 49;
const ROWS_AT: usize = TOKENS_AT + 4 * 40;

fn put_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn every_malformed_file_is_a_typed_error() {
    let (b, _) = base(8, 6);
    let good = bytes_of(&b);
    let f32_at = |bytes: &mut Vec<u8>, at: usize, v: f32| bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    type Defect = (&'static str, Box<dyn Fn(&mut Vec<u8>)>, &'static str);
    let cases: Vec<Defect> = vec![
        ("bad magic", Box::new(|f| f[0] = b'X'), "magic"),
        ("version 2", Box::new(|f| put_u32(f, 8, 2)), "version"),
        ("version 0", Box::new(|f| put_u32(f, 8, 0)), "version"),
        ("n_vocab 0", Box::new(|f| put_u32(f, 12, 0)), "n_vocab"),
        ("n_vocab 2^32-1", Box::new(|f| put_u32(f, 12, u32::MAX)), "n_vocab"),
        ("n_ctx 3", Box::new(|f| put_u32(f, 16, 3)), "n_ctx"),
        ("n_ctx 2^32-1", Box::new(|f| put_u32(f, 16, u32::MAX)), "n_ctx"),
        ("n_chunk 0", Box::new(|f| put_u32(f, 20, 0)), "n_chunk"),
        ("n_chunk 2^20 in a tiny file", Box::new(|f| put_u32(f, 20, 1 << 20)), "describes"),
        ("top_k 4", Box::new(|f| put_u32(f, 24, 4)), "top_k"),
        ("top_k above n_vocab", Box::new(|f| put_u32(f, 24, 301)), "top_k"),
        ("label length 5000", Box::new(|f| put_u32(f, 28, 5000)), "label length"),
        ("label length off by one", Box::new(|f| put_u32(f, 28, 10)), "describes"),
        ("bits per weight NaN", Box::new(|f| f[32..40].copy_from_slice(&f64::NAN.to_le_bytes())), "bits per weight"),
        (
            "bits per weight negative",
            Box::new(|f| f[32..40].copy_from_slice(&(-1f64).to_le_bytes())),
            "bits per weight",
        ),
        ("label not UTF-8", Box::new(|f| f[LABEL_AT] = 0xff), "UTF-8"),
        ("token outside the vocabulary", Box::new(|f| put_u32(f, TOKENS_AT + 8, 300)), "token 2"),
        ("row id outside the vocabulary", Box::new(|f| put_u32(f, ROWS_AT, 300)), "row 0"),
        ("row id twice", Box::new(|f| f.copy_within(ROWS_AT..ROWS_AT + 4, ROWS_AT + 4)), "twice"),
        ("log-prob NaN", Box::new(move |f| f32_at(f, ROWS_AT + 32, f32::NAN)), "not finite"),
        ("log-prob +1", Box::new(move |f| f32_at(f, ROWS_AT + 32, 1.0)), "above 0"),
        ("log-probs unsorted", Box::new(move |f| f32_at(f, ROWS_AT + 36, 0.0)), "descending"),
        ("next log-prob -inf", Box::new(move |f| f32_at(f, ROWS_AT + 64, f32::NEG_INFINITY)), "not finite"),
        ("rest mass NaN", Box::new(move |f| f32_at(f, ROWS_AT + 68, f32::NAN)), "outside the top-k"),
        ("mass not 1", Box::new(move |f| f32_at(f, ROWS_AT + 68, -0.01)), "sum to"),
        ("trailing byte", Box::new(|f| f.push(0)), "describes"),
        ("one byte short", Box::new(|f| _ = f.pop()), "describes"),
    ];
    for (name, defect, needle) in &cases {
        let mut bytes = good.clone();
        defect(&mut bytes);
        let err = read(&bytes).map(|_| ()).unwrap_err().to_string();
        println!("{name}: {err}");
        assert!(err.contains(needle), "{name}: {err:?} lacks {needle:?}");
    }
}

#[test]
fn a_file_cut_at_every_byte_is_refused() {
    let (b, _) = base(8, 7);
    let good = bytes_of(&b);
    for cut in 0..good.len() {
        assert!(read(&good[..cut]).is_err(), "cut at {cut}");
        // The declared length may also be a lie: the reader must not trust it past the bytes.
        assert!(BaseLogits::read_from(&good[..cut], good.len() as u64).is_err(), "cut at {cut}, full length claimed");
    }
}

#[test]
fn bits_per_weight_counts_every_tensor() {
    use crate::gguf::{GgmlType, GgufWriter};
    let mut w = GgufWriter::from_writer(Vec::new());
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_tensor_info("a", &[256, 2], GgmlType::F16).unwrap();
    w.add_tensor_info("b", &[256], GgmlType::F32).unwrap();
    w.write_tensor_data("a", &[0u8; 1024]).unwrap();
    w.write_tensor_data("b", &[0u8; 1024]).unwrap();
    let bytes = w.finish().unwrap();
    let file = GgufFile::from_bytes(bytes).unwrap();
    // (1024 + 1024) bytes × 8 / 768 parameters.
    assert!((bits_per_weight(&file) - 2048.0 * 8.0 / 768.0).abs() < 1e-12);
}
