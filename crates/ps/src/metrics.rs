//! The parameter server's Prometheus metrics. Applied pushes, updates,
//! duplicates and staleness come from the store's push totals at each
//! scrape, so they always agree with `summary.json`. Rejected pushes are
//! counted here, by reason.

use downpour_metrics::prometheus::{IntCounterVec, Registry};
use downpour_metrics::{MetricSpec, RpcTimer, Snapshot, SnapshotCollector};
use downpour_proto::v1::{GradientEncoding, PushRequest};

use crate::consistency::ClockError;
use crate::service::ParameterServerService;
use crate::store::{PushTotals, StoreError};

/// Methods of the `ParameterServer` service.
const METHODS: &[&str] = &["Init", "Pull", "Push", "StopTraining", "Finish"];

/// Upper bounds of the staleness buckets, in updates.
const STALENESS_BOUNDS: [u64; 12] = [0, 1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024];

/// Why a push was not applied: the `reason` label of
/// `downpour_ps_pushes_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rejection {
    /// `Init` has not set θ yet.
    NotInitialised,
    /// The request or one of its pieces cannot be decoded or does not fit.
    Malformed,
    WrongLength,
    NonFiniteGradient,
    NonFiniteLoss,
    /// The push claims a version the server has not reached.
    FutureVersion,
    /// The worker id or minibatch does not fit the run's schedule.
    OutOfSchedule,
    /// Sync mode: the push belongs to another step, or the worker already
    /// pushed for this one.
    WrongStep,
    /// θ contains non-finite values.
    Diverged,
    /// Training stopped before the push could be applied.
    TrainingStopped,
}

impl Rejection {
    const ALL: [Self; 10] = [
        Self::NotInitialised,
        Self::Malformed,
        Self::WrongLength,
        Self::NonFiniteGradient,
        Self::NonFiniteLoss,
        Self::FutureVersion,
        Self::OutOfSchedule,
        Self::WrongStep,
        Self::Diverged,
        Self::TrainingStopped,
    ];

    fn label(self) -> &'static str {
        match self {
            Self::NotInitialised => "not_initialised",
            Self::Malformed => "malformed",
            Self::WrongLength => "wrong_length",
            Self::NonFiniteGradient => "non_finite_gradient",
            Self::NonFiniteLoss => "non_finite_loss",
            Self::FutureVersion => "future_version",
            Self::OutOfSchedule => "out_of_schedule",
            Self::WrongStep => "wrong_step",
            Self::Diverged => "diverged",
            Self::TrainingStopped => "training_stopped",
        }
    }
}

impl Rejection {
    /// Classifies a pushed gradient that failed to decode: whole values of
    /// the wrong count, or bytes that are not whole values of a known
    /// encoding.
    pub(crate) fn of_undecodable(request: &PushRequest, expected: usize) -> Self {
        let width = match GradientEncoding::try_from(request.encoding) {
            Ok(GradientEncoding::F32) => 4,
            Ok(GradientEncoding::Bf16) => 2,
            Err(_) => return Self::Malformed,
        };
        let bytes = request.gradient.len();
        if bytes.is_multiple_of(width) && bytes / width != expected {
            Self::WrongLength
        } else {
            Self::Malformed
        }
    }
}

impl From<&StoreError> for Rejection {
    fn from(error: &StoreError) -> Self {
        match error {
            StoreError::WrongLength { .. } => Self::WrongLength,
            StoreError::InvalidIndices(_) => Self::Malformed,
            StoreError::NonFiniteGradient { .. } => Self::NonFiniteGradient,
            StoreError::NonFiniteLoss => Self::NonFiniteLoss,
            StoreError::FutureVersion { .. } => Self::FutureVersion,
            StoreError::Clock(
                ClockError::UnknownWorker { .. }
                | ClockError::BatchOutOfShard { .. }
                | ClockError::NotAPushPoint { .. },
            ) => Self::OutOfSchedule,
            StoreError::WrongStep { .. } | StoreError::DuplicatePush { .. } => Self::WrongStep,
            StoreError::Diverged { .. } => Self::Diverged,
            // Errors of Init, which a push never returns.
            StoreError::EmptyParams
            | StoreError::NonFiniteParams { .. }
            | StoreError::InvalidOptimizer(_)
            | StoreError::InvalidSchedule(_) => Self::Malformed,
        }
    }
}

