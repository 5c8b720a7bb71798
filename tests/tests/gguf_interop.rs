//! Interop with the reference GGUF reader: a file our `GgufWriter` writes must read back in
//! gguf-py's `GGUFReader` (the PyPI `gguf` package from llama.cpp, pinned in
//! scripts/requirements.txt) with every key, value type, value, tensor type, shape, offset
//! and byte equal. Each test writes a GGUF and an expected-values JSON (its format is in the
//! header of scripts/check_gguf_interop.py), runs that script from the workspace root and
//! prints what it says.
//!
//! The script runs in the project venv (`gemma_tests::python()`). Without it or the gguf
//! package the tests print a notice and pass, except in CI (`CI=true`), where they fail.

use gemma_gguf::gguf::{
    GgmlType, GgufArray, GgufFile, GgufValue, GgufWriter, TensorInfo, DEFAULT_ALIGNMENT, KEY_ALIGNMENT,
};
use gemma_tests::{in_ci, python, workspace_root};
use rand::rngs::StdRng;
use rand::{RngCore, SeedableRng};
use serde_json::{json, Value};
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const SCRIPT: &str = "scripts/check_gguf_interop.py";
/// The script's exit status for a mismatch, and for a missing gguf or numpy package.
const EXIT_MISMATCH: i32 = 1;
const EXIT_MISSING_PACKAGE: i32 = 3;

/// Every value type as a scalar and as an array, with the values a reader most easily gets
/// wrong: extremes of every integer width, u64 above 2^53 (exact only as an integer),
/// -0.0, subnormals, infinities, NaNs with a payload, non-ASCII and empty strings, a NUL
/// inside a string, empty arrays.
fn metadata() -> Vec<(&'static str, GgufValue)> {
    let nan_payload = f32::from_bits(0x7fc0_1234);
    let strings = ["", "ascii", "ünïcödé", "日本語", "🦀", "", "tab\tnewline\n", "nul\0byte"];
    vec![
        ("general.architecture", "gemma3".into()),
        ("interop.u8", 0xfe_u8.into()),
        ("interop.i8", i8::MIN.into()),
        ("interop.u16", u16::MAX.into()),
        ("interop.i16", (-12345_i16).into()),
        ("interop.u32", 0xdead_beef_u32.into()),
        ("interop.i32", i32::MIN.into()),
        ("interop.f32", std::f32::consts::PI.into()),
        ("interop.f32_negative_zero", (-0.0_f32).into()),
        ("interop.bool_true", true.into()),
        ("interop.bool_false", false.into()),
        ("interop.str", "Gemma — ünïcödé, 日本語, 🦀".into()),
        ("interop.str_empty", "".into()),
        ("interop.u64", u64::MAX.into()),
        ("interop.i64", i64::MIN.into()),
        ("interop.f64", std::f64::consts::E.into()),
        ("interop.arr_u8", vec![0_u8, 1, 127, 128, 255].into()),
        ("interop.arr_i8", vec![i8::MIN, -1, 0, 1, i8::MAX].into()),
        ("interop.arr_u16", vec![0_u16, 1, 0x8000, u16::MAX].into()),
        ("interop.arr_i16", vec![i16::MIN, -1, 0, i16::MAX].into()),
        ("interop.arr_u32", vec![0_u32, 1, 0x8000_0000, u32::MAX].into()),
        ("interop.arr_i32", vec![i32::MIN, -1, 0, 262_144, i32::MAX].into()),
        ("interop.arr_u64", vec![0_u64, (1 << 53) + 1, u64::MAX].into()),
        ("interop.arr_i64", vec![i64::MIN, -(1 << 53) - 1, 0, i64::MAX].into()),
        (
            "interop.arr_f32",
            vec![
                0.0,
                -0.0,
                1.5,
                f32::MIN_POSITIVE,
                f32::from_bits(1),
                f32::MAX,
                f32::INFINITY,
                f32::NEG_INFINITY,
                f32::NAN,
                nan_payload,
            ]
            .into(),
        ),
        ("interop.arr_f64", vec![-0.0, 0.1, f64::from_bits(1), f64::MAX, f64::NEG_INFINITY, f64::NAN].into()),
        ("interop.arr_bool", vec![true, false, false, true].into()),
        ("interop.arr_str", strings.map(String::from).to_vec().into()),
        ("interop.arr_empty_i32", GgufArray::I32(Vec::new()).into()),
        ("interop.arr_empty_str", GgufArray::String(Vec::new()).into()),
    ]
}

