//! Checks shared by the reader and the writer, so that the writer never produces a file
//! the reader rejects.

use super::error::{GgufError, Result};
use super::limits::{MAX_ARRAY_LEN, MAX_DIMS, MAX_NAME, MAX_STRING_LEN};
use super::types::GgmlType;
use super::value::{GgufArray, GgufValue};
use super::{GgufValueType, MAX_ALIGNMENT};

/// Versions 2 and 3 share one layout; version 1 (32-bit counts) is gone from ggml.
pub(crate) fn check_version(version: u32) -> Result<()> {
    if version == 2 || version == 3 {
        return Ok(());
    }
    // ggml's heuristic (gguf.cpp): a nonzero version with its low 16 bits clear is a
    // small version number read with the wrong byte order.
    if version != 0 && version & 0xFFFF == 0 {
        return Err(GgufError::BigEndian { version });
    }
    Err(GgufError::UnsupportedVersion { version })
}

/// `general.alignment` must be a u32 power of two ≤ [`MAX_ALIGNMENT`].
pub(crate) fn alignment_from_value(value: Option<&GgufValue>) -> Result<u64> {
    match value {
        None => Ok(super::DEFAULT_ALIGNMENT.into()),
        Some(GgufValue::U32(a)) => check_alignment(*a),
        Some(other) => Err(GgufError::WrongType {
            key: super::KEY_ALIGNMENT.to_owned(),
            expected: super::ValueKind::Scalar(GgufValueType::U32),
            actual: other.kind(),
        }),
    }
}

pub(crate) fn check_alignment(alignment: u32) -> Result<u64> {
    if alignment.is_power_of_two() && alignment <= MAX_ALIGNMENT {
        Ok(alignment.into())
    } else {
        Err(GgufError::InvalidAlignment { alignment: alignment.into() })
    }
}

/// A tensor name is 1..=63 bytes (ggml's name buffer is 64 bytes with the NUL).
pub(crate) fn check_tensor_name(name: &str, index: u64, offset: u64) -> Result<()> {
    if name.is_empty() {
        return Err(GgufError::EmptyTensorName { index, offset });
    }
    if name.len() >= MAX_NAME {
        return Err(GgufError::TensorNameTooLong { name: name.to_owned(), len: name.len() });
    }
    Ok(())
}

/// Bytes of a tensor of this shape and type, after checking what ggml checks: at most
/// [`MAX_DIMS`] dimensions, element count and byte size within i64, rows a whole number
/// of blocks. An empty `dims` is a scalar (one element).
pub(crate) fn tensor_n_bytes(tensor: &str, dims: &[u64], ggml_type: GgmlType) -> Result<u64> {
    if dims.len() > MAX_DIMS {
        return Err(GgufError::TooManyDims { tensor: tensor.to_owned(), n_dims: dims.len() as u64 });
    }
    let overflow = || GgufError::ShapeOverflow { tensor: tensor.to_owned(), dims: dims.to_vec() };
    let max = i64::MAX as u64;
    // Each ne is stored as an i64, and their product must fit in one too.
    if dims.iter().any(|&ne| ne > max) {
        return Err(overflow());
    }
    let mut n_elements: u64 = 1;
    for &ne in dims {
        n_elements = n_elements.checked_mul(ne).filter(|&n| n <= max).ok_or_else(overflow)?;
    }
    let ne0 = dims.first().copied().unwrap_or(1);
    let row_size = ggml_type.row_size(ne0).ok_or_else(|| GgufError::RowNotBlockMultiple {
        tensor: tensor.to_owned(),
        ggml_type,
        ne0,
        block_size: ggml_type.block_size(),
    })?;
    if n_elements == 0 {
        return Ok(0);
    }
    // n_elements > 0, so ne0 > 0 and the division is exact.
    let n_rows = n_elements / ne0;
    row_size.checked_mul(n_rows).filter(|&n| n <= max).ok_or_else(overflow)
}

/// A metadata value the reader would accept back: strings and arrays within the caps.
pub(crate) fn check_value(key: &str, value: &GgufValue) -> Result<()> {
    let invalid = |reason: String| GgufError::InvalidValue { key: key.to_owned(), reason };
    let long_string = |s: &String| s.len() as u64 > MAX_STRING_LEN;
    match value {
        GgufValue::String(s) if long_string(s) => {
            Err(invalid(format!("string of {} bytes exceeds {MAX_STRING_LEN}", s.len())))
        }
        GgufValue::Array(a) if a.len() as u64 > MAX_ARRAY_LEN => {
            Err(invalid(format!("array of {} elements exceeds {MAX_ARRAY_LEN}", a.len())))
        }
        GgufValue::Array(GgufArray::String(v)) if v.iter().any(long_string) => {
            Err(invalid(format!("an array element exceeds {MAX_STRING_LEN} bytes")))
        }
        _ => Ok(()),
    }
}

/// A key is a non-empty string within the string cap.
pub(crate) fn check_key(key: &str, index: u64) -> Result<()> {
    if key.is_empty() {
        return Err(GgufError::EmptyKey { index, offset: 0 });
    }
    if key.len() as u64 > MAX_STRING_LEN {
        return Err(GgufError::StringTooLong {
            field: "key".to_owned(),
            offset: 0,
            len: key.len() as u64,
            limit: MAX_STRING_LEN,
        });
    }
    Ok(())
}
