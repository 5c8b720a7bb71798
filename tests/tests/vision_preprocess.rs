//! Preprocessing against transformers' `Gemma3ImageProcessor` (PIL backend, 5.24.0, Pillow
//! 13.0.0) on generated images of odd sizes and formats (tests/data/tiny/gemma3-vision/images,
//! scripts/make_tiny_gemma3_vision.py): up- and downscaled, with alpha, grey, PNG, JPEG and
//! lossless WebP, resized to 64×64.
//!
//! Bounds. Lossless formats decode to the same bytes in both, and the resize reimplements
//! Pillow's fixed-point bilinear filter, so the resized bytes must be identical: what is
//! left is float rounding of `(x/255 − 0.5)/0.5` (a few ulps, bound 1e-6). JPEG: Pillow
//! decodes with libjpeg-turbo, the `image` crate with zune-jpeg; both are conformant but
//! their IDCT and chroma upsampling round differently, so decoded bytes may differ by a few
//! levels (the JPEG standard's IDCT accuracy test allows ±1 per sample, chroma upsampling
//! adds more at edges). Bound: 6 levels = 6/127.5 in the normalised tensor; the printed
//! figure is the measured one.
use gemma_gguf::vision::preprocess::{preprocess, PixelSpec, MAX_IMAGE_PIXELS};
use gemma_tests::vision_golden::vision_golden;

#[test]
fn pixel_tensors_match_transformers() {
    let g = vision_golden();
    let spec = PixelSpec { size: 64, mean: [0.5; 3], std: [0.5; 3] };
    let mut failures = Vec::new();
    for case in &g.pixels {
        let name = case.image.file_name().unwrap().to_string_lossy().into_owned();
        let ours = preprocess(&std::fs::read(&case.image).unwrap(), &spec, MAX_IMAGE_PIXELS)
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(ours.len(), case.pixels.len(), "{name}");
        let d = ours.iter().zip(&case.pixels).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        let n_off = ours.iter().zip(&case.pixels).filter(|(a, b)| (*a - *b).abs() > 1e-6).count();
        let bound = if name.ends_with(".jpg") { 6.0 / 127.5 } else { 1e-6 };
        println!(
            "{name:>24}: max|Δ| {d:.3e} ({:.2} levels), {n_off} of {} values off, bound {bound:.3e}",
            d * 127.5,
            ours.len()
        );
        if d > bound {
            failures.push(name);
        }
    }
    assert!(failures.is_empty(), "pixel tensors differ from transformers': {failures:?}");
}
