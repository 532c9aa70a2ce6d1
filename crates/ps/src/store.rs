//! θ, its optimizer state and the push accounting, with no I/O.

use std::collections::BTreeMap;

use crate::optimizer::SgdConfig;

/// A rejected `Init` or push. θ is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    #[error("initial parameters are empty")]
    EmptyParams,
    #[error("initial parameters hold a non-finite value at index {index}")]
    NonFiniteParams { index: usize },
    #[error("invalid optimizer settings: {0}")]
    InvalidOptimizer(String),
    #[error("gradient holds {actual} values but θ holds {expected}")]
    WrongLength { expected: usize, actual: usize },
    #[error("gradient holds a non-finite value at index {index}")]
    NonFiniteGradient { index: usize },
    #[error("push was computed at version {version}, but the server is only at {current}")]
    FutureVersion { version: u64, current: u64 },
    #[error("push reports a non-finite loss")]
    NonFiniteLoss,
    #[error(
        "training diverged at update {version}: θ holds non-finite values; lower the learning rate (--lr)"
    )]
    Diverged { version: u64 },
}

/// Counters summed over every applied push.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PushTotals {
    /// Training examples behind the applied gradients.
    pub examples: u64,
    /// Sum of the minibatch mean losses.
    pub loss_sum: f64,
    /// Applied pushes.
    pub pushes: u64,
    /// Sum of the staleness of every push.
    pub staleness_sum: u64,
    /// Largest staleness seen.
    pub max_staleness: u64,
    /// Applied pushes per worker id.
    pub pushes_by_worker: BTreeMap<u32, u64>,
}

/// One minibatch gradient pushed by a worker.
#[derive(Debug, Clone, Copy)]
pub struct Push<'a> {
    pub worker_id: u32,
    /// Version of θ the gradient was computed at.
    pub version: u64,
    /// Mean gradient over the minibatch.
    pub gradient: &'a [f32],
    pub examples: u32,
    /// Mean loss over the minibatch.
    pub loss: f32,
}

/// The result of an applied push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PushOutcome {
    /// Version after the push.
    pub version: u64,
    /// Versions applied between the pull the gradient came from and this
    /// push.
    pub staleness: u64,
}

/// θ, the momentum buffer, the version counter and the push totals of one
/// run.
#[derive(Debug)]
pub struct ParamStore {
    run_id: String,
    params: Vec<f32>,
    velocity: Vec<f32>,
    sgd: SgdConfig,
    version: u64,
    totals: PushTotals,
    /// Version at which θ first held a non-finite value.
    diverged_at: Option<u64>,
}

impl ParamStore {
    /// Creates a store at version 0 holding `params`.
    ///
    /// # Errors
    ///
    /// Rejects empty or non-finite parameters and invalid optimizer settings.
    pub fn new(run_id: String, params: Vec<f32>, sgd: SgdConfig) -> Result<Self, StoreError> {
        if params.is_empty() {
            return Err(StoreError::EmptyParams);
        }
        if let Some(index) = params.iter().position(|v| !v.is_finite()) {
            return Err(StoreError::NonFiniteParams { index });
        }
        sgd.validate().map_err(StoreError::InvalidOptimizer)?;
        let velocity = vec![0.0; params.len()];
        Ok(Self {
            run_id,
            params,
            velocity,
            sgd,
            version: 0,
            totals: PushTotals::default(),
            diverged_at: None,
        })
    }

    /// Identifier of the run the store was initialised for.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Current θ.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Number of pushes applied so far.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// Totals over every applied push.
    pub fn totals(&self) -> &PushTotals {
        &self.totals
    }

