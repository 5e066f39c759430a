//! The curves of `metrics.jsonl` as one PNG (`losses.png`): a small panel per metric.
//!
//! Drawn with plain pixel code and the hand-made [`crate::font`], not `plotters`, whose text
//! needs font crates or system fonts. Each panel shows one metric against the step: its name, its
//! last value, the value range at the ends of the y axis and the step range under the x axis.
//! Non-finite values (serde_json writes NaN as `null`) break the curve and are counted in the
//! title; lines that are not JSON objects are skipped, so a log cut short by a crash still plots.

use std::fmt;
use std::path::Path;

use kiln_core::SaveError;
use kiln_data::{PngCompression, PngSamples, png_bytes};
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::Value;

use crate::font::{Canvas, GLYPH_H, text_width};

/// Keys of a metrics line that are bookkeeping, not curves worth a panel.
const BOOKKEEPING: [&str; 4] = ["step", "examples", "elapsed_s", "examples_per_s"];
/// At most this many panels (the first metrics, in the order the task reports them).
pub(crate) const MAX_PANELS: usize = 6;
/// Panels per row.
const PANEL_COLUMNS: usize = 3;
/// Size of one panel in pixels.
pub(crate) const PANEL_W: usize = 300;
/// Size of one panel in pixels.
pub(crate) const PANEL_H: usize = 170;
/// Room around the plot area inside a panel: left (y labels), right, top (title), bottom (steps).
const LEFT: usize = 62;
const RIGHT: usize = 12;
const TOP: usize = 22;
const BOTTOM: usize = 20;

const PAPER: [u8; 3] = [255, 255, 255];
const FRAME: [u8; 3] = [215, 215, 215];
const AXIS: [u8; 3] = [90, 90, 90];
const TEXT: [u8; 3] = [30, 30, 30];
const FAINT: [u8; 3] = [110, 110, 110];
/// The colour of the curves.
pub(crate) const LINE: [u8; 3] = [31, 119, 180];
const WARN: [u8; 3] = [200, 30, 30];

/// One metric's points `(step, value)`, in file order; a value may be NaN (a gap).
#[derive(Debug, Default)]
struct Series {
    name: String,
    points: Vec<(f64, f64)>,
}

/// Reads the metric series out of the text of a `metrics.jsonl`, keeping the order in which the
/// first line that has a metric names it.
fn parse(text: &str) -> Vec<Series> {
    let mut series: Vec<Series> = Vec::new();
    for line in text.lines() {
        // A line that is not a JSON object (a torn write, a stray message) is skipped, not fatal.
        let Ok(Fields(fields)) = serde_json::from_str::<Fields>(line) else { continue };
        let Some(step) = fields.iter().find(|(k, _)| k == "step").and_then(|(_, v)| v.as_f64()) else { continue };
        for (key, value) in fields {
            if BOOKKEEPING.contains(&key.as_str()) {
                continue;
            }
            let value = match value {
                Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
                Value::Null => f64::NAN,
                _ => continue,
            };
            match series.iter_mut().find(|s| s.name == key) {
                Some(s) => s.points.push((step, value)),
                None => series.push(Series { name: key, points: vec![(step, value)] }),
            }
        }
    }
    // A metric that only ever held null keeps its panel: "3 non-finite, no values" is news.
    series
}

/// A JSON object's fields in the order they were written (serde_json's `Map` sorts its keys).
struct Fields(Vec<(String, Value)>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct InOrder;
        impl<'de> Visitor<'de> for InOrder {
            type Value = Fields;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Vec::new();
                while let Some(entry) = map.next_entry::<String, Value>()? {
                    fields.push(entry);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(InOrder)
    }
}

/// A short label for a value: up to four significant digits, or scientific notation outside
/// `[1e-3, 1e5)`.
fn format_value(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let magnitude = v.abs().log10().floor();
    if !(-3.0..5.0).contains(&magnitude) {
        return format!("{v:.2e}");
    }
    let decimals = (3.0 - magnitude).max(0.0) as usize;
    let text = format!("{v:.decimals$}");
    if text.contains('.') { text.trim_end_matches('0').trim_end_matches('.').to_string() } else { text }
}

/// The range an axis spans for `values`: their min and max, widened around a constant.
fn span(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (lo, hi) =
        values.filter(|v| v.is_finite()).fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| (lo.min(v), hi.max(v)));
    if lo > hi {
        return None;
    }
    if lo == hi {
        let pad = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        return Some((lo - pad, hi + pad));
    }
    Some((lo, hi))
}

