//! `gemma info FILE`: what a GGUF file holds, as text or as one JSON object.
//!
//! Every key/value pair appears in exactly one place, so nothing in the file is hidden:
//! the header (`general.alignment`), the model (`general.architecture`, `general.name` and
//! every `{arch}.*` key, the hyper-parameters), the tokenizer (`tokenizer.*`; its per-token
//! arrays summarised by element type and length, the special token ids resolved to their
//! pieces), the chat template, the other `general.*` keys, and anything else under "other
//! keys". Tensors are summarised per ggml type; `--tensors` lists each one.
#![forbid(unsafe_code)]

use anyhow::{anyhow, bail, Context, Result};
use gemma_gguf::gguf::{limits, GgmlType, GgufArray, GgufError, GgufFile, GgufValue, KEY_ALIGNMENT};
use serde::ser::{SerializeMap, Serializer};
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};

// Key names from the library's one table (llama.cpp's spelling).
use gemma_gguf::names::general::{ARCHITECTURE as KEY_ARCHITECTURE, FILE_TYPE as KEY_FILE_TYPE, NAME as KEY_NAME};
use gemma_gguf::names::tokenizer::{
    CHAT_TEMPLATE as KEY_CHAT_TEMPLATE, MERGES as KEY_MERGES, MODEL as KEY_TOKENIZER_MODEL, SCORES as KEY_SCORES,
    TOKENS as KEY_TOKENS, TOKEN_TYPE as KEY_TOKEN_TYPE,
};
/// Special token ids are `tokenizer.ggml.{name}_token_id`: bos, eos, eot, unknown, padding…
const TOKENIZER_PREFIX: &str = "tokenizer.ggml.";
const SPECIAL_ID_SUFFIX: &str = "_token_id";

/// Arrays up to this length are shown whole; longer ones as their element type, length and
/// first [`ARRAY_HEAD`] elements.
const ARRAY_SHOWN_MAX: usize = 16;
const ARRAY_HEAD: usize = 8;
/// Strings in the text output are cut after this many characters (JSON has them whole).
const TEXT_STRING_MAX: usize = 60;

/// `enum llama_ftype` (the value of `general.file_type`) from llama.cpp's include/llama.h
/// (llama-cpp-sys-2 0.1.161), without the `LLAMA_FTYPE_` and `MOSTLY_` prefixes.
#[rustfmt::skip]
pub(crate) const FILE_TYPES: &[(u64, &str)] = &[
    (0, "ALL_F32"), (1, "F16"), (2, "Q4_0"), (3, "Q4_1"), (7, "Q8_0"), (8, "Q5_0"),
    (9, "Q5_1"), (10, "Q2_K"), (11, "Q3_K_S"), (12, "Q3_K_M"), (13, "Q3_K_L"),
    (14, "Q4_K_S"), (15, "Q4_K_M"), (16, "Q5_K_S"), (17, "Q5_K_M"), (18, "Q6_K"),
    (19, "IQ2_XXS"), (20, "IQ2_XS"), (21, "Q2_K_S"), (22, "IQ3_XS"), (23, "IQ3_XXS"),
    (24, "IQ1_S"), (25, "IQ4_NL"), (26, "IQ3_S"), (27, "IQ3_M"), (28, "IQ2_S"),
    (29, "IQ2_M"), (30, "IQ4_XS"), (31, "IQ1_M"), (32, "BF16"), (36, "TQ1_0"),
    (37, "TQ2_0"), (38, "MXFP4_MOE"), (39, "NVFP4"), (40, "Q1_0"), (41, "Q2_0"),
];

// The command's help text is the doc comment of `Command::Info` in main.rs.
#[derive(clap::Args)]
pub struct Args {
    /// The GGUF file. For a split model, the first shard (`…-00001-of-0000N.gguf`): the
    /// other shards are read from the same folder.
    file: PathBuf,
    /// Print one JSON object instead of text, for scripts. Metadata values are JSON values;
    /// arrays longer than 16 elements become {"type", "len", "first"} with the first 8.
    #[arg(long)]
    json: bool,
    /// Also list every tensor: name, ggml type, shape in ggml order (row length first, as in
    /// `640 x 262144`) and bytes. Without it only the per-type summary is shown.
    #[arg(long)]
    tensors: bool,
}

