//! The worker's network loop.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use downpour_data::{Dataset, shard, shard_file};
use downpour_model::{Mlp, ModelDescription, SparseGradient};
use downpour_proto::auth::{AuthChannel, ClusterToken, authenticated};
use downpour_proto::transport::{DEFAULT_PIECE_VALUES, MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::coordinator_client::CoordinatorClient;
use downpour_proto::v1::{
    CompleteWorkRequest, DeregisterRequest, FetchShardRequest, GradientEncoding, HeartbeatRequest,
    NextWorkRequest, PushRecord, RegisterReply, RegisterRequest, WorkRange, next_work_reply,
};
use downpour_proto::{encode_bf16s_reusing, encode_f32s_reusing};
use tracing::{debug, info, warn};

use crate::clipping::Clipping;
use crate::error::WorkerError;
use crate::metrics::{WorkerMetrics, l2_norm};
use crate::ps_shards::{Gradient, ParameterServers, PushOutcome, retry_unreachable};
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
    /// The secret every request carries.
    pub token: ClusterToken,
}

/// Counts of the work a worker did, returned when the coordinator stops it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkerReport {
    pub worker_id: u32,
    pub minibatches: u64,
    pub examples: u64,
    /// Pushes the parameter servers accepted before training stopped.
    pub pushes: u64,
    pub stop_reason: String,
}

type Coordinator = CoordinatorClient<AuthChannel>;

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
    run_with_metrics(config, WorkerMetrics::unregistered(), shutdown).await
}

/// The coordinator client and worker id once the worker has registered,
/// for the deregistration at shutdown.
#[derive(Debug)]
struct Registration {
    coordinator: std::sync::OnceLock<Coordinator>,
    worker_id: Arc<AtomicU32>,
}

/// How long a worker that shuts down waits for the coordinator to confirm
/// its deregistration.
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(5);

async fn deregister(registration: &Registration) {
    let Some(coordinator) = registration.coordinator.get() else {
        return;
    };
    let worker_id = registration.worker_id.load(Ordering::Relaxed);
    let request = DeregisterRequest { worker_id };
    match tokio::time::timeout(DEREGISTER_TIMEOUT, coordinator.clone().deregister(request)).await {
        Ok(Ok(_)) => info!(worker_id, "deregistered from the coordinator"),
        Ok(Err(status)) => warn!(
            worker_id,
            code = ?status.code(),
            error = %status.message(),
            "deregistration failed; the coordinator takes the lease when it expires"
        ),
        Err(_) => warn!(
            worker_id,
            timeout_s = DEREGISTER_TIMEOUT.as_secs(),
            "deregistration timed out; the coordinator takes the lease when it expires"
        ),
    }
}

