//! Errors that end a worker.

/// Errors that stop a worker before the coordinator ends the run.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error(transparent)]
    Connect(#[from] downpour_proto::transport::ConnectError),
    #[error("{call} failed: {code:?}: {message}")]
    Rpc {
        call: &'static str,
        code: tonic::Code,
        message: String,
    },
    #[error("the coordinator sent an invalid model description: {0}")]
    Model(#[from] downpour_model::ModelError),
    #[error("shard {shard} is invalid: {error}")]
    Shard {
        shard: u32,
        error: downpour_data::DataError,
    },
    #[error("shard {shard} has {actual} features per example, but the model expects {expected}")]
    ShardShape {
        shard: u32,
        expected: usize,
        actual: usize,
    },
    #[error("shard {shard} stream ended after {received} of {expected} bytes")]
    ShardTruncated {
        shard: u32,
        received: usize,
        expected: u64,
    },
    #[error("work range asks for minibatch {batch} of shard {shard}, which has {batches}")]
    RangeOutOfShard {
        shard: u32,
        batch: u32,
        batches: usize,
    },
    #[error("the parameter server sent malformed parameters: {0}")]
    Params(#[from] downpour_proto::F32BytesError),
    #[error("invalid parameter-server layout: {0}")]
    Layout(String),
    #[error("cannot push sparse gradients: {0}")]
    SparseGradients(String),
    #[error(
        "training diverged: the loss of minibatch {batch} of epoch {epoch} is not finite; lower the learning rate (--lr), or with many asynchronous workers add --staleness-scaling or lower --momentum"
    )]
    Diverged { epoch: u32, batch: u32 },
    #[error("interrupted")]
    Interrupted,
}

impl WorkerError {
    pub(crate) fn rpc(call: &'static str) -> impl FnOnce(tonic::Status) -> Self {
        move |status| Self::Rpc {
            call,
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}
