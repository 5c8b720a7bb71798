//! Unit tests: one hand-made file per defect of docs BAD-INPUTS.md §1–12, truncation at
//! every offset, random byte flips, round trips in both directions.

use super::*;
use rand::{Rng, SeedableRng};

/// Builds GGUF bytes field by field, so that tests can write what the writer refuses.
#[derive(Clone, Default)]
struct Raw(Vec<u8>);

impl Raw {
    fn header(version: u32, n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw(b"GGUF".to_vec());
        r.u32(version).u64(n_tensors).u64(n_kv);
        r
    }
    fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn i64(&mut self, v: i64) -> &mut Self {
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    fn str(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64).bytes(s.as_bytes())
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key).u32(4).u32(v)
    }
    fn kv_str(&mut self, key: &str, v: &str) -> &mut Self {
        self.str(key).u32(8).str(v)
    }
    fn tensor(&mut self, name: &str, dims: &[i64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.i64(d);
        }
        self.u32(type_id).u64(offset)
    }
    fn pad(&mut self, align: usize) -> &mut Self {
        self.0.resize(self.0.len().next_multiple_of(align), 0);
        self
    }
    fn data(&mut self, n: usize, fill: u8) -> &mut Self {
        self.0.resize(self.0.len() + n, fill);
        self
    }
    fn build(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// A small valid file as ggml writes it: 3 KVs, an F32 [4, 2] tensor (32 bytes) and a
/// Q8_0 [32] tensor (34 bytes, padded to 64).
fn valid_file() -> Vec<u8> {
    let mut r = Raw::header(3, 2, 3);
    r.kv_str("general.architecture", "gemma3");
    r.str("tokenizer.ggml.tokens").u32(9).u32(8).u64(2).str("<bos>").str("hé");
    r.kv_u32("gemma3.block_count", 18);
    r.tensor("a", &[4, 2], 0, 0).tensor("b", &[32], 8, 32);
    r.pad(32).data(32, 0x11).data(34, 0x22).pad(32);
    r.build()
}

fn parse(bytes: Vec<u8>) -> Result<GgufFile, GgufError> {
    GgufFile::from_bytes(bytes)
}

#[test]
fn valid_file_parses() {
    let f = parse(valid_file()).unwrap();
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
    assert_eq!(f.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(f.get_str_array("tokenizer.ggml.tokens").unwrap(), ["<bos>", "hé"]);
    assert_eq!(f.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(f.tensors().len(), 2);
    let b = f.tensor("b").unwrap();
    assert_eq!((b.ggml_type, b.offset, b.n_bytes), (GgmlType::Q8_0, 32, 34));
    assert_eq!(f.tensor_data(b).unwrap(), &[0x22; 34][..]);
    assert_eq!(f.data_offset() % 32, 0);
    let keys: Vec<&str> = f.metadata().map(|(k, _)| k).collect();
    assert_eq!(keys, ["general.architecture", "tokenizer.ggml.tokens", "gemma3.block_count"]);
}

/// A file with one F32 tensor of `dims` and no data bytes beyond `data` bytes.
fn one_tensor(dims: &[i64], type_id: u32, offset: u64, data: usize) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 0);
    r.tensor("t", dims, type_id, offset).pad(32).data(data, 0);
    r.build()
}

/// Two F32 [8] tensors (32 bytes each) at the given offsets, 128 bytes of data.
fn two_tensors(off_a: u64, off_b: u64) -> Vec<u8> {
    let mut r = Raw::header(3, 2, 0);
    r.tensor("a", &[8], 0, off_a).tensor("b", &[8], 0, off_b);
    r.pad(32).data(128, 0);
    r.build()
}

fn one_kv(key: &str, type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut r = Raw::header(3, 0, 1);
    // Trailing zeros keep the n_kv check (1 × 14 bytes) from firing first.
    r.str(key).u32(type_id).bytes(value).data(16, 0);
    r.build()
}

fn alignment_file(type_id: u32, value: &[u8]) -> Vec<u8> {
    let mut r = Raw::header(3, 1, 1);
    r.str(KEY_ALIGNMENT).u32(type_id).bytes(value);
    r.tensor("t", &[8], 0, 0).pad(32).data(32, 0);
    r.build()
}

fn with_version(version: u32) -> Vec<u8> {
    let mut v = valid_file();
    v[4..8].copy_from_slice(&version.to_le_bytes());
    v
}

type Check = fn(&GgufError) -> bool;

/// A defect: its name, the file, and the check its error must pass.
type Case = (&'static str, Vec<u8>, Check);

/// BAD-INPUTS.md §1–12, one case per defect, each with the error it must produce.
fn bad_inputs() -> Vec<Case> {
    [bad_header_inputs(), bad_kv_inputs(), bad_tensor_inputs(), bad_layout_inputs()].concat()
}

/// §1–3: truncation, magic and version, counts.
fn bad_header_inputs() -> Vec<Case> {
    use GgufError as E;
    let valid = valid_file();
    vec![
        // 1. truncation (every offset is covered by `truncation_at_every_offset`)
        ("truncated in magic", valid[..2].to_vec(), |e| matches!(e, E::Truncated { .. })),
        ("truncated after counts", valid[..24].to_vec(), |e| matches!(e, E::CountTooLarge { .. })),
        ("truncated in key", valid[..147].to_vec(), |e| matches!(e, E::Truncated { .. })),
        ("truncated in value", valid[..171].to_vec(), |e| matches!(e, E::Truncated { .. })),
        ("truncated in tensor info", valid[..190].to_vec(), |e| matches!(e, E::Truncated { .. })),
        (
            "truncated in data",
            valid[..valid.len() - 40].to_vec(),
            |e| matches!(e, E::TensorOutOfBounds { tensor, .. } if tensor == "b"),
        ),
        // 2. magic and version
        ("bad magic", [b"GGUG", &valid[4..]].concat(), |e| matches!(e, E::BadMagic { .. })),
        ("version 0", with_version(0), |e| matches!(e, E::UnsupportedVersion { version: 0 })),
        ("version 1", with_version(1), |e| matches!(e, E::UnsupportedVersion { version: 1 })),
        ("version 4", with_version(4), |e| matches!(e, E::UnsupportedVersion { version: 4 })),
        ("byte-swapped version", with_version(3u32.swap_bytes()), |e| matches!(e, E::BigEndian { .. })),
        // 3. counts
        ("n_tensors 2^64-1", Raw::header(3, u64::MAX, 0).build(), |e| {
            matches!(e, E::CountTooLarge { field: "n_tensors", .. })
        }),
        ("n_kv 2^64-1", Raw::header(3, 0, u64::MAX).build(), |e| matches!(e, E::CountTooLarge { field: "n_kv", .. })),
        (
            "n_kv 2^40 in 100 bytes",
            {
                let mut r = Raw::header(3, 0, 1 << 40);
                r.data(76, 0);
                r.build()
            },
            |e| matches!(e, E::CountTooLarge { field: "n_kv", .. }),
        ),
        (
            "n_tensors 2^40 in 100 bytes",
            {
                let mut r = Raw::header(3, 1 << 40, 0);
                r.data(76, 0);
                r.build()
            },
            |e| matches!(e, E::CountTooLarge { field: "n_tensors", .. }),
        ),
    ]
}

/// §4–7: keys and strings, value types and arrays, bools, alignment.
fn bad_kv_inputs() -> Vec<Case> {
    use GgufError as E;
    let str_kv = |len: u64| {
        let mut r = Raw::header(3, 0, 1);
        r.u64(len).bytes(b"abc").data(16, 0);
        r.build()
    };
    vec![
        // 4. keys and strings
        ("key length 2^64-1", str_kv(u64::MAX), |e| matches!(e, E::StringTooLong { .. })),
        ("key length 2^30+1", str_kv((1 << 30) + 1), |e| matches!(e, E::StringTooLong { .. })),
        ("key longer than the file", str_kv(1000), |e| matches!(e, E::Truncated { .. })),
        ("empty key", one_kv("", 0, &[1]), |e| matches!(e, E::EmptyKey { index: 0, .. })),
        (
            "duplicate key",
            {
                let mut r = Raw::header(3, 0, 2);
                r.kv_u32("k", 1).kv_u32("k", 2);
                r.build()
            },
            |e| matches!(e, E::DuplicateKey { key } if key == "k"),
        ),
        (
            "key not UTF-8",
            {
                let mut r = Raw::header(3, 0, 1);
                r.u64(2).bytes(&[0xC3, 0x28]).u32(0).u8(0);
                r.build()
            },
            |e| matches!(e, E::InvalidUtf8 { .. }),
        ),
        (
            "string value not UTF-8",
            one_kv("k", 8, &[1, 0, 0, 0, 0, 0, 0, 0, 0xFF]),
            |e| matches!(e, E::InvalidUtf8 { field, .. } if field.contains("'k'")),
        ),
        // 5. value types and arrays
        (
            "value type 13",
            one_kv("k", 13, &[0; 8]),
            |e| matches!(e, E::UnknownValueType { type_id: 13, key, .. } if key == "k"),
        ),
        ("value type 2^32-1", one_kv("k", u32::MAX, &[0; 8]), |e| {
            matches!(e, E::UnknownValueType { type_id: u32::MAX, .. })
        }),
        ("array element type 13", one_kv("k", 9, &[13, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]), |e| {
            matches!(e, E::UnknownValueType { type_id: 13, .. })
        }),
        (
            "array of arrays",
            one_kv("k", 9, &[9, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0]),
            |e| matches!(e, E::NestedArray { key } if key == "k"),
        ),
        (
            "array count 2^62",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("k").u32(9).u32(0).u64(1 << 62).data(16, 0);
                r.build()
            },
            |e| matches!(e, E::ArrayTooLong { .. }),
        ),
        (
            "2^29 strings in a tiny file",
            {
                let mut r = Raw::header(3, 0, 1);
                r.str("k").u32(9).u32(8).u64(1 << 29).str("x");
                r.build()
            },
            |e| matches!(e, E::ArrayTooLong { .. }),
        ),
        // 6. bools
        ("bool byte 2", one_kv("k", 7, &[2]), |e| matches!(e, E::InvalidBool { byte: 2, .. })),
        ("bool array byte 2", one_kv("k", 9, &[7, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 2]), |e| {
            matches!(e, E::InvalidBool { byte: 2, .. })
        }),
        // 7. alignment
        ("alignment 0", alignment_file(4, &0u32.to_le_bytes()), |e| matches!(e, E::InvalidAlignment { alignment: 0 })),
        ("alignment 3", alignment_file(4, &3u32.to_le_bytes()), |e| matches!(e, E::InvalidAlignment { alignment: 3 })),
        ("alignment 2^31", alignment_file(4, &(1u32 << 31).to_le_bytes()), |e| matches!(e, E::InvalidAlignment { .. })),
        (
            "alignment i32",
            alignment_file(5, &32i32.to_le_bytes()),
            |e| matches!(e, E::WrongType { key, .. } if key == KEY_ALIGNMENT),
        ),
        (
            "alignment u64",
            alignment_file(10, &32u64.to_le_bytes()),
            |e| matches!(e, E::WrongType { key, .. } if key == KEY_ALIGNMENT),
        ),
        (
            "alignment string",
            alignment_file(8, &[2, 0, 0, 0, 0, 0, 0, 0, b'3', b'2']),
            |e| matches!(e, E::WrongType { key, .. } if key == KEY_ALIGNMENT),
        ),
    ]
}

/// §8–10: tensor names, shapes, ggml types.
fn bad_tensor_inputs() -> Vec<Case> {
    use GgufError as E;
    vec![
        // 8. tensor names
        (
            "tensor name 64 bytes",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor(&"n".repeat(64), &[8], 0, 0).pad(32).data(32, 0);
                r.build()
            },
            |e| matches!(e, E::TensorNameTooLong { len: 64, .. }),
        ),
        (
            "empty tensor name",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("", &[8], 0, 0).pad(32).data(32, 0);
                r.build()
            },
            |e| matches!(e, E::EmptyTensorName { index: 0, .. }),
        ),
        (
            "duplicate tensor name",
            {
                let mut r = Raw::header(3, 2, 0);
                r.tensor("a", &[8], 0, 0).tensor("a", &[8], 0, 32).pad(32).data(64, 0);
                r.build()
            },
            |e| matches!(e, E::DuplicateTensor { name } if name == "a"),
        ),
        // 9. shapes
        ("n_dims 5", one_tensor(&[1, 1, 1, 1, 1], 0, 0, 4), |e| matches!(e, E::TooManyDims { n_dims: 5, .. })),
        (
            "n_dims 2^32-1",
            {
                let mut r = Raw::header(3, 1, 0);
                r.str("t").u32(u32::MAX).data(64, 0);
                r.build()
            },
            |e| matches!(e, E::TooManyDims { n_dims: 0xFFFF_FFFF, .. }),
        ),
        ("negative ne", one_tensor(&[8, -1], 0, 0, 32), |e| matches!(e, E::NegativeDim { dim: 1, ne: -1, .. })),
        ("ne product overflows i64", one_tensor(&[1 << 32, 1 << 32], 0, 0, 32), |e| {
            matches!(e, E::ShapeOverflow { .. })
        }),
        (
            "[1152, 2^42+1] F32 in 160 bytes",
            one_tensor(&[1152, (1 << 42) + 1], 0, 0, 64),
            |e| matches!(e, E::TensorOutOfBounds { tensor, .. } if tensor == "t"),
        ),
        // 10. ggml types
        ("ggml type 200", one_tensor(&[8], 200, 0, 32), |e| {
            matches!(e, E::UnsupportedType { source: UnsupportedGgmlType { id: 200, removed: None }, .. })
        }),
        ("ggml type -1", one_tensor(&[8], u32::MAX, 0, 32), |e| {
            matches!(e, E::UnsupportedType { source: UnsupportedGgmlType { removed: None, .. }, .. })
        }),
        ("removed type Q4_2", one_tensor(&[32], 4, 0, 32), |e| {
            matches!(e, E::UnsupportedType { source: UnsupportedGgmlType { removed: Some("Q4_2"), .. }, .. })
        }),
        ("removed type Q4_3", one_tensor(&[32], 5, 0, 32), |e| {
            matches!(e, E::UnsupportedType { source: UnsupportedGgmlType { removed: Some("Q4_3"), .. }, .. })
        }),
        ("Q4_0 with ne0 = 33", one_tensor(&[33], 2, 0, 32), |e| {
            matches!(e, E::RowNotBlockMultiple { ne0: 33, block_size: 32, .. })
        }),
        ("Q4_K with ne0 % 256 != 0", one_tensor(&[384, 2], 12, 0, 512), |e| {
            matches!(e, E::RowNotBlockMultiple { ne0: 384, block_size: 256, .. })
        }),
    ]
}

