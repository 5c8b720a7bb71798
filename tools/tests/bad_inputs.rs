//! The converter's bad inputs (shared/BAD-INPUTS.md items 15–19), one case each: every one
//! ends in a typed error that names what is wrong, and leaves no file behind.
//!
//! Each case starts from the tiny Gemma 1 checkpoint in tests/data/tiny/gemma (made by
//! transformers, see scripts/make_tiny_checkpoints.py), copied to a temporary directory and
//! damaged in one way.
use gemma_tools::{convert_hf, ConvertOptions, Error, OutType, RunOptions};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny/gemma")
}

/// A copy of the tiny checkpoint in a fresh temporary directory.
fn copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for e in fs::read_dir(fixture()).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

fn opts(ty: &str) -> ConvertOptions {
    // A fixed name: by default it comes from the directory's name, which differs per copy.
    ConvertOptions { out_type: OutType::parse(ty).unwrap(), name: Some("tiny".into()), ..ConvertOptions::default() }
}

/// Converts `dir` into `dir/out.gguf`, expecting an error whose text contains `needle`;
/// checks that nothing but the inputs is left in the directory.
fn expect_err(dir: &Path, needle: &str) -> Error {
    let before: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    let out = dir.join("out.gguf");
    let err = convert_hf(dir, &out, &opts("q8_0")).expect_err("conversion should fail");
    let text = err.to_string();
    println!("{needle:>40} -> {text}");
    assert!(text.contains(needle), "error {text:?} does not mention {needle:?}");
    let after: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(before.len(), after.len(), "files left behind: {after:?}");
    err
}

/// The safetensors file as (header JSON, data).
fn split_safetensors(path: &Path) -> (serde_json::Value, Vec<u8>) {
    let b = fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    (serde_json::from_slice(&b[8..8 + n]).unwrap(), b[8 + n..].to_vec())
}

fn write_safetensors(path: &Path, header: &[u8], data: &[u8]) {
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header);
    b.extend_from_slice(data);
    fs::write(path, b).unwrap();
}

fn edit_header(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("model.safetensors");
    let (mut h, data) = split_safetensors(&p);
    f(&mut h);
    write_safetensors(&p, serde_json::to_string(&h).unwrap().as_bytes(), &data);
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("config.json");
    let mut c: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut c);
    fs::write(&p, serde_json::to_string_pretty(&c).unwrap()).unwrap();
}

const EMBD: &str = "model.embed_tokens.weight";

#[test]
fn the_fixture_converts() {
    let dir = copy();
    let out = dir.path().join("ok.gguf");
    let s = convert_hf(dir.path(), &out, &opts("q8_0")).unwrap();
    assert!(out.is_file());
    print!("{}", s.table());
}

// ----- 15: safetensors header and layout -----

#[test]
fn header_length_over_100mb() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let mut b = fs::read(&p).unwrap();
    b[..8].copy_from_slice(&(200u64 << 20).to_le_bytes());
    fs::write(&p, b).unwrap();
    expect_err(dir.path(), "over 100 MB");
}

#[test]
fn header_length_past_eof() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let mut b = fs::read(&p).unwrap();
    let len = b.len() as u64;
    b[..8].copy_from_slice(&(len).to_le_bytes());
    fs::write(&p, b).unwrap();
    expect_err(dir.path(), "past the end of the file");
}

#[test]
fn header_not_utf8() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let (_, data) = split_safetensors(&p);
    write_safetensors(&p, b"{\"a\xff\":1}", &data);
    expect_err(dir.path(), "not UTF-8");
}

#[test]
fn header_not_json() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let (_, data) = split_safetensors(&p);
    write_safetensors(&p, b"this is not json", &data);
    expect_err(dir.path(), "not valid safetensors JSON");
}

#[test]
fn offsets_overlap() {
    let dir = copy();
    edit_header(dir.path(), |h| {
        let o = h[EMBD]["data_offsets"].as_array().unwrap().clone();
        let (s, e) = (o[0].as_u64().unwrap(), o[1].as_u64().unwrap());
        h[EMBD]["data_offsets"] = serde_json::json!([s + 4, e + 4]);
    });
    expect_err(dir.path(), "overlap");
}

