//! The worker: it registers with the coordinator, fetches the shard bytes
//! it is assigned, and for each minibatch of its work ranges computes the
//! mean gradient at its copy of θ and pushes it to the parameter server,
//! which replies with the updated θ.

mod clipping;
mod error;
mod metrics;
mod ps_shards;
mod run;
mod trainer;

pub use error::WorkerError;
pub use metrics::WorkerMetrics;
pub use run::{WorkerConfig, WorkerReport, run, run_with_metrics};
