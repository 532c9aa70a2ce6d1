//! Command-line arguments of every subcommand.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use downpour_coordinator::{CoordinatorConfig, defaults};
use downpour_data::scaling::ScaleMethod;
use downpour_model::ModelSpec;
use downpour_proto::auth::{ClusterToken, Tls, TokenError};
use downpour_ps::{Compensation, Consistency};

use crate::input_args::{ReadArgs, SplitArgs};

/// Asynchronous data-parallel SGD: a parameter server stores θ, workers push
/// minibatch gradients over gRPC, and a coordinator shards the data and
/// stops training early on the validation error.
///
/// Every flag can also be set by the environment variable shown in its
/// help, `DOWNPOUR_` and the flag's name, and by the config file. A flag
/// on the command line wins over the environment, and the environment over
/// the file.
#[derive(Debug, Parser)]
#[command(name = "downpour", version)]
pub struct Cli {
    /// TOML file of settings: keys are flag names without the dashes, such
    /// as `batch_size = 128`, at the top level for every subcommand or in a
    /// `[coordinator]`, `[ps]`, `[worker]`, `[train]` or `[eval]` table.
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print the settings this subcommand would run with, as TOML with the
    /// source of each value, and exit.
    #[arg(long, global = true)]
    pub print_config: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Train with a whole cluster in this process (gRPC on 127.0.0.1).
    Train(TrainArgs),
    /// Run the coordinator: data, shards, work, validation, early stopping.
    Coordinator(CoordinatorArgs),
    /// Run a parameter server, which stores θ and applies pushed gradients.
    Ps(PsArgs),
    /// Run a worker, which computes minibatch gradients and pushes them.
    Worker(WorkerArgs),
    /// Score a saved checkpoint on a data set.
    Eval(EvalArgs),
    /// Measure the training and validation cost along the line from θ₀ to
    /// the best θ of a finished run, and write landscape.csv and
    /// landscape.svg into its directory.
    Landscape(LandscapeArgs),
    /// Write report.html, one self-contained page of plots, into a finished
    /// run's directory.
    Report(ReportArgs),
    /// Write a saved checkpoint's class predictions for a data file as CSV.
    Predict(PredictArgs),
}

#[derive(Debug, Args)]
pub struct LandscapeArgs {
    /// Directory of a finished run (with summary.json, initial.safetensors
    /// and best.safetensors).
    pub run_dir: PathBuf,
    /// Data the run trained on [default: the path in summary.json].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Points along α from −0.5 to 1.5; 21 gives steps of 0.1.
    #[arg(long, default_value_t = 21)]
    pub points: usize,
    /// Training examples the training cost is measured on, drawn with the
    /// run's shuffle; 0 takes the whole training split.
    #[arg(long, default_value_t = 10_000)]
    pub train_examples: usize,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// Directory of a finished run (with summary.json and events.jsonl).
    pub run_dir: PathBuf,
}