/// Name, type and shape in ggml order (ne0, the row length, first). Each ne0 is a whole
/// number of blocks (32 for q8_0, 256 for the k-quants), and most byte sizes are not
/// multiples of the alignment, so that the padding between tensors matters.
const TENSORS: [(&str, GgmlType, &[u64]); 8] = [
    ("f32.1d", GgmlType::F32, &[67]),
    ("f16.2d", GgmlType::F16, &[48, 5]),
    ("bf16.3d", GgmlType::BF16, &[32, 3, 2]),
    ("q8_0.2d", GgmlType::Q8_0, &[96, 3]),
    ("q4_K.3d", GgmlType::Q4_K, &[256, 3, 2]),
    ("q6_K.4d", GgmlType::Q6_K, &[512, 2, 1, 2]),
    ("i32.1d", GgmlType::I32, &[17]),
    ("f32.4d", GgmlType::F32, &[8, 1, 3, 2]),
];

/// A GGUF written by our writer, and what the reference reader must find in it.
struct Case {
    gguf: PathBuf,
    expected: Value,
}

/// Writes `{stem}.gguf` into `dir` with [`metadata`] and [`TENSORS`] filled with random
/// bytes from `seed`; `alignment` is set through `general.alignment` when given.
fn write_case(dir: &Path, stem: &str, alignment: Option<u32>, seed: u64) -> Case {
    let gguf = dir.join(format!("{stem}.gguf"));
    let mut writer = GgufWriter::create(&gguf).expect("create");
    let mut kv = Vec::new();
    if let Some(alignment) = alignment {
        // set_alignment appends the key where it is called: first here.
        writer.set_alignment(alignment).expect("set_alignment");
        kv.push((KEY_ALIGNMENT, GgufValue::U32(alignment)));
    }
    kv.extend(metadata());
    for (key, value) in kv.iter().skip(usize::from(alignment.is_some())) {
        writer.add_kv(key, value.clone()).expect("add_kv");
    }
    for (name, ggml_type, dims) in TENSORS {
        writer.add_tensor_info(name, dims, ggml_type).expect("add_tensor_info");
    }
    let infos = writer.tensors().to_vec();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = Vec::new();
    for info in &infos {
        let mut data = vec![0_u8; info.n_bytes as usize];
        rng.fill_bytes(&mut data);
        writer.write_tensor_data(&info.name, &data).expect("write_tensor_data");
        tensors.push(tensor_json(info, &data));
    }
    writer.finish().expect("finish");

    // Our reader says where the data section starts; GGUFReader must agree.
    let file = GgufFile::open(&gguf).expect("our reader opens what our writer wrote");
    let kv: Vec<Value> = kv.iter().map(|(key, value)| kv_json(key, value)).collect();
    let expected = json!({
        "version": file.version(),
        "alignment": alignment.unwrap_or(DEFAULT_ALIGNMENT),
        "data_offset": file.data_offset(),
        "kv": kv,
        "tensors": tensors,
    });
    Case { gguf, expected }
}

fn kv_json(key: &str, value: &GgufValue) -> Value {
    let type_name = value.value_type().name();
    match value {
        GgufValue::Array(a) => json!({
            "key": key,
            "type": type_name,
            "element_type": a.element_type().name(),
            "value": array_json(a),
        }),
        scalar => json!({ "key": key, "type": type_name, "value": scalar_json(scalar) }),
    }
}

/// Floats as the hex of their bits, so that the comparison is exact (see the script).
fn f32_hex(x: f32) -> Value {
    json!(format!("{:#010x}", x.to_bits()))
}

fn f64_hex(x: f64) -> Value {
    json!(format!("{:#018x}", x.to_bits()))
}

