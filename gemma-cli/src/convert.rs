//! `gemma convert` and `gemma quantize`: the converter (crate `gemma-tools`) on the command
//! line, with a progress bar, the per-tensor summary table, and Ctrl-C that leaves nothing.
use anyhow::{Context, Result};
use clap::Args as ClapArgs;
use gemma_tools::{ConvertOptions, OutType, Override, RequantizeOptions, RunOptions, Summary};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn type_help() -> String {
    let names: Vec<String> = gemma_tools::TYPE_NAMES.iter().map(|(n, what)| format!("  {n:<7} {what}")).collect();
    format!("Output type or mix (default {}):\n{}", gemma_tools::DEFAULT_TYPE, names.join("\n"))
}

/// Flags shared by convert and quantize.
#[derive(ClapArgs)]
pub struct Common {
    /// Output type or mix; see --help for the list.
    #[arg(long = "type", short = 't', default_value = gemma_tools::DEFAULT_TYPE, long_help = type_help())]
    out_type: String,
    /// Override the type of matrices whose GGUF name matches a regular expression, e.g.
    /// `--tensor-type 'ffn_down=q6_k'` (repeatable; the first match wins; rows that do not fit
    /// the type still fall back as in the mixes).
    #[arg(long = "tensor-type", value_name = "PATTERN=TYPE")]
    tensor_type: Vec<String>,
    /// Replace the output file if it exists (never the input).
    #[arg(long)]
    force: bool,
    /// Threads for quantisation (default: all cores).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar and no summary table; print only the output path.
    #[arg(long, short = 'q')]
    quiet: bool,
}

impl Common {
    fn parse(&self) -> Result<(OutType, Vec<Override>, RunOptions)> {
        let out_type = OutType::parse(&self.out_type)?;
        let overrides = self.tensor_type.iter().map(|s| Override::parse(s)).collect::<Result<Vec<_>, _>>()?;
        let cancel = Arc::new(AtomicBool::new(false));
        let flag = cancel.clone();
        // Ctrl-C: finish the current chunk, remove the temporary file, exit with an error.
        ctrlc::set_handler(move || flag.store(true, Ordering::Relaxed)).context("installing the Ctrl-C handler")?;
        let run = RunOptions { progress: !self.quiet, cancel: Some(cancel), threads: self.threads };
        Ok((out_type, overrides, run))
    }

    fn report(&self, s: &Summary) {
        if !self.quiet {
            eprint!("{}", s.table());
            if let Some((peak, _)) = crate::common::rss() {
                eprintln!("peak RSS {:.1} MiB", peak as f64 / (1u64 << 20) as f64);
            }
        } else {
            for w in &s.warnings {
                eprintln!("warning: {w}");
            }
        }
        println!("{}", s.output.display());
    }
}

/// `gemma convert HF_DIR -o OUT.gguf --type TYPE`
#[derive(ClapArgs)]
pub struct ConvertArgs {
    /// A Hugging Face model directory: config.json, model.safetensors (or sharded
    /// model-*.safetensors with model.safetensors.index.json), tokenizer.json or
    /// tokenizer.model, and optionally tokenizer_config.json / chat_template.jinja.
    hf_dir: PathBuf,
    /// The GGUF file to write.
    #[arg(long, short = 'o')]
    output: PathBuf,
    /// `general.name` in the file (default: the directory's name).
    #[arg(long)]
    name: Option<String>,
    /// Also write the vision encoder and projector of a Gemma3ForConditionalGeneration
    /// checkpoint to this file, in llama.cpp's mmproj layout (written first).
    #[arg(long, value_name = "OUT")]
    mmproj: Option<PathBuf>,
    /// Type of the projector file's matrices: f32, f16, bf16 or q8_0.
    #[arg(long, default_value = "f16", requires = "mmproj")]
    mmproj_type: String,
    #[command(flatten)]
    common: Common,
}

pub fn run_convert(args: ConvertArgs) -> Result<()> {
    let (out_type, overrides, run) = args.common.parse()?;
    if let Some(mmproj) = &args.mmproj {
        let opts = gemma_tools::MmprojOptions {
            ty: OutType::parse(&args.mmproj_type)?,
            force: args.common.force,
            run: run.clone(),
            name: None,
        };
        let summary = gemma_tools::convert_mmproj(&args.hf_dir, mmproj, &opts)
            .with_context(|| format!("writing the projector of {}", args.hf_dir.display()))?;
        args.common.report(&summary);
    }
    let opts = ConvertOptions { out_type, overrides, force: args.common.force, run, name: args.name.clone() };
    let summary = gemma_tools::convert_hf(&args.hf_dir, &args.output, &opts)
        .with_context(|| format!("converting {}", args.hf_dir.display()))?;
    args.common.report(&summary);
    Ok(())
}

/// `gemma quantize IN.gguf OUT.gguf --type TYPE`
#[derive(ClapArgs)]
pub struct QuantizeArgs {
    /// The GGUF to read (f32, f16, bf16 or q8_0 tensors; others need --allow-requantize).
    input: PathBuf,
    /// The GGUF to write.
    output: PathBuf,
    /// Allow requantising tensors stored in types coarser than q8_0 (quality suffers: two
    /// rounding errors instead of one).
    #[arg(long)]
    allow_requantize: bool,
    #[command(flatten)]
    common: Common,
}

pub fn run_quantize(args: QuantizeArgs) -> Result<()> {
    let (out_type, overrides, run) = args.common.parse()?;
    let opts = RequantizeOptions {
        out_type,
        overrides,
        force: args.common.force,
        allow_requantize: args.allow_requantize,
        run,
    };
    let summary = gemma_tools::requantize(&args.input, &args.output, &opts)
        .with_context(|| format!("requantising {}", args.input.display()))?;
    args.common.report(&summary);
    Ok(())
}
