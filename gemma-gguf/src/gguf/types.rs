//! The two type tags of the format: GGUF value types (metadata) and ggml tensor types.

use super::error::UnsupportedGgmlType;
use std::fmt;

/// Type tag of a metadata value (`enum gguf_type` in gguf.h).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgufValueType {
    U8 = 0,
    I8 = 1,
    U16 = 2,
    I16 = 3,
    U32 = 4,
    I32 = 5,
    F32 = 6,
    Bool = 7,
    String = 8,
    Array = 9,
    U64 = 10,
    I64 = 11,
    F64 = 12,
}

impl GgufValueType {
    /// The type with this id, or `None` for ids outside 0..=12.
    pub fn from_u32(id: u32) -> Option<Self> {
        use GgufValueType::*;
        Some(match id {
            0 => U8,
            1 => I8,
            2 => U16,
            3 => I16,
            4 => U32,
            5 => I32,
            6 => F32,
            7 => Bool,
            8 => String,
            9 => Array,
            10 => U64,
            11 => I64,
            12 => F64,
            _ => return None,
        })
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    /// Bytes of one value, or `None` for the variable-length string and array.
    pub fn fixed_size(self) -> Option<u64> {
        use GgufValueType::*;
        match self {
            U8 | I8 | Bool => Some(1),
            U16 | I16 => Some(2),
            U32 | I32 | F32 => Some(4),
            U64 | I64 | F64 => Some(8),
            String | Array => None,
        }
    }

    /// Smallest encoding of one value: a string is at least its 8-byte length, an array
    /// at least its element type and count.
    pub(crate) fn min_size(self) -> u64 {
        match self {
            GgufValueType::String => 8,
            GgufValueType::Array => 4 + 8,
            other => other.fixed_size().unwrap_or(1),
        }
    }

    /// ggml's name for the type (`GGUF_TYPE_NAME` in gguf.cpp).
    pub fn name(self) -> &'static str {
        use GgufValueType::*;
        match self {
            U8 => "u8",
            I8 => "i8",
            U16 => "u16",
            I16 => "i16",
            U32 => "u32",
            I32 => "i32",
            F32 => "f32",
            Bool => "bool",
            String => "str",
            Array => "arr",
            U64 => "u64",
            I64 => "i64",
            F64 => "f64",
        }
    }
}

impl fmt::Display for GgufValueType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A ggml tensor type (`enum ggml_type` in ggml.h, llama-cpp-sys-2 0.1.161).
///
/// Ids 4 and 5 (Q4_2, Q4_3), 31–33 (Q4_0_4_4, Q4_0_4_8, Q4_0_8_8) and 36–38
/// (IQ4_NL_4_4, …) were removed from ggml and are rejected, as is anything ≥ 43.
#[allow(non_camel_case_types)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    F32 = 0,
    F16 = 1,
    Q4_0 = 2,
    Q4_1 = 3,
    Q5_0 = 6,
    Q5_1 = 7,
    Q8_0 = 8,
    Q8_1 = 9,
    Q2_K = 10,
    Q3_K = 11,
    Q4_K = 12,
    Q5_K = 13,
    Q6_K = 14,
    Q8_K = 15,
    IQ2_XXS = 16,
    IQ2_XS = 17,
    IQ3_XXS = 18,
    IQ1_S = 19,
    IQ4_NL = 20,
    IQ3_S = 21,
    IQ2_S = 22,
    IQ4_XS = 23,
    I8 = 24,
    I16 = 25,
    I32 = 26,
    I64 = 27,
    F64 = 28,
    IQ1_M = 29,
    BF16 = 30,
    TQ1_0 = 34,
    TQ2_0 = 35,
    MXFP4 = 39,
    NVFP4 = 40,
    Q1_0 = 41,
    Q2_0 = 42,
}