fn scalar_json(value: &GgufValue) -> Value {
    match value {
        GgufValue::U8(v) => json!(v),
        GgufValue::I8(v) => json!(v),
        GgufValue::U16(v) => json!(v),
        GgufValue::I16(v) => json!(v),
        GgufValue::U32(v) => json!(v),
        GgufValue::I32(v) => json!(v),
        GgufValue::F32(v) => f32_hex(*v),
        GgufValue::Bool(v) => json!(v),
        GgufValue::String(v) => json!(v),
        GgufValue::Array(a) => array_json(a),
        GgufValue::U64(v) => json!(v),
        GgufValue::I64(v) => json!(v),
        GgufValue::F64(v) => f64_hex(*v),
    }
}

fn array_json(array: &GgufArray) -> Value {
    match array {
        GgufArray::U8(v) => json!(v),
        GgufArray::I8(v) => json!(v),
        GgufArray::U16(v) => json!(v),
        GgufArray::I16(v) => json!(v),
        GgufArray::U32(v) => json!(v),
        GgufArray::I32(v) => json!(v),
        GgufArray::F32(v) => v.iter().copied().map(f32_hex).collect(),
        GgufArray::Bool(v) => json!(v),
        GgufArray::String(v) => json!(v),
        GgufArray::U64(v) => json!(v),
        GgufArray::I64(v) => json!(v),
        GgufArray::F64(v) => v.iter().copied().map(f64_hex).collect(),
    }
}

fn tensor_json(info: &TensorInfo, data: &[u8]) -> Value {
    let mut data_hex = String::with_capacity(2 * data.len());
    for byte in data {
        write!(data_hex, "{byte:02x}").expect("writing to a String");
    }
    json!({
        "name": info.name,
        "type": info.ggml_type.id(),
        "type_name": info.ggml_type.name(),
        "shape": info.dims,
        "offset": info.offset,
        "n_bytes": info.n_bytes,
        "data_hex": data_hex,
    })
}

/// Writes `expected` next to `gguf` and runs the script on both from the workspace root,
/// printing its output. `None` (after a notice) when the project venv or the gguf package
/// is missing; under CI that is a failure instead.
fn run_check(gguf: &Path, expected: &Value) -> Option<Output> {
    let json_path = gguf.with_extension("expected.json");
    let text = serde_json::to_string_pretty(expected).expect("serialise");
    std::fs::write(&json_path, text).expect("write the expected JSON");
    // Either way the message ends with the fix: `scripts/venv.sh -r scripts/requirements.txt`.
    const FIX: &str = "run `scripts/venv.sh -r scripts/requirements.txt` (the project venv)";
    let result = python()
        .map(|py| Command::new(py).arg(SCRIPT).arg(gguf).arg(&json_path).current_dir(workspace_root()).output());
    let missing = match result {
        None => format!("the project venv (.venv/bin/python, or $GEMMA_PYTHON) is missing; {FIX}"),
        Some(Err(e)) if e.kind() == io::ErrorKind::NotFound => format!("the venv's python cannot be run; {FIX}"),
        Some(Err(e)) => panic!("cannot run the venv's python on {SCRIPT}: {e}"),
        Some(Ok(out)) if out.status.code() == Some(EXIT_MISSING_PACKAGE) => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            stderr.trim().trim_start_matches("error: ").to_owned()
        }
        Some(Ok(out)) => {
            println!("$ python {SCRIPT} {} {}", gguf.display(), json_path.display());
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
            return Some(out);
        }
    };
    if in_ci() {
        panic!("the GGUF interop test cannot run under CI=true: {missing}");
    }
    eprintln!("notice: skipping the GGUF interop test: {missing}");
    None
}

#[test]
fn gguf_py_reads_what_we_write() {
    let dir = tempfile::tempdir().expect("temp dir");
    let cases = [("align64", Some(64)), ("default_align", None)];
    for (seed, (stem, alignment)) in cases.into_iter().enumerate() {
        let case = write_case(dir.path(), stem, alignment, seed as u64);
        let offsets = case.expected["tensors"].as_array().expect("tensors");
        let off_64 = offsets.iter().any(|t| t["offset"].as_u64().is_some_and(|o| o % 64 != 0));
        // The layouts differ: with 32 some tensor starts off a multiple of 64.
        assert_eq!(off_64, alignment.is_none(), "{stem}: offsets do not show the alignment");
        let Some(out) = run_check(&case.gguf, &case.expected) else {
            return;
        };
        assert!(
            out.status.success(),
            "{stem}: GGUFReader does not read what GgufWriter wrote ({}); see the output above",
            out.status
        );
    }
}

