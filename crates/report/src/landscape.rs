//! The cost along the line θ(α) = (1 − α)·θ₀ + α·θ* through the initial
//! and the best parameters, as in Goodfellow, Vinyals and Saxe,
//! "Qualitatively characterizing neural network optimization problems"
//! (ICLR 2015).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use downpour_data::{Dataset, checkpoint, mnist, shuffle};
use downpour_model::{Evaluation, Mlp, Workspace};
use serde::Serialize;

use crate::run_files::RunSettings;

/// File names the landscape writes into the run directory.
pub const LANDSCAPE_CSV: &str = "landscape.csv";
pub const LANDSCAPE_SVG: &str = "landscape.svg";

/// Settings of [`landscape`].
#[derive(Debug, Clone)]
pub struct LandscapeOptions {
    /// Data the run trained on; `None` takes the path in `summary.json`.
    pub data: Option<PathBuf>,
    /// Points along α from −0.5 to 1.5, at least 3; 21 gives steps of 0.1.
    pub points: usize,
    /// Training examples the training cost is measured on, drawn with the
    /// run's shuffle; 0 means the whole training split.
    pub train_examples: usize,
}

impl Default for LandscapeOptions {
    fn default() -> Self {
        Self {
            data: None,
            points: 21,
            train_examples: 10_000,
        }
    }
}

/// The costs at one α.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct LandscapePoint {
    pub alpha: f64,
    /// Mean cross-entropy and 0-1 error on the training examples.
    pub train_loss: f64,
    pub train_error: f64,
    /// Mean cross-entropy and 0-1 error on the validation split.
    pub validation_loss: f64,
    pub validation_error: f64,
}

/// Returns α for point `index` of `points` evenly spaced over [−0.5, 1.5].
/// With 21 points α = 0 and α = 1 are exact grid values.
fn alpha(index: usize, points: usize) -> f64 {
    let steps = (points - 1) as f64;
    (index as f64 * 2.0 - 0.5 * steps) / steps
}

/// Evaluates the training and validation cost along the line from θ₀
/// (`initial.safetensors`) to θ* (`best.safetensors`) of the run in
/// `run_dir`, writes `landscape.csv` and `landscape.svg` there, and returns
/// the points.
///
/// # Errors
///
/// Fails when a run file is missing or invalid, the data cannot be read or
/// does not fit the model, or an output cannot be written.
pub fn landscape(
    run_dir: &Path,
    options: &LandscapeOptions,
) -> anyhow::Result<Vec<LandscapePoint>> {
    if options.points < 3 {
        bail!("--points must be at least 3, got {}", options.points);
    }
    let settings = RunSettings::read(run_dir)?;
    let (description, initial) = checkpoint::load(&run_dir.join("initial.safetensors"))?;
    let (best_description, best, metadata) =
        checkpoint::load_with_metadata(&run_dir.join("best.safetensors"))?;
    if description.is_regression() {
        bail!(
            "{}: the run trained a linear regression, but the landscape scores the 0-1 error of classifiers only",
            run_dir.display()
        );
    }
    if best_description != description {
        bail!(
            "{}: initial.safetensors and best.safetensors describe different models",
            run_dir.display()
        );
    }
    let model = Mlp::new(&description)
        .with_context(|| format!("{}: invalid model description", run_dir.display()))?;

    let data = options.data.clone().unwrap_or(settings.data.clone());
    let (train, validation) = split(&data, &settings, options.train_examples)?;
    for (name, set) in [("training", &train), ("validation", &validation)] {
        if set.num_features() != model.inputs() {
            bail!(
                "{}: {name} examples have {} features, but the run's model expects {}; pass the run's data with --data",
                data.display(),
                set.num_features(),
                model.inputs()
            );
        }
    }
    // The model saw features scaled with the training statistics.
    let (train, validation) = match &metadata.scaling {
        Some(scaling) => (scaling.apply(train), scaling.apply(validation)),
        None => (train, validation),
    };
    let train_x = train.to_f32();
    let validation_x = validation.to_f32();
    let mut workspace = Workspace::new(&model, 1000);
    let mut theta = vec![0.0f32; initial.len()];
    let mut points = Vec::with_capacity(options.points);
    for index in 0..options.points {
        let alpha = alpha(index, options.points);
        interpolate(&initial, &best, alpha, &mut theta);
        let on_train = model.evaluate(&theta, train_x.view(), &train.labels, &mut workspace);
        let on_validation = model.evaluate(
            &theta,
            validation_x.view(),
            &validation.labels,
            &mut workspace,
        );
        points.push(point(alpha, &on_train, &on_validation));
    }
    write_csv(&run_dir.join(LANDSCAPE_CSV), &points)?;
    let svg = crate::page::landscape_chart(&points).render();
    let svg_path = run_dir.join(LANDSCAPE_SVG);
    std::fs::write(&svg_path, svg).with_context(|| format!("writing {}", svg_path.display()))?;
    Ok(points)
}

