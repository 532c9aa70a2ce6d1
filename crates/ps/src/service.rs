//! The gRPC face of the parameter server.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use downpour_proto::auth::{ClusterToken, RequireToken};
use downpour_proto::transport::{MAX_MESSAGE_BYTES, health_service, incoming, server_builder};
use downpour_proto::v1::parameter_server_server::{ParameterServer, ParameterServerServer};
use downpour_proto::v1::{
    ConsistencyMode, FinishReply, FinishRequest, GradientEncoding, InitReply, InitRequest,
    PullReply, PullRequest, PushReply, PushRequest, StopTrainingReply, StopTrainingRequest,
};
use downpour_proto::{decode_bf16s_into, decode_f32s, decode_f32s_into, encode_f32s};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::consistency::{Compensation, Consistency, StepClock};
use crate::metrics::{PsMetrics, Rejection, StoreReading};
use crate::optimizer::SgdConfig;
use crate::store::{Accepted, CheckpointError, ParamStore, Push, PushTotals, StoreError};

/// Shared state behind the service: the store, once initialised, and a
/// reusable buffer for decoding gradients.
#[derive(Debug, Default)]
struct State {
    store: Option<ParamStore>,
    gradient: Vec<f32>,
    /// θ₀ arriving in pieces, before the store exists.
    initial: Option<Pieces>,
    /// Gradients arriving in pieces, per worker.
    pieces: HashMap<u32, Pieces>,
    /// Sparse gradients arriving in pieces, per worker.
    sparse_pieces: HashMap<u32, SparsePieces>,
    /// The positions and values of the sparse push being applied.
    sparse_indices: Vec<u32>,
    sparse_values: Vec<f32>,
}

/// A sparse gradient that arrives in pieces, in order.
#[derive(Debug, Default)]
struct SparsePieces {
    /// Push sequence number the pieces belong to.
    sequence: u64,
    indices: Vec<u32>,
    values: Vec<f32>,
}

/// Values that arrive in pieces, in order.
#[derive(Debug, Default)]
struct Pieces {
    /// Run the pieces belong to (θ₀ only).
    run_id: String,
    /// Push sequence number the pieces belong to (gradients only).
    sequence: u64,
    values: Vec<f32>,
    /// Values received so far; 0 when nothing is under way.
    filled: usize,
}

impl Pieces {
    /// Checks that a piece of `len` values at `offset` of message
    /// `sequence` continues the values so far and fits, and returns where
    /// it goes. Nothing changes until [`Pieces::commit`].
    fn slot(&mut self, offset: u64, len: usize, sequence: u64) -> Result<Range<usize>, Status> {
        if len == 0 {
            return Err(Status::invalid_argument("piece holds no values"));
        }
        let start = if offset == 0 {
            0
        } else if self.filled == 0 || sequence != self.sequence {
            return Err(Status::failed_precondition(format!(
                "piece at value {offset} continues nothing under way; start at offset 0"
            )));
        } else if offset != self.filled as u64 {
            return Err(Status::failed_precondition(format!(
                "piece starts at value {offset}, but the next expected value is {}; send pieces in order",
                self.filled
            )));
        } else {
            self.filled
        };
        let end = start + len;
        if end > self.values.len() {
            return Err(Status::invalid_argument(format!(
                "piece of {len} values at {offset} runs past the {} values of the range",
                self.values.len()
            )));
        }
        if offset == 0 {
            self.sequence = sequence;
        }
        Ok(start..end)
    }

    /// Records that the values up to `end` arrived.
    fn commit(&mut self, end: usize) {
        self.filled = end;
    }

    /// Returns whether every value arrived; if so, the next piece starts
    /// afresh.
    fn take_complete(&mut self) -> bool {
        let complete = self.filled == self.values.len();
        if complete {
            self.filled = 0;
        }
        complete
    }
}

/// The file and the interval of a parameter server's checkpoints.
#[derive(Debug, Clone)]
pub struct Checkpointing {
    /// The checkpoint file, replaced atomically on every write.
    pub path: PathBuf,
    /// Updates between two checkpoints.
    pub every_updates: u64,
    /// Maximum time between two checkpoints while updates arrive. `None`
    /// counts updates only.
    pub every: Option<std::time::Duration>,
}

