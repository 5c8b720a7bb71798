//! The element-wise and row-statistics operations Gemma 3n's graph needs besides the common
//! ones: squares and square roots (vector magnitudes of the AltUp streams), row means,
//! subtraction and ReLU (the Gaussian top-k of activation sparsity), `a·s + b`, and
//! concatenation of the streams. Each checks what the ggml function (ggml.c) and its CPU
//! kernel (ggml-cpu/unary-ops.cpp, binary-ops.cpp, ops.cpp; llama-cpp-sys-2 0.1.161) assert
//! before calling it.
use super::context::{Context, Tensor};
use super::{sys, Error, Result, Type};

fn f32_rows(op: &'static str, t: Tensor<'_>) -> Result<()> {
    if t.ty() != Type::F32 {
        return Err(Error::WrongTensorType {
            name: format!("{} ({op})", t.name()),
            expected: "f32",
            actual: t.ty().name().into(),
        });
    }
    // SAFETY: pure layout query on a live tensor.
    if !unsafe { sys::ggml_is_contiguous_1(t.as_ptr()) } {
        return Err(Context::shape_err(op, t, t, "rows must be contiguous"));
    }
    Ok(())
}

type Unary = unsafe extern "C" fn(*mut sys::ggml_context, *mut sys::ggml_tensor) -> *mut sys::ggml_tensor;

impl Context {
    fn unary_f32<'s>(&'s self, op: &'static str, f: Unary, a: Tensor<'s>) -> Result<Tensor<'s>> {
        f32_rows(op, a)?;
        self.prepare(&[a])?;
        // SAFETY: `f` is one of ggml_sqr, ggml_sqrt, ggml_relu, ggml_mean: no asserts in
        // ggml.c; their CPU kernels need f32 contiguous rows, checked above.
        self.wrap(unsafe { f(self.as_ptr(), a.as_ptr()) }, op)
    }

    /// `a²` element-wise (f32).
    pub fn sqr<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        self.unary_f32("ggml_sqr", sys::ggml_sqr, a)
    }

    /// `√a` element-wise (f32).
    pub fn sqrt<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        self.unary_f32("ggml_sqrt", sys::ggml_sqrt, a)
    }

    /// `max(a, 0)` element-wise (f32).
    pub fn relu<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        self.unary_f32("ggml_relu", sys::ggml_relu, a)
    }

    /// The mean of each row of `a` (f32): `[1, ne1, ne2, ne3]`.
    pub fn mean<'s>(&'s self, a: Tensor<'s>) -> Result<Tensor<'s>> {
        self.unary_f32("ggml_mean", sys::ggml_mean, a)
    }

    /// Element-wise `a − b`, `b` broadcast to `a` (f32).
    pub fn sub<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>) -> Result<Tensor<'s>> {
        for t in [a, b] {
            if t.ty() != Type::F32 {
                let name = format!("{} (ggml_sub)", t.name());
                return Err(Error::WrongTensorType { name, expected: "f32", actual: t.ty().name().into() });
            }
        }
        // SAFETY: pure shape query.
        if !unsafe { sys::ggml_can_repeat(b.as_ptr(), a.as_ptr()) } {
            return Err(Self::shape_err("ggml_sub", a, b, "b does not broadcast to a"));
        }
        self.prepare(&[a, b])?;
        // SAFETY: ggml_sub's only assert (b repeats to a) is checked above.
        self.wrap(unsafe { sys::ggml_sub(self.as_ptr(), a.as_ptr(), b.as_ptr()) }, "ggml_sub")
    }

    /// `a · s + b` element-wise (`ggml_scale_bias`).
    pub fn scale_bias<'s>(&'s self, a: Tensor<'s>, s: f32, b: f32) -> Result<Tensor<'s>> {
        let (ne, nb) = (a.ne(), a.nb());
        let padded_1d =
            nb[0] == a.ty().type_size() && nb[2] == nb[1] * ne[1] as usize && nb[3] == nb[2] * ne[2] as usize;
        if !padded_1d || a.ty() != Type::F32 {
            return Err(Self::shape_err("ggml_scale_bias", a, a, "f32 with packed rows (make it contiguous first)"));
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_scale_impl asserts only the packing checked above.
        self.wrap(unsafe { sys::ggml_scale_bias(self.as_ptr(), a.as_ptr(), s, b) }, "ggml_scale_bias")
    }

    /// `a` and `b` (f32) joined along dimension `dim` (0 to 3); every other size must match.
    pub fn concat<'s>(&'s self, a: Tensor<'s>, b: Tensor<'s>, dim: usize) -> Result<Tensor<'s>> {
        let (na, nb) = (a.ne(), b.ne());
        if dim > 3 || (0..4).any(|d| d != dim && na[d] != nb[d]) {
            return Err(Self::shape_err("ggml_concat", a, b, "sizes must match outside the joined dimension"));
        }
        if a.ty() != Type::F32 || b.ty() != Type::F32 {
            return Err(Error::WrongTensorType {
                name: format!("{} (ggml_concat)", a.name()),
                expected: "f32 and f32",
                actual: format!("{} and {}", a.ty(), b.ty()),
            });
        }
        self.prepare(&[a, b])?;
        // SAFETY: dim < 4, equal types and the other sizes equal: ggml_concat's asserts.
        self.wrap(unsafe { sys::ggml_concat(self.as_ptr(), a.as_ptr(), b.as_ptr(), dim as i32) }, "ggml_concat")
    }
}
