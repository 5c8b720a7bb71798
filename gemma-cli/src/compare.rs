//! `gemma compare`: models against a base on the same tokens (perplexity and its ratio,
//! KL-divergence, top-token agreement), as a table, JSON, CSV and a chart. The report
//! functions are shared with `sweep`.
use crate::chart;
use crate::perplexity::{label, progress, read_text, EvalArgs};
use anyhow::{bail, Context as _, Result};
use gemma_gguf::quality::{self, BaseLogits, ComparisonSummary, DEFAULT_TOP_K};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Models to compare with the base (GGUF files of the same model family).
    pub models: Vec<PathBuf>,
    /// The reference model, normally the highest-precision file (f16, bf16, f32).
    #[arg(long = "base", required_unless_present = "base_logits")]
    pub base: Option<PathBuf>,
    /// Use the base's logits saved earlier with --save-base instead of running the base (the
    /// file holds the tokens and chunking: -c and --chunks do not apply).
    #[arg(long = "base-logits", conflicts_with_all = ["base", "save_base"])]
    pub base_logits: Option<PathBuf>,
    /// Save the base's top-k logits to this file, for later runs with --base-logits.
    #[arg(long = "save-base")]
    pub save_base: Option<PathBuf>,
    /// Base tokens kept per position (the KL-divergence is exact over these plus one bucket
    /// for the rest, a lower bound of the full value).
    #[arg(long = "top-k", default_value_t = DEFAULT_TOP_K)]
    pub top_k: usize,
    /// The text (UTF-8). Needed with --base; with --base-logits it is checked against the
    /// saved tokens when given.
    #[arg(short = 'f', long = "file", required_unless_present = "base_logits")]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub eval: EvalArgs,
    /// Write the results as JSON to this file (- for stdout).
    #[arg(long = "json")]
    pub json: Option<PathBuf>,
    /// Write the results as CSV to this file (- for stdout).
    #[arg(long = "csv")]
    pub csv: Option<PathBuf>,
    /// Draw mean KL-divergence against bits per weight to FILE.svg or FILE.png (repeat the
    /// flag for both).
    #[arg(long = "chart")]
    pub chart: Vec<PathBuf>,
}

/// The base's line of a report.
#[derive(Debug, Clone, Serialize)]
pub struct BaseReport {
    pub label: String,
    pub bits_per_weight: f64,
    pub ppl: f64,
    pub ppl_uncertainty: f64,
    pub tokens_scored: usize,
    pub chunks: usize,
    pub chunk_size: usize,
    pub top_k: usize,
}

/// One model's line of a report. Fractions (agreement, overlap, RMS Δp) are 0 to 1.
#[derive(Debug, Clone, Serialize)]
pub struct ModelReport {
    pub label: String,
    pub path: String,
    pub file_bytes: u64,
    pub bits_per_weight: f64,
    pub ppl: f64,
    pub ppl_uncertainty: f64,
    pub ppl_ratio: f64,
    pub kl_mean: f64,
    pub kl_median: f64,
    pub kl_p99: f64,
    pub kl_max: f64,
    pub top1_agreement: f64,
    pub top5_overlap: f64,
    pub rms_dp: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub base: BaseReport,
    pub models: Vec<ModelReport>,
}

/// Runs the base over the text's chunks (or loads its saved logits) and checks a text given
/// alongside saved logits.
pub fn base_logits(args: &Args) -> Result<BaseLogits> {
    if let Some(path) = &args.base_logits {
        let base = BaseLogits::load(path)?;
        eprintln!(
            "base logits: {} ({} chunks of {}, top-{})",
            base.label,
            base.chunks().n_chunk(),
            base.chunks().n_ctx(),
            base.top_k()
        );
        return Ok(base);
    }
    let (Some(path), Some(file)) = (&args.base, &args.file) else { bail!("give --base and -f, or --base-logits") };
    let text = read_text(file)?;
    let base = record_base(&args.eval, path, &text, args.top_k)?;
    if let Some(out) = &args.save_base {
        base.save(out)?;
        eprintln!("saved the base's logits to {}", out.display());
    }
    Ok(base)
}

