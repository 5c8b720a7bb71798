//! A Q8_0 matrix times one column on x86-64: the product a decode step makes of every Q8_0
//! weight (Gemma's output projection, 170 MiB of the 270M's 235, among them), with the same
//! arithmetic as ggml's and software prefetching added.
//!
//! ggml's CPU backend multiplies a one-column batch row by row with `ggml_vec_dot_q8_0_q8_0`,
//! which reads each row in 34-byte blocks with one multiply-add per block. On the 2-core
//! Intel VM of the README's "Speed" section it read the 178 MB output projection at about
//! 6 GB/s on one thread (30 ms a token), where a plain read of the same memory runs at 12 GB/s:
//! the hardware prefetcher does not run far enough ahead of a loop this slow. Asking for the
//! bytes 8 KiB ahead (`PREFETCH`) took the same loop to 16–18 ms (a C replica of both loops,
//! same results bit for bit).
//!
//! The results are those of ggml's kernel bit for bit, so logits do not change: the column is
//! quantised to Q8_0 by ggml's own CPU quantiser (`from_float` of its type traits), and each row's
//! dot product takes ggml's steps in ggml's order (x86 `quants.c`, the `__AVX2__` branch of
//! `ggml_vec_dot_q8_0_q8_0`): per block the eight 32-bit sums of four byte products, converted to
//! float and multiplied-added with the product of the two f16 scales into eight lanes, then the
//! lanes summed as `hsum_float_8` sums them. The integer sums are exact whichever instructions
//! make them (ggml uses VNNI's `vpdpbusd` where it has it; here `vpmaddubsw` then `vpmaddwd`,
//! which cannot saturate: weights are −128..=127 and ggml's quantiser gives the column
//! −127..=127, so a pair of products is at most 2·128·127 = 32 512). Used only where ggml takes
//! that branch too: its CPU backend reports AVX2, FMA and F16C (`usable`).
use super::context::{Context, Tensor};
use super::{sys, Result, Type};
use std::ffi::{c_int, c_void};
use std::sync::OnceLock;

// Bytes of a Q8_0 block (ggml-common.h `block_q8_0`: an f16 scale, 32 signed bytes).
use super::quant::Q8_0_BLOCK as BLOCK;
#[cfg(target_arch = "x86_64")]
/// How far ahead of the block being multiplied its row's bytes are asked for (measured on the
/// 270M's output projection: 1 KiB gave 22 ms a token, 2.7–4 KiB 18 ms, 8 KiB 16–17 ms).
const PREFETCH: usize = 8192;
/// Rows per thread are a multiple of this, so that threads do not share a cache line of the
/// result.
const ROW_GRAIN: usize = 16;

/// Whether [`Context::mul_mat_q8_0_column`] may stand for `mul_mat`: x86-64 with AVX2, FMA and
/// F16C at run time, and a ggml CPU backend built with them (its features), so that ggml's
/// own kernel is the `__AVX2__` branch that this one reproduces.
pub(crate) fn usable() -> bool {
    static USABLE: OnceLock<bool> = OnceLock::new();
    *USABLE.get_or_init(|| {
        let Ok(device) = super::Device::cpu() else { return false };
        let features = super::system::backend_features(device);
        let has = |name: &str| features.iter().any(|f| f.name == name && f.value == "1");
        // SAFETY: a static table entry of a valid type.
        let quantiser = unsafe { (*sys::ggml_get_type_traits_cpu(sys::GGML_TYPE_Q8_0)).from_float.is_some() };
        cpu_has_avx2_fma_f16c() && has("AVX2") && has("FMA") && has("F16C") && quantiser
    })
}

#[cfg(target_arch = "x86_64")]
fn cpu_has_avx2_fma_f16c() -> bool {
    std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
}

#[cfg(not(target_arch = "x86_64"))]
fn cpu_has_avx2_fma_f16c() -> bool {
    false
}