#[test]
fn offsets_with_a_hole() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let (mut h, mut data) = split_safetensors(&p);
    // Move every tensor 8 bytes up and pad the start: a hole at 0..8.
    for (k, v) in h.as_object_mut().unwrap().iter_mut() {
        if k != "__metadata__" {
            let o = v["data_offsets"].as_array().unwrap().clone();
            v["data_offsets"] = serde_json::json!([o[0].as_u64().unwrap() + 8, o[1].as_u64().unwrap() + 8]);
        }
    }
    data.splice(0..0, [0u8; 8]);
    write_safetensors(&p, serde_json::to_string(&h).unwrap().as_bytes(), &data);
    expect_err(dir.path(), "hole");
}

#[test]
fn offsets_out_of_file() {
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let b = fs::read(&p).unwrap();
    fs::write(&p, &b[..b.len() - 100]).unwrap();
    expect_err(dir.path(), "does not end at the end of the file");
}

#[test]
fn shape_times_dtype_is_not_the_span() {
    let dir = copy();
    edit_header(dir.path(), |h| {
        let s = h[EMBD]["shape"].as_array().unwrap().clone();
        h[EMBD]["shape"] = serde_json::json!([s[0].as_u64().unwrap() - 1, s[1]]);
    });
    expect_err(dir.path(), "does not match its shape");
}

#[test]
fn unsupported_dtypes_name_file_and_tensor() {
    for dtype in ["I64", "BOOL", "F8_E4M3"] {
        let dir = copy();
        let name = "model.layers.0.self_attn.q_proj.weight";
        edit_header(dir.path(), |h| {
            // Same byte span, reinterpreted: I64 needs half the elements of F32, BOOL/F8 4×.
            let s = h[name]["shape"].as_array().unwrap().clone();
            let (r, c) = (s[0].as_u64().unwrap(), s[1].as_u64().unwrap());
            let shape = match dtype {
                "I64" => serde_json::json!([r / 2, c]),
                _ => serde_json::json!([r * 4, c]),
            };
            h[name]["dtype"] = serde_json::json!(dtype);
            h[name]["shape"] = shape;
        });
        let err = expect_err(dir.path(), "is not supported");
        let text = err.to_string();
        assert!(text.contains("model.safetensors") && text.contains(name), "{text}");
    }
}

// ----- 16: unaligned data -----

#[test]
fn unaligned_tensor_data_is_copied_not_cast() {
    // A header whose length is not a multiple of 8 puts every tensor at an odd address in
    // the map; values must come out the same.
    let dir = copy();
    let p = dir.path().join("model.safetensors");
    let (h, data) = split_safetensors(&p);
    let mut header = serde_json::to_string(&h).unwrap().into_bytes();
    header.push(b' ');
    if header.len() % 2 == 0 {
        header.push(b' ');
    }
    write_safetensors(&p, &header, &data);
    let odd = convert_hf(dir.path(), &dir.path().join("odd.gguf"), &opts("f32")).unwrap();
    let even = convert_hf(&fixture(), &dir.path().join("even.gguf"), &opts("f32")).unwrap();
    let a = gemma_gguf::gguf::GgufFile::read(&odd.output).unwrap();
    let b = gemma_gguf::gguf::GgufFile::read(&even.output).unwrap();
    for (x, y) in a.tensors().iter().zip(b.tensors()) {
        assert_eq!(a.tensor_data(x).unwrap(), b.tensor_data(y).unwrap(), "{}", x.name);
    }
}

// ----- 17: shard index -----

