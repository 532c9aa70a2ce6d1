//! The coordinator's gRPC service: registration, work ranges and shard
//! bytes. The training driver in `run` shares its state.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use bytes::Bytes;
use downpour_proto::v1::coordinator_server::Coordinator;
use downpour_proto::v1::{
    CompleteWorkReply, CompleteWorkRequest, FetchShardRequest, GradientEncoding, NextWorkReply,
    NextWorkRequest, RegisterReply, RegisterRequest, ShardChunk, StopReason, next_work_reply,
};
use serde::Serialize;
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::schedule::{Assignment, Progress, ScheduleError, WorkRange, WorkSchedule};

/// Bytes per `FetchShard` message.
const SHARD_CHUNK_BYTES: usize = 1024 * 1024;

/// How long a worker waits before asking again when it has no work.
const WAIT_MS: u32 = 10;

/// The coordinator's record of one registered worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRecord {
    pub id: u32,
    pub name: String,
    pub shard: u32,
    /// Minibatches the worker reported complete.
    pub minibatches: u64,
    /// Training examples in those minibatches.
    pub examples: u64,
    /// Pushes the parameter server applied from this worker; filled in at
    /// the end of the run.
    pub pushes: u64,
    #[serde(skip)]
    pub stop_sent: bool,
    /// Time of the worker's last request.
    #[serde(skip)]
    pub last_contact: Instant,
}

/// Run facts handed to every worker at registration.
#[derive(Debug)]
pub(crate) struct RunInfo {
    pub(crate) run_id: String,
    pub(crate) model_json: String,
    pub(crate) batch_size: usize,
    pub(crate) ps_shards: Vec<downpour_proto::v1::PsShard>,
    pub(crate) expected_workers: usize,
    pub(crate) shard_files: Vec<Bytes>,
    pub(crate) shard_lengths: Vec<usize>,
    pub(crate) push_every: u32,
    pub(crate) fetch_every: u32,
    pub(crate) push_encoding: GradientEncoding,
    pub(crate) piece_values: usize,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) schedule: WorkSchedule,
    /// Set once θ is on the parameter server and every worker registered.
    pub(crate) started: bool,
    pub(crate) workers: Vec<WorkerRecord>,
}

/// State shared by the service and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) info: RunInfo,
    inner: Mutex<Inner>,
    /// Number of registered workers.
    pub(crate) registered: watch::Sender<usize>,
    /// Set once the last epoch is complete.
    pub(crate) epochs_done: watch::Sender<bool>,
    /// Number of workers that received a stop.
    pub(crate) stopped_workers: watch::Sender<usize>,
}

impl Shared {
    pub(crate) fn new(info: RunInfo, schedule: WorkSchedule) -> Self {
        Self {
            info,
            inner: Mutex::new(Inner {
                schedule,
                started: false,
                workers: Vec::new(),
            }),
            registered: watch::Sender::new(0),
            epochs_done: watch::Sender::new(false),
            stopped_workers: watch::Sender::new(0),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update below validates before it mutates, so the state is
        // consistent even if a holder panicked.
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Training examples in a range of minibatches; only the shard's last
    /// minibatch may be short.
    fn range_examples(&self, range: &WorkRange) -> u64 {
        let Some(&len) = self.info.shard_lengths.get(range.shard as usize) else {
            return 0;
        };
        let (len, batch_size) = (len as u64, self.info.batch_size as u64);
        let start = (u64::from(range.first_batch) * batch_size).min(len);
        let end =
            ((u64::from(range.first_batch) + u64::from(range.batch_count)) * batch_size).min(len);
        end - start
    }

    fn record_stop_sent(&self, inner: &mut Inner, worker_id: u32) {
        if let Some(worker) = inner.workers.get_mut(worker_id as usize)
            && !worker.stop_sent
        {
            worker.stop_sent = true;
            self.stopped_workers.send_modify(|count| *count += 1);
        }
    }
}

/// The `Coordinator` gRPC service.
#[derive(Debug, Clone)]
pub(crate) struct CoordinatorService {
    shared: Arc<Shared>,
}

impl CoordinatorService {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }
}

fn range_from_proto(range: Option<downpour_proto::v1::WorkRange>) -> Result<WorkRange, Status> {
    let range = range.ok_or_else(|| Status::invalid_argument("work range is missing"))?;
    Ok(WorkRange {
        epoch: range.epoch,
        shard: range.shard,
        first_batch: range.first_batch,
        batch_count: range.batch_count,
    })
}

fn range_to_proto(range: WorkRange) -> downpour_proto::v1::WorkRange {
    downpour_proto::v1::WorkRange {
        epoch: range.epoch,
        shard: range.shard,
        first_batch: range.first_batch,
        batch_count: range.batch_count,
    }
}

fn unknown_worker(worker_id: u32) -> Status {
    Status::not_found(format!(
        "worker {worker_id} is not registered with this run; register first"
    ))
}

impl From<ScheduleError> for Status {
    fn from(error: ScheduleError) -> Self {
        match error {
            ScheduleError::UnknownShard { .. } => Status::invalid_argument(error.to_string()),
            ScheduleError::WrongEpoch { .. } | ScheduleError::NotAssigned { .. } => {
                Status::failed_precondition(error.to_string())
            }
        }
    }
}

type ShardStream = Pin<Box<dyn Stream<Item = Result<ShardChunk, Status>> + Send>>;

#[tonic::async_trait]
impl Coordinator for CoordinatorService {
    async fn register(
        &self,
        request: Request<RegisterRequest>,
    ) -> Result<Response<RegisterReply>, Status> {
        let name = request.into_inner().name;
        let info = &self.shared.info;
        let mut inner = self.shared.lock();
        let id = inner.workers.len();
        if id >= info.expected_workers {
            return Err(Status::resource_exhausted(format!(
                "the run already has all {} workers; start the coordinator with a larger --workers",
                info.expected_workers
            )));
        }
        let id = id as u32;
        inner.workers.push(WorkerRecord {
            id,
            name: name.clone(),
            shard: id,
            minibatches: 0,
            examples: 0,
            pushes: 0,
            stop_sent: false,
            last_contact: Instant::now(),
        });
        let registered = inner.workers.len();
        // Published under the lock: two registrations racing could
        // otherwise publish their counts out of order and leave a stale one.
        self.shared.registered.send_replace(registered);
        drop(inner);
        info!(
            worker_id = id,
            name = %name,
            registered,
            expected = info.expected_workers,
            "worker registered"
        );

        Ok(Response::new(RegisterReply {
            worker_id: id,
            run_id: info.run_id.clone(),
            model_json: info.model_json.clone(),
            batch_size: info.batch_size as u32,
            ps_shards: info.ps_shards.clone(),
            shards: info.shard_files.len() as u32,
            push_every: info.push_every,
            fetch_every: info.fetch_every,
            push_encoding: info.push_encoding.into(),
            piece_values: info.piece_values as u64,
        }))
    }