impl Context {
    /// `mul_mat(w, x)` for a Q8_0 matrix `w` `[k, m]` in host memory and one f32 column `x`
    /// `[k]`: `[m]`, computed by this module's kernel on the CPU (a ggml custom op), or `None`
    /// where that does not apply (another type or shape, `w` on a device, or not `usable()`),
    /// for the caller to use [`mul_mat`](Self::mul_mat).
    pub fn mul_mat_q8_0_column<'s>(&'s self, w: Tensor<'s>, x: Tensor<'s>) -> Result<Option<Tensor<'s>>> {
        let (nw, nx) = (w.ne(), x.ne());
        let shapes = w.ty() == Type::Q8_0
            && x.ty() == Type::F32
            && nw[0] == nx[0]
            && nw[0] % 32 == 0
            && nw[2..] == [1, 1]
            && nx[1..] == [1, 1, 1]
            && x.nb()[0] == 4
            && w.nb()[0] == BLOCK
            && w.nb()[1] == (nw[0] as usize / 32) * BLOCK;
        // SAFETY: reads the buffer pointer of a live tensor; a non-null buffer is live as long
        // as its context (which `depend` below keeps alive).
        let host = !w.as_ptr().is_null()
            && unsafe {
                let b = (*w.as_ptr()).buffer;
                !b.is_null() && sys::ggml_backend_buffer_is_host(b) && !(*w.as_ptr()).data.is_null()
            };
        if !(shapes && host && usable()) {
            return Ok(None);
        }
        self.prepare(&[w, x])?;
        let mut args = [w.as_ptr(), x.as_ptr()];
        // SAFETY: live tensors of this context or of ones it depends on (prepare); the op
        // reads them only as `compute` says, and has no user data.
        let p = unsafe {
            sys::ggml_custom_4d(
                self.as_ptr(),
                sys::GGML_TYPE_F32,
                nw[1],
                1,
                1,
                1,
                args.as_mut_ptr(),
                2,
                Some(compute),
                -1, // GGML_N_TASKS_MAX: every thread
                std::ptr::null_mut(),
            )
        };
        self.wrap(p, "ggml_custom_4d").map(Some)
    }
}

/// The custom op: thread `ith` of `nth` quantises the column itself (a few KiB, so no thread
/// waits for another) and computes its share of the rows.
unsafe extern "C" fn compute(dst: *mut sys::ggml_tensor, ith: c_int, nth: c_int, _: *mut c_void) {
    // SAFETY (whole body): ggml calls this with the tensor built by `mul_mat_q8_0_column`,
    // whose sources are the Q8_0 matrix (host memory, rows of `k / 32` blocks, checked there)
    // and a contiguous f32 column of `k` values, and whose data is `m` f32 values.
    unsafe {
        let (w, x) = (&*(*dst).src[0], &*(*dst).src[1]);
        let (k, rows) = (w.ne[0] as usize, w.ne[1] as usize);
        let n_blocks = k / 32;
        let Some(quantise) = (*sys::ggml_get_type_traits_cpu(sys::GGML_TYPE_Q8_0)).from_float else { return };
        let mut column = vec![0u8; n_blocks * BLOCK];
        quantise(x.data as *const f32, column.as_mut_ptr().cast(), k as i64);
        let (ith, nth) = (ith.max(0) as usize, nth.max(1) as usize);
        let per = rows.div_ceil(nth).next_multiple_of(ROW_GRAIN);
        let (start, end) = ((ith * per).min(rows), ((ith + 1) * per).min(rows));
        let out = (*dst).data as *mut f32;
        #[cfg(target_arch = "x86_64")]
        for r in start..end {
            let row = (w.data as *const u8).add(r * w.nb[1]);
            *out.add(r) = dot_row(row, column.as_ptr(), n_blocks);
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = (start, end, out);
    }
}

/// One row (`n_blocks` Q8_0 blocks at `row`) dotted with the quantised column, as
/// `ggml_vec_dot_q8_0_q8_0` computes it (module docs).
///
/// # Safety
/// `row` and `column` hold `n_blocks` blocks each; the CPU has AVX2, FMA and F16C ([`usable`]).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn dot_row(row: *const u8, column: *const u8, n_blocks: usize) -> f32 {
    use std::arch::x86_64::*;
    let scale = |p: *const u8| {
        // SAFETY: the block's first two bytes, its f16 scale (exact in f32).
        let h = unsafe { p.cast::<u16>().read_unaligned() };
        _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(h as i32)))
    };
    let ones = _mm256_set1_epi16(1);
    let mut acc = _mm256_setzero_ps();
    for ib in 0..n_blocks {
        let (xb, yb) = (row.add(ib * BLOCK), column.add(ib * BLOCK));
        if ib % 2 == 0 {
            // A hint: no fault past the end of the matrix, so wrapping arithmetic suffices.
            _mm_prefetch::<_MM_HINT_T0>(xb.wrapping_add(PREFETCH).cast());
        }
        let d = _mm256_set1_ps(scale(xb) * scale(yb));
        let qx = _mm256_loadu_si256(xb.add(2).cast());
        let qy = _mm256_loadu_si256(yb.add(2).cast());
        let ax = _mm256_sign_epi8(qx, qx);
        let sy = _mm256_sign_epi8(qy, qx);
        let sums = _mm256_madd_epi16(_mm256_maddubs_epi16(ax, sy), ones);
        acc = _mm256_fmadd_ps(d, _mm256_cvtepi32_ps(sums), acc);
    }
    // hsum_float_8: high half plus low half, then lanes 0+2 and 1+3, then those two.
    let mut res = _mm_add_ps(_mm256_extractf128_ps(acc, 1), _mm256_castps256_ps128(acc));
    res = _mm_add_ps(res, _mm_movehl_ps(res, res));
    res = _mm_add_ss(res, _mm_movehdup_ps(res));
    _mm_cvtss_f32(res)
}