/// §11: tensor offsets. §12 (trailing bytes, split files) is tested below and in
/// tests/gguf_files.rs.
fn bad_layout_inputs() -> Vec<Case> {
    use GgufError as E;
    vec![
        // 11. offsets (ggml requires exactly consecutive, aligned offsets)
        (
            "misaligned offset",
            two_tensors(0, 48),
            |e| matches!(e, E::TensorMisaligned { tensor, offset: 48, .. } if tensor == "b"),
        ),
        (
            "offset 2^64-1",
            two_tensors(0, u64::MAX),
            |e| matches!(e, E::TensorOutOfBounds { tensor, .. } if tensor == "b"),
        ),
        (
            "overlapping tensors",
            two_tensors(0, 0),
            |e| matches!(e, E::TensorOverlap { tensor, expected: 32, .. } if tensor == "b"),
        ),
        (
            "gap between tensors",
            two_tensors(0, 64),
            |e| matches!(e, E::TensorGap { tensor, expected: 32, .. } if tensor == "b"),
        ),
        // Reversed: the first tensor is already not at 0, so it is reported as a gap.
        ("tensors in reverse order", two_tensors(32, 0), |e| matches!(e, E::TensorGap { tensor, .. } if tensor == "a")),
        ("offset past EOF", two_tensors(0, 128), |e| matches!(e, E::TensorOutOfBounds { tensor, .. } if tensor == "b")),
        (
            "data section past EOF",
            {
                let mut r = Raw::header(3, 1, 0);
                r.tensor("t", &[0], 0, 0);
                r.build()
            },
            |e| matches!(e, E::DataSectionOutOfBounds { .. }),
        ),
    ]
}

