//! Hand-written SVG charts: lines, points and bars on linear axes with
//! ticks, axis labels, a legend and shaded stretches of x. The output uses
//! only generic font families, so a page that embeds it needs no external
//! file.

use std::fmt::Write as _;

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 28.0;
const BOTTOM: f64 = 46.0;

/// How a series is drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mark {
    Line,
    /// Small dots, for scatter plots.
    Dots,
    /// Open circles, for points to pick out.
    Rings,
    /// Bars centred on x, `width` wide in x units.
    Bars {
        width_milli: u32,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct Series {
    pub(crate) name: String,
    pub(crate) color: &'static str,
    pub(crate) mark: Mark,
    pub(crate) points: Vec<(f64, f64)>,
}

impl Series {
    pub(crate) fn new(
        name: &str,
        color: &'static str,
        mark: Mark,
        points: Vec<(f64, f64)>,
    ) -> Self {
        Self {
            name: name.to_owned(),
            color,
            mark,
            points: points
                .into_iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .collect(),
        }
    }
}

/// A stretch of x shaded behind the series, with its legend text.
#[derive(Debug, Clone)]
pub(crate) struct Band {
    pub(crate) from: f64,
    pub(crate) to: f64,
    pub(crate) label: String,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Chart {
    pub(crate) title: String,
    pub(crate) x_label: String,
    pub(crate) y_label: String,
    pub(crate) series: Vec<Series>,
    pub(crate) bands: Vec<Band>,
    /// Horizontal reference line and its legend text.
    pub(crate) threshold: Option<(f64, String)>,
    /// Whether the y axis starts at 0 whatever the data.
    pub(crate) y_from_zero: bool,
}

/// Escapes text for SVG and HTML.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Returns about `count` evenly spaced tick values within [low, high],
/// at steps of 1, 2 or 5 times a power of ten.
fn ticks(low: f64, high: f64, count: usize) -> Vec<f64> {
    let span = (high - low).max(f64::EPSILON);
    let raw = span / count as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    // The round step closest to the raw one on a log scale.
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .min_by(|a, b| (a / raw).ln().abs().total_cmp(&(b / raw).ln().abs()))
        .unwrap_or(magnitude);
    let first = (low / step).ceil() as i64;
    let last = (high / step).floor() as i64;
    (first..=last).map(|i| i as f64 * step).collect()
}

fn format_tick(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude == 0.0 {
        "0".to_owned()
    } else if !(1e-3..1e5).contains(&magnitude) {
        format!("{value:.0e}")
    } else if magnitude >= 100.0 {
        format!("{value:.0}")
    } else {
        let text = format!("{value:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

impl Chart {
    pub(crate) fn new(title: &str, x_label: &str, y_label: &str) -> Self {
        Self {
            title: title.to_owned(),
            x_label: x_label.to_owned(),
            y_label: y_label.to_owned(),
            ..Self::default()
        }
    }

    pub(crate) fn with(mut self, series: Series) -> Self {
        self.series.push(series);
        self
    }

    /// Returns whether any series has a point.
    pub(crate) fn has_data(&self) -> bool {
        self.series.iter().any(|s| !s.points.is_empty())
    }

    fn bounds(&self) -> (f64, f64, f64, f64) {
        let mut x = (f64::INFINITY, f64::NEG_INFINITY);
        let mut y = (f64::INFINITY, f64::NEG_INFINITY);
        for series in &self.series {
            let half_bar = match series.mark {
                Mark::Bars { width_milli } => f64::from(width_milli) / 2000.0,
                _ => 0.0,
            };
            for &(px, py) in &series.points {
                x = (x.0.min(px - half_bar), x.1.max(px + half_bar));
                y = (y.0.min(py), y.1.max(py));
                if matches!(series.mark, Mark::Bars { .. }) {
                    y.0 = y.0.min(0.0);
                }
            }
        }
        for band in &self.bands {
            x = (x.0.min(band.from), x.1.max(band.to));
        }
        if let Some((value, _)) = self.threshold {
            y = (y.0.min(value), y.1.max(value));
        }
        if self.y_from_zero {
            y.0 = y.0.min(0.0);
        }
        if !x.0.is_finite() {
            x = (0.0, 1.0);
            y = (0.0, 1.0);
        }
        if x.1 <= x.0 {
            x = (x.0 - 0.5, x.1 + 0.5);
        }
        if y.1 <= y.0 && self.y_from_zero && y.0 == 0.0 {
            y = (0.0, 1.0);
        } else if y.1 <= y.0 {
            let pad = y.0.abs().max(1.0) * 0.1;
            y = (y.0 - pad, y.1 + pad);
        } else {
            let pad = (y.1 - y.0) * 0.05;
            y = (if y.0 == 0.0 { 0.0 } else { y.0 - pad }, y.1 + pad);
        }
        (x.0, x.1, y.0, y.1)
    }

    /// Renders the chart as one `<svg>` element.
    pub(crate) fn render(&self) -> String {
        let (x0, x1, y0, y1) = self.bounds();
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let sx = |x: f64| LEFT + (x - x0) / (x1 - x0) * plot_w;
        let sy = |y: f64| TOP + (1.0 - (y - y0) / (y1 - y0)) * plot_h;
        let mut out = String::new();
        let w = &mut out;
        let _ = write!(
            w,
            r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11" role="img"><title>{}</title>"#,
            escape(&self.title)
        );
        let _ = write!(
            w,
            r##"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" fill="#fff" stroke="#999"/>"##
        );
        for band in &self.bands {
            let (a, b) = (sx(band.from), sx(band.to));
            let _ = write!(
                w,
                r##"<rect x="{a:.1}" y="{TOP}" width="{:.1}" height="{plot_h}" fill="#f2c94c" fill-opacity="0.3"/>"##,
                (b - a).max(1.0)
            );
        }
        let integer_x = self
            .series
            .iter()
            .any(|s| matches!(s.mark, Mark::Bars { .. }));
        let x_ticks = ticks(x0, x1, 6)
            .into_iter()
            .filter(|tick| !integer_x || tick.fract() == 0.0);
        for tick in x_ticks {
            let px = sx(tick);
            let _ = write!(
                w,
                r##"<line x1="{px:.1}" y1="{TOP}" x2="{px:.1}" y2="{:.1}" stroke="#eee"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                TOP + plot_h,
                TOP + plot_h + 14.0,
                format_tick(tick)
            );
        }
        for tick in ticks(y0, y1, 5) {
            let py = sy(tick);
            let _ = write!(
                w,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#eee"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                LEFT + plot_w,
                LEFT - 4.0,
                py + 4.0,
                format_tick(tick)
            );
        }
        if let Some((value, _)) = &self.threshold {
            let py = sy(*value);
            let _ = write!(
                w,
                r##"<line x1="{LEFT}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#c0392b" stroke-dasharray="5 3"/>"##,
                LEFT + plot_w
            );
        }
        for series in &self.series {
            draw_series(w, series, &sx, &sy, y0.max(0.0).min(y1));
        }
        let _ = write!(
            w,
            r##"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="12">{}</text><text transform="translate(14 {:.1}) rotate(-90)" text-anchor="middle" font-size="12">{}</text>"##,
            LEFT + plot_w / 2.0,
            HEIGHT - 8.0,
            escape(&self.x_label),
            TOP + plot_h / 2.0,
            escape(&self.y_label)
        );
        self.legend(w);
        out.push_str("</svg>");
        out
    }

    fn legend(&self, w: &mut String) {
        let mut entries: Vec<(&str, &str, bool)> = self
            .series
            .iter()
            .map(|s| (s.name.as_str(), s.color, s.mark == Mark::Line))
            .collect();
        if let Some((_, label)) = &self.threshold {
            entries.push((label, "#c0392b", true));
        }
        for band in &self.bands {
            entries.push((&band.label, "#f2c94c", false));
        }
        let mut x = LEFT;
        for (name, color, line) in entries {
            let swatch = if line {
                format!(
                    r#"<line x1="{x:.1}" y1="14" x2="{:.1}" y2="14" stroke="{color}" stroke-width="2"/>"#,
                    x + 14.0
                )
            } else {
                format!(r#"<rect x="{x:.1}" y="9" width="14" height="10" fill="{color}"/>"#)
            };
            let _ = write!(
                w,
                r#"{swatch}<text x="{:.1}" y="18">{}</text>"#,
                x + 18.0,
                escape(name)
            );
            x += 26.0 + 6.0 * name.chars().count() as f64;
        }
    }
}

fn draw_series(
    w: &mut String,
    series: &Series,
    sx: &impl Fn(f64) -> f64,
    sy: &impl Fn(f64) -> f64,
    baseline: f64,
) {
    let color = series.color;
    match series.mark {
        Mark::Line => {
            let path: Vec<String> = series
                .points
                .iter()
                .map(|&(x, y)| format!("{:.1},{:.1}", sx(x), sy(y)))
                .collect();
            let _ = write!(
                w,
                r#"<polyline points="{}" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                path.join(" ")
            );
        }
        Mark::Dots => {
            for &(x, y) in &series.points {
                let _ = write!(
                    w,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="1.4" fill="{color}" fill-opacity="0.5"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
        Mark::Rings => {
            for &(x, y) in &series.points {
                let _ = write!(
                    w,
                    r#"<circle cx="{:.1}" cy="{:.1}" r="4.5" fill="none" stroke="{color}" stroke-width="1.8"/>"#,
                    sx(x),
                    sy(y)
                );
            }
        }
        Mark::Bars { width_milli } => {
            let half = f64::from(width_milli) / 2000.0;
            for &(x, y) in &series.points {
                let (left, right) = (sx(x - half), sx(x + half));
                let (top, bottom) = (sy(y.max(baseline)), sy(y.min(baseline)));
                let _ = write!(
                    w,
                    r#"<rect x="{left:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{color}"/>"#,
                    (right - left).max(1.0),
                    (bottom - top).max(0.5)
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_numbers() {
        let close = |got: Vec<f64>, expected: &[f64]| {
            assert_eq!(got.len(), expected.len(), "{got:?}");
            for (g, e) in got.iter().zip(expected) {
                assert!((g - e).abs() < 1e-12, "{got:?}");
            }
        };
        close(ticks(0.0, 1.0, 5), &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0]);
        close(ticks(3.0, 97.0, 4), &[20.0, 40.0, 60.0, 80.0]);
        close(ticks(-0.5, 1.5, 6), &[-0.5, 0.0, 0.5, 1.0, 1.5]);
    }

    #[test]
    fn chart_renders_one_svg() {
        let chart = Chart::new("t", "x (updates)", "y").with(Series::new(
            "a<b",
            "#000",
            Mark::Line,
            vec![(0.0, 1.0), (1.0, f64::NAN), (2.0, 3.0)],
        ));
        let svg = chart.render();
        assert!(svg.starts_with("<svg"));
        assert!(svg.ends_with("</svg>"));
        assert!(svg.contains("a&lt;b"));
        assert!(svg.contains(r#"points="64.0,"#), "{svg}");
    }
}
