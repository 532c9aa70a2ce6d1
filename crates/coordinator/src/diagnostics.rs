//! Optimizer diagnostics recorded at each validation pass: the norms of
//! the gradients workers pushed, how many of them were clipped, and the
//! ill-conditioning check on a fixed validation minibatch.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use downpour_model::{
    CurvatureProbe, MinibatchObjective, Mlp, RegressionObjective, Workspace, probe_curvature,
};
use downpour_proto::v1::PushRecord;
use downpour_ps::SgdConfig;
use ndarray::{Array2, s};
use serde::Serialize;

use crate::error::CoordinatorError;
use crate::prepare::EvalSet;

/// Validation examples in the fixed minibatch of the curvature probe: the
/// first ones of the validation split.
pub const PROBE_EXAMPLES: usize = 256;

/// Validation passes whose gradient norms make up the running mean.
pub const RUNNING_MEAN_PASSES: usize = 5;

/// File of one row per applied push, in the run directory.
pub const PUSHES_FILE: &str = "pushes.jsonl";

/// Pushes reported with completed work ranges, waiting for the next
/// validation pass.
#[derive(Debug, Default)]
pub(crate) struct PushLog {
    pushes: Vec<(u32, PushRecord)>,
}

impl PushLog {
    pub(crate) fn add(&mut self, worker_id: u32, pushes: Vec<PushRecord>) {
        self.pushes
            .extend(pushes.into_iter().map(|push| (worker_id, push)));
    }

    pub(crate) fn take(&mut self) -> Vec<(u32, PushRecord)> {
        std::mem::take(&mut self.pushes)
    }
}

/// Statistics of the gradient norms reported since the previous pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GradientNormStats {
    pub count: u64,
    pub mean: f64,
    pub min: f64,
    pub max: f64,
    /// Mean over the norms of this pass and the previous
    /// `RUNNING_MEAN_PASSES − 1` passes.
    pub running_mean: f64,
}

/// Clipping of the pushes reported since the previous pass.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ClippingCounts {
    /// Pushes reported.
    pub pushes: u64,
    /// Pushes whose gradient `--clip-norm` rescaled.
    pub clipped_by_norm: u64,
    /// Pushes with at least one value that `--clip-value` clamped.
    pub clipped_by_value: u64,
    /// Gradient values `--clip-value` clamped, over all those pushes.
    pub clipped_values: u64,
}

/// Gradient values and bytes of the pushes workers reported as applied.
///
/// NOTE: a coordinator resumed from its state file counts from its own
/// start, so these totals then leave out the pushes before the restart.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PushTraffic {
    /// Pushes reported.
    pub pushes: u64,
    /// Of those, the sparse pushes.
    pub sparse_pushes: u64,
    /// Gradient values the pushes carried, summed over the servers.
    pub values: u64,
    /// Encoded size of their PushRequest messages, summed over the servers
    /// and pieces.
    pub bytes: u64,
    /// `bytes / pushes`, or 0 without pushes.
    pub bytes_per_push: f64,
}

/// The diagnostics columns of one row of `events.jsonl`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct EvalDiagnostics {
    /// Null when no push was reported since the previous pass.
    pub gradient_norm: Option<GradientNormStats>,
    pub clipping: ClippingCounts,
    /// The ill-conditioning check at the pass's θ on the fixed validation
    /// minibatch, for the run's learning rate.
    pub curvature: Option<CurvatureProbe>,
}

/// One row of `pushes.jsonl`.
#[derive(Debug, Serialize)]
struct PushRow {
    worker: u32,
    /// Version of θ after the push.
    version: u64,
    staleness: u64,
    gradient_norm: f32,
    clipped_by_norm: bool,
    clipped_values: u32,
    /// Gradient values the push carried and the encoded size of its
    /// PushRequest messages, summed over the servers.
    values: u64,
    bytes: u64,
    sparse: bool,
}

/// Gradient-norm statistics and the push file, kept between passes.
#[derive(Debug)]
pub(crate) struct PushRecorder {
    /// Count and sum of the norms of each recent pass, oldest first.
    recent: VecDeque<(u64, f64)>,
    path: PathBuf,
    file: BufWriter<File>,
    traffic: PushTraffic,
}

