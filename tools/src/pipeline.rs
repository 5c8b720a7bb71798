//! The one-pass writer shared by `convert` and `requantize`: declare every key and tensor,
//! then stream each tensor through f32 in chunks of rows, quantised in parallel, into the
//! output file.
//!
//! Memory: one chunk of at most [`CHUNK_BYTES`] of f32 rows plus its quantised copy is in
//! memory at a time, and the source pages of each chunk are given back once read, so the
//! peak stays near the chunk size plus the metadata, whatever the model's size.
use crate::error::{Error, Result};
use gemma_gguf::ggml::{quantize_rows, Type};
use gemma_gguf::gguf::{GgmlType, GgufValue, GgufWriter, TempFileSink};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// f32 bytes converted per step (and the order of the extra memory a conversion needs).
pub const CHUNK_BYTES: usize = 64 << 20;

/// One output tensor: its name, dims (ggml order), type, and how to fill it.
pub struct Planned {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: Type,
    pub reason: String,
    /// Where the values come from, for the summary (`bf16`, `q8_0`…).
    pub source_type: String,
    /// Copy the source bytes unchanged (same type, no transform).
    pub copy: bool,
}

impl Planned {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    pub fn n_bytes(&self) -> u64 {
        let row = self.ty.row_size(self.ne[0] as i64).unwrap_or(0) as u64;
        row * self.ne[1..].iter().product::<u64>()
    }
}

/// Reads source values for planned tensors.
pub trait Source: Sync {
    /// Fills `out` with the f32 values of rows `row0..row0 + out.len() / ne0` of tensor `i`
    /// (transforms such as the norms' +1 applied).
    fn read_rows(&self, i: usize, row0: usize, out: &mut [f32]) -> Result<()>;
    /// The raw bytes of rows `row0..row0 + n` when the tensor is copied unchanged.
    fn raw_rows(&self, i: usize, row0: usize, n: usize) -> Result<Vec<u8>>;
    /// Gives back the source pages of those rows.
    fn release_rows(&self, i: usize, row0: usize, n: usize);
}

/// Options common to convert and requantise.
#[derive(Clone, Default)]
pub struct RunOptions {
    /// Show a progress bar on stderr (hidden anyway when stderr is not a terminal).
    pub progress: bool,
    /// Set from a Ctrl-C handler: the conversion stops, removes its temporary file and
    /// returns [`Error::Cancelled`].
    pub cancel: Option<Arc<AtomicBool>>,
    /// rayon threads for quantisation (0: rayon's default, one per core).
    pub threads: usize,
}

/// Per-tensor line of the summary.
#[derive(Clone, Debug)]
pub struct TensorReport {
    pub name: String,
    pub ne: Vec<u64>,
    pub source_type: String,
    pub ty: String,
    pub reason: String,
    pub bytes: u64,
}

/// What a conversion did.
#[derive(Clone, Debug)]
pub struct Summary {
    pub output: PathBuf,
    pub out_type: String,
    pub tensors: Vec<TensorReport>,
    pub n_params: u64,
    pub tensor_bytes: u64,
    pub file_bytes: u64,
    pub seconds: f64,
    pub warnings: Vec<String>,
    /// Source tensors not written, and why (`lm_head.weight`: tied to the embedding…).
    pub skipped: Vec<String>,
}

impl Summary {
    /// The summary of a finished run (no warnings, nothing skipped).
    pub fn of(
        output: PathBuf,
        out_type: crate::mix::OutType,
        plan: &[Planned],
        tensors: Vec<TensorReport>,
        t0: Instant,
    ) -> Summary {
        Summary {
            file_bytes: std::fs::metadata(&output).map(|m| m.len()).unwrap_or(0),
            output,
            out_type: out_type.name(),
            n_params: plan.iter().map(|t| t.n_elements()).sum(),
            tensor_bytes: plan.iter().map(|t| t.n_bytes()).sum(),
            tensors,
            seconds: elapsed(t0),
            warnings: Vec::new(),
            skipped: Vec::new(),
        }
    }

    /// Bits per weight over all tensors.
    pub fn bits_per_weight(&self) -> f64 {
        self.tensor_bytes as f64 * 8.0 / self.n_params.max(1) as f64
    }