pub fn run(args: Args) -> Result<()> {
    if args.file.is_dir() {
        bail!("{}: is a folder; give the path of a .gguf file", args.file.display());
    }
    let file = GgufFile::open(&args.file).map_err(|e| open_error(&args.file, e))?;
    let report = Report::new(&file, &args)?;
    let out = if args.json { serde_json::to_string_pretty(&report)? + "\n" } else { report.to_string() };
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        // `gemma info … | head` closing the pipe early is not an error.
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e).context("writing to stdout"),
        _ => Ok(()),
    }
}

/// The reader's error, prefixed with the path (unless it names one already), and a hint
/// where the likely cause is not what the file says about itself.
fn open_error(path: &Path, e: GgufError) -> anyhow::Error {
    let hint = match &e {
        GgufError::BadMagic { .. } => {
            " (Hugging Face checkpoints, safetensors or PyTorch, must be converted first, \
             e.g. with llama.cpp's convert_hf_to_gguf.py)"
        }
        GgufError::Truncated { offset, .. } if *offset < limits::HEADER_LEN => {
            " (is this a GGUF file? It is shorter than the 24-byte GGUF header)"
        }
        GgufError::Truncated { .. }
        | GgufError::CountTooLarge { .. }
        | GgufError::ArrayTooLong { .. }
        | GgufError::DataSectionOutOfBounds { .. }
        | GgufError::TensorOutOfBounds { .. } => {
            " (the file looks cut short or corrupted: an interrupted download or copy? \
             Compare its size with the original's)"
        }
        _ => "",
    };
    match e {
        GgufError::Io { .. } | GgufError::MissingShard { .. } => anyhow!("{e}"),
        _ => anyhow!("{}: {e}{hint}", path.display()),
    }
}

/// Everything `gemma info` shows, borrowed from the open file. Serialised as the `--json`
/// object; [`fmt::Display`] is the text form.
#[derive(Serialize)]
struct Report<'a> {
    file: FileSummary,
    architecture: Option<&'a str>,
    name: Option<&'a str>,
    /// The `{arch}.*` keys, without the `{arch}.` prefix.
    #[serde(serialize_with = "pair_map")]
    hparams: Vec<(&'a str, Meta<'a>)>,
    tokenizer: Tokenizer<'a>,
    chat_template: ChatTemplate<'a>,
    /// `general.*` keys other than the architecture, name and alignment.
    #[serde(serialize_with = "pair_map")]
    general: Vec<(&'a str, Meta<'a>)>,
    /// llama.cpp's name for the value of `general.file_type`, when it has one.
    file_type: Option<&'static str>,
    /// Keys in none of the sections above.
    #[serde(serialize_with = "pair_map")]
    other: Vec<(&'a str, Meta<'a>)>,
    /// Per ggml type, most bytes first.
    types: Vec<TypeSummary>,
    totals: Totals,
    /// Every tensor in file order; only with `--tensors`.
    #[serde(skip_serializing_if = "Option::is_none")]
    tensors: Option<Vec<TensorRow<'a>>>,
}

#[derive(Serialize)]
struct FileSummary {
    path: String,
    /// Bytes of all shards together.
    size_bytes: u64,
    gguf_version: u32,
    alignment: u64,
    n_kv: usize,
    n_tensors: usize,
    /// Where the (first) file's data section starts.
    data_offset: u64,
    /// The path of each file of the model, the first one given.
    shards: Vec<String>,
}

#[derive(Serialize)]
struct Tokenizer<'a> {
    model: Option<&'a str>,
    /// Number of entries of `tokenizer.ggml.tokens`.
    vocab_size: Option<usize>,
    tokens: Option<ArrayShape>,
    scores: Option<ArrayShape>,
    token_type: Option<ArrayShape>,
    merges: Option<ArrayShape>,
    /// `tokenizer.ggml.{name}_token_id` by name, with the token's piece.
    #[serde(serialize_with = "pair_map")]
    special_tokens: Vec<(&'a str, SpecialToken<'a>)>,
    /// The remaining `tokenizer.*` keys (add_bos_token, add_space_prefix, pre…).
    #[serde(serialize_with = "pair_map")]
    settings: Vec<(&'a str, Meta<'a>)>,
}

