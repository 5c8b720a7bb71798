//! [`GgufFile`]: a parsed GGUF file (or split model) whose tensor data stays in the
//! memory map or buffer it was read from.

use super::error::{GgufError, Result};
use super::parse::{self, Parsed};
use super::split;
use super::types::{GgmlType, GgufValueType};
use super::value::{GgufArray, GgufValue, ValueKind};
use std::collections::HashMap;
use std::fs::File;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One tensor's entry in the header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name, 1..=63 bytes of UTF-8.
    pub name: String,
    /// Sizes in ggml order: `dims[0]` (ne0) is the row length. At most 4.
    pub dims: Vec<u64>,
    pub ggml_type: GgmlType,
    /// Offset of the data from the start of its shard's data section.
    pub offset: u64,
    /// Size of the data in bytes (without padding).
    pub n_bytes: u64,
    /// Which file of a split model holds the data (0 for single files).
    pub shard: usize,
}

impl TensorInfo {
    /// Number of elements (1 for a tensor with no dimensions). Validated at parse time
    /// to fit in i64.
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().fold(1u64, |n, &d| n.saturating_mul(d))
    }
}

/// The bytes of one file: mapped or owned.
pub(crate) enum Storage {
    Mapped(memmap2::Mmap),
    Owned(Vec<u8>),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Mapped(m) => m,
            Storage::Owned(v) => v,
        }
    }

    /// Maps `path` read-only.
    ///
    /// A mapped file that another process truncates after this call makes later reads of
    /// the missing pages fault (SIGBUS): that is the caller's risk, as with every
    /// memory-mapped reader. The length is fixed here, at open, and every tensor is
    /// checked against it.
    #[allow(unsafe_code)]
    pub(crate) fn map(path: &Path) -> Result<Storage> {
        let file = File::open(path).map_err(|e| GgufError::io(path, e))?;
        let len = file.metadata().map_err(|e| GgufError::io(path, e))?.len();
        if len < super::limits::HEADER_LEN {
            // Too short to be GGUF; read it so that the parser reports where it ends
            // (and so that an empty file is never mapped).
            return Storage::read(path);
        }
        // SAFETY: the file is opened read-only and the map is never written through.
        // The map's length is the file's length at open, which bounds every slice we
        // hand out. Another process truncating or rewriting the file while it is mapped
        // is outside what Rust can guard against; this is documented on
        // `GgufFile::open` as the caller's risk.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| GgufError::io(path, e))?;
        Ok(Storage::Mapped(map))
    }

    /// Reads `path` into memory.
    pub(crate) fn read(path: &Path) -> Result<Storage> {
        std::fs::read(path).map(Storage::Owned).map_err(|e| GgufError::io(path, e))
    }
}

/// One file of a (possibly split) model.
pub(crate) struct Shard {
    pub path: Option<PathBuf>,
    pub storage: Storage,
    pub data_offset: u64,
}

/// A parsed GGUF file. Metadata and tensor infos are decoded at open; tensor data is
/// borrowed from the map or buffer on request.
pub struct GgufFile {
    version: u32,
    alignment: u64,
    metadata: Vec<(String, GgufValue)>,
    key_index: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    tensor_index: HashMap<String, usize>,
    shards: Vec<Shard>,
}

