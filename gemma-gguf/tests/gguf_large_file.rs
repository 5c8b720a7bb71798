//! A multi-GB GGUF opens by reading its header only: a sparse 6 GiB file (one declared
//! F32 tensor, no data on disk) is opened and its metadata read; the time is printed.

use gemma_gguf::gguf::{GgmlType, GgufFile, GgufWriter};
use std::time::Instant;

#[test]
fn multi_gb_file_opens_from_its_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.gguf");
    let file = std::fs::File::create(&path).unwrap();
    let dims = [4096u64, 393_216]; // 4096 × 393216 f32 = 6 GiB
    let mut w = GgufWriter::from_writer(file);
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_tensor_info("token_embd.weight", &dims, GgmlType::F32).unwrap();
    let n_bytes = w.tensors()[0].n_bytes;
    // One byte of data makes the writer emit the header; the rest of the file stays a hole.
    w.write_tensor_part("token_embd.weight", &[0]).unwrap();
    drop(w);
    let header_len = std::fs::metadata(&path).unwrap().len() - 1;
    let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    file.set_len(header_len + n_bytes).unwrap();

    let start = Instant::now();
    let g = GgufFile::open(&path).unwrap();
    let elapsed = start.elapsed();
    assert_eq!(g.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(g.tensors()[0].n_bytes, n_bytes);
    println!("opened a {:.1} GiB GGUF in {elapsed:?}", g.file_len() as f64 / (1u64 << 30) as f64);
}