/// The checkpoint policy and the state of the background writer.
#[derive(Debug)]
struct CheckpointWriter {
    settings: Checkpointing,
    /// Version of the last checkpoint started.
    last_version: AtomicU64,
    /// When the last checkpoint started.
    last_time: Mutex<std::time::Instant>,
    /// Held while a checkpoint is written, so that writes never overlap.
    busy: Arc<tokio::sync::Mutex<()>>,
    /// Per worker, the highest sequence number the last written checkpoint
    /// holds.
    durable: Arc<Mutex<HashMap<u32, u64>>>,
}

/// A checkpoint that `--restore` cannot use.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{}: cannot read the checkpoint: {error}; start without --restore to begin a new run", path.display())]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{}: {error}; remove it or start without --restore", path.display())]
    Invalid {
        path: PathBuf,
        error: CheckpointError,
    },
}

/// The `ParameterServer` gRPC service.
#[derive(Debug, Clone)]
pub struct ParameterServerService {
    state: Arc<Mutex<State>>,
    version: watch::Sender<VersionState>,
    finished: Arc<Notify>,
    checkpoint: Option<Arc<CheckpointWriter>>,
    metrics: PsMetrics,
}

/// The state that long-polling pulls and held pushes wait on.
#[derive(Debug, Clone, Copy, Default)]
struct VersionState {
    version: u64,
    /// Steps done by the slowest worker, in bounded mode.
    min_done: u64,
    /// Training stopped: nothing waits any more.
    stopped: bool,
    finished: bool,
}

impl Default for ParameterServerService {
    fn default() -> Self {
        Self::new()
    }
}

