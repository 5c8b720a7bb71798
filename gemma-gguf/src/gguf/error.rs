//! The one error type of the GGUF module. Every variant names what was wrong: the
//! field, key, tensor, offset or path.

use super::types::GgmlType;
use super::value::ValueKind;
use std::fmt;
use std::path::PathBuf;
use thiserror::Error;

/// A ggml type id this crate does not know or that ggml removed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub struct UnsupportedGgmlType {
    /// The id found in the file.
    pub id: u32,
    /// ggml's name for a removed type, `None` for an id it never had.
    pub removed: Option<&'static str>,
}

impl fmt::Display for UnsupportedGgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.removed {
            Some(name) => write!(f, "ggml type {} ({name}) was removed from ggml; re-quantise the model", self.id),
            None => write!(f, "unknown ggml type id {}", self.id),
        }
    }
}

/// Everything that can go wrong reading or writing a GGUF file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum GgufError {
    // ----- I/O -----
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing GGUF: {0}")]
    Write(#[source] std::io::Error),

    // ----- header -----
    #[error("file ends inside {field} at byte {offset}: needs {needed} bytes, {available} left")]
    Truncated { field: String, offset: u64, needed: u64, available: u64 },
    #[error("not a GGUF file: magic is {found:02x?}, expected \"GGUF\"")]
    BadMagic { found: [u8; 4] },
    #[error("GGUF version {version} is not supported (only 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error(
        "GGUF version field reads {version:#010x}: this looks like a big-endian file, \
         which is not supported"
    )]
    BigEndian { version: u32 },
    #[error("{field} = {count} cannot fit: {bytes_left} bytes left at offset {offset}")]
    CountTooLarge { field: &'static str, count: u64, offset: u64, bytes_left: u64 },

    // ----- key/value pairs -----
    #[error("{field} at byte {offset} has length {len}, more than the limit of {limit}")]
    StringTooLong { field: String, offset: u64, len: u64, limit: u64 },
    #[error("{field} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { field: String, offset: u64 },
    #[error("key/value pair #{index} at byte {offset} has an empty key")]
    EmptyKey { index: u64, offset: u64 },
    #[error("key '{key}' appears twice")]
    DuplicateKey { key: String },
    #[error("key '{key}' has unknown value type id {type_id} at byte {offset}")]
    UnknownValueType { key: String, type_id: u32, offset: u64 },
    #[error("key '{key}' is an array of arrays, which GGUF does not allow")]
    NestedArray { key: String },
    #[error("array '{key}' at byte {offset} has {len} elements; {limit} is the most that fit")]
    ArrayTooLong { key: String, offset: u64, len: u64, limit: u64 },
    #[error("bool '{key}' at byte {offset} is {byte}, not 0 or 1")]
    InvalidBool { key: String, offset: u64, byte: u8 },
    #[error(
        "general.alignment = {alignment}: must be a power of two between 1 and {max}",
        max = super::MAX_ALIGNMENT
    )]
    InvalidAlignment { alignment: u64 },

    // ----- typed getters -----
    #[error("missing key '{key}'")]
    MissingKey { key: String },
    #[error("key '{key}' has type {actual}, expected {expected}")]
    WrongType { key: String, expected: ValueKind, actual: ValueKind },

    // ----- tensor infos -----
    #[error("tensor #{index} at byte {offset} has an empty name")]
    EmptyTensorName { index: u64, offset: u64 },
    #[error(
        "tensor name '{name}' is {len} bytes; ggml allows at most {max}",
        max = super::limits::MAX_NAME - 1
    )]
    TensorNameTooLong { name: String, len: usize },
    #[error("tensor '{name}' appears twice")]
    DuplicateTensor { name: String },
    #[error(
        "tensor '{tensor}' has {n_dims} dimensions; ggml allows at most {max}",
        max = super::limits::MAX_DIMS
    )]
    TooManyDims { tensor: String, n_dims: u64 },
    #[error("tensor '{tensor}' dimension {dim} is {ne}, which is negative")]
    NegativeDim { tensor: String, dim: usize, ne: i64 },
    #[error("tensor '{tensor}' shape {dims:?} has more than i64::MAX elements or bytes")]
    ShapeOverflow { tensor: String, dims: Vec<u64> },
    #[error("tensor '{tensor}': {source}")]
    UnsupportedType {
        tensor: String,
        #[source]
        source: UnsupportedGgmlType,
    },
    #[error(
        "tensor '{tensor}' of type {ggml_type} has rows of {ne0} elements, \
         not a multiple of the block size {block_size}"
    )]
    RowNotBlockMultiple { tensor: String, ggml_type: GgmlType, ne0: u64, block_size: u64 },

    // ----- tensor data layout -----
    #[error(
        "data section starts at byte {data_offset} (after alignment padding), \
         past the end of the {file_len}-byte file"
    )]
    DataSectionOutOfBounds { data_offset: u64, file_len: u64 },
    #[error(
        "tensor '{tensor}' data [{offset}, +{n_bytes}) lies outside the data section \
         of {data_len} bytes"
    )]
    TensorOutOfBounds { tensor: String, offset: u64, n_bytes: u64, data_len: u64 },
    #[error("tensor '{tensor}' offset {offset} is not a multiple of the alignment {alignment}")]
    TensorMisaligned { tensor: String, offset: u64, alignment: u64 },
    #[error(
        "tensor '{tensor}' offset {offset} overlaps the previous tensor \
         (or tensors are out of order): expected {expected}"
    )]
    TensorOverlap { tensor: String, offset: u64, expected: u64 },
    #[error("tensor '{tensor}' offset {offset} leaves a gap after the previous tensor: expected {expected}")]
    TensorGap { tensor: String, offset: u64, expected: u64 },
    #[error("tensor '{tensor}' does not belong to this file")]
    ForeignTensor { tensor: String },

    // ----- split models -----
    #[error("split model: shard {path} is missing: {source}")]
    MissingShard {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("split model: {path} has {key} = {actual}, expected {expected}")]
    ShardMismatch { path: PathBuf, key: &'static str, expected: u64, actual: u64 },
    #[error(
        "split model: {path} is shard {split_no} (counting from 0); open the first shard, \
         whose name ends in -00001-of-NNNNN.gguf"
    )]
    NotFirstShard { path: PathBuf, split_no: u64 },
    #[error(
        "split model: {path} says it is one of {count} shards but its name does not end \
         in -00001-of-{count:05}.gguf, so the other shards cannot be found"
    )]
    ShardName { path: PathBuf, count: u64 },
    #[error("split model: split.tensors.count is {expected} but the shards hold {actual} tensors")]
    ShardTensorCount { expected: u64, actual: u64 },

    // ----- writer -----
    #[error("writer: {0}")]
    WriterState(&'static str),
    #[error("writer: tensor '{tensor}' was not declared")]
    UnknownTensor { tensor: String },
    #[error("writer: tensor data must come in declared order: expected '{expected}', got '{got}'")]
    TensorOrder { expected: String, got: String },
    #[error("writer: tensor '{tensor}' takes {expected} bytes, got {actual}")]
    TensorDataSize { tensor: String, expected: u64, actual: u64 },
    #[error("writer: {missing} tensors have no data, the first is '{first}'")]
    TensorsMissing { missing: usize, first: String },
    #[error("writer: version {version} cannot be written (only 2 and 3)")]
    WriteVersion { version: u32 },
    #[error("key '{key}': {reason}")]
    InvalidValue { key: String, reason: String },
}

impl GgufError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        GgufError::Io { path: path.into(), source }
    }
}

/// Result with [`GgufError`].
pub type Result<T, E = GgufError> = std::result::Result<T, E>;