#[test]
fn bad_inputs_give_their_error() {
    let mut failures = Vec::new();
    for (name, bytes, check) in bad_inputs() {
        match parse(bytes) {
            Ok(_) => failures.push(format!("{name}: accepted")),
            Err(e) if !check(&e) => failures.push(format!("{name}: wrong error {e:?}")),
            Err(e) => println!("{name}: {e}"),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn versions_2_and_3_load() {
    assert_eq!(parse(with_version(2)).unwrap().version(), 2);
    assert_eq!(parse(with_version(3)).unwrap().version(), 3);
}

#[test]
fn trailing_bytes_are_accepted() {
    let mut bytes = valid_file();
    bytes.extend_from_slice(&[0xAB; 100]);
    let f = parse(bytes).unwrap();
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).unwrap(), &[0x22; 34][..]);
}

#[test]
fn missing_final_padding_is_accepted() {
    let bytes = valid_file();
    let end_of_data = bytes.len() - 30; // 34-byte tensor padded by 30 zeros
    let f = parse(bytes[..end_of_data].to_vec()).unwrap();
    assert_eq!(f.tensor_data(f.tensor("b").unwrap()).unwrap().len(), 34);
}

#[test]
fn zero_element_and_scalar_tensors() {
    let mut r = Raw::header(3, 3, 0);
    r.tensor("empty", &[0, 5], 0, 0).tensor("scalar", &[], 0, 0);
    r.tensor("huge-but-empty", &[0, i64::MAX, i64::MAX], 0, 32);
    r.pad(32).data(32, 7);
    let f = parse(r.build()).unwrap();
    assert_eq!(f.tensor("empty").unwrap().n_bytes, 0);
    assert_eq!(f.tensor("scalar").unwrap().n_bytes, 4);
    assert_eq!(f.tensor("huge-but-empty").unwrap().n_elements(), 0);
    let again = parse(f.write_to(Vec::new()).unwrap()).unwrap();
    assert_eq!(f, again);
}

#[test]
fn truncation_at_every_offset() {
    let bytes = valid_file();
    let end_of_data = bytes.len() - 30;
    for cut in 0..bytes.len() {
        let result = parse(bytes[..cut].to_vec());
        if cut < end_of_data {
            assert!(result.is_err(), "cut at {cut} was accepted");
        } else {
            assert!(result.is_ok(), "cut at {cut} (in the final padding): {result:?}");
        }
    }
}

/// A richer file for the fuzz-like tests: every value type and a few tensors.
fn rich_file() -> Vec<u8> {
    let mut w = GgufWriter::from_writer(Vec::new());
    add_every_value_type(&mut w);
    add_some_tensors(&mut w);
    w.finish().unwrap()
}

#[test]
fn random_byte_flips_never_panic() {
    let original = rich_file();
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x6767_7566);
    let (mut ok, mut err) = (0, 0);
    for _ in 0..3000 {
        let mut bytes = original.clone();
        for _ in 0..rng.gen_range(1..=4) {
            let i = rng.gen_range(0..bytes.len());
            bytes[i] ^= 1 << rng.gen_range(0..8);
        }
        match parse(bytes) {
            Ok(f) => {
                ok += 1;
                // Whatever the reader accepts, the writer reproduces.
                let again = parse(f.write_to(Vec::new()).unwrap()).unwrap();
                assert_eq!(f, again);
            }
            Err(_) => err += 1,
        }
    }
    println!("byte flips: {ok} accepted, {err} rejected");
    assert!(ok > 0 && err > 0);
}