#[cfg(test)]
mod tests {
    use super::super::{quantize_rows, Backend};
    use super::*;

    /// The op against ggml's own `mul_mat` in one graph, on both threads: a row count that
    /// does not split evenly, rows of 20 and 36 blocks, and weights holding −128 (which ggml's
    /// quantiser never writes, but a file may).
    #[test]
    fn gives_ggml_mul_mat_bit_for_bit() {
        if !usable() {
            // Then `mul_mat_q8_0_column` declines (asserted) and ggml's kernel runs.
            println!("not x86-64 with AVX2/FMA/F16C in both the CPU and ggml: the kernel is not used here");
            return;
        }
        let backend = Backend::cpu().unwrap();
        backend.set_n_threads(2).unwrap();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % 20_001) as f32 / 10_000.0 - 1.0
        };
        for (k, m) in [(640i64, 1037i64), (1152, 261)] {
            let wctx = Context::new(2, 0).unwrap();
            let w = wctx.new_tensor(Type::Q8_0, &[k, m]).unwrap();
            wctx.alloc_tensors(&backend).unwrap();
            let values: Vec<f32> = (0..k * m).map(|_| next()).collect();
            let mut bytes = quantize_rows(Type::Q8_0, &values, k as usize).unwrap();
            for i in (7..bytes.len()).step_by(997) {
                if i % BLOCK >= 2 {
                    bytes[i] = 0x80;
                }
            }
            w.set_bytes(&bytes).unwrap();

            let ctx = Context::new(8, 16).unwrap();
            let x = ctx.new_tensor(Type::F32, &[k, 1]).unwrap().set_input();
            let ours = ctx.mul_mat_q8_0_column(w, x).unwrap().expect("a q8_0 matrix in host memory times a column");
            let theirs = ctx.mul_mat(w, x).unwrap();
            let wide = ctx.new_tensor(Type::F32, &[k, 2]).unwrap();
            assert!(ctx.mul_mat_q8_0_column(w, wide).unwrap().is_none(), "two columns are ggml's");
            let mut gf = ctx.new_graph(16).unwrap();
            gf.expand(ours).unwrap();
            gf.expand(theirs).unwrap();
            ctx.alloc_graph(&gf, &backend).unwrap();
            x.set_f32(&(0..k).map(|_| next() * 3.0).collect::<Vec<_>>()).unwrap();
            backend.compute(&gf).unwrap();
            let (a, b) = (ours.get_f32().unwrap(), theirs.get_f32().unwrap());
            assert_eq!(a.len(), m as usize);
            let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            let differ = a.iter().zip(&b).filter(|(x, y)| x.to_bits() != y.to_bits()).count();
            println!("{m} rows of {k}: {differ} differ from ggml's mul_mat, max |Δ| {max}");
            assert_eq!(differ, 0);
        }
    }
}
