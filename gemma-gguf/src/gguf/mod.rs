//! The GGUF file format: a pure-Rust reader ([`GgufFile`]) and streaming writer
//! ([`GgufWriter`]). No ggml code is involved.
//!
//! # Byte layout
//!
//! As defined by ggml's `ggml/src/gguf.cpp` and `ggml/include/gguf.h` (the copy vendored
//! in `llama-cpp-sys-2` 0.1.161). All integers are little-endian; there is no implicit
//! padding between fields.
//!
//! ```text
//! offset  size        field
//! 0       4           magic: the bytes "GGUF" (0x47 0x47 0x55 0x46)
//! 4       4           version: u32. 2 and 3 are read (same layout); 1 had 32-bit counts
//!                     and is rejected, as is anything above 3. A version whose low 16
//!                     bits are zero (3 read on the wrong endianness is 0x0300_0000) is
//!                     reported as a big-endian file, which is not supported.
//! 8       8           n_tensors: u64 (ggml reads it as i64; we require ≤ i64::MAX)
//! 16      8           n_kv: u64 (same)
//! 24      ...         n_kv key/value pairs:
//!                       key:   gguf string
//!                       type:  u32 value type (table below)
//!                       value: the value's bytes; for type 9 (array):
//!                              u32 element type, u64 element count, then the elements
//!                              back to back. Arrays of arrays are not allowed.
//!         ...         n_tensors tensor infos:
//!                       name:   gguf string (1..=63 bytes; ggml's GGML_MAX_NAME is 64
//!                               including the terminating NUL)
//!                       n_dims: u32, 0..=4 (GGML_MAX_DIMS)
//!                       ne:     n_dims × i64, ggml order: ne[0] is the row length
//!                       type:   u32 ggml type id ([`GgmlType`])
//!                       offset: u64, relative to the start of the data section
//!         ...         zero bytes up to the next multiple of `alignment` (only required
//!                     when n_tensors > 0; ggml's writer always emits it)
//! data    ...         data section: each tensor's bytes at its offset, each followed by
//!                     zero padding up to a multiple of `alignment`
//!         ...         anything after the last tensor is ignored
//! ```
//!
//! A *gguf string* is a u64 byte length followed by that many bytes, without a NUL.
//!
//! Value types: 0 u8, 1 i8, 2 u16, 3 i16, 4 u32, 5 i32, 6 f32, 7 bool (one byte),
//! 8 string, 9 array, 10 u64, 11 i64, 12 f64.
//!
//! `alignment` is the value of the key `general.alignment` (which must be a u32) or
//! [`DEFAULT_ALIGNMENT`] (32) when the key is absent.
//!
//! # Decisions where the format leaves room
//!
//! - **Strings must be UTF-8.** Keys, string values and tensor names that are not valid
//!   UTF-8 are rejected ([`GgufError::InvalidUtf8`]) rather than decoded lossily: a
//!   lossy decode would silently change tokenizer pieces, and the writer (gguf-py and
//!   ggml) only ever emits UTF-8.
//! - **Bools are strict**: a byte other than 0 or 1 is an error ([`GgufError::InvalidBool`]),
//!   although ggml treats every nonzero byte as true.
//! - **Tensor offsets are exactly consecutive**, like `gguf_init_from_reader`: tensor *i*
//!   starts where tensor *i−1* ends, rounded up to the alignment; the first starts at 0.
//!   Gaps, overlaps, reordering and misalignment are each reported by their own error.
//!   Only the tensor bytes must lie inside the file: the zero padding after the last
//!   tensor may be missing (llama.cpp's loader accepts this too).
//! - **Alignment** must be a power of two no larger than [`MAX_ALIGNMENT`] (64 KiB, the
//!   largest common page size). ggml accepts any power of two up to 2^31, but nothing
//!   real uses more than a page, and a huge alignment only serves to make a writer emit
//!   gigabytes of padding.
//! - **Caps** (checked before any allocation, see [`limits`]): a string is at most
//!   [`limits::MAX_STRING_LEN`] bytes and an array at most [`limits::MAX_ARRAY_LEN`]
//!   elements (ggml's own caps, 2^30), and each count times the smallest encoding of one
//!   entry must fit in the bytes that remain.
//! - **Split models** (`name-00001-of-00003.gguf`): [`GgufFile::open`] on the first
//!   shard opens all of them; the metadata is the first shard's, the tensor list is the
//!   union in shard order.

