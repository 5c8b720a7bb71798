//! The converter's one error type: every failure names the file, tensor or key involved
//! and, where there is one, what to do about it.
use std::path::PathBuf;

/// Converter errors.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: not a Hugging Face model directory: {what}", dir.display())]
    NotACheckpoint { dir: PathBuf, what: String },

    #[error("{}: {what}", path.display())]
    Safetensors { path: PathBuf, what: String },

    #[error("{}: tensor `{tensor}`: {what}", path.display())]
    BadTensor { path: PathBuf, tensor: String, what: String },

    #[error("{}: shard index: {what}", path.display())]
    BadIndex { path: PathBuf, what: String },

    #[error("{}: {what}", path.display())]
    BadConfig { path: PathBuf, what: String },

    #[error("{}: tokenizer: {what}", path.display())]
    BadTokenizer { path: PathBuf, what: String },

    #[error("unsupported architecture {arch:?}: the converter handles Gemma4ForCausalLM (gemma4_text), Gemma3nForCausalLM (gemma3n_text), the text part of Gemma4ForConditionalGeneration, of Gemma3nForConditionalGeneration and of Gemma3ForConditionalGeneration, Gemma3ForCausalLM (gemma3_text), Gemma2ForCausalLM and GemmaForCausalLM")]
    UnsupportedArchitecture { arch: String },

    #[error("tensor `{tensor}`: {what}")]
    Shape { tensor: String, what: String },

    #[error("checkpoint has no tensor `{tensor}` (needed for {what})")]
    MissingTensor { tensor: String, what: String },

    #[error("unknown output type {name:?}; choose one of: {known}")]
    UnknownType { name: String, known: String },

    #[error("--tensor-type {spec:?}: {what}")]
    BadOverride { spec: String, what: String },

    #[error("{}: {what}", path.display())]
    Output { path: PathBuf, what: String },

    #[error("`{tensor}` is stored as {from}; requantising from a lower-precision type compounds two rounding errors. Pass --allow-requantize to do it anyway, or convert from the original f32/f16/bf16 weights")]
    LowPrecisionSource { tensor: String, from: String },

    #[error("interrupted: nothing was written")]
    Cancelled,

    #[error(transparent)]
    Gguf(#[from] gemma_gguf::gguf::GgufError),

    #[error(transparent)]
    Runtime(#[from] gemma_gguf::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