fn add_every_value_type<S: GgufSink>(w: &mut GgufWriter<S>) {
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_kv("t.u8", 200u8).unwrap();
    w.add_kv("t.i8", -100i8).unwrap();
    w.add_kv("t.u16", 60000u16).unwrap();
    w.add_kv("t.i16", -30000i16).unwrap();
    w.add_kv("t.u32", 4_000_000_000u32).unwrap();
    w.add_kv("t.i32", -2_000_000_000i32).unwrap();
    w.add_kv("t.f32", f32::NAN).unwrap();
    w.add_kv("t.bool", true).unwrap();
    w.add_kv("t.string", "ünïcödé ✓").unwrap();
    w.add_kv("t.u64", u64::MAX).unwrap();
    w.add_kv("t.i64", i64::MIN).unwrap();
    w.add_kv("t.f64", -0.0f64).unwrap();
    w.add_kv("a.u8", vec![1u8, 2, 3]).unwrap();
    w.add_kv("a.i8", vec![-1i8, 0]).unwrap();
    w.add_kv("a.u16", vec![1u16]).unwrap();
    w.add_kv("a.i16", vec![-1i16, 7]).unwrap();
    w.add_kv("a.u32", Vec::<u32>::new()).unwrap();
    w.add_kv("a.i32", vec![1i32, -2, 3]).unwrap();
    w.add_kv("a.f32", vec![0.5f32, f32::INFINITY]).unwrap();
    w.add_kv("a.bool", vec![true, false, true]).unwrap();
    let tokens: Vec<String> = ["<pad>", "<bos>", "", "▁hello", "日本"].map(String::from).to_vec();
    w.add_kv("a.string", tokens).unwrap();
    w.add_kv("a.u64", vec![u64::MAX, 0]).unwrap();
    w.add_kv("a.i64", vec![i64::MIN]).unwrap();
    w.add_kv("a.f64", vec![1e300f64, -1e-300]).unwrap();
}

