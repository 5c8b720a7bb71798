//! Our GGUF reader and ggml's own `gguf.cpp` judge the same generated corpus of corrupt
//! files: a small valid file cut at every byte offset, and seeded random byte flips.
//!
//! Where the two disagree the test prints each case by our error, and every disagreement
//! must belong to a category where we are stricter by design (listed with the reason in
//! `EXPLAINED`). A file ggml refuses but we accept would be a hole in our validation and
//! fails the test.
#![cfg(feature = "ggml")]

use gemma_gguf::ggml::{ggml_gguf_parse, set_logging};
use gemma_gguf::gguf::{GgmlType, GgufArray, GgufFile, GgufWriter};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::collections::BTreeMap;

/// Error variants with which we refuse files that ggml (parsing with `no_alloc`) accepts,
/// and why ours is right.
const EXPLAINED: &[(&str, &str)] = &[
    (
        "TensorOutOfBounds",
        "ggml with no_alloc reads no tensor data, so it does not notice a data section cut short; \
         we check every tensor's end against the file length at open (BAD-INPUTS 9, 11)",
    ),
    ("DataSectionOutOfBounds", "ggml with no_alloc does not check that the data section starts inside the file; we do"),
    ("InvalidUtf8", "ggml does not validate UTF-8 in keys and strings; we refuse it (BAD-INPUTS 4)"),
    ("InvalidBool", "ggml accepts any byte as a bool; we accept only 0 and 1 (BAD-INPUTS 6)"),
    ("EmptyKey", "ggml accepts an empty key; we refuse it (BAD-INPUTS 4)"),
    ("EmptyTensorName", "ggml accepts an empty tensor name; we refuse it (BAD-INPUTS 8)"),
    ("InvalidAlignment", "we cap general.alignment at 64 KiB; ggml allows up to 2^31 (BAD-INPUTS 7)"),
];

/// A small valid file: a few keys of several types, three tensors of different types.
fn valid_file() -> Vec<u8> {
    let mut w = GgufWriter::from_writer(Vec::new());
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_kv("gemma3.block_count", 2u32).unwrap();
    w.add_kv("gemma3.attention.layer_norm_rms_epsilon", 1e-6f32).unwrap();
    w.add_kv("tokenizer.ggml.add_bos_token", true).unwrap();
    w.add_kv("tokenizer.ggml.tokens", GgufArray::String(vec!["<pad>".into(), "a".into(), "é".into()])).unwrap();
    w.add_kv("tokenizer.ggml.scores", vec![0.0f32, -1.0, -2.0]).unwrap();
    let tensors: [(&str, Vec<u64>, GgmlType); 3] = [
        ("token_embd.weight", vec![32, 3], GgmlType::Q8_0),
        ("blk.0.attn_norm.weight", vec![32], GgmlType::F32),
        ("blk.0.ffn_up.weight", vec![32, 2], GgmlType::F16),
    ];
    for (name, dims, ty) in &tensors {
        w.add_tensor_info(name, dims, *ty).unwrap();
    }
    let mut rng = StdRng::seed_from_u64(7);
    for (name, dims, ty) in &tensors {
        let n = ty.row_size(dims[0]).unwrap() * dims[1..].iter().product::<u64>();
        let data: Vec<u8> = (0..n).map(|_| rng.gen::<u8>() & 0x3f).collect();
        w.write_tensor_data(name, &data).unwrap();
    }
    w.finish().unwrap()
}

fn variant(e: &dyn std::fmt::Debug) -> String {
    let s = format!("{e:?}");
    s.split(|c: char| !c.is_alphanumeric() && c != '_').next().unwrap_or("").to_string()
}

#[derive(Default)]
struct Tally {
    agree: usize,
    ours_stricter: BTreeMap<String, (usize, String)>,
    ggml_stricter: Vec<String>,
}

impl Tally {
    fn judge(&mut self, case: &str, bytes: &[u8]) {
        let ours = GgufFile::from_bytes(bytes.to_vec());
        let ggml = ggml_gguf_parse(bytes);
        match (&ours, ggml) {
            (Ok(_), Some(_)) | (Err(_), None) => self.agree += 1,
            (Err(e), Some(_)) => {
                let entry = self.ours_stricter.entry(variant(e)).or_insert((0, format!("{case}: {e}")));
                entry.0 += 1;
            }
            (Ok(_), None) => self.ggml_stricter.push(case.to_string()),
        }
    }
}

#[test]
fn our_reader_and_ggml_judge_a_corrupt_corpus() {
    set_logging(false);
    let valid = valid_file();
    assert!(GgufFile::from_bytes(valid.clone()).is_ok());
    assert!(ggml_gguf_parse(&valid).is_some(), "ggml must accept the valid base file");

    let mut tally = Tally::default();
    for cut in 0..valid.len() {
        tally.judge(&format!("truncated at {cut}"), &valid[..cut]);
    }
    let mut rng = StdRng::seed_from_u64(2024);
    let flips = 4000;
    for i in 0..flips {
        let mut b = valid.clone();
        for _ in 0..rng.gen_range(1..=3) {
            let at = rng.gen_range(0..b.len());
            b[at] ^= 1 << rng.gen_range(0..8);
        }
        tally.judge(&format!("flip case {i}"), &b);
    }
    set_logging(true);

    let total = valid.len() + flips;
    println!("{total} files ({} truncations, {flips} flip sets): both agree on {}", valid.len(), tally.agree);
    for (v, (n, example)) in &tally.ours_stricter {
        let why = EXPLAINED.iter().find(|(k, _)| k == v).map_or("UNEXPLAINED", |(_, w)| w);
        println!("  we refuse, ggml accepts: {n:5} × {v} — {why}\n      e.g. {example}");
    }
    println!("  ggml refuses, we accept: {}", tally.ggml_stricter.len());
    let unexplained: Vec<&String> =
        tally.ours_stricter.keys().filter(|v| !EXPLAINED.iter().any(|(k, _)| k == v)).collect();
    assert!(unexplained.is_empty(), "disagreements without an explanation: {unexplained:?}");
    assert!(
        tally.ggml_stricter.is_empty(),
        "files ggml refuses but we accept: {:?}",
        &tally.ggml_stricter[..tally.ggml_stricter.len().min(10)]
    );
}
