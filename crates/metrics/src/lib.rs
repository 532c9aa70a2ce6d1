//! Metrics for the tools people already run: each node's counters, gauges
//! and histograms in a Prometheus registry, served over HTTP, RPC timing
//! for gRPC servers, and TensorBoard scalar event files.
//!
//! Every metric carries a constant `node` label naming the node that
//! records it (`coordinator`, `ps-0`, a worker's name), so the nodes of
//! `downpour train`, which share one process and one endpoint, stay apart.

mod endpoint;
mod rpc;
mod snapshot;
pub mod tensorboard;

pub use endpoint::serve;
pub use prometheus;
pub use rpc::{RpcTimer, Timed};
pub use snapshot::{MetricSpec, Snapshot, SnapshotCollector};

use prometheus::{HistogramOpts, Opts};

/// Name of the constant label that names the node.
pub const NODE_LABEL: &str = "node";

/// Returns the options of a counter or gauge `name` of `node`.
pub fn opts(name: &str, help: &str, node: &str) -> Opts {
    Opts::new(name, help).const_label(NODE_LABEL, node)
}

/// Returns the options of a histogram `name` of `node` with `buckets`.
pub fn histogram_opts(name: &str, help: &str, node: &str, buckets: Vec<f64>) -> HistogramOpts {
    HistogramOpts::new(name, help)
        .const_label(NODE_LABEL, node)
        .buckets(buckets)
}

/// Registers `collector` in `registry`, when there is one.
///
/// # Errors
///
/// Fails when the registry already contains a metric of that name and `node`
/// label, or one of that name with other labels or help.
pub fn register<C>(registry: Option<&prometheus::Registry>, collector: &C) -> prometheus::Result<()>
where
    C: prometheus::core::Collector + Clone + 'static,
{
    match registry {
        Some(registry) => registry.register(Box::new(collector.clone())),
        None => Ok(()),
    }
}