/// Settings of a training run, shared by `train` and `coordinator`.
#[derive(Debug, Args)]
pub struct TrainingArgs {
    /// Training data: a CSV, LIBSVM or NumPy features file, an MNIST folder
    /// (IDX files, gzipped or not), or an IDX images file with its labels
    /// file beside it.
    #[arg(long, default_value = defaults::DATA)]
    pub data: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    #[command(flatten)]
    pub splits: SplitArgs,
    /// Model: `linear` (linear regression on the mean squared error, for
    /// real-valued labels), `softmax`, or `mlp:H1,H2,...` for an MLP with
    /// ReLU hidden layers of those sizes.
    #[arg(long, default_value = defaults::MODEL, value_parser = parse_model)]
    pub model: ModelSpec,
    /// Number of shards, and of workers the run waits for.
    #[arg(long, default_value_t = defaults::WORKERS)]
    pub workers: usize,
    /// Examples per minibatch.
    #[arg(long, default_value_t = defaults::BATCH_SIZE)]
    pub batch_size: usize,
    /// SGD learning rate.
    #[arg(long, default_value_t = defaults::LEARNING_RATE, allow_negative_numbers = true)]
    pub lr: f32,
    /// SGD momentum coefficient, in [0, 1). The ill-conditioning check of
    /// each validation pass takes the step size as the learning rate
    /// / (1 − --momentum).
    #[arg(long, default_value_t = defaults::MOMENTUM, allow_negative_numbers = true)]
    pub momentum: f32,
    /// L2 weight decay coefficient.
    #[arg(long, default_value_t = defaults::WEIGHT_DECAY, allow_negative_numbers = true)]
    pub weight_decay: f32,
    /// Updates over which the learning rate rises linearly from --lr / N
    /// to --lr. The ill-conditioning check of a pass uses the learning rate
    /// of the next update. 0 turns the warm-up off.
    #[arg(long, value_name = "N", default_value_t = defaults::WARMUP_UPDATES)]
    pub warmup_updates: u64,
    /// Seed of the initial parameters and of the one-time shuffle.
    #[arg(long, default_value_t = defaults::SEED)]
    pub seed: u64,
    /// Updates between validation passes.
    #[arg(long, default_value_t = defaults::EVAL_EVERY)]
    pub eval_every: u64,
    /// Validation passes without improvement before training stops.
    #[arg(long, default_value_t = defaults::PATIENCE)]
    pub patience: u32,
    /// Stop as soon as the validation accuracy reaches this fraction, such
    /// as 0.975; classifiers only, see --target-mse for --model linear
    /// [default: train until early stopping or --max-epochs].
    #[arg(long)]
    pub target_accuracy: Option<f64>,
    /// Stop as soon as the validation mean squared error falls to this value
    /// or below, for --model linear [default: train until early stopping or
    /// --max-epochs].
    #[arg(long)]
    pub target_mse: Option<f64>,
    /// Feature scaling, fitted on the training split and saved in the
    /// checkpoint: `none`, `standardize` (zero mean, unit variance) or
    /// `minmax` (0 to 1). A feature constant on the training split is only
    /// shifted, to 0. Scaling makes LIBSVM rows dense, so their pushes are
    /// dense too.
    #[arg(long, default_value = "none", value_parser = parse_scale)]
    pub scale: ScaleMethod,
    /// Upper bound on training epochs.
    #[arg(long, default_value_t = defaults::MAX_EPOCHS)]
    pub max_epochs: u32,
    /// Examples held out from the end of an IDX training file for
    /// validation, when there is no --validation-data or
    /// --validation-fraction.
    #[arg(long, default_value_t = defaults::VALIDATION_SIZE)]
    pub validation_size: usize,
    /// Minibatches handed to a worker per work request.
    #[arg(long, default_value_t = defaults::BATCHES_PER_WORK)]
    pub batches_per_work: u32,
    /// How pushes from different workers are ordered: `async` applies each
    /// as it arrives; `bounded:S` makes a worker wait while it is more than S
    /// pushes ahead of the slowest; `sync` averages one push per worker into
    /// each update.
    #[arg(long, default_value = defaults::CONSISTENCY, value_parser = parse_consistency)]
    pub consistency: Consistency,
    /// Scale each pushed gradient by 1 / (staleness + 1).
    #[arg(long)]
    pub staleness_scaling: bool,
    /// λ of delay-compensated updates, g + λ·g⊙g⊙(θ_now − θ_then); 0 turns
    /// them off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub dc_lambda: f32,
    /// Minibatches whose gradients a worker averages into one push.
    #[arg(long, default_value_t = defaults::PUSH_EVERY)]
    pub push_every: u32,
    /// Minibatches between two refreshes of a worker's θ.
    #[arg(long, default_value_t = defaults::FETCH_EVERY)]
    pub fetch_every: u32,
    /// Push gradients as bfloat16, half the bytes of f32.
    #[arg(long)]
    pub push_bf16: bool,
    /// Push dense gradients of all of θ even for LIBSVM data with
    /// `--model softmax`, which otherwise push only the values each
    /// minibatch touched. Other data and models always push dense
    /// gradients, so the flag changes nothing there.
    #[arg(long)]
    pub dense: bool,
    /// Seconds of silence after which a worker loses its lease; in async
    /// mode its unfinished minibatches then go to the other workers.
    #[arg(long, default_value_t = defaults::LEASE_TIMEOUT_SECS)]
    pub lease_timeout: f64,
    /// Largest piece of θ or of a gradient in one gRPC message, in MiB,
    /// from 1 to 255; larger ranges travel in several messages.
    #[arg(long, default_value_t = 4)]
    pub piece_mib: usize,
    /// Largest Euclidean norm of a pushed gradient over all of θ; a worker
    /// rescales a larger gradient to it before it pushes. 0 turns norm
    /// clipping off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub clip_norm: f32,
    /// Largest absolute value of a pushed gradient value; a worker clamps
    /// larger values to it. 0 turns value clipping off.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub clip_value: f32,
    /// Output folder for the summary, event log and checkpoints
    /// [default: runs/<date>-<time>].
    #[arg(long)]
    pub run_dir: Option<PathBuf>,
    /// Also write the event log as TensorBoard scalars, in an
    /// `events.out.tfevents.*` file in the run directory.
    #[arg(long)]
    pub tensorboard: bool,
}

