//! The quality/size chart of `compare` and `sweep`: bits per weight on x, mean KL-divergence
//! against the base on y (log scale), one labelled point per file; SVG or PNG by the file's
//! extension. Text is drawn with DejaVu Sans embedded in the binary, so no system font
//! library or font file is needed.
use anyhow::{bail, Context as _, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::Once;

/// One file on the chart.
#[derive(Debug, Clone)]
pub struct Point {
    pub label: String,
    pub bits_per_weight: f64,
    pub kl_mean: f64,
}

const SIZE: (u32, u32) = (960, 640);
const FONT: &str = "sans-serif";
/// Approximate width of one character of the 15-pixel label font (DejaVu Sans averages
/// about 0.55 em).
const LABEL_CHAR_PX: i32 = 8;

fn register_font() -> Result<()> {
    static ONCE: Once = Once::new();
    let mut ok = true;
    ONCE.call_once(|| ok = plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if !ok {
        bail!("the embedded DejaVu Sans font could not be loaded");
    }
    Ok(())
}

fn is_svg(path: &Path) -> Result<bool> {
    match path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).as_deref() {
        Some("svg") => Ok(true),
        Some("png") => Ok(false),
        _ => bail!("chart {}: the file name must end in .svg or .png", path.display()),
    }
}

/// Refuses a chart path that is neither `.svg` nor `.png` (before any long run).
pub fn check_path(path: &Path) -> Result<()> {
    is_svg(path).map(|_| ())
}

/// Writes the chart to `path` (`.svg` or `.png`).
pub fn write(path: &Path, title: &str, points: &[Point]) -> Result<()> {
    register_font()?;
    let drawn = if is_svg(path)? {
        draw(SVGBackend::new(path, SIZE).into_drawing_area(), title, points)
    } else {
        draw(BitMapBackend::new(path, SIZE).into_drawing_area(), title, points)
    };
    drawn.with_context(|| format!("drawing the chart {}", path.display()))
}

/// The y range (log scale): the positive KL values with a margin; files with KL 0 (the base
/// against itself) sit on the floor.
fn y_range(points: &[Point]) -> (f64, f64) {
    let pos = points.iter().map(|p| p.kl_mean).filter(|k| k.is_finite() && *k > 0.0);
    let (lo, hi) = pos.fold((f64::INFINITY, 0f64), |(lo, hi), k| (lo.min(k), hi.max(k)));
    if hi == 0.0 {
        (1e-4, 1.0)
    } else {
        (lo / 3.0, hi * 3.0)
    }
}

fn draw<DB: DrawingBackend>(root: DrawingArea<DB, Shift>, title: &str, points: &[Point]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (y0, y1) = y_range(points);
    let x1 = points.iter().map(|p| p.bits_per_weight).filter(|x| x.is_finite()).fold(1f64, f64::max) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 22))
        .margin(24)
        .x_label_area_size(52)
        .y_label_area_size(90)
        .build_cartesian_2d(0f64..x1, (y0..y1).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("bits per weight (tensor bytes × 8 / parameters)")
        .y_desc("mean KL-divergence vs the base")
        .label_style((FONT, 15))
        .axis_desc_style((FONT, 17))
        .draw()?;
    let marks = points.iter().map(|p| {
        let (y, note) = match p.kl_mean {
            k if k.is_nan() => (y1, " (KL NaN)"),
            k if k <= 0.0 => (y0, " (KL 0)"),
            k => (k.min(y1), ""),
        };
        let text = format!("{}{note}", p.label);
        // Labels of points in the right part of the chart go to their left, so they fit.
        let dx = if p.bits_per_weight > 0.55 * x1 { -9 - LABEL_CHAR_PX * text.chars().count() as i32 } else { 9 };
        EmptyElement::at((p.bits_per_weight, y))
            + Circle::new((0, 0), 6, BLUE.filled())
            + Text::new(text, (dx, -20), (FONT, 15))
    });
    chart.draw_series(marks)?;
    root.present()?;
    Ok(())
}