mod cursor;
mod error;
mod mapped;
mod parse;
mod reader;
mod split;
mod types;
mod validate;
mod value;
mod writer;

#[cfg(test)]
mod tests;

pub use error::{GgufError, UnsupportedGgmlType};
pub use mapped::MappedFile;
pub use reader::{GgufFile, TensorInfo};
pub use types::{GgmlType, GgufValueType};
pub use value::{GgufArray, GgufValue, ValueKind};
pub use writer::{GgufSink, GgufWriter, StreamSink, TempFileSink};

/// The four bytes every GGUF file starts with.
pub const GGUF_MAGIC: [u8; 4] = *b"GGUF";

/// The version the writer emits by default (`GGUF_VERSION` in gguf.h).
pub const GGUF_VERSION: u32 = 3;

/// Alignment of the data section and of every tensor when `general.alignment` is
/// absent (`GGUF_DEFAULT_ALIGNMENT` in gguf.h).
pub const DEFAULT_ALIGNMENT: u32 = 32;

/// Largest accepted `general.alignment` (our cap; see the module doc).
pub const MAX_ALIGNMENT: u32 = 1 << 16;

/// The key that sets the alignment (`GGUF_KEY_GENERAL_ALIGNMENT` in gguf.h).
pub const KEY_ALIGNMENT: &str = "general.alignment";

/// Split models: index of this shard, counting from 0 (u16 in llama.cpp).
pub const KEY_SPLIT_NO: &str = "split.no";
/// Split models: number of shards (u16 in llama.cpp).
pub const KEY_SPLIT_COUNT: &str = "split.count";
/// Split models: number of tensors over all shards (i32 in llama.cpp).
pub const KEY_SPLIT_TENSORS_COUNT: &str = "split.tensors.count";

/// Named caps the reader checks before allocating, shared with the writer so that it
/// never emits what the reader rejects.
pub mod limits {
    /// Longest string, in bytes (`GGUF_MAX_STRING_LENGTH` in gguf.cpp).
    pub const MAX_STRING_LEN: u64 = 1 << 30;
    /// Most elements in one array (`GGUF_MAX_ARRAY_ELEMENTS` in gguf.cpp).
    pub const MAX_ARRAY_LEN: u64 = 1 << 30;
    /// Most dimensions of a tensor (`GGML_MAX_DIMS` in ggml.h).
    pub const MAX_DIMS: usize = 4;
    /// Tensor names are shorter than this, in bytes (`GGML_MAX_NAME` in ggml.h counts
    /// the terminating NUL).
    pub const MAX_NAME: usize = 64;
    /// Fixed header: magic, version, n_tensors, n_kv.
    pub const HEADER_LEN: u64 = 4 + 4 + 8 + 8;
    /// Smallest key/value pair: key length (8) + a 1-byte key + type (4) + a 1-byte value.
    pub const MIN_KV_LEN: u64 = 8 + 1 + 4 + 1;
    /// Smallest tensor info: name length (8) + a 1-byte name + n_dims (4) + type (4) +
    /// offset (8).
    pub const MIN_TENSOR_INFO_LEN: u64 = 8 + 1 + 4 + 4 + 8;
}

/// Rounds `n` up to a multiple of `align` (a power of two), or `None` on overflow.
pub(crate) fn pad_to(n: u64, align: u64) -> Option<u64> {
    debug_assert!(align.is_power_of_two());
    Some(n.checked_add(align - 1)? & !(align - 1))
}