fn add_some_tensors<S: GgufSink>(w: &mut GgufWriter<S>) {
    let specs: [(&str, &[u64], GgmlType); 6] = [
        ("token_embd.weight", &[256, 3], GgmlType::Q4_K),
        ("blk.0.attn_norm.weight", &[64], GgmlType::F32),
        ("blk.0.attn_q.weight", &[64, 2], GgmlType::Q8_0),
        ("blk.0.ffn_up.weight", &[32, 3, 2], GgmlType::F16),
        ("blk.0.ffn_down.weight", &[64, 1, 1, 2], GgmlType::BF16),
        ("rope_freqs", &[5], GgmlType::I32),
    ];
    for (name, dims, ty) in specs {
        w.add_tensor_info(name, dims, ty).unwrap();
    }
    let infos = w.tensors().to_vec();
    for (i, t) in infos.iter().enumerate() {
        let data: Vec<u8> = (0..t.n_bytes).map(|j| (j as u8).wrapping_mul(i as u8 + 3)).collect();
        w.write_tensor_data(&t.name, &data).unwrap();
    }
}

#[test]
fn read_write_read_is_identity() {
    let bytes = rich_file();
    let f = parse(bytes.clone()).unwrap();
    assert_eq!(f.get_str("t.string").unwrap(), "ünïcödé ✓");
    assert!(f.get_f32("t.f32").unwrap().is_nan());
    assert_eq!(f.get_i64("t.i64").unwrap(), i64::MIN);
    assert_eq!(f.get_str_array("a.string").unwrap()[3], "▁hello");
    assert_eq!(f.tensors().len(), 6);
    for t in f.tensors() {
        assert_eq!(t.offset % 32, 0);
        let data = f.tensor_data(t).unwrap();
        assert_eq!(data.len() as u64, t.n_bytes);
    }
    let again = parse(f.write_to(Vec::new()).unwrap()).unwrap();
    assert_eq!(f, again);
    // And the bytes are the same: the writer is deterministic.
    assert_eq!(again.write_to(Vec::new()).unwrap(), bytes);
}

