//! A Hugging Face checkpoint's tensors: `model.safetensors`, or sharded
//! `model-0000N-of-0000M.safetensors` files listed by `model.safetensors.index.json`.
//!
//! Every shard is memory-mapped and its header checked by the `safetensors` crate (header
//! length ≤ 100 MB and inside the file, UTF-8 JSON, offsets contiguous from 0 with no holes
//! or overlaps, shape × dtype = byte span, data ending at the end of the file). Tensor data
//! is read row by row into f32 with `from_le_bytes` (never by casting a slice, which may be
//! misaligned), and the pages read are given back afterwards, so a one-pass conversion
//! keeps one chunk resident, not the whole checkpoint.
use crate::error::{Error, Result};
use gemma_gguf::gguf::MappedFile;
use safetensors::tensor::{Dtype as StDtype, SafeTensors};
use std::collections::BTreeMap;
use std::ops::Range;
use std::path::{Component, Path, PathBuf};

pub const SINGLE_FILE: &str = "model.safetensors";
pub const INDEX_FILE: &str = "model.safetensors.index.json";

/// The float types a checkpoint's weights come in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    BF16,
}

impl Dtype {
    pub fn size(self) -> usize {
        match self {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Dtype::F32 => "f32",
            Dtype::F16 => "f16",
            Dtype::BF16 => "bf16",
        }
    }
}

/// One tensor of the checkpoint: where its bytes are and what they hold.
#[derive(Clone, Debug)]
pub struct SourceTensor {
    pub name: String,
    pub shard: usize,
    /// `None` for a dtype the converter does not read (I64, BOOL, F8…): an error if the
    /// tensor is needed, ignored otherwise (vision towers may hold such tensors).
    pub dtype: Option<Dtype>,
    pub dtype_name: String,
    /// Hugging Face (row-major) order: `[rows, cols]` for a matrix.
    pub shape: Vec<usize>,
    /// Absolute byte range in the shard file.
    pub bytes: Range<usize>,
}

impl SourceTensor {
    pub fn n_elements(&self) -> usize {
        self.shape.iter().product()
    }
}

/// The tensors of a checkpoint directory, across its shards.
pub struct Checkpoint {
    shards: Vec<MappedFile>,
    tensors: BTreeMap<String, SourceTensor>,
}

impl Checkpoint {
    /// Finds and checks the safetensors files of `dir`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index = dir.join(INDEX_FILE);
        let single = dir.join(SINGLE_FILE);
        let (files, weight_map) = if index.is_file() {
            let (files, map) = read_index(&index)?;
            (files, Some(map))
        } else if single.is_file() {
            (vec![SINGLE_FILE.to_owned()], None)
        } else {
            let what = if dir.join("pytorch_model.bin").exists() {
                "only PyTorch .bin weights found; the converter reads safetensors (re-save the model with `save_pretrained(..., safe_serialization=True)`)".to_owned()
            } else {
                format!("neither {SINGLE_FILE} nor {INDEX_FILE} found")
            };
            return Err(Error::NotACheckpoint { dir: dir.to_owned(), what });
        };

        let mut shards = Vec::with_capacity(files.len());
        let mut tensors: BTreeMap<String, SourceTensor> = BTreeMap::new();
        for (shard, file) in files.iter().enumerate() {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(Error::BadIndex { path: index.clone(), what: format!("shard {file:?} does not exist") });
            }
            let mapped = MappedFile::open(&path)?;
            for t in read_header(&mapped, shard)? {
                if let Some(map) = &weight_map {
                    match map.get(&t.name) {
                        Some(listed) if listed == file => {}
                        Some(listed) => {
                            return Err(Error::BadIndex {
                                path: index.clone(),
                                what: format!("tensor `{}` is listed in {listed:?} but stored in {file:?}", t.name),
                            })
                        }
                        None => {
                            return Err(Error::BadIndex {
                                path: index.clone(),
                                what: format!("tensor `{}` in {file:?} is not in the index", t.name),
                            })
                        }
                    }
                }
                if let Some(prev) = tensors.get(&t.name) {
                    return Err(Error::BadIndex {
                        path: index.clone(),
                        what: format!("tensor `{}` is in two shards: {:?} and {file:?}", t.name, files[prev.shard]),
                    });
                }
                tensors.insert(t.name.clone(), t);
            }
            shards.push(mapped);
        }
        if let Some(map) = &weight_map {
            if let Some((name, file)) = map.iter().find(|(name, _)| !tensors.contains_key(*name)) {
                return Err(Error::BadIndex {
                    path: index,
                    what: format!("tensor `{name}` is listed in {file:?} but not stored there"),
                });
            }
        }
        Ok(Checkpoint { shards, tensors })
    }

    pub fn tensors(&self) -> impl Iterator<Item = &SourceTensor> {
        self.tensors.values()
    }

    pub fn get(&self, name: &str) -> Option<&SourceTensor> {
        self.tensors.get(name)
    }

    pub fn shard_path(&self, t: &SourceTensor) -> &Path {
        self.shards[t.shard].path()
    }

    /// Reads `n` elements starting at element `start` of `t` into `out` as f32.
    pub fn read_f32(&self, t: &SourceTensor, start: usize, out: &mut [f32]) -> Result<()> {
        let shard = &self.shards[t.shard];
        let dtype = t.dtype.ok_or_else(|| self.unsupported(t))?;
        let size = dtype.size();
        let from = t.bytes.start + start * size;
        let to = from + out.len() * size;
        let bytes = shard.bytes().get(from..to).filter(|_| to <= t.bytes.end).ok_or_else(|| Error::BadTensor {
            path: shard.path().to_owned(),
            tensor: t.name.clone(),
            what: format!("read of elements {start}..{} is out of bounds", start + out.len()),
        })?;
        decode_f32(dtype, bytes, out);
        Ok(())
    }

    /// Gives the pages of `t`'s elements `start..start + n` back (see [`MappedFile::release`]).
    pub fn release(&self, t: &SourceTensor, start: usize, n: usize) {
        if let Some(dtype) = t.dtype {
            let from = t.bytes.start + start * dtype.size();
            self.shards[t.shard].release(from..(from + n * dtype.size()).min(t.bytes.end));
        }
    }

    pub(crate) fn unsupported(&self, t: &SourceTensor) -> Error {
        Error::BadTensor {
            path: self.shard_path(t).to_owned(),
            tensor: t.name.clone(),
            what: format!("dtype {} is not supported (the converter reads F32, F16 and BF16 weights)", t.dtype_name),
        }
    }
}