/// Draws a straight line (Bresenham) between two pixels.
fn line(canvas: &mut Canvas, (x0, y0): (i64, i64), (x1, y1): (i64, i64), ink: [u8; 3]) {
    let (dx, dy) = ((x1 - x0).abs(), -(y1 - y0).abs());
    let (sx, sy) = (if x0 < x1 { 1 } else { -1 }, if y0 < y1 { 1 } else { -1 });
    let (mut x, mut y, mut err) = (x0, y0, dx + dy);
    loop {
        if x >= 0 && y >= 0 {
            canvas.set(x as usize, y as usize, ink);
        }
        if x == x1 && y == y1 {
            break;
        }
        let e2 = 2 * err;
        if e2 >= dy {
            err += dy;
            x += sx;
        }
        if e2 <= dx {
            err += dx;
            y += sy;
        }
    }
}

/// Draws one metric's panel with its top-left corner at `(px, py)`.
fn panel(canvas: &mut Canvas, (px, py): (usize, usize), series: &Series) {
    // A frame, so panels side by side read as separate plots.
    for x in px..px + PANEL_W {
        canvas.set(x, py, FRAME);
        canvas.set(x, py + PANEL_H - 1, FRAME);
    }
    for y in py..py + PANEL_H {
        canvas.set(px, y, FRAME);
        canvas.set(px + PANEL_W - 1, y, FRAME);
    }
    canvas.text(px + 8, py + 7, &series.name, 1, TEXT);
    let finite = || series.points.iter().copied().filter(|&(_, v)| v.is_finite());
    let bad = series.points.len() - finite().count();
    let mut right = match finite().next_back() {
        Some((_, v)) => format!("last {}", format_value(v)),
        None => "no values".to_string(),
    };
    if bad > 0 {
        right = format!("{bad} non-finite  {right}");
    }
    let right_x = (px + PANEL_W - 8).saturating_sub(text_width(&right, 1));
    canvas.text(
        right_x.max(px + 8 + text_width(&series.name, 1) + 8),
        py + 7,
        &right,
        1,
        if bad > 0 { WARN } else { FAINT },
    );

    // The plot area and its axes: y on the left, x along the bottom.
    let (x0, x1) = (px + LEFT, px + PANEL_W - RIGHT);
    let (y0, y1) = (py + TOP, py + PANEL_H - BOTTOM);
    for y in y0..=y1 {
        canvas.set(x0, y, AXIS);
    }
    for x in x0..=x1 {
        canvas.set(x, y1, AXIS);
    }
    let (Some((smin, smax)), Some((vmin, vmax))) = (span(finite().map(|(s, _)| s)), span(finite().map(|(_, v)| v)))
    else {
        return;
    };
    // Value range at the ends of the y axis, right-aligned against it.
    for (v, y) in [(vmax, y0), (vmin, y1 + 1 - GLYPH_H)] {
        let label = format_value(v);
        canvas.text((x0 - 4).saturating_sub(text_width(&label, 1)), y, &label, 1, TEXT);
    }
    // Step range under the ends of the x axis.
    let steps = || finite().map(|(s, _)| s);
    let (first, last) = (steps().fold(f64::INFINITY, f64::min), steps().fold(f64::NEG_INFINITY, f64::max));
    canvas.text(x0, y1 + 6, &format!("step {}", format_value(first)), 1, FAINT);
    if last > first {
        let label = format_value(last);
        canvas.text(x1.saturating_sub(text_width(&label, 1)), y1 + 6, &label, 1, FAINT);
    }

    // The curve: consecutive finite points joined; a non-finite value breaks it, and a point
    // with no finite neighbour gets a dot so it is not lost. Pixels are clamped to the plot
    // area, so no value (1e308, a span that overflows to infinity) can send a line astray.
    let (w, h) = ((x1 - x0 - 2) as f64, (y1 - y0 - 2) as f64);
    let to_pixel = |(s, v): (f64, f64)| {
        let x = x0 as f64 + 2.0 + (s - smin) / (smax - smin) * w;
        let y = y1 as f64 - 2.0 - (v - vmin) / (vmax - vmin) * h;
        ((x.round() as i64).clamp(x0 as i64, x1 as i64), (y.round() as i64).clamp(y0 as i64, y1 as i64))
    };
    let points = &series.points;
    for (i, &(s, v)) in points.iter().enumerate() {
        if !v.is_finite() {
            continue;
        }
        let here = to_pixel((s, v));
        let next = points.get(i + 1).filter(|(_, v)| v.is_finite());
        if let Some(&next) = next {
            line(canvas, here, to_pixel(next), LINE);
        }
        let prev_finite = i > 0 && points[i - 1].1.is_finite();
        if next.is_none() && !prev_finite {
            let (x, y) = (here.0 as usize, here.1 as usize);
            for (dx, dy) in (0..9).map(|k| (k % 3, k / 3)) {
                canvas.set(x + dx - 1, y + dy - 1, LINE);
            }
        }
    }
}

