//! Quantise and dequantise rows of any ggml type with ggml's own routines, so the blocks are
//! bit-identical to llama.cpp's for the same input.
use super::{sys, Error, Result, Type};

fn check_rows(ty: Type, n_elements: usize, n_per_row: usize) -> Result<usize> {
    let row = ty.row_size(n_per_row as i64)?;
    if n_per_row == 0 || !n_elements.is_multiple_of(n_per_row) {
        return Err(Error::Length {
            what: format!("{n_elements} values in rows of {n_per_row}"),
            expected: n_elements.next_multiple_of(n_per_row.max(1)),
            actual: n_elements,
        });
    }
    Ok(row)
}

/// Whether `ggml_quantize_chunk` can produce `ty` (its switch in ggml.c; every other type,
/// the integer ones and Q8_1/Q8_K among them, makes it abort).
pub fn can_quantize(ty: Type) -> bool {
    use sys::*;
    matches!(
        ty.raw(),
        GGML_TYPE_F32
            | GGML_TYPE_F16
            | GGML_TYPE_BF16
            | GGML_TYPE_Q1_0
            | GGML_TYPE_Q2_0
            | GGML_TYPE_Q4_0
            | GGML_TYPE_Q4_1
            | GGML_TYPE_Q5_0
            | GGML_TYPE_Q5_1
            | GGML_TYPE_Q8_0
            | GGML_TYPE_MXFP4
            | GGML_TYPE_NVFP4
            | GGML_TYPE_Q2_K
            | GGML_TYPE_Q3_K
            | GGML_TYPE_Q4_K
            | GGML_TYPE_Q5_K
            | GGML_TYPE_Q6_K
            | GGML_TYPE_TQ1_0
            | GGML_TYPE_TQ2_0
            | GGML_TYPE_IQ2_XXS
            | GGML_TYPE_IQ2_XS
            | GGML_TYPE_IQ3_XXS
            | GGML_TYPE_IQ3_S
            | GGML_TYPE_IQ2_S
            | GGML_TYPE_IQ1_S
            | GGML_TYPE_IQ1_M
            | GGML_TYPE_IQ4_NL
            | GGML_TYPE_IQ4_XS
    )
}

/// Quantises `src` (rows of `n_per_row` values) to `ty` with `ggml_quantize_chunk`.
/// Types that need an importance matrix (IQ2/IQ1 families) are refused.
pub fn quantize_rows(ty: Type, src: &[f32], n_per_row: usize) -> Result<Vec<u8>> {
    if !can_quantize(ty) {
        return Err(Error::TypeNotUsable { ty: ty.name().into(), what: "quantisation (ggml has no quantiser for it)" });
    }
    let row = check_rows(ty, src.len(), n_per_row)?;
    // SAFETY: plain query on a valid type id.
    if unsafe { sys::ggml_quantize_requires_imatrix(ty.raw()) } {
        return Err(Error::TypeNotUsable { ty: ty.name().into(), what: "quantisation without an importance matrix" });
    }
    let n_rows = src.len() / n_per_row;
    let mut dst = vec![0u8; n_rows * row];
    if n_rows == 0 {
        return Ok(dst);
    }
    // SAFETY: `src` holds n_rows·n_per_row floats, `dst` holds n_rows rows of `row` bytes,
    // `n_per_row` is a multiple of the block size (checked), imatrix is optional for `ty`.
    let written = unsafe {
        sys::ggml_quantize_chunk(
            ty.raw(),
            src.as_ptr(),
            dst.as_mut_ptr().cast(),
            0,
            n_rows as i64,
            n_per_row as i64,
            std::ptr::null(),
        )
    };
    debug_assert_eq!(written, dst.len());
    Ok(dst)
}

/// Dequantises rows of `ty` (`n_per_row` values each) to f32 with ggml's `to_float`.
pub fn dequantize_rows(ty: Type, src: &[u8], n_per_row: usize) -> Result<Vec<f32>> {
    let row = ty.row_size(n_per_row as i64)?;
    if row == 0 || !src.len().is_multiple_of(row) {
        return Err(Error::Length { what: format!("{ty} rows of {n_per_row}"), expected: row, actual: src.len() });
    }
    if ty == Type::F32 {
        return Ok(src.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect());
    }
    // SAFETY: valid type id; the table entry is static.
    let to_float = unsafe { (*sys::ggml_get_type_traits(ty.raw())).to_float }
        .ok_or(Error::TypeNotUsable { ty: ty.name().into(), what: "dequantisation" })?;
    let n = src.len() / row * n_per_row;
    let mut dst = vec![0f32; n];
    // SAFETY: `src` holds exactly n/block whole blocks of `ty`; `dst` has room for n floats.
    unsafe { to_float(src.as_ptr().cast(), dst.as_mut_ptr(), n as i64) };
    Ok(dst)
}
