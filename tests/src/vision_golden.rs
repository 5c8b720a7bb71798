//! The transformers references of the tiny vision checkpoint `tests/data/tiny/gemma3-vision`
//! (scripts/make_tiny_gemma3_vision.py): the processor's pixel tensors of a few images of odd
//! sizes and formats, and `get_image_features` of two 64×64 images.
use crate::workspace_root;
use std::path::{Path, PathBuf};

/// One image and the pixel tensor transformers' processor makes of it (`[3][size][size]`).
pub struct PixelCase {
    pub image: PathBuf,
    pub pixels: Vec<f32>,
}

/// The vision reference.
pub struct VisionGolden {
    pub dir: PathBuf,
    pub pixels: Vec<PixelCase>,
    /// Images (64×64, no resize) and their projected features, `[n_tokens][n_embd]` each.
    pub embd: Vec<(PathBuf, Vec<Vec<f32>>)>,
}

/// Little-endian f32s.
pub fn read_f32(path: &Path) -> Vec<f32> {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect()
}

/// Reads the fixture (panics on a missing or malformed one).
pub fn vision_golden() -> VisionGolden {
    let dir = workspace_root().join("tests/data/tiny/gemma3-vision");
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("golden.json")).unwrap()).unwrap();
    let images = dir.join("images");
    let pixels = g["pixels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| PixelCase {
            image: images.join(p["image"].as_str().unwrap()),
            pixels: read_f32(&images.join(p["pixels"].as_str().unwrap())),
        })
        .collect();
    let shape: Vec<usize> = g["embd_shape"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    let all = read_f32(&dir.join("embd.f32"));
    assert_eq!(all.len(), shape.iter().product::<usize>());
    let per_image = shape[1] * shape[2];
    let embd = g["embd_images"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let rows = all[i * per_image..(i + 1) * per_image].chunks(shape[2]).map(|r| r.to_vec()).collect();
            (images.join(name.as_str().unwrap()), rows)
        })
        .collect();
    VisionGolden { dir, pixels, embd }
}

/// max |a − b| over two `[n][e]` tables, and max |b| (the scale).
pub fn max_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> (f64, f64) {
    assert_eq!(a.len(), b.len(), "token counts differ");
    let mut d = 0f64;
    let mut s = 0f64;
    for (x, y) in a.iter().zip(b) {
        assert_eq!(x.len(), y.len(), "widths differ");
        for (p, q) in x.iter().zip(y) {
            d = d.max((p - q).abs() as f64);
            s = s.max(q.abs() as f64);
        }
    }
    (d, s)
}

/// One image+text prompt of the language-model reference (`lm.json`).
pub struct LmCase {
    pub name: String,
    /// Input ids; each image is a run of `image_token` ids.
    pub ids: Vec<u32>,
    pub images: Vec<PathBuf>,
    /// transformers' logits at every position, `[n_pos][n_vocab]`.
    pub logits: Vec<Vec<f32>>,
    /// Greedy continuation and the logits each step was chosen from.
    pub greedy: Vec<u32>,
    pub greedy_logits: Vec<Vec<f32>>,
}

/// The language-model reference of the tiny vision checkpoint, and its image token id.
pub fn lm_golden() -> (Vec<LmCase>, u32) {
    lm_golden_in(&workspace_root().join("tests/data/tiny/gemma3-vision"))
}

/// The language-model reference (`lm.json`) of the checkpoint in `dir`, and its image token
/// id (from `lm.json`, else `golden.json`).
pub fn lm_golden_in(dir: &Path) -> (Vec<LmCase>, u32) {
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(dir.join(f)).unwrap()).unwrap()
    };
    let g = read("lm.json");
    let n_vocab = g["n_vocab"].as_u64().unwrap() as usize;
    let ids = |v: &serde_json::Value| -> Vec<u32> {
        v.as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect()
    };
    let rows = |f: &serde_json::Value| -> Vec<Vec<f32>> {
        read_f32(&dir.join(f.as_str().unwrap())).chunks(n_vocab).map(|r| r.to_vec()).collect()
    };
    let cases = g["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| LmCase {
            name: c["name"].as_str().unwrap().into(),
            ids: ids(&c["ids"]),
            images: c["images"]
                .as_array()
                .unwrap()
                .iter()
                .map(|f| dir.join("images").join(f.as_str().unwrap()))
                .collect(),
            logits: rows(&c["logits"]),
            greedy: ids(&c["greedy"]),
            greedy_logits: rows(&c["greedy_logits"]),
        })
        .collect();
    let image_token = match g.get("image_token") {
        Some(t) => t.as_u64(),
        None => read("golden.json")["image_token"].as_u64(),
    };
    (cases, image_token.unwrap() as u32)
}