/// The list entry of `list` (an array of objects) whose `field` is `name`.
fn entry<'a>(list: &'a mut Value, field: &str, name: &str) -> &'a mut Value {
    list.as_array_mut()
        .and_then(|a| a.iter_mut().find(|e| e[field] == name))
        .unwrap_or_else(|| panic!("no entry {name} in the expected JSON"))
}

/// Replaces `s[i]`, a hex digit, with another one.
fn flip_hex_digit(s: &str, i: usize) -> String {
    let digit = if &s[i..=i] == "0" { "1" } else { "0" };
    format!("{}{digit}{}", &s[..i], &s[i + 1..])
}

/// The check must fail, naming the culprit, for each way the expectations can differ from
/// the file: otherwise a passing `gguf_py_reads_what_we_write` proves nothing.
#[test]
fn interop_check_reports_each_mismatch() {
    type Mutation = fn(&mut Value);
    let mutations: [(&str, &str, Mutation); 8] = [
        ("one tensor byte", "tensor 'q4_K.3d'", |j| {
            let t = entry(&mut j["tensors"], "name", "q4_K.3d");
            t["data_hex"] = json!(flip_hex_digit(t["data_hex"].as_str().unwrap(), 301));
        }),
        ("a NaN payload bit", "key 'interop.arr_f32'", |j| {
            entry(&mut j["kv"], "key", "interop.arr_f32")["value"][9] = json!("0x7fc01235");
        }),
        ("a value type", "key 'interop.u16'", |j| {
            entry(&mut j["kv"], "key", "interop.u16")["type"] = json!("i16");
        }),
        ("one character of a string", "key 'interop.arr_str'", |j| {
            entry(&mut j["kv"], "key", "interop.arr_str")["value"][2] = json!("ünïcodé");
        }),
        ("a key left out", "key 'interop.arr_empty_str'", |j| {
            let kv = j["kv"].as_array_mut().unwrap();
            kv.retain(|e| e["key"] != "interop.arr_empty_str");
        }),
        ("a shape", "tensor 'i32.1d'", |j| {
            entry(&mut j["tensors"], "name", "i32.1d")["shape"] = json!([17, 1]);
        }),
        ("a tensor type", "tensor 'q6_K.4d'", |j| {
            entry(&mut j["tensors"], "name", "q6_K.4d")["type"] = json!(GgmlType::Q5_K.id());
        }),
        ("the alignment", "alignment", |j| j["alignment"] = json!(32)),
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let case = write_case(dir.path(), "base", Some(64), 7);
    for (what, culprit, mutate) in mutations {
        let mut expected = case.expected.clone();
        mutate(&mut expected);
        let Some(out) = run_check(&case.gguf, &expected) else {
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(EXIT_MISMATCH), "{what}: not reported as a mismatch");
        assert!(stderr.contains(&format!("MISMATCH {culprit}")), "{what}: {culprit} not named");
    }

    // The file itself corrupted: one byte of f16.2d's data.
    let t = &case.expected["tensors"][1];
    assert_eq!(t["name"], "f16.2d");
    let at = case.expected["data_offset"].as_u64().unwrap() + t["offset"].as_u64().unwrap() + 5;
    let mut bytes = std::fs::read(&case.gguf).expect("read");
    bytes[at as usize] ^= 0x10;
    std::fs::write(&case.gguf, bytes).expect("write");
    let Some(out) = run_check(&case.gguf, &case.expected) else {
        return;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(EXIT_MISMATCH), "corrupt file: not a mismatch");
    assert!(stderr.contains("MISMATCH tensor 'f16.2d': 1 of 480 bytes differ, first at byte 5"));
}
