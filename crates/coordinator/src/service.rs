//! The coordinator's gRPC service: registration, work ranges and shard
//! bytes. The training driver in `run` shares its state.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use downpour_proto::v1::coordinator_server::Coordinator;
use downpour_proto::v1::{
    CompleteWorkReply, CompleteWorkRequest, DeregisterReply, DeregisterRequest, FetchShardRequest,
    GradientEncoding, HeartbeatReply, HeartbeatRequest, NextWorkReply, NextWorkRequest,
    RegisterReply, RegisterRequest, ShardChunk, StopReason, next_work_reply,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_stream::Stream;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::diagnostics::PushLog;
use crate::schedule::{Assignment, Progress, ScheduleError, WorkRange, WorkSchedule};
use crate::state::{DriverProgress, RunIdentity, SavedState, SavedWorker};

/// Bytes per `FetchShard` message.
const SHARD_CHUNK_BYTES: usize = 1024 * 1024;

/// How long a worker waits before asking again when it has no work.
const WAIT_MS: u32 = 10;

/// The coordinator's record of one registered worker.
#[derive(Debug, Clone, Serialize)]
pub struct WorkerRecord {
    pub id: u32,
    pub name: String,
    /// Shards the worker trains on: its own, plus those it took over from
    /// workers whose lease expired.
    pub shards: Vec<u32>,
    /// Times this worker's lease expired.
    pub leases_lost: u32,
    /// The lease is expired and the worker has not registered again.
    #[serde(skip)]
    pub lease_lost: bool,
    /// Minibatches the worker reported complete.
    pub minibatches: u64,
    /// Training examples in those minibatches.
    pub examples: u64,
    /// Pushes the parameter server applied from this worker; filled in at
    /// the end of the run.
    pub pushes: u64,
    /// Pushes the worker reported as acknowledged by every parameter
    /// server, at its last completed range.
    pub pushes_acked: u64,
    /// Number of this worker's pushes per staleness value, from the pushes
    /// it reported with completed ranges.
    pub staleness_histogram: BTreeMap<u64, u64>,
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
    /// A worker silent this long loses its lease; `None` turns leases off.
    pub(crate) lease_timeout: Option<Duration>,
    pub(crate) clip_norm: f32,
    pub(crate) clip_value: f32,
    pub(crate) sparse_gradients: bool,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub(crate) schedule: WorkSchedule,
    /// Set once θ is on the parameter server and every worker registered.
    pub(crate) started: bool,
    pub(crate) workers: Vec<WorkerRecord>,
    /// Shards whose worker lost its lease and that no worker took over yet.
    pub(crate) orphans: Vec<u32>,
    /// Training examples used in each epoch, by index.
    pub(crate) epochs: Vec<EpochUsage>,
    /// The driver's validation and early-stopping progress.
    pub(crate) progress: DriverProgress,
    /// Pushes reported with completed ranges since the driver last took
    /// them.
    pub(crate) pushes: PushLog,
}

/// The use of one epoch's training examples.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochUsage {
    /// Examples in ranges reported complete.
    pub examples: u64,
    /// Examples in ranges handed to a worker whose lease then expired. They
    /// were handed out again; pushes the lost worker made from them before
    /// it went silent were applied too, so they may count twice.
    pub reassigned_examples: u64,
}

/// The coordinator's state file and the identity of its run.
#[derive(Debug)]
pub(crate) struct Persistence {
    pub(crate) path: std::path::PathBuf,
    pub(crate) identity: RunIdentity,
    /// Failed writes so far, for the warning.
    failures: std::sync::atomic::AtomicU64,
}

impl Persistence {
    pub(crate) fn new(path: std::path::PathBuf, identity: RunIdentity) -> Self {
        Self {
            path,
            identity,
            failures: Default::default(),
        }
    }
}

/// State shared by the service and the driver.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) info: RunInfo,
    inner: Mutex<Inner>,
    persistence: Option<Persistence>,
    /// Number of registered workers.
    pub(crate) registered: watch::Sender<usize>,
    /// Set once the last epoch is complete.
    pub(crate) epochs_done: watch::Sender<bool>,
    /// Number of workers that received a stop.
    pub(crate) stopped_workers: watch::Sender<usize>,
}