impl ParameterServerService {
    /// Creates an uninitialised server; the coordinator's `Init` sets θ.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            version: watch::Sender::new(VersionState::default()),
            finished: Arc::new(Notify::new()),
            checkpoint: None,
            metrics: PsMetrics::unregistered(),
        }
    }

    /// Registers this server's metrics in `registry`, each labelled with
    /// `node`: push totals, rejected pushes by reason and RPC latencies.
    ///
    /// # Errors
    ///
    /// Fails when `registry` already contains metrics of a node named `node`.
    pub fn with_metrics(
        mut self,
        registry: &downpour_metrics::prometheus::Registry,
        node: &str,
    ) -> downpour_metrics::prometheus::Result<Self> {
        self.metrics = PsMetrics::new(Some(registry), node)?;
        crate::metrics::register_totals(registry, node, self.clone())?;
        Ok(self)
    }

    /// Reads the push totals and the state of θ for a metrics scrape.
    pub(crate) fn read_store(&self) -> StoreReading {
        let state = self.lock();
        state
            .store
            .as_ref()
            .map_or_else(StoreReading::default, |store| StoreReading {
                totals: store.totals().clone(),
                version: store.version(),
                parameters: store.params().len(),
                stopped: store.is_stopped(),
            })
    }

    /// Writes a checkpoint every `settings.every_updates` updates, after
    /// training stops and when the server shuts down.
    pub fn with_checkpointing(mut self, settings: Checkpointing) -> Self {
        self.checkpoint = Some(Arc::new(CheckpointWriter {
            settings,
            last_version: AtomicU64::new(0),
            last_time: Mutex::new(std::time::Instant::now()),
            busy: Arc::default(),
            durable: Arc::default(),
        }));
        self
    }

    /// Loads θ, the optimizer state and the push bookkeeping from the
    /// checkpoint at `path`, so that the server resumes at its version.
    ///
    /// # Errors
    ///
    /// Fails when the file cannot be read or is not a valid checkpoint.
    pub fn restore(self, path: &Path) -> Result<Self, RestoreError> {
        let bytes = std::fs::read(path).map_err(|error| RestoreError::Read {
            path: path.to_owned(),
            error,
        })?;
        let store =
            ParamStore::decode_checkpoint(&bytes).map_err(|error| RestoreError::Invalid {
                path: path.to_owned(),
                error,
            })?;
        let version = store.version();
        info!(
            path = %path.display(),
            run_id = store.run_id(),
            version,
            parameters = store.params().len(),
            "parameter server restored from its checkpoint"
        );
        {
            let mut state = self.lock();
            state.gradient = vec![0.0; store.params().len()];
            state.store = Some(store);
        }
        if let Some(writer) = &self.checkpoint {
            writer.last_version.store(version, Ordering::Relaxed);
            let sequences = self
                .lock()
                .store
                .as_ref()
                .map_or_else(Vec::new, ParamStore::checkpoint_sequences);
            record_durable(&writer.durable, &sequences);
        }
        let min_done = self.lock().store.as_ref().map_or(0, ParamStore::min_done);
        self.version.send_modify(|state| {
            state.version = version;
            state.min_done = min_done;
        });
        Ok(self)
    }

    /// Starts a checkpoint in the background when enough updates passed
    /// since the last one and no write is under way.
    fn maybe_checkpoint(&self, version: u64) {
        let Some(writer) = &self.checkpoint else {
            return;
        };
        let last_version = writer.last_version.load(Ordering::Relaxed);
        let updates_due =
            version >= last_version.saturating_add(writer.settings.every_updates.max(1));
        let time_due = version > last_version
            && writer.settings.every.is_some_and(|every| {
                writer
                    .last_time
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .elapsed()
                    >= every
            });
        if !(updates_due || time_due) {
            return;
        }
        let Ok(guard) = writer.busy.clone().try_lock_owned() else {
            return;
        };
        let Some((bytes, version, sequences)) = self.encode_checkpoint() else {
            return;
        };
        writer.last_version.store(version, Ordering::Relaxed);
        *writer
            .last_time
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = std::time::Instant::now();
        let path = writer.settings.path.clone();
        let durable = writer.durable.clone();
        tokio::task::spawn_blocking(move || {
            let _writing = guard;
            if write_checkpoint(&path, &bytes, version) {
                record_durable(&durable, &sequences);
            }
        });
    }

    /// Writes a checkpoint now, after any write under way.
    async fn checkpoint_now(&self) {
        let Some(writer) = &self.checkpoint else {
            return;
        };
        let guard = writer.busy.clone().lock_owned().await;
        let Some((bytes, version, sequences)) = self.encode_checkpoint() else {
            return;
        };
        writer.last_version.store(version, Ordering::Relaxed);
        let path = writer.settings.path.clone();
        let durable = writer.durable.clone();
        let written = tokio::task::spawn_blocking(move || {
            let _writing = guard;
            if write_checkpoint(&path, &bytes, version) {
                record_durable(&durable, &sequences);
            }
        });
        if let Err(error) = written.await {
            warn!(%error, "checkpoint task failed");
        }
    }

    /// Encodes a checkpoint of the current state, and returns it with its
    /// version and the sequence numbers it holds.
    fn encode_checkpoint(&self) -> Option<(Vec<u8>, u64, SequenceRecords)> {
        let state = self.lock();
        let store = state.store.as_ref()?;
        Some((
            store.encode_checkpoint(),
            store.version(),
            store.checkpoint_sequences(),
        ))
    }

    /// Returns OUT_OF_RANGE for a push whose sequence number skips past the
    /// next one expected from its worker, on an async server with
    /// checkpoints. Such a gap means this server restarted from a
    /// checkpoint that lacks pushes it had acknowledged, and the worker
    /// still holds them.
    fn missing_pushes(&self, store: &ParamStore, request: &PushRequest) -> Option<Status> {
        if self.checkpoint.is_none()
            || store.consistency() != Consistency::Async
            || request.resend
            || request.sequence == 0
        {
            return None;
        }
        let applied = store.applied_sequence(request.worker_id);
        (request.sequence > applied + 1).then(|| {
            Status::out_of_range(format!(
                "push {} of worker {} skips past push {}, which this server does not hold, as after a restart from a checkpoint; send the missing pushes first",
                request.sequence,
                request.worker_id,
                applied + 1
            ))
        })
    }

    /// Returns the highest sequence number of `worker_id` that a restart
    /// would keep, for a push numbered `sequence`. Only async servers with
    /// checkpoints ask workers to keep pushes: a replayed push in bounded or
    /// sync mode would land in the wrong step.
    fn durable_sequence(&self, worker_id: u32, sequence: u64, consistency: Consistency) -> u64 {
        match &self.checkpoint {
            Some(writer) if consistency == Consistency::Async => writer
                .durable
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .get(&worker_id)
                .copied()
                .unwrap_or(0),
            _ => sequence,
        }
    }

    /// Resolves once a client has called `Finish`.
    pub async fn finished(&self) {
        self.finished.notified().await;
    }

    /// Waits until the watched state satisfies `ready`.
    async fn wait_for(
        &self,
        ready: impl FnMut(&VersionState) -> bool,
    ) -> Result<VersionState, Status> {
        let mut watched = self.version.subscribe();
        let state = *watched
            .wait_for(ready)
            .await
            .map_err(|_| Status::unavailable("parameter server is shutting down"))?;
        Ok(state)
    }

    /// Builds the reply to a push that came in after training stopped.
    fn stopped_reply(&self, request: &PushRequest) -> Result<PushReply, Status> {
        let state = self.lock();
        let store = state.store.as_ref().ok_or_else(not_initialised)?;
        Ok(PushReply {
            version: store.version(),
            staleness: 0,
            params: if request.return_params {
                encode_f32s(store.params())
            } else {
                Default::default()
            },
            training_stopped: true,
            applied: false,
            // A push after the stop is never replayed.
            durable_sequence: request.sequence,
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the store; the
        // state itself stays consistent because every update validates first.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::FutureVersion { .. } => Status::out_of_range(error.to_string()),
            StoreError::Diverged { .. }
            | StoreError::WrongStep { .. }
            | StoreError::DuplicatePush { .. } => Status::failed_precondition(error.to_string()),
            _ => Status::invalid_argument(error.to_string()),
        }
    }
}

