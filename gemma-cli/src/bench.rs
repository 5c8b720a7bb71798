//! `gemma bench`: prompt-processing and generation speed as llama-bench measures them.
//!
//! `pp<P>`: a P-token prompt (BOS, then random tokens) from an empty cache, fed in batches of
//! `--ubatch`, logits for the last token only. `tg<N>`: N tokens fed one decode step at a time
//! from an empty cache (BOS, then random tokens; nothing is sampled). Each test runs once to
//! warm up, then `-r` times; the speed is the mean ± sample standard deviation of the per-run
//! tokens/s. These are llama-bench's `test_prompt`, `test_gen` and `avg_ts`/`stdev_ts`
//! (llama.cpp `tools/llama-bench/llama-bench.cpp`, b6000-era), so the figures compare.
//!
//! `image<T>` (with `--mmproj` and `--image`): one image encoded to its T image tokens by the
//! projector on the CPU, the file's bytes already in memory: preprocessing (decode, resize,
//! normalise) and encoder + projector (the ggml graph, with the patch extraction and reading
//! the embeddings back) timed apart, their sum the test's time. One warm-up encode, then `-r`
//! timed ones; milliseconds per image, mean ± sample standard deviation. libmtmd's
//! "image slice encoded in N ms" (`mtmd_helper_eval_chunk_single`) is the encoder part alone:
//! its preprocessing runs earlier, in `mtmd_tokenize` (scripts/bench_vision_vs_mtmd.py).
use crate::common::{reset_peak_rss, rss, MemoryBaseline, MemoryBreakdown, ModelArgs};
use crate::image::MmprojArgs;
use anyhow::{bail, Context as _, Result};
use gemma_gguf::gguf::GgufFile;
use gemma_gguf::model::Model;
use gemma_gguf::session::{Outputs, Session, DEFAULT_UBATCH};
use gemma_gguf::vision::{preprocess, Projector};
use serde::Serialize;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

#[derive(clap::Args)]
pub struct Args {
    /// The GGUF model file.
    #[arg(short = 'm', long = "model")]
    pub model: PathBuf,
    /// Prompt lengths to measure, comma-separated (0: no prompt test; default 512, none with
    /// --image).
    #[arg(short = 'p', long = "n-prompt", value_delimiter = ',')]
    pub n_prompt: Vec<u32>,
    /// Generation lengths to measure, comma-separated (0: no generation test; default 128,
    /// none with --image).
    #[arg(short = 'n', long = "n-gen", value_delimiter = ',')]
    pub n_gen: Vec<u32>,
    /// Thread counts, comma-separated (default: the logical CPUs).
    #[arg(short = 't', long = "threads", value_delimiter = ',')]
    pub threads: Vec<usize>,
    /// Timed repetitions of each test (after one warm-up run).
    #[arg(short = 'r', long = "repetitions", default_value_t = 5)]
    pub reps: usize,
    /// `md` (a Markdown table, as llama-bench prints) or `json`.
    #[arg(short = 'o', long = "output", default_value = "md")]
    pub output: Format,
    /// Context size of each test's session (default: the test's own tokens, as llama-bench).
    #[arg(short = 'c', long = "ctx-size")]
    pub ctx: Option<u32>,
    /// Largest batch of prompt tokens per graph.
    #[arg(long = "ubatch", default_value_t = DEFAULT_UBATCH)]
    pub ubatch: u32,
    /// Device to run on, as `gemma --version` lists them.
    #[arg(long = "device")]
    pub device: Option<String>,
    /// Layers on the device (llama-bench's -ngl): the last N, the output counting as one.
    #[arg(long = "gpu-layers", visible_alias = "n-gpu-layers", visible_alias = "ngl", value_name = "N")]
    pub gpu_layers: Option<u32>,
    /// Use ggml's fused flash-attention kernel.
    #[arg(long = "flash-attn", visible_alias = "fa")]
    pub flash_attn: bool,
    /// KV cache type: f16, or q8_0 (needs --flash-attn).
    #[arg(long = "cache-type", default_value = "f16")]
    pub cache_type: String,
    /// Keep every weight mapped from the file (no repacking).
    #[arg(long = "no-repack")]
    pub no_repack: bool,
    /// Run the weights that are not repacked from the mapped file's 4 KiB pages (llama.cpp's
    /// default) instead of copies on 2 MiB pages (`gemma run --help`).
    #[arg(long = "mmap")]
    pub mmap: bool,
    /// Keep the file's q5_0 matrices as q5_0 instead of q8_0 copies (`gemma run --help`).
    #[arg(long = "no-widen")]
    pub no_widen: bool,
    /// The projector for the image test (needs --image).
    #[command(flatten)]
    pub mmproj: MmprojArgs,
    /// An image (PNG, JPEG, WebP) for the image-encode test (needs --mmproj): the same image
    /// encoded each run, preprocessing and encoder timed apart.
    #[arg(long = "image")]
    pub image: Option<PathBuf>,
    /// No warm-up run before the timed ones (llama-bench's --no-warmup): the first run is timed.
    #[arg(long = "no-warmup")]
    pub no_warmup: bool,
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Md,
    Json,
}