/// The Prometheus endpoint of a role.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Serve Prometheus metrics at http://HOST:PORT/metrics, without
    /// authentication, so keep it on a loopback or private address
    /// [default: no endpoint].
    #[arg(long, value_name = "HOST:PORT")]
    pub metrics_addr: Option<String>,
}

/// The sources of the cluster token.
#[derive(Debug, Args)]
pub struct TokenArgs {
    /// File holding the cluster token, a shared secret of at least 16
    /// printable characters that every role must present
    /// [default: the DOWNPOUR_TOKEN environment variable].
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// PEM certificate of the authority that signed every role's
    /// certificate; with --tls-cert and --tls-key, the roles talk TLS and
    /// check each other's certificates.
    #[arg(long, requires_all = ["tls_cert", "tls_key"])]
    pub tls_ca: Option<PathBuf>,
    /// PEM certificate of this role, signed by --tls-ca.
    #[arg(long, requires = "tls_ca")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, requires = "tls_ca")]
    pub tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub training: TrainingArgs,
    /// The in-process cluster uses this token when one is given, and a
    /// random one otherwise.
    #[command(flatten)]
    pub token: TokenArgs,
    /// One endpoint serves the metrics of every node in the process.
    #[command(flatten)]
    pub metrics: MetricsArgs,
    /// Parameter servers to split θ over.
    #[arg(long, default_value_t = 1)]
    pub ps_shards: usize,
}

