//! Image bytes → the encoder's pixel tensor, as transformers' `Gemma3ImageProcessor` makes it
//! (the PIL backend, `image_processing_pil_gemma3.py`, transformers 5.24.0, with the real
//! checkpoints' `preprocessor_config.json`: bilinear, rescale 1/255, mean = std = 0.5, RGB,
//! no pan-and-scan):
//!
//! 1. decode PNG, JPEG or WebP (the `image` crate), refusing an image whose header declares
//!    more than a pixel limit before any pixel is decoded (decompression bombs);
//! 2. to RGB: grey is replicated, transparency is composited onto white
//!    (`transformers.image_transforms.convert_to_rgb`, then PIL's `alpha_composite`);
//! 3. resize to `size`×`size` with PIL's bilinear filter, which is antialiased: the
//!    triangle's support widens by the downscale factor (Pillow's `Resample.c`,
//!    `ImagingResampleInner`, Pillow 13.0.0; reimplemented below, 8-bit fixed point and the
//!    same pass order as Pillow, so the resized bytes are Pillow's);
//! 4. `(x / 255 − mean) / std` per channel, planar `[3][size][size]` (ggml `[size, size, 3]`).
//!
//! EXIF orientation is not applied (transformers does not either when given an image).
use crate::error::{Error, Result};
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};
use std::io::Cursor;

/// Default pixel limit: 8192 × 8192 (64 Mi pixels, 192 MiB as RGB). Gemma 3 sees 896 × 896;
/// anything far larger is refused rather than decoded.
pub const MAX_IMAGE_PIXELS: u64 = 8192 * 8192;

/// An 8-bit RGB image, row-major, 3 bytes a pixel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RgbImage {
    pub width: u32,
    pub height: u32,
    pub data: Vec<u8>,
}

/// How the encoder wants its pixels: square side and per-channel mean and std (of x / 255).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PixelSpec {
    pub size: u32,
    pub mean: [f32; 3],
    pub std: [f32; 3],
}

/// The format from the first bytes; anything else is refused with what it looks like.
fn sniff(bytes: &[u8]) -> Result<ImageFormat> {
    let fmt = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        ImageFormat::Png
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        ImageFormat::Jpeg
    } else if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        ImageFormat::WebP
    } else {
        let what = match bytes {
            [] => "empty input".to_owned(),
            b if b.starts_with(b"GIF8") => "a GIF".to_owned(),
            b if b.starts_with(b"BM") => "a BMP".to_owned(),
            b if b.len() >= 12 && &b[4..8] == b"ftyp" => "an HEIF/AVIF file".to_owned(),
            b => format!("unknown format (starts with {:02x?})", &b[..b.len().min(8)]),
        };
        return Err(Error::ImageFormat { what });
    };
    Ok(fmt)
}

fn format_name(f: ImageFormat) -> &'static str {
    match f {
        ImageFormat::Png => "PNG",
        ImageFormat::Jpeg => "JPEG",
        _ => "WebP",
    }
}

/// Decodes PNG, JPEG or WebP bytes to RGB. The header's dimensions are checked against
/// `max_pixels` before decoding, and the decoder's own allocation limit is set to the RGBA
/// size of that many pixels (16-bit images are decoded to 8 bits).
pub fn decode(bytes: &[u8], max_pixels: u64) -> Result<RgbImage> {
    let format = sniff(bytes)?;
    let name = format_name(format);
    let bad = |e: image::ImageError| Error::ImageDecode { format: name, what: e.to_string() };
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut limits = Limits::default();
    limits.max_alloc = Some(max_pixels.saturating_mul(8).max(1 << 20));
    reader.limits(limits);
    let decoder = reader.into_decoder().map_err(bad)?;
    let (width, height) = decoder.dimensions();
    let pixels = width as u64 * height as u64;
    if pixels > max_pixels {
        return Err(Error::ImageTooLarge { width, height, pixels, max: max_pixels });
    }
    if pixels == 0 {
        return Err(Error::ImageDecode { format: name, what: format!("{width}×{height}: no pixels") });
    }
    let img = DynamicImage::from_decoder(decoder).map_err(bad)?;
    Ok(to_rgb(img))
}

/// RGB as transformers' `convert_to_rgb` makes it: an image with alpha is composited onto
/// opaque white with Pillow's integer `alpha_composite` (`AlphaComposite.c`: 7 extra bits
/// of precision, division by 255 rounded); grey is replicated.
fn to_rgb(img: DynamicImage) -> RgbImage {
    let (width, height) = (img.width(), img.height());
    let data = if img.color().has_alpha() {
        let rgba = img.into_rgba8();
        let mut out = Vec::with_capacity(width as usize * height as usize * 3);
        for px in rgba.as_raw().chunks_exact(4) {
            let a = px[3] as u32;
            for &c in &px[..3] {
                out.push(if a == 0 { 255 } else { composite_on_white(c as u32, a) });
            }
        }
        out
    } else {
        img.into_rgb8().into_raw()
    };
    RgbImage { width, height, data }
}