/// Runs the model at `path` over `text` and records its top-k logits as the base.
pub fn record_base(eval: &EvalArgs, path: &Path, text: &str, top_k: usize) -> Result<BaseLogits> {
    let model = eval.load(path)?;
    let chunks = eval.chunks(&model, text)?;
    let mut session = eval.session(&model, chunks.n_ctx())?;
    let bar = progress(chunks.n_chunk(), &format!("base {}", label(path)));
    let base = quality::record_base(&mut session, chunks, top_k, &label(path), |_| bar.inc(1))?;
    bar.finish_and_clear();
    Ok(base)
}

/// Runs the model at `path` over the base's chunks and compares it. When `text` is given,
/// the model's tokenization of it must give the base's tokens.
pub fn compare_model(eval: &EvalArgs, path: &Path, base: &BaseLogits, text: Option<&str>) -> Result<ModelReport> {
    let model = eval.load(path)?;
    if let Some(text) = text {
        let tok = model.tokenizer();
        let tokens = tok.encode(text, true);
        let (n_ctx, n_chunk) = (base.chunks().n_ctx(), base.chunks().n_chunk());
        let mine = quality::Chunks::new(&tokens, n_ctx, Some(n_chunk), tok.adds_bos().then(|| tok.bos())).ok();
        if mine.as_ref() != Some(base.chunks()) {
            bail!(
                "{} tokenizes the text differently from the base's saved tokens: another text, or another tokenizer",
                path.display()
            );
        }
    }
    let mut session = eval.session(&model, base.chunks().n_ctx())?;
    let bar = progress(base.chunks().n_chunk(), &label(path));
    let cmp = quality::compare(&mut session, base, |_| bar.inc(1))
        .with_context(|| format!("comparing {} with the base", path.display()))?;
    bar.finish_and_clear();
    let file_bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    Ok(model_report(path, file_bytes, quality::bits_per_weight(model.gguf()), &cmp.summary()))
}

fn model_report(path: &Path, file_bytes: u64, bpw: f64, s: &ComparisonSummary) -> ModelReport {
    ModelReport {
        label: label(path),
        path: path.display().to_string(),
        file_bytes,
        bits_per_weight: bpw,
        ppl: s.ppl,
        ppl_uncertainty: s.ppl_uncertainty,
        ppl_ratio: s.ppl_ratio,
        kl_mean: s.kl_mean,
        kl_median: s.kl_median,
        kl_p99: s.kl_p99,
        kl_max: s.kl_max,
        top1_agreement: s.top1_agreement,
        top5_overlap: s.top5_overlap,
        rms_dp: s.rms_dp,
    }
}

pub fn base_report(base: &BaseLogits) -> BaseReport {
    let ppl = base.perplexity();
    BaseReport {
        label: base.label.clone(),
        bits_per_weight: base.bits_per_weight,
        ppl: ppl.value(),
        ppl_uncertainty: ppl.uncertainty(),
        tokens_scored: ppl.n(),
        chunks: base.chunks().n_chunk(),
        chunk_size: base.chunks().n_ctx(),
        top_k: base.top_k(),
    }
}

/// The terminal table.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let b = &r.base;
    let _ = writeln!(
        out,
        "base {}: {:.2} bits/weight, PPL {:.4} +/- {:.5}; {} tokens scored ({} chunks of {}), KL over the base's top-{}",
        b.label, b.bits_per_weight, b.ppl, b.ppl_uncertainty, b.tokens_scored, b.chunks, b.chunk_size, b.top_k
    );
    let head = [
        "model",
        "MiB",
        "bits/w",
        "PPL",
        "+/-",
        "PPL ratio",
        "KL mean",
        "KL median",
        "KL p99",
        "KL max",
        "top-1 %",
        "top-5 %",
        "RMS dp %",
    ];
    let rows: Vec<Vec<String>> = r
        .models
        .iter()
        .map(|m| {
            vec![
                m.label.clone(),
                format!("{:.1}", m.file_bytes as f64 / (1u64 << 20) as f64),
                format!("{:.2}", m.bits_per_weight),
                format!("{:.4}", m.ppl),
                format!("{:.4}", m.ppl_uncertainty),
                format!("{:.4}", m.ppl_ratio),
                format!("{:.6}", m.kl_mean),
                format!("{:.6}", m.kl_median),
                format!("{:.6}", m.kl_p99),
                format!("{:.6}", m.kl_max),
                format!("{:.2}", 100.0 * m.top1_agreement),
                format!("{:.2}", 100.0 * m.top5_overlap),
                format!("{:.3}", 100.0 * m.rms_dp),
            ]
        })
        .collect();
    let width = |c: usize| rows.iter().map(|r| r[c].len()).chain([head[c].len()]).max().unwrap_or(0);
    let widths: Vec<usize> = (0..head.len()).map(width).collect();
    let line = |cells: Vec<&str>| {
        let mut l: Vec<String> = Vec::new();
        for (c, cell) in cells.iter().enumerate() {
            l.push(if c == 0 { format!("{cell:<w$}", w = widths[c]) } else { format!("{cell:>w$}", w = widths[c]) });
        }
        l.join("  ").trim_end().to_string()
    };
    let _ = writeln!(out, "{}", line(head.to_vec()));
    for row in &rows {
        let _ = writeln!(out, "{}", line(row.iter().map(String::as_str).collect()));
    }
    out
}