#[derive(Debug, Args)]
pub struct CoordinatorArgs {
    #[command(flatten)]
    pub training: TrainingArgs,
    /// Address to serve the coordinator on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub listen: String,
    /// Parameter server addresses, HOST:PORT, comma-separated, as the
    /// workers reach them; θ is split into one contiguous range per server.
    #[arg(long, default_value = "127.0.0.1:7001", value_delimiter = ',')]
    pub ps: Vec<String>,
    /// Go on with the run in --run-dir, whose coordinator stopped before
    /// the run finished, from its saved state (coordinator-state.json).
    /// Start it with the same settings; the parameter servers must still
    /// hold θ, or have restarted with --restore.
    #[arg(long, requires = "run_dir")]
    pub resume: bool,
    /// Seconds to keep retrying the first connection to each parameter
    /// server, with waits between tries that double up to 2 s.
    #[arg(long, default_value_t = defaults::CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: u64,
    #[command(flatten)]
    pub token: TokenArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct PsArgs {
    /// Address to serve the parameter server on, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7001")]
    pub listen: String,
    /// Folder for the server's checkpoint, `ps.safetensors`: θ, optimizer
    /// state, version and applied sequence numbers [default: no
    /// checkpoints].
    #[arg(long)]
    pub checkpoint_dir: Option<PathBuf>,
    /// Updates between two checkpoints; one is also written when training
    /// stops and when the server shuts down. Workers keep their pushes
    /// since the last checkpoint in memory, to send them again if the
    /// server restarts, so a longer interval costs worker memory.
    #[arg(long, default_value_t = 100)]
    pub checkpoint_every: u64,
    /// Seconds after which a checkpoint is written even if fewer than
    /// --checkpoint-every updates arrived [default: updates only].
    #[arg(long)]
    pub checkpoint_seconds: Option<f64>,
    /// Resume from the checkpoint in --checkpoint-dir instead of waiting
    /// for the coordinator's initial θ.
    #[arg(long, requires = "checkpoint_dir")]
    pub restore: bool,
    #[command(flatten)]
    pub token: TokenArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

#[derive(Debug, Args)]
pub struct WorkerArgs {
    /// Coordinator address, HOST:PORT.
    #[arg(long, default_value = "127.0.0.1:7000")]
    pub coordinator: String,
    /// Parameter server addresses, HOST:PORT, comma-separated, in the
    /// coordinator's order [default: the addresses the coordinator hands
    /// out].
    #[arg(long, value_delimiter = ',')]
    pub ps: Option<Vec<String>>,
    /// Name of this worker in logs and the run summary
    /// [default: worker-<process id>].
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds to keep retrying the first connection to each peer, with
    /// waits between tries that double up to 2 s.
    #[arg(long, default_value_t = defaults::CONNECT_TIMEOUT_SECS)]
    pub connect_timeout: u64,
    /// Address to serve the gRPC health service on, HOST:PORT, for probes
    /// of an orchestrator [default: none].
    #[arg(long)]
    pub health_listen: Option<String>,
    #[command(flatten)]
    pub token: TokenArgs,
    #[command(flatten)]
    pub metrics: MetricsArgs,
}

/// The split of an MNIST folder that `eval` scores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Split {
    Train,
    Test,
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    /// Checkpoint to score (a .safetensors file from a run directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Data to score: a CSV, LIBSVM or NumPy features file, an MNIST
    /// folder, or an IDX images file with its labels file beside it.
    #[arg(long, default_value = defaults::DATA)]
    pub data: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Split of an MNIST folder to score; a single file is scored whole.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
}

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// Checkpoint to predict with (a .safetensors file from a run directory).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Examples to predict: a CSV, LIBSVM or NumPy features file, an MNIST
    /// folder, or an IDX images file with its labels file beside it.
    #[arg(long)]
    pub data: PathBuf,
    #[command(flatten)]
    pub read: ReadArgs,
    /// Split of an MNIST folder to predict; a single file is read whole.
    #[arg(long, value_enum, default_value_t = Split::Test)]
    pub split: Split,
    /// CSV file to write the predictions to [default: standard output].
    #[arg(long)]
    pub output: Option<PathBuf>,
}

impl TokenArgs {
    /// Reads the token from `--token-file` or `DOWNPOUR_TOKEN`.
    ///
    /// # Errors
    ///
    /// Fails when neither is set, or the token cannot be read or is invalid.
    pub fn read(&self) -> anyhow::Result<ClusterToken> {
        self.check_tls()?;
        let token = ClusterToken::from_file_or_env(self.token_file.as_deref())?;
        Ok(self.add_tls(token)?)
    }

    /// Rejects some but not all of the TLS settings. Clap checks this for
    /// flags but not for config-file values, which reach it as defaults.
    fn check_tls(&self) -> anyhow::Result<()> {
        let given = [&self.tls_ca, &self.tls_cert, &self.tls_key]
            .iter()
            .filter(|path| path.is_some())
            .count();
        if given == 0 || given == 3 {
            return Ok(());
        }
        anyhow::bail!(
            "TLS needs all of --tls-ca, --tls-cert and --tls-key, but only {given} of them are set"
        )
    }