/// Runs a worker as [`run`] does, recording its work in `metrics`.
///
/// # Errors
///
/// Fails as [`run`] does.
pub async fn run_with_metrics(
    config: WorkerConfig,
    metrics: WorkerMetrics,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<WorkerReport, WorkerError> {
    let registration = Arc::new(Registration {
        coordinator: std::sync::OnceLock::new(),
        worker_id: Arc::new(AtomicU32::new(0)),
    });
    tokio::select! {
        report = work(config, metrics, registration.clone()) => report,
        () = shutdown => {
            // The minibatch in flight is abandoned; the coordinator hands
            // the unfinished work to the other workers.
            deregister(&registration).await;
            Err(WorkerError::Interrupted)
        }
    }
}

async fn work(
    config: WorkerConfig,
    metrics: WorkerMetrics,
    registered: Arc<Registration>,
) -> Result<WorkerReport, WorkerError> {
    let channel = connect_with_retry(
        "coordinator",
        &config.coordinator,
        config.connect_timeout,
        &config.token,
    )
    .await?;
    let mut coordinator = CoordinatorClient::new(authenticated(channel, &config.token))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let registration = metrics
        .rpc
        .time("Register", register(&coordinator, &config.name))
        .await?;
    let worker_id = registration.worker_id;
    let description = ModelDescription::from_json(&registration.model_json)?;
    let batch_size = registration.batch_size.max(1) as usize;
    let encoding = GradientEncoding::try_from(registration.push_encoding).map_err(|_| {
        WorkerError::Rpc {
            call: "Register",
            code: tonic::Code::Internal,
            message: format!(
                "the coordinator asks for gradient encoding {}, which this worker does not know; run the same Downpour version everywhere",
                registration.push_encoding
            ),
        }
    })?;
    let mut ps = ParameterServers::connect(
        &registration.ps_shards,
        config.ps.as_deref(),
        description.parameters,
        match registration.piece_values {
            0 => DEFAULT_PIECE_VALUES,
            values => usize::try_from(values).unwrap_or(usize::MAX),
        },
        config.connect_timeout,
        &config.token,
    )
    .await?;
    info!(
        worker_id,
        run_id = %registration.run_id,
        model = %description.spec,
        ps = %ps.addresses().join(","),
        push_every = registration.push_every,
        sparse_gradients = registration.sparse_gradients,
        fetch_every = %match registration.fetch_every {
            0 => "with each push".to_owned(),
            every => every.to_string(),
        },
        encoding = match encoding {
            GradientEncoding::F32 => "f32",
            GradientEncoding::Bf16 => "bf16",
        },
        "registered with the coordinator"
    );

    let model = Mlp::new(&description)?;
    if registration.sparse_gradients && !model.supports_sparse() {
        return Err(WorkerError::SparseGradients(format!(
            "the coordinator requests them, but model {} does not support them; run the same Downpour version everywhere",
            description.spec
        )));
    }
    let trainer = Trainer::new(model, batch_size, registration.sparse_gradients);
    let push_every = registration.push_every.max(1);
    let mut session = Session {
        worker_id,
        batch_size,
        push_every,
        fetch_every: registration.fetch_every,
        encoding,
        clipping: Clipping {
            max_norm: registration.clip_norm,
            max_value: registration.clip_value,
        },
        pushes: Vec::new(),
        accumulated: Accumulated::new(if push_every > 1 {
            trainer.params.len()
        } else {
            0
        }),
        trainer: Some(trainer),
        sequence: 0,
        needs_pull: true,
        since_fetch: 0,
        wire: BytesMut::new(),
        sparse_sum: SparseGradient::default(),
        shards: HashMap::new(),
        metrics,
        report: WorkerReport {
            worker_id,
            minibatches: 0,
            examples: 0,
            pushes: 0,
            stop_reason: String::new(),
        },
    };
    let heartbeat_id = registered.worker_id.clone();
    heartbeat_id.store(worker_id, Ordering::Relaxed);
    let _ = registered.coordinator.set(coordinator.clone());
    let heartbeats = (registration.lease_timeout_ms > 0).then(|| {
        let period =
            Duration::from_millis(registration.lease_timeout_ms / 4).max(Duration::from_millis(25));
        tokio::spawn(send_heartbeats(
            coordinator.clone(),
            heartbeat_id.clone(),
            period,
        ))
    });
    let _stop_heartbeats = heartbeats.map(AbortOnDrop);
    loop {
        let worker_id = session.worker_id;
        // Asking again is safe: the coordinator hands out again a range
        // whose reply was lost.
        let next_work = retry_unreachable("coordinator", "NextWork", || {
            let mut coordinator = coordinator.clone();
            async move {
                coordinator
                    .next_work(NextWorkRequest { worker_id })
                    .await
                    .map_err(WorkerError::rpc("NextWork"))
            }
        });
        let reply = session
            .metrics
            .rpc
            .time("NextWork", next_work)
            .await?
            .into_inner();
        match reply.action {
            Some(next_work_reply::Action::LeaseLost(_)) => {
                session
                    .register_again(&mut coordinator, &mut ps, &config.name)
                    .await?;
                heartbeat_id.store(session.worker_id, Ordering::Relaxed);
            }
            Some(next_work_reply::Action::Work(range)) => {
                let outcome = session
                    .train_range(&mut coordinator, &mut ps, range)
                    .await?;
                if outcome == RangeEnd::TrainingStopped {
                    // The coordinator stopped the schedule before the
                    // servers, so the next request for work returns the stop.
                    continue;
                }
                // Reporting again is safe: a range counts once.
                let request = CompleteWorkRequest {
                    worker_id,
                    work: Some(range),
                    pushes_acked: session.report.pushes,
                    pushes: std::mem::take(&mut session.pushes),
                };
                let completed = retry_unreachable("coordinator", "CompleteWork", || {
                    let (mut coordinator, request) = (coordinator.clone(), request.clone());
                    async move {
                        coordinator
                            .complete_work(request)
                            .await
                            .map_err(WorkerError::rpc("CompleteWork"))
                    }
                });
                let done = session
                    .metrics
                    .rpc
                    .time("CompleteWork", completed)
                    .await?
                    .into_inner();
                if done.lease_lost {
                    session
                        .register_again(&mut coordinator, &mut ps, &config.name)
                        .await?;
                    heartbeat_id.store(session.worker_id, Ordering::Relaxed);
                    continue;
                }
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
        worker_id = session.worker_id,
        minibatches = session.report.minibatches,
        examples = session.report.examples,
        reason = %session.report.stop_reason,
        "worker stopped"
    );
    Ok(session.report)
}

/// The end of a range of minibatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RangeEnd {
    Done,
    /// A parameter server reported that training stopped; the rest of the
    /// range was dropped.
    TrainingStopped,
}

/// Gradients of the minibatches since the last push, weighted by their
/// examples.
#[derive(Debug)]
struct Accumulated {
    sum: Vec<f32>,
    /// Positions of `sum` that sparse gradients listed, in the order they
    /// were first listed; each flagged in `listed`.
    touched: Vec<u32>,
    listed: Vec<bool>,
    examples: u32,
    loss_sum: f64,
}

impl Accumulated {
    fn new(parameters: usize) -> Self {
        Self {
            sum: vec![0.0; parameters],
            touched: Vec::new(),
            listed: Vec::new(),
            examples: 0,
            loss_sum: 0.0,
        }
    }

    /// Adds a sparse gradient, weighted by its examples.
    fn add_sparse(&mut self, gradient: &SparseGradient, examples: usize, loss: f32) {
        if self.listed.len() != self.sum.len() {
            self.listed = vec![false; self.sum.len()];
        }
        let weight = examples as f32;
        for (&index, &g) in gradient.indices.iter().zip(&gradient.values) {
            let position = index as usize;
            if !self.listed[position] {
                self.listed[position] = true;
                self.touched.push(index);
            }
            self.sum[position] += weight * g;
        }
        self.examples += examples as u32;
        self.loss_sum += f64::from(loss) * examples as f64;
    }

    /// Writes the mean of the sparse gradients into `out`, listing every
    /// position any of them listed, clears the sum, and returns the examples
    /// and mean loss behind it.
    fn finish_sparse(&mut self, out: &mut SparseGradient) -> (u32, f32) {
        let examples = self.examples.max(1);
        let scale = 1.0 / examples as f32;
        self.touched.sort_unstable();
        out.clear();
        for &index in &self.touched {
            let position = index as usize;
            out.indices.push(index);
            out.values.push(self.sum[position] * scale);
            self.sum[position] = 0.0;
            self.listed[position] = false;
        }
        self.touched.clear();
        let result = (self.examples, (self.loss_sum / f64::from(examples)) as f32);
        self.examples = 0;
        self.loss_sum = 0.0;
        result
    }

    fn add(&mut self, gradient: &[f32], examples: usize, loss: f32) {
        let weight = examples as f32;
        for (sum, &g) in self.sum.iter_mut().zip(gradient) {
            *sum += weight * g;
        }
        self.examples += examples as u32;
        self.loss_sum += f64::from(loss) * examples as f64;
    }

    /// Turns the sum into the mean gradient and returns the examples and
    /// mean loss behind it.
    fn finish(&mut self) -> (u32, f32) {
        let examples = self.examples.max(1);
        let scale = 1.0 / examples as f32;
        self.sum.iter_mut().for_each(|g| *g *= scale);
        (self.examples, (self.loss_sum / f64::from(examples)) as f32)
    }

    fn clear(&mut self) {
        self.sum.fill(0.0);
        self.listed.fill(false);
        self.touched.clear();
        self.examples = 0;
        self.loss_sum = 0.0;
    }
}

/// A registered worker's state between steps.
#[derive(Debug)]
struct Session {
    worker_id: u32,
    batch_size: usize,
    push_every: u32,
    /// Minibatches between refreshes of θ; 0 refreshes with every push.
    fetch_every: u32,
    encoding: GradientEncoding,
    clipping: Clipping,
    /// Applied pushes of the current range, sent with its completion.
    pushes: Vec<PushRecord>,
    /// Gradients waiting for the next push, when `push_every` is above 1.
    accumulated: Accumulated,
    /// `None` only while a step runs on the blocking pool.
    trainer: Option<Trainer>,
    sequence: u64,
    /// Whether θ must be pulled before the next step.
    needs_pull: bool,
    /// Minibatches computed since θ was last refreshed.
    since_fetch: u32,
    /// Memory for the encoded gradient, reused from push to push.
    wire: BytesMut,
    /// The mean of accumulated sparse gradients, reused from push to push.
    sparse_sum: SparseGradient,
    shards: HashMap<u32, Arc<Dataset>>,
    metrics: WorkerMetrics,
    report: WorkerReport,
}

/// Aborts a background task when dropped.
#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Registers with the coordinator, retrying while it is unreachable.
async fn register(coordinator: &Coordinator, name: &str) -> Result<RegisterReply, WorkerError> {
    let reply = retry_unreachable("coordinator", "Register", || {
        let mut coordinator = coordinator.clone();
        let request = RegisterRequest {
            name: name.to_owned(),
        };
        async move {
            coordinator
                .register(request)
                .await
                .map_err(WorkerError::rpc("Register"))
        }
    })
    .await?;
    Ok(reply.into_inner())
}

/// Renews the lease of the worker whose id `worker_id` holds, every
/// `period`, for as long as the task runs.
async fn send_heartbeats(
    mut coordinator: Coordinator,
    worker_id: Arc<AtomicU32>,
    period: Duration,
) {
    let mut tick = tokio::time::interval(period);
    loop {
        tick.tick().await;
        let request = HeartbeatRequest {
            worker_id: worker_id.load(Ordering::Relaxed),
        };
        match coordinator.heartbeat(request).await {
            Ok(reply) if reply.get_ref().lease_lost => {
                debug!("lease lost; the worker registers again at its next request");
            }
            Ok(_) => {}
            Err(status) => debug!(error = %status.message(), "heartbeat failed"),
        }
    }
}

impl Session {
    /// Registers again after the coordinator took this worker's lease, and
    /// carries on with the id it hands out. θ is pulled again first.
    async fn register_again(
        &mut self,
        coordinator: &mut Coordinator,
        ps: &mut ParameterServers,
        name: &str,
    ) -> Result<(), WorkerError> {
        warn!(
            worker_id = self.worker_id,
            "the coordinator took this worker's lease after a silence; registering again"
        );
        let registration = self
            .metrics
            .rpc
            .time("Register", register(coordinator, name))
            .await?;
        if registration.worker_id != self.worker_id {
            // Kept pushes carry the old id's sequence numbers.
            ps.clear_retained();
        }
        self.worker_id = registration.worker_id;
        self.report.worker_id = registration.worker_id;
        self.needs_pull = true;
        self.since_fetch = 0;
        self.pushes.clear();
        if self.push_every > 1 {
            self.accumulated.clear();
        }
        Ok(())
    }

    fn trainer(&mut self) -> &mut Trainer {
        self.trainer
            .as_mut()
            .expect("the trainer is back from the blocking pool between steps")
    }

    /// Pulls θ. Sequence numbers go on from the highest one the servers
    /// applied, so a worker that takes the id of one that died is not taken
    /// for a retry of its pushes.
    async fn pull(&mut self, ps: &mut ParameterServers) -> Result<(), WorkerError> {
        let worker_id = self.worker_id;
        let timer = self.metrics.rpc.clone();
        let params = &mut self.trainer().params;
        let applied = timer.time("Pull", ps.pull(worker_id, params)).await?;
        self.sequence = self.sequence.max(applied);
        self.since_fetch = 0;
        Ok(())
    }

    async fn shard(
        &mut self,
        coordinator: &mut Coordinator,
        index: u32,
    ) -> Result<Arc<Dataset>, WorkerError> {
        if let Some(shard) = self.shards.get(&index) {
            return Ok(shard.clone());
        }
        let fetched = retry_unreachable("coordinator", "FetchShard", || {
            let mut coordinator = coordinator.clone();
            async move { fetch_shard(&mut coordinator, index).await }
        });
        let shard = Arc::new(self.metrics.rpc.time("FetchShard", fetched).await?);
        let expected = self.trainer().inputs();
        if self.trainer().is_sparse() && shard.sparse_rows().is_none() {
            return Err(WorkerError::SparseGradients(format!(
                "the coordinator requests them, but shard {index} contains dense rows; run the same Downpour version everywhere"
            )));
        }
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
    ) -> Result<RangeEnd, WorkerError> {
        let shard = self.shard(coordinator, range.shard).await?;
        // Pushes return the new θ, so a pull is needed only for the first
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
        let mut range_examples = 0usize;
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
            .map_err(|error| match error.try_into_panic() {
                // A panic in the step is a bug; raise it again here.
                Ok(panic) => std::panic::resume_unwind(panic),
                // The runtime is shutting down.
                Err(_) => WorkerError::Interrupted,
            })?;
            self.trainer = Some(trainer);
            if !loss.is_finite() {
                return Err(WorkerError::Diverged {
                    epoch: range.epoch,
                    batch,
                });
            }
            let push_started = Instant::now();
            compute += push_started - step_started;
            self.report.minibatches += 1;
            self.report.examples += examples as u64;
            self.metrics.minibatches.inc();
            self.metrics.examples.inc_by(examples as u64);
            range_examples += examples;
            self.since_fetch += 1;

            let ends_shard = batch as usize + 1 == batches;
            let push_now = (batch + 1).is_multiple_of(self.push_every) || ends_shard;
            if push_now {
                // θ is refreshed only with a push, so that every gradient in
                // an accumulated push comes from the θ the push is tagged
                // with. A fetch_every of 0 means with every push.
                let fetch_now = self.since_fetch >= self.fetch_every;
                let outcome = self
                    .push(ps, range.epoch, batch, examples, loss, fetch_now)
                    .await?;
                if fetch_now {
                    self.since_fetch = 0;
                }
                if outcome.training_stopped {
                    return Ok(RangeEnd::TrainingStopped);
                }
            } else {
                let Self {
                    accumulated,
                    trainer,
                    ..
                } = self;
                let trainer = trainer.as_ref().expect("trainer is idle");
                if trainer.is_sparse() {
                    accumulated.add_sparse(&trainer.sparse_gradient, examples, loss);
                } else {
                    accumulated.add(&trainer.gradient, examples, loss);
                }
            }
            transport += push_started.elapsed();
        }
        let range_seconds = (compute + transport).as_secs_f64();
        if range_seconds > 0.0 {
            self.metrics
                .examples_per_second
                .set(range_examples as f64 / range_seconds);
        }
        debug!(
            worker_id = self.worker_id,
            batches = range.batch_count,
            compute_ms = compute.as_secs_f64() * 1e3,
            push_ms = transport.as_secs_f64() * 1e3,
            "work range done"
        );
        Ok(RangeEnd::Done)
    }

    /// Pushes the last minibatch's gradient, or the mean over the
    /// minibatches since the last push, and refreshes θ when `fetch` is set.
    async fn push(
        &mut self,
        ps: &mut ParameterServers,
        epoch: u32,
        batch: u32,
        examples: usize,
        loss: f32,
        fetch: bool,
    ) -> Result<PushOutcome, WorkerError> {
        let Self {
            accumulated,
            trainer,
            encoding,
            wire,
            sparse_sum,
            clipping,
            metrics,
            ..
        } = self;
        let trainer = trainer.as_mut().expect("the trainer is idle between steps");
        let sparse = trainer.is_sparse();
        // A sparse gradient is clipped and encoded through its values: the
        // zeros it leaves out change neither the norm nor value clipping.
        let (values, indices, examples, loss) = match (sparse, self.push_every > 1) {
            (false, true) => {
                accumulated.add(&trainer.gradient, examples, loss);
                let (examples, loss) = accumulated.finish();
                (&mut accumulated.sum[..], None, examples, loss)
            }
            (false, false) => (&mut trainer.gradient[..], None, examples as u32, loss),
            (true, true) => {
                accumulated.add_sparse(&trainer.sparse_gradient, examples, loss);
                let (examples, loss) = accumulated.finish_sparse(sparse_sum);
                let SparseGradient { indices, values } = sparse_sum;
                (&mut values[..], Some(&indices[..]), examples, loss)
            }
            (true, false) => {
                let SparseGradient { indices, values } = &mut trainer.sparse_gradient;
                (&mut values[..], Some(&indices[..]), examples as u32, loss)
            }
        };
        metrics.gradient_norm.set(l2_norm(values));
        let mut record = clipping.apply(values);
        let bytes = match encoding {
            GradientEncoding::F32 => encode_f32s_reusing(values, wire),
            GradientEncoding::Bf16 => encode_bf16s_reusing(values, wire),
        };
        self.sequence += 1;
        let gradient = Gradient {
            worker_id: self.worker_id,
            sequence: self.sequence,
            bytes: &bytes,
            indices,
            encoding: *encoding,
            examples,
            loss,
            epoch,
            batch,
            fetch,
        };
        let outcome = metrics
            .rpc
            .time("Push", ps.push(gradient, &mut trainer.params))
            .await?;
        if self.push_every > 1 && !sparse {
            accumulated.clear();
        }
        if outcome.applied {
            self.report.pushes += 1;
            record.version = outcome.version;
            record.staleness = outcome.staleness;
            record.pushed_values = outcome.pushed_values;
            record.push_bytes = outcome.push_bytes;
            record.sparse = sparse;
            self.pushes.push(record);
            self.metrics.pushes.inc();
        }
        if outcome.resync {
            info!(
                worker_id = self.worker_id,
                "a parameter server restarted and got this worker's lost pushes again; pulling θ"
            );
            self.pull(ps).await?;
        }
        Ok(outcome)
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