#[derive(Serialize)]
struct ArrayShape {
    #[serde(rename = "type")]
    element_type: &'static str,
    len: usize,
}

#[derive(Serialize)]
struct SpecialToken<'a> {
    id: i64,
    /// `None` when the id is outside the vocabulary or there is no token list.
    token: Option<&'a str>,
}

#[derive(Serialize)]
struct ChatTemplate<'a> {
    present: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    bytes: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    first_line: Option<&'a str>,
}

#[derive(Serialize)]
struct TypeSummary {
    #[serde(rename = "type")]
    ggml_type: &'static str,
    tensors: usize,
    parameters: u64,
    bytes: u64,
    /// Fraction of all tensor bytes, 0 to 1.
    share: f64,
}

#[derive(Serialize)]
struct Totals {
    tensors: usize,
    parameters: u64,
    /// Tensor data without padding.
    bytes: u64,
    /// 8 × bytes / parameters; `None` without parameters.
    bits_per_weight: Option<f64>,
    /// File size minus tensor bytes: header, metadata and alignment padding.
    overhead_bytes: u64,
}

#[derive(Serialize)]
struct TensorRow<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    ggml_type: &'static str,
    /// ggml order: `shape[0]` is the row length.
    shape: &'a [u64],
    bytes: u64,
    /// Which file of a split model holds the data (0 for single files).
    shard: usize,
}

/// A metadata value, serialised by [`value_json`].
struct Meta<'a>(&'a GgufValue);

impl Serialize for Meta<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        value_json(self.0).serialize(s)
    }
}

/// Serialises `(key, value)` pairs as a JSON object, keeping their order.
fn pair_map<S: Serializer, V: Serialize>(pairs: &[(&str, V)], s: S) -> Result<S::Ok, S::Error> {
    let mut map = s.serialize_map(Some(pairs.len()))?;
    for (k, v) in pairs {
        map.serialize_entry(k, v)?;
    }
    map.end()
}

/// Where a key/value pair is shown.
#[derive(PartialEq)]
enum Section {
    /// In a dedicated field (architecture, name, tokenizer model and arrays, special ids,
    /// chat template) or in the file summary (alignment).
    Dedicated,
    Hparams,
    Tokenizer,
    General,
    Other,
}

fn section_of(key: &str, value: &GgufValue, arch: Option<&str>) -> Section {
    let is_str = matches!(value, GgufValue::String(_));
    let in_arch = arch.is_some_and(|a| key.strip_prefix(a).is_some_and(|r| r.starts_with('.')));
    match key {
        KEY_ALIGNMENT | KEY_TOKENS | KEY_SCORES | KEY_TOKEN_TYPE | KEY_MERGES => Section::Dedicated,
        KEY_ARCHITECTURE | KEY_NAME | KEY_TOKENIZER_MODEL | KEY_CHAT_TEMPLATE if is_str => Section::Dedicated,
        _ if special_name(key).is_some() && int_value(value).is_some() => Section::Dedicated,
        _ if in_arch => Section::Hparams,
        _ if key.starts_with("general.") => Section::General,
        _ if key.starts_with("tokenizer.") => Section::Tokenizer,
        _ => Section::Other,
    }
}

/// `bos` for `tokenizer.ggml.bos_token_id`.
fn special_name(key: &str) -> Option<&str> {
    key.strip_prefix(TOKENIZER_PREFIX)?.strip_suffix(SPECIAL_ID_SUFFIX).filter(|name| !name.is_empty())
}

/// An integer value of any width that fits i64.
fn int_value(v: &GgufValue) -> Option<i64> {
    match *v {
        GgufValue::U8(x) => Some(x.into()),
        GgufValue::I8(x) => Some(x.into()),
        GgufValue::U16(x) => Some(x.into()),
        GgufValue::I16(x) => Some(x.into()),
        GgufValue::U32(x) => Some(x.into()),
        GgufValue::I32(x) => Some(x.into()),
        GgufValue::U64(x) => i64::try_from(x).ok(),
        GgufValue::I64(x) => Some(x),
        _ => None,
    }
}