fn shard(dir: &Path) {
    // Split the single file into two shards with an index.
    let p = dir.join("model.safetensors");
    let (h, data) = split_safetensors(&p);
    let mut names: Vec<String> = h.as_object().unwrap().keys().filter(|k| *k != "__metadata__").cloned().collect();
    names.sort();
    let (a, b) = names.split_at(names.len() / 2);
    let mut map = serde_json::Map::new();
    for (file, part) in [("model-00001-of-00002.safetensors", a), ("model-00002-of-00002.safetensors", b)] {
        let mut hdr = serde_json::Map::new();
        let mut buf = Vec::new();
        for n in part {
            let o = h[n]["data_offsets"].as_array().unwrap();
            let (s, e) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
            let start = buf.len();
            buf.extend_from_slice(&data[s..e]);
            let mut t = h[n].clone();
            t["data_offsets"] = serde_json::json!([start, buf.len()]);
            hdr.insert(n.clone(), t);
            map.insert(n.clone(), serde_json::json!(file));
        }
        write_safetensors(&dir.join(file), serde_json::to_string(&hdr).unwrap().as_bytes(), &buf);
    }
    fs::remove_file(&p).unwrap();
    let index = serde_json::json!({"metadata": {}, "weight_map": map});
    fs::write(dir.join("model.safetensors.index.json"), serde_json::to_string_pretty(&index).unwrap()).unwrap();
}