impl PushRecorder {
    pub(crate) fn create(run_dir: &Path) -> Result<Self, CoordinatorError> {
        let path = run_dir.join(PUSHES_FILE);
        let file = File::create(&path).map_err(|error| CoordinatorError::Io {
            path: path.clone(),
            error,
        })?;
        Ok(Self {
            recent: VecDeque::new(),
            path,
            file: BufWriter::new(file),
            traffic: PushTraffic::default(),
        })
    }

    /// Returns the traffic of every push recorded so far.
    pub(crate) fn traffic(&self) -> PushTraffic {
        PushTraffic {
            bytes_per_push: self.traffic.bytes as f64 / self.traffic.pushes.max(1) as f64,
            ..self.traffic
        }
    }

    /// Appends `pushes` to the push file and returns their statistics.
    pub(crate) fn record(
        &mut self,
        pushes: &[(u32, PushRecord)],
    ) -> Result<(Option<GradientNormStats>, ClippingCounts), CoordinatorError> {
        let mut clipping = ClippingCounts::default();
        let (mut sum, mut min, mut max) = (0.0f64, f64::INFINITY, f64::NEG_INFINITY);
        for (worker, push) in pushes {
            let row = PushRow {
                worker: *worker,
                version: push.version,
                staleness: push.staleness,
                gradient_norm: push.gradient_norm,
                clipped_by_norm: push.clipped_by_norm,
                clipped_values: push.clipped_values,
                values: push.pushed_values,
                bytes: push.push_bytes,
                sparse: push.sparse,
            };
            self.traffic.pushes += 1;
            self.traffic.sparse_pushes += u64::from(push.sparse);
            self.traffic.values += push.pushed_values;
            self.traffic.bytes += push.push_bytes;
            let line = serde_json::to_string(&row).map_err(|error| CoordinatorError::Io {
                path: self.path.clone(),
                error: error.into(),
            })?;
            writeln!(self.file, "{line}").map_err(|error| self.io(error))?;
            let norm = f64::from(push.gradient_norm);
            sum += norm;
            min = min.min(norm);
            max = max.max(norm);
            clipping.pushes += 1;
            clipping.clipped_by_norm += u64::from(push.clipped_by_norm);
            clipping.clipped_by_value += u64::from(push.clipped_values > 0);
            clipping.clipped_values += u64::from(push.clipped_values);
        }
        self.file.flush().map_err(|error| self.io(error))?;

        let count = pushes.len() as u64;
        self.recent.push_back((count, sum));
        if self.recent.len() > RUNNING_MEAN_PASSES {
            self.recent.pop_front();
        }
        let (recent_count, recent_sum) = self
            .recent
            .iter()
            .fold((0, 0.0), |(c, s), &(count, sum)| (c + count, s + sum));
        let stats = (count > 0).then(|| GradientNormStats {
            count,
            mean: sum / count as f64,
            min,
            max,
            running_mean: recent_sum / recent_count as f64,
        });
        Ok((stats, clipping))
    }

    fn io(&self, error: std::io::Error) -> CoordinatorError {
        CoordinatorError::Io {
            path: self.path.clone(),
            error,
        }
    }
}

/// Returns ε/(1 − β), the step size of the check for SGD with learning
/// rate ε and momentum β: the distance per update that momentum SGD covers
/// along a gradient that stays the same, and ε itself without momentum.
pub fn effective_learning_rate(learning_rate: f32, momentum: f32) -> f64 {
    f64::from(learning_rate) / (1.0 - f64::from(momentum))
}

/// The fixed validation minibatch and the buffers of the curvature probe.
#[derive(Debug)]
pub(crate) struct CurvatureSet {
    model: Mlp,
    workspace: Workspace,
    features: Array2<f32>,
    labels: Vec<u32>,
    /// Regression targets; empty for a classifier.
    targets: Vec<f32>,
    sgd: SgdConfig,
}