impl<'a> Report<'a> {
    fn new(file: &'a GgufFile, args: &Args) -> Result<Self> {
        let architecture = file.get_str(KEY_ARCHITECTURE).ok();
        let pick = |section: Section| -> Vec<(&'a str, Meta<'a>)> {
            file.metadata()
                .filter(|(k, v)| section_of(k, v, architecture) == section)
                .map(|(k, v)| (k, Meta(v)))
                .collect()
        };
        let mut hparams = pick(Section::Hparams);
        let prefix_len = architecture.map_or(0, |a| a.len() + 1);
        for (k, _) in &mut hparams {
            *k = &k[prefix_len..];
        }
        let file_type = file.get_u64(KEY_FILE_TYPE).ok();
        let summary = file_summary(file, &args.file)?;
        let (types, totals) = type_summary(file, summary.size_bytes);
        Ok(Report {
            file: summary,
            architecture,
            name: file.get_str(KEY_NAME).ok(),
            hparams,
            tokenizer: tokenizer(file, pick(Section::Tokenizer)),
            chat_template: chat_template(file),
            general: pick(Section::General),
            file_type: FILE_TYPES.iter().find(|(id, _)| Some(*id) == file_type).map(|r| r.1),
            other: pick(Section::Other),
            types,
            totals,
            tensors: args.tensors.then(|| tensor_rows(file)),
        })
    }
}

fn file_summary(file: &GgufFile, path: &Path) -> Result<FileSummary> {
    let mut size_bytes = 0;
    let mut shards = Vec::new();
    for shard in file.shard_paths() {
        let shard = shard.unwrap_or(path);
        let meta = std::fs::metadata(shard).with_context(|| format!("{}: cannot read its size", shard.display()))?;
        size_bytes += meta.len();
        shards.push(shard.display().to_string());
    }
    Ok(FileSummary {
        path: path.display().to_string(),
        size_bytes,
        gguf_version: file.version(),
        alignment: file.alignment(),
        n_kv: file.metadata().len(),
        n_tensors: file.tensors().len(),
        data_offset: file.data_offset(),
        shards,
    })
}

fn tokenizer<'a>(file: &'a GgufFile, settings: Vec<(&'a str, Meta<'a>)>) -> Tokenizer<'a> {
    let shape = |key: &str| match file.get(key) {
        Some(GgufValue::Array(a)) => Some(ArrayShape { element_type: a.element_type().name(), len: a.len() }),
        _ => None,
    };
    let tokens = file.get_str_array(KEY_TOKENS).ok();
    let special_tokens = file
        .metadata()
        .filter_map(|(k, v)| Some((special_name(k)?, int_value(v)?)))
        .map(|(name, id)| {
            let token = usize::try_from(id).ok().and_then(|i| tokens?.get(i));
            let token = token.map(String::as_str);
            (name, SpecialToken { id, token })
        })
        .collect();
    Tokenizer {
        model: file.get_str(KEY_TOKENIZER_MODEL).ok(),
        vocab_size: shape(KEY_TOKENS).map(|s| s.len),
        tokens: shape(KEY_TOKENS),
        scores: shape(KEY_SCORES),
        token_type: shape(KEY_TOKEN_TYPE),
        merges: shape(KEY_MERGES),
        special_tokens,
        settings,
    }
}

fn chat_template(file: &GgufFile) -> ChatTemplate<'_> {
    match file.get_str(KEY_CHAT_TEMPLATE) {
        Ok(t) => ChatTemplate { present: true, bytes: Some(t.len()), first_line: Some(t.lines().next().unwrap_or("")) },
        Err(_) => ChatTemplate { present: false, bytes: None, first_line: None },
    }
}