    /// Validates a push and applies it with the optimizer.
    ///
    /// # Errors
    ///
    /// Rejects a gradient of the wrong length or with a non-finite value, a
    /// non-finite loss, and a version the server has not reached yet. θ is
    /// untouched on error.
    pub fn apply_push(&mut self, push: Push<'_>) -> Result<PushOutcome, StoreError> {
        if let Some(version) = self.diverged_at {
            return Err(StoreError::Diverged { version });
        }
        if push.gradient.len() != self.params.len() {
            return Err(StoreError::WrongLength {
                expected: self.params.len(),
                actual: push.gradient.len(),
            });
        }
        if push.version > self.version {
            return Err(StoreError::FutureVersion {
                version: push.version,
                current: self.version,
            });
        }
        if !push.loss.is_finite() {
            return Err(StoreError::NonFiniteLoss);
        }
        if let Some(index) = push.gradient.iter().position(|v| !v.is_finite()) {
            return Err(StoreError::NonFiniteGradient { index });
        }

        let staleness = self.version - push.version;
        self.sgd
            .apply(&mut self.params, &mut self.velocity, push.gradient);
        self.version += 1;

        let totals = &mut self.totals;
        totals.examples += u64::from(push.examples);
        totals.loss_sum += f64::from(push.loss);
        totals.pushes += 1;
        totals.staleness_sum += staleness;
        totals.max_staleness = totals.max_staleness.max(staleness);
        *totals.pushes_by_worker.entry(push.worker_id).or_default() += 1;

        // Finite gradients can still overflow θ when the learning rate is
        // too large; every later push is rejected from then on.
        if self.params.iter().any(|v| !v.is_finite()) {
            self.diverged_at = Some(self.version);
            return Err(StoreError::Diverged {
                version: self.version,
            });
        }
        Ok(PushOutcome {
            version: self.version,
            staleness,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> ParamStore {
        let sgd = SgdConfig {
            learning_rate: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        ParamStore::new("run".into(), vec![1.0, 2.0], sgd).unwrap()
    }

    fn push(version: u64, gradient: &[f32]) -> Push<'_> {
        Push {
            worker_id: 7,
            version,
            gradient,
            examples: 64,
            loss: 0.5,
        }
    }

    #[test]
    fn push_applies_step_and_bumps_version() {
        let mut store = store();

        let outcome = store.apply_push(push(0, &[2.0, -2.0])).unwrap();

        assert_eq!(
            outcome,
            PushOutcome {
                version: 1,
                staleness: 0
            }
        );
        assert_eq!(store.params(), &[0.0, 3.0]);
        assert_eq!(store.totals().examples, 64);
        assert_eq!(store.totals().pushes_by_worker.get(&7), Some(&1));
    }

    #[test]
    fn staleness_counts_versions_since_pull() {
        let mut store = store();
        for _ in 0..3 {
            store
                .apply_push(push(store.version(), &[0.0, 0.0]))
                .unwrap();
        }

        let outcome = store.apply_push(push(1, &[0.0, 0.0])).unwrap();

        assert_eq!(outcome.staleness, 2);
        assert_eq!(store.totals().staleness_sum, 2);
        assert_eq!(store.totals().max_staleness, 2);
    }

    #[test]
    fn bad_pushes_leave_params_untouched() {
        let mut store = store();
        let cases: [(Push<'_>, StoreError); 4] = [
            (
                push(0, &[1.0]),
                StoreError::WrongLength {
                    expected: 2,
                    actual: 1,
                },
            ),
            (
                push(0, &[1.0, f32::NAN]),
                StoreError::NonFiniteGradient { index: 1 },
            ),
            (
                push(5, &[1.0, 1.0]),
                StoreError::FutureVersion {
                    version: 5,
                    current: 0,
                },
            ),
            (
                Push {
                    loss: f32::INFINITY,
                    ..push(0, &[1.0, 1.0])
                },
                StoreError::NonFiniteLoss,
            ),
        ];

        for (bad, expected) in cases {
            assert_eq!(store.apply_push(bad), Err(expected));
        }
        assert_eq!(store.params(), &[1.0, 2.0]);
        assert_eq!(store.version(), 0);
        assert_eq!(store.totals().pushes, 0);
    }

    #[test]
    fn overflowing_step_marks_divergence() {
        let sgd = SgdConfig {
            learning_rate: 4.0,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        let mut store = ParamStore::new("run".into(), vec![1.0, 2.0], sgd).unwrap();

        let error = store.apply_push(push(0, &[f32::MAX, 0.0])).unwrap_err();
        assert_eq!(error, StoreError::Diverged { version: 1 });

        let later = store.apply_push(push(1, &[0.0, 0.0])).unwrap_err();
        assert_eq!(later, StoreError::Diverged { version: 1 });
        assert_eq!(store.version(), 1);
    }

    #[test]
    fn new_rejects_bad_initial_params() {
        let sgd = SgdConfig {
            learning_rate: 0.1,
            momentum: 0.0,
            weight_decay: 0.0,
        };
        assert_eq!(
            ParamStore::new("r".into(), vec![], sgd).unwrap_err(),
            StoreError::EmptyParams
        );
        assert_eq!(
            ParamStore::new("r".into(), vec![0.0, f32::INFINITY], sgd).unwrap_err(),
            StoreError::NonFiniteParams { index: 1 }
        );
    }
}
