//! The HTML report of one run: a summary, the findings of the optimizer
//! checks, and one SVG plot per question with a caption on how to read it.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::landscape::{LandscapePoint, read_csv};
use crate::run_files::{Event, Push, RunSettings, read_jsonl};
use crate::svg::{Band, Chart, Mark, Series, escape};

/// File name of the report in the run directory.
pub const REPORT_FILE: &str = "report.html";

/// A gradient norm whose running mean at the end is at least this fraction
/// of the first one counts as not shrinking.
const NOT_SHRINKING: f64 = 0.5;

const BLUE: &str = "#1f77b4";
const ORANGE: &str = "#e67e22";
const GREEN: &str = "#2ca02c";
const RED: &str = "#c0392b";
const PURPLE: &str = "#8e44ad";
const WORKER_COLORS: [&str; 6] = [BLUE, ORANGE, GREEN, PURPLE, "#7f8c8d", "#17becf"];

/// A plot and the sentence that explains how to read it.
struct Figure {
    chart: Chart,
    caption: String,
}

/// The stretch where the validation cross-entropy and the validation 0-1
/// error disagree about whether training still improves.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Disagreement {
    pub(crate) from_updates: u64,
    pub(crate) to_updates: u64,
    /// True when the cross-entropy kept falling after the 0-1 error reached
    /// its best; false for the reverse.
    pub(crate) surrogate_still_falls: bool,
}

/// Finds the stretch between the evaluation with the lowest validation 0-1
/// error and the one with the lowest validation cross-entropy, when they
/// differ.
pub(crate) fn disagreement(events: &[Event]) -> Option<Disagreement> {
    let argmin = |value: fn(&Event) -> f64| {
        // A regression run records no 0-1 error, so its values are NaN and
        // no evaluation qualifies.
        events
            .iter()
            .enumerate()
            .filter(|(_, e)| value(e).is_finite())
            .min_by(|a, b| value(a.1).total_cmp(&value(b.1)))
            .map(|(i, _)| i)
    };
    let best_error = argmin(|e| e.validation_error.unwrap_or(f64::NAN))?;
    let best_loss = argmin(|e| e.validation_loss)?;
    if best_error == best_loss {
        return None;
    }
    let (from, to) = (best_error.min(best_loss), best_error.max(best_loss));
    Some(Disagreement {
        from_updates: events[from].updates,
        to_updates: events[to].updates,
        surrogate_still_falls: best_loss > best_error,
    })
}