/// Tensors, parameters and bytes per type (most bytes first), and the totals; `size` is
/// the file's, for the overhead.
fn type_summary(file: &GgufFile, size: u64) -> (Vec<TypeSummary>, Totals) {
    let mut by_type: BTreeMap<u32, (GgmlType, usize, u64, u64)> = BTreeMap::new();
    for t in file.tensors() {
        let row = by_type.entry(t.ggml_type.id()).or_insert((t.ggml_type, 0, 0, 0));
        row.1 += 1;
        row.2 += t.n_elements();
        row.3 += t.n_bytes;
    }
    let parameters: u64 = by_type.values().map(|r| r.2).sum();
    let bytes: u64 = by_type.values().map(|r| r.3).sum();
    let mut types: Vec<TypeSummary> = by_type
        .into_values()
        .map(|(ty, tensors, parameters, type_bytes)| TypeSummary {
            ggml_type: ty.name(),
            tensors,
            parameters,
            bytes: type_bytes,
            share: if bytes == 0 { 0.0 } else { type_bytes as f64 / bytes as f64 },
        })
        .collect();
    types.sort_by_key(|t| std::cmp::Reverse(t.bytes));
    let totals = Totals {
        tensors: file.tensors().len(),
        parameters,
        bytes,
        bits_per_weight: (parameters > 0).then(|| 8.0 * bytes as f64 / parameters as f64),
        overhead_bytes: size.saturating_sub(bytes),
    };
    (types, totals)
}

fn tensor_rows(file: &GgufFile) -> Vec<TensorRow<'_>> {
    file.tensors()
        .iter()
        .map(|t| TensorRow {
            name: &t.name,
            ggml_type: t.ggml_type.name(),
            shape: &t.dims,
            bytes: t.n_bytes,
            shard: t.shard,
        })
        .collect()
}

// ----- metadata values -----

/// A value as JSON: arrays up to [`ARRAY_SHOWN_MAX`] elements whole, longer ones as
/// `{"type", "len", "first"}`.
fn value_json(v: &GgufValue) -> Json {
    let Some(a) = as_array(v) else {
        return array_json(&scalar_as_array(v), 1).pop().unwrap_or(Json::Null);
    };
    if a.len() <= ARRAY_SHOWN_MAX {
        return Json::Array(array_json(a, a.len()));
    }
    serde_json::json!({
        "type": a.element_type().name(),
        "len": a.len(),
        "first": array_json(a, ARRAY_HEAD),
    })
}

fn as_array(v: &GgufValue) -> Option<&GgufArray> {
    match v {
        GgufValue::Array(a) => Some(a),
        _ => None,
    }
}

/// A scalar as a one-element array, so that one function converts both to JSON.
fn scalar_as_array(v: &GgufValue) -> GgufArray {
    match v {
        GgufValue::U8(x) => GgufArray::U8(vec![*x]),
        GgufValue::I8(x) => GgufArray::I8(vec![*x]),
        GgufValue::U16(x) => GgufArray::U16(vec![*x]),
        GgufValue::I16(x) => GgufArray::I16(vec![*x]),
        GgufValue::U32(x) => GgufArray::U32(vec![*x]),
        GgufValue::I32(x) => GgufArray::I32(vec![*x]),
        GgufValue::F32(x) => GgufArray::F32(vec![*x]),
        GgufValue::Bool(x) => GgufArray::Bool(vec![*x]),
        GgufValue::String(x) => GgufArray::String(vec![x.clone()]),
        GgufValue::U64(x) => GgufArray::U64(vec![*x]),
        GgufValue::I64(x) => GgufArray::I64(vec![*x]),
        GgufValue::F64(x) => GgufArray::F64(vec![*x]),
        GgufValue::Array(a) => a.clone(),
    }
}