    fn add_tls(&self, token: ClusterToken) -> Result<ClusterToken, TokenError> {
        match (&self.tls_ca, &self.tls_cert, &self.tls_key) {
            (Some(ca), Some(cert), Some(key)) => Ok(token.with_tls(Tls::read(ca, cert, key)?)),
            _ => Ok(token),
        }
    }

    /// Reads the token as [`TokenArgs::read`] does, or makes a random one
    /// when neither source is set.
    ///
    /// # Errors
    ///
    /// Fails when a given source cannot be read or contains an invalid token.
    pub fn read_or_random(&self) -> anyhow::Result<ClusterToken> {
        self.check_tls()?;
        let token = match ClusterToken::from_file_or_env(self.token_file.as_deref()) {
            Err(TokenError::Missing) => ClusterToken::random(),
            other => other?,
        };
        Ok(self.add_tls(token)?)
    }
}

fn parse_model(text: &str) -> Result<ModelSpec, String> {
    text.parse().map_err(|error| format!("{error}"))
}

fn parse_scale(text: &str) -> Result<ScaleMethod, String> {
    text.parse()
}

fn parse_consistency(text: &str) -> Result<Consistency, String> {
    text.parse().map_err(|error| format!("{error}"))
}

impl TrainingArgs {
    /// Builds the coordinator's settings.
    pub fn to_config(&self, run_dir: PathBuf, ps_addresses: Vec<String>) -> CoordinatorConfig {
        CoordinatorConfig {
            data: self.data.clone(),
            input: self.read.input_options(&self.splits),
            model: self.model.clone(),
            workers: self.workers,
            batch_size: self.batch_size,
            learning_rate: self.lr,
            momentum: self.momentum,
            weight_decay: self.weight_decay,
            warmup_updates: self.warmup_updates,
            seed: self.seed,
            eval_every: self.eval_every,
            patience: self.patience,
            target_accuracy: self.target_accuracy,
            target_mse: self.target_mse,
            scale: self.scale,
            max_epochs: self.max_epochs,
            validation_size: self.validation_size,
            run_dir,
            ps_addresses,
            batches_per_work: self.batches_per_work,
            consistency: self.consistency,
            compensation: Compensation {
                scale_by_staleness: self.staleness_scaling,
                dc_lambda: self.dc_lambda,
            },
            push_every: self.push_every,
            fetch_every: self.fetch_every,
            push_bf16: self.push_bf16,
            piece_values: self.piece_mib.saturating_mul(1 << 20) / 4,
            // Out-of-range values become 0 here, which validation rejects.
            lease_timeout: std::time::Duration::try_from_secs_f64(self.lease_timeout)
                .unwrap_or_default(),
            resume: false,
            clip_norm: self.clip_norm,
            clip_value: self.clip_value,
            dense: self.dense,
            connect_timeout: std::time::Duration::from_secs(defaults::CONNECT_TIMEOUT_SECS),
            tensorboard: self.tensorboard,
        }
    }

    /// Returns the run directory, or `runs/<date>-<time>` when none was
    /// given, with a `-2`, `-3`, ... suffix when that name exists already.
    /// Two runs that still pick one name are kept apart by the directory's
    /// lock.
    pub fn run_dir_or_default(&self) -> PathBuf {
        if let Some(run_dir) = &self.run_dir {
            return run_dir.clone();
        }
        let stamp = chrono::Local::now().format("%Y%m%d-%H%M%S").to_string();
        let base = PathBuf::from("runs");
        let mut candidate = base.join(&stamp);
        let mut suffix = 2;
        while candidate.exists() {
            candidate = base.join(format!("{stamp}-{suffix}"));
            suffix += 1;
        }
        candidate
    }
}