/// One test's result; field names follow llama-bench's JSON output where it has them.
#[derive(Serialize)]
struct TestResult {
    model_filename: String,
    model_type: String,
    model_size: u64,
    model_n_params: u64,
    backend: String,
    n_threads: usize,
    n_ctx: u32,
    n_ubatch: u32,
    flash_attn: bool,
    type_k: String,
    no_repack: bool,
    /// Weights run from the mapped file's pages (`--mmap`) rather than copies on 2 MiB pages.
    mmap: bool,
    /// The file's q5_0 matrices kept as q5_0 (`--no-widen`).
    no_widen: bool,
    n_prompt: u32,
    n_gen: u32,
    samples_ns: Vec<u64>,
    samples_ts: Vec<f64>,
    avg_ns: u64,
    stddev_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    /// Peak resident memory during this test (the peak is reset before each test on Linux).
    peak_rss_bytes: Option<u64>,
    memory: MemoryBreakdown,
}

impl TestResult {
    fn name(&self) -> String {
        if self.n_prompt > 0 {
            format!("pp{}", self.n_prompt)
        } else {
            format!("tg{}", self.n_gen)
        }
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.reps == 0 {
        bail!("-r 0: give at least one repetition");
    }
    let image = match (&args.mmproj.mmproj, &args.image) {
        (Some(_), Some(image)) => {
            Some(std::fs::read(image).with_context(|| format!("reading the image {}", image.display()))?)
        }
        (None, Some(_)) => bail!("--image needs the model's projector: give --mmproj FILE"),
        (Some(_), None) => bail!("--mmproj is for the image test: give --image FILE too"),
        (None, None) => None,
    };
    let or_default = |v: &[u32], default: u32| if v.is_empty() && image.is_none() { vec![default] } else { v.to_vec() };
    let tests: Vec<(u32, u32)> = or_default(&args.n_prompt, 512)
        .into_iter()
        .filter(|&p| p > 0)
        .map(|p| (p, 0))
        .chain(or_default(&args.n_gen, 128).into_iter().filter(|&n| n > 0).map(|n| (0, n)))
        .collect();
    if tests.is_empty() && image.is_none() {
        bail!("nothing to measure: give a -p or -n above 0");
    }
    let threads =
        if args.threads.is_empty() { vec![gemma_gguf::ggml::default_threads()] } else { args.threads.clone() };
    let margs = ModelArgs {
        model: args.model.clone(),
        threads: Some(threads[0]),
        ctx: 0,
        ubatch: args.ubatch,
        device: args.device.clone(),
        gpu_layers: args.gpu_layers,
        flash_attn: args.flash_attn,
        cache_type: args.cache_type.clone(),
        no_repack: args.no_repack,
        mmap: args.mmap,
        no_widen: args.no_widen,
    };
    margs.session_options()?;
    let model = margs.load()?;
    let desc = Description::of(&model, &args);
    let mut results = Vec::new();
    let mut image_rows = 0;
    for &t in &threads {
        model.set_threads(t)?;
        for &(p, n) in &tests {
            let r = run_test(&model, &margs, &args, &desc, t, p, n)?;
            if args.output == Format::Md {
                if results.is_empty() {
                    emit("| model | size | params | backend | threads | test | t/s | peak RSS |\n")?;
                    emit("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: |\n")?;
                }
                emit(&row(&r))?;
                eprintln!("memory {} t{}: {}", r.name(), t, r.memory.line(r.peak_rss_bytes));
            }
            results.push(Row::Text(r));
        }
        if let Some(bytes) = &image {
            let r = image_test(&model, &args, bytes, t)?;
            if args.output == Format::Md {
                if image_rows == 0 {
                    if !results.is_empty() {
                        emit("\n")?;
                    }
                    emit("| projector | size | params | backend | threads | test | ms/image | preprocess ms | encode ms | peak RSS |\n")?;
                    emit("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")?;
                }
                emit(&image_row(&r))?;
            }
            image_rows += 1;
            results.push(Row::Image(r));
        }
    }
    if args.output == Format::Json {
        emit(&format!("{}\n", serde_json::to_string_pretty(&results)?))?;
    }
    Ok(())
}

/// Writes to standard output as each row is ready; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

/// What the table says about the model.
struct Description {
    filename: String,
    model_type: String,
    size: u64,
    n_params: u64,
    backend: String,
}

impl Description {
    fn of(model: &Model, args: &Args) -> Description {
        let g = model.gguf();
        let arch = g.get_str("general.architecture").unwrap_or("?");
        let label = g.get_str("general.size_label").map(|s| format!(" {s}")).unwrap_or_default();
        // `general.file_type` names the mix (llama.cpp's names); else the dominant tensor type.
        let named = g.get_u32("general.file_type").ok().and_then(|id| {
            crate::info::FILE_TYPES.iter().find(|(i, _)| *i == id as u64).map(|(_, name)| name.to_string())
        });
        let ftype = named
            .unwrap_or_else(|| dominant_type(g.tensors().iter().map(|t| (t.ggml_type.name().to_string(), t.n_bytes))));
        Description {
            filename: args.model.display().to_string(),
            model_type: format!("{arch}{label} {ftype}"),
            size: g.tensors().iter().map(|t| t.n_bytes).sum(),
            n_params: g.tensors().iter().map(|t| t.n_elements()).sum(),
            backend: model.backend().name().to_string(),
        }
    }
}

/// The type holding most of the bytes, with "mix" when others hold over a quarter.
fn dominant_type(types: impl Iterator<Item = (String, u64)>) -> String {
    let mut by_type: Vec<(String, u64)> = Vec::new();
    for (ty, n) in types {
        match by_type.iter_mut().find(|(t, _)| *t == ty) {
            Some(e) => e.1 += n,
            None => by_type.push((ty, n)),
        }
    }
    let total: u64 = by_type.iter().map(|e| e.1).sum();
    by_type.sort_by_key(|e| std::cmp::Reverse(e.1));
    match by_type.first() {
        Some((ty, n)) if *n * 4 >= total * 3 => ty.to_uppercase(),
        Some((ty, _)) => format!("{} mix", ty.to_uppercase()),
        None => "?".into(),
    }
}

/// A small deterministic generator for the random prompt tokens (SplitMix64).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u32) -> u32 {
        (gemma_gguf::sampler::splitmix64(&mut self.0) % n as u64) as u32
    }
}