/// The first `n` elements of `a` as JSON values.
fn array_json(a: &GgufArray, n: usize) -> Vec<Json> {
    fn head<T: Clone + Into<Json>>(v: &[T], n: usize) -> Vec<Json> {
        v.iter().take(n).cloned().map(Into::into).collect()
    }
    match a {
        GgufArray::U8(v) => head(v, n),
        GgufArray::I8(v) => head(v, n),
        GgufArray::U16(v) => head(v, n),
        GgufArray::I16(v) => head(v, n),
        GgufArray::U32(v) => head(v, n),
        GgufArray::I32(v) => head(v, n),
        GgufArray::Bool(v) => head(v, n),
        GgufArray::String(v) => head(v, n),
        GgufArray::U64(v) => head(v, n),
        GgufArray::I64(v) => head(v, n),
        // Through the shortest decimal that reads back as the same f32, so that 1e-6 is
        // written 1e-6 and not 9.999999974752427e-7.
        GgufArray::F32(v) => v.iter().take(n).map(|x| float_json(x.to_string())).collect(),
        GgufArray::F64(v) => v.iter().take(n).map(|x| float_json(x.to_string())).collect(),
    }
}

/// A float (as Rust prints it) as a JSON number; NaN and infinities, which JSON lacks, as
/// the strings "NaN", "inf", "-inf".
fn float_json(text: String) -> Json {
    match text.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
        Some(n) => Json::Number(n),
        None => Json::String(text),
    }
}

/// A value for the text output: strings quoted and cut, arrays as their first elements
/// followed by element count and type.
fn value_text(v: &GgufValue) -> String {
    let Some(a) = as_array(v) else {
        return json_text(&value_json(v), TEXT_STRING_MAX);
    };
    let shown = if a.len() <= ARRAY_SHOWN_MAX { a.len() } else { ARRAY_HEAD };
    let items: Vec<String> = array_json(a, shown).iter().map(|j| json_text(j, TEXT_STRING_MAX / 3)).collect();
    let more = if shown < a.len() { ", …" } else { "" };
    let ty = a.element_type();
    format!("[{}{more}] ({} × {ty})", items.join(", "), a.len())
}

fn json_text(j: &Json, max_chars: usize) -> String {
    match j {
        Json::String(s) => quoted(s, max_chars),
        other => other.to_string(),
    }
}

/// `s` in quotes with escapes, cut after `max_chars` characters (marked by `…`).
fn quoted(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((cut, _)) => format!("{:?}…", &s[..cut]),
        None => format!("{s:?}"),
    }
}

// ----- text output -----

impl fmt::Display for Report<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.fmt_file(f)?;
        self.fmt_model(f)?;
        self.fmt_tokenizer(f)?;
        let t = &self.chat_template;
        match (t.bytes, t.first_line) {
            (Some(bytes), Some(line)) => writeln!(
                f,
                "\nchat template\n  present, {} bytes; first line {}",
                thousands(bytes as u64),
                quoted(line, TEXT_STRING_MAX)
            )?,
            _ => writeln!(f, "\nchat template\n  absent (the Gemma turn format is built in)")?,
        }
        let file_type = |k: &str| (k == KEY_FILE_TYPE).then_some(self.file_type).flatten();
        writeln!(f, "\ngeneral")?;
        kv_table(&self.general, "general.", file_type).write(f, "  ")?;
        if !self.other.is_empty() {
            writeln!(f, "\nother keys")?;
            kv_table(&self.other, "", |_| None).write(f, "  ")?;
        }
        self.fmt_types(f)?;
        match &self.tensors {
            Some(rows) => fmt_tensors(f, rows),
            None => writeln!(f, "\n(gemma info --tensors lists every tensor)"),
        }
    }
}