/// Writes θ(α) = (1 − α)·θ₀ + α·θ* into `out`. α = 0 and α = 1 give θ₀ and
/// θ* bit for bit.
pub fn interpolate(initial: &[f32], best: &[f32], alpha: f64, out: &mut [f32]) {
    for ((out, &start), &end) in out.iter_mut().zip(initial).zip(best) {
        *out = if alpha == 0.0 {
            start
        } else if alpha == 1.0 {
            end
        } else {
            ((1.0 - alpha) * f64::from(start) + alpha * f64::from(end)) as f32
        };
    }
}

fn point(alpha: f64, train: &Evaluation, validation: &Evaluation) -> LandscapePoint {
    LandscapePoint {
        alpha,
        train_loss: train.mean_loss(),
        train_error: train.error_rate(),
        validation_loss: validation.mean_loss(),
        validation_error: validation.error_rate(),
    }
}

/// Rebuilds the run's training and validation splits as the coordinator
/// cut them: the validation split is the tail of the training file, and
/// the training examples follow the run's one-time shuffle.
fn split(
    data: &Path,
    settings: &RunSettings,
    train_examples: usize,
) -> anyhow::Result<(Dataset, Dataset)> {
    let splits = mnist::load(data)?;
    let (train, validation) = splits
        .train
        .split_off_tail(settings.validation_examples)
        .with_context(|| {
            format!(
                "{}: cannot hold out the run's {} validation examples",
                data.display(),
                settings.validation_examples
            )
        })?;
    let mut order = shuffle::permutation(train.len(), settings.seed);
    if train_examples > 0 {
        order.truncate(train_examples);
    }
    Ok((train.select(&order), validation))
}

fn write_csv(path: &Path, points: &[LandscapePoint]) -> anyhow::Result<()> {
    let mut text = String::from("alpha,train_loss,train_error,validation_loss,validation_error\n");
    for p in points {
        writeln!(
            text,
            "{},{},{},{},{}",
            p.alpha, p.train_loss, p.train_error, p.validation_loss, p.validation_error
        )
        .expect("writing to a String cannot fail");
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// Reads `landscape.csv` back; `None` when the run has none.
pub(crate) fn read_csv(run_dir: &Path) -> anyhow::Result<Option<Vec<LandscapePoint>>> {
    let path = run_dir.join(LANDSCAPE_CSV);
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let mut points = Vec::new();
    for (number, line) in text.lines().enumerate().skip(1) {
        let values: Vec<f64> = line
            .split(',')
            .map(str::parse)
            .collect::<Result<_, _>>()
            .with_context(|| {
                format!(
                    "{} line {}: expected five numbers; run `downpour landscape` again",
                    path.display(),
                    number + 1
                )
            })?;
        let [
            alpha,
            train_loss,
            train_error,
            validation_loss,
            validation_error,
        ] = values[..]
        else {
            bail!(
                "{} line {}: expected five numbers, found {}; run `downpour landscape` again",
                path.display(),
                number + 1,
                values.len()
            );
        };
        points.push(LandscapePoint {
            alpha,
            train_loss,
            train_error,
            validation_loss,
            validation_error,
        });
    }
    Ok(Some(points))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_grid_hits_endpoints() {
        let grid: Vec<f64> = (0..21).map(|i| alpha(i, 21)).collect();
        assert_eq!(grid[0], -0.5);
        assert_eq!(grid[5], 0.0);
        assert_eq!(grid[15], 1.0);
        assert_eq!(grid[20], 1.5);
    }

    #[test]
    fn interpolation_endpoints_are_exact() {
        let (start, end) = ([0.1f32, -2.0], [0.7f32, 3.0]);
        let mut out = [0.0f32; 2];
        interpolate(&start, &end, 0.0, &mut out);
        assert_eq!(out, start);
        interpolate(&start, &end, 1.0, &mut out);
        assert_eq!(out, end);
        interpolate(&start, &end, 0.5, &mut out);
        assert_eq!(out, [0.4, 0.5]);
    }
}
