//! Settings of a training run, with their defaults and validation.

use std::path::PathBuf;
use std::time::Duration;

use downpour_data::formats::InputOptions;
use downpour_data::scaling::ScaleMethod;
use downpour_model::ModelSpec;
use downpour_proto::transport::{DEFAULT_PIECE_VALUES, MAX_MESSAGE_BYTES};
use downpour_ps::{Compensation, Consistency, SgdConfig};

/// Default settings, defined once and shared with the command line.
pub mod defaults {
    /// Bundled MNIST, relative to the repository root.
    pub const DATA: &str = "data/mnist";
    pub const MODEL: &str = "mlp:256,128";
    pub const WORKERS: usize = 2;
    pub const BATCH_SIZE: usize = 64;
    pub const LEARNING_RATE: f32 = 0.05;
    pub const MOMENTUM: f32 = 0.9;
    pub const WEIGHT_DECAY: f32 = 0.0;
    pub const WARMUP_UPDATES: u64 = 0;
    pub const SEED: u64 = 42;
    /// About a quarter of an MNIST epoch at batch 64 (782 minibatches).
    pub const EVAL_EVERY: u64 = 200;
    pub const PATIENCE: u32 = 20;
    pub const MAX_EPOCHS: u32 = 50;
    /// The last 10,000 training images, as is usual for MNIST.
    pub const VALIDATION_SIZE: usize = 10_000;
    /// Minibatches handed to a worker per work request.
    pub const BATCHES_PER_WORK: u32 = 16;
    pub const CONSISTENCY: &str = "async";
    pub const PUSH_EVERY: u32 = 1;
    pub const FETCH_EVERY: u32 = 1;
    /// Seconds of silence after which a worker loses its lease.
    pub const LEASE_TIMEOUT_SECS: f64 = 60.0;
    /// Seconds a role keeps retrying its first connection to a peer.
    pub const CONNECT_TIMEOUT_SECS: u64 = 60;
}

/// Everything the coordinator needs to run one training job.
#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// Training file (CSV, LIBSVM, NumPy or IDX), or an MNIST folder.
    pub data: PathBuf,
    /// Format, reader options, and where the validation and test splits
    /// come from.
    pub input: InputOptions,
    pub model: ModelSpec,
    /// Number of shards, and of workers the run waits for.
    pub workers: usize,
    pub batch_size: usize,
    pub learning_rate: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    /// Updates over which the learning rate rises linearly to
    /// `learning_rate`; 0 for none.
    pub warmup_updates: u64,
    /// Seed of the initial θ and of the one-time shuffle.
    pub seed: u64,
    /// Updates between two validation passes.
    pub eval_every: u64,
    /// Validation passes without improvement before training stops.
    pub patience: u32,
    /// Stop as soon as the validation accuracy reaches this fraction
    /// (classifiers only).
    pub target_accuracy: Option<f64>,
    /// Stop as soon as the validation mean squared error falls to this
    /// value or below (linear regression only).
    pub target_mse: Option<f64>,
    /// Feature scaling fitted on the training split.
    pub scale: ScaleMethod,
    pub max_epochs: u32,
    /// Examples held out from the end of an IDX training file for
    /// validation, when neither a validation file nor a fraction is given.
    pub validation_size: usize,
    pub run_dir: PathBuf,
    /// Parameter server addresses, `HOST:PORT`, as workers should dial
    /// them. θ is split into one contiguous range per server, in order.
    pub ps_addresses: Vec<String>,
    pub batches_per_work: u32,
    pub consistency: Consistency,
    pub compensation: Compensation,
    /// Minibatches whose gradients a worker averages into one push.
    pub push_every: u32,
    /// Minibatches between two refreshes of a worker's θ.
    pub fetch_every: u32,
    /// Push gradients as bfloat16 instead of f32.
    pub push_bf16: bool,
    /// Most values of θ or of a gradient in one message; larger ranges
    /// travel in pieces.
    pub piece_values: usize,
    /// A worker silent this long loses its lease, and in async mode its
    /// unfinished minibatches go to the other workers.
    pub lease_timeout: Duration,
    /// Go on with the run whose state `run_dir` holds, instead of starting
    /// a new one.
    pub resume: bool,
    /// Largest Euclidean norm of a pushed gradient over all of θ; workers
    /// rescale larger ones. 0 turns norm clipping off.
    pub clip_norm: f32,
    /// Largest absolute value of a pushed gradient value; workers clamp
    /// larger ones. 0 turns value clipping off.
    pub clip_value: f32,
    /// Push dense gradients even where sparse ones apply: training data
    /// with sparse rows (LIBSVM) and softmax regression.
    pub dense: bool,
    /// How long to keep retrying the first connection to each parameter
    /// server, which may start after the coordinator.
    pub connect_timeout: Duration,
    /// Also write each row of the event log as TensorBoard scalars.
    pub tensorboard: bool,
}