/// Writes `report.html` into `run_dir` and returns its path.
///
/// # Errors
///
/// Fails when `summary.json` or `events.jsonl` is missing or invalid, or
/// the report cannot be written.
pub fn write_report(run_dir: &Path) -> anyhow::Result<PathBuf> {
    let settings = RunSettings::read(run_dir)?;
    let events_path = run_dir.join("events.jsonl");
    let events: Vec<Event> = read_jsonl(&events_path)?
        .with_context(|| format!("{} not found", events_path.display()))?;
    let pushes: Vec<Push> =
        read_jsonl(&run_dir.join(crate::run_files::PUSHES))?.unwrap_or_default();
    let landscape = read_csv(run_dir)?;
    let html = render(run_dir, &settings, &events, &pushes, landscape.as_deref());
    let path = run_dir.join(REPORT_FILE);
    std::fs::write(&path, html).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

fn effective_rate(settings: &RunSettings) -> f64 {
    settings.learning_rate / (1.0 - settings.momentum)
}

fn render(
    run_dir: &Path,
    settings: &RunSettings,
    events: &[Event],
    pushes: &[Push],
    landscape: Option<&[LandscapePoint]>,
) -> String {
    let disagreement = disagreement(events);
    let mut figures = vec![
        loss_figure(events),
        error_figure(events, disagreement.as_ref()),
        wall_loss_figure(events),
        wall_error_figure(events),
        gradient_norm_figure(settings, events, pushes),
        curvature_figure(settings, events),
        clipping_figure(settings, events),
        staleness_figure(settings),
        worker_staleness_figure(settings),
        throughput_figure(settings),
    ];
    if let Some(points) = landscape {
        figures.push(Figure {
            chart: landscape_chart(points),
            caption: "Cost along the straight line from θ₀ (α = 0) to the best θ (α = 1), extended on both sides; a curve that falls smoothly from 0 to 1 means the optimizer met no barrier on the way.".to_owned(),
        });
    }
    let name = run_dir.file_name().map_or_else(
        || run_dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut html = String::new();
    let _ = write!(
        html,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Downpour run {name}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; max-width: 1200px; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 20px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; border: 1px solid #ddd; padding: 6px; width: 560px; }}
figcaption {{ font-size: 12px; color: #444; margin-top: 4px; }}
table {{ border-collapse: collapse; font-size: 13px; }} td {{ padding: 2px 12px 2px 0; }}
li {{ margin-bottom: 4px; }}
</style></head><body>
<h1>Downpour run {name}</h1>
"#,
        name = escape(&name)
    );
    summary_table(&mut html, settings);
    html.push_str("<h2>Findings</h2><ul>");
    for finding in findings(settings, events, disagreement.as_ref()) {
        let _ = write!(html, "<li>{}</li>", escape(&finding));
    }
    html.push_str("</ul><h2>Plots</h2><div class=\"grid\">");
    figures.retain(|figure| figure.chart.has_data());
    for figure in &figures {
        let _ = write!(
            html,
            "<figure>{}<figcaption>{}</figcaption></figure>",
            figure.chart.render(),
            escape(&figure.caption)
        );
    }
    html.push_str("</div></body></html>\n");
    html
}

fn summary_table(html: &mut String, settings: &RunSettings) {
    let test = match (settings.test_accuracy, settings.test_mse) {
        (Some(accuracy), _) => format!("accuracy {:.2}%", 100.0 * accuracy),
        (None, Some(mse)) => format!("mean squared error {mse:.4}"),
        (None, None) => "no test split".to_owned(),
    };
    let best_validation = match (settings.best_validation_error, settings.best_validation_mse) {
        (Some(error), _) => format!("0-1 error {:.2}%", 100.0 * error),
        (None, Some(mse)) => format!("mean squared error {mse:.4}"),
        (None, None) => "none recorded".to_owned(),
    };
    let rows = [
        ("model", settings.model.clone()),
        ("workers", settings.workers.to_string()),
        ("consistency", settings.consistency.clone()),
        (
            "learning rate, momentum",
            format!("{}, {}", settings.learning_rate, settings.momentum),
        ),
        (
            "learning-rate warm-up",
            match settings.warmup_updates {
                0 => "off".to_owned(),
                updates => format!("linear over {updates} updates"),
            },
        ),
        (
            "clipping",
            match (settings.clip_norm > 0.0, settings.clip_value > 0.0) {
                (false, false) => "off".to_owned(),
                _ => format!(
                    "norm {}, value {} (0 is off)",
                    settings.clip_norm, settings.clip_value
                ),
            },
        ),
        (
            "updates, epochs",
            format!("{}, {:.2}", settings.updates, settings.epochs),
        ),
        ("wall time", format!("{:.1} s", settings.wall_seconds)),
        ("stop reason", settings.stop_reason.clone()),
        ("best validation result", best_validation),
        ("test result of the best θ", test),
    ];
    html.push_str("<table>");
    for (key, value) in rows {
        let _ = write!(
            html,
            "<tr><td>{}</td><td>{}</td></tr>",
            escape(key),
            escape(&value)
        );
    }
    html.push_str("</table>");
}

fn findings(
    settings: &RunSettings,
    events: &[Event],
    disagreement: Option<&Disagreement>,
) -> Vec<String> {
    let mut findings = Vec::new();
    let probed: Vec<_> = events.iter().filter_map(|e| e.curvature).collect();
    if !probed.is_empty() {
        let flagged = probed.iter().filter(|p| p.ill_conditioned).count();
        let warmup = match settings.warmup_updates {
            0 => String::new(),
            updates => format!(", smaller during the warm-up of the first {updates} updates"),
        };
        findings.push(format!(
            "Ill-conditioning: {flagged} of {} evaluations ({:.0}%) flagged, where ½ε²·g'Hg > ε·g'g on the fixed validation minibatch, so a gradient step of ε = lr/(1 − momentum) = {:.3}{warmup} was predicted to raise the cost.",
            probed.len(),
            100.0 * flagged as f64 / probed.len() as f64,
            effective_rate(settings)
        ));
    }
    let norms: Vec<f64> = events
        .iter()
        .filter_map(|e| e.gradient_norm.map(|n| n.running_mean))
        .collect();
    if let (Some(&first), Some(&last)) = (norms.first(), norms.last()) {
        if last >= NOT_SHRINKING * first {
            findings.push(format!(
                "Gradient norm: the running mean went from {first:.3} to {last:.3} and did not shrink, so θ did not approach a critical point: local minima are ruled out as the cause of slow training."
            ));
        } else {
            findings.push(format!(
                "Gradient norm: the running mean shrank from {first:.3} to {last:.3}, as it does near a critical point."
            ));
        }
    }
    match disagreement {
        Some(d) if d.surrogate_still_falls => findings.push(format!(
            "Surrogate against 0-1 error: the validation cross-entropy still fell from update {} to {} after the validation 0-1 error had reached its best (shaded in the error plot).",
            d.from_updates, d.to_updates
        )),
        Some(d) => findings.push(format!(
            "Surrogate against 0-1 error: the validation 0-1 error still improved from update {} to {} after the validation cross-entropy had reached its lowest (shaded in the error plot).",
            d.from_updates, d.to_updates
        )),
        None if !events.is_empty() => findings.push(
            "Surrogate against 0-1 error: the validation cross-entropy and 0-1 error reached their best at the same evaluation.".to_owned(),
        ),
        None => {}
    }
    let pushes: u64 = events.iter().map(|e| e.clipping.pushes).sum();
    let by_norm: u64 = events.iter().map(|e| e.clipping.clipped_by_norm).sum();
    let by_value: u64 = events.iter().map(|e| e.clipping.clipped_by_value).sum();
    if settings.clip_norm > 0.0 || settings.clip_value > 0.0 {
        findings.push(format!(
            "Clipping: {by_norm} of {pushes} reported pushes rescaled by norm and {by_value} clamped by value."
        ));
    }
    findings.push(format!(
        "Staleness: {:.2} updates on average between the θ a gradient came from and its push.",
        settings.staleness.mean
    ));
    findings
}

fn points(events: &[Event], x: fn(&Event) -> f64, y: fn(&Event) -> Option<f64>) -> Vec<(f64, f64)> {
    events
        .iter()
        .filter_map(|e| y(e).map(|value| (x(e), value)))
        .collect()
}

fn updates(e: &Event) -> f64 {
    e.updates as f64
}

fn seconds(e: &Event) -> f64 {
    e.wall_seconds
}

fn loss_figure(events: &[Event]) -> Figure {
    let chart = Chart::new(
        "Loss against updates",
        "updates (applied gradient steps)",
        "mean cross-entropy (nats)",
    )
    .with(Series::new(
        "training (minibatches since the previous evaluation)",
        BLUE,
        Mark::Line,
        points(events, updates, |e| e.train_loss),
    ))
    .with(Series::new(
        "validation",
        ORANGE,
        Mark::Line,
        points(events, updates, |e| Some(e.validation_loss)),
    ));
    Figure {
        chart,
        caption: "Both curves should fall; validation above a still-falling training curve is overfitting.".to_owned(),
    }
}

fn error_figure(events: &[Event], disagreement: Option<&Disagreement>) -> Figure {
    let mut chart = Chart::new(
        "Validation error against updates",
        "updates (applied gradient steps)",
        "validation 0-1 error (%)",
    )
    .with(Series::new(
        "validation 0-1 error",
        RED,
        Mark::Line,
        points(events, updates, |e| {
            e.validation_error.map(|error| 100.0 * error)
        }),
    ));
    if let Some(d) = disagreement {
        chart.bands.push(Band {
            from: d.from_updates as f64,
            to: d.to_updates as f64,
            label: if d.surrogate_still_falls {
                "cross-entropy still falls, 0-1 error does not".to_owned()
            } else {
                "0-1 error still falls, cross-entropy does not".to_owned()
            },
        });
    }
    Figure {
        chart,
        caption: "Early stopping watches this curve; the shaded stretch is where it and the validation cross-entropy disagree.".to_owned(),
    }
}

fn wall_loss_figure(events: &[Event]) -> Figure {
    let chart = Chart::new(
        "Training loss against wall time",
        "wall time since training started (s)",
        "mean cross-entropy (nats)",
    )
    .with(Series::new(
        "training",
        BLUE,
        Mark::Line,
        points(events, seconds, |e| e.train_loss),
    ));
    Figure {
        chart,
        caption: "The same training curve on a clock: a flat stretch here but not against updates means the cluster slowed down.".to_owned(),
    }
}

fn wall_error_figure(events: &[Event]) -> Figure {
    let chart = Chart::new(
        "Validation error against wall time",
        "wall time since training started (s)",
        "validation 0-1 error (%)",
    )
    .with(Series::new(
        "validation 0-1 error",
        RED,
        Mark::Line,
        points(events, seconds, |e| {
            e.validation_error.map(|error| 100.0 * error)
        }),
    ));
    Figure {
        chart,
        caption: "Read the error reached after a given time; compare runs with other settings on this axis.".to_owned(),
    }
}

fn gradient_norm_figure(settings: &RunSettings, events: &[Event], pushes: &[Push]) -> Figure {
    let mut chart = Chart::new(
        "Gradient norm of each push",
        "updates (θ version after the push)",
        "‖g‖, Euclidean norm over all of θ",
    )
    .with(Series::new(
        "one push",
        BLUE,
        Mark::Dots,
        pushes
            .iter()
            .map(|p| (p.version as f64, p.gradient_norm))
            .collect(),
    ))
    .with(Series::new(
        "running mean",
        RED,
        Mark::Line,
        points(events, updates, |e| e.gradient_norm.map(|n| n.running_mean)),
    ));
    chart.y_from_zero = true;
    if settings.clip_norm > 0.0 {
        chart.threshold = Some((settings.clip_norm, "--clip-norm".to_owned()));
    }
    Figure {
        chart,
        caption: "Norms before clipping. A running mean that does not shrink means θ is not near a critical point.".to_owned(),
    }
}

fn curvature_figure(settings: &RunSettings, events: &[Event]) -> Figure {
    let epsilon = effective_rate(settings);
    let probes: Vec<_> = events
        .iter()
        .filter_map(|e| e.curvature.map(|p| (e.updates as f64, p)))
        .collect();
    let chart = Chart::new(
        "Curvature along the gradient",
        "updates (applied gradient steps)",
        "squared gradient units",
    )
    .with(Series::new(
        "g'g",
        BLUE,
        Mark::Line,
        probes
            .iter()
            .map(|(x, p)| (*x, p.gradient_norm_squared))
            .collect(),
    ))
    .with(Series::new(
        "½ε·g'Hg",
        ORANGE,
        Mark::Line,
        probes
            .iter()
            .map(|(x, p)| (*x, 0.5 * p.learning_rate * p.curvature))
            .collect(),
    ))
    .with(Series::new(
        "flagged",
        RED,
        Mark::Rings,
        probes
            .iter()
            .filter(|(_, p)| p.ill_conditioned)
            .map(|(x, p)| (*x, 0.5 * p.learning_rate * p.curvature))
            .collect(),
    ));
    let warmup = match settings.warmup_updates {
        0 => String::new(),
        updates => format!(" (smaller during the warm-up of the first {updates} updates)"),
    };
    Figure {
        chart,
        caption: format!(
            "Where the orange curve is above the blue one (ringed), a step of ε = {epsilon:.3}{warmup} along −g is predicted to raise the cost: the learning rate is too large for the curvature."
        ),
    }
}

fn clipping_figure(settings: &RunSettings, events: &[Event]) -> Figure {
    let share = |count: fn(&Event) -> u64| -> Vec<(f64, f64)> {
        events
            .iter()
            .filter(|e| e.clipping.pushes > 0)
            .map(|e| {
                (
                    e.updates as f64,
                    100.0 * count(e) as f64 / e.clipping.pushes as f64,
                )
            })
            .collect()
    };
    let mut chart = Chart::new(
        "Clipped pushes per evaluation",
        "updates (applied gradient steps)",
        "pushes clipped (% of the interval's pushes)",
    )
    .with(Series::new(
        "by norm",
        BLUE,
        Mark::Line,
        share(|e| e.clipping.clipped_by_norm),
    ))
    .with(Series::new(
        "by value",
        ORANGE,
        Mark::Line,
        share(|e| e.clipping.clipped_by_value),
    ));
    chart.y_from_zero = true;
    let state = if settings.clip_norm > 0.0 || settings.clip_value > 0.0 {
        "on"
    } else {
        "off in this run, so both curves are 0"
    };
    Figure {
        chart,
        caption: format!(
            "Share of pushes that hit a cliff and were clipped (clipping {state}); steady clipping means the threshold is below the typical gradient norm."
        ),
    }
}

fn staleness_figure(settings: &RunSettings) -> Figure {
    let total: u64 = settings.staleness.histogram.values().sum();
    let chart = Chart::new(
        "Staleness of all pushes",
        "staleness (updates between fetching θ and pushing)",
        "pushes (%)",
    )
    .with(Series::new(
        "all workers",
        BLUE,
        Mark::Bars { width_milli: 800 },
        settings
            .staleness
            .histogram
            .iter()
            .map(|(&s, &n)| (s as f64, 100.0 * n as f64 / total.max(1) as f64))
            .collect(),
    ));
    Figure {
        chart,
        caption: "Mass at 0 means fresh gradients; a long tail means workers compute on old θ, which acts like extra momentum.".to_owned(),
    }
}

fn worker_staleness_figure(settings: &RunSettings) -> Figure {
    let workers = settings.per_worker.len().max(1);
    let width = 800 / workers as u32;
    let values: BTreeSet<u64> = settings
        .per_worker
        .iter()
        .flat_map(|w| w.staleness_histogram.keys().copied())
        .collect();
    let mut chart = Chart::new(
        "Staleness per worker",
        "staleness (updates between fetching θ and pushing)",
        "pushes of the worker (%)",
    );
    for (index, worker) in settings.per_worker.iter().enumerate() {
        let total: u64 = worker.staleness_histogram.values().sum();
        let offset = (index as f64 - (workers as f64 - 1.0) / 2.0) * f64::from(width) / 1000.0;
        let bars = values
            .iter()
            .map(|s| {
                let count = worker.staleness_histogram.get(s).copied().unwrap_or(0);
                (
                    *s as f64 + offset,
                    100.0 * count as f64 / total.max(1) as f64,
                )
            })
            .collect();
        chart = chart.with(Series::new(
            &format!("worker {} ({})", worker.id, worker.name),
            WORKER_COLORS[index % WORKER_COLORS.len()],
            Mark::Bars { width_milli: width },
            bars,
        ));
    }
    Figure {
        chart,
        caption: "One bar group per staleness value; a worker whose bars sit further right is slower than the others.".to_owned(),
    }
}

fn throughput_figure(settings: &RunSettings) -> Figure {
    let seconds = settings.wall_seconds.max(f64::EPSILON);
    let chart = Chart::new(
        "Throughput per worker",
        "worker id",
        "training examples per second",
    )
    .with(Series::new(
        "examples / wall time",
        GREEN,
        Mark::Bars { width_milli: 600 },
        settings
            .per_worker
            .iter()
            .map(|w| (f64::from(w.id), w.examples as f64 / seconds))
            .collect(),
    ));
    Figure {
        chart,
        caption: "Examples in completed work ranges divided by the run's wall time; an unusually short bar is a straggler.".to_owned(),
    }
}

/// The landscape plot, shared by the report and `landscape.svg`.
pub(crate) fn landscape_chart(points: &[LandscapePoint]) -> Chart {
    let ends: Vec<(f64, f64)> = points
        .iter()
        .filter(|p| p.alpha == 0.0 || p.alpha == 1.0)
        .map(|p| (p.alpha, p.train_loss))
        .collect();
    Chart::new(
        "Cost along θ(α) = (1 − α)·θ₀ + α·θ*",
        "α (0 is θ₀, 1 is the best θ)",
        "mean cross-entropy (nats)",
    )
    .with(Series::new(
        "training",
        BLUE,
        Mark::Line,
        points.iter().map(|p| (p.alpha, p.train_loss)).collect(),
    ))
    .with(Series::new(
        "validation",
        ORANGE,
        Mark::Line,
        points
            .iter()
            .map(|p| (p.alpha, p.validation_loss))
            .collect(),
    ))
    .with(Series::new("θ₀ and θ*", RED, Mark::Rings, ends))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::run_files::Clipping;

    fn event(updates: u64, validation_error: f64, validation_loss: f64) -> Event {
        Event {
            updates,
            wall_seconds: updates as f64,
            train_loss: None,
            validation_error: Some(validation_error),
            validation_loss,
            gradient_norm: None,
            clipping: Clipping::default(),
            curvature: None,
        }
    }

    #[test]
    fn surrogate_falls_after_error_stops() {
        let events = [
            event(100, 0.10, 0.50),
            event(200, 0.05, 0.30),
            event(300, 0.06, 0.25),
            event(400, 0.07, 0.20),
        ];
        let found = disagreement(&events).expect("the minima differ");
        assert_eq!(found.from_updates, 200);
        assert_eq!(found.to_updates, 400);
        assert!(found.surrogate_still_falls);
    }

    #[test]
    fn error_improves_after_surrogate_rises() {
        let events = [
            event(100, 0.10, 0.50),
            event(200, 0.08, 0.30),
            event(300, 0.04, 0.40),
        ];
        let found = disagreement(&events).expect("the minima differ");
        assert_eq!((found.from_updates, found.to_updates), (200, 300));
        assert!(!found.surrogate_still_falls);
    }

    #[test]
    fn no_stretch_when_minima_agree() {
        let events = [event(100, 0.10, 0.50), event(200, 0.05, 0.30)];
        assert_eq!(disagreement(&events), None);
    }
}
