//! The worker's network loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use downpour_data::{Dataset, shard, shard_file};
use downpour_model::{Mlp, ModelDescription};
use downpour_proto::encode_f32s;
use downpour_proto::transport::{MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::coordinator_client::CoordinatorClient;
use downpour_proto::v1::{
    CompleteWorkRequest, FetchShardRequest, NextWorkRequest, RegisterRequest, WorkRange,
    next_work_reply,
};
use tonic::transport::Channel;
use tracing::{debug, info};

use crate::error::WorkerError;
use crate::ps_shards::{Gradient, ParameterServers};
use crate::trainer::Trainer;

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Coordinator address, `HOST:PORT`.
    pub coordinator: String,
    /// Parameter server addresses, one per server in the coordinator's
    /// layout; when `None`, the addresses the coordinator hands out are used.
    pub ps: Option<Vec<String>>,
    /// Name shown in the coordinator's logs and summary.
    pub name: String,
    /// How long to keep retrying the first connection to each peer.
    pub connect_timeout: Duration,
}

/// Counts of the work a worker did, returned when the coordinator stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    pub worker_id: u32,
    pub minibatches: u64,
    pub examples: u64,
    /// Pushes the parameter server applied.
    pub pushes: u64,
    pub stop_reason: String,
}

type Coordinator = CoordinatorClient<Channel>;

/// Runs a worker until the coordinator stops it or `shutdown` resolves.
///
/// # Errors
///
/// Returns an error when a peer cannot be reached, an RPC fails, the
/// coordinator sends data that does not fit the model, or `shutdown`
/// resolves first.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport, WorkerError> {
    tokio::select! {
        report = work(config) => report,
        () = shutdown => Err(WorkerError::Interrupted),
    }
}

async fn work(config: WorkerConfig) -> Result<WorkerReport, WorkerError> {
    let channel =
        connect_with_retry("coordinator", &config.coordinator, config.connect_timeout).await?;
    let mut coordinator = CoordinatorClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let registration = coordinator
        .register(RegisterRequest {
            name: config.name.clone(),
        })
        .await
        .map_err(WorkerError::rpc("Register"))?
        .into_inner();
    let worker_id = registration.worker_id;
    let description = ModelDescription::from_json(&registration.model_json)?;
    let batch_size = registration.batch_size.max(1) as usize;
    let mut ps = ParameterServers::connect(
        &registration.ps_shards,
        config.ps.as_deref(),
        description.parameters,
        config.connect_timeout,
    )
    .await?;
    info!(
        worker_id,
        run_id = %registration.run_id,
        model = %description.spec,
        ps = %ps.addresses().join(","),
        "registered with the coordinator"
    );

    let mut session = Session {
        worker_id,
        batch_size,
        trainer: Some(Trainer::new(Mlp::new(&description)?, batch_size)),
        sequence: 0,
        needs_pull: true,
        shards: HashMap::new(),
        report: WorkerReport {
            worker_id,
            minibatches: 0,
            examples: 0,
            pushes: 0,
            stop_reason: String::new(),
        },
    };
    loop {
        let reply = coordinator
            .next_work(NextWorkRequest { worker_id })
            .await
            .map_err(WorkerError::rpc("NextWork"))?
            .into_inner();
        match reply.action {
            Some(next_work_reply::Action::Work(range)) => {
                session
                    .train_range(&mut coordinator, &mut ps, range)
                    .await?;
                let done = coordinator
                    .complete_work(CompleteWorkRequest {
                        worker_id,
                        work: Some(range),
                    })
                    .await
                    .map_err(WorkerError::rpc("CompleteWork"))?
                    .into_inner();
                if done.stop {
                    session.report.stop_reason = done.stop_reason;
                    break;
                }
            }
            Some(next_work_reply::Action::WaitMs(ms)) => {
                session.needs_pull = true;
                tokio::time::sleep(Duration::from_millis(u64::from(ms))).await;
            }
            Some(next_work_reply::Action::Stop(stop)) => {
                session.report.stop_reason = stop.reason;
                break;
            }
            None => {
                return Err(WorkerError::Rpc {
                    call: "NextWork",
                    code: tonic::Code::Internal,
                    message: "the reply is missing its action".to_owned(),
                });
            }
        }
    }
    info!(
        worker_id,
        minibatches = session.report.minibatches,
        examples = session.report.examples,
        reason = %session.report.stop_reason,
        "worker stopped"
    );
    Ok(session.report)
}

/// A registered worker's state between steps.
#[derive(Debug)]
struct Session {
    worker_id: u32,
    batch_size: usize,
    /// `None` only while a step runs on the blocking pool.
    trainer: Option<Trainer>,
    sequence: u64,
    /// Whether θ must be pulled before the next step.
    needs_pull: bool,
    shards: HashMap<u32, Arc<Dataset>>,
    report: WorkerReport,
}

