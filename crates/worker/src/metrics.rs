//! The worker's Prometheus metrics.

use downpour_metrics::RpcTimer;
use downpour_metrics::prometheus::{Gauge, IntCounter, Registry};

/// The worker's RPCs, to the coordinator and to the parameter servers.
const METHODS: &[&str] = &[
    "Register",
    "NextWork",
    "CompleteWork",
    "FetchShard",
    "Pull",
    "Push",
];

/// The metrics one worker records.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    pub(crate) examples: IntCounter,
    pub(crate) minibatches: IntCounter,
    pub(crate) pushes: IntCounter,
    pub(crate) examples_per_second: Gauge,
    pub(crate) gradient_norm: Gauge,
    pub(crate) rpc: RpcTimer,
}

impl WorkerMetrics {
    /// Creates the metrics of the worker named `node` and registers them in
    /// `registry`.
    ///
    /// # Errors
    ///
    /// Fails when `registry` already contains metrics of a node named `node`.
    pub fn new(registry: &Registry, node: &str) -> downpour_metrics::prometheus::Result<Self> {
        Self::build(Some(registry), node)
    }

    /// Metrics that are recorded but not registered anywhere.
    pub fn unregistered() -> Self {
        Self::build(None, "worker").expect("metric names and labels are valid")
    }

    fn build(
        registry: Option<&Registry>,
        node: &str,
    ) -> downpour_metrics::prometheus::Result<Self> {
        let opts = |name: &str, help: &str| downpour_metrics::opts(name, help, node);
        let examples = IntCounter::with_opts(opts(
            "downpour_worker_examples_total",
            "Training examples whose gradients this worker computed.",
        ))?;
        let minibatches = IntCounter::with_opts(opts(
            "downpour_worker_minibatches_total",
            "Minibatches whose gradients this worker computed.",
        ))?;
        let pushes = IntCounter::with_opts(opts(
            "downpour_worker_pushes_applied_total",
            "Pushes that every parameter server applied.",
        ))?;
        let examples_per_second = Gauge::with_opts(opts(
            "downpour_worker_examples_per_second",
            "Training examples per second over the last work range, gradient computation and \
             pushes included.",
        ))?;
        let gradient_norm = Gauge::with_opts(opts(
            "downpour_worker_gradient_norm",
            "Euclidean norm of the last gradient pushed, over all of θ.",
        ))?;
        downpour_metrics::register(registry, &examples)?;
        downpour_metrics::register(registry, &minibatches)?;
        downpour_metrics::register(registry, &pushes)?;
        downpour_metrics::register(registry, &examples_per_second)?;
        downpour_metrics::register(registry, &gradient_norm)?;
        Ok(Self {
            examples,
            minibatches,
            pushes,
            examples_per_second,
            gradient_norm,
            rpc: RpcTimer::client(registry, node, METHODS)?,
        })
    }
}

/// Returns the Euclidean norm of `values`, summed in f64.
pub(crate) fn l2_norm(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|&value| f64::from(value) * f64::from(value))
        .sum::<f64>()
        .sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn norm_of_three_four_is_five() {
        assert_eq!(l2_norm(&[3.0, -4.0]), 5.0);
        assert_eq!(l2_norm(&[]), 0.0);
    }
}
