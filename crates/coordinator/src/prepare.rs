//! Loads the data and builds everything a run needs before any server
//! starts: the validation split, the one-time shuffle, the shards and θ₀.

use std::ops::Range;

use bytes::Bytes;
use downpour_data::checkpoint::RunMetadata;
use downpour_data::formats::{SplitSpec, SplitsRecord, load_splits};
use downpour_data::scaling::Scaling;
use downpour_data::{Dataset, shard, shard_file, shuffle};
use downpour_model::{Mlp, ModelDescription, Targets};
use ndarray::Array2;
use tracing::info;

use crate::config::CoordinatorConfig;
use crate::error::CoordinatorError;
use crate::ps_layout::split_params;

/// Features and targets of a held-out split, as f32 for evaluation.
#[derive(Debug)]
pub struct EvalSet {
    pub features: Array2<f32>,
    /// Class labels; empty for regression.
    pub labels: Vec<u32>,
    /// Regression targets; empty for classification.
    pub targets: Vec<f32>,
}

impl EvalSet {
    // NOTE: sparse held-out rows are densified here, which takes examples ×
    // features × 4 bytes; very wide LIBSVM data can run out of memory.
    fn from_dataset(dataset: &Dataset) -> Self {
        Self {
            features: dataset.to_f32(),
            labels: dataset.labels.clone(),
            targets: dataset.targets.clone(),
        }
    }

    /// Number of examples.
    pub fn len(&self) -> usize {
        self.features.nrows()
    }

    /// Returns whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.features.nrows() == 0
    }

    /// Returns the targets of the first `rows` examples, in the form the
    /// model takes: real values when the set has them, else class labels.
    pub fn targets_of(&self, rows: usize) -> Targets<'_> {
        match self.targets.is_empty() {
            true => Targets::Classes(&self.labels[..rows]),
            false => Targets::Values(&self.targets[..rows]),
        }
    }
}

/// A run whose data is loaded, split, shuffled and sharded.
#[derive(Debug)]
pub struct PreparedRun {
    pub config: CoordinatorConfig,
    pub description: ModelDescription,
    pub model: Mlp,
    pub initial_params: Vec<f32>,
    /// Training examples, over all shards.
    pub train_examples: usize,
    /// The range of θ each parameter server holds, in `--ps` order.
    pub ps_ranges: Vec<Range<usize>>,
    /// Rows of the shuffled training set held by each shard.
    pub shard_rows: Vec<Range<usize>>,
    /// Each shard encoded in the shard file format.
    pub shard_files: Vec<Bytes>,
    pub validation: EvalSet,
    /// The test split, when the data has one.
    pub test: Option<EvalSet>,
    /// How the data was read and each split made.
    pub splits: SplitsRecord,
    /// Whether workers push sparse gradients: the training rows are sparse,
    /// the model supports them and `--dense` is not set.
    pub sparse_gradients: bool,
    /// Feature scaling fitted on the training split, applied to every
    /// split.
    pub scaling: Option<Scaling>,
}

impl PreparedRun {
    /// Returns the classes and scaling that checkpoints of this run carry.
    pub fn run_metadata(&self) -> RunMetadata {
        RunMetadata {
            classes: (!self.description.is_regression()).then(|| self.splits.classes.clone()),
            scaling: self.scaling.clone(),
        }
    }

    /// Minibatches in each shard.
    pub fn batches_per_shard(&self) -> Vec<u32> {
        let batch_size = self.config.batch_size;
        self.shard_rows
            .iter()
            .map(|rows| {
                u32::try_from(shard::batch_count(rows.len(), batch_size)).unwrap_or(u32::MAX)
            })
            .collect()
    }
}

/// Validates the settings, loads the data and prepares the run.
///
/// Nothing is written to disk, so a failure here leaves no run directory.
///
/// # Errors
///
/// Returns an error for invalid settings, unreadable or malformed data, a
/// validation split as large as the data, or too few minibatches for the
/// number of workers.
pub fn prepare(config: CoordinatorConfig) -> Result<PreparedRun, CoordinatorError> {
    config.validate()?;
    if config.run_dir.join("summary.json").exists() {
        return Err(CoordinatorError::RunDirectoryTaken(config.run_dir.clone()));
    }
    let splits = load_splits(&SplitSpec {
        data: config.data.clone(),
        input: config.input.clone(),
        validation_size: config.validation_size,
        seed: config.seed,
        regression: config.model.is_regression(),
    })?;
    if !config.model.is_regression() && splits.train.classes < 2 {
        return Err(CoordinatorError::SingleClass {
            data: config.data.clone(),
            classes: splits.train.classes,
        });
    }
    let description = ModelDescription::new(
        &config.model,
        splits.train.num_features(),
        splits.train.classes,
    )?;
    let ps_ranges = split_params(description.parameters, config.ps_addresses.len()).ok_or(
        CoordinatorError::TooManyParameterServers {
            servers: config.ps_addresses.len(),
            parameters: description.parameters,
        },
    )?;
    // The coordinator keeps θ₀ and the best θ, so reject a model whose θ
    // alone does not fit in the memory this machine has free.
    let theta_bytes = (description.parameters as u64).saturating_mul(4);
    if let Some(available) = available_memory_bytes()
        && theta_bytes > available
    {
        return Err(CoordinatorError::ModelTooLarge {
            spec: config.model.to_string(),
            parameters: description.parameters,
            gib: theta_bytes as f64 / f64::from(1 << 30),
            available_gib: available as f64 / f64::from(1 << 30),
        });
    }
    // The statistics come from the training rows only, so that no held-out
    // example influences the model.
    let scaling = Scaling::fit(config.scale, &splits.train);
    let scale = |dataset: Dataset| match &scaling {
        Some(scaling) => scaling.apply(dataset),
        None => dataset,
    };
    let train = scale(splits.train);
    let validation = scale(splits.validation);
    let test = splits.test.map(scale);

    let order = shuffle::permutation(train.len(), config.seed);
    let train = train.select(&order);
    let shard_rows = shard::plan(train.len(), config.batch_size, config.workers)?;
    let shard_files = shard_rows
        .iter()
        .map(|rows| {
            let indices: Vec<usize> = rows.clone().collect();
            Bytes::from(shard_file::encode(&train.select(&indices)))
        })
        .collect();

    let model = Mlp::new(&description)?;
    let initial_params = model.init_params(config.seed);
    let sparse_gradients =
        !config.dense && train.sparse_rows().is_some() && model.supports_sparse();

    info!(
        data = %config.data.display(),
        train = train.len(),
        validation = validation.len(),
        test = test.as_ref().map_or(0, Dataset::len),
        shards = shard_rows.len(),
        model = %config.model,
        parameters = model.num_params(),
        gradients = if sparse_gradients { "sparse" } else { "dense" },
        scale = %config.scale,
        "data prepared"
    );
    Ok(PreparedRun {
        ps_ranges,
        train_examples: train.len(),
        shard_rows,
        shard_files,
        validation: EvalSet::from_dataset(&validation),
        test: test.as_ref().map(EvalSet::from_dataset),
        splits: splits.record,
        sparse_gradients,
        scaling,
        description,
        model,
        initial_params,
        config,
    })
}

/// Memory available to new allocations, from `/proc/meminfo`; `None` where
/// that file does not exist or cannot be read.
fn available_memory_bytes() -> Option<u64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo
        .lines()
        .find(|line| line.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