/// Per type: (type, name, elements per block, bytes per block). Names, block sizes and
/// block structs from `type_traits` in ggml/src/ggml.c and `ggml-common.h`
/// (llama-cpp-sys-2 0.1.161); QK_K = 256.
const TYPE_TABLE: [(GgmlType, &str, u64, u64); 35] = {
    use GgmlType::*;
    [
        (F32, "f32", 1, 4),
        (F16, "f16", 1, 2),
        (Q4_0, "q4_0", 32, 18),
        (Q4_1, "q4_1", 32, 20),
        (Q5_0, "q5_0", 32, 22),
        (Q5_1, "q5_1", 32, 24),
        (Q8_0, "q8_0", 32, 34),
        (Q8_1, "q8_1", 32, 36),
        (Q2_K, "q2_K", 256, 84),
        (Q3_K, "q3_K", 256, 110),
        (Q4_K, "q4_K", 256, 144),
        (Q5_K, "q5_K", 256, 176),
        (Q6_K, "q6_K", 256, 210),
        (Q8_K, "q8_K", 256, 292),
        (IQ2_XXS, "iq2_xxs", 256, 66),
        (IQ2_XS, "iq2_xs", 256, 74),
        (IQ3_XXS, "iq3_xxs", 256, 98),
        (IQ1_S, "iq1_s", 256, 50),
        (IQ4_NL, "iq4_nl", 32, 18),
        (IQ3_S, "iq3_s", 256, 110),
        (IQ2_S, "iq2_s", 256, 82),
        (IQ4_XS, "iq4_xs", 256, 136),
        (I8, "i8", 1, 1),
        (I16, "i16", 1, 2),
        (I32, "i32", 1, 4),
        (I64, "i64", 1, 8),
        (F64, "f64", 1, 8),
        (IQ1_M, "iq1_m", 256, 56),
        (BF16, "bf16", 1, 2),
        (TQ1_0, "tq1_0", 256, 54),
        (TQ2_0, "tq2_0", 256, 66),
        (MXFP4, "mxfp4", 32, 17),
        (NVFP4, "nvfp4", 64, 36),
        (Q1_0, "q1_0", 128, 18),
        (Q2_0, "q2_0", 64, 18),
    ]
};

/// Ids ggml removed, with the name it gave them.
const REMOVED_TYPES: [(u32, &str); 8] = [
    (4, "Q4_2"),
    (5, "Q4_3"),
    (31, "Q4_0_4_4"),
    (32, "Q4_0_4_8"),
    (33, "Q4_0_8_8"),
    (36, "IQ4_NL_4_4"),
    (37, "IQ4_NL_4_8"),
    (38, "IQ4_NL_8_8"),
];

impl GgmlType {
    /// Every supported type, in id order.
    pub fn all() -> impl Iterator<Item = GgmlType> {
        TYPE_TABLE.iter().map(|row| row.0)
    }

    /// The type with this id. Unknown and removed ids are errors; the error says which.
    pub fn from_u32(id: u32) -> Result<Self, UnsupportedGgmlType> {
        if let Some(row) = TYPE_TABLE.iter().find(|row| row.0 as u32 == id) {
            return Ok(row.0);
        }
        let removed = REMOVED_TYPES.iter().find(|r| r.0 == id).map(|r| r.1);
        Err(UnsupportedGgmlType { id, removed })
    }

    /// The id stored in the file.
    pub fn id(self) -> u32 {
        self as u32
    }

    fn row(self) -> &'static (GgmlType, &'static str, u64, u64) {
        // Every variant has exactly one row (checked by a unit test).
        TYPE_TABLE.iter().find(|row| row.0 == self).unwrap_or(&TYPE_TABLE[0])
    }

    /// ggml's name (`type_name` in ggml.c), e.g. `"q4_K"`, `"bf16"`.
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// Elements per block (`blck_size`): 1 for plain types, 32 or 256 for most quants.
    pub fn block_size(self) -> u64 {
        self.row().2
    }

    /// Bytes per block (`type_size`).
    pub fn type_size(self) -> u64 {
        self.row().3
    }

    /// Bytes of a row of `ne0` elements, or `None` when `ne0` is not a multiple of the
    /// block size or the size overflows u64.
    pub fn row_size(self, ne0: u64) -> Option<u64> {
        let (n_blocks, rest) = (ne0 / self.block_size(), ne0 % self.block_size());
        if rest != 0 {
            return None;
        }
        n_blocks.checked_mul(self.type_size())
    }
}

impl fmt::Display for GgmlType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