impl Session {
    fn trainer(&mut self) -> &mut Trainer {
        self.trainer
            .as_mut()
            .expect("the trainer is back from the blocking pool between steps")
    }

    async fn pull(&mut self, ps: &mut ParameterServers) -> Result<(), WorkerError> {
        ps.pull(&mut self.trainer().params).await
    }

    async fn shard(
        &mut self,
        coordinator: &mut Coordinator,
        index: u32,
    ) -> Result<Arc<Dataset>, WorkerError> {
        if let Some(shard) = self.shards.get(&index) {
            return Ok(shard.clone());
        }
        let shard = Arc::new(fetch_shard(coordinator, index).await?);
        let expected = self.trainer().inputs();
        if shard.num_features() != expected {
            return Err(WorkerError::ShardShape {
                shard: index,
                expected,
                actual: shard.num_features(),
            });
        }
        info!(
            worker_id = self.worker_id,
            shard = index,
            examples = shard.len(),
            "shard loaded"
        );
        self.shards.insert(index, shard.clone());
        Ok(shard)
    }

    async fn train_range(
        &mut self,
        coordinator: &mut Coordinator,
        ps: &mut ParameterServers,
        range: WorkRange,
    ) -> Result<(), WorkerError> {
        let shard = self.shard(coordinator, range.shard).await?;
        // Each push returns the new θ, so a pull is needed only for the first
        // range and after waiting, while other workers may have pushed.
        if self.needs_pull {
            self.pull(ps).await?;
            self.needs_pull = false;
        }
        let batches = shard::batch_count(shard.len(), self.batch_size);
        debug!(
            worker_id = self.worker_id,
            epoch = range.epoch,
            shard = range.shard,
            first = range.first_batch,
            count = range.batch_count,
            "work range"
        );
        let mut compute = Duration::ZERO;
        let mut transport = Duration::ZERO;
        for batch in range.first_batch..range.first_batch.saturating_add(range.batch_count) {
            if batch as usize >= batches {
                return Err(WorkerError::RangeOutOfShard {
                    shard: range.shard,
                    batch,
                    batches,
                });
            }
            let rows = shard::batch_rows(shard.len(), self.batch_size, batch as usize);
            let examples = rows.len();
            let mut trainer = self
                .trainer
                .take()
                .expect("the trainer is idle between steps");
            let step_shard = shard.clone();
            let step_started = Instant::now();
            let (trainer, loss) = tokio::task::spawn_blocking(move || {
                let loss = trainer.step(&step_shard, rows);
                (trainer, loss)
            })
            .await
            .unwrap_or_else(|error| std::panic::resume_unwind(error.into_panic()));
            self.trainer = Some(trainer);
            let push_started = Instant::now();
            compute += push_started - step_started;

            self.sequence += 1;
            let bytes = encode_f32s(&self.trainer().gradient);
            let gradient = Gradient {
                worker_id: self.worker_id,
                sequence: self.sequence,
                bytes: &bytes,
                examples: examples as u32,
                loss,
            };
            ps.push(gradient, &mut self.trainer().params).await?;
            transport += push_started.elapsed();
            self.report.pushes += 1;
            self.report.minibatches += 1;
            self.report.examples += examples as u64;
        }
        debug!(
            worker_id = self.worker_id,
            batches = range.batch_count,
            compute_ms = compute.as_secs_f64() * 1e3,
            push_ms = transport.as_secs_f64() * 1e3,
            "work range done"
        );
        Ok(())
    }
}

/// Upper bound on the memory reserved up front for a shard, whatever size
/// the stream announces; the buffer still grows past it as bytes arrive.
const MAX_SHARD_RESERVE: u64 = 1 << 30;

async fn fetch_shard(coordinator: &mut Coordinator, index: u32) -> Result<Dataset, WorkerError> {
    let mut stream = coordinator
        .fetch_shard(FetchShardRequest { shard: index })
        .await
        .map_err(WorkerError::rpc("FetchShard"))?
        .into_inner();
    let mut bytes = Vec::new();
    let mut expected = 0;
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(WorkerError::rpc("FetchShard"))?
    {
        if bytes.is_empty() {
            expected = chunk.total_bytes;
            bytes.reserve(expected.min(MAX_SHARD_RESERVE) as usize);
        }
        bytes.extend_from_slice(&chunk.data);
    }
    if bytes.len() as u64 != expected {
        return Err(WorkerError::ShardTruncated {
            shard: index,
            received: bytes.len(),
            expected,
        });
    }
    shard_file::decode(&bytes).map_err(|error| WorkerError::Shard {
        shard: index,
        error,
    })
}
