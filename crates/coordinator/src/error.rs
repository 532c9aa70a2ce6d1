//! Errors that end a coordinator run.

use std::path::PathBuf;

use crate::config::ConfigError;

/// Errors that stop a run from starting or finishing.
#[derive(Debug, thiserror::Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Data(#[from] downpour_data::DataError),
    #[error(transparent)]
    Model(#[from] downpour_model::ModelError),
    #[error(
        "run directory {0} already holds a finished run (summary.json); choose another --run-dir"
    )]
    RunDirectoryTaken(PathBuf),
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("run directory {0} is in use by another run; choose another --run-dir")]
    RunDirectoryInUse(PathBuf),
    #[error(
        "--model {spec} has {parameters} parameters, whose θ needs {gib:.1} GiB, more than the {available_gib:.1} GiB of memory available; choose smaller layers"
    )]
    ModelTooLarge {
        spec: String,
        parameters: usize,
        gib: f64,
        available_gib: f64,
    },
    #[error("TLS settings cannot be used: {0}; check --tls-cert, --tls-key and --tls-ca")]
    Tls(String),
    #[error("parameter server at {address}: {message}")]
    ParameterServer { address: String, message: String },
    #[error("coordinator server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error(
        "--ps lists {servers} parameter servers, but the model has only {parameters} parameters"
    )]
    TooManyParameterServers { servers: usize, parameters: usize },
    #[error(
        "{}: the training split has {classes} class, but a classifier needs at least 2; check --label-column, or use --model linear for a real-valued target",
        data.display()
    )]
    SingleClass { data: PathBuf, classes: usize },
    #[error("interrupted before training finished")]
    Interrupted,
    #[error("cannot resume from {}: {message}", path.display())]
    Resume { path: PathBuf, message: String },
}

impl CoordinatorError {
    pub(crate) fn resume(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Resume {
            path: path.into(),
            message: message.into(),
        }
    }
}
