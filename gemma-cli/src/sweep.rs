//! `gemma sweep`: convert a Hugging Face checkpoint to several types, compare each with the
//! highest-precision one, and recommend the smallest file within a KL-divergence budget.
use crate::compare::{self, base_report, record_base, Report};
use crate::perplexity::{read_text, EvalArgs};
use anyhow::{bail, Context as _, Result};
use gemma_gguf::quality::DEFAULT_TOP_K;
use gemma_tools::{convert_hf, ConvertOptions, OutType, RunOptions};
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Hugging Face checkpoint folder (config.json, safetensors, tokenizer files).
    pub dir: PathBuf,
    /// Types to make, comma-separated (gemma convert's --type names: f16, bf16, q8_0,
    /// q4_k_m, q4_k, q4_0…). The highest-precision file becomes the base.
    #[arg(long = "types", value_delimiter = ',', default_value = "f16,q8_0,q4_k_m,q4_k")]
    pub types: Vec<String>,
    /// The text (UTF-8) to compare on.
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Folder for the converted files, named DIRNAME-TYPE.gguf. Files already there are
    /// reused unless --force.
    #[arg(short = 'o', long = "out-dir", default_value = "sweep")]
    pub out_dir: PathBuf,
    /// Convert again even when a file of that name exists.
    #[arg(long)]
    pub force: bool,
    /// The recommendation: the smallest file whose mean KL-divergence against the base is at
    /// most this.
    #[arg(long = "kl-budget", default_value_t = 0.05)]
    pub kl_budget: f64,
    /// Base tokens kept per position for the KL-divergence.
    #[arg(long = "top-k", default_value_t = DEFAULT_TOP_K)]
    pub top_k: usize,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Write the results as JSON to this file (- for stdout).
    #[arg(long = "json")]
    pub json: Option<PathBuf>,
    /// Write the results as CSV to this file (- for stdout).
    #[arg(long = "csv")]
    pub csv: Option<PathBuf>,
    /// Chart files (.svg or .png; repeat for both). Default: OUT_DIR/sweep.svg and .png.
    #[arg(long = "chart")]
    pub chart: Vec<PathBuf>,
}

/// Converts to one type (or reuses the file), returning its path.
fn convert(args: &Args, ty: OutType, stem: &str) -> Result<PathBuf> {
    let out = args.out_dir.join(format!("{stem}-{}.gguf", ty.name()));
    if out.is_file() && !args.force {
        eprintln!("reusing {} (--force converts again)", out.display());
        return Ok(out);
    }
    let opts = ConvertOptions {
        out_type: ty,
        force: args.force,
        run: RunOptions { progress: true, cancel: None, threads: args.eval.threads.unwrap_or(0) },
        ..Default::default()
    };
    let summary = convert_hf(&args.dir, &out, &opts).with_context(|| format!("converting to {}", ty.name()))?;
    for w in &summary.warnings {
        eprintln!("warning: {w}");
    }
    eprintln!(
        "{}: {:.1} MiB, {:.2} bits/weight, {:.1} s",
        out.display(),
        summary.file_bytes as f64 / (1u64 << 20) as f64,
        summary.bits_per_weight(),
        summary.seconds
    );
    Ok(out)
}

pub fn run(args: Args) -> Result<()> {
    let types =
        args.types.iter().map(|t| OutType::parse(t.trim()).map_err(anyhow::Error::from)).collect::<Result<Vec<_>>>()?;
    if types.len() < 2 {
        bail!("--types needs at least two types to compare");
    }
    if !args.kl_budget.is_finite() || args.kl_budget < 0.0 {
        bail!("--kl-budget {} must be a number ≥ 0", args.kl_budget);
    }
    let charts = if args.chart.is_empty() {
        vec![args.out_dir.join("sweep.svg"), args.out_dir.join("sweep.png")]
    } else {
        args.chart.clone()
    };
    charts.iter().try_for_each(|p| crate::chart::check_path(p))?;
    let text = read_text(&args.file)?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let stem = args.dir.canonicalize().ok().and_then(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()));
    let stem = stem.unwrap_or_else(|| "model".into());
    let mut files = Vec::new();
    for &ty in &types {
        files.push(convert(&args, ty, &stem)?);
    }
    // The base: the file with the most bits per weight.
    let bpw = |p: &Path| -> Result<f64> {
        let file = gemma_gguf::gguf::GgufFile::open(p).with_context(|| format!("reading {}", p.display()))?;
        Ok(gemma_gguf::quality::bits_per_weight(&file))
    };
    let mut by_bpw = files.iter().map(|p| Ok((bpw(p)?, p.clone()))).collect::<Result<Vec<_>>>()?;
    by_bpw.sort_by(|a, b| b.0.total_cmp(&a.0));
    let base_path = by_bpw[0].1.clone();
    eprintln!("base: {}", base_path.display());
    let base = record_base(&args.eval, &base_path, &text, args.top_k)?;
    let mut models = Vec::new();
    for (_, path) in &by_bpw[1..] {
        models.push(compare::compare_model(&args.eval, path, &base, None)?);
    }
    let report = Report { base: base_report(&base), models };
    compare::emit(&report, args.json.as_deref(), args.csv.as_deref(), &charts)?;
    let base_bytes = std::fs::metadata(&base_path).map(|m| m.len()).unwrap_or(u64::MAX);
    let pick = report
        .models
        .iter()
        .filter(|m| m.kl_mean <= args.kl_budget)
        .min_by_key(|m| m.file_bytes)
        .filter(|m| m.file_bytes < base_bytes);
    match pick {
        Some(m) => println!(
            "recommended: {} ({:.1} MiB, {:.2} bits/weight): mean KL-divergence {:.5} ≤ budget {}, top-1 agreement {:.1}%",
            m.label,
            m.file_bytes as f64 / (1u64 << 20) as f64,
            m.bits_per_weight,
            m.kl_mean,
            args.kl_budget,
            100.0 * m.top1_agreement
        ),
        None => println!(
            "recommended: {} (the base): no smaller file is within the mean KL-divergence budget {}",
            report.base.label, args.kl_budget
        ),
    }
    Ok(())
}