fn not_initialised() -> Status {
    Status::failed_precondition("parameter server has no parameters yet: Init was not called")
}

fn totals_to_proto(totals: &PushTotals) -> downpour_proto::v1::PushTotals {
    downpour_proto::v1::PushTotals {
        examples: totals.examples,
        loss_sum: totals.loss_sum,
        pushes: totals.pushes,
        staleness_sum: totals.staleness_sum,
        max_staleness: totals.max_staleness,
        pushes_by_worker: totals.pushes_by_worker.clone().into_iter().collect(),
        duplicates: totals.duplicates,
        staleness_counts: totals.staleness_counts.clone().into_iter().collect(),
        updates: totals.updates,
    }
}

/// Builds the store an `Init` request describes, with θ = `params`.
fn new_store(request: &InitRequest, params: Vec<f32>) -> Result<ParamStore, Status> {
    let optimizer = request
        .optimizer
        .ok_or_else(|| Status::invalid_argument("optimizer settings are missing"))?;
    let sgd = SgdConfig {
        learning_rate: optimizer.learning_rate,
        momentum: optimizer.momentum,
        weight_decay: optimizer.weight_decay,
        warmup_updates: optimizer.warmup_updates,
    };
    let consistency = match ConsistencyMode::try_from(request.consistency) {
        Ok(ConsistencyMode::Async) => Consistency::Async,
        Ok(ConsistencyMode::Bounded) => Consistency::Bounded {
            bound: request.staleness_bound,
        },
        Ok(ConsistencyMode::Sync) => Consistency::Sync,
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "consistency: unknown mode {}",
                request.consistency
            )));
        }
    };
    let clock = if request.worker_batches.is_empty() {
        None
    } else {
        Some(
            StepClock::new(request.worker_batches.clone(), request.push_every.max(1)).ok_or_else(
                || Status::invalid_argument("worker_batches: every worker needs a minibatch"),
            )?,
        )
    };
    let compensation = request
        .compensation
        .map(|c| Compensation {
            scale_by_staleness: c.scale_by_staleness,
            dc_lambda: c.dc_lambda,
        })
        .unwrap_or_default();
    Ok(ParamStore::new(request.run_id.clone(), params, sgd)?
        .with_consistency(consistency, clock)?
        .with_compensation(compensation)?)
}

/// Views the gradient of a whole f32 push in place, which saves a copy. It
/// works when the bytes happen to be aligned for f32 on a little-endian
/// machine.
fn f32s_in_place(request: &PushRequest) -> Option<&[f32]> {
    let f32_encoded = GradientEncoding::try_from(request.encoding) == Ok(GradientEncoding::F32);
    if !(cfg!(target_endian = "little") && f32_encoded) {
        return None;
    }
    bytemuck::try_cast_slice(&request.gradient).ok()
}

/// Writes checkpoint `bytes` to `path` through a temporary file, fsync and
/// rename, so that the file at `path` is always a whole checkpoint.
/// Per worker: the highest applied sequence number and the version its
/// step completes at.
type SequenceRecords = Vec<(u32, u64, u64)>;

/// Returns whether the file was written.
fn write_checkpoint(path: &Path, bytes: &[u8], version: u64) -> bool {
    match downpour_data::atomic::write_atomic(path, bytes) {
        Ok(()) => {
            info!(path = %path.display(), version, bytes = bytes.len(), "checkpoint written");
            true
        }
        Err(error) => {
            warn!(path = %path.display(), version, %error, "checkpoint not written");
            false
        }
    }
}

