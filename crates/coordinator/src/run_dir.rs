//! The run directory: the event log, checkpoints and the summary.
//!
//! `summary.json` is written last, through a temporary file and a rename,
//! so a directory with a summary contains a finished run, and one without
//! it contains a run that stopped early or is still going.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use downpour_data::checkpoint::RunMetadata;
use downpour_data::formats::SplitsRecord;
use downpour_data::scaling::Scaling;
use downpour_data::{atomic, checkpoint};
use downpour_metrics::tensorboard::{self, EventWriter};
use downpour_model::ModelDescription;
use serde::Serialize;

use crate::diagnostics::EvalDiagnostics;
use crate::diagnostics::PushTraffic;
use crate::error::CoordinatorError;
use crate::service::{EpochUsage, WorkerRecord};

/// One row of `events.jsonl`, written after each validation pass.
#[derive(Debug, Clone, Serialize)]
pub struct EvalEvent {
    /// 1 for the first validation pass.
    pub evaluation: u32,
    /// Training examples processed divided by training examples per epoch.
    pub epoch: f64,
    /// Parameter-server version the snapshot was taken at.
    pub updates: u64,
    /// Training examples behind the applied updates.
    pub examples: u64,
    /// Seconds since training started.
    pub wall_seconds: f64,
    /// Mean minibatch loss of the updates since the previous pass; null when
    /// there were none.
    pub train_loss: Option<f64>,
    /// 0-1 error of a classifier; absent for regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_error: Option<f64>,
    /// Mean squared error of linear regression; absent for classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub validation_mse: Option<f64>,
    /// Mean cross-entropy of a classifier, or the mean squared error.
    pub validation_loss: f64,
    /// Lowest `validation_error` so far; absent for regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_validation_error: Option<f64>,
    /// Lowest `validation_mse` so far; absent for classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_validation_mse: Option<f64>,
    /// Training examples per second since the previous pass.
    pub examples_per_second: f64,
    /// Mean staleness of the pushes since the previous pass.
    pub mean_staleness: Option<f64>,
    #[serde(flatten)]
    pub diagnostics: EvalDiagnostics,
}

/// Push staleness over the whole run: for each push, the number of updates
/// applied between the θ its gradient came from and the push.
#[derive(Debug, Clone, Serialize)]
pub struct StalenessSummary {
    pub mean: f64,
    pub max: u64,
    /// Number of pushes per staleness value.
    pub histogram: BTreeMap<u64, u64>,
}

/// The contents of `summary.json`.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub run_id: String,
    pub data: String,
    pub model: String,
    pub parameters: usize,
    /// Accuracy of the best-validation θ on the test split, when there is
    /// one.
    pub test_accuracy: Option<f64>,
    /// Mean squared error of the best-validation θ on the test split, for
    /// linear regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub test_mse: Option<f64>,
    pub test_loss: Option<f64>,
    pub test_examples: usize,
    /// `classification` or `regression`.
    pub task: String,
    /// Lowest validation 0-1 error; absent for regression.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_validation_error: Option<f64>,
    /// Lowest validation mean squared error; absent for classifiers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub best_validation_mse: Option<f64>,
    /// Parameter-server version of the best θ.
    pub best_updates: u64,
    pub best_epoch: f64,
    /// Training examples processed up to the stop decision, divided by
    /// training examples per epoch.
    pub epochs: f64,
    /// Updates of θ up to the stop decision; training stops on every
    /// parameter server before θ is read, so no update follows.
    pub updates: u64,
    /// Pushes behind those updates: equal to `updates` except in sync
    /// mode, where one update averages the pushes of a step.
    pub pushes: u64,
    /// Training examples behind those updates.
    pub examples: u64,
    /// Pushes delivered again and acknowledged without being applied twice.
    pub duplicate_pushes: u64,
    /// Pushes that workers reported as acknowledged but that the parameter
    /// servers' totals do not hold, summed over workers: 0 unless an
    /// acknowledged update was lost.
    pub updates_lost: u64,
    /// Per epoch, the training examples in completed ranges, and those
    /// handed out again after a worker's lease expired.
    pub epoch_usage: Vec<EpochUsage>,
    /// `early_stopping`, `target_accuracy`, `target_mse` or `max_epochs`.
    pub stop_reason: String,
    pub evaluations: u32,
    /// Seconds from the start of training to the stop decision.
    pub wall_seconds: f64,
    /// Training examples divided by `wall_seconds`.
    pub examples_per_second: f64,
    pub workers: usize,
    /// Per-worker counts of minibatches, examples and applied pushes.
    pub per_worker: Vec<WorkerRecord>,
    pub staleness: StalenessSummary,
    /// `async`, `bounded:S` or `sync`.
    pub consistency: String,
    /// Whether each gradient was scaled by 1 / (staleness + 1).
    pub staleness_scaling: bool,
    /// λ of delay-compensated updates; 0 when off.
    pub dc_lambda: f32,
    pub push_every: u32,
    pub fetch_every: u32,
    /// `f32` or `bf16`.
    pub push_encoding: String,
    /// `sparse` when workers push only the gradient values their
    /// minibatches touched, else `dense`.
    pub gradients: String,
    /// Values and bytes of the pushes workers reported.
    pub push_traffic: PushTraffic,
    pub train_examples: usize,
    pub validation_examples: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Updates of the linear learning-rate warm-up; 0 when off.
    pub warmup_updates: u64,
    /// `--clip-norm` and `--clip-value`; 0 when off.
    pub clip_norm: f32,
    pub clip_value: f32,
    pub seed: u64,
    pub eval_every: u64,
    pub patience: u32,
    pub target_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target_mse: Option<f64>,
    pub max_epochs: u32,
    /// File name of the best-θ checkpoint inside the run directory.
    pub checkpoint: String,
    /// Data format, class names, and how each split was made.
    pub splits: SplitsRecord,
    /// Feature scaling fitted on the training split; absent without
    /// `--scale`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scaling: Option<Scaling>,
}

