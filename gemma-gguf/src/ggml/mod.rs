//! The safe layer over ggml. All of the crate's `unsafe` lives in this module.
//!
//! Conventions (as in ggml): dimension 0 is the row length (`ne[0]`), shapes are listed
//! innermost first, and `mul_mat(a, b)` computes `b · aᵀ`: for `a` of shape `[k, m]` and
//! `b` of shape `[k, n]` the result is `[m, n]`.
//!
//! Ownership follows ggml's own (see `ggml-cpp.h`): contexts, backends, buffers and graph
//! allocators are owning handles with `Drop`; tensors and graphs are borrowed from their
//! [`Context`] and cannot outlive it. Every buffer that backs a context's tensors is owned by
//! that context, so a tensor's data lives exactly as long as the tensor handle can.
//!
//! No safe function here may abort the process: ggml `GGML_ASSERT`s on bad shapes, types and
//! names, so each wrapper re-checks those conditions in Rust first and returns an [`Error`].

mod backend;
mod context;
mod gemv;
mod ops;
mod quant;
mod reference;
mod routing;
mod sched;
mod stats;
mod system;
mod types;
mod vision_ops;

pub use backend::{Backend, BufferType, Device, DeviceKind};
pub use context::{Context, Graph, GraphId, Rope, Tensor, TensorId};
pub use quant::{can_quantize, dequantize_rows, q5_0_widened_len, quantize_rows, widen_q5_0_to_q8_0};
pub use reference::{ggml_gguf_parse, set_logging};
pub use sched::Scheduler;
pub use system::{backend_features, build_info, default_threads, ggml_version, BackendFeature, BuildInfo};
pub use types::Type;

// The backends compiled in and their device counts (`gemma system`, "no such device").
pub use system::{backends, BackendReg};

pub(crate) use ggml_sys as sys;

use crate::error::{Error, Result};
