//! Operations the vision encoder needs beyond the text models': layer norm and average
//! pooling. Each checks what the ggml function (or its CPU kernel) asserts before calling it.
use super::context::{Context, Tensor};
use super::{sys, Error, Result, Type};

impl Context {
    /// Layer norm over rows without weights (`ggml_norm`): `(x − mean) / sqrt(var + eps)`.
    /// F32 only (the CPU kernel aborts on other types).
    pub fn norm<'s>(&'s self, a: Tensor<'s>, eps: f32) -> Result<Tensor<'s>> {
        if !(eps.is_finite() && eps >= 0.0) {
            return Err(Error::OutOfRange {
                what: "norm eps", value: eps.to_string(), why: "must be finite and ≥ 0"
            });
        }
        if a.ty() != Type::F32 {
            return Err(Error::WrongTensorType { name: a.name(), expected: "f32", actual: a.ty().name().into() });
        }
        self.prepare(&[a])?;
        // SAFETY: ggml_norm has no asserts beyond a live tensor; the CPU kernel's type is checked.
        self.wrap(unsafe { sys::ggml_norm(self.as_ptr(), a.as_ptr(), eps) }, "ggml_norm")
    }

    /// Average pooling over dims 0 and 1 with a `k`×`k` window and stride `k`, no padding
    /// (`ggml_pool_2d`, `GGML_OP_POOL_AVG`): `[w, h, c, n]` → `[w/k, h/k, c, n]` (F32).
    /// `a` must be contiguous F32 or F16 with `w` and `h` multiples of `k`.
    pub fn pool_2d_avg<'s>(&'s self, a: Tensor<'s>, k: i32) -> Result<Tensor<'s>> {
        let ne = a.ne();
        // SAFETY: pure layout query on a live tensor.
        let contiguous = unsafe { sys::ggml_is_contiguous(a.as_ptr()) };
        let float = a.ty() == Type::F32 || a.ty() == Type::F16;
        if k < 1 || ne[0] % k as i64 != 0 || ne[1] % k as i64 != 0 || !contiguous || !float {
            return Err(Self::shape_err(
                "ggml_pool_2d",
                a,
                a,
                "needs a contiguous f32/f16 tensor whose dims 0 and 1 are multiples of the kernel",
            ));
        }
        self.prepare(&[a])?;
        // SAFETY: the CPU kernel reads contiguous f32/f16 planes (checked); output sizes are
        // positive since k divides both dims.
        self.wrap(
            unsafe { sys::ggml_pool_2d(self.as_ptr(), a.as_ptr(), sys::GGML_OP_POOL_AVG, k, k, k, k, 0.0, 0.0) },
            "ggml_pool_2d",
        )
    }
}

impl Context {
    /// Makes the rope node `a` rotate dims `n_offs .. n_offs + n_dims` instead of
    /// `0 .. n_dims` (`ggml_rope_set_offset`; the rest are copied). Gemma 4's vision tower
    /// rotates the first half of each head by the x position and the second by the y one
    /// (clip.cpp's gemma4v graph). Checks what ggml and its CPU kernel assert: `a` is a rope
    /// node (not the vision mode), `n_offs` even and ≥ 0, `n_offs + n_dims ≤ ne0`.
    pub fn rope_set_offset<'s>(&'s self, a: Tensor<'s>, n_offs: i32) -> Result<Tensor<'s>> {
        // SAFETY: reads the op and op params of a live tensor of this context.
        let (op, mode, n_dims) = unsafe {
            let t = &*a.as_ptr();
            (t.op, t.op_params[2], t.op_params[1])
        };
        if op != sys::GGML_OP_ROPE
            || mode == sys::GGML_ROPE_TYPE_VISION as i32
            || n_offs < 0
            || n_offs % 2 != 0
            || i64::from(n_offs) + i64::from(n_dims) > a.ne()[0]
        {
            return Err(Self::shape_err(
                "ggml_rope_set_offset",
                a,
                a,
                "needs a (non-vision) rope node and an even offset with offset + n_dims ≤ ne0",
            ));
        }
        // SAFETY: the asserts of ggml_rope_set_offset and the kernel's are checked above; it
        // writes one op parameter of `a` and returns it.
        self.wrap(unsafe { sys::ggml_rope_set_offset(a.as_ptr(), n_offs) }, "ggml_rope_set_offset")
    }
}