/// An open run directory, locked against other runs while it is open.
#[derive(Debug)]
pub struct RunDir {
    path: PathBuf,
    events: BufWriter<File>,
    /// TensorBoard scalars with the same rows as `events.jsonl`, when on.
    tensorboard: Option<EventWriter>,
    /// Classes and scaling written into every checkpoint's metadata.
    metadata: RunMetadata,
    /// `.lock` in the directory, exclusively locked until this is dropped.
    _lock: File,
}

/// File name of the best-θ checkpoint, without its extension.
pub const BEST_CHECKPOINT: &str = "best";
/// File name of the θ₀ checkpoint, without its extension.
pub const INITIAL_CHECKPOINT: &str = "initial";
/// File name of the checkpoint of θ at the end of the run, without its
/// extension.
pub const LAST_CHECKPOINT: &str = "last";

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> CoordinatorError + '_ {
    move |error| CoordinatorError::Io {
        path: path.to_owned(),
        error,
    }
}

/// Takes the exclusive lock on `.lock` in the directory.
fn lock_dir(path: &Path) -> Result<File, CoordinatorError> {
    let lock_path = path.join(".lock");
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    match lock.try_lock() {
        Ok(()) => Ok(lock),
        Err(fs::TryLockError::WouldBlock) => {
            Err(CoordinatorError::RunDirectoryInUse(path.to_owned()))
        }
        Err(fs::TryLockError::Error(error)) => Err(io_error(&lock_path)(error)),
    }
}

impl RunDir {
    /// Creates the directory, or reuses an empty or unfinished one, and
    /// locks it.
    ///
    /// # Errors
    ///
    /// Rejects a directory that already contains a `summary.json`, so a
    /// finished run is never overwritten, and one that another live run
    /// has locked.
    pub fn create(path: &Path) -> Result<Self, CoordinatorError> {
        if path.join("summary.json").exists() {
            return Err(CoordinatorError::RunDirectoryTaken(path.to_owned()));
        }
        fs::create_dir_all(path).map_err(io_error(path))?;
        let lock = lock_dir(path)?;
        // Checked again under the lock: a run may have finished meanwhile.
        if path.join("summary.json").exists() {
            return Err(CoordinatorError::RunDirectoryTaken(path.to_owned()));
        }
        // A checkpoint left by an unfinished earlier run must not pass for
        // this run's best θ.
        let stale = path.join(format!("{BEST_CHECKPOINT}.safetensors"));
        if stale.exists() {
            fs::remove_file(&stale).map_err(io_error(&stale))?;
        }

        let events_path = path.join("events.jsonl");
        let events = File::create(&events_path).map_err(io_error(&events_path))?;
        Ok(Self {
            path: path.to_owned(),
            events: BufWriter::new(events),
            tensorboard: None,
            metadata: RunMetadata::default(),
            _lock: lock,
        })
    }

