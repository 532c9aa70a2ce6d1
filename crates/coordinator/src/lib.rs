//! The coordinator: it reads the data, holds out the validation split,
//! shuffles the training examples once, cuts them into one shard per worker
//! and serves the shards over gRPC. It hands out work as ranges of
//! minibatches, validates θ every `eval_every` updates, keeps the best θ,
//! stops early, and measures the test split with the best θ.
//!
//! ```text
//!  prepare ──► run ──► Init θ₀ ──► parameter server
//!               │                      ▲   │
//!               │ Register/NextWork    │   │ Pull (every eval_every updates)
//!               ▼ FetchShard/Complete  │   ▼
//!            workers ──── Push ────────┘  validation, early stopping
//! ```

mod config;
mod diagnostics;
mod early_stopping;
mod error;
mod metrics;
mod prepare;
mod ps_client;
mod ps_layout;
mod run;
mod run_dir;
mod schedule;
mod service;
mod state;

pub use config::{ConfigError, CoordinatorConfig, defaults};
pub use diagnostics::{
    ClippingCounts, EvalDiagnostics, GradientNormStats, PROBE_EXAMPLES, PUSHES_FILE, PushTraffic,
    RUNNING_MEAN_PASSES, effective_learning_rate,
};
pub use early_stopping::{EarlyStopping, Verdict};
pub use error::CoordinatorError;
pub use metrics::{CoordinatorMetrics, LatestPass};
pub use prepare::{EvalSet, PreparedRun, prepare};
pub use ps_layout::split_params;
pub use run::{run, run_with_metrics};
pub use run_dir::{
    BEST_CHECKPOINT, EvalEvent, INITIAL_CHECKPOINT, LAST_CHECKPOINT, RunDir, RunSummary,
    StalenessSummary,
};
pub use schedule::{Assignment, Progress, ScheduleError, WorkRange, WorkSchedule};
pub use service::{EpochUsage, WorkerRecord};
pub use state::STATE_FILE;