/// Records the sequence numbers of a written checkpoint as durable.
fn record_durable(durable: &Mutex<HashMap<u32, u64>>, sequences: &[(u32, u64, u64)]) {
    let mut durable = durable
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    for &(worker, sequence, _) in sequences {
        durable.insert(worker, sequence);
    }
}

/// Number of values in a pushed gradient or piece.
fn gradient_values(request: &PushRequest) -> usize {
    match GradientEncoding::try_from(request.encoding) {
        Ok(GradientEncoding::Bf16) => request.gradient.len() / 2,
        _ => request.gradient.len() / 4,
    }
}

/// Decodes a pushed gradient into `out` in its declared encoding.
fn decode_gradient(request: &PushRequest, out: &mut [f32]) -> Result<(), Status> {
    let decoded = match GradientEncoding::try_from(request.encoding) {
        Ok(GradientEncoding::F32) => decode_f32s_into(&request.gradient, out),
        Ok(GradientEncoding::Bf16) => decode_bf16s_into(&request.gradient, out),
        Err(_) => {
            return Err(Status::invalid_argument(format!(
                "encoding: unknown gradient encoding {}",
                request.encoding
            )));
        }
    };
    decoded.map_err(|error| Status::invalid_argument(format!("gradient: {error}")))
}

/// Decodes the little-endian u32 positions of a sparse push into `out`.
fn decode_indices(bytes: &[u8], out: &mut Vec<u32>) -> Result<(), Status> {
    if !bytes.len().is_multiple_of(4) {
        return Err(Status::invalid_argument(format!(
            "indices: {} bytes is not a whole number of u32 values",
            bytes.len()
        )));
    }
    out.clear();
    out.extend(
        bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
    );
    Ok(())
}

/// Decodes a sparse push, or one piece of it, into `indices` and `values`.
/// Returns false while more pieces are to come. `range_len` is the number
/// of values the server holds, which no sparse gradient can list more of.
/// The store checks the order and range of the positions when it applies
/// the push.
fn receive_sparse(
    pieces: &mut HashMap<u32, SparsePieces>,
    request: &PushRequest,
    range_len: usize,
    indices: &mut Vec<u32>,
    values: &mut Vec<f32>,
) -> Result<bool, Status> {
    decode_indices(&request.indices, indices)?;
    values.clear();
    values.resize(gradient_values(request), 0.0);
    decode_gradient(request, values)?;

    if indices.len() != values.len() {
        return Err(Status::invalid_argument(format!(
            "sparse push holds {} indices but {} values",
            indices.len(),
            values.len()
        )));
    }
    if !request.more && request.offset == 0 {
        return Ok(true);
    }
    if indices.is_empty() {
        return Err(Status::invalid_argument("piece holds no values"));
    }

    let assembled = pieces.entry(request.worker_id).or_default();
    let filled = assembled.indices.len() as u64;
    if request.offset != 0 && (filled == 0 || request.sequence != assembled.sequence) {
        return Err(Status::failed_precondition(format!(
            "piece at entry {} continues nothing under way; start at offset 0",
            request.offset
        )));
    }
    if request.offset != 0 && request.offset != filled {
        return Err(Status::failed_precondition(format!(
            "piece starts at entry {}, but the next expected entry is {filled}; send pieces in order",
            request.offset
        )));
    }
    let kept = if request.offset == 0 {
        0
    } else {
        filled as usize
    };
    if kept + indices.len() > range_len {
        return Err(Status::invalid_argument(format!(
            "sparse pieces list more than the {range_len} values of the range"
        )));
    }

    if request.offset == 0 {
        assembled.sequence = request.sequence;
        assembled.indices.clear();
        assembled.values.clear();
    }
    assembled.indices.extend_from_slice(indices);
    assembled.values.extend_from_slice(values);
    if request.more {
        return Ok(false);
    }
    std::mem::swap(&mut assembled.indices, indices);
    std::mem::swap(&mut assembled.values, values);
    assembled.indices.clear();
    assembled.values.clear();
    Ok(true)
}

#[tonic::async_trait]
impl ParameterServer for ParameterServerService {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        if let Some(store) = &state.store {
            if store.run_id() == request.run_id {
                return Ok(Response::new(InitReply {
                    version: store.version(),
                }));
            }
            return Err(Status::already_exists(format!(
                "parameter server already serves run {}; start a new server for run {}",
                store.run_id(),
                request.run_id
            )));
        }

