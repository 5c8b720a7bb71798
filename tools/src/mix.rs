//! Output types, named mixes, and the type chosen for each tensor.
//!
//! The mixes follow llama.cpp's `llama_tensor_get_type_impl` and `tensor_type_fallback`
//! (src/llama-quant.cpp, llama-cpp-sys-2 0.1.161) for the tensors Gemma has, so a file
//! made here from the same weights is the file `llama-quantize` makes, block for block
//! (`tests/tests/quantize_llama.rs` checks it against `llama_model_quantize`):
//!
//! - Tensors llama.cpp never quantises stay f32: 1-D ones (norms, scales, `rope_freqs`),
//!   the MoE router `ffn_gate_inp` and Gemma 4's `per_layer_model_proj`
//!   (`tensor_allows_quantization`).
//! - `q4_k_m`: base q4_k; `attn_v` and `ffn_down` get q6_k on the first and last eighth of
//!   the layers and on every third layer between (`use_more_bits`); the tied embedding,
//!   which is also the output projection, gets q6_k (q8_0 when its rows do not fit q6_k).
//! - `q5_k_m`: the same on base q5_k. `q4_k_s`: base q4_k, q5_k for `attn_v` on the first
//!   4 layers and `ffn_down` on the first eighth, q6_k embedding. `q5_k_s`: base q5_k, q6_k
//!   embedding.
//! - Pure types put every matrix in that type.
//! - K-quants need rows that are a multiple of 256 values (Gemma 3 270M has 640, 1B 1152):
//!   such tensors fall back as llama.cpp's do: q4_k→q5_0, q5_k→q5_1, q6_k→q8_0,
//!   q2_k/q3_k→q4_0, and to f16 when even 32 does not divide the row.
//! - `--tensor-type PATTERN=TYPE` overrides the choice for matrices whose name matches the
//!   regular expression (first match wins); the fallback still applies.
use crate::error::{Error, Result};
use gemma_gguf::ggml::Type;
use regex::Regex;

/// A named mix of quantisation types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mix {
    Q4KS,
    Q4KM,
    Q5KS,
    Q5KM,
}

/// What the user asked for: one type for every matrix, or a mix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutType {
    Pure(Type),
    Mix(Mix),
}

/// Names accepted by `--type`, with what they mean.
pub const TYPE_NAMES: &[(&str, &str)] = &[
    ("f32", "32-bit float (no rounding)"),
    ("f16", "16-bit float"),
    ("bf16", "bfloat16 (Gemma's own format)"),
    ("q8_0", "8-bit, blocks of 32"),
    ("q6_k", "6-bit K-quant, every matrix"),
    ("q5_k", "5-bit K-quant, every matrix"),
    ("q4_k", "4-bit K-quant, every matrix"),
    ("q3_k", "3-bit K-quant, every matrix"),
    ("q2_k", "2-bit K-quant, every matrix"),
    ("q5_1", "5-bit with offset, blocks of 32"),
    ("q5_0", "5-bit, blocks of 32"),
    ("q4_1", "4-bit with offset, blocks of 32"),
    ("q4_0", "4-bit, blocks of 32"),
    ("q5_k_m", "mix: q5_k, q6_k for attn_v/ffn_down on some layers and the embedding"),
    ("q5_k_s", "mix: q5_k, q6_k embedding"),
    ("q4_k_m", "mix (the default): q4_k, q6_k for attn_v/ffn_down on some layers and the embedding"),
    ("q4_k_s", "mix: q4_k, q5_k for early attn_v/ffn_down, q6_k embedding"),
];

/// The default mix ("Q4_K_M-like").
pub const DEFAULT_TYPE: &str = "q4_k_m";

impl OutType {
    pub fn parse(name: &str) -> Result<OutType> {
        let lower = name.to_ascii_lowercase();
        let mix = match lower.as_str() {
            "q4_k_s" => Some(Mix::Q4KS),
            "q4_k_m" | "default" => Some(Mix::Q4KM),
            "q5_k_s" => Some(Mix::Q5KS),
            "q5_k_m" => Some(Mix::Q5KM),
            _ => None,
        };
        if let Some(m) = mix {
            return Ok(OutType::Mix(m));
        }
        let pure = match lower.as_str() {
            "f32" => Type::F32,
            "f16" => Type::F16,
            "bf16" => Type::BF16,
            "q8_0" => Type::Q8_0,
            "q6_k" => Type::Q6_K,
            "q5_k" => Type::Q5_K,
            "q4_k" => Type::Q4_K,
            "q3_k" => Type::Q3_K,
            "q2_k" => Type::Q2_K,
            "q5_1" => Type::Q5_1,
            "q5_0" => Type::Q5_0,
            "q4_1" => Type::Q4_1,
            "q4_0" => Type::Q4_0,
            _ => {
                let known = TYPE_NAMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ");
                return Err(Error::UnknownType { name: name.to_owned(), known });
            }
        };
        Ok(OutType::Pure(pure))
    }