/// One test on a fresh session: a warm-up run, then `reps` timed runs from an empty cache.
fn run_test(
    model: &Model,
    margs: &ModelArgs,
    args: &Args,
    desc: &Description,
    threads: usize,
    n_prompt: u32,
    n_gen: u32,
) -> Result<TestResult> {
    let n_ctx = args.ctx.unwrap_or(n_prompt + n_gen);
    let mut opts = margs.session_options()?;
    opts.n_ctx = n_ctx;
    let peak_resettable = reset_peak_rss();
    let mut session = Session::new(model, opts)?;
    let baseline = MemoryBaseline::measure(model, &session, &args.model);
    let n_vocab = model.n_vocab();
    let tok = model.tokenizer();
    let first = if tok.adds_bos() { tok.bos() } else { 0 };
    let mut rng = Rng(0x0062_656e_6368); // "bench"
    let mut logits = Vec::with_capacity(n_vocab as usize);
    let mut prompt: Vec<u32> = Vec::with_capacity(n_prompt as usize);
    let mut once = |s: &mut Session<'_>, n_gen: u32| -> Result<()> {
        if n_prompt > 0 {
            prompt.clear();
            prompt.push(first);
            prompt.extend((1..n_prompt).map(|_| rng.below(n_vocab)));
            s.decode_into(&prompt, Outputs::Last, &mut logits)?;
        }
        let mut t = first;
        for _ in 0..n_gen {
            s.decode_into(&[t], Outputs::Last, &mut logits)?;
            t = rng.below(n_vocab);
        }
        Ok(())
    };
    if !args.no_warmup {
        once(&mut session, n_gen.min(1))?;
    }
    let mut samples_ns = Vec::with_capacity(args.reps);
    for _ in 0..args.reps {
        session.reset();
        let start = Instant::now();
        once(&mut session, n_gen)?;
        samples_ns.push(start.elapsed().as_nanos().max(1) as u64);
    }
    let n_tokens = (n_prompt + n_gen) as f64;
    let samples_ts: Vec<f64> = samples_ns.iter().map(|&ns| n_tokens * 1e9 / ns as f64).collect();
    let ns_f: Vec<f64> = samples_ns.iter().map(|&ns| ns as f64).collect();
    Ok(TestResult {
        model_filename: desc.filename.clone(),
        model_type: desc.model_type.clone(),
        model_size: desc.size,
        model_n_params: desc.n_params,
        backend: desc.backend.clone(),
        n_threads: threads,
        n_ctx,
        n_ubatch: opts.n_ubatch,
        flash_attn: opts.flash_attn,
        type_k: opts.kv_type.name().to_string(),
        no_repack: args.no_repack,
        mmap: args.mmap,
        no_widen: args.no_widen,
        n_prompt,
        n_gen,
        avg_ns: mean(&ns_f) as u64,
        stddev_ns: stdev(&ns_f) as u64,
        avg_ts: mean(&samples_ts),
        stddev_ts: stdev(&samples_ts),
        samples_ns,
        samples_ts,
        peak_rss_bytes: rss().filter(|_| peak_resettable).map(|r| r.0),
        memory: baseline.breakdown(model, &session),
    })
}