impl GgufFile {
    /// Memory-maps `path` and parses its header; tensor data is read from the map only
    /// when asked for, so opening a multi-GB file reads little more than its header.
    ///
    /// If the file is the first shard of a split model (`split.count` > 1), the other
    /// shards are found by name (`prefix-00002-of-00003.gguf`, …) and opened too.
    ///
    /// The file's length is taken at open and all tensors are checked against it.
    /// Truncating the file while it is open makes later reads of tensor data fault:
    /// don't.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        split::load(path.as_ref(), Storage::map)
    }

    /// Like [`open`](Self::open) but reads the file(s) into memory instead of mapping.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        split::load(path.as_ref(), Storage::read)
    }

    /// Parses a whole file held in memory. Split keys are not followed: the result holds
    /// this buffer's tensors only.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self> {
        Self::from_storage(Storage::Owned(bytes), None)
    }

    pub(crate) fn from_storage(storage: Storage, path: Option<PathBuf>) -> Result<Self> {
        let Parsed { version, alignment, metadata, key_index, tensors, data_offset } = parse::parse(storage.bytes())?;
        let tensor_index = tensors.iter().enumerate().map(|(i, t)| (t.name.clone(), i)).collect();
        Ok(GgufFile {
            version,
            alignment,
            metadata,
            key_index,
            tensors,
            tensor_index,
            shards: vec![Shard { path, storage, data_offset }],
        })
    }

    /// Appends the tensors of another shard of the same model (used by split loading).
    /// Tensor names must stay unique over all shards.
    pub(crate) fn push_shard(&mut self, other: GgufFile) -> Result<()> {
        let shard = self.shards.len();
        for mut t in other.tensors {
            if self.tensor_index.contains_key(&t.name) {
                return Err(GgufError::DuplicateTensor { name: t.name });
            }
            t.shard = shard;
            self.tensor_index.insert(t.name.clone(), self.tensors.len());
            self.tensors.push(t);
        }
        self.shards.extend(other.shards);
        Ok(())
    }

    /// The format version, 2 or 3.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Alignment of the data section and of each tensor, in bytes.
    pub fn alignment(&self) -> u64 {
        self.alignment
    }

    /// Where the data section starts in the (first) file. Without tensors, this is the
    /// end of the header without padding, as in ggml.
    pub fn data_offset(&self) -> u64 {
        self.shards[0].data_offset
    }

    /// Number of files: 1, or the shard count of a split model.
    pub fn n_shards(&self) -> usize {
        self.shards.len()
    }

    /// The path of each shard, `None` for a file parsed from memory.
    pub fn shard_paths(&self) -> impl Iterator<Item = Option<&Path>> {
        self.shards.iter().map(|s| s.path.as_deref())
    }

    /// Total length of the (first) file in bytes.
    pub fn file_len(&self) -> u64 {
        self.shards[0].storage.bytes().len() as u64
    }

    /// All key/value pairs in file order.
    pub fn metadata(&self) -> impl ExactSizeIterator<Item = (&str, &GgufValue)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&GgufValue> {
        self.key_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// All tensor infos in file order (shard by shard for split models).
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor called `name`, if present.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }

    /// The bytes of a tensor of this file, borrowed from the map or buffer. An info that
    /// does not fit this file (taken from another file) is [`GgufError::ForeignTensor`].
    pub fn tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let foreign = || GgufError::ForeignTensor { tensor: info.name.clone() };
        let shard = self.shards.get(info.shard).ok_or_else(foreign)?;
        let start = shard.data_offset.checked_add(info.offset).ok_or_else(foreign)?;
        let end = start.checked_add(info.n_bytes).ok_or_else(foreign)?;
        let (start, end) = (usize::try_from(start), usize::try_from(end));
        let (Ok(start), Ok(end)) = (start, end) else {
            return Err(foreign());
        };
        shard.storage.bytes().get(start..end).ok_or_else(foreign)
    }

    /// Removes `key` and returns its value. A model drops the vocabulary arrays this way once
    /// its tokenizer has its own copy (tens of MB for a 262 144-token vocabulary).
    pub fn remove(&mut self, key: &str) -> Option<GgufValue> {
        let i = self.key_index.remove(key)?;
        let (_, value) = self.metadata.remove(i);
        for j in self.key_index.values_mut() {
            if *j > i {
                *j -= 1;
            }
        }
        Some(value)
    }

    /// Gives the pages of `info`'s data back to the system (mapped files only; see
    /// [`MappedFile::release`](super::MappedFile::release)): a one-pass reader calls it
    /// after each tensor so that the resident set stays one tensor wide.
    pub fn release_tensor_data(&self, info: &TensorInfo) {
        self.release_tensor_data_part(info, 0..info.n_bytes);
    }

    /// [`release_tensor_data`](Self::release_tensor_data) for the bytes `part` of `info`'s data
    /// only (clamped to it): a reader copying a large tensor piece by piece gives each piece's
    /// pages back as it goes, so the file's pages and the copy are never both resident.
    pub fn release_tensor_data_part(&self, info: &TensorInfo, part: Range<u64>) {
        let Some(shard) = self.shards.get(info.shard) else { return };
        if let Storage::Mapped(map) = &shard.storage {
            let base = shard.data_offset.saturating_add(info.offset);
            let start = base.saturating_add(part.start.min(info.n_bytes));
            let end = base.saturating_add(part.end.min(info.n_bytes));
            if let (Ok(start), Ok(end)) = (usize::try_from(start), usize::try_from(end)) {
                super::mapped::release_pages(map, start..end);
            }
        }
    }
}