    async fn next_work(
        &self,
        request: Request<NextWorkRequest>,
    ) -> Result<Response<NextWorkReply>, Status> {
        let worker_id = request.into_inner().worker_id;
        let mut inner = self.shared.lock();
        let worker = inner
            .workers
            .get_mut(worker_id as usize)
            .ok_or_else(|| unknown_worker(worker_id))?;
        worker.last_contact = Instant::now();
        let shard = worker.shard;

        let action = if !inner.started && inner.schedule.stop_reason().is_none() {
            next_work_reply::Action::WaitMs(WAIT_MS)
        } else {
            match inner.schedule.next_work(shard) {
                Assignment::Work(range) => next_work_reply::Action::Work(range_to_proto(range)),
                Assignment::Wait => next_work_reply::Action::WaitMs(WAIT_MS),
                Assignment::Stop(reason) => {
                    self.shared.record_stop_sent(&mut inner, worker_id);
                    next_work_reply::Action::Stop(StopReason { reason })
                }
            }
        };
        Ok(Response::new(NextWorkReply {
            action: Some(action),
        }))
    }

    async fn complete_work(
        &self,
        request: Request<CompleteWorkRequest>,
    ) -> Result<Response<CompleteWorkReply>, Status> {
        let request = request.into_inner();
        let range = range_from_proto(request.work)?;
        let mut inner = self.shared.lock();
        let worker = inner
            .workers
            .get_mut(request.worker_id as usize)
            .ok_or_else(|| unknown_worker(request.worker_id))?;
        worker.last_contact = Instant::now();
        let owned_shard = worker.shard;
        if owned_shard != range.shard {
            return Err(Status::permission_denied(format!(
                "worker {} reported shard {}, but it owns shard {owned_shard}",
                request.worker_id, range.shard
            )));
        }

        let progress = match inner.schedule.complete(range) {
            Ok(progress) => progress,
            Err(error) => {
                warn!(worker_id = request.worker_id, %error, "completion rejected");
                return Err(error.into());
            }
        };
        let examples = self.shared.range_examples(&range);
        if let Some(worker) = inner.workers.get_mut(request.worker_id as usize) {
            worker.minibatches += u64::from(range.batch_count);
            worker.examples += examples;
        }
        match progress {
            Progress::InEpoch => {}
            Progress::EpochDone { finished_epoch } => {
                info!(epoch = finished_epoch + 1, "epoch complete");
            }
            Progress::AllEpochsDone => {
                info!(epoch = range.epoch + 1, "last epoch complete");
                self.shared.epochs_done.send_replace(true);
            }
        }

        let stop_reason = inner.schedule.stop_reason().map(str::to_owned);
        if stop_reason.is_some() {
            self.shared.record_stop_sent(&mut inner, request.worker_id);
        }
        Ok(Response::new(CompleteWorkReply {
            stop: stop_reason.is_some(),
            stop_reason: stop_reason.unwrap_or_default(),
        }))
    }

    type FetchShardStream = ShardStream;

    async fn fetch_shard(
        &self,
        request: Request<FetchShardRequest>,
    ) -> Result<Response<Self::FetchShardStream>, Status> {
        let index = request.into_inner().shard;
        let files = &self.shared.info.shard_files;
        let file = files.get(index as usize).cloned().ok_or_else(|| {
            Status::not_found(format!(
                "shard {index} does not exist; the run has {} shards",
                files.len()
            ))
        })?;

        let total_bytes = file.len() as u64;
        let chunks: Vec<Result<ShardChunk, Status>> = (0..file.len())
            .step_by(SHARD_CHUNK_BYTES)
            .map(|start| {
                let end = (start + SHARD_CHUNK_BYTES).min(file.len());
                Ok(ShardChunk {
                    total_bytes,
                    data: file.slice(start..end),
                })
            })
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }
}