/// Draws the curves of the metrics file text `metrics` as a PNG: up to [`MAX_PANELS`] panels,
/// three to a row; an empty or unreadable log gives one panel saying so.
pub(crate) fn losses_png(metrics: &str) -> Result<Vec<u8>, String> {
    let mut series = parse(metrics);
    series.truncate(MAX_PANELS);
    if series.is_empty() {
        series.push(Series { name: "no metrics logged yet".into(), points: Vec::new() });
    }
    let columns = series.len().min(PANEL_COLUMNS);
    let rows = series.len().div_ceil(PANEL_COLUMNS);
    let (width, height) = (columns * PANEL_W, rows * PANEL_H);
    let mut pixels = vec![0u8; width * height * 3];
    pixels.chunks_exact_mut(3).for_each(|p| p.copy_from_slice(&PAPER));
    let mut canvas = Canvas { pixels: &mut pixels, width, channels: 3 };
    for (i, s) in series.iter().enumerate() {
        panel(&mut canvas, ((i % PANEL_COLUMNS) * PANEL_W, (i / PANEL_COLUMNS) * PANEL_H), s);
    }
    png_bytes(width, height, 3, PngSamples::U8(&pixels), PngCompression::Fast).map_err(|e| e.to_string())
}

/// Reads `metrics` (a `metrics.jsonl`; a missing file plots as empty) and writes its curves to
/// `out` atomically.
pub fn write_loss_plot(metrics: &Path, out: &Path) -> Result<(), SaveError> {
    let text = match std::fs::read(metrics) {
        Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(SaveError::Io { path: metrics.to_path_buf(), source }),
    };
    let png = losses_png(&text).map_err(|message| SaveError::Encode { path: out.to_path_buf(), message })?;
    kiln_core::atomic_write(out, &png)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(png: &[u8]) -> image::RgbImage {
        image::load_from_memory(png).unwrap().to_rgb8()
    }

    /// Pixels of the curve colour inside panel `i`.
    fn curve_pixels(img: &image::RgbImage, i: usize) -> usize {
        let (px, py) = ((i % PANEL_COLUMNS * PANEL_W) as u32, (i / PANEL_COLUMNS * PANEL_H) as u32);
        let mut n = 0;
        for y in py..py + PANEL_H as u32 {
            for x in px..px + PANEL_W as u32 {
                n += usize::from(img.get_pixel(x, y).0 == LINE);
            }
        }
        n
    }

    #[test]
    fn a_panel_per_metric_in_logged_order_with_each_curve_drawn() {
        // Four metrics as the trainer writes them, a NaN (null), a garbage line, a torn line, a
        // non-object line, a constant and a metric that appears once.
        let mut text = String::new();
        for step in 1..=20 {
            let loss = if step == 7 { "null".to_string() } else { format!("{}", 1.0 / step as f64) };
            text += &format!(
                r#"{{"step":{step},"examples":{},"elapsed_s":0.1,"examples_per_s":900.0,"loss":{loss},"kl":{},"lr":0.001}}"#,
                step * 8,
                (step as f64).sin(),
            );
            text += "\n";
            if step == 3 {
                text += "kiln: not json\n{\"step\": 4, \"loss\": 0.\n[1, 2]\n{\"no_step\": 1}\n";
            }
        }
        text += r#"{"step":21,"once":5.0}"#;
        let series = parse(&text);
        let names: Vec<&str> = series.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["loss", "kl", "lr", "once"]);
        assert_eq!(series[0].points.len(), 20);
        assert!(series[0].points[6].1.is_nan());

        let img = decode(&losses_png(&text).unwrap());
        assert_eq!(img.dimensions(), ((3 * PANEL_W) as u32, (2 * PANEL_H) as u32));
        for (i, name) in names.iter().enumerate() {
            assert!(curve_pixels(&img, i) > 0, "panel {i} ({name}) has no curve");
        }
        // The decreasing loss spans the plot height; the constant lr is one flat line.
        assert!(curve_pixels(&img, 0) > PANEL_H / 2);
        assert!(curve_pixels(&img, 2) >= PANEL_W - LEFT - RIGHT - 3);
        // The sixth slot is empty: no panel was drawn there.
        assert_eq!(curve_pixels(&img, 5), 0);
        assert!((5 * PANEL_W as u32 / 2..3 * PANEL_W as u32).all(|x| img.get_pixel(x, PANEL_H as u32 + 5).0 == PAPER));
    }

    #[test]
    fn empty_garbage_and_all_nan_logs_still_make_a_picture() {
        for text in
            ["", "\n\n", "not json at all\n{\"step\":", "{\"step\":1,\"loss\":null}\n{\"step\":2,\"loss\":null}"]
        {
            let img = decode(&losses_png(text).unwrap());
            assert_eq!(img.dimensions(), (PANEL_W as u32, PANEL_H as u32), "{text:?}");
            // The title is written even with nothing to plot.
            assert!(img.pixels().any(|p| p.0 == TEXT), "{text:?}");
        }
        // One point, and a constant series: a dot, a flat line.
        let img = decode(&losses_png("{\"step\":5,\"loss\":2.5}").unwrap());
        assert!(curve_pixels(&img, 0) >= 9);
        let img = decode(&losses_png("{\"step\":1,\"a\":0}\n{\"step\":2,\"a\":0}\n{\"step\":3,\"a\":1e300}").unwrap());
        assert!(curve_pixels(&img, 0) > 0);
        // More metrics than panels: the first six are drawn.
        let many: String = (0..9).map(|i| format!("\"m{i}\":{i},")).collect();
        let img = decode(&losses_png(&format!("{{{many}\"step\":1}}")).unwrap());
        assert_eq!(img.dimensions(), ((3 * PANEL_W) as u32, (2 * PANEL_H) as u32));
    }

    #[test]
    fn values_are_labelled_compactly() {
        assert_eq!(format_value(0.0), "0");
        assert_eq!(format_value(0.123456), "0.1235");
        assert_eq!(format_value(12.5), "12.5");
        assert_eq!(format_value(1200.0), "1200");
        assert_eq!(format_value(-3.0), "-3");
        assert_eq!(format_value(1.5e-5), "1.50e-5");
        assert_eq!(format_value(2.0e7), "2.00e7");
        assert_eq!(span([3.0, f64::NAN, 3.0].into_iter()), Some((2.7, 3.3)));
        assert_eq!(span([f64::INFINITY].into_iter()), None);
    }

    #[test]
    fn write_loss_plot_writes_atomically_and_plots_a_missing_log_as_empty() {
        let dir = std::env::temp_dir().join(format!("kiln-train-plot-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        write_loss_plot(&dir.join("missing.jsonl"), &dir.join("losses.png")).unwrap();
        assert_eq!(decode(&std::fs::read(dir.join("losses.png")).unwrap()).width(), PANEL_W as u32);
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["losses.png"]);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