/// Pillow's `ImagingAlphaComposite` for an opaque white destination: `coef1 = a·128`,
/// `coef2 = (255 − a)·128`, then a rounded division by 255 and the 7 bits shifted out.
fn composite_on_white(c: u32, a: u32) -> u8 {
    const PRECISION_BITS: u32 = 7;
    let coef1 = a << PRECISION_BITS;
    let coef2 = (255 << PRECISION_BITS) - coef1;
    let tmp = c * coef1 + 255 * coef2 + (0x80 << PRECISION_BITS);
    let div255 = ((tmp >> 8) + tmp) >> 8;
    (div255 >> PRECISION_BITS) as u8
}

/// Pillow's fixed-point precision for 8-bit resampling: 32 − 8 − 2 bits (`Resample.c`).
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// Pillow's resampling filters (`Resample.c`: `BILINEAR` = triangle, support 1; `BICUBIC` =
/// Keys' cubic with a = −0.5, support 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    Bilinear,
    Bicubic,
}

impl Filter {
    fn support(self) -> f64 {
        match self {
            Filter::Bilinear => 1.0,
            Filter::Bicubic => 2.0,
        }
    }

    fn weight(self, x: f64) -> f64 {
        let x = x.abs();
        match self {
            Filter::Bilinear => {
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            Filter::Bicubic => {
                const A: f64 = -0.5;
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
        }
    }
}

/// Per output pixel: the first input index and the fixed-point weights (Pillow's
/// `precompute_coeffs` with the filter, its support widened by the downscale factor, then
/// `normalize_coeffs_8bpc`).
fn coefficients_with(in_size: u32, out_size: u32, filter: Filter) -> Vec<(usize, Vec<i32>)> {
    let scale = in_size as f64 / out_size as f64;
    let filterscale = scale.max(1.0);
    let support = filter.support() * filterscale;
    let ss = 1.0 / filterscale;
    (0..out_size)
        .map(|xx| {
            let center = (xx as f64 + 0.5) * scale;
            // C casts truncate toward zero; Pillow clamps afterwards.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let w: Vec<f64> = (xmin..xmax).map(|x| filter.weight((x as f64 - center + 0.5) * ss)).collect();
            let sum: f64 = w.iter().sum();
            let k = w
                .iter()
                .map(|&v| {
                    let v = if sum != 0.0 { v / sum } else { v };
                    let f = v * (1u32 << PRECISION_BITS) as f64;
                    if f < 0.0 {
                        (f - 0.5) as i32
                    } else {
                        (f + 0.5) as i32
                    }
                })
                .collect();
            (xmin, k)
        })
        .collect()
}

/// One fixed-point sum clipped to a byte (Pillow's `clip8`).
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Resizes with Pillow's antialiased bilinear filter: two passes, each rounded to bytes, as
/// `Image.resize(size, Image.BILINEAR)` does. Pillow 13 runs the vertical pass first when
/// the height shrinks by more than twice as many pixels as the width (`ImagingResampleInner`),
/// the horizontal one first otherwise; the order changes the rounding, so it is kept.
pub fn resize_bilinear(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_with(img, width, height, Filter::Bilinear)
}

/// [`resize_bilinear`] with Pillow's bicubic filter (`Image.resize(size, Image.BICUBIC)`), as
/// Gemma 4's processor resizes.
pub fn resize_bicubic(img: &RgbImage, width: u32, height: u32) -> RgbImage {
    resize_with(img, width, height, Filter::Bicubic)
}

fn resize_with(img: &RgbImage, width: u32, height: u32, filter: Filter) -> RgbImage {
    let (dh, dw) = (img.height as i64 - height as i64, img.width as i64 - width as i64);
    let vertical_first = dh > 0 && dh > 2 * dw;
    let pass_h = |i: &RgbImage| if i.width != width { resample_rows(i, width, filter) } else { i.clone() };
    let pass_v = |i: &RgbImage| {
        if i.height != height {
            transpose(&resample_rows(&transpose(i), height, filter))
        } else {
            i.clone()
        }
    };
    if vertical_first {
        pass_h(&pass_v(img))
    } else {
        pass_v(&pass_h(img))
    }
}

/// One horizontal pass: every row resampled to `width` pixels.
fn resample_rows(img: &RgbImage, width: u32, filter: Filter) -> RgbImage {
    let (iw, ih) = (img.width as usize, img.height as usize);
    let half = 1i32 << (PRECISION_BITS - 1);
    let kx = coefficients_with(img.width, width, filter);
    let mut out = vec![0u8; width as usize * ih * 3];
    for y in 0..ih {
        let row = &img.data[y * iw * 3..(y + 1) * iw * 3];
        for (x, (x0, k)) in kx.iter().enumerate() {
            for c in 0..3 {
                let acc = k.iter().enumerate().fold(half, |a, (i, &w)| a + row[(x0 + i) * 3 + c] as i32 * w);
                out[(y * width as usize + x) * 3 + c] = clip8(acc);
            }
        }
    }
    RgbImage { width, height: img.height, data: out }
}

/// Rows become columns (the vertical pass is the horizontal one on the transpose; the sums
/// are the same).
fn transpose(img: &RgbImage) -> RgbImage {
    let (w, h) = (img.width as usize, img.height as usize);
    let mut out = vec![0u8; w * h * 3];
    for y in 0..h {
        for x in 0..w {
            out[(x * h + y) * 3..(x * h + y) * 3 + 3].copy_from_slice(&img.data[(y * w + x) * 3..(y * w + x) * 3 + 3]);
        }
    }
    RgbImage { width: img.height, height: img.width, data: out }
}

/// `(x / 255 − mean) / std`, planar `[3][h][w]`.
pub fn pixel_tensor(img: &RgbImage, spec: &PixelSpec) -> Vec<f32> {
    let n = img.width as usize * img.height as usize;
    let mut out = vec![0f32; 3 * n];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            out[c * n + i] = (px[c] as f32 / 255.0 - spec.mean[c]) / spec.std[c];
        }
    }
    out
}

