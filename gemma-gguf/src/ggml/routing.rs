//! The operations a mixture-of-experts block needs: per-token expert products
//! (`ggml_mul_mat_id`), top-k selection, row sums, clamping, division and repetition. Each
//! checks what the ggml function (ggml.c, llama-cpp-sys-2 0.1.161) asserts before calling it,
//! and what the CPU kernel needs of its operand types.
use super::context::{Context, Tensor};
use super::{sys, Error, Result, Type};

fn f32_operand(op: &'static str, t: Tensor<'_>) -> Result<()> {
    if t.ty() != Type::F32 {
        return Err(Error::WrongTensorType {
            name: format!("{} ({op})", t.name()),
            expected: "f32",
            actual: t.ty().name().into(),
        });
    }
    Ok(())
}

impl Context {
    /// For each token `t` and slot `j`, `as[ids[j, t]] · b[:, j mod b.ne1, t]`: `as`
    /// `[k, m, n_expert]` (one matrix per expert), `b` `[k, n_b, n_tokens]` f32, `ids` i32
    /// `[n_used, n_tokens]` → `[m, n_used, n_tokens]` f32. ggml's CPU kernel reads the
    /// expert index unchecked: crate-internal, callers take `ids` from a top-k over
    /// `n_expert` scores.
    pub(crate) fn mul_mat_id<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>, ids: Tensor<'s>) -> Result<Tensor<'s>> {
        let (na, nb, ni) = (a.ne(), b.ne(), ids.ne());
        if !a.ty().is_matmul_weight() || ids.ty() != Type::I32 {
            return Err(Error::WrongTensorType {
                name: a.name(),
                expected: "float or quantised experts with i32 expert ids",
                actual: format!("{} with {} ids", a.ty(), ids.ty()),
            });
        }
        f32_operand("ggml_mul_mat_id", b)?;
        // SAFETY: pure layout query on a live tensor.
        let transposed = unsafe { sys::ggml_is_transposed(a.as_ptr()) };
        let ok = !transposed
            && na[3] == 1
            && nb[3] == 1
            && ni[2] == 1
            && ni[3] == 1
            && ni[1] == nb[2]
            && na[0] == nb[0]
            && ni[0] % nb[1] == 0;
        if !ok {
            return Err(Self::shape_err("ggml_mul_mat_id", a, b, "experts [k, m, E], b [k, n, T], ids [n_used, T]"));
        }
        self.prepare(&[a, b, ids])?;
        // SAFETY: every assert of ggml_mul_mat_id is checked above.
        self.wrap(
            unsafe { sys::ggml_mul_mat_id(self.as_ptr(), a.as_ptr(), b.as_ptr(), ids.as_ptr()) },
            "ggml_mul_mat_id",
        )
    }

    /// Indices of the `k` largest entries of each row of `a` (f32), largest first: i32
    /// `[k, rows…]`, a view of a full descending argsort (`ggml_argsort_top_k`).
    pub fn argsort_top_k<'s>(&'s self, a: Tensor<'s>, k: i32) -> Result<Tensor<'s>> {
        f32_operand("ggml_argsort_top_k", a)?;
        if k < 1 || i64::from(k) > a.ne()[0] || a.ne()[0] > i64::from(i32::MAX) {
            return Err(Error::OutOfRange { what: "top-k", value: k.to_string(), why: "must be 1 to the row length" });
        }
        self.prepare(&[a])?;
        // SAFETY: 1 ≤ k ≤ ne[0] ≤ INT32_MAX, the asserts of ggml_argsort and ggml_argsort_top_k.
        self.wrap(unsafe { sys::ggml_argsort_top_k(self.as_ptr(), a.as_ptr(), k) }, "ggml_argsort_top_k")
    }

    /// The sum of each row of `a` (f32): `[1, ne1, ne2, ne3]`.
    pub fn sum_rows<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        f32_operand("ggml_sum_rows", a)?;
        self.prepare(&[a])?;
        // SAFETY: ggml_sum_rows asserts nothing; the CPU kernel takes f32 (checked).
        self.wrap(unsafe { sys::ggml_sum_rows(self.as_ptr(), a.as_ptr()) }, "ggml_sum_rows")
    }

    /// `a` clamped to `[min, max]` element-wise (f32).
    pub fn clamp<'s>(&'s self, a: Tensor<'s>, min: f32, max: f32) -> Result<Tensor<'s>> {
        f32_operand("ggml_clamp", a)?;
        if min.is_nan() || max.is_nan() || min > max {
            return Err(Error::OutOfRange {
                what: "clamp bounds",
                value: format!("{min}..{max}"),
                why: "need min ≤ max",
            });
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_clamp asserts nothing; f32 operand checked.
        self.wrap(unsafe { sys::ggml_clamp(self.as_ptr(), a.as_ptr(), min, max) }, "ggml_clamp")
    }

    /// Element-wise `a / b`, `b` broadcast to `a` (f32).
    pub fn div<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        f32_operand("ggml_div", a)?;
        f32_operand("ggml_div", b)?;
        // SAFETY: pure shape query.
        if !unsafe { sys::ggml_can_repeat(b.as_ptr(), a.as_ptr()) } {
            return Err(Self::shape_err("ggml_div", a, b, "b does not broadcast to a"));
        }
        self.prepare(&[a, b])?;
        // SAFETY: ggml_div's only assert (b repeats to a) is checked above.
        self.wrap(unsafe { sys::ggml_div(self.as_ptr(), a.as_ptr(), b.as_ptr()) }, "ggml_div")
    }

    /// `a` tiled to `ne` (each of `ne` a multiple of `a`'s size in that dimension).
    pub fn repeat_4d<'s>(&'s self, a: Tensor<'s>, ne: [i64; 4]) -> Result<Tensor<'s>> {
        f32_operand("ggml_repeat_4d", a)?;
        let na = a.ne();
        if ne.iter().zip(&na).any(|(&n, &m)| n < 1 || n % m != 0) {
            return Err(Error::BadDims { dims: ne.to_vec(), why: "repeat needs multiples of the source's sizes" });
        }
        self.prepare(&[a])?;
        // SAFETY: can_repeat checked above.
        self.wrap(
            unsafe { sys::ggml_repeat_4d(self.as_ptr(), a.as_ptr(), ne[0], ne[1], ne[2], ne[3]) },
            "ggml_repeat_4d",
        )
    }
}