/// Decodes little-endian `dtype` values into f32 (exact for all three types).
pub fn decode_f32(dtype: Dtype, bytes: &[u8], out: &mut [f32]) {
    match dtype {
        Dtype::F32 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            }
        }
        Dtype::F16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            }
        }
        Dtype::BF16 => {
            for (o, b) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = f32::from_bits((u16::from_le_bytes([b[0], b[1]]) as u32) << 16);
            }
        }
    }
}

/// The shard files named by an index, in first-seen order, and its tensor → file map.
fn read_index(path: &Path) -> Result<(Vec<String>, BTreeMap<String, String>)> {
    let bad = |what: String| Error::BadIndex { path: path.to_owned(), what };
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let json: serde_json::Value = serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
    let map =
        json.get("weight_map").and_then(|m| m.as_object()).ok_or_else(|| bad("no \"weight_map\" object".to_owned()))?;
    let mut files: Vec<String> = Vec::new();
    let mut weight_map = BTreeMap::new();
    for (tensor, file) in map {
        let file = file.as_str().ok_or_else(|| bad(format!("tensor `{tensor}`: shard name is not a string")))?;
        if !is_plain_file_name(file) {
            return Err(bad(format!(
                "tensor `{tensor}`: shard {file:?} is not a file name inside the model directory (absolute paths and `..` are refused)"
            )));
        }
        if !files.iter().any(|f| f == file) {
            files.push(file.to_owned());
        }
        weight_map.insert(tensor.clone(), file.to_owned());
    }
    if files.is_empty() {
        return Err(bad("the weight map is empty".to_owned()));
    }
    files.sort();
    Ok((files, weight_map))
}

/// A relative path made of normal components only, ending in `.safetensors`.
fn is_plain_file_name(name: &str) -> bool {
    let p = Path::new(name);
    !name.is_empty()
        && name.ends_with(".safetensors")
        && p.components().all(|c| matches!(c, Component::Normal(_)))
        && !name.contains('\\')
}

/// Parses and checks one shard's header.
fn read_header(file: &MappedFile, shard: usize) -> Result<Vec<SourceTensor>> {
    let path = file.path().to_owned();
    let (n, meta) = SafeTensors::read_metadata(file.bytes())
        .map_err(|e| Error::Safetensors { path: path.clone(), what: describe(&e) })?;
    let base = 8 + n;
    let mut out = Vec::new();
    for (name, info) in meta.tensors() {
        let dtype = match info.dtype {
            StDtype::F32 => Some(Dtype::F32),
            StDtype::F16 => Some(Dtype::F16),
            StDtype::BF16 => Some(Dtype::BF16),
            _ => None,
        };
        let (s, e) = info.data_offsets;
        out.push(SourceTensor {
            name,
            shard,
            dtype,
            dtype_name: format!("{:?}", info.dtype),
            shape: info.shape.clone(),
            bytes: base + s..base + e,
        });
    }
    // Release the header's pages: only the parsed copy is needed from here on.
    file.release(0..base);
    let _: PathBuf = path;
    Ok(out)
}

fn describe(e: &safetensors::SafeTensorError) -> String {
    use safetensors::SafeTensorError as E;
    match e {
        E::HeaderTooLarge => "header length over 100 MB: not a safetensors file, or a corrupt one".into(),
        E::HeaderTooSmall => "file shorter than the 8-byte header length: truncated or not safetensors".into(),
        E::InvalidHeaderLength => "header length points past the end of the file: truncated or corrupt".into(),
        E::InvalidHeader(_) => "header is not UTF-8".into(),
        E::InvalidHeaderDeserialization(err) => format!("header is not valid safetensors JSON: {err}"),
        E::InvalidOffset(t) => {
            format!("tensor `{t}`: data offsets overlap, leave a hole or do not start at 0 (corrupt header)")
        }
        E::TensorInvalidInfo => "a tensor's byte span does not match its shape × dtype".into(),
        E::MetadataIncompleteBuffer => "tensor data does not end at the end of the file (truncated or padded)".into(),
        E::ValidationOverflow => "a tensor's shape overflows".into(),
        other => other.to_string(),
    }
}