fn edit_index(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let p = dir.join("model.safetensors.index.json");
    let mut v: serde_json::Value = serde_json::from_str(&fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    fs::write(&p, serde_json::to_string(&v).unwrap()).unwrap();
}

#[test]
fn sharded_checkpoint_converts_like_the_single_file() {
    let dir = copy();
    shard(dir.path());
    let a = convert_hf(dir.path(), &dir.path().join("a.gguf"), &opts("q8_0")).unwrap();
    let b = convert_hf(&fixture(), &dir.path().join("b.gguf"), &opts("q8_0")).unwrap();
    assert!(fs::read(a.output).unwrap() == fs::read(b.output).unwrap(), "sharded and single-file outputs differ");
}

#[test]
fn index_names_a_missing_shard() {
    let dir = copy();
    shard(dir.path());
    fs::remove_file(dir.path().join("model-00002-of-00002.safetensors")).unwrap();
    expect_err(dir.path(), "does not exist");
}

#[test]
fn index_with_absolute_path_or_dotdot() {
    for bad in ["/etc/passwd.safetensors", "../model-00001-of-00002.safetensors", "sub/../../x.safetensors"] {
        let dir = copy();
        shard(dir.path());
        edit_index(dir.path(), |v| v["weight_map"][EMBD] = serde_json::json!(bad));
        expect_err(dir.path(), "refused");
    }
}

#[test]
fn tensor_in_two_shards() {
    let dir = copy();
    shard(dir.path());
    // Put a copy of a tensor of shard 2 into shard 1 too.
    let p1 = dir.path().join("model-00001-of-00002.safetensors");
    let p2 = dir.path().join("model-00002-of-00002.safetensors");
    let (mut h1, mut d1) = split_safetensors(&p1);
    let (h2, d2) = split_safetensors(&p2);
    let (name, info) = h2.as_object().unwrap().iter().find(|(k, _)| *k != "__metadata__").unwrap();
    let o = info["data_offsets"].as_array().unwrap();
    let (s, e) = (o[0].as_u64().unwrap() as usize, o[1].as_u64().unwrap() as usize);
    let start = d1.len();
    d1.extend_from_slice(&d2[s..e]);
    let mut t = info.clone();
    t["data_offsets"] = serde_json::json!([start, d1.len()]);
    h1[name] = t;
    write_safetensors(&p1, serde_json::to_string(&h1).unwrap().as_bytes(), &d1);
    expect_err(dir.path(), "stored in");
}

// ----- 18: config.json -----

#[test]
fn config_missing_field() {
    let dir = copy();
    edit_config(dir.path(), |c| {
        c.as_object_mut().unwrap().remove("hidden_size");
    });
    expect_err(dir.path(), "`hidden_size`: missing");
}

#[test]
fn config_wrong_type() {
    let dir = copy();
    edit_config(dir.path(), |c| c["intermediate_size"] = serde_json::json!("128"));
    expect_err(dir.path(), "`intermediate_size`: expected a whole number");
}

#[test]
fn config_nan_and_infinity_literals() {
    for lit in ["NaN", "Infinity", "-Infinity"] {
        let dir = copy();
        let p = dir.path().join("config.json");
        let text = fs::read_to_string(&p).unwrap();
        let text = text.replacen("\"rms_norm_eps\": 1e-06", &format!("\"rms_norm_eps\": {lit}"), 1);
        assert!(text.contains(lit), "fixture layout changed");
        fs::write(&p, text).unwrap();
        expect_err(dir.path(), "not valid JSON");
    }
}

#[test]
fn config_absurd_values() {
    for (key, value, needle) in [
        ("vocab_size", serde_json::json!(1u64 << 40), "out of range"),
        ("head_dim", serde_json::json!(0), "out of range"),
        ("num_key_value_heads", serde_json::json!(3), "not a multiple of 3"),
        ("rms_norm_eps", serde_json::json!(-1.0), "must be a finite number > 0"),
        ("num_hidden_layers", serde_json::json!(0), "out of range"),
    ] {
        let dir = copy();
        edit_config(dir.path(), |c| c[key] = value);
        expect_err(dir.path(), needle);
    }
}

#[test]
fn config_shapes_that_disagree_with_the_tensors() {
    let dir = copy();
    edit_config(dir.path(), |c| c["intermediate_size"] = serde_json::json!(96));
    expect_err(dir.path(), "config.json implies");
}

#[test]
fn config_unknown_architecture() {
    let dir = copy();
    edit_config(dir.path(), |c| c["architectures"] = serde_json::json!(["LlamaForCausalLM"]));
    expect_err(dir.path(), "unsupported architecture");
}

#[test]
fn both_config_layouts_give_the_same_file() {
    // The tiny Gemma 3 checkpoint is in the newer layout (rope_parameters, layer_types);
    // rewrite it in the older one and compare the outputs.
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny/gemma3");
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    let newer = convert_hf(dir.path(), &dir.path().join("new.gguf"), &opts("f16")).unwrap();
    edit_config(dir.path(), |c| {
        let o = c.as_object_mut().unwrap();
        let rp = o.remove("rope_parameters").unwrap();
        o.insert("rope_theta".into(), rp["full_attention"]["rope_theta"].clone());
        o.insert("rope_local_base_freq".into(), rp["sliding_attention"]["rope_theta"].clone());
        o.insert(
            "rope_scaling".into(),
            serde_json::json!({"rope_type": "linear", "factor": rp["full_attention"]["factor"]}),
        );
        o.remove("layer_types");
        o.insert("sliding_window_pattern".into(), serde_json::json!(2));
    });
    let older = convert_hf(dir.path(), &dir.path().join("old.gguf"), &opts("f16")).unwrap();
    assert!(fs::read(newer.output).unwrap() == fs::read(older.output).unwrap(), "the two layouts give different files");
}

// ----- 19: output -----

#[test]
fn refuses_to_overwrite_the_input() {
    let dir = copy();
    let input = dir.path().join("model.safetensors");
    let before = fs::read(&input).unwrap();
    let mut o = opts("q8_0");
    o.force = true;
    let err = convert_hf(dir.path(), &input, &o).unwrap_err();
    assert!(err.to_string().contains("is the input"), "{err}");
    assert_eq!(fs::read(&input).unwrap(), before);
}

#[test]
fn refuses_an_existing_output_without_force() {
    let dir = copy();
    let out = dir.path().join("exists.gguf");
    fs::write(&out, b"keep me").unwrap();
    let err = convert_hf(dir.path(), &out, &opts("q8_0")).unwrap_err();
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(fs::read(&out).unwrap(), b"keep me");
    let mut o = opts("q8_0");
    o.force = true;
    convert_hf(dir.path(), &out, &o).unwrap();
    assert!(gemma_gguf::gguf::GgufFile::open(&out).is_ok());
}

#[test]
fn interrupted_conversion_leaves_nothing() {
    let dir = copy();
    let out = dir.path().join("never.gguf");
    let mut o = opts("q8_0");
    o.run = RunOptions { cancel: Some(Arc::new(AtomicBool::new(true))), ..RunOptions::default() };
    let before = fs::read_dir(dir.path()).unwrap().count();
    let err = convert_hf(dir.path(), &out, &o).unwrap_err();
    assert!(matches!(err, Error::Cancelled), "{err}");
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), before, "temporary file left behind");
    assert!(!out.exists());
}

