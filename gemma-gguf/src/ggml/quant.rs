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

/// Bytes of a Q5_0 block and of a Q8_0 block, each of 32 values (`block_q5_0` and
/// `block_q8_0` in ggml-common.h): an f16 scale, then for Q5_0 the 32 fifth bits and 16 bytes of
/// low nibbles (value `j` in the low nibble of byte `j`, value `j + 16` in its high one), for
/// Q8_0 the 32 values as signed bytes.
const Q5_0_BLOCK: usize = 22;
pub(crate) const Q8_0_BLOCK: usize = 34;

/// Bytes of Q8_0 that [`widen_q5_0_to_q8_0`] makes of `q5_0_bytes` bytes of Q5_0.
pub fn q5_0_widened_len(q5_0_bytes: usize) -> usize {
    q5_0_bytes / Q5_0_BLOCK * Q8_0_BLOCK
}

/// Rewrites whole Q5_0 blocks as Q8_0 blocks, appending them to `dst`. Lossless: a Q5_0 value
/// is its 5-bit code less 16, in −16..=15, which a signed byte holds, and the block keeps its
/// scale, so each block dequantises to the same floats and its dot products with Q8_0
/// activations are the same integer sums times the same scales. ggml's x86 CPU kernel for
/// both types (llamafile's `tinyBLAS_Q0_AVX`) differs only in how it loads a block, so the
/// results are bit for bit the same, and it runs 8-bit blocks faster than it unpacks 5-bit ones.
pub fn widen_q5_0_to_q8_0(src: &[u8], dst: &mut Vec<u8>) -> Result<()> {
    if Type::Q5_0.type_size() != Q5_0_BLOCK || Type::Q8_0.type_size() != Q8_0_BLOCK {
        return Err(Error::TypeNotUsable {
            ty: "q5_0".into(),
            what: "widening (the linked ggml's block layout differs)",
        });
    }
    if !src.len().is_multiple_of(Q5_0_BLOCK) {
        return Err(Error::Length {
            what: "q5_0 blocks".into(),
            expected: src.len().next_multiple_of(Q5_0_BLOCK),
            actual: src.len(),
        });
    }
    dst.reserve(q5_0_widened_len(src.len()));
    for block in src.chunks_exact(Q5_0_BLOCK) {
        let (scale, rest) = block.split_at(2);
        let (high, low) = rest.split_at(4);
        let high = u32::from_le_bytes([high[0], high[1], high[2], high[3]]);
        dst.extend_from_slice(scale);
        let value = |j: usize, nibble: u8| ((nibble | (((high >> j) & 1) as u8) << 4) as i8 - 16) as u8;
        dst.extend(low.iter().enumerate().map(|(j, &b)| value(j, b & 0x0f)));
        dst.extend(low.iter().enumerate().map(|(j, &b)| value(j + 16, b >> 4)));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Widened blocks dequantise to the very same floats, for blocks quantised from data and
    /// for arbitrary bit patterns (every code of every position, any finite scale).
    #[test]
    fn widening_q5_0_to_q8_0_is_lossless() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let n_per_row = 64;
        let values: Vec<f32> = (0..n_per_row * 16).map(|_| (next() % 2001) as f32 / 1000.0 - 1.0).collect();
        let quantised = quantize_rows(Type::Q5_0, &values, n_per_row).unwrap();
        let mut arbitrary: Vec<u8> = (0..Q5_0_BLOCK * 64).map(|_| next() as u8).collect();
        for (i, block) in arbitrary.chunks_exact_mut(Q5_0_BLOCK).enumerate() {
            // Finite f16 scales, among them negative and subnormal ones.
            block[..2].copy_from_slice(&(((i as u16) * 977) & 0x7bff | ((i as u16 & 1) << 15)).to_le_bytes());
        }
        for q5 in [&quantised, &arbitrary] {
            let mut q8 = Vec::new();
            widen_q5_0_to_q8_0(q5, &mut q8).unwrap();
            assert_eq!(q8.len(), q5_0_widened_len(q5.len()));
            let a = dequantize_rows(Type::Q5_0, q5, 32).unwrap();
            let b = dequantize_rows(Type::Q8_0, &q8, 32).unwrap();
            let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            assert_eq!(differ, 0, "{differ} of {} values changed", a.len());
        }
        // Every code 0..32 occurs in the arbitrary blocks, so all of −16..=15 were checked.
        let mut q8 = Vec::new();
        widen_q5_0_to_q8_0(&arbitrary, &mut q8).unwrap();
        let mut seen = [false; 32];
        for block in q8.chunks_exact(Q8_0_BLOCK) {
            for &v in &block[2..] {
                seen[(v as i8 + 16) as usize] = true;
            }
        }
        assert!(seen.iter().all(|&s| s));
        assert!(widen_q5_0_to_q8_0(&arbitrary[..21], &mut q8).is_err(), "a partial block is refused");
    }
}
