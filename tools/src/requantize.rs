//! GGUF → GGUF to another type or mix (`gemma quantize`), like llama.cpp's `llama-quantize`:
//! every key is kept (the file type and provenance updated), tensors keep their names and
//! order, each is dequantised to f32 with ggml and quantised again with ggml.
//!
//! Sources in f32, f16, bf16 or q8_0 are fine. From anything coarser the result carries
//! two rounding errors; that needs `allow_requantize` and gets a warning.
use crate::error::{Error, Result};
use crate::mix::{OutType, Override, Planner};
use crate::output::check_output;
use crate::pipeline::{self, Planned, RunOptions, Source, Summary};
use gemma_gguf::ggml::{dequantize_rows, Type};
use gemma_gguf::gguf::{GgufFile, GgufValue, TensorInfo};
use gemma_gguf::names::{arch_key, general, llm};
use std::path::Path;
use std::time::Instant;

/// `gemma quantize` options.
#[derive(Clone)]
pub struct RequantizeOptions {
    pub out_type: OutType,
    pub overrides: Vec<Override>,
    pub force: bool,
    /// Allow sources coarser than q8_0 (warned about).
    pub allow_requantize: bool,
    pub run: RunOptions,
}

/// Types a requantisation may start from without `allow_requantize`.
fn fine_source(t: Type) -> bool {
    t == Type::F32 || t == Type::F16 || t == Type::BF16 || t == Type::Q8_0
}

/// Requantises `input` into `output`.
pub fn requantize(input: &Path, output: &Path, opts: &RequantizeOptions) -> Result<Summary> {
    let t0 = Instant::now();
    check_output(output, &[input], opts.force)?;
    let file = GgufFile::open(input)?;
    let arch = file.get_str(general::ARCHITECTURE)?.to_owned();
    let n_layer = file.get_u32(&arch_key(&arch, llm::BLOCK_COUNT))? as usize;
    let expert_key = arch_key(&arch, llm::EXPERT_COUNT);
    let n_expert = if file.get(&expert_key).is_some() { file.get_u32(&expert_key)? as usize } else { 0 };
    let mut planner =
        Planner::new(file.tensors().iter().map(|t| t.name.as_str()), opts.out_type, &opts.overrides, n_layer, n_expert);

    let mut warnings = Vec::new();
    let mut plan = Vec::with_capacity(file.tensors().len());
    for info in file.tensors() {
        let src = Type::from_id(info.ggml_type.id())?;
        let choice = planner.choose(&info.name, &info.dims);
        let copy = choice.ty == src;
        if !copy && !fine_source(src) {
            if !opts.allow_requantize {
                return Err(Error::LowPrecisionSource { tensor: info.name.clone(), from: src.name().to_owned() });
            }
            if warnings.is_empty() {
                warnings.push(format!(
                    "requantising from {} (`{}` and others): quality is lower than converting from the original weights",
                    src.name(),
                    info.name
                ));
            }
        }
        plan.push(Planned {
            name: info.name.clone(),
            ne: info.dims.clone(),
            ty: choice.ty,
            reason: if copy { format!("{}; already {}: copied", choice.reason, src.name()) } else { choice.reason },
            source_type: src.name().to_ascii_lowercase(),
            copy,
        });
    }
    let mut metadata: Vec<(String, GgufValue)> = file
        .metadata()
        .filter(|(k, _)| {
            !matches!(*k, general::FILE_TYPE | general::QUANTIZATION_VERSION | general::QUANTIZED_BY)
                && !k.starts_with("split.")
        })
        .map(|(k, v)| (k.to_owned(), v.clone()))
        .collect();
    metadata
        .push((general::QUANTIZED_BY.into(), GgufValue::String(format!("gemma-gguf {}", env!("CARGO_PKG_VERSION")))));
    metadata.push((general::QUANTIZATION_VERSION.into(), GgufValue::U32(2)));
    metadata.push((general::FILE_TYPE.into(), GgufValue::U32(opts.out_type.llama_ftype())));

    let infos: Vec<&TensorInfo> = file.tensors().iter().collect();
    let source = GgufSource { file: &file, infos: &infos };
    let (path, tensors) = pipeline::run(output, metadata, &plan, &source, &opts.run)?;
    Ok(Summary { warnings, ..Summary::of(path, opts.out_type, &plan, tensors, t0) })
}

struct GgufSource<'a> {
    file: &'a GgufFile,
    infos: &'a [&'a TensorInfo],
}

impl GgufSource<'_> {
    fn rows(&self, i: usize, row0: usize, n: usize) -> Result<(&[u8], Type)> {
        let info = self.infos[i];
        let ty = Type::from_id(info.ggml_type.id())?;
        let row = ty.row_size(info.dims[0] as i64)?;
        let data = self.file.tensor_data(info)?;
        let bytes = data.get(row0 * row..(row0 + n) * row).ok_or_else(|| Error::Shape {
            tensor: info.name.clone(),
            what: format!("rows {row0}..{} are outside its data", row0 + n),
        })?;
        Ok((bytes, ty))
    }
}

impl Source for GgufSource<'_> {
    fn read_rows(&self, i: usize, row0: usize, out: &mut [f32]) -> Result<()> {
        let ne0 = self.infos[i].dims[0] as usize;
        let (bytes, ty) = self.rows(i, row0, out.len() / ne0)?;
        let f = dequantize_rows(ty, bytes, ne0)?;
        out.copy_from_slice(&f);
        Ok(())
    }

    fn raw_rows(&self, i: usize, row0: usize, n: usize) -> Result<Vec<u8>> {
        Ok(self.rows(i, row0, n)?.0.to_vec())
    }

    fn release_rows(&self, i: usize, row0: usize, n: usize) {
        // Once the tensor's last rows are read, its pages go back as a whole.
        let info = self.infos[i];
        let n_rows = info.dims[1..].iter().product::<u64>() as usize;
        if row0 + n >= n_rows {
            self.file.release_tensor_data(info);
        }
    }
}