/// A setting out of range. Each message names the command-line flag.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("--workers must be at least 1, got {0}")]
    NoWorkers(usize),
    #[error("--batch-size must be at least 1, got {0}")]
    ZeroBatchSize(usize),
    #[error("--lr must be a positive number, got {0}")]
    InvalidLearningRate(f32),
    #[error("--momentum must be in [0, 1), got {0}")]
    InvalidMomentum(f32),
    #[error("--weight-decay must be zero or positive, got {0}")]
    InvalidWeightDecay(f32),
    #[error("--eval-every must be at least 1 update, got {0}")]
    ZeroEvalEvery(u64),
    #[error("--patience must be at least 1 evaluation, got {0}")]
    ZeroPatience(u32),
    #[error("--max-epochs must be at least 1, got {0}")]
    ZeroMaxEpochs(u32),
    #[error("--validation-size must be at least 1 example, got {0}")]
    ZeroValidationSize(usize),
    #[error("--batches-per-work must be at least 1, got {0}")]
    ZeroBatchesPerWork(u32),
    #[error("--ps must name at least one parameter server")]
    NoParameterServers,
    #[error("--push-every must be at least 1 minibatch, got {0}")]
    ZeroPushEvery(u32),
    #[error("--fetch-every must be at least 1 minibatch, got {0}")]
    ZeroFetchEvery(u32),
    #[error(
        "--fetch-every {0} is not supported with --consistency sync, where every worker computes at the θ of the last step; use --fetch-every 1"
    )]
    FetchEveryWithSync(u32),
    #[error("--piece-mib must be at least 1 and below {max}, got {mib}")]
    InvalidPieceSize { mib: f64, max: usize },
    #[error("--lease-timeout must be at least 0.1 seconds, got {0}")]
    ShortLease(f64),
    #[error("--target-accuracy must be in (0, 1], got {0}")]
    InvalidTargetAccuracy(f64),
    #[error("--target-mse must be a positive number, got {0}")]
    InvalidTargetMse(f64),
    #[error(
        "--target-accuracy applies to classifiers, but --model linear is a regression; use --target-mse"
    )]
    TargetAccuracyWithRegression,
    #[error(
        "--target-mse applies to --model linear, but --model {0} is a classifier; use --target-accuracy"
    )]
    TargetMseWithClassifier(String),
    #[error(
        "--staleness-scaling and --dc-lambda have no effect with --consistency sync, where every push has staleness 0; drop them or choose async or bounded:S"
    )]
    CompensationWithSync,
    #[error("--dc-lambda must be zero or positive, got {0}")]
    InvalidDcLambda(f32),
    #[error("--clip-norm must be zero (off) or a positive number, got {0}")]
    InvalidClipNorm(f32),
    #[error("--clip-value must be zero (off) or a positive number, got {0}")]
    InvalidClipValue(f32),
}