    /// Opens the directory of a run whose coordinator stopped before the
    /// end, to go on with it: the event log is appended to and the best θ
    /// kept.
    ///
    /// # Errors
    ///
    /// Rejects a missing directory, one with a `summary.json` (the run
    /// finished) and one that another live run has locked.
    pub fn resume(path: &Path) -> Result<Self, CoordinatorError> {
        if !path.is_dir() {
            return Err(CoordinatorError::resume(
                path.to_owned(),
                "no such run directory; --resume needs the --run-dir of the run to go on with"
                    .to_owned(),
            ));
        }
        let lock = lock_dir(path)?;
        if path.join("summary.json").exists() {
            return Err(CoordinatorError::resume(
                path.to_owned(),
                "the run already finished (summary.json exists); start a new run instead"
                    .to_owned(),
            ));
        }
        let events_path = path.join("events.jsonl");
        let events = File::options()
            .create(true)
            .append(true)
            .open(&events_path)
            .map_err(io_error(&events_path))?;
        Ok(Self {
            path: path.to_owned(),
            events: BufWriter::new(events),
            tensorboard: None,
            metadata: RunMetadata::default(),
            _lock: lock,
        })
    }

    /// Returns the directory's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Starts a TensorBoard event file in the directory, which from now
    /// on gets every row of `events.jsonl` as scalars.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of creating the file.
    pub fn write_tensorboard(&mut self) -> Result<(), CoordinatorError> {
        let writer = EventWriter::create(&self.path).map_err(io_error(&self.path))?;
        self.tensorboard = Some(writer);
        Ok(())
    }

    /// Appends one row to `events.jsonl` and flushes it. With TensorBoard
    /// on, every number of the row also becomes a scalar named by its field,
    /// at step `updates`.
    ///
    /// # Errors
    ///
    /// Returns the I/O error of the write.
    pub fn append_event(&mut self, event: &EvalEvent) -> Result<(), CoordinatorError> {
        let path = self.path.join("events.jsonl");
        let line = serde_json::to_string(event).map_err(|e| CoordinatorError::Io {
            path: path.clone(),
            error: e.into(),
        })?;
        writeln!(self.events, "{line}").map_err(io_error(&path))?;
        self.events.flush().map_err(io_error(&path))?;
        if let Some(writer) = &mut self.tensorboard {
            // The same serialization as the line, so both files hold the
            // same fields and values.
            let row = serde_json::to_value(event).map_err(|e| CoordinatorError::Io {
                path: path.clone(),
                error: e.into(),
            })?;
            let step = i64::try_from(event.updates).unwrap_or(i64::MAX);
            writer
                .write_scalars(step, &tensorboard::scalars_from_json(&row))
                .map_err(|error| CoordinatorError::Io {
                    path: writer.path().to_owned(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Sets the classes and scaling that later checkpoints carry in their
    /// metadata.
    pub fn set_run_metadata(&mut self, metadata: RunMetadata) {
        self.metadata = metadata;
    }

    /// Writes a safetensors checkpoint, with the run's metadata, and
    /// `model.json`.
    ///
    /// # Errors
    ///
    /// Returns the error of the write.
    pub fn save_checkpoint(
        &self,
        stem: &str,
        description: &ModelDescription,
        params: &[f32],
    ) -> Result<PathBuf, CoordinatorError> {
        Ok(checkpoint::save_with_metadata(
            &self.path,
            stem,
            description,
            params,
            &self.metadata,
        )?)
    }

    /// Writes `summary.json` atomically.
    ///
    /// # Errors
    ///
    /// Returns the error of the write.
    pub fn write_summary(&self, summary: &RunSummary) -> Result<PathBuf, CoordinatorError> {
        let path = self.path.join("summary.json");
        let mut text = serde_json::to_string_pretty(summary).map_err(|e| CoordinatorError::Io {
            path: path.clone(),
            error: e.into(),
        })?;
        text.push('\n');
        atomic::write_atomic(&path, text.as_bytes()).map_err(io_error(&path))?;
        Ok(path)
    }
}