/// Bytes → the encoder's pixel tensor (decode, RGB, resize, normalise).
pub fn preprocess(bytes: &[u8], spec: &PixelSpec, max_pixels: u64) -> Result<Vec<f32>> {
    let img = decode(bytes, max_pixels)?;
    let img = resize_bilinear(&img, spec.size, spec.size);
    Ok(pixel_tensor(&img, spec))
}

/// Gemma 4's resize rule (`get_aspect_ratio_preserving_size`, image_processing_pil_gemma4.py,
/// transformers 5.24.0): the largest aspect-preserving size with at most
/// `max_soft_tokens · kernel²` patches whose sides are multiples of `patch · kernel`; a side
/// that would round to 0 becomes one cell and the other `⌊long/short⌋` cells, capped at
/// `max_soft_tokens` cells. Returns (width, height).
pub fn gemma4_target_size(
    width: u32,
    height: u32,
    patch: u32,
    kernel: u32,
    max_soft_tokens: u32,
) -> Result<(u32, u32)> {
    let bad = |what: String| Error::ImageDecode { format: "image", what };
    if width == 0 || height == 0 || patch == 0 || kernel == 0 || max_soft_tokens == 0 {
        return Err(bad(format!("{width}×{height} image, patch {patch}, kernel {kernel}, {max_soft_tokens} tokens")));
    }
    let (h, w) = (height as f64, width as f64);
    let max_patches = max_soft_tokens as f64 * (kernel as f64).powi(2);
    let target_px = max_patches * (patch as f64).powi(2);
    let factor = (target_px / (h * w)).sqrt();
    let side = (patch * kernel) as f64;
    let mut th = ((factor * h) / side).floor() * side;
    let mut tw = ((factor * w) / side).floor() * side;
    if th == 0.0 && tw == 0.0 {
        return Err(bad(format!("{width}×{height} would be resized to 0×0")));
    }
    // (max_patches // kernel²) cells = max_soft_tokens cells
    let max_side = max_soft_tokens as f64 * side;
    if th == 0.0 {
        th = side;
        tw = ((w / h).floor() * side).min(max_side);
    } else if tw == 0.0 {
        tw = side;
        th = ((h / w).floor() * side).min(max_side);
    }
    if th * tw > target_px || tw < 1.0 || th < 1.0 {
        return Err(bad(format!("{width}×{height} → {tw}×{th} exceeds {max_patches} patches")));
    }
    Ok((tw as u32, th as u32))
}