#[test]
fn missing_tokenizer_and_weights() {
    let dir = copy();
    fs::remove_file(dir.path().join("tokenizer.json")).unwrap();
    expect_err(dir.path(), "no tokenizer.json or tokenizer.model");
    let dir = copy();
    fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    expect_err(dir.path(), "neither model.safetensors");
}

// ----- Input layouts beyond the plain causal LM -----

fn copy_of(arch: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/tiny").join(arch);
    for e in fs::read_dir(&src).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), dir.path().join(e.file_name())).unwrap();
    }
    dir
}

#[test]
fn gemma3_for_conditional_generation_converts_its_text_part() {
    // The tiny Gemma 3 rewritten as a multimodal checkpoint: config under `text_config`,
    // tensors under `model.language_model.` (newer transformers) or `language_model.model.`
    // (older), plus a vision tensor that must be left out. Same GGUF as the text-only one.
    let plain = copy_of("gemma3");
    let want = convert_hf(plain.path(), &plain.path().join("plain.gguf"), &opts("q8_0")).unwrap();
    for prefix in ["model.language_model.", "language_model.model."] {
        let dir = copy_of("gemma3");
        edit_config(dir.path(), |c| {
            let text = c.clone();
            *c = serde_json::json!({"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "text_config": text});
        });
        let p = dir.path().join("model.safetensors");
        let (h, mut data) = split_safetensors(&p);
        let mut out = serde_json::Map::new();
        for (k, v) in h.as_object().unwrap() {
            let name = k.strip_prefix("model.").map_or(k.clone(), |rest| format!("{prefix}{rest}"));
            out.insert(name, v.clone());
        }
        let end = data.len();
        data.extend_from_slice(&[0u8; 16]);
        out.insert(
            "vision_tower.patch_embedding.weight".into(),
            serde_json::json!({"dtype": "F32", "shape": [2, 2], "data_offsets": [end, end + 16]}),
        );
        write_safetensors(&p, serde_json::to_string(&out).unwrap().as_bytes(), &data);
        let got = convert_hf(dir.path(), &dir.path().join("mm.gguf"), &opts("q8_0")).unwrap();
        assert!(got.skipped.iter().any(|s| s.contains("vision_tower")), "{:?}", got.skipped);
        // Same tensors and keys; only `general.description` names the other architecture.
        let (a, b) = (
            gemma_gguf::gguf::GgufFile::read(&got.output).unwrap(),
            gemma_gguf::gguf::GgufFile::read(&want.output).unwrap(),
        );
        assert_eq!(a.tensors().len(), b.tensors().len());
        for (x, y) in a.tensors().iter().zip(b.tensors()) {
            assert_eq!((&x.name, x.ggml_type), (&y.name, y.ggml_type));
            assert!(a.tensor_data(x).unwrap() == b.tensor_data(y).unwrap(), "{prefix}: {} differs", x.name);
        }
        let keys = |f: &gemma_gguf::gguf::GgufFile| f.metadata().map(|(k, _)| k.to_owned()).collect::<Vec<_>>();
        assert_eq!(keys(&a), keys(&b));
        assert!(a.get_str("general.description").unwrap().contains("Gemma3ForConditionalGeneration"));
    }
}

/// A SentencePiece `ModelProto` with the given (piece, score, type) entries and
/// add_dummy_prefix off (field 3 of the normalizer spec).
fn sentencepiece_model(pieces: &[(String, f32, u32)]) -> Vec<u8> {
    fn varint(mut x: u64, out: &mut Vec<u8>) {
        while x >= 0x80 {
            out.push((x as u8) | 0x80);
            x >>= 7;
        }
        out.push(x as u8);
    }
    let mut b = Vec::new();
    for (piece, score, ty) in pieces {
        let mut m = vec![0x0a];
        varint(piece.len() as u64, &mut m);
        m.extend_from_slice(piece.as_bytes());
        m.push(0x15);
        m.extend_from_slice(&score.to_le_bytes());
        m.push(0x18);
        varint(*ty as u64, &mut m);
        b.push(0x0a);
        varint(m.len() as u64, &mut b);
        b.extend_from_slice(&m);
    }
    b.extend_from_slice(&[0x1a, 0x02, 0x18, 0x00]); // normalizer_spec { add_dummy_prefix: false }
    b
}

#[test]
fn tokenizer_model_is_preferred_and_read_as_is() {
    // A tokenizer.model next to tokenizer.json wins (as in llama.cpp's converter): its
    // pieces, scores and types go to the GGUF unchanged.
    let dir = copy();
    let tk: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(dir.path().join("tokenizer.json")).unwrap()).unwrap();
    let mut by_id: Vec<(String, u32)> = tk["model"]["vocab"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(s, i)| (s.clone(), i.as_u64().unwrap() as u32))
        .collect();
    by_id.sort_by_key(|(_, i)| *i);
    let pieces: Vec<(String, f32, u32)> = by_id
        .iter()
        .map(|(s, i)| {
            let ty = match *i {
                0..=4 => 3,
                _ if s.starts_with("<0x") && s.len() == 6 => 6,
                _ => 1,
            };
            (s.clone(), -(*i as f32) * 0.5, ty)
        })
        .collect();
    fs::write(dir.path().join("tokenizer.model"), sentencepiece_model(&pieces)).unwrap();
    let s = convert_hf(dir.path(), &dir.path().join("spm.gguf"), &opts("q8_0")).unwrap();
    let f = gemma_gguf::gguf::GgufFile::open(&s.output).unwrap();
    let tokens = f.get_str_array("tokenizer.ggml.tokens").unwrap();
    let scores = f.get_f32_array("tokenizer.ggml.scores").unwrap();
    let types = f.get_i32_array("tokenizer.ggml.token_type").unwrap();
    assert_eq!(tokens.len(), pieces.len());
    for (i, (p, sc, ty)) in pieces.iter().enumerate() {
        assert_eq!((&tokens[i], scores[i], types[i]), (p, *sc, *ty as i32), "piece {i}");
    }
    assert!(!f.get_bool("tokenizer.ggml.add_space_prefix").unwrap());
    // Truncated or malformed: a typed error naming the file.
    let mut bad = sentencepiece_model(&pieces);
    bad.truncate(bad.len() / 2 + 3);
    fs::write(dir.path().join("tokenizer.model"), bad).unwrap();
    expect_err(dir.path(), "tokenizer.model");
}

#[test]
fn generation_config_fills_special_ids_and_must_be_json() {
    // Without tokenizer_config.json and the ids in config.json, generation_config.json's
    // ids (eos given as a list) are the ones written.
    let dir = copy();
    fs::remove_file(dir.path().join("tokenizer_config.json")).unwrap();
    edit_config(dir.path(), |c| {
        let o = c.as_object_mut().unwrap();
        for k in ["bos_token_id", "eos_token_id", "pad_token_id"] {
            o.remove(k);
        }
    });
    fs::write(
        dir.path().join("generation_config.json"),
        r#"{"bos_token_id": 2, "eos_token_id": [1, 106], "pad_token_id": 0}"#,
    )
    .unwrap();
    let s = convert_hf(dir.path(), &dir.path().join("g.gguf"), &opts("q8_0")).unwrap();
    let f = gemma_gguf::gguf::GgufFile::open(&s.output).unwrap();
    assert_eq!(f.get_u32("tokenizer.ggml.bos_token_id").unwrap(), 2);
    assert_eq!(f.get_u32("tokenizer.ggml.eos_token_id").unwrap(), 1);
    assert_eq!(f.get_u32("tokenizer.ggml.padding_token_id").unwrap(), 0);
    fs::write(dir.path().join("generation_config.json"), "{nope").unwrap();
    expect_err(dir.path(), "generation_config.json");
}