/// CSV, one line per model (the base's figures repeated on each, for spreadsheets).
pub fn csv(r: &Report) -> String {
    let mut out = String::from(
        "model,path,file_bytes,bits_per_weight,ppl,ppl_uncertainty,ppl_ratio,kl_mean,kl_median,kl_p99,kl_max,\
         top1_agreement,top5_overlap,rms_dp,base,base_ppl,tokens_scored,chunk_size\n",
    );
    let q = |s: &str| format!("\"{}\"", s.replace('"', "\"\""));
    for m in &r.models {
        let _ = writeln!(
            out,
            "{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
            q(&m.label),
            q(&m.path),
            m.file_bytes,
            m.bits_per_weight,
            m.ppl,
            m.ppl_uncertainty,
            m.ppl_ratio,
            m.kl_mean,
            m.kl_median,
            m.kl_p99,
            m.kl_max,
            m.top1_agreement,
            m.top5_overlap,
            m.rms_dp,
            q(&r.base.label),
            r.base.ppl,
            r.base.tokens_scored,
            r.base.chunk_size
        );
    }
    out
}

/// Writes `text` to `path`, or to stdout for `-`.
pub fn write_out(path: &Path, text: &str) -> Result<()> {
    if path.as_os_str() == "-" {
        print!("{text}");
        return Ok(());
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Table to stdout; JSON, CSV and charts where asked.
pub fn emit(r: &Report, json: Option<&Path>, csv_path: Option<&Path>, charts: &[PathBuf]) -> Result<()> {
    print!("{}", table(r));
    if let Some(p) = json {
        write_out(p, &(serde_json::to_string_pretty(r)? + "\n"))?;
    }
    if let Some(p) = csv_path {
        write_out(p, &csv(r))?;
    }
    let mut points: Vec<chart::Point> = r
        .models
        .iter()
        .map(|m| chart::Point { label: m.label.clone(), bits_per_weight: m.bits_per_weight, kl_mean: m.kl_mean })
        .collect();
    if !r.models.iter().any(|m| m.label == r.base.label) {
        let (label, bits_per_weight) = (format!("{} (base)", r.base.label), r.base.bits_per_weight);
        points.push(chart::Point { label, bits_per_weight, kl_mean: 0.0 });
    }
    for p in charts {
        let title = format!("Quality vs size: mean KL-divergence against {}", r.base.label);
        chart::write(p, &title, &points)?;
        eprintln!("chart: {}", p.display());
    }
    Ok(())
}

pub fn run(args: Args) -> Result<()> {
    if args.models.is_empty() && args.save_base.is_none() {
        bail!("name at least one model to compare (or --save-base to only record the base)");
    }
    args.chart.iter().try_for_each(|p| chart::check_path(p))?;
    let base = base_logits(&args)?;
    let text = args.file.as_deref().map(read_text).transpose()?;
    let mut models = Vec::new();
    for path in &args.models {
        models.push(compare_model(&args.eval, path, &base, text.as_deref())?);
    }
    if models.is_empty() {
        return Ok(());
    }
    let report = Report { base: base_report(&base), models };
    emit(&report, args.json.as_deref(), args.csv.as_deref(), &args.chart)
}
