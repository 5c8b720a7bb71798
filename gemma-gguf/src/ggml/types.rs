//! ggml tensor types, validated against the linked ggml's own type table.
use super::{sys, Error, Result};
use std::ffi::CStr;

/// A ggml tensor type that the linked ggml supports (removed ids are refused).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Type(sys::ggml_type);

impl Type {
    pub const F32: Type = Type(sys::GGML_TYPE_F32);
    pub const F16: Type = Type(sys::GGML_TYPE_F16);
    pub const BF16: Type = Type(sys::GGML_TYPE_BF16);
    pub const I32: Type = Type(sys::GGML_TYPE_I32);
    pub const I64: Type = Type(sys::GGML_TYPE_I64);
    pub const Q4_0: Type = Type(sys::GGML_TYPE_Q4_0);
    pub const Q4_1: Type = Type(sys::GGML_TYPE_Q4_1);
    pub const Q5_0: Type = Type(sys::GGML_TYPE_Q5_0);
    pub const Q5_1: Type = Type(sys::GGML_TYPE_Q5_1);
    pub const Q8_0: Type = Type(sys::GGML_TYPE_Q8_0);
    pub const Q2_K: Type = Type(sys::GGML_TYPE_Q2_K);
    pub const Q3_K: Type = Type(sys::GGML_TYPE_Q3_K);
    pub const Q4_K: Type = Type(sys::GGML_TYPE_Q4_K);
    pub const Q5_K: Type = Type(sys::GGML_TYPE_Q5_K);
    pub const Q6_K: Type = Type(sys::GGML_TYPE_Q6_K);

    /// The type with ggml id `id`, if this ggml build has it. Removed ids (Q4_2, Q4_3, the
    /// old interleaved Q4_0 variants) have block size 0 in ggml's table and are refused.
    pub fn from_id(id: u32) -> Result<Type> {
        if id >= sys::GGML_TYPE_COUNT {
            return Err(Error::UnsupportedType { id });
        }
        // SAFETY: `id < GGML_TYPE_COUNT`, so ggml indexes its static table in bounds and
        // returns a pointer to a static entry.
        let traits = unsafe { &*sys::ggml_get_type_traits(id) };
        if traits.blck_size <= 0 || traits.type_size == 0 {
            return Err(Error::UnsupportedType { id });
        }
        Ok(Type(id))
    }

    /// Looks a type up by ggml's name (`"q4_K"`, `"f16"`…), case-insensitively.
    pub fn from_name(name: &str) -> Option<Type> {
        (0..sys::GGML_TYPE_COUNT).filter_map(|id| Type::from_id(id).ok()).find(|t| t.name().eq_ignore_ascii_case(name))
    }

    /// ggml's numeric id (the value stored in GGUF tensor infos).
    pub fn id(self) -> u32 {
        self.0
    }

    pub(crate) fn raw(self) -> sys::ggml_type {
        self.0
    }

    fn traits(self) -> &'static sys::ggml_type_traits {
        // SAFETY: a `Type` only holds ids validated by `from_id` (or constants of valid
        // types); the table entry is static.
        unsafe { &*sys::ggml_get_type_traits(self.0) }
    }

    /// ggml's name for the type, e.g. `q4_K`.
    pub fn name(self) -> &'static str {
        // SAFETY: type names in ggml's table are static NUL-terminated ASCII strings.
        unsafe { CStr::from_ptr(self.traits().type_name) }.to_str().unwrap_or("?")
    }

    /// Elements per block (1 for plain types, 32 or 256 for quantised ones).
    pub fn block_size(self) -> i64 {
        self.traits().blck_size
    }

    /// Bytes per block.
    pub fn type_size(self) -> usize {
        self.traits().type_size
    }

    /// Plain floating-point types (f32, f16, bf16).
    pub fn is_float(self) -> bool {
        self == Type::F32 || self == Type::F16 || self == Type::BF16
    }

    /// Types ggml's matrix product takes as its first operand: floats and quantised types
    /// (integer types have no dot product and crash the CPU kernel).
    pub fn is_matmul_weight(self) -> bool {
        (self.is_float() || self.is_quantized()) && self.traits().to_float.is_some() || self == Type::F32
    }

    pub fn is_quantized(self) -> bool {
        self.traits().is_quantized
    }

    /// Bits per weight: `8 · type_size / block_size`.
    pub fn bits_per_weight(self) -> f64 {
        8.0 * self.type_size() as f64 / self.block_size() as f64
    }

    /// Bytes in a row of `ne0` elements; an error when `ne0` is not a multiple of the block.
    pub fn row_size(self, ne0: i64) -> Result<usize> {
        let block = self.block_size();
        if ne0 < 0 || ne0 % block != 0 {
            return Err(Error::RowNotBlockMultiple { ty: self.name().into(), ne0, block });
        }
        usize::try_from(ne0 / block)
            .ok()
            .and_then(|blocks| blocks.checked_mul(self.type_size()))
            .ok_or(Error::BadDims { dims: vec![ne0], why: "row size overflows usize" })
    }
}

impl std::fmt::Debug for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::fmt::Display for Type {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