impl Shared {
    pub(crate) fn new(
        info: RunInfo,
        schedule: WorkSchedule,
        persistence: Option<Persistence>,
    ) -> Self {
        Self {
            info,
            inner: Mutex::new(Inner {
                schedule,
                started: false,
                workers: Vec::new(),
                orphans: Vec::new(),
                epochs: Vec::new(),
                progress: DriverProgress::default(),
                pushes: PushLog::default(),
            }),
            persistence,
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

    /// Saves the state to disk, synced when `sync` is set. A failed write
    /// is logged and training goes on, because the state on disk only
    /// matters if the coordinator dies.
    pub(crate) fn save(&self, inner: &Inner, sync: bool) -> Result<(), crate::CoordinatorError> {
        let Some(persistence) = &self.persistence else {
            return Ok(());
        };
        let state = SavedState {
            workers: inner
                .workers
                .iter()
                .map(|w| SavedWorker {
                    id: w.id,
                    name: w.name.clone(),
                    shards: w.shards.clone(),
                    leases_lost: w.leases_lost,
                    lease_lost: w.lease_lost,
                    minibatches: w.minibatches,
                    examples: w.examples,
                    pushes_acked: w.pushes_acked,
                    stop_sent: w.stop_sent,
                })
                .collect(),
            orphans: inner.orphans.clone(),
            epochs: inner.epochs.clone(),
            progress: inner.progress.clone(),
            ..SavedState::new(
                self.info.run_id.clone(),
                persistence.identity.clone(),
                inner.schedule.state(),
            )
        };
        let saved = state.save(&persistence.path, sync);
        if let Err(error) = &saved {
            let failures = persistence
                .failures
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1;
            // Logged on the 1st, 2nd, 4th, 8th ... failure.
            if failures.is_power_of_two() {
                warn!(%error, failures, "coordinator state not saved; a restarted coordinator would resume from an older state");
            }
        }
        saved
    }

    /// Saves the state without syncing, logging a failure.
    fn save_quietly(&self, inner: &Inner) {
        let _ = self.save(inner, false);
    }

    /// Puts the schedule, the workers and the driver's progress at a saved
    /// state, as a coordinator that resumes a run does. Every worker's lease
    /// starts afresh.
    pub(crate) fn restore(&self, saved: &SavedState) -> Result<(), String> {
        let mut inner = self.lock();
        inner.schedule.restore(&saved.schedule)?;
        let shards = self.info.shard_files.len() as u32;
        let now = Instant::now();
        let mut workers = Vec::with_capacity(saved.workers.len());
        for (index, worker) in saved.workers.iter().enumerate() {
            if worker.id as usize != index || worker.shards.iter().any(|&s| s >= shards) {
                return Err(format!(
                    "worker {} of the saved state does not fit this run's {shards} shards",
                    worker.id
                ));
            }
            workers.push(WorkerRecord {
                id: worker.id,
                name: worker.name.clone(),
                shards: worker.shards.clone(),
                leases_lost: worker.leases_lost,
                lease_lost: worker.lease_lost,
                minibatches: worker.minibatches,
                examples: worker.examples,
                pushes: 0,
                pushes_acked: worker.pushes_acked,
                // NOTE: the saved state has no staleness histograms, so after
                // a resume they count only the pushes reported since.
                staleness_histogram: BTreeMap::new(),
                stop_sent: worker.stop_sent,
                last_contact: now,
            });
        }
        let stopped = workers
            .iter()
            .filter(|w| w.stop_sent || w.lease_lost)
            .count();
        inner.workers = workers;
        inner.orphans.clone_from(&saved.orphans);
        inner.epochs.clone_from(&saved.epochs);
        inner.progress = saved.progress.clone();
        inner.started = inner.workers.len() >= self.info.expected_workers;
        self.registered.send_replace(inner.workers.len());
        self.stopped_workers.send_replace(stopped);
        Ok(())
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

    /// Takes the lease of every worker silent for longer than the lease
    /// timeout: its shards become orphans and their unfinished ranges go
    /// back to the pool. Returns the ids of the workers that lost it.
    pub(crate) fn expire_leases(&self) -> Vec<u32> {
        let Some(timeout) = self.info.lease_timeout else {
            return Vec::new();
        };
        let mut inner = self.lock();
        if inner.schedule.stop_reason().is_some() {
            return Vec::new();
        }
        let expired: Vec<u32> = inner
            .workers
            .iter()
            .filter(|w| !w.lease_lost && !w.stop_sent && w.last_contact.elapsed() > timeout)
            .map(|w| w.id)
            .collect();
        for &id in &expired {
            self.take_lease(&mut inner, id, "worker lease expired");
        }
        if !expired.is_empty() {
            self.save_quietly(&inner);
        }
        expired
    }

    /// Ends the lease of a worker that is shutting down, as an expiry
    /// would. Returns whether it held one; without leases (bounded and
    /// sync modes) nothing changes.
    pub(crate) fn deregister(&self, id: u32) -> Result<bool, Status> {
        let mut inner = self.lock();
        let worker = worker_mut(&mut inner, id)?;
        if self.info.lease_timeout.is_none()
            || worker.lease_lost
            || worker.stop_sent
            || inner.schedule.stop_reason().is_some()
        {
            return Ok(false);
        }
        self.take_lease(&mut inner, id, "worker deregistered");
        self.save_quietly(&inner);
        Ok(true)
    }

    /// Takes worker `id`'s lease: its shards become orphans and their
    /// unfinished ranges go back to the pool.
    fn take_lease(&self, inner: &mut Inner, id: u32, reason: &str) {
        // A worker that lost its lease counts as stopped, so the end of
        // the run does not wait for it.
        self.stopped_workers.send_modify(|count| *count += 1);
        let shards = std::mem::take(&mut inner.workers[id as usize].shards);
        inner.workers[id as usize].lease_lost = true;
        inner.workers[id as usize].leases_lost += 1;
        let epoch = inner.schedule.epoch();
        for shard in shards {
            let first = inner.schedule.first_undone(shard);
            let released = inner.schedule.release(shard);
            let range = WorkRange {
                epoch,
                shard,
                first_batch: first,
                batch_count: released,
            };
            let examples = self.range_examples(&range);
            usage(&mut inner.epochs, epoch).reassigned_examples += examples;
            inner.orphans.push(shard);
            warn!(
                worker_id = id,
                shard,
                minibatches_reassigned = released,
                "{reason}; its shard goes to the other workers"
            );
        }
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

/// Returns the record of a registered worker.
fn worker_mut(inner: &mut Inner, worker_id: u32) -> Result<&mut WorkerRecord, Status> {
    inner
        .workers
        .get_mut(worker_id as usize)
        .ok_or_else(|| unknown_worker(worker_id))
}

/// Returns the usage record of `epoch`, created on first use.
fn usage(epochs: &mut Vec<EpochUsage>, epoch: u32) -> &mut EpochUsage {
    let index = epoch as usize;
    if epochs.len() <= index {
        epochs.resize(index + 1, EpochUsage::default());
    }
    &mut epochs[index]
}

/// Hands out again the ranges of `worker_id`'s shards that are out but not
/// complete. A worker trains one range at a time and requests work only
/// when it has none, so such a range is one whose reply it never received,
/// as when the coordinator died before replying.
fn release_unfinished(inner: &mut Inner, worker_id: u32) {
    for shard in inner.workers[worker_id as usize].shards.clone() {
        let released = inner.schedule.release(shard);
        if released > 0 {
            info!(
                worker_id,
                shard,
                minibatches = released,
                "worker asked for work with a range still out; handing that range out again"
            );
        }
    }
}

/// Picks the next range for `worker_id`: from its own shards first, then
/// from a shard whose worker lost its lease, which it then takes over.
fn next_assignment(inner: &mut Inner, worker_id: u32) -> Assignment {
    let shards = inner.workers[worker_id as usize].shards.clone();
    for shard in shards {
        match inner.schedule.next_work(shard) {
            Assignment::Wait => {}
            other => return other,
        }
    }
    while let Some(shard) = inner.orphans.pop() {
        inner.workers[worker_id as usize].shards.push(shard);
        info!(worker_id, shard, "worker takes over an orphaned shard");
        if let assignment @ (Assignment::Work(_) | Assignment::Stop(_)) =
            inner.schedule.next_work(shard)
        {
            return assignment;
        }
    }
    inner.schedule.next_work(u32::MAX)
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
        let id = if id < info.expected_workers {
            let id = id as u32;
            inner.workers.push(WorkerRecord {
                id,
                name: name.clone(),
                shards: vec![id],
                leases_lost: 0,
                lease_lost: false,
                minibatches: 0,
                examples: 0,
                pushes: 0,
                pushes_acked: 0,
                staleness_histogram: BTreeMap::new(),
                stop_sent: false,
                last_contact: Instant::now(),
            });
            id
        } else if let Some(record) = inner.workers.iter_mut().find(|w| w.lease_lost) {
            // A worker that lost its lease, or a new one in its place, takes
            // the slot. It picks up orphaned shards at its next work request.
            record.lease_lost = false;
            self.shared
                .stopped_workers
                .send_modify(|count| *count = count.saturating_sub(1));
            record.name.clone_from(&name);
            record.last_contact = Instant::now();
            info!(worker_id = record.id, name = %name, "worker registered again after its lease expired");
            record.id
        } else {
            return Err(Status::resource_exhausted(format!(
                "the run already has all {} workers; start the coordinator with a larger --workers",
                info.expected_workers
            )));
        };
        let registered = inner.workers.len();
        // Published under the lock: two registrations racing could
        // otherwise publish their counts out of order and leave a stale one.
        self.shared.registered.send_replace(registered);
        self.shared.save_quietly(&inner);
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
            lease_timeout_ms: info
                .lease_timeout
                .map_or(0, |timeout| timeout.as_millis() as u64),
            clip_norm: info.clip_norm,
            clip_value: info.clip_value,
            sparse_gradients: info.sparse_gradients,
        }))
    }

    async fn next_work(
        &self,
        request: Request<NextWorkRequest>,
    ) -> Result<Response<NextWorkReply>, Status> {
        let worker_id = request.into_inner().worker_id;
        let mut inner = self.shared.lock();
        let worker = worker_mut(&mut inner, worker_id)?;
        if worker.lease_lost {
            return Ok(Response::new(NextWorkReply {
                action: Some(next_work_reply::Action::LeaseLost(true)),
            }));
        }
        worker.last_contact = Instant::now();

        let action = if !inner.started && inner.schedule.stop_reason().is_none() {
            next_work_reply::Action::WaitMs(WAIT_MS)
        } else {
            release_unfinished(&mut inner, worker_id);
            match next_assignment(&mut inner, worker_id) {
                Assignment::Work(range) => {
                    self.shared.save_quietly(&inner);
                    next_work_reply::Action::Work(range_to_proto(range))
                }
                Assignment::Wait => next_work_reply::Action::WaitMs(WAIT_MS),
                Assignment::Stop(reason) => {
                    self.shared.record_stop_sent(&mut inner, worker_id);
                    self.shared.save_quietly(&inner);
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
        let worker = worker_mut(&mut inner, request.worker_id)?;
        if worker.lease_lost {
            info!(
                worker_id = request.worker_id,
                shard = range.shard,
                "completion ignored: the worker's lease expired and its range went to others"
            );
            return Ok(Response::new(CompleteWorkReply {
                lease_lost: true,
                ..Default::default()
            }));
        }
        worker.last_contact = Instant::now();
        if !worker.shards.contains(&range.shard) {
            return Err(Status::permission_denied(format!(
                "worker {} reported shard {}, but it trains on shards {:?}",
                request.worker_id, range.shard, worker.shards
            )));
        }

        let progress = match inner.schedule.complete(range) {
            Ok(progress) => progress,
            Err(error) => {
                warn!(worker_id = request.worker_id, %error, "completion rejected");
                return Err(error.into());
            }
        };
        if let Some(worker) = inner.workers.get_mut(request.worker_id as usize) {
            worker.pushes_acked = worker.pushes_acked.max(request.pushes_acked);
        }
        if progress != Progress::AlreadyComplete {
            let examples = self.shared.range_examples(&range);
            usage(&mut inner.epochs, range.epoch).examples += examples;
            if let Some(worker) = inner.workers.get_mut(request.worker_id as usize) {
                worker.minibatches += u64::from(range.batch_count);
                worker.examples += examples;
                for push in &request.pushes {
                    *worker
                        .staleness_histogram
                        .entry(push.staleness)
                        .or_default() += 1;
                }
            }
            // A range reported again carries the same pushes, so they are
            // logged only the first time.
            inner.pushes.add(request.worker_id, request.pushes);
        }
        match progress {
            Progress::InEpoch => {}
            Progress::AlreadyComplete => {
                info!(
                    worker_id = request.worker_id,
                    shard = range.shard,
                    first_batch = range.first_batch,
                    "range reported complete again; it counts once"
                );
            }
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
        self.shared.save_quietly(&inner);
        Ok(Response::new(CompleteWorkReply {
            stop: stop_reason.is_some(),
            stop_reason: stop_reason.unwrap_or_default(),
            lease_lost: false,
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatReply>, Status> {
        let worker_id = request.into_inner().worker_id;
        let mut inner = self.shared.lock();
        let worker = worker_mut(&mut inner, worker_id)?;
        if !worker.lease_lost {
            worker.last_contact = Instant::now();
        }
        Ok(Response::new(HeartbeatReply {
            lease_lost: worker.lease_lost,
        }))
    }

    async fn deregister(
        &self,
        request: Request<DeregisterRequest>,
    ) -> Result<Response<DeregisterReply>, Status> {
        let worker_id = request.into_inner().worker_id;
        if !self.shared.deregister(worker_id)? {
            info!(worker_id, "worker deregistered after its lease ended");
        }
        Ok(Response::new(DeregisterReply {}))
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
