//! Reading the files of a run directory that the coordinator writes.
//! Columns added after a run was made are optional, so older runs still
//! render.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use downpour_model::CurvatureProbe;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// The parts of `summary.json` that the reports use.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct RunSettings {
    pub(crate) data: PathBuf,
    pub(crate) model: String,
    pub(crate) validation_examples: usize,
    pub(crate) seed: u64,
    pub(crate) learning_rate: f64,
    pub(crate) momentum: f64,
    /// Absent from summaries written before the warm-up existed.
    #[serde(default)]
    pub(crate) warmup_updates: u64,
    #[serde(default)]
    pub(crate) clip_norm: f64,
    #[serde(default)]
    pub(crate) clip_value: f64,
    pub(crate) workers: usize,
    pub(crate) consistency: String,
    pub(crate) wall_seconds: f64,
    pub(crate) updates: u64,
    pub(crate) epochs: f64,
    pub(crate) stop_reason: String,
    /// Absent for linear regression, whose runs record the MSE instead.
    #[serde(default)]
    pub(crate) best_validation_error: Option<f64>,
    #[serde(default)]
    pub(crate) best_validation_mse: Option<f64>,
    pub(crate) test_accuracy: Option<f64>,
    #[serde(default)]
    pub(crate) test_mse: Option<f64>,
    pub(crate) per_worker: Vec<WorkerRow>,
    pub(crate) staleness: Staleness,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct WorkerRow {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) examples: u64,
    #[serde(default)]
    pub(crate) staleness_histogram: BTreeMap<u64, u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Staleness {
    pub(crate) mean: f64,
    pub(crate) histogram: BTreeMap<u64, u64>,
}

impl RunSettings {
    pub(crate) fn read(run_dir: &Path) -> anyhow::Result<Self> {
        let path = run_dir.join("summary.json");
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "reading {}; a run directory has a summary once its run finished",
                path.display()
            )
        })?;
        serde_json::from_str(&text).with_context(|| format!("{}: invalid summary", path.display()))
    }
}

/// One row of `events.jsonl`.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Event {
    pub(crate) updates: u64,
    pub(crate) wall_seconds: f64,
    pub(crate) train_loss: Option<f64>,
    /// Absent for linear regression, whose validation loss is the MSE.
    #[serde(default)]
    pub(crate) validation_error: Option<f64>,
    pub(crate) validation_loss: f64,
    #[serde(default)]
    pub(crate) gradient_norm: Option<NormStats>,
    #[serde(default)]
    pub(crate) clipping: Clipping,
    #[serde(default)]
    pub(crate) curvature: Option<CurvatureProbe>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct NormStats {
    pub(crate) running_mean: f64,
}

#[derive(Debug, Clone, Copy, Default, Deserialize)]
pub(crate) struct Clipping {
    pub(crate) pushes: u64,
    pub(crate) clipped_by_norm: u64,
    pub(crate) clipped_by_value: u64,
}

/// One row of `pushes.jsonl`.
#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct Push {
    pub(crate) version: u64,
    pub(crate) gradient_norm: f64,
}

/// Reads a JSON-lines file; `None` when it does not exist.
pub(crate) fn read_jsonl<T: DeserializeOwned>(path: &Path) -> anyhow::Result<Option<Vec<T>>> {
    if !path.exists() {
        return Ok(None);
    }
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut rows = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let row = serde_json::from_str(line)
            .with_context(|| format!("{} line {}: invalid row", path.display(), number + 1))?;
        rows.push(row);
    }
    Ok(Some(rows))
}

/// File name of the coordinator's push log.
pub(crate) const PUSHES: &str = "pushes.jsonl";
