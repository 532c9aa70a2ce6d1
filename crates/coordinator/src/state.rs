//! The coordinator's saved state, `coordinator-state.json` in the run
//! directory: the schedule, the workers, the use of each epoch and the
//! early-stopping progress. A coordinator started with `resume` reads it and
//! carries on with the same run instead of starting over.
//!
//! The file is replaced after every change of the schedule, before the
//! reply that reports the change goes out, so a coordinator killed at any
//! point resumes with every range it acknowledged. Those writes skip the
//! disk sync, which happens at each validation pass: a machine crash can
//! lose the changes since the last pass, a process crash loses none.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::CoordinatorConfig;
use crate::error::CoordinatorError;
use crate::schedule::ScheduleState;
use crate::service::EpochUsage;

/// File name of the saved state inside the run directory.
pub const STATE_FILE: &str = "coordinator-state.json";

/// Version of the file's layout.
const STATE_FORMAT: u32 = 1;

/// The settings that decide the shards and θ's layout. A resumed
/// coordinator must be started with the same ones.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RunIdentity {
    data: String,
    model: String,
    seed: u64,
    workers: usize,
    batch_size: usize,
    validation_size: usize,
    parameter_servers: usize,
    consistency: String,
    /// Feature scaling, which a resumed run must fit and apply again. State
    /// saved before scaling existed had none.
    #[serde(default = "no_scaling")]
    scale: String,
}

fn no_scaling() -> String {
    "none".to_owned()
}

impl RunIdentity {
    pub(crate) fn of(config: &CoordinatorConfig) -> Self {
        Self {
            data: config.data.display().to_string(),
            model: config.model.to_string(),
            seed: config.seed,
            workers: config.workers,
            batch_size: config.batch_size,
            validation_size: config.validation_size,
            parameter_servers: config.ps_addresses.len(),
            consistency: config.consistency.to_string(),
            scale: config.scale.to_string(),
        }
    }

    /// Lists the settings that differ, as `name: saved -> now`.
    fn differences(&self, now: &Self) -> Vec<String> {
        let mut differences = Vec::new();
        let mut compare = |name: &str, saved: String, current: String| {
            if saved != current {
                differences.push(format!("{name}: {saved} -> {current}"));
            }
        };
        compare("--data", self.data.clone(), now.data.clone());
        compare("--model", self.model.clone(), now.model.clone());
        compare("--scale", self.scale.clone(), now.scale.clone());
        compare("--seed", self.seed.to_string(), now.seed.to_string());
        compare(
            "--workers",
            self.workers.to_string(),
            now.workers.to_string(),
        );
        compare(
            "--batch-size",
            self.batch_size.to_string(),
            now.batch_size.to_string(),
        );
        compare(
            "--validation-size",
            self.validation_size.to_string(),
            now.validation_size.to_string(),
        );
        compare(
            "--ps (servers)",
            self.parameter_servers.to_string(),
            now.parameter_servers.to_string(),
        );
        compare(
            "--consistency",
            self.consistency.clone(),
            now.consistency.clone(),
        );
        differences
    }
}

/// One registered worker, as saved.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedWorker {
    pub(crate) id: u32,
    pub(crate) name: String,
    pub(crate) shards: Vec<u32>,
    pub(crate) leases_lost: u32,
    pub(crate) lease_lost: bool,
    pub(crate) minibatches: u64,
    pub(crate) examples: u64,
    pub(crate) pushes_acked: u64,
    pub(crate) stop_sent: bool,
}

/// Push totals at the previous validation pass.
#[derive(Debug, Default, Clone, Copy, Serialize, Deserialize)]
pub(crate) struct Mark {
    pub(crate) examples: u64,
    pub(crate) loss_sum: f64,
    pub(crate) pushes: u64,
    pub(crate) staleness_sum: u64,
    pub(crate) seconds: f64,
}

/// The training driver's progress: validation passes and early stopping.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub(crate) struct DriverProgress {
    pub(crate) evaluations: u32,
    /// Lowest value so far of the stopping metric (the 0-1 error, or the
    /// mean squared error of linear regression); its θ is `best.safetensors`.
    pub(crate) best_validation_error: Option<f64>,
    pub(crate) best_updates: u64,
    pub(crate) best_epoch: f64,
    pub(crate) evaluations_since_best: u32,
    /// Parameter-server version of the last validation pass.
    pub(crate) last_version: Option<u64>,
    /// Version that the next validation pass waits for.
    pub(crate) next_eval: u64,
    pub(crate) previous: Mark,
    /// Training seconds before the coordinator's latest start.
    pub(crate) seconds: f64,
}

/// Everything `coordinator-state.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SavedState {
    pub(crate) format: u32,
    pub(crate) run_id: String,
    pub(crate) identity: RunIdentity,
    pub(crate) schedule: ScheduleState,
    pub(crate) workers: Vec<SavedWorker>,
    pub(crate) orphans: Vec<u32>,
    pub(crate) epochs: Vec<EpochUsage>,
    pub(crate) progress: DriverProgress,
}

impl SavedState {
    pub(crate) fn new(run_id: String, identity: RunIdentity, schedule: ScheduleState) -> Self {
        Self {
            format: STATE_FORMAT,
            run_id,
            identity,
            schedule,
            workers: Vec::new(),
            orphans: Vec::new(),
            epochs: Vec::new(),
            progress: DriverProgress::default(),
        }
    }

    /// Writes the state to `path`, synced to disk when `sync` is set.
    pub(crate) fn save(&self, path: &Path, sync: bool) -> Result<(), CoordinatorError> {
        let io_error = |error: std::io::Error| CoordinatorError::Io {
            path: path.to_owned(),
            error,
        };
        let bytes = serde_json::to_vec(self).map_err(|error| io_error(error.into()))?;
        if sync {
            downpour_data::atomic::write_atomic(path, &bytes).map_err(io_error)
        } else {
            downpour_data::atomic::write_atomic_unsynced(path, &bytes).map_err(io_error)
        }
    }

    /// Reads the state of the run in `run_dir` and checks that `identity`
    /// matches the saved one.
    pub(crate) fn load(run_dir: &Path, identity: &RunIdentity) -> Result<Self, CoordinatorError> {
        let path = run_dir.join(STATE_FILE);
        let bytes = std::fs::read(&path).map_err(|error| {
            CoordinatorError::resume(
                path.clone(),
                format!(
                    "cannot read it ({error}); --resume needs the --run-dir of a run whose coordinator stopped before it finished"
                ),
            )
        })?;
        let state: Self = serde_json::from_slice(&bytes).map_err(|error| {
            CoordinatorError::resume(
                path.clone(),
                format!(
                    "not a valid coordinator state ({error}); start a new run without --resume"
                ),
            )
        })?;
        if state.format != STATE_FORMAT {
            return Err(CoordinatorError::resume(
                path,
                format!(
                    "format {} is not the supported format {STATE_FORMAT}; resume with the Downpour version that started the run",
                    state.format
                ),
            ));
        }
        let differences = state.identity.differences(identity);
        if !differences.is_empty() {
            return Err(CoordinatorError::resume(
                path,
                format!(
                    "the run was started with other settings ({}); resume with the settings it started with",
                    differences.join(", ")
                ),
            ));
        }
        Ok(state)
    }
}

/// Returns the path of the saved state in `run_dir`.
pub(crate) fn state_path(run_dir: &Path) -> PathBuf {
    run_dir.join(STATE_FILE)
}