/// Bytes → Gemma 4's pixel tensor: decode, RGB, the aspect-preserving bicubic resize of
/// [`gemma4_target_size`] (skipped when the size is already right, as transformers does),
/// `(x/255 − mean)/std` planar `[3][h][w]` (mean 0, std 1 for Gemma 4: rescale only).
/// Returns (width, height, pixels).
pub fn preprocess_gemma4(
    bytes: &[u8],
    spec: &PixelSpec,
    patch: u32,
    kernel: u32,
    max_soft_tokens: u32,
    max_pixels: u64,
) -> Result<(u32, u32, Vec<f32>)> {
    let img = decode(bytes, max_pixels)?;
    let (w, h) = gemma4_target_size(img.width, img.height, patch, kernel, max_soft_tokens)?;
    let img = if (w, h) == (img.width, img.height) { img } else { resize_bicubic(&img, w, h) };
    Ok((w, h, pixel_tensor(&img, spec)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn png(w: u32, h: u32) -> Vec<u8> {
        let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8, y as u8, (x ^ y) as u8]));
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    /// Sizes from transformers' `get_aspect_ratio_preserving_size` (5.24.0), including the
    /// branches where one side would round to 0 cells (the long side is then capped).
    #[test]
    fn gemma4_sizes_match_transformers() {
        // ((width, height, patch, kernel, max_soft_tokens), (width, height))
        type Case = ((u32, u32, u32, u32, u32), (u32, u32));
        let cases: &[Case] = &[
            ((2000, 10, 8, 3, 70), (1680, 24)),
            ((10, 2000, 8, 3, 70), (24, 1680)),
            ((4000, 30, 16, 3, 280), (9264, 48)),
            ((1, 1, 16, 3, 280), (768, 768)),
            ((1024, 768, 16, 3, 280), (912, 672)),
            ((3000, 2000, 16, 3, 1120), (1920, 1296)),
            ((97, 41, 8, 3, 70), (288, 120)),
            ((7, 3000, 16, 3, 70), (48, 3360)),
        ];
        for &((w, h, p, k, n), want) in cases {
            assert_eq!(gemma4_target_size(w, h, p, k, n).unwrap(), want, "{w}×{h} p{p} k{k} n{n}");
        }
    }

    #[test]
    fn bicubic_identity_and_constant() {
        let img = decode(&png(7, 5), MAX_IMAGE_PIXELS).unwrap();
        assert_eq!(resize_bicubic(&img, 7, 5), img);
        let flat = RgbImage { width: 13, height: 9, data: vec![77; 13 * 9 * 3] };
        for (w, h) in [(4, 4), (40, 31), (13, 2)] {
            assert!(resize_bicubic(&flat, w, h).data.iter().all(|&b| b == 77), "{w}×{h}");
        }
    }

    #[test]
    fn identity_resize_keeps_bytes() {
        let img = decode(&png(7, 5), MAX_IMAGE_PIXELS).unwrap();
        assert_eq!(resize_bilinear(&img, 7, 5), img);
    }

    #[test]
    fn constant_image_stays_constant() {
        let img = RgbImage { width: 13, height: 9, data: vec![77; 13 * 9 * 3] };
        for (w, h) in [(4, 4), (40, 31), (13, 2)] {
            assert!(resize_bilinear(&img, w, h).data.iter().all(|&b| b == 77), "{w}×{h}");
        }
    }

    #[test]
    fn composite_matches_the_rounded_formula() {
        for a in 1..=255u32 {
            for c in [0u32, 1, 127, 128, 254, 255] {
                let exact = (c * a + 255 * (255 - a)) as f64 / 255.0;
                let got = composite_on_white(c, a) as f64;
                assert!((got - exact).abs() <= 0.51, "c {c} a {a}: {got} vs {exact}");
            }
        }
        assert_eq!(composite_on_white(10, 255), 10);
    }

    #[test]
    fn bad_inputs_are_typed() {
        assert!(matches!(decode(b"", 100), Err(Error::ImageFormat { .. })));
        assert!(matches!(decode(b"GIF89a....", 100), Err(Error::ImageFormat { .. })));
        let p = png(64, 64);
        assert!(matches!(decode(&p, 64 * 64 - 1), Err(Error::ImageTooLarge { pixels: 4096, .. })));
        for cut in [8, 20, 33, p.len() / 2, p.len() - 13] {
            assert!(matches!(decode(&p[..cut], MAX_IMAGE_PIXELS), Err(Error::ImageDecode { .. })), "cut at {cut}");
        }
        // A 65535×65535 PNG header (a decompression bomb's shape): refused from the header.
        let mut bomb = p[..33].to_vec();
        bomb[16..24].copy_from_slice(&[0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF]);
        let crc = crc32(&bomb[12..29]);
        bomb[29..33].copy_from_slice(&crc.to_be_bytes());
        bomb.extend_from_slice(&p[33..]);
        match decode(&bomb, MAX_IMAGE_PIXELS) {
            Err(Error::ImageTooLarge { width: 65535, height: 65535, .. }) => {}
            other => panic!("bomb: {other:?}"),
        }
    }

    /// PNG's CRC-32 (ISO-HDLC), for the forged header above.
    fn crc32(bytes: &[u8]) -> u32 {
        let mut c = !0u32;
        for &b in bytes {
            c ^= b as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
            }
        }
        !c
    }
}