impl Report<'_> {
    fn fmt_file(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = &self.file;
        let mut t = Table::new(&[false, false]);
        t.row(["file", &s.path]);
        let size = format!("{} bytes ({})", thousands(s.size_bytes), human_bytes(s.size_bytes));
        t.row(["size", &size]);
        t.row(["gguf version", &s.gguf_version.to_string()]);
        t.row(["alignment", &s.alignment.to_string()]);
        t.row(["data offset", &thousands(s.data_offset)]);
        t.row(["key/values", &s.n_kv.to_string()]);
        t.row(["tensors", &s.n_tensors.to_string()]);
        t.row(["shards", &s.shards.len().to_string()]);
        if s.shards.len() > 1 {
            for shard in &s.shards {
                t.row(["", shard]);
            }
        }
        t.write(f, "")
    }

    fn fmt_model(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = Table::new(&[false, false]);
        t.row(["architecture", self.architecture.unwrap_or("(general.architecture is absent)")]);
        t.row(["name", self.name.unwrap_or("(absent)")]);
        writeln!(f)?;
        t.write(f, "")?;
        let arch = self.architecture.unwrap_or("{arch}");
        writeln!(f, "\nhyper-parameters ({arch}.*)")?;
        if self.hparams.is_empty() {
            writeln!(f, "  (none)")?;
        }
        kv_table(&self.hparams, "", |_| None).write(f, "  ")
    }

    fn fmt_tokenizer(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let tok = &self.tokenizer;
        let mut t = Table::new(&[false, false]);
        t.row(["model", tok.model.unwrap_or("(tokenizer.ggml.model is absent)")]);
        let vocab = tok.vocab_size.map_or("(no token list)".into(), |n| format!("{} tokens", thousands(n as u64)));
        t.row(["vocabulary", &vocab]);
        for (name, shape) in [("scores", &tok.scores), ("token_type", &tok.token_type), ("merges", &tok.merges)] {
            let text =
                shape.as_ref().map_or("absent".into(), |s| format!("{} × {}", thousands(s.len as u64), s.element_type));
            t.row([name, &text]);
        }
        for (name, special) in &tok.special_tokens {
            let token = special.token.map_or("(not in the vocabulary)".into(), |s| quoted(s, TEXT_STRING_MAX));
            t.row([name, &format!("{} {token}", special.id)]);
        }
        for (key, value) in &tok.settings {
            t.row([key.strip_prefix(TOKENIZER_PREFIX).unwrap_or(key), &value_text(value.0)]);
        }
        writeln!(f, "\ntokenizer")?;
        t.write(f, "  ")
    }

    fn fmt_types(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut t = Table::new(&[false, true, true, true, true]);
        t.row(["type", "tensors", "parameters", "bytes", "share"]);
        for s in &self.types {
            let share = format!("{:.1}%", 100.0 * s.share);
            t.row([s.ggml_type, &s.tensors.to_string(), &thousands(s.parameters), &thousands(s.bytes), &share]);
        }
        let total = &self.totals;
        let share = if total.bytes > 0 { "100.0%" } else { "" };
        t.row(["total", &total.tensors.to_string(), &thousands(total.parameters), &thousands(total.bytes), share]);
        writeln!(f, "\ntensors by type")?;
        t.write(f, "  ")?;
        let bpw = total.bits_per_weight.map_or("-".into(), |b| format!("{b:.2}"));
        writeln!(
            f,
            "  {} parameters, {} of tensor data, {bpw} bits per weight; {} of header and padding",
            human_count(total.parameters),
            human_bytes(total.bytes),
            human_bytes(total.overhead_bytes)
        )
    }
}

fn fmt_tensors(f: &mut fmt::Formatter<'_>, rows: &[TensorRow]) -> fmt::Result {
    let mut t = Table::new(&[false, false, false, true]);
    t.row(["name", "type", "shape", "bytes"]);
    for r in rows {
        let shape: Vec<String> = r.shape.iter().map(u64::to_string).collect();
        let shape = if shape.is_empty() { "scalar".into() } else { shape.join(" x ") };
        t.row([r.name, r.ggml_type, &shape, &thousands(r.bytes)]);
    }
    writeln!(f, "\ntensors (shapes in ggml order: row length first)")?;
    t.write(f, "  ")
}

/// Key/value rows, keys without `strip`; `note` adds a remark after a key's value.
fn kv_table<'a>(pairs: &[(&str, Meta)], strip: &str, note: impl Fn(&str) -> Option<&'a str>) -> Table {
    let mut t = Table::new(&[false, false]);
    for (key, value) in pairs {
        let mut text = value_text(value.0);
        if let Some(note) = note(key) {
            text = format!("{text} ({note})");
        }
        t.row([key.strip_prefix(strip).unwrap_or(key), &text]);
    }
    t
}

/// A text table: every column as wide as its widest cell, numbers right-aligned.
struct Table {
    right: Vec<bool>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// One flag per column: right-aligned or not.
    fn new(right: &[bool]) -> Self {
        Table { right: right.to_vec(), rows: Vec::new() }
    }