    pub fn name(self) -> String {
        match self {
            OutType::Pure(t) => t.name().to_ascii_lowercase(),
            OutType::Mix(Mix::Q4KS) => "q4_k_s".into(),
            OutType::Mix(Mix::Q4KM) => "q4_k_m".into(),
            OutType::Mix(Mix::Q5KS) => "q5_k_s".into(),
            OutType::Mix(Mix::Q5KM) => "q5_k_m".into(),
        }
    }

    /// `general.file_type`: llama.cpp's `llama_ftype` (include/llama.h).
    pub fn llama_ftype(self) -> u32 {
        match self {
            OutType::Mix(Mix::Q4KS) => 14,
            OutType::Mix(Mix::Q4KM) => 15,
            OutType::Mix(Mix::Q5KS) => 16,
            OutType::Mix(Mix::Q5KM) => 17,
            OutType::Pure(t) => match t {
                t if t == Type::F32 => 0,
                t if t == Type::F16 => 1,
                t if t == Type::Q4_0 => 2,
                t if t == Type::Q4_1 => 3,
                t if t == Type::Q8_0 => 7,
                t if t == Type::Q5_0 => 8,
                t if t == Type::Q5_1 => 9,
                t if t == Type::Q2_K => 10,
                t if t == Type::Q3_K => 11,
                t if t == Type::Q4_K => 14,
                t if t == Type::Q5_K => 16,
                t if t == Type::Q6_K => 18,
                _ => 32, // BF16
            },
        }
    }

    /// The type most matrices get.
    fn base(self) -> Type {
        match self {
            OutType::Pure(t) => t,
            OutType::Mix(Mix::Q4KS | Mix::Q4KM) => Type::Q4_K,
            OutType::Mix(Mix::Q5KS | Mix::Q5KM) => Type::Q5_K,
        }
    }
}

/// A `--tensor-type PATTERN=TYPE` override.
#[derive(Clone, Debug)]
pub struct Override {
    pub pattern: Regex,
    pub ty: Type,
    pub spec: String,
}

impl Override {
    pub fn parse(spec: &str) -> Result<Override> {
        let bad = |what: String| Error::BadOverride { spec: spec.to_owned(), what };
        let (pat, ty) = spec.rsplit_once('=').ok_or_else(|| bad("expected PATTERN=TYPE, e.g. ffn_down=q6_k".into()))?;
        let pattern = Regex::new(pat).map_err(|e| bad(format!("bad pattern: {e}")))?;
        let ty = match OutType::parse(ty)? {
            OutType::Pure(t) => t,
            OutType::Mix(_) => return Err(bad("a tensor gets one type, not a mix".into())),
        };
        Ok(Override { pattern, ty, spec: spec.to_owned() })
    }
}

/// What a tensor is, for the mix rules: llama.cpp's `tensor_get_category` (the same
/// substring tests in the same order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// `output.weight`, or a token-indexed table (`token_embd`, `per_layer_token_embd`).
    TokenEmbd,
    AttnV,
    AttnK,
    AttnOutput,
    FfnDown,
    Other,
}

fn role(name: &str) -> Role {
    if name == "output.weight" || name == "token_embd.weight" || name == "per_layer_token_embd.weight" {
        Role::TokenEmbd
    } else if name.contains("attn_v.weight") {
        Role::AttnV
    } else if name.contains("attn_k.weight") {
        Role::AttnK
    } else if name.contains("attn_output.weight") {
        Role::AttnOutput
    } else if name.contains("ffn_up") || name.contains("ffn_gate") {
        Role::Other
    } else if name.contains("ffn_down") {
        Role::FfnDown
    } else {
        Role::Other
    }
}

/// llama.cpp's `tensor_allows_quantization`, for the tensors Gemma files have: 1-D tensors,
/// norms, the MoE router (`ffn_gate_inp`), the PLE model projection, AltUp and LAuReL
/// (Gemma 3n) and anything not named `*weight` (the `.scale` vectors) keep full precision.
fn allows_quantization(name: &str, n_dims: usize) -> bool {
    n_dims >= 2
        && name.ends_with("weight")
        && !name.contains("_norm.weight")
        && !name.contains("ffn_gate_inp.weight")
        && !name.contains("altup")
        && !name.contains("laurel")
        && !name.contains("per_layer_model_proj")
}