/// A row of the JSON output: a prompt/generation test or an image test.
#[derive(Serialize)]
#[serde(untagged)]
enum Row {
    Text(TestResult),
    Image(ImageResult),
}

/// One image test's result (`ns` fields per image; `ts`: image tokens per second).
#[derive(Serialize)]
struct ImageResult {
    model_filename: String,
    mmproj_filename: String,
    mmproj_type: String,
    mmproj_size: u64,
    mmproj_n_params: u64,
    backend: String,
    n_threads: usize,
    /// The encoder's attention through ggml's fused kernel (--mmproj-flash-attn).
    flash_attn: bool,
    image_filename: String,
    /// The pixel tensor's width and height (after the resize).
    image_width: u32,
    image_height: u32,
    n_image_tokens: u32,
    /// Preprocessing plus encoder, per image.
    samples_ns: Vec<u64>,
    samples_preprocess_ns: Vec<u64>,
    samples_encode_ns: Vec<u64>,
    avg_ns: u64,
    stddev_ns: u64,
    avg_preprocess_ns: u64,
    stddev_preprocess_ns: u64,
    avg_encode_ns: u64,
    stddev_encode_ns: u64,
    avg_ts: f64,
    stddev_ts: f64,
    /// Peak resident memory from loading the projector on (reset before, on Linux).
    peak_rss_bytes: Option<u64>,
}

/// An image's pixel tensor as the projector's family makes it: (width, height, pixels).
fn prepare(v: &Projector, bytes: &[u8], max_pixels: u64) -> Result<(u32, u32, Vec<f32>)> {
    Ok(match v {
        Projector::Gemma3(m) => {
            let s = m.hp.pixels.size;
            (s, s, preprocess::preprocess(bytes, &m.hp.pixels, max_pixels)?)
        }
        Projector::Gemma4(m) => {
            let spec = preprocess::PixelSpec { size: 0, mean: m.hp.mean, std: m.hp.std };
            preprocess::preprocess_gemma4(bytes, &spec, m.hp.patch_size, m.hp.pool, m.hp.max_soft_tokens, max_pixels)?
        }
    })
}

/// The pixel tensor of [`prepare`] → the image's embeddings, row by row.
fn encode(v: &Projector, (w, h, pixels): &(u32, u32, Vec<f32>)) -> Result<Vec<f32>> {
    Ok(match v {
        Projector::Gemma3(m) => m.encode(pixels)?,
        Projector::Gemma4(m) => m.encode(*w, *h, pixels)?,
    })
}