/// The metrics a parameter server records itself.
#[derive(Debug, Clone)]
pub(crate) struct PsMetrics {
    rejected: IntCounterVec,
    pub(crate) rpc: RpcTimer,
}

impl PsMetrics {
    /// Creates the metrics of `node` and registers them in `registry` when
    /// one is given.
    pub(crate) fn new(
        registry: Option<&Registry>,
        node: &str,
    ) -> downpour_metrics::prometheus::Result<Self> {
        let rejected = IntCounterVec::new(
            downpour_metrics::opts(
                "downpour_ps_pushes_rejected_total",
                "Pushes not applied, by reason. Duplicates of applied pushes are counted in \
                 downpour_ps_duplicate_pushes_total instead.",
                node,
            ),
            &["reason"],
        )?;
        downpour_metrics::register(registry, &rejected)?;
        for reason in Rejection::ALL {
            rejected.with_label_values(&[reason.label()]);
        }
        Ok(Self {
            rejected,
            rpc: RpcTimer::server(registry, node, METHODS)?,
        })
    }

    /// Metrics that are recorded but not registered anywhere.
    pub(crate) fn unregistered() -> Self {
        Self::new(None, "ps").expect("metric names and labels are valid")
    }

    /// Counts one rejected push.
    pub(crate) fn reject(&self, reason: Rejection) {
        self.rejected.with_label_values(&[reason.label()]).inc();
    }
}

const UPDATES: MetricSpec = MetricSpec {
    name: "downpour_ps_updates_total",
    help: "Updates applied to θ: one per push, except in sync mode, where one update averages \
           the pushes of a step.",
};
const PUSHES: MetricSpec = MetricSpec {
    name: "downpour_ps_pushes_applied_total",
    help: "Pushes applied to θ.",
};
const DUPLICATES: MetricSpec = MetricSpec {
    name: "downpour_ps_duplicate_pushes_total",
    help: "Pushes acknowledged again without being applied, because their sequence number was \
           applied already.",
};
const EXAMPLES: MetricSpec = MetricSpec {
    name: "downpour_ps_examples_total",
    help: "Training examples behind the applied pushes.",
};
const VERSION: MetricSpec = MetricSpec {
    name: "downpour_ps_version",
    help: "Version of θ on this server: updates since θ₀, restored ones included.",
};
const PARAMETERS: MetricSpec = MetricSpec {
    name: "downpour_ps_parameters",
    help: "Number of values of θ on this server; 0 before Init.",
};
const STOPPED: MetricSpec = MetricSpec {
    name: "downpour_ps_training_stopped",
    help: "1 once training stopped and θ is frozen, else 0.",
};
const STALENESS: MetricSpec = MetricSpec {
    name: "downpour_ps_push_staleness_updates",
    help: "Staleness of each applied push: updates applied between the θ its gradient came \
           from and the push.",
};

/// The store's state that the scrape reads.
#[derive(Debug, Default)]
pub(crate) struct StoreReading {
    pub(crate) totals: PushTotals,
    pub(crate) version: u64,
    pub(crate) parameters: usize,
    pub(crate) stopped: bool,
}

/// Registers the collector that reads `service`'s push totals at each
/// scrape.
pub(crate) fn register_totals(
    registry: &Registry,
    node: &str,
    service: ParameterServerService,
) -> downpour_metrics::prometheus::Result<()> {
    let node_name = node.to_owned();
    let specs = [
        UPDATES, PUSHES, DUPLICATES, EXAMPLES, VERSION, PARAMETERS, STOPPED, STALENESS,
    ];
    let collector = SnapshotCollector::new(node, &specs, move || {
        let reading = service.read_store();
        let totals = &reading.totals;
        let mut snapshot = Snapshot::new(&node_name);
        snapshot
            .counter(UPDATES, totals.updates as f64)
            .counter(PUSHES, totals.pushes as f64)
            .counter(DUPLICATES, totals.duplicates as f64)
            .counter(EXAMPLES, totals.examples as f64)
            .gauge(VERSION, reading.version as f64)
            .gauge(PARAMETERS, reading.parameters as f64)
            .gauge(STOPPED, f64::from(u8::from(reading.stopped)))
            .histogram_of_counts(
                STALENESS,
                &STALENESS_BOUNDS,
                &totals.staleness_counts,
                totals.staleness_sum as f64,
            );
        snapshot
    })?;
    registry.register(Box::new(collector))
}
