//! The fuzz seed corpus in `fuzz/seeds/`: a few small valid files and corruptions of
//! them. This test checks that the committed seeds still parse (or fail) as intended;
//! with `GGUF_REGENERATE_SEEDS=1` it writes them afresh first.

use gemma_gguf::gguf::{GgmlType, GgufFile, GgufWriter, KEY_ALIGNMENT};
use std::path::PathBuf;

fn seeds_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds")
}

fn tensors_file(alignment: Option<u32>, version: u32) -> Vec<u8> {
    let mut w = GgufWriter::from_writer(Vec::new());
    w.set_version(version).unwrap();
    w.add_kv("general.architecture", "gemma3").unwrap();
    if let Some(a) = alignment {
        w.add_kv(KEY_ALIGNMENT, a).unwrap();
    }
    w.add_kv("gemma3.block_count", 1u32).unwrap();
    w.add_kv("gemma3.rope.freq_base", 10000.0f32).unwrap();
    w.add_kv("tokenizer.ggml.tokens", vec!["<pad>".to_owned(), "▁a".to_owned()]).unwrap();
    w.add_kv("tokenizer.ggml.scores", vec![0.0f32, -1.5]).unwrap();
    w.add_kv("tokenizer.ggml.add_bos_token", true).unwrap();
    let specs: [(&str, &[u64], GgmlType); 4] = [
        ("token_embd.weight", &[256, 2], GgmlType::Q4_K),
        ("output_norm.weight", &[8], GgmlType::F32),
        ("blk.0.attn_q.weight", &[32, 2], GgmlType::Q8_0),
        ("blk.0.ffn_up.weight", &[4, 1, 2], GgmlType::BF16),
    ];
    for (name, dims, ty) in specs {
        w.add_tensor_info(name, dims, ty).unwrap();
    }
    for t in w.tensors().to_vec() {
        w.write_tensor_data(&t.name, &vec![0x5A; t.n_bytes as usize]).unwrap();
    }
    w.finish().unwrap()
}

fn every_value_type() -> Vec<u8> {
    let mut w = GgufWriter::from_writer(Vec::new());
    w.add_kv("u8", 1u8).unwrap();
    w.add_kv("i8", -1i8).unwrap();
    w.add_kv("u16", 2u16).unwrap();
    w.add_kv("i16", -2i16).unwrap();
    w.add_kv("u32", 3u32).unwrap();
    w.add_kv("i32", -3i32).unwrap();
    w.add_kv("f32", 0.5f32).unwrap();
    w.add_kv("bool", false).unwrap();
    w.add_kv("str", "s").unwrap();
    w.add_kv("u64", 4u64).unwrap();
    w.add_kv("i64", -4i64).unwrap();
    w.add_kv("f64", 0.25f64).unwrap();
    w.add_kv("arr.i16", vec![1i16, 2]).unwrap();
    w.add_kv("arr.bool", vec![true]).unwrap();
    w.add_kv("arr.f64", vec![1.0f64]).unwrap();
    w.finish().unwrap()
}

/// (file name, bytes, whether the reader must accept it).
fn seeds() -> Vec<(&'static str, Vec<u8>, bool)> {
    let base = tensors_file(None, 3);
    let mut bad_version = base.clone();
    bad_version[4] = 4;
    let mut bad_count = base.clone();
    bad_count[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut bad_type = base.clone();
    // The value type of the first KV: after the header (24) and the key (8 + 20).
    bad_type[52] = 13;
    vec![
        ("valid-tensors.gguf", base.clone(), true),
        ("valid-v2-align64.gguf", tensors_file(Some(64), 2), true),
        ("valid-every-value-type.gguf", every_value_type(), true),
        ("valid-empty.gguf", GgufWriter::from_writer(Vec::new()).finish().unwrap(), true),
        ("bad-truncated.gguf", base[..base.len() / 2].to_vec(), false),
        ("bad-version.gguf", bad_version, false),
        ("bad-count.gguf", bad_count, false),
        ("bad-value-type.gguf", bad_type, false),
    ]
}

#[test]
fn fuzz_seeds_are_as_intended() {
    let dir = seeds_dir();
    let regenerate = std::env::var_os("GGUF_REGENERATE_SEEDS").is_some();
    let mut total = 0;
    for (name, bytes, valid) in seeds() {
        let path = dir.join(name);
        if regenerate {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(&path, &bytes).unwrap();
        }
        let Ok(on_disk) = std::fs::read(&path) else {
            // The fuzz directory is optional (e.g. in a packaged crate).
            eprintln!("{} missing; run with GGUF_REGENERATE_SEEDS=1", path.display());
            continue;
        };
        total += on_disk.len();
        assert_eq!(GgufFile::from_bytes(on_disk).is_ok(), valid, "{name}");
    }
    assert!(total < 100_000, "seeds take {total} bytes");
}