/// The image test at `threads` threads: the projector loaded (and checked against `model`),
/// a warm-up encode, then `reps` timed ones of `bytes`, preprocessing and encoder apart.
fn image_test(model: &Model, args: &Args, bytes: &[u8], threads: usize) -> Result<ImageResult> {
    let path = args.mmproj.mmproj.as_deref().context("the image test needs --mmproj")?;
    let image = args.image.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_default();
    let peak_resettable = reset_peak_rss();
    let v = args.mmproj.load(model, Some(threads))?.context("the image test needs --mmproj")?;
    let (mmproj_type, mmproj_size, mmproj_n_params) = describe_projector(path)?;
    let once = || -> Result<(u64, u64, (u32, u32), usize)> {
        let start = Instant::now();
        let prepared =
            prepare(&v, bytes, args.mmproj.image_max_pixels).with_context(|| format!("the image {image}"))?;
        let mid = Instant::now();
        let rows = encode(&v, &prepared).with_context(|| format!("encoding the image {image}"))?;
        let end = Instant::now();
        let ns = |d: std::time::Duration| d.as_nanos().max(1) as u64;
        Ok((ns(mid - start), ns(end - mid), (prepared.0, prepared.1), rows.len()))
    };
    if !args.no_warmup {
        once()?;
    }
    let (mut pre, mut enc) = (Vec::with_capacity(args.reps), Vec::with_capacity(args.reps));
    let (mut size, mut n_values) = ((0, 0), 0);
    for _ in 0..args.reps {
        let (p, e, s, n) = once()?;
        pre.push(p);
        enc.push(e);
        (size, n_values) = (s, n);
    }
    let n_image_tokens = (n_values / v.n_embd_text().max(1) as usize) as u32;
    let total: Vec<u64> = pre.iter().zip(&enc).map(|(p, e)| p + e).collect();
    let f = |v: &[u64]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
    let ts: Vec<f64> = total.iter().map(|&ns| n_image_tokens as f64 * 1e9 / ns as f64).collect();
    Ok(ImageResult {
        model_filename: args.model.display().to_string(),
        mmproj_filename: path.display().to_string(),
        mmproj_type,
        mmproj_size,
        mmproj_n_params,
        backend: "CPU".into(),
        n_threads: threads,
        flash_attn: args.mmproj.mmproj_flash_attn.is_on(),
        image_filename: image,
        image_width: size.0,
        image_height: size.1,
        n_image_tokens,
        avg_ns: mean(&f(&total)) as u64,
        stddev_ns: stdev(&f(&total)) as u64,
        avg_preprocess_ns: mean(&f(&pre)) as u64,
        stddev_preprocess_ns: stdev(&f(&pre)) as u64,
        avg_encode_ns: mean(&f(&enc)) as u64,
        stddev_encode_ns: stdev(&f(&enc)) as u64,
        avg_ts: mean(&ts),
        stddev_ts: stdev(&ts),
        samples_ns: total,
        samples_preprocess_ns: pre,
        samples_encode_ns: enc,
        peak_rss_bytes: rss().filter(|_| peak_resettable).map(|r| r.0),
    })
}

/// A projector file's (type, tensor bytes, parameters): the type as "clip gemma3 F16".
fn describe_projector(path: &Path) -> Result<(String, u64, u64)> {
    let g = GgufFile::open(path).with_context(|| format!("reading the projector {}", path.display()))?;
    let kind = g.get_str(gemma_gguf::vision::names::key::PROJECTOR_TYPE).unwrap_or("?");
    let ftype = dominant_type(g.tensors().iter().map(|t| (t.ggml_type.name().to_string(), t.n_bytes)));
    Ok((
        format!("clip {kind} {ftype}"),
        g.tensors().iter().map(|t| t.n_bytes).sum(),
        g.tensors().iter().map(|t| t.n_elements()).sum(),
    ))
}

fn image_row(r: &ImageResult) -> String {
    let peak = r.peak_rss_bytes.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / MIB));
    let ms = |avg: u64, sd: u64| format!("{:.2} ± {:.2}", avg as f64 / 1e6, sd as f64 / 1e6);
    format!(
        "| {} | {:.2} MiB | {:.2} M | {} | {} | image{} | {} | {} | {} | {} |\n",
        r.mmproj_type,
        r.mmproj_size as f64 / MIB,
        r.mmproj_n_params as f64 / 1e6,
        r.backend,
        r.n_threads,
        r.n_image_tokens,
        ms(r.avg_ns, r.stddev_ns),
        ms(r.avg_preprocess_ns, r.stddev_preprocess_ns),
        ms(r.avg_encode_ns, r.stddev_encode_ns),
        peak
    )
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Sample standard deviation (n − 1), 0 for one sample (llama-bench's `stdev`).
fn stdev(v: &[f64]) -> f64 {
    if v.len() < 2 {
        return 0.0;
    }
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
}

const MIB: f64 = (1u64 << 20) as f64;

fn row(r: &TestResult) -> String {
    let peak = r.peak_rss_bytes.map_or("?".into(), |b| format!("{:.1} MiB", b as f64 / MIB));
    format!(
        "| {} | {:.2} MiB | {:.2} M | {} | {} | {} | {:.2} ± {:.2} | {} |\n",
        r.model_type,
        r.model_size as f64 / MIB,
        r.model_n_params as f64 / 1e6,
        r.backend,
        r.n_threads,
        r.name(),
        r.avg_ts,
        r.stddev_ts,
        peak
    )
}