impl CurvatureSet {
    /// Takes the first [`PROBE_EXAMPLES`] validation examples and the
    /// servers' optimizer settings. The probed cost includes the L2 penalty
    /// of the weight decay, as the parameter server's update does.
    pub(crate) fn new(model: &Mlp, validation: &EvalSet, sgd: SgdConfig) -> Self {
        let rows = validation.len().min(PROBE_EXAMPLES);
        Self {
            workspace: Workspace::new(model, rows),
            model: model.clone(),
            features: validation.features.slice(s![..rows, ..]).to_owned(),
            labels: validation.labels[..rows.min(validation.labels.len())].to_vec(),
            targets: validation.targets[..rows.min(validation.targets.len())].to_vec(),
            sgd,
        }
    }

    /// Runs the check at `params`, θ after `updates` updates, on a blocking
    /// thread, so the servers in this process keep serving requests. The
    /// step size is [`effective_learning_rate`] of the learning rate of the
    /// next update, which the warm-up makes depend on `updates`. `None` for
    /// an empty validation split.
    pub(crate) async fn probe(
        set: &Arc<Mutex<Self>>,
        params: Arc<Vec<f32>>,
        updates: u64,
    ) -> Result<Option<CurvatureProbe>, CoordinatorError> {
        let set = set.clone();
        let probe = tokio::task::spawn_blocking(move || {
            let mut guard = set.lock().unwrap_or_else(|p| p.into_inner());
            let CurvatureSet {
                model,
                workspace,
                features,
                labels,
                targets,
                sgd,
            } = &mut *guard;
            if features.nrows() == 0 {
                return None;
            }
            let learning_rate =
                effective_learning_rate(sgd.learning_rate_at(updates), sgd.momentum);
            let weight_decay = f64::from(sgd.weight_decay);
            if !targets.is_empty() {
                let mut objective = RegressionObjective {
                    model,
                    features: features.view(),
                    targets,
                    workspace,
                };
                return Some(probe_curvature(
                    &params,
                    learning_rate,
                    weight_decay,
                    &mut objective,
                ));
            }
            let mut objective = MinibatchObjective {
                model,
                features: features.view(),
                labels,
                workspace,
            };
            Some(probe_curvature(
                &params,
                learning_rate,
                weight_decay,
                &mut objective,
            ))
        });
        probe.await.map_err(|error| match error.try_into_panic() {
            // A panic in the probe is a bug; raise it again here.
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down.
            Err(_) => CoordinatorError::Interrupted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(norm: f32, clipped_by_norm: bool, clipped_values: u32) -> (u32, PushRecord) {
        (
            0,
            PushRecord {
                gradient_norm: norm,
                version: 1,
                staleness: 0,
                clipped_by_norm,
                clipped_values,
                ..PushRecord::default()
            },
        )
    }

    #[test]
    fn norm_stats_and_running_mean() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let mut recorder = PushRecorder::create(dir.path()).expect("push file");
        let (stats, clipping) = recorder
            .record(&[push(1.0, false, 0), push(3.0, true, 2)])
            .expect("written");
        let stats = stats.expect("two pushes");
        assert_eq!(stats.count, 2);
        assert_eq!(stats.mean, 2.0);
        assert_eq!(stats.min, 1.0);
        assert_eq!(stats.max, 3.0);
        assert_eq!(stats.running_mean, 2.0);
        assert_eq!(clipping.clipped_by_norm, 1);
        assert_eq!(clipping.clipped_by_value, 1);
        assert_eq!(clipping.clipped_values, 2);

        let (stats, _) = recorder.record(&[push(6.0, false, 0)]).expect("written");
        let stats = stats.expect("one push");
        assert_eq!(stats.mean, 6.0);
        assert_eq!(stats.running_mean, 10.0 / 3.0);

        let (stats, clipping) = recorder.record(&[]).expect("written");
        assert!(stats.is_none());
        assert_eq!(clipping.pushes, 0);
        let written = std::fs::read_to_string(dir.path().join(PUSHES_FILE)).expect("push file");
        assert_eq!(written.lines().count(), 3);
    }
}
