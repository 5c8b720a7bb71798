//! The crate's error type: every fallible call in `gemma-gguf` returns [`Result`].

/// Errors of the gemma-gguf library. Variants carry the tensor, shape, type or call involved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A malformed or unexpected GGUF file.
    #[error(transparent)]
    Gguf(#[from] crate::gguf::GgufError),
    /// A ggml call returned a null pointer (out of memory or a failed backend init).
    #[error("{0} returned null (out of memory, or the backend could not be initialised)")]
    Null(&'static str),
    /// A ggml type id that this ggml build does not know, or has removed.
    #[error("ggml type {id} is not supported by this ggml build")]
    UnsupportedType { id: u32 },
    /// The type exists but cannot be used for this operation (e.g. needs an importance matrix).
    #[error("type {ty} cannot be used for {what}")]
    TypeNotUsable { ty: String, what: &'static str },
    /// Tensor names must be shorter than 64 bytes (ggml's GGML_MAX_NAME, NUL included).
    #[error("tensor name {name:?} is {len} bytes; ggml allows at most 63")]
    NameTooLong { name: String, len: usize },
    /// A name with an interior NUL byte cannot be passed to C.
    #[error("tensor name {name:?} contains a NUL byte")]
    NameHasNul { name: String },
    /// Shapes that the operation cannot combine.
    #[error("{op}: incompatible shapes {a:?} and {b:?} ({why})")]
    Shape { op: &'static str, a: [i64; 4], b: [i64; 4], why: &'static str },
    /// A dimension list that ggml cannot represent.
    #[error("bad tensor shape {dims:?}: {why}")]
    BadDims { dims: Vec<i64>, why: &'static str },
    /// Row length not a multiple of the type's block size.
    #[error("row length {ne0} is not a multiple of {ty}'s block size {block}")]
    RowNotBlockMultiple { ty: String, ne0: i64, block: i64 },
    /// A data slice of the wrong length for the tensor or rows.
    #[error("{what}: expected {expected} bytes/elements, got {actual}")]
    Length { what: String, expected: usize, actual: usize },
    /// The context's fixed memory pool for tensor and graph objects is full.
    #[error("ggml context is full: needs {needed} bytes, has {available} (raise max_tensors)")]
    ContextFull { needed: usize, available: usize },
    /// A graph with more nodes than it was created for.
    #[error("graph is full: it holds at most {capacity} nodes")]
    GraphFull { capacity: usize },
    /// Reading or writing a tensor that no buffer backs yet.
    #[error("tensor {name:?} has no backend buffer: allocate the context or graph first")]
    NotAllocated { name: String },
    /// The tensor's type is not the one the access needs.
    #[error("tensor {name:?} is {actual}, expected {expected}")]
    WrongTensorType { name: String, expected: &'static str, actual: String },
    /// A backend cannot run one of the graph's operations with these types.
    #[error("backend {backend} does not support {op} on tensor {name:?} ({ty})")]
    Unsupported { backend: String, op: String, name: String, ty: String },
    /// No device with this name in ggml's backend registry.
    #[error("no ggml device named {name:?}; available: {available}")]
    NoSuchDevice { name: String, available: String },
    /// Graph allocation failed (out of memory on the device).
    #[error("could not allocate the compute graph on {backend}")]
    GraphAlloc { backend: String },
    /// Graph computation returned a non-success status.
    #[error("graph computation on {backend} failed with ggml status {status}")]
    Compute { backend: String, status: i32 },
    /// A tensor or graph id used with a context other than the one that made it.
    #[error("{what} id belongs to another ggml context")]
    ForeignId { what: &'static str },
    /// A model hyper-parameter that cannot be right.
    #[error("{key} = {value}: {why}")]
    BadHparam { key: String, value: String, why: &'static str },
    /// A tensor the architecture needs is not in the file.
    #[error("tensor {name} is missing from the model file")]
    MissingTensor { name: String },
    /// A tensor whose shape disagrees with the hyper-parameters.
    #[error("tensor {name} has shape {actual:?}, the hyper-parameters say {expected:?}")]
    TensorShape { name: String, expected: Vec<u64>, actual: Vec<u64> },
    /// An architecture this runtime does not run.
    #[error("architecture {arch:?} is not supported (supported: gemma, gemma2, gemma3, gemma3n, gemma4)")]
    UnsupportedArch { arch: String },
    /// Memory that would not fit, refused before allocating.
    #[error("{what} needs {needed} bytes but only {available} are free: use a smaller context (-c)")]
    TooLarge { what: String, needed: u64, available: u64 },
    /// Weights that would not fit the device they are offloaded to, refused before allocating.
    #[error(
        "{what} need {needed} bytes on {device} but only {available} are free: offload fewer layers \
         (--gpu-layers) or run on the CPU"
    )]
    DeviceMemory { device: String, what: String, needed: u64, available: u64 },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {n_vocab}")]
    BadToken { id: u32, n_vocab: u32 },
    /// Feeding more tokens than the context holds.
    #[error("context full: {n_past} + {n_new} tokens exceed n_ctx = {n_ctx}")]
    ContextOverflow { n_past: u32, n_new: usize, n_ctx: u32 },
    /// A value out of its allowed range (threads, sizes, parameters).
    #[error("{what} = {value} is out of range: {why}")]
    OutOfRange { what: &'static str, value: String, why: &'static str },
    /// `tokenizer.ggml.model` names a tokenizer this crate does not implement.
    #[error(
        "tokenizer.ggml.model = {model:?} is not supported: only \"llama\" \
         (SentencePiece-style, as Gemma 1-3 use) and \"gemma4\" (BPE, Gemma 4) are"
    )]
    TokenizerUnsupportedModel { model: String },
    /// An entry of `tokenizer.ggml.merges` that is not two tokens whose concatenation is a
    /// token.
    #[error("tokenizer.ggml.merges[{index}] = {merge:?}: {why}")]
    TokenizerBadMerge { index: usize, merge: String, why: String },
    /// A tokenizer array whose length disagrees with `tokenizer.ggml.tokens`.
    #[error("{key} has {len} entries but tokenizer.ggml.tokens has {n_tokens}")]
    TokenizerArrayLength { key: &'static str, len: usize, n_tokens: usize },
    /// A special token id (BOS, EOS, ...) outside the vocabulary.
    #[error("{key} = {id} is not a token id: the vocabulary has {n_tokens} tokens")]
    TokenizerSpecialId { key: &'static str, id: u64, n_tokens: usize },
    /// One token of the vocabulary cannot be used as it is.
    #[error("token {id} ({piece:?}): {why}")]
    TokenizerBadToken { id: usize, piece: String, why: String },
    /// A sampling parameter out of its range (NaN, negative, above 1 for a probability).
    #[error("sampling parameter {param} = {value} is invalid: {why}")]
    BadSampling { param: &'static str, value: String, why: &'static str },
    /// A logits row the sampler cannot choose from (empty, or more entries than token ids).
    #[error("cannot sample from {len} logits: {why}")]
    BadLogits { len: usize, why: &'static str },
    /// A chat role name that is none of `system`, `user`, `model` (or its alias `assistant`).
    #[error("unknown chat role {role:?}: expected system, user, model or assistant")]
    ChatRole { role: String },
    /// Messages the Gemma turn format cannot lay out (a misplaced system message, roles that
    /// do not alternate user/model).
    #[error("cannot format the conversation: {why}")]
    ChatMessages { why: String },
    /// A chat template that does not compile, fails while rendering (`raise_exception`, an
    /// unknown filter) or hits one of the sandbox's limits.
    #[error("chat template: {why}")]
    ChatTemplate { why: String },
    /// A control token of the chat format that the vocabulary does not have.
    #[error("chat control token {piece:?} is not in the vocabulary")]
    ChatSpecialToken { piece: String },
    /// Model output that is not a well-formed Gemma 4 tool call (`<|tool_call>call:NAME{…}
    /// <tool_call|>`): `at` is the byte offset in the text where parsing failed.
    #[error("tool call at byte {at}: {why}")]
    ToolCall { at: usize, why: String },
    /// A base-logits file (`quality`) that is malformed, cut short, or made for another
    /// model family; or a base whose logits cannot be recorded.
    #[error("base logits file: {why}")]
    BaseLogits { why: String },
    /// A JSON schema, grammar or regex that cannot be compiled, or that failed while
    /// generating (`constrain`).
    #[error(transparent)]
    Constraint(#[from] crate::constrain::ConstraintError),
    /// Image bytes that are not PNG, JPEG or WebP (`vision::preprocess`).
    #[error("image: {what}: only PNG, JPEG and WebP are read")]
    ImageFormat { what: String },
    /// An image whose header declares more pixels than the limit (a decompression bomb, or
    /// just too large): refused before decoding.
    #[error("image is {width}×{height} = {pixels} pixels; the limit is {max} pixels")]
    ImageTooLarge { width: u32, height: u32, pixels: u64, max: u64 },
    /// A truncated or corrupt image.
    #[error("image ({format}): {what}")]
    ImageDecode { format: &'static str, what: String },
    /// A projector file (mmproj) this runtime cannot use, or one that does not match the
    /// language model (`vision`).
    #[error("projector: {what}")]
    Projector { what: String },
}

/// Result alias for the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;