fn layer_of(name: &str) -> Option<usize> {
    name.strip_prefix("blk.")?.split('.').next()?.parse().ok()
}

/// llama.cpp's `use_more_bits`: the first and last eighth of the layers, and every third
/// layer between.
fn use_more_bits(il: usize, n_layer: usize) -> bool {
    let (i, n) = (il as i64, n_layer as i64);
    i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2
}

/// The chosen type of one tensor and why.
#[derive(Clone, Debug)]
pub struct Choice {
    pub ty: Type,
    pub reason: String,
}

/// Chooses each tensor's type, in file order, as `llama_model_quantize` does: like its
/// `quantize_state_impl`, it counts `attn_v` and `ffn_down` tensors as they come
/// (`llama_tensor_get_type_impl`, src/llama-quant.cpp, llama-cpp-sys-2 0.1.161).
pub struct Planner<'a> {
    out: OutType,
    overrides: &'a [Override],
    /// `hparams.n_layer_all`: the `n` of the `ffn_down` rules.
    n_layer: usize,
    /// `hparams.n_expert` (0 without MoE): with more than one, `ffn_down` rules take the
    /// layer from the name; with exactly 8, attention tensors get more bits.
    n_expert: usize,
    /// The number of `attn_v` tensors in the file (`n_attention_wv`).
    n_attn_v: usize,
    i_attn_v: usize,
    i_ffn_down: usize,
}

impl<'a> Planner<'a> {
    /// `names`: every tensor name of the output file, in order.
    pub fn new<'n>(
        names: impl IntoIterator<Item = &'n str>,
        out: OutType,
        overrides: &'a [Override],
        n_layer: usize,
        n_expert: usize,
    ) -> Self {
        let n_attn_v = names.into_iter().filter(|n| role(n) == Role::AttnV).count();
        Planner { out, overrides, n_layer, n_expert, n_attn_v, i_attn_v: 0, i_ffn_down: 0 }
    }

    /// Chooses the output type of tensor `name` with GGUF dims `ne` (ne0 = row length);
    /// call it once per tensor, in file order.
    pub fn choose(&mut self, name: &str, ne: &[u64]) -> Choice {
        // ggml_n_dims: trailing dimensions of 1 do not count.
        let n_dims = ne.iter().rposition(|&d| d > 1).map_or(1, |i| i + 1);
        if !allows_quantization(name, n_dims) {
            let why = if n_dims < 2 { "1-D" } else { "not quantised by llama.cpp" };
            return Choice { ty: Type::F32, reason: format!("{why}: kept f32") };
        }
        let mut reasons = Vec::new();
        let mut ty = self.out.base();
        if let Some(o) = self.overrides.iter().find(|o| o.pattern.is_match(name)) {
            ty = o.ty;
            reasons.push(format!("--tensor-type {}", o.spec));
        } else if let OutType::Mix(mix) = self.out {
            ty = self.mix_rule(mix, name, ne, ty, &mut reasons);
        }
        fallback(ne[0], ty, reasons)
    }

    fn mix_rule(&mut self, mix: Mix, name: &str, ne: &[u64], base: Type, reasons: &mut Vec<String>) -> Type {
        let eight_experts = self.n_expert == 8;
        match role(name) {
            Role::TokenEmbd => {
                // Tied: the token table is quantised as the output (and Gemma's are tied).
                if !ne[0].is_multiple_of(base.block_size() as u64) {
                    reasons.push(format!(
                        "tied embedding (a token table, as the output): q8_0, rows of {} do not fit {}",
                        ne[0],
                        base.name()
                    ));
                    Type::Q8_0
                } else {
                    reasons.push("tied embedding (a token table, as the output): q6_k".into());
                    Type::Q6_K
                }
            }
            Role::AttnV => {
                let (i, n) = (self.i_attn_v, self.n_attn_v);
                self.i_attn_v += 1;
                if eight_experts {
                    reasons.push("attn_v with 8 experts: q8_0".into());
                    return Type::Q8_0;
                }
                match mix {
                    Mix::Q4KM | Mix::Q5KM if use_more_bits(i, n) => {
                        reasons.push(format!("attn_v {i} of {n}, a more-bits one: q6_k"));
                        Type::Q6_K
                    }
                    Mix::Q4KS if i < 4 => {
                        reasons.push("one of the first 4 attn_v: q5_k".into());
                        Type::Q5_K
                    }
                    _ => base,
                }
            }
            Role::AttnK if eight_experts => {
                reasons.push("attn_k with 8 experts: q8_0".into());
                Type::Q8_0
            }
            Role::AttnOutput if eight_experts && matches!(mix, Mix::Q4KS | Mix::Q4KM) => {
                reasons.push("attn_output with 8 experts: q5_k".into());
                Type::Q5_K
            }
            Role::FfnDown => {
                // With experts the layer comes from the name (llama.cpp's `layer_info`).
                let il = if self.n_expert > 1 { layer_of(name).unwrap_or(0) } else { self.i_ffn_down };
                self.i_ffn_down += 1;
                let n = self.n_layer;
                match mix {
                    Mix::Q4KM | Mix::Q5KM if use_more_bits(il, n) => {
                        reasons.push(format!("ffn_down of layer {il}, a more-bits layer: q6_k"));
                        Type::Q6_K
                    }
                    Mix::Q4KS if il < n / 8 => {
                        reasons.push("ffn_down on the first eighth: q5_k".into());
                        Type::Q5_K
                    }
                    _ => base,
                }
            }
            _ => base,
        }
    }
}

