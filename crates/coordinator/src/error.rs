//! Errors that end a coordinator run.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Why a run could not start or finish.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] downpour_data::DataError),
    #[error(transparent)]
    Model(#[from] downpour_model::ModelError),
    #[error(
        "--validation-size {validation} leaves no training examples: the training file holds {examples}"
    )]
    ValidationTooLarge { validation: usize, examples: usize },
    #[error(
        "cannot cut {examples} training examples into {workers} shards of whole minibatches of {batch_size}: {source}"
    )]
    Sharding {
        examples: usize,
        batch_size: usize,
        workers: usize,
        source: downpour_data::DataError,
    },
    #[error(
        "run directory {0} already holds a finished run (summary.json); choose another --run-dir"
    )]
    RunDirectoryTaken(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("parameter server at {address}: {message}")]
    ParameterServer { address: String, message: String },
    #[error("coordinator server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("interrupted before training finished")]
    Interrupted,
}