        let params = if request.total_params == 0 {
            decode_f32s(&request.params)
                .map_err(|e| Status::invalid_argument(format!("params: {e}")))?
        } else {
            let total = usize::try_from(request.total_params).map_err(|_| {
                Status::invalid_argument("total_params: larger than this machine can address")
            })?;
            let initial = state.initial.get_or_insert_with(Pieces::default);
            if request.offset == 0 {
                initial.run_id.clone_from(&request.run_id);
                initial.values = Vec::new();
                initial.values.try_reserve_exact(total).map_err(|_| {
                    Status::resource_exhausted(format!("no memory for {total} parameters"))
                })?;
                initial.values.resize(total, 0.0);
            } else if initial.run_id != request.run_id || initial.values.len() != total {
                return Err(Status::failed_precondition(
                    "piece of θ₀ for another run or size; start again from offset 0",
                ));
            }
            let len = request.params.len() / 4;
            let slot = initial.slot(request.offset, len, 0)?;
            decode_f32s_into(&request.params, &mut initial.values[slot.clone()])
                .map_err(|e| Status::invalid_argument(format!("params: {e}")))?;
            initial.commit(slot.end);
            if !initial.take_complete() {
                return Ok(Response::new(InitReply { version: 0 }));
            }
            state.initial.take().map(|p| p.values).unwrap_or_default()
        };
        let store = new_store(&request, params)?;
        let optimizer = request.optimizer.unwrap_or_default();
        info!(
            run_id = %request.run_id,
            parameters = store.params().len(),
            learning_rate = %optimizer.learning_rate,
            momentum = %optimizer.momentum,
            weight_decay = %optimizer.weight_decay,
            consistency = %store.consistency(),
            workers = request.worker_batches.len(),
            "parameter server initialised"
        );
        state.gradient = vec![0.0; store.params().len()];
        state.store = Some(store);
        Ok(Response::new(InitReply { version: 0 }))
    }

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<PullReply>, Status> {
        let request = request.into_inner();
        let min_version = request.min_version;
        if min_version > 0 {
            let reached = self
                .wait_for(|state| state.version >= min_version || state.stopped)
                .await?;
            if reached.finished {
                return Err(Status::unavailable("parameter server finished its run"));
            }
        }

        let mut state = self.lock();
        let store = state.store.as_mut().ok_or_else(not_initialised)?;
        if let Some(worker_id) = request.worker_id {
            store.check_worker(worker_id)?;
        }
        let len = store.params().len() as u64;
        let start = request.offset.min(len);
        let end = match request.length {
            0 => len,
            length => start.saturating_add(length).min(len),
        };
        if request.offset > len {
            return Err(Status::out_of_range(format!(
                "offset {} is past the {len} values this server holds",
                request.offset
            )));
        }
        // Delay compensation needs the whole θ the worker holds; a worker
        // pulling in pieces announces itself on the first piece.
        if let Some(worker_id) = request.worker_id
            && start == 0
        {
            store.record_sent(worker_id);
        }
        Ok(Response::new(PullReply {
            version: store.version(),
            params: encode_f32s(&store.params()[start as usize..end as usize]),
            totals: Some(totals_to_proto(store.totals())),
            applied_sequence: request
                .worker_id
                .map_or(0, |worker_id| store.applied_sequence(worker_id)),
        }))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        let (accepted, consistency) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            let Some(store) = state.store.as_mut() else {
                self.metrics.reject(Rejection::NotInitialised);
                return Err(not_initialised());
            };
            if request.sparse {
                if request.more || request.offset > 0 {
                    // One assembly buffer per worker: reject ids outside
                    // the run before allocating one.
                    if let Err(error) = store.check_worker(request.worker_id) {
                        warn!(worker_id = request.worker_id, %error, "push rejected");
                        self.metrics.reject(Rejection::from(&error));
                        return Err(error.into());
                    }
                }
                let received = receive_sparse(
                    &mut state.sparse_pieces,
                    &request,
                    store.params().len(),
                    &mut state.sparse_indices,
                    &mut state.sparse_values,
                );
                match received {
                    Ok(true) => {}
                    Ok(false) => {
                        return Ok(Response::new(PushReply {
                            version: store.version(),
                            ..Default::default()
                        }));
                    }
                    Err(status) => {
                        warn!(worker_id = request.worker_id, error = %status.message(), "sparse push rejected");
                        self.metrics.reject(Rejection::Malformed);
                        return Err(status);
                    }
                }
            } else if request.more || request.offset > 0 {
                // One assembly buffer per worker: refuse ids outside the run
                // before allocating one.
                if let Err(error) = store.check_worker(request.worker_id) {
                    warn!(worker_id = request.worker_id, %error, "push rejected");
                    self.metrics.reject(Rejection::from(&error));
                    return Err(error.into());
                }
                let pieces = state.pieces.entry(request.worker_id).or_default();
                pieces.values.resize(store.params().len(), 0.0);
                let received = pieces
                    .slot(request.offset, gradient_values(&request), request.sequence)
                    .and_then(|slot| {
                        decode_gradient(&request, &mut pieces.values[slot.clone()])?;
                        pieces.commit(slot.end);
                        Ok(())
                    });
                if let Err(status) = received {
                    warn!(worker_id = request.worker_id, error = %status.message(), "push piece rejected");
                    self.metrics.reject(Rejection::Malformed);
                    return Err(status);
                }
                if request.more {
                    return Ok(Response::new(PushReply {
                        version: store.version(),
                        ..Default::default()
                    }));
                }
                if !pieces.take_complete() {
                    self.metrics.reject(Rejection::Malformed);
                    return Err(Status::invalid_argument(format!(
                        "the last piece ends at value {}, but the range holds {}",
                        pieces.filled,
                        pieces.values.len()
                    )));
                }
                std::mem::swap(&mut pieces.values, &mut state.gradient);
            }
            let in_place = (!request.sparse && !request.more && request.offset == 0)
                .then(|| f32s_in_place(&request))
                .flatten();
            if !request.sparse
                && in_place.is_none()
                && request.offset == 0
                && let Err(status) = decode_gradient(&request, &mut state.gradient)
            {
                warn!(worker_id = request.worker_id, error = %status.message(), "push rejected");
                self.metrics
                    .reject(Rejection::of_undecodable(&request, state.gradient.len()));
                return Err(status);
            }
            if let Some(status) = self.missing_pushes(store, &request) {
                warn!(worker_id = request.worker_id, error = %status.message(), "push rejected");
                return Err(status);
            }
            let (gradient, indices) = if request.sparse {
                (&state.sparse_values[..], Some(&state.sparse_indices[..]))
            } else {
                (in_place.unwrap_or(&state.gradient), None)
            };
            let push = Push {
                worker_id: request.worker_id,
                sequence: request.sequence,
                version: request.version,
                gradient,
                indices,
                examples: request.examples,
                loss: request.loss,
                epoch: request.epoch,
                batch: request.batch,
            };
            let accepted = store.apply_push(push);
            let consistency = store.consistency();
            let (version, min_done) = (store.version(), store.min_done());
            self.version.send_if_modified(|watched| {
                let changed = watched.version != version || watched.min_done != min_done;
                watched.version = version;
                watched.min_done = min_done;
                changed
            });
            drop(guard);
            self.maybe_checkpoint(version);
            match accepted {
                Ok(accepted) => (accepted, consistency),
                Err(error) => {
                    warn!(worker_id = request.worker_id, %error, "push rejected");
                    self.metrics.reject(Rejection::from(&error));
                    return Err(error.into());
                }
            }
        };

        let (staleness, waited) = match accepted {
            Accepted::Applied {
                staleness, done, ..
            } => {
                let waited = match consistency {
                    Consistency::Bounded { bound } => Some(
                        self.wait_for(|state| {
                            state.min_done.saturating_add(bound) >= done || state.stopped
                        })
                        .await?,
                    ),
                    _ => None,
                };
                (staleness, waited)
            }
            Accepted::Held {
                ready_at,
                step,
                staleness,
            } => {
                let waited = self
                    .wait_for(|state| state.version >= ready_at || state.stopped)
                    .await?;
                if waited.version <= step {
                    // Training stopped before the step was applied, and the
                    // held push was dropped.
                    self.metrics.reject(Rejection::TrainingStopped);
                    return Ok(Response::new(self.stopped_reply(&request)?));
                }
                (staleness, Some(waited))
            }
            Accepted::Stopped => {
                self.metrics.reject(Rejection::TrainingStopped);
                return Ok(Response::new(self.stopped_reply(&request)?));
            }
            Accepted::Duplicate { ready_at } => {
                info!(
                    worker_id = request.worker_id,
                    sequence = request.sequence,
                    "push acknowledged again without applying it: this sequence number was applied already"
                );
                let waited = self
                    .wait_for(|state| state.version >= ready_at || state.stopped)
                    .await?;
                (0, Some(waited))
            }
        };

        let durable_sequence =
            self.durable_sequence(request.worker_id, request.sequence, consistency);
        let mut state = self.lock();
        let store = state.store.as_mut().ok_or_else(not_initialised)?;
        let params = if request.return_params {
            store.record_sent(request.worker_id);
            encode_f32s(store.params())
        } else {
            Default::default()
        };
        Ok(Response::new(PushReply {
            version: store.version(),
            staleness,
            params,
            training_stopped: waited.is_some_and(|w| w.stopped) || store.is_stopped(),
            applied: true,
            durable_sequence,
        }))
    }

    async fn stop_training(
        &self,
        _request: Request<StopTrainingRequest>,
    ) -> Result<Response<StopTrainingReply>, Status> {
        let version = {
            let mut state = self.lock();
            let store = state.store.as_mut().ok_or_else(not_initialised)?;
            store.stop();
            store.version()
        };
        info!(version, "training stopped; θ is frozen");
        self.version.send_modify(|state| state.stopped = true);
        self.checkpoint_now().await;
        Ok(Response::new(StopTrainingReply { version }))
    }

    async fn finish(
        &self,
        _request: Request<FinishRequest>,
    ) -> Result<Response<FinishReply>, Status> {
        let version = {
            let mut state = self.lock();
            state.store.as_mut().map_or(0, |store| {
                store.stop();
                store.version()
            })
        };
        info!(version, "run finished; parameter server stopping");
        self.checkpoint_now().await;
        self.version.send_modify(|state| {
            state.finished = true;
            state.stopped = true;
        });
        self.finished.notify_one();
        Ok(Response::new(FinishReply { version }))
    }
}