#[test]
fn write_of_read_is_byte_identical_for_ggml_layout() {
    // ggml layout: padding after infos and after every tensor, including the last.
    for version in [2, 3] {
        let mut bytes = valid_file();
        bytes[4..8].copy_from_slice(&u32::to_le_bytes(version));
        let written = parse(bytes.clone()).unwrap().write_to(Vec::new()).unwrap();
        assert_eq!(written, bytes, "version {version}");
    }
    // Alignment 64 given as a KV in the middle of the list, zero tensors (still padded).
    let mut r = Raw::header(3, 0, 3);
    r.kv_str("general.name", "x").kv_u32(KEY_ALIGNMENT, 64).kv_u32("z", 1).pad(64);
    let bytes = r.build();
    assert_eq!(parse(bytes.clone()).unwrap().write_to(Vec::new()).unwrap(), bytes);
    // Tensors with alignment 64.
    let mut r = Raw::header(3, 2, 1);
    r.kv_u32(KEY_ALIGNMENT, 64).tensor("a", &[3], 0, 0).tensor("b", &[256], 14, 64);
    r.pad(64).data(12, 1).pad(64).data(210, 2).pad(64);
    let bytes = r.build();
    assert_eq!(parse(bytes.clone()).unwrap().write_to(Vec::new()).unwrap(), bytes);
}