    fn row<const N: usize>(&mut self, cells: [&str; N]) {
        debug_assert_eq!(N, self.right.len());
        self.rows.push(cells.iter().map(|c| c.to_string()).collect());
    }

    fn write(&self, f: &mut impl fmt::Write, indent: &str) -> fmt::Result {
        let width = |c: usize| self.rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0);
        let widths: Vec<usize> = (0..self.right.len()).map(width).collect();
        for row in &self.rows {
            let mut line = String::from(indent);
            for (c, cell) in row.iter().enumerate() {
                let pad = " ".repeat(widths[c] - cell.chars().count());
                if c > 0 {
                    line.push_str("  ");
                }
                if self.right[c] {
                    line.push_str(&pad);
                    line.push_str(cell);
                } else {
                    line.push_str(cell);
                    line.push_str(&pad);
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// `268098176` as `268,098,176`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, d) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(d);
    }
    out
}

/// Bytes in binary units: `241.4 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A count in decimal units, as model sizes are given: `268.1M`.
fn human_count(n: u64) -> String {
    match n {
        0..=999 => n.to_string(),
        1_000..=999_999 => format!("{:.1}K", n as f64 / 1e3),
        1_000_000..=999_999_999 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.2}B", n as f64 / 1e9),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(268_098_176), "268,098,176");
        assert_eq!(human_bytes(1023), "1023 bytes");
        assert_eq!(human_bytes(253_113_024), "241.4 MiB");
        assert_eq!(human_count(268_098_176), "268.1M");
    }

    #[test]
    fn floats_keep_their_shortest_decimal() {
        assert_eq!(value_json(&GgufValue::F32(1e-6)).to_string(), "1e-6");
        assert_eq!(value_json(&GgufValue::F32(f32::NAN)), Json::from("NaN"));
        assert_eq!(value_json(&GgufValue::F64(0.1)).to_string(), "0.1");
    }

    #[test]
    fn long_arrays_are_summarised() {
        let short = GgufValue::from(vec![1u32, 2, 3]);
        assert_eq!(value_json(&short), serde_json::json!([1, 2, 3]));
        assert_eq!(value_text(&short), "[1, 2, 3] (3 × u32)");
        let long = GgufValue::from((0..17).collect::<Vec<i32>>());
        let j = value_json(&long);
        assert_eq!(j["type"], "i32");
        assert_eq!(j["len"], 17);
        assert_eq!(j["first"], serde_json::json!([0, 1, 2, 3, 4, 5, 6, 7]));
        assert_eq!(value_text(&long), "[0, 1, 2, 3, 4, 5, 6, 7, …] (17 × i32)");
    }

    #[test]
    fn strings_are_cut_on_character_boundaries() {
        assert_eq!(quoted("abc", 3), "\"abc\"");
        assert_eq!(quoted("ab\ncd", 3), "\"ab\\n\"…");
        assert_eq!(quoted("ééé", 2), "\"éé\"…");
    }

    #[test]
    fn table_pads_columns() {
        let mut t = Table::new(&[false, true]);
        t.row(["a", "1"]);
        t.row(["long", "1,000"]);
        let mut out = String::new();
        t.write(&mut out, "  ").unwrap();
        assert_eq!(out, "  a         1\n  long  1,000\n");
    }

    #[test]
    fn sections() {
        let v = GgufValue::from(1u32);
        let s = |key| section_of(key, &v, Some("gemma3"));
        assert!(s("gemma3.block_count") == Section::Hparams);
        assert!(s("gemma3n.block_count") == Section::Other);
        assert!(s("general.file_type") == Section::General);
        assert!(s("tokenizer.ggml.bos_token_id") == Section::Dedicated);
        assert!(s("tokenizer.ggml.add_bos_token") == Section::Tokenizer);
        // A chat template that is not a string is not shown as one, but under the tokenizer.
        assert!(s("tokenizer.chat_template") == Section::Tokenizer);
        assert_eq!(special_name("tokenizer.ggml.unknown_token_id"), Some("unknown"));
        assert_eq!(special_name("tokenizer.ggml._token_id"), None);
    }
}