    /// The per-tensor table (types, reasons, sizes) and totals, for the terminal.
    pub fn table(&self) -> String {
        use std::fmt::Write as _;
        let mut s = String::new();
        let w = self.tensors.iter().map(|t| t.name.len()).max().unwrap_or(4).max(6);
        let _ = writeln!(s, "{:<w$}  {:>16}  {:>6}  {:>6}  {:>10}  why", "tensor", "shape", "from", "type", "MiB");
        for t in &self.tensors {
            let shape = t.ne.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("×");
            let _ = writeln!(
                s,
                "{:<w$}  {:>16}  {:>6}  {:>6}  {:>10.2}  {}",
                t.name,
                shape,
                t.source_type,
                t.ty,
                t.bytes as f64 / (1 << 20) as f64,
                t.reason
            );
        }
        let mut by_type: Vec<(String, usize, u64)> = Vec::new();
        for t in &self.tensors {
            match by_type.iter_mut().find(|(ty, _, _)| *ty == t.ty) {
                Some(e) => {
                    e.1 += 1;
                    e.2 += t.bytes;
                }
                None => by_type.push((t.ty.clone(), 1, t.bytes)),
            }
        }
        let types = by_type
            .iter()
            .map(|(t, n, b)| format!("{t} ×{n} ({:.1} MiB)", *b as f64 / (1 << 20) as f64))
            .collect::<Vec<_>>();
        let _ = writeln!(s, "types: {}", types.join(", "));
        let _ = writeln!(
            s,
            "{} tensors, {:.1} M parameters, {:.2} bits per weight, file {:.1} MiB, {:.1} s",
            self.tensors.len(),
            self.n_params as f64 / 1e6,
            self.bits_per_weight(),
            self.file_bytes as f64 / (1 << 20) as f64,
            self.seconds
        );
        for sk in &self.skipped {
            let _ = writeln!(s, "not written: {sk}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        s
    }
}

/// Writes `metadata` and `plan` to `output` from `source`.
pub fn run(
    output: &Path,
    metadata: Vec<(String, GgufValue)>,
    plan: &[Planned],
    source: &dyn Source,
    opts: &RunOptions,
) -> Result<(PathBuf, Vec<TensorReport>)> {
    let sink = TempFileSink::verified(output, plan.len())?;
    let mut w = GgufWriter::with_sink(sink);
    for (k, v) in metadata {
        w.add_kv(&k, v)?;
    }
    for t in plan {
        let gty =
            GgmlType::from_u32(t.ty.id()).map_err(|e| Error::Shape { tensor: t.name.clone(), what: e.to_string() })?;
        w.add_tensor_info(&t.name, &t.ne, gty)?;
    }
    let total: u64 = plan.iter().map(|t| t.n_bytes()).sum();
    let bar = progress_bar(opts.progress, total);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads)
        .build()
        .map_err(|e| Error::Output { path: output.to_owned(), what: format!("thread pool: {e}") })?;

    let mut reports = Vec::with_capacity(plan.len());
    for (i, t) in plan.iter().enumerate() {
        bar.set_message(format!("{}/{} {}", i + 1, plan.len(), t.name));
        let ne0 = t.ne[0] as usize;
        let n_rows = (t.n_elements() / t.ne[0].max(1)) as usize;
        let rows_per_chunk = (CHUNK_BYTES / (ne0 * 4).max(1)).max(1);
        let mut row0 = 0;
        while row0 < n_rows {
            if opts.cancel.as_ref().is_some_and(|c| c.load(Ordering::Relaxed)) {
                bar.abandon_with_message("interrupted");
                return Err(Error::Cancelled);
            }
            let n = rows_per_chunk.min(n_rows - row0);
            let bytes = if t.copy {
                source.raw_rows(i, row0, n)?
            } else {
                let mut f = vec![0f32; n * ne0];
                source.read_rows(i, row0, &mut f)?;
                pool.install(|| quantize_parallel(t, &f, ne0))?
            };
            source.release_rows(i, row0, n);
            w.write_tensor_part(&t.name, &bytes)?;
            bar.inc(bytes.len() as u64);
            row0 += n;
        }
        if n_rows == 0 {
            w.write_tensor_part(&t.name, &[])?;
        }
        reports.push(TensorReport {
            name: t.name.clone(),
            ne: t.ne.clone(),
            source_type: t.source_type.clone(),
            ty: t.ty.name().to_ascii_lowercase(),
            reason: t.reason.clone(),
            bytes: t.n_bytes(),
        });
    }
    bar.finish_and_clear();
    let path = w.finish()?;
    Ok((path, reports))
}

/// Quantises rows of `f` in parallel pieces; the result is the same bytes as one call.
fn quantize_parallel(t: &Planned, f: &[f32], ne0: usize) -> Result<Vec<u8>> {
    let n_rows = f.len() / ne0;
    let pieces = (rayon::current_num_threads() * 4).max(1);
    let rows_per_piece = n_rows.div_ceil(pieces).max(1);
    let parts: Vec<Result<Vec<u8>>> = f
        .par_chunks(rows_per_piece * ne0)
        .map(|rows| {
            quantize_rows(t.ty, rows, ne0).map_err(|e| Error::Shape { tensor: t.name.clone(), what: e.to_string() })
        })
        .collect();
    let mut out = Vec::with_capacity(t.ty.row_size(ne0 as i64).unwrap_or(0) * n_rows);
    for p in parts {
        out.extend_from_slice(&p?);
    }
    Ok(out)
}

fn progress_bar(show: bool, total: u64) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {wide_bar} {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta}) {msg}",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar
}

/// Seconds since `t`.
pub fn elapsed(t: Instant) -> f64 {
    t.elapsed().as_secs_f64()
}