#[test]
fn getters_check_types() {
    let f = parse(rich_file()).unwrap();
    assert!(matches!(f.get_u32("nope"), Err(GgufError::MissingKey { key }) if key == "nope"));
    // Lossless widening by type.
    assert_eq!(f.get_u32("t.u16").unwrap(), 60000);
    assert_eq!(f.get_i32("t.u16").unwrap(), 60000);
    assert_eq!(f.get_i64("t.u32").unwrap(), 4_000_000_000);
    assert_eq!(f.get_u64("t.u8").unwrap(), 200);
    assert!(f.get_f64("t.f32").unwrap().is_nan());
    // Narrowing or sign change is a wrong type, whatever the value.
    let wrong = |r: Result<i128, GgufError>, exp: &str, act: &str| match r {
        Err(GgufError::WrongType { expected, actual, .. }) => {
            assert_eq!((expected.to_string().as_str(), actual.to_string().as_str()), (exp, act))
        }
        other => panic!("expected WrongType, got {other:?}"),
    };
    wrong(f.get_u16("t.u32").map(i128::from), "u16", "u32");
    wrong(f.get_u32("t.i32").map(i128::from), "u32", "i32");
    wrong(f.get_u64("t.i8").map(i128::from), "u64", "i8");
    wrong(f.get_i64("t.u64").map(i128::from), "i64", "u64");
    wrong(f.get_u32("t.string").map(i128::from), "u32", "str");
    wrong(f.get_u32("a.u32").map(i128::from), "u32", "arr[u32]");
    assert!(matches!(f.get_f32("t.f64"), Err(GgufError::WrongType { .. })));
    assert!(matches!(f.get_bool("t.u8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(f.get_str_array("a.i32"), Err(GgufError::WrongType { .. })));
    assert_eq!(f.get_i32_array("a.i32").unwrap(), [1, -2, 3]);
    assert_eq!(f.get_array("a.bool").unwrap().len(), 3);
}

#[test]
fn ggml_type_table() {
    let all: Vec<GgmlType> = GgmlType::all().collect();
    assert_eq!(all.len(), 35);
    for id in 0..=300u32 {
        if let Ok(t) = GgmlType::from_u32(id) {
            assert_eq!(t.id(), id);
            assert!(all.contains(&t));
            assert_eq!(t.row_size(t.block_size()), Some(t.type_size()));
        }
    }
    for t in &all {
        assert_eq!(all.iter().filter(|u| u.name() == t.name()).count(), 1);
    }
    assert_eq!(GgmlType::Q4_K.name(), "q4_K");
    assert_eq!((GgmlType::Q4_K.block_size(), GgmlType::Q4_K.type_size()), (256, 144));
    assert_eq!((GgmlType::Q8_0.block_size(), GgmlType::Q8_0.type_size()), (32, 34));
    assert_eq!(GgmlType::Q6_K.row_size(640), None);
    assert_eq!(GgmlType::Q6_K.row_size(1280), Some(5 * 210));
    assert_eq!(GgmlType::F32.row_size(u64::MAX), None);
    for removed in [4, 5, 31, 32, 33, 36, 37, 38] {
        assert!(GgmlType::from_u32(removed).unwrap_err().removed.is_some());
    }
    assert!(GgmlType::from_u32(43).unwrap_err().removed.is_none());
}

#[test]
fn writer_refuses_what_the_reader_rejects() {
    use GgufError as E;
    let mut w = GgufWriter::from_writer(Vec::new());
    assert!(matches!(w.add_kv("", 1u8), Err(E::EmptyKey { .. })));
    w.add_kv("k", 1u8).unwrap();
    assert!(matches!(w.add_kv("k", 2u8), Err(E::DuplicateKey { .. })));
    assert!(matches!(w.add_kv(KEY_ALIGNMENT, 32u64), Err(E::WrongType { .. })));
    assert!(matches!(w.add_kv(KEY_ALIGNMENT, 48u32), Err(E::InvalidAlignment { .. })));
    assert!(matches!(w.set_alignment(0), Err(E::InvalidAlignment { .. })));
    assert!(matches!(w.set_alignment(1 << 31), Err(E::InvalidAlignment { .. })));
    assert!(matches!(w.set_version(1), Err(E::WriteVersion { .. })));
    let f32 = GgmlType::F32;
    assert!(matches!(w.add_tensor_info("", &[1], f32), Err(E::EmptyTensorName { .. })));
    let long = "x".repeat(64);
    assert!(matches!(w.add_tensor_info(&long, &[1], f32), Err(E::TensorNameTooLong { .. })));
    assert!(matches!(w.add_tensor_info("t", &[1; 5], f32), Err(E::TooManyDims { .. })));
    let q4 = GgmlType::Q4_0;
    assert!(matches!(w.add_tensor_info("t", &[33], q4), Err(E::RowNotBlockMultiple { .. })));
    let huge = [u64::MAX, 0];
    assert!(matches!(w.add_tensor_info("t", &huge, f32), Err(E::ShapeOverflow { .. })));
    let big = [1 << 32, 1 << 32];
    assert!(matches!(w.add_tensor_info("t", &big, f32), Err(E::ShapeOverflow { .. })));
    w.add_tensor_info("t", &[63], f32).unwrap();
    assert!(matches!(w.add_tensor_info("t", &[1], f32), Err(E::DuplicateTensor { .. })));
    w.add_tensor_info("u", &[8], f32).unwrap();
    // Offsets follow the alignment, also when it changes after the tensors.
    assert_eq!(w.tensors()[1].offset, 256);
    w.set_alignment(64).unwrap();
    assert_eq!(w.tensors()[1].offset, 256);
    w.set_alignment(1).unwrap();
    assert_eq!(w.tensors()[1].offset, 252);
}

#[test]
fn writer_enforces_order_and_sizes() {
    use GgufError as E;
    let mut w = GgufWriter::from_writer(Vec::new());
    w.add_tensor_info("a", &[4], GgmlType::F32).unwrap();
    w.add_tensor_info("b", &[2], GgmlType::F32).unwrap();
    assert!(matches!(w.write_tensor_data("b", &[0; 8]), Err(E::TensorOrder { .. })));
    assert!(matches!(w.write_tensor_data("c", &[0; 8]), Err(E::UnknownTensor { .. })));
    assert!(matches!(w.write_tensor_data("a", &[0; 15]), Err(E::TensorDataSize { .. })));
    assert!(matches!(w.add_kv("late", 1u8), Err(E::WriterState(_))));
    w.write_tensor_part("a", &[1; 10]).unwrap();
    assert!(matches!(w.write_tensor_part("a", &[1; 7]), Err(E::TensorDataSize { .. })));
    w.write_tensor_part("a", &[1; 6]).unwrap();
    assert!(matches!(w.write_tensor_data("a", &[0; 16]), Err(E::TensorOrder { .. })));
    let mut w2 = GgufWriter::from_writer(Vec::new());
    w2.add_tensor_info("x", &[1], GgmlType::F32).unwrap();
    assert!(matches!(w2.finish(), Err(E::TensorsMissing { missing: 1, .. })));
    w.write_tensor_data("b", &[2; 8]).unwrap();
    let f = parse(w.finish().unwrap()).unwrap();
    assert_eq!(f.tensor_data(&f.tensors()[0]).unwrap(), &[1; 16][..]);
    assert_eq!(f.tensor_data(&f.tensors()[1]).unwrap(), &[2; 8][..]);
}

#[test]
fn foreign_tensor_info_is_an_error() {
    let f = parse(valid_file()).unwrap();
    let mut t = f.tensor("b").unwrap().clone();
    t.offset = u64::MAX;
    assert!(matches!(f.tensor_data(&t), Err(GgufError::ForeignTensor { .. })));
    t.offset = 0;
    t.shard = 3;
    assert!(matches!(f.tensor_data(&t), Err(GgufError::ForeignTensor { .. })));
}

/// Accepts `room` bytes, then fails like a full disk.
struct FullDisk {
    room: usize,
}

impl std::io::Write for FullDisk {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if buf.len() > self.room {
            return Err(std::io::Error::other("no space left on device"));
        }
        self.room -= buf.len();
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn write_errors_poison_the_writer() {
    let mut w = GgufWriter::from_writer(FullDisk { room: 100 });
    w.add_kv("general.architecture", "gemma3").unwrap();
    w.add_tensor_info("t", &[64], GgmlType::F32).unwrap();
    assert!(matches!(w.write_tensor_data("t", &[0; 256]), Err(GgufError::Write(_))));
    assert!(matches!(w.write_tensor_data("t", &[0; 256]), Err(GgufError::WriterState(_))));
    assert!(matches!(w.finish(), Err(GgufError::WriterState(_))));
}
