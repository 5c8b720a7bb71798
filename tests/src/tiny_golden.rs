//! The transformers references of the tiny checkpoints in `tests/data/tiny/<name>/`
//! (scripts/make_tiny_checkpoints.py, scripts/make_tiny_gemma4.py): `golden.json` (token ids,
//! texts with their ids, the shape of the logits) and `logits.f32` (float32 little-endian,
//! `[positions][vocab]`).
use crate::workspace_root;
use std::path::PathBuf;

/// A transformers reference: the checkpoint, its tokens and float32 logits.
pub struct Golden {
    pub dir: PathBuf,
    pub ids: Vec<u32>,
    pub logits: Vec<f32>,
    pub n_vocab: usize,
    pub tokenizer: Vec<(String, Vec<u32>)>,
}

/// Reads the reference of checkpoint `name` (panics on a missing or malformed fixture).
pub fn golden(name: &str) -> Golden {
    let dir = workspace_root().join("tests/data/tiny").join(name);
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let ids: Vec<u32> = g["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
    let n_vocab = g["logits_shape"][1].as_u64().unwrap() as usize;
    let raw = std::fs::read(dir.join("logits.f32")).unwrap();
    let logits: Vec<f32> = raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
    assert_eq!(logits.len(), ids.len() * n_vocab);
    let tokenizer = g["tokenizer"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let ids = t["ids"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as u32).collect();
            (t["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    Golden { dir, ids, logits, n_vocab, tokenizer }
}
