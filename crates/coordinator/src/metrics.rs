//! The coordinator's Prometheus metrics: the figures of the latest
//! validation pass, and the latencies of the RPCs it serves.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use downpour_metrics::RpcTimer;
use downpour_metrics::prometheus::{Gauge, IntCounter, Registry};

use crate::run_dir::EvalEvent;

/// Methods of the `Coordinator` service.
const METHODS: &[&str] = &[
    "Register",
    "NextWork",
    "CompleteWork",
    "Heartbeat",
    "FetchShard",
];

/// The figures of the latest validation pass, for progress displays.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LatestPass {
    /// Validation passes so far.
    pub evaluations: u64,
    pub epoch: f64,
    pub updates: u64,
    /// 0-1 error of a classifier, or the mean squared error of linear
    /// regression.
    pub validation_metric: f64,
    /// Lowest `validation_metric` so far.
    pub best_validation_metric: f64,
    /// Whether the metric is the mean squared error.
    pub regression: bool,
    /// Training examples per second between the last two passes.
    pub examples_per_second: f64,
}

/// The metrics the coordinator records.
#[derive(Debug, Clone)]
pub struct CoordinatorMetrics {
    evaluations: IntCounter,
    epoch: Gauge,
    updates: Gauge,
    train_loss: Gauge,
    validation_error: Gauge,
    validation_loss: Gauge,
    best_validation_error: Gauge,
    validation_mse: Gauge,
    best_validation_mse: Gauge,
    /// Set once a regression pass is observed.
    regression: Arc<AtomicBool>,
    examples_per_second: Gauge,
    mean_staleness: Gauge,
    pub(crate) rpc: RpcTimer,
}

impl CoordinatorMetrics {
    /// Creates the coordinator's metrics, labelled `node="coordinator"`,
    /// and registers them in `registry`.
    ///
    /// # Errors
    ///
    /// Fails when `registry` already contains a coordinator's metrics.
    pub fn new(registry: &Registry) -> downpour_metrics::prometheus::Result<Self> {
        Self::build(Some(registry))
    }

    /// Metrics that are recorded but not registered anywhere.
    pub fn unregistered() -> Self {
        Self::build(None).expect("metric names and labels are valid")
    }

    fn build(registry: Option<&Registry>) -> downpour_metrics::prometheus::Result<Self> {
        let node = "coordinator";
        let gauge = |name: &str, help: &str| -> downpour_metrics::prometheus::Result<Gauge> {
            let gauge = Gauge::with_opts(downpour_metrics::opts(name, help, node))?;
            downpour_metrics::register(registry, &gauge)?;
            Ok(gauge)
        };
        let evaluations = IntCounter::with_opts(downpour_metrics::opts(
            "downpour_coordinator_evaluations_total",
            "Validation passes so far.",
            node,
        ))?;
        downpour_metrics::register(registry, &evaluations)?;
        Ok(Self {
            evaluations,
            epoch: gauge(
                "downpour_coordinator_epoch",
                "Training examples behind the updates at the last validation pass, divided by \
                 the training examples per epoch.",
            )?,
            updates: gauge(
                "downpour_coordinator_updates",
                "Parameter-server version at the last validation pass.",
            )?,
            train_loss: gauge(
                "downpour_coordinator_train_loss",
                "Mean minibatch cross-entropy of the pushes between the last two validation \
                 passes.",
            )?,
            validation_error: gauge(
                "downpour_coordinator_validation_error_ratio",
                "0-1 error of the last validation pass, as a fraction.",
            )?,
            validation_loss: gauge(
                "downpour_coordinator_validation_loss",
                "Mean cross-entropy of the last validation pass, or its mean squared error \
                 for a linear regression.",
            )?,
            best_validation_error: gauge(
                "downpour_coordinator_best_validation_error_ratio",
                "Lowest 0-1 validation error so far, as a fraction.",
            )?,
            validation_mse: gauge(
                "downpour_coordinator_validation_mse",
                "Mean squared error of the last validation pass of a linear regression.",
            )?,
            best_validation_mse: gauge(
                "downpour_coordinator_best_validation_mse",
                "Lowest validation mean squared error so far of a linear regression.",
            )?,
            regression: Arc::new(AtomicBool::new(false)),
            examples_per_second: gauge(
                "downpour_coordinator_examples_per_second",
                "Training examples per second of the whole cluster between the last two \
                 validation passes.",
            )?,
            mean_staleness: gauge(
                "downpour_coordinator_mean_staleness_updates",
                "Mean staleness of the pushes between the last two validation passes, in \
                 updates.",
            )?,
            rpc: RpcTimer::server(registry, node, METHODS)?,
        })
    }

    /// Returns the figures of the latest validation pass, or `None` before
    /// the first one.
    pub fn latest(&self) -> Option<LatestPass> {
        let evaluations = self.evaluations.get();
        let regression = self.regression.load(Ordering::Relaxed);
        let (metric, best) = match regression {
            true => (&self.validation_mse, &self.best_validation_mse),
            false => (&self.validation_error, &self.best_validation_error),
        };
        (evaluations > 0).then(|| LatestPass {
            evaluations,
            epoch: self.epoch.get(),
            updates: self.updates.get() as u64,
            validation_metric: metric.get(),
            best_validation_metric: best.get(),
            regression,
            examples_per_second: self.examples_per_second.get(),
        })
    }

    /// Records the figures of one validation pass. Figures that the event
    /// leaves out, for want of pushes since the last pass, keep their value.
    pub(crate) fn observe(&self, event: &EvalEvent) {
        self.evaluations.inc();
        self.epoch.set(event.epoch);
        self.updates.set(event.updates as f64);
        if let Some(loss) = event.train_loss {
            self.train_loss.set(loss);
        }
        let figures = [
            (&self.validation_error, event.validation_error),
            (&self.best_validation_error, event.best_validation_error),
            (&self.validation_mse, event.validation_mse),
            (&self.best_validation_mse, event.best_validation_mse),
        ];
        for (gauge, value) in figures {
            if let Some(value) = value {
                gauge.set(value);
            }
        }
        self.regression
            .store(event.validation_mse.is_some(), Ordering::Relaxed);
        self.validation_loss.set(event.validation_loss);
        self.examples_per_second.set(event.examples_per_second);
        if let Some(staleness) = event.mean_staleness {
            self.mean_staleness.set(staleness);
        }
    }
}
