//! The real Gemma 3 270M Q4_K_M GGUF written by llama.cpp: parse every key and tensor,
//! check that the sizes add up to the file length, and that writing it back gives the
//! same bytes.
//!
//! The file is `$GEMMA_TEST_MODEL` or the workspace's `models/` copy. Without it the test
//! prints a notice and passes, except in CI (`CI=true`), where a missing model is a failure.

use gemma_gguf::gguf::{GgmlType, GgufFile, GgufValue};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::time::Instant;

/// `$GEMMA_TEST_MODEL`, else `models/gemma-3-270m-q4_k_m.gguf` in the workspace (where
/// `scripts/fetch-model.sh` puts it). Missing: a notice, except under CI where it fails.
fn model_path() -> Option<PathBuf> {
    let path = match std::env::var_os("GEMMA_TEST_MODEL") {
        Some(p) => PathBuf::from(p),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../models/gemma-3-270m-q4_k_m.gguf")),
    };
    if path.is_file() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
        panic!("CI=true but the real test model is missing at {}: run scripts/fetch-model.sh", path.display())
    }
    eprintln!("{} is missing: skipping the real-model GGUF test (run scripts/fetch-model.sh)", path.display());
    None
}

/// A sink that compares what is written with the bytes of a reader (the original
/// file, streamed), so the test holds neither file in memory.
struct CompareWriter<R: Read> {
    expected: R,
    pos: u64,
    first_mismatch: Option<u64>,
    buf: Vec<u8>,
}

impl<R: Read> Write for CompareWriter<R> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.resize(data.len(), 0);
        let n = read_up_to(&mut self.expected, &mut self.buf)?;
        if self.first_mismatch.is_none() && self.buf[..n] != *data {
            let at = data.iter().zip(&self.buf[..n]).position(|(a, b)| a != b);
            self.first_mismatch = Some(self.pos + at.unwrap_or(n) as u64);
        }
        self.pos += data.len() as u64;
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Fills `buf` as far as the reader allows; returns how much was read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

#[test]
fn real_gemma3_270m_q4_k_m() {
    let Some(path) = model_path() else { return };
    let start = Instant::now();
    let file = GgufFile::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    println!("opened {} in {:?}", path.display(), start.elapsed());

    check_metadata(&file);
    check_tensors(&file);
    check_write_is_identical(&file, &path);
}

fn check_metadata(file: &GgufFile) {
    assert_eq!(file.version(), 3);
    assert_eq!(file.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(file.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(file.get_u32("gemma3.embedding_length").unwrap(), 640);
    let tokens = file.get_str_array("tokenizer.ggml.tokens").unwrap();
    let scores = file.get_f32_array("tokenizer.ggml.scores").unwrap();
    assert_eq!(tokens.len(), scores.len());
    let mut n_values = 0usize;
    for (_key, value) in file.metadata() {
        n_values += match value {
            GgufValue::Array(a) => a.len(),
            _ => 1,
        };
    }
    println!("{} keys, {n_values} values, {} tokens", file.metadata().len(), tokens.len());
}

fn check_tensors(file: &GgufFile) {
    let align = file.alignment();
    let mut end = file.data_offset();
    let mut n_q4_k = 0;
    for t in file.tensors() {
        let data = file.tensor_data(t).unwrap();
        assert_eq!(data.len() as u64, t.n_bytes, "{}", t.name);
        let row = t.ggml_type.row_size(t.dims[0]).unwrap();
        assert_eq!(row * t.n_elements() / t.dims[0], t.n_bytes, "{}", t.name);
        assert_eq!(file.data_offset() + t.offset, end, "{} is not consecutive", t.name);
        end = (end + t.n_bytes).div_ceil(align) * align;
        n_q4_k += usize::from(t.ggml_type == GgmlType::Q4_K);
    }
    // llama.cpp pads after the last tensor too, so the padded sizes add up to the file.
    assert_eq!(end, file.file_len(), "tensor sizes do not add up to the file length");
    assert!(n_q4_k > 0);
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.dims[0], 640);
    println!("{} tensors, {n_q4_k} of them q4_K", file.tensors().len());
}

fn check_write_is_identical(file: &GgufFile, path: &std::path::Path) {
    let sink = CompareWriter {
        expected: io::BufReader::new(File::open(path).unwrap()),
        pos: 0,
        first_mismatch: None,
        buf: Vec::new(),
    };
    let start = Instant::now();
    let mut sink = file.write_to(sink).unwrap();
    println!("wrote and compared {} bytes in {:?}", sink.pos, start.elapsed());
    assert_eq!(sink.first_mismatch, None, "first differing byte");
    assert_eq!(sink.pos, file.file_len());
    assert_eq!(sink.expected.read(&mut [0u8; 1]).unwrap(), 0, "the original is longer");
    // write(x) == x byte for byte, so read(write(x)) == read(x) needs no second copy.
}