/// Typed getters.
///
/// Each returns [`GgufError::MissingKey`] when the key is absent and
/// [`GgufError::WrongType`] (naming the expected and actual type) when its type does
/// not fit. Integer getters accept any integer type whose *every* value converts
/// losslessly (`get_u32` takes u8, u16, u32; `get_i64` takes every type but u64), so
/// whether a getter works never depends on the value stored, only on its type.
/// `get_f64` takes f32 and f64; `get_f32` takes only f32. Bools and strings are never
/// converted.
impl GgufFile {
    /// The value of `key`, or [`GgufError::MissingKey`].
    pub fn value(&self, key: &str) -> Result<&GgufValue> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_owned() })
    }

    fn wrong_type(key: &str, expected: ValueKind, value: &GgufValue) -> GgufError {
        GgufError::WrongType { key: key.to_owned(), expected, actual: value.kind() }
    }

    fn get_int<T: TryFrom<i128>>(&self, key: &str, target: GgufValueType) -> Result<T> {
        let value = self.value(key)?;
        let wrong = || Self::wrong_type(key, ValueKind::Scalar(target), value);
        if !widens_to(value.value_type(), target) {
            return Err(wrong());
        }
        let n = value.as_integer().ok_or_else(wrong)?;
        T::try_from(n).map_err(|_| wrong())
    }

    pub fn get_u8(&self, key: &str) -> Result<u8> {
        self.get_int(key, GgufValueType::U8)
    }
    pub fn get_i8(&self, key: &str) -> Result<i8> {
        self.get_int(key, GgufValueType::I8)
    }
    pub fn get_u16(&self, key: &str) -> Result<u16> {
        self.get_int(key, GgufValueType::U16)
    }
    pub fn get_i16(&self, key: &str) -> Result<i16> {
        self.get_int(key, GgufValueType::I16)
    }
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_int(key, GgufValueType::U32)
    }
    pub fn get_i32(&self, key: &str) -> Result<i32> {
        self.get_int(key, GgufValueType::I32)
    }
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_int(key, GgufValueType::U64)
    }
    pub fn get_i64(&self, key: &str) -> Result<i64> {
        self.get_int(key, GgufValueType::I64)
    }

    pub fn get_f32(&self, key: &str) -> Result<f32> {
        match self.value(key)? {
            GgufValue::F32(v) => Ok(*v),
            other => Err(Self::wrong_type(key, scalar(GgufValueType::F32), other)),
        }
    }

    pub fn get_f64(&self, key: &str) -> Result<f64> {
        match self.value(key)? {
            GgufValue::F32(v) => Ok((*v).into()),
            GgufValue::F64(v) => Ok(*v),
            other => Err(Self::wrong_type(key, scalar(GgufValueType::F64), other)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        match self.value(key)? {
            GgufValue::Bool(v) => Ok(*v),
            other => Err(Self::wrong_type(key, scalar(GgufValueType::Bool), other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        match self.value(key)? {
            GgufValue::String(v) => Ok(v),
            other => Err(Self::wrong_type(key, scalar(GgufValueType::String), other)),
        }
    }

    /// Any array; its element type is [`GgufArray::element_type`].
    pub fn get_array(&self, key: &str) -> Result<&GgufArray> {
        match self.value(key)? {
            GgufValue::Array(a) => Ok(a),
            other => Err(Self::wrong_type(key, scalar(GgufValueType::Array), other)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<&[String]> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::String(v)) => Ok(v),
            other => Err(Self::wrong_type(key, array(GgufValueType::String), other)),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> Result<&[f32]> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::F32(v)) => Ok(v),
            other => Err(Self::wrong_type(key, array(GgufValueType::F32), other)),
        }
    }

    pub fn get_i32_array(&self, key: &str) -> Result<&[i32]> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::I32(v)) => Ok(v),
            other => Err(Self::wrong_type(key, array(GgufValueType::I32), other)),
        }
    }

    pub fn get_u32_array(&self, key: &str) -> Result<&[u32]> {
        match self.value(key)? {
            GgufValue::Array(GgufArray::U32(v)) => Ok(v),
            other => Err(Self::wrong_type(key, array(GgufValueType::U32), other)),
        }
    }
}

fn scalar(t: GgufValueType) -> ValueKind {
    ValueKind::Scalar(t)
}

fn array(t: GgufValueType) -> ValueKind {
    ValueKind::Array(t)
}

/// Whether every value of integer type `from` is a value of integer type `to`.
fn widens_to(from: GgufValueType, to: GgufValueType) -> bool {
    use GgufValueType::*;
    // (bits, signed) of each integer type.
    let shape = |t| match t {
        U8 => Some((8, false)),
        I8 => Some((8, true)),
        U16 => Some((16, false)),
        I16 => Some((16, true)),
        U32 => Some((32, false)),
        I32 => Some((32, true)),
        U64 => Some((64, false)),
        I64 => Some((64, true)),
        _ => None,
    };
    match (shape(from), shape(to)) {
        (Some((fb, fs)), Some((tb, ts))) => (fs == ts && fb <= tb) || (!fs && ts && fb < tb),
        _ => false,
    }
}

/// Two files are equal when their version, alignment, metadata (in order), tensor infos
/// and tensor bytes are equal. Where the data section starts, padding bytes and bytes
/// after the data are not compared.
impl PartialEq for GgufFile {
    fn eq(&self, other: &Self) -> bool {
        self.version == other.version
            && self.alignment == other.alignment
            && self.metadata == other.metadata
            && self.tensors.len() == other.tensors.len()
            && self
                .tensors
                .iter()
                .zip(&other.tensors)
                .all(|(a, b)| a == b && self.tensor_data(a).ok() == other.tensor_data(b).ok())
    }
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("version", &self.version)
            .field("alignment", &self.alignment)
            .field("n_kv", &self.metadata.len())
            .field("n_tensors", &self.tensors.len())
            .field("n_shards", &self.shards.len())
            .finish()
    }
}