/// Serves the parameter server on `listener` until a client calls `Finish`
/// or `shutdown` resolves. Every request must carry `token`.
///
/// # Errors
///
/// Returns the transport error when the server fails.
pub async fn serve(
    listener: TcpListener,
    token: ClusterToken,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_service(ParameterServerService::new(), listener, token, shutdown).await
}

/// Serves `service`, as [`serve`] does, and writes its last checkpoint
/// after the server stops when it has checkpointing on.
///
/// # Errors
///
/// Returns the transport error when the server fails.
pub async fn serve_service(
    service: ParameterServerService,
    listener: TcpListener,
    token: ClusterToken,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let finished = service.clone();
    let last = service.clone();
    let timer = service.metrics.rpc.clone();
    match listener.local_addr() {
        Ok(address) => info!(%address, "parameter server listening"),
        Err(error) => warn!(%error, "parameter server listening on an unknown address"),
    }

    let server = ParameterServerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let server = InterceptedService::new(server, RequireToken::new(&token, "parameter server"));
    let (_health_reporter, health) = health_service();
    let server = timer.wrap(server);
    let served = server_builder(&token)?
        .add_service(health)
        .add_service(server)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            tokio::select! {
                () = finished.finished() => {}
                () = shutdown => {}
            }
        })
        .await;
    last.checkpoint_now().await;
    served
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_fill_in_order() {
        let mut pieces = Pieces {
            values: vec![0.0; 5],
            ..Pieces::default()
        };

        let first = pieces.slot(0, 2, 7).unwrap();
        pieces.values[first.clone()].copy_from_slice(&[1.0, 2.0]);
        pieces.commit(first.end);
        assert!(!pieces.take_complete());
        let code = |result: Result<Range<usize>, Status>| result.unwrap_err().code();
        assert_eq!(code(pieces.slot(3, 2, 7)), tonic::Code::FailedPrecondition);
        assert_eq!(code(pieces.slot(2, 3, 8)), tonic::Code::FailedPrecondition);
        assert_eq!(code(pieces.slot(2, 4, 7)), tonic::Code::InvalidArgument);
        assert_eq!(code(pieces.slot(2, 0, 7)), tonic::Code::InvalidArgument);
        // A rejected piece leaves the expected offset where it was.
        let rest = pieces.slot(2, 3, 7).unwrap();
        pieces.values[rest.clone()].copy_from_slice(&[3.0, 4.0, 5.0]);
        pieces.commit(rest.end);
        assert!(pieces.take_complete());
        assert_eq!(pieces.values, [1.0, 2.0, 3.0, 4.0, 5.0]);

        // Once complete, only a piece at offset 0 starts the next gradient.
        assert_eq!(code(pieces.slot(5, 1, 7)), tonic::Code::FailedPrecondition);
        assert_eq!(pieces.slot(0, 1, 8).unwrap(), 0..1);
    }
}