impl CoordinatorConfig {
    /// Returns the defaults, with the bundled MNIST as data and the given
    /// run directory and parameter server addresses.
    pub fn with_defaults(run_dir: PathBuf, ps_addresses: Vec<String>) -> Self {
        Self {
            data: PathBuf::from(defaults::DATA),
            input: InputOptions::default(),
            model: ModelSpec::Mlp {
                hidden: vec![256, 128],
            },
            workers: defaults::WORKERS,
            batch_size: defaults::BATCH_SIZE,
            learning_rate: defaults::LEARNING_RATE,
            momentum: defaults::MOMENTUM,
            weight_decay: defaults::WEIGHT_DECAY,
            warmup_updates: defaults::WARMUP_UPDATES,
            seed: defaults::SEED,
            eval_every: defaults::EVAL_EVERY,
            patience: defaults::PATIENCE,
            target_accuracy: None,
            target_mse: None,
            scale: ScaleMethod::None,
            max_epochs: defaults::MAX_EPOCHS,
            validation_size: defaults::VALIDATION_SIZE,
            run_dir,
            ps_addresses,
            batches_per_work: defaults::BATCHES_PER_WORK,
            consistency: Consistency::Async,
            compensation: Compensation::default(),
            push_every: defaults::PUSH_EVERY,
            fetch_every: defaults::FETCH_EVERY,
            push_bf16: false,
            piece_values: DEFAULT_PIECE_VALUES,
            lease_timeout: Duration::from_secs_f64(defaults::LEASE_TIMEOUT_SECS),
            resume: false,
            clip_norm: 0.0,
            clip_value: 0.0,
            dense: false,
            connect_timeout: Duration::from_secs(defaults::CONNECT_TIMEOUT_SECS),
            tensorboard: false,
        }
    }

    /// Returns the optimizer settings the parameter servers apply.
    pub fn sgd_config(&self) -> SgdConfig {
        SgdConfig {
            learning_rate: self.learning_rate,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            warmup_updates: self.warmup_updates,
        }
    }