/// llama.cpp's `tensor_type_fallback`: K-quants need rows that are a multiple of 256.
fn fallback(ncols: u64, mut ty: Type, mut reasons: Vec<String>) -> Choice {
    if !ncols.is_multiple_of(ty.block_size() as u64) {
        let wanted = ty;
        ty = match ty {
            t if t == Type::Q4_K => Type::Q5_0,
            t if t == Type::Q5_K => Type::Q5_1,
            t if t == Type::Q6_K => Type::Q8_0,
            t if t == Type::Q2_K || t == Type::Q3_K => Type::Q4_0,
            t => t,
        };
        if !ncols.is_multiple_of(ty.block_size() as u64) {
            ty = Type::F16;
        }
        reasons.push(format!(
            "rows of {ncols} are not a multiple of {} ({}): {}",
            wanted.block_size(),
            wanted.name(),
            ty.name()
        ));
    }
    Choice { ty, reason: reasons.join("; ") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_bits_layers_of_18_and_26() {
        // 270M (18 layers) and 1B (26 layers).
        let l18: Vec<usize> = (0..18).filter(|&i| use_more_bits(i, 18)).collect();
        assert_eq!(l18, vec![0, 1, 4, 7, 10, 13, 15, 16, 17]); // as in the real 270M Q4_K_M file
        let l26: Vec<usize> = (0..26).filter(|&i| use_more_bits(i, 26)).collect();
        assert_eq!(l26, vec![0, 1, 2, 5, 8, 11, 14, 17, 20, 22, 23, 24, 25]);
    }

    #[test]
    fn q4_k_m_on_gemma3_270m_shapes() {
        let m = OutType::parse("q4_k_m").unwrap();
        let c = |name: &str, ne: &[u64]| Planner::new([], m, &[], 18, 0).choose(name, ne).ty;
        assert_eq!(c("token_embd.weight", &[640, 262144]), Type::Q8_0);
        let names: Vec<String> = (0..18).map(|il| format!("blk.{il}.attn_v.weight")).collect();
        let mut p = Planner::new(names.iter().map(String::as_str), m, &[], 18, 0);
        let v: Vec<Type> = names.iter().map(|n| p.choose(n, &[640, 256]).ty).collect();
        assert_eq!(v[0], Type::Q8_0); // q6_k → fallback
        assert_eq!(v[2], Type::Q5_0); // q4_k → fallback
        let mut p = Planner::new([], m, &[], 18, 0);
        let d: Vec<Type> = (0..3).map(|il| p.choose(&format!("blk.{il}.ffn_down.weight"), &[2048, 640]).ty).collect();
        assert_eq!(d, vec![Type::Q6_K, Type::Q6_K, Type::Q4_K]);
        assert_eq!(c("blk.0.attn_output.weight", &[1024, 640]), Type::Q4_K);
        assert_eq!(c("blk.0.attn_norm.weight", &[640]), Type::F32);
        assert_eq!(c("blk.0.ffn_gate.weight", &[640, 2048]), Type::Q5_0);
    }

    #[test]
    fn overrides_win_and_still_fall_back() {
        let o = [Override::parse("ffn_gate=q6_k").unwrap()];
        let m = OutType::parse("q4_k_m").unwrap();
        let mut p = Planner::new([], m, &o, 18, 0);
        assert_eq!(p.choose("blk.3.ffn_gate.weight", &[1024, 64]).ty, Type::Q6_K);
        assert_eq!(p.choose("blk.3.ffn_gate.weight", &[640, 64]).ty, Type::Q8_0);
        assert!(Override::parse("nope").is_err());
        assert!(Override::parse("x=q4_k_m").is_err());
        assert!(Override::parse("(=q8_0").is_err());
    }

    #[test]
    fn gemma4_tensors_follow_llama_quant() {
        let m = OutType::parse("q4_k_m").unwrap();
        let mut p = Planner::new([], m, &[], 4, 0);
        // Both token-indexed tables are quantised as the (tied) output.
        assert_eq!(p.choose("per_layer_token_embd.weight", &[256, 512]).ty, Type::Q6_K);
        assert_eq!(p.choose("token_embd.weight", &[64, 512]).ty, Type::Q8_0);
        // Never quantised: the PLE model projection, the router, 1-D tensors and scales.
        assert_eq!(p.choose("per_layer_model_proj.weight", &[256, 256]).ty, Type::F32);
        assert_eq!(p.choose("blk.0.ffn_gate_inp.weight", &[256, 8]).ty, Type::F32);
        assert_eq!(p.choose("rope_freqs.weight", &[32]).ty, Type::F32);
        assert_eq!(p.choose("blk.0.ffn_down_exps.scale", &[8]).ty, Type::F32);
        assert_eq!(p.choose("blk.0.layer_output_scale.weight", &[1]).ty, Type::F32);
        // Pure types too.
        let mut p = Planner::new([], OutType::parse("q8_0").unwrap(), &[], 4, 0);
        assert_eq!(p.choose("per_layer_model_proj.weight", &[256, 256]).ty, Type::F32);
        assert_eq!(p.choose("blk.0.proj.weight", &[64, 256]).ty, Type::Q8_0);
        // --tensor-type names the PLE table; the router stays f32 whatever is asked.
        let o = [Override::parse("per_layer_token_embd=q4_k").unwrap(), Override::parse("ffn_gate_inp=q8_0").unwrap()];
        let mut p = Planner::new([], m, &o, 4, 0);
        assert_eq!(p.choose("per_layer_token_embd.weight", &[256, 512]).ty, Type::Q4_K);
        assert_eq!(p.choose("blk.0.ffn_gate_inp.weight", &[256, 8]).ty, Type::F32);
    }

    #[test]
    fn attn_v_counts_tensors_not_layers() {
        // Gemma 4: KV-shared and K=V layers have no attn_v, so the i-th attn_v is not layer i.
        let m = OutType::parse("q4_k_m").unwrap();
        let names = ["blk.0.attn_v.weight", "blk.2.attn_v.weight", "blk.4.attn_v.weight"];
        let mut p = Planner::new(names, m, &[], 30, 0);
        let t: Vec<Type> = names.iter().map(|n| p.choose(n, &[256, 256]).ty).collect();
        // use_more_bits(i, 3) holds for i = 2 only; by layer (of 30) it would hold for 0.
        assert_eq!(t, vec![Type::Q4_K, Type::Q4_K, Type::Q6_K]);
    }

    #[test]
    fn eight_experts_rules() {
        let m = OutType::parse("q4_k_m").unwrap();
        let mut p = Planner::new([], m, &[], 4, 8);
        assert_eq!(p.choose("blk.1.attn_k.weight", &[256, 256]).ty, Type::Q8_0);
        assert_eq!(p.choose("blk.1.attn_v.weight", &[256, 256]).ty, Type::Q8_0);
        assert_eq!(p.choose("blk.1.attn_output.weight", &[256, 256]).ty, Type::Q5_K);
        // ffn_down with experts: the layer from the name (3 of 4: a more-bits layer).
        assert_eq!(p.choose("blk.3.ffn_down_exps.weight", &[256, 256, 8]).ty, Type::Q6_K);
        assert_eq!(p.choose("blk.1.ffn_down.weight", &[256, 256]).ty, Type::Q4_K);
    }

    #[test]
    fn unknown_type_names_the_known_ones() {
        let e = OutType::parse("q7").unwrap_err().to_string();
        assert!(e.contains("q4_k_m") && e.contains("q8_0"), "{e}");
    }
}
