//! Layout and indexing operations (views, reshapes, row gather/scatter), gated activations
//! and fused attention. Each checks what the ggml function asserts before calling it.
use super::context::{Context, Tensor};
use super::{sys, Error, Result, Type};

fn contiguous(t: Tensor<'_>) -> bool {
    // SAFETY: pure layout query on a live tensor.
    unsafe { sys::ggml_is_contiguous(t.as_ptr()) }
}

fn contiguous_rows(t: Tensor<'_>) -> bool {
    // SAFETY: pure layout query on a live tensor.
    unsafe { sys::ggml_is_contiguous_rows(t.as_ptr()) }
}

/// Elements per row when [`Context::spread`] cuts a few long rows shorter: a divisor of every
/// vocabulary and FFN width of the Gemma files (powers of two times 1024), and enough work per
/// row that the per-row overhead stays small.
const SPREAD_ROW: i64 = 1024;
/// Batches of this many rows or more already give every thread rows of its own.
const SPREAD_MAX_ROWS: i64 = 16;

impl Context {
    /// `f` (elementwise ops) applied to `xs`, tensors of one shape, seen as rows of
    /// [`SPREAD_ROW`] elements when they are contiguous and have fewer, longer rows; the result
    /// is given back in the first's shape. ggml's CPU kernels for scale, the unary ops and the
    /// GLUs hand whole rows to threads, so a one-token batch (one row of 262 144 logits, or of
    /// an FFN's width) would run on one thread while the others wait at the next barrier. The
    /// values do not change: the ops are elementwise. `f`'s result must be contiguous.
    pub fn spread<'s, const N: usize>(
        &'s self,
        xs: [Tensor<'s>; N],
        f: impl FnOnce([Tensor<'s>; N]) -> Result<Tensor<'s>>,
    ) -> Result<Tensor<'s>> {
        let Some(first) = xs.first() else { return f(xs) };
        let (ne, n) = (first.ne(), first.n_elements());
        let rows = n / ne[0].max(1);
        let worth = n % SPREAD_ROW == 0 && n / SPREAD_ROW > rows && rows < SPREAD_MAX_ROWS;
        if !(worth && xs.iter().all(|x| x.ne() == ne && contiguous(*x))) {
            return f(xs);
        }
        let mut flat = xs;
        for x in flat.iter_mut() {
            *x = self.reshape(*x, &[SPREAD_ROW, n / SPREAD_ROW])?;
        }
        let out = f(flat)?;
        self.reshape(out, &ne)
    }

    /// Gathers rows of `a` (`[n, rows, …]`, any type) at i32 indices `idx` → F32 `[n, len(idx)]`.
    /// ggml's CPU kernel aborts on an index ≥ `a.ne[1]`: crate-internal, callers check indices.
    pub(crate) fn get_rows<'s>(&'s self, a: Tensor<'s>, idx: Tensor<'s>) -> Result<Tensor<'s>> {
        let (na, ni) = (a.ne(), idx.ne());
        if idx.ty() != Type::I32 || na[2] != ni[1] || na[3] != ni[2] || ni[3] != 1 {
            return Err(Self::shape_err("ggml_get_rows", a, idx, "indices must be i32 [n, a.ne2, a.ne3]"));
        }
        self.prepare(&[a, idx])?;
        // SAFETY: the asserts of ggml_get_rows are checked above.
        self.wrap(unsafe { sys::ggml_get_rows(self.as_ptr(), a.as_ptr(), idx.as_ptr()) }, "ggml_get_rows")
    }

    /// Scatters the rows of `src` into `dst` at i64 indices `idx` (in place on `dst`; the
    /// result is a view of `dst` to add to the graph). Index values are not checked by
    /// ggml's CPU kernel (it aborts): crate-internal, callers keep them below `dst.ne[1]`.
    pub(crate) fn set_rows<'s>(&'s self, dst: Tensor<'s>, src: Tensor<'s>, idx: Tensor<'s>) -> Result<Tensor<'s>> {
        let (nd, ns, ni) = (dst.ne(), src.ne(), idx.ne());
        let shapes_ok = nd[0] == ns[0] && nd[2] == ns[2] && nd[3] == ns[3] && ns[1] == ni[0];
        let bcast_ok = ns[2] % ni[1] == 0 && ns[3] % ni[2] == 0 && ni[3] == 1;
        let types_ok = matches!(src.ty(), t if t == Type::F32 || t == Type::F16)
            && (idx.ty() == Type::I64 || idx.ty() == Type::I32);
        if !(shapes_ok && bcast_ok && types_ok && contiguous_rows(dst) && contiguous_rows(src)) {
            return Err(Self::shape_err("ggml_set_rows", dst, src, "rows, index count or types do not match"));
        }
        self.prepare(&[dst, src, idx])?;
        // SAFETY: every assert of ggml_set_rows is checked above.
        self.wrap(
            unsafe { sys::ggml_set_rows(self.as_ptr(), dst.as_ptr(), src.as_ptr(), idx.as_ptr()) },
            "ggml_set_rows",
        )
    }

    /// `gelu(a) · b` in one op (`ggml_geglu_split`), as llama.cpp's GELU-gated FFN uses.
    pub fn geglu_split<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        // SAFETY: pure layout queries.
        let rows_ok = unsafe { sys::ggml_is_contiguous_1(a.as_ptr()) && sys::ggml_is_contiguous_1(b.as_ptr()) };
        if !rows_ok || a.ne() != b.ne() || a.ty() != b.ty() {
            return Err(Self::shape_err("ggml_geglu_split", a, b, "a and b must have one contiguous shape and type"));
        }
        self.prepare(&[a, b])?;
        // SAFETY: ggml_glu_impl's asserts are checked above.
        self.wrap(unsafe { sys::ggml_geglu_split(self.as_ptr(), a.as_ptr(), b.as_ptr()) }, "ggml_geglu_split")
    }

    /// `tanh(a)` element-wise.
    pub fn tanh<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        // SAFETY: pure layout query.
        if !unsafe { sys::ggml_is_contiguous_1(a.as_ptr()) } {
            return Err(Self::shape_err("ggml_tanh", a, a, "rows must be contiguous"));
        }
        self.prepare(&[a])?;
        // SAFETY: unary op on contiguous rows.
        self.wrap(unsafe { sys::ggml_tanh(self.as_ptr(), a.as_ptr()) }, "ggml_tanh")
    }

    /// A contiguous copy of `a`.
    pub fn cont<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        self.prepare(&[a])?;
        // SAFETY: ggml_cont accepts any tensor.
        self.wrap(unsafe { sys::ggml_cont(self.as_ptr(), a.as_ptr()) }, "ggml_cont")
    }

    /// `a` converted to f32 (ggml_cast). ggml's CPU kernel converts f32, f16, bf16 and the
    /// quantized types (ggml-cpu ops.cpp `ggml_compute_forward_dup`); it aborts on others,
    /// which are refused here.
    pub fn to_f32<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        if !(a.ty().is_float() || a.ty().is_quantized()) {
            return Err(Error::WrongTensorType {
                name: a.name(),
                expected: "f32, f16, bf16 or a quantized type",
                actual: a.ty().to_string(),
            });
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_cast asserts nothing; it makes a copy node of `a`'s shape in f32.
        self.wrap(unsafe { sys::ggml_cast(self.as_ptr(), a.as_ptr(), Type::F32.raw()) }, "ggml_cast")
    }

    /// `a` (f32 or f16) converted to f16 (ggml_cast), e.g. rows of an attention mask taken
    /// with `get_rows` (which yields f32) for the flash-attention kernel.
    pub fn to_f16<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        if !matches!(a.ty(), Type::F32 | Type::F16) {
            return Err(Error::WrongTensorType { name: a.name(), expected: "f32 or f16", actual: a.ty().to_string() });
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_cast asserts nothing; it makes a copy node of `a`'s shape in f16, which
        // ggml's CPU kernel converts from f32 and f16 (ops.cpp `ggml_compute_forward_dup`).
        self.wrap(unsafe { sys::ggml_cast(self.as_ptr(), a.as_ptr(), Type::F16.raw()) }, "ggml_cast")
    }

    /// `a` with a new shape of the same element count; `a` must be contiguous.
    pub fn reshape<'s>(&'s self, a: Tensor<'s>, dims: &[i64]) -> Result<Tensor<'s>> {
        let n: Option<i64> = dims.iter().try_fold(1i64, |acc, &d| if d >= 1 { acc.checked_mul(d) } else { None });
        if !contiguous(a) || n != Some(a.n_elements()) || dims.is_empty() || dims.len() > 4 {
            return Err(Error::BadDims {
                dims: dims.to_vec(),
                why: "reshape needs a contiguous tensor and the same element count",
            });
        }
        self.prepare(&[a])?;
        let c = self.as_ptr();
        // SAFETY: contiguity and element count checked above.
        let t = unsafe {
            match *dims {
                [d0] => sys::ggml_reshape_1d(c, a.as_ptr(), d0),
                [d0, d1] => sys::ggml_reshape_2d(c, a.as_ptr(), d0, d1),
                [d0, d1, d2] => sys::ggml_reshape_3d(c, a.as_ptr(), d0, d1, d2),
                [d0, d1, d2, d3] => sys::ggml_reshape_4d(c, a.as_ptr(), d0, d1, d2, d3),
                _ => unreachable!("length checked above"),
            }
        };
        self.wrap(t, "ggml_reshape")
    }

    /// Axis `i` of `a` moves to position `axes[i]` (ggml's convention).
    pub fn permute<'s>(&'s self, a: Tensor<'s>, axes: [i32; 4]) -> Result<Tensor<'s>> {
        let mut seen = [false; 4];
        for &x in &axes {
            if !(0..4).contains(&x) || std::mem::replace(&mut seen[x as usize], true) {
                return Err(Error::OutOfRange {
                    what: "permute axes",
                    value: format!("{axes:?}"),
                    why: "must be a permutation of 0..4",
                });
            }
        }
        self.prepare(&[a])?;
        // SAFETY: axes are a permutation of 0..4 (checked).
        self.wrap(
            unsafe { sys::ggml_permute(self.as_ptr(), a.as_ptr(), axes[0], axes[1], axes[2], axes[3]) },
            "ggml_permute",
        )
    }

    /// A view of `a`: `dims` (1 to 3 of them) with byte strides `nb1`, `nb2` for dims 1 and
    /// 2, starting `offset` bytes in. Every byte the view can reach must lie inside `a`.
    pub fn view<'s>(&'s self, a: Tensor<'s>, dims: &[i64], strides: [usize; 2], offset: usize) -> Result<Tensor<'s>> {
        let bad = |why| Error::BadDims { dims: dims.to_vec(), why };
        if dims.is_empty() || dims.len() > 3 || dims.iter().any(|&d| d < 1) {
            return Err(bad("a view has 1 to 3 dimensions, each ≥ 1"));
        }
        let row = a.ty().row_size(dims[0])?;
        let ne = |i: usize| dims.get(i).copied().unwrap_or(1) as usize;
        // ggml's own check: the view's dense size from `offset` fits in `a`.
        let dense = row.checked_mul(ne(1)).and_then(|x| x.checked_mul(ne(2)));
        // Ours: the last byte reachable through the strides fits too.
        let reach = (ne(1) - 1)
            .checked_mul(strides[0])
            .and_then(|x| x.checked_add((ne(2) - 1).checked_mul(strides[1])?))
            .and_then(|x| x.checked_add(row));
        let fits = |n: Option<usize>| n.and_then(|n| n.checked_add(offset)).is_some_and(|end| end <= a.nbytes());
        if !fits(dense) || !fits(reach) {
            return Err(bad("the view reaches past the end of its source tensor"));
        }
        self.prepare(&[a])?;
        let c = self.as_ptr();
        // SAFETY: bounds checked above against ggml_nbytes(a).
        let t = unsafe {
            match *dims {
                [d0] => sys::ggml_view_1d(c, a.as_ptr(), d0, offset),
                [d0, d1] => sys::ggml_view_2d(c, a.as_ptr(), d0, d1, strides[0], offset),
                [d0, d1, d2] => sys::ggml_view_3d(c, a.as_ptr(), d0, d1, d2, strides[0], strides[1], offset),
                _ => unreachable!("length checked above"),
            }
        };
        self.wrap(t, "ggml_view")
    }

    /// Fused attention (`ggml_flash_attn_ext`): q `[d, n_q, n_head]`, k and v
    /// `[d, n_kv, n_head_kv]`, mask F16 `[n_kv, ≥ n_q]` (`None`: every query sees every key)
    /// → `[d, n_head, n_q]` (F32). `logit_softcap` > 0 caps the scaled scores at `c·tanh(s/c)`
    /// before the mask (0: none).
    pub fn flash_attn_ext<'s>(
        &'s self,
        q: Tensor<'s>,
        k: Tensor<'s>,
        v: Tensor<'s>,
        mask: Option<Tensor<'s>>,
        scale: f32,
        logit_softcap: f32,
    ) -> Result<Tensor<'s>> {
        let (nq, nk, nv) = (q.ne(), k.ne(), v.ne());
        let qk_ok = nq[0] == nk[0] && nq[2] % nk[2] == 0 && nq[3] % nk[3] == 0 && nq[3] == nk[3] && nq[3] == nv[3];
        let v_ok = nv[1] == nk[1] && nv[2] == nk[2];
        let mask_ok = mask.is_none_or(|mask| {
            let nm = mask.ne();
            mask.ty() == Type::F16
                && contiguous(mask)
                && nm[0] == nk[1]
                && nm[1] >= nq[1]
                && nq[2] % nm[2] == 0
                && nq[3] % nm[3] == 0
        });
        if !(qk_ok && v_ok && mask_ok) {
            return Err(Self::shape_err(
                "ggml_flash_attn_ext",
                q,
                k,
                "q/k/v/mask shapes do not fit (mask must be f16 [n_kv, ≥n_q])",
            ));
        }
        self.prepare(&[q, k, v].into_iter().chain(mask).collect::<Vec<_>>())?;
        // SAFETY: the asserts of ggml_flash_attn_ext are checked above (the softcap is a plain
        // op parameter, not asserted on; a null mask is allowed); no ALiBi.
        let t = unsafe {
            let m = mask.map_or(std::ptr::null_mut(), |m| m.as_ptr());
            let (q, k, v) = (q.as_ptr(), k.as_ptr(), v.as_ptr());
            sys::ggml_flash_attn_ext(self.as_ptr(), q, k, v, m, scale, 0.0, logit_softcap)
        };
        let t = self.wrap(t, "ggml_flash_attn_ext")?;
        t.set_f32_accumulation();
        Ok(t)
    }
}