    /// Checks every setting that does not depend on the data.
    ///
    /// # Errors
    ///
    /// Returns the first setting out of range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.workers == 0 {
            return Err(ConfigError::NoWorkers(self.workers));
        }
        if self.batch_size == 0 {
            return Err(ConfigError::ZeroBatchSize(self.batch_size));
        }
        if !(self.learning_rate.is_finite() && self.learning_rate > 0.0) {
            return Err(ConfigError::InvalidLearningRate(self.learning_rate));
        }
        if !(self.momentum.is_finite() && (0.0..1.0).contains(&self.momentum)) {
            return Err(ConfigError::InvalidMomentum(self.momentum));
        }
        if !(self.weight_decay.is_finite() && self.weight_decay >= 0.0) {
            return Err(ConfigError::InvalidWeightDecay(self.weight_decay));
        }
        if self.eval_every == 0 {
            return Err(ConfigError::ZeroEvalEvery(self.eval_every));
        }
        if self.patience == 0 {
            return Err(ConfigError::ZeroPatience(self.patience));
        }
        if self.max_epochs == 0 {
            return Err(ConfigError::ZeroMaxEpochs(self.max_epochs));
        }
        if self.validation_size == 0 {
            return Err(ConfigError::ZeroValidationSize(self.validation_size));
        }
        if self.batches_per_work == 0 {
            return Err(ConfigError::ZeroBatchesPerWork(self.batches_per_work));
        }
        if self.ps_addresses.is_empty() {
            return Err(ConfigError::NoParameterServers);
        }
        if !(self.clip_norm.is_finite() && self.clip_norm >= 0.0) {
            return Err(ConfigError::InvalidClipNorm(self.clip_norm));
        }
        if !(self.clip_value.is_finite() && self.clip_value >= 0.0) {
            return Err(ConfigError::InvalidClipValue(self.clip_value));
        }
        if self.push_every == 0 {
            return Err(ConfigError::ZeroPushEvery(self.push_every));
        }
        if self.fetch_every == 0 {
            return Err(ConfigError::ZeroFetchEvery(self.fetch_every));
        }
        if self.consistency == Consistency::Sync && self.fetch_every != 1 {
            return Err(ConfigError::FetchEveryWithSync(self.fetch_every));
        }
        // A piece and the fields around it must fit in one message.
        if self.piece_values == 0 || self.piece_values.saturating_mul(4) >= MAX_MESSAGE_BYTES {
            return Err(ConfigError::InvalidPieceSize {
                mib: self.piece_values as f64 * 4.0 / f64::from(1 << 20),
                max: MAX_MESSAGE_BYTES >> 20,
            });
        }
        if self.lease_timeout < Duration::from_millis(100) {
            return Err(ConfigError::ShortLease(self.lease_timeout.as_secs_f64()));
        }
        if let Some(target) = self.target_accuracy
            && !(target > 0.0 && target <= 1.0)
        {
            return Err(ConfigError::InvalidTargetAccuracy(target));
        }
        if let Some(target) = self.target_mse
            && !(target.is_finite() && target > 0.0)
        {
            return Err(ConfigError::InvalidTargetMse(target));
        }
        match (
            self.model.is_regression(),
            self.target_accuracy,
            self.target_mse,
        ) {
            (true, Some(_), _) => return Err(ConfigError::TargetAccuracyWithRegression),
            (false, _, Some(_)) => {
                return Err(ConfigError::TargetMseWithClassifier(self.model.to_string()));
            }
            _ => {}
        }
        let lambda = self.compensation.dc_lambda;
        if !(lambda.is_finite() && lambda >= 0.0) {
            return Err(ConfigError::InvalidDcLambda(lambda));
        }
        if self.consistency == Consistency::Sync && self.compensation.is_active() {
            return Err(ConfigError::CompensationWithSync);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> CoordinatorConfig {
        CoordinatorConfig::with_defaults("runs/x".into(), vec!["127.0.0.1:1".into()])
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(config().validate(), Ok(()));
    }

    #[test]
    fn zero_workers_names_the_flag() {
        let config = CoordinatorConfig {
            workers: 0,
            ..config()
        };
        let error = config.validate().unwrap_err();
        assert_eq!(error.to_string(), "--workers must be at least 1, got 0");
    }

    #[test]
    fn out_of_range_settings_are_rejected() {
        let cases = [
            CoordinatorConfig {
                batch_size: 0,
                ..config()
            },
            CoordinatorConfig {
                learning_rate: -0.1,
                ..config()
            },
            CoordinatorConfig {
                momentum: 1.0,
                ..config()
            },
            CoordinatorConfig {
                weight_decay: f32::NAN,
                ..config()
            },
            CoordinatorConfig {
                eval_every: 0,
                ..config()
            },
            CoordinatorConfig {
                patience: 0,
                ..config()
            },
            CoordinatorConfig {
                max_epochs: 0,
                ..config()
            },
            CoordinatorConfig {
                validation_size: 0,
                ..config()
            },
            CoordinatorConfig {
                batches_per_work: 0,
                ..config()
            },
            CoordinatorConfig {
                ps_addresses: Vec::new(),
                ..config()
            },
            CoordinatorConfig {
                push_every: 0,
                ..config()
            },
            CoordinatorConfig {
                target_accuracy: Some(1.5),
                ..config()
            },
            CoordinatorConfig {
                piece_values: 0,
                ..config()
            },
            CoordinatorConfig {
                piece_values: 64 << 20,
                ..config()
            },
            CoordinatorConfig {
                fetch_every: 0,
                ..config()
            },
            CoordinatorConfig {
                consistency: Consistency::Sync,
                fetch_every: 2,
                ..config()
            },
            CoordinatorConfig {
                consistency: Consistency::Sync,
                compensation: Compensation {
                    scale_by_staleness: true,
                    dc_lambda: 0.0,
                },
                ..config()
            },
            CoordinatorConfig {
                compensation: Compensation {
                    scale_by_staleness: false,
                    dc_lambda: -1.0,
                },
                ..config()
            },
        ];
        for case in cases {
            assert!(case.validate().is_err(), "{case:?} was accepted");
        }
    }
}
