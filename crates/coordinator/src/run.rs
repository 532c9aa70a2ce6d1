//! The training driver: it puts θ₀ on the parameter server, waits for the
//! workers, validates every `eval_every` updates, stops early, measures the
//! test split with the best θ and writes the run directory.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use downpour_model::{Evaluation, Mlp, Workspace};
use downpour_proto::auth::{ClusterToken, RequireToken};
use downpour_proto::transport::{MAX_MESSAGE_BYTES, health_service, incoming, server_builder};
use downpour_proto::v1::coordinator_server::CoordinatorServer;
use downpour_proto::v1::{
    Compensation, ConsistencyMode, GradientEncoding, InitRequest, OptimizerConfig, PsShard,
    PushTotals,
};
use downpour_ps::Consistency;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::service::interceptor::InterceptedService;
use tracing::{info, warn};

use crate::config::CoordinatorConfig;
use crate::diagnostics::{CurvatureSet, EvalDiagnostics, PushRecorder};
use crate::early_stopping::{EarlyStopping, Verdict};
use crate::error::CoordinatorError;
use crate::metrics::CoordinatorMetrics;
use crate::prepare::{EvalSet, PreparedRun};
use crate::ps_client::ParameterServers;
use crate::run_dir::{
    BEST_CHECKPOINT, EvalEvent, INITIAL_CHECKPOINT, LAST_CHECKPOINT, RunDir, RunSummary,
    StalenessSummary,
};
use crate::schedule::WorkSchedule;
use crate::service::{CoordinatorService, Persistence, RunInfo, Shared};
use crate::state::{DriverProgress, Mark, RunIdentity, SavedState, state_path};

/// How long the coordinator waits for every worker to learn that training
/// stopped before it ends the run anyway.
const WORKER_STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// Time without a validation pass after which the coordinator logs which
/// workers it is waiting for.
const STALL_WARNING_AFTER: Duration = Duration::from_secs(60);

/// Rows evaluated per forward pass.
const EVAL_BATCH: usize = 1000;

/// Runs a prepared training job: serves the coordinator on `listener`
/// until training ends or `shutdown` resolves, and returns the summary that
/// it also wrote to the run directory. Every request to the coordinator
/// must carry `token`, and the coordinator sends it to the parameter
/// servers.
///
/// # Errors
///
/// Returns an error when the run directory cannot be written, the parameter
/// server cannot be reached or rejects θ₀, or `shutdown` resolves first.
pub async fn run(
    prepared: PreparedRun,
    listener: TcpListener,
    token: ClusterToken,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<RunSummary, CoordinatorError> {
    let metrics = CoordinatorMetrics::unregistered();
    run_with_metrics(prepared, listener, token, shutdown, metrics).await
}

/// Runs a prepared training job as [`run`] does, recording each validation
/// pass and each RPC in `metrics`.
///
/// # Errors
///
/// Fails as [`run`] does.
pub async fn run_with_metrics(
    prepared: PreparedRun,
    listener: TcpListener,
    token: ClusterToken,
    shutdown: impl Future<Output = ()> + Send,
    metrics: CoordinatorMetrics,
) -> Result<RunSummary, CoordinatorError> {
    let identity = RunIdentity::of(&prepared.config);
    let (mut run_dir, saved) = if prepared.config.resume {
        let mut run_dir = RunDir::resume(&prepared.config.run_dir)?;
        run_dir.set_run_metadata(prepared.run_metadata());
        let saved = SavedState::load(run_dir.path(), &identity)?;
        (run_dir, Some(saved))
    } else {
        let mut run_dir = RunDir::create(&prepared.config.run_dir)?;
        run_dir.set_run_metadata(prepared.run_metadata());
        run_dir.save_checkpoint(
            INITIAL_CHECKPOINT,
            &prepared.description,
            &prepared.initial_params,
        )?;
        (run_dir, None)
    };
    if prepared.config.tensorboard {
        run_dir.write_tensorboard()?;
    }

    let mut info = run_info(&prepared, &run_dir);
    if let Some(saved) = &saved {
        info.run_id.clone_from(&saved.run_id);
    }
    let shared = Arc::new(Shared::new(
        info,
        WorkSchedule::new(
            &prepared.batches_per_shard(),
            prepared.config.max_epochs,
            prepared.config.batches_per_work,
        ),
        Some(Persistence::new(state_path(run_dir.path()), identity)),
    ));
    if let Some(saved) = &saved {
        shared
            .restore(saved)
            .map_err(|message| CoordinatorError::resume(state_path(run_dir.path()), message))?;
        info!(
            run_id = %saved.run_id,
            epoch = saved.schedule.epoch + 1,
            evaluations = saved.progress.evaluations,
            workers = saved.workers.len(),
            "resuming the run from the coordinator's saved state"
        );
    } else {
        // The state exists from the start, so that a coordinator that dies
        // before the first worker registers can resume too.
        shared.save(&shared.lock(), true)?;
    }
    let resumed = saved.is_some();
    let service = CoordinatorServer::new(CoordinatorService::new(shared.clone()))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let service = InterceptedService::new(service, RequireToken::new(&token, "coordinator"));
    let service = metrics.rpc.wrap(service);
    let (stop_server, server_stopped) = oneshot::channel::<()>();
    match listener.local_addr() {
        Ok(address) => info!(%address, "coordinator listening"),
        Err(error) => warn!(%error, "coordinator listening on an unknown address"),
    }
    let mut builder = server_builder(&token)
        .map_err(|error| CoordinatorError::Tls(downpour_proto::transport::error_chain(&error)))?;
    let (_health_reporter, health) = health_service();
    let server = tokio::spawn(
        builder
            .add_service(health)
            .add_service(service)
            .serve_with_incoming_shutdown(incoming(listener), async {
                server_stopped.await.ok();
            }),
    );

    let leases = tokio::spawn(expire_leases(shared.clone()));
    let outcome = tokio::select! {
        outcome = drive(prepared, &shared, &mut run_dir, &token, resumed, &metrics) => outcome,
        () = shutdown => Err(CoordinatorError::Interrupted),
    };

    leases.abort();
    let _ = stop_server.send(());
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => warn!(%error, "coordinator server stopped with an error"),
        Err(error) => warn!(%error, "coordinator server task failed"),
    }
    outcome
}

fn run_info(prepared: &PreparedRun, run_dir: &RunDir) -> RunInfo {
    let name = run_dir
        .path()
        .file_name()
        .map_or_else(|| "run".to_owned(), |n| n.to_string_lossy().into_owned());
    let started = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    RunInfo {
        run_id: format!("{name}-{started}"),
        model_json: prepared.description.to_json(),
        batch_size: prepared.config.batch_size,
        ps_shards: prepared
            .config
            .ps_addresses
            .iter()
            .zip(&prepared.ps_ranges)
            .map(|(address, range)| PsShard {
                address: address.clone(),
                offset: range.start as u64,
                length: range.len() as u64,
            })
            .collect(),
        expected_workers: prepared.config.workers,
        shard_files: prepared.shard_files.clone(),
        shard_lengths: prepared.shard_rows.iter().map(|rows| rows.len()).collect(),
        push_every: prepared.config.push_every,
        // In sync mode θ changes only once every worker pushed, so a
        // worker refreshes it with each push and never in between.
        fetch_every: match prepared.config.consistency {
            Consistency::Sync => 0,
            _ => prepared.config.fetch_every,
        },
        push_encoding: if prepared.config.push_bf16 {
            GradientEncoding::Bf16
        } else {
            GradientEncoding::F32
        },
        piece_values: prepared.config.piece_values,
        // Only async mode can hand a lost worker's minibatches to others:
        // in bounded and sync modes the others wait for its own pushes.
        lease_timeout: (prepared.config.consistency == Consistency::Async)
            .then_some(prepared.config.lease_timeout),
        clip_norm: prepared.config.clip_norm,
        clip_value: prepared.config.clip_value,
        sparse_gradients: prepared.sparse_gradients,
    }
}

/// Builds the settings every parameter server gets with θ₀.
fn init_settings(prepared: &PreparedRun, run_id: &str) -> InitRequest {
    let config = &prepared.config;
    let (consistency, staleness_bound) = match config.consistency {
        Consistency::Async => (ConsistencyMode::Async, 0),
        Consistency::Bounded { bound } => (ConsistencyMode::Bounded, bound),
        Consistency::Sync => (ConsistencyMode::Sync, 0),
    };
    InitRequest {
        run_id: run_id.to_owned(),
        params: Default::default(),
        optimizer: Some(OptimizerConfig {
            learning_rate: config.learning_rate,
            momentum: config.momentum,
            weight_decay: config.weight_decay,
            warmup_updates: config.warmup_updates,
        }),
        consistency: consistency.into(),
        staleness_bound,
        // Worker i trains on shard i.
        worker_batches: prepared.batches_per_shard(),
        push_every: config.push_every,
        compensation: Some(Compensation {
            scale_by_staleness: config.compensation.scale_by_staleness,
            dc_lambda: config.compensation.dc_lambda,
        }),
        total_params: 0,
        offset: 0,
    }
}

/// The model and buffers used for validation and test passes.
#[derive(Debug)]
struct Evaluator {
    model: Mlp,
    workspace: Workspace,
}

impl Evaluator {
    /// Evaluates `params` on `set` on a blocking thread, so the servers in
    /// this process keep serving requests.
    async fn evaluate(
        evaluator: &Arc<Mutex<Self>>,
        params: Arc<Vec<f32>>,
        set: Arc<EvalSet>,
    ) -> Result<Evaluation, CoordinatorError> {
        let evaluator = evaluator.clone();
        let pass = tokio::task::spawn_blocking(move || {
            let mut guard = evaluator.lock().unwrap_or_else(|p| p.into_inner());
            let Evaluator { model, workspace } = &mut *guard;
            let targets = set.targets_of(set.len());
            model.evaluate_for(&params, set.features.view(), targets, workspace)
        });
        pass.await.map_err(|error| match error.try_into_panic() {
            // A panic in the pass is a bug; raise it again here.
            Ok(panic) => std::panic::resume_unwind(panic),
            // The runtime is shutting down.
            Err(_) => CoordinatorError::Interrupted,
        })
    }
}

/// The best θ and where it was measured.
#[derive(Debug)]
struct BestSnapshot {
    params: Arc<Vec<f32>>,
    updates: u64,
    epoch: f64,
}

async fn drive(
    prepared: PreparedRun,
    shared: &Arc<Shared>,
    run_dir: &mut RunDir,
    token: &ClusterToken,
    resumed: bool,
    metrics: &CoordinatorMetrics,
) -> Result<RunSummary, CoordinatorError> {
    let settings = init_settings(&prepared, &shared.info.run_id);
    let sparse_gradients = prepared.sparse_gradients;
    let PreparedRun {
        config,
        description,
        model,
        initial_params,
        train_examples,
        validation,
        test,
        ps_ranges,
        splits,
        scaling,
        ..
    } = prepared;
    let regression = description.is_regression();
    warn_if_momentum_may_stall(&config);
    let mut servers = ParameterServers::connect(
        &config.ps_addresses,
        &ps_ranges,
        config.piece_values,
        config.connect_timeout,
        token,
    )
    .await?;
    if resumed {
        // θ is on the servers already; a server that lost it must restart
        // with --restore before the run can go on.
        let snapshot = servers.pull(0).await?;
        info!(
            version = snapshot.version,
            "parameter servers hold θ; waiting for workers"
        );
    } else {
        servers.init(&settings, &initial_params).await?;
        info!(
            servers = config.ps_addresses.len(),
            consistency = %config.consistency,
            "parameters initialised; waiting for workers"
        );
    }

    let mut registered = shared.registered.subscribe();
    registered
        .wait_for(|&count| count >= config.workers)
        .await
        .map_err(|_| CoordinatorError::Interrupted)?;
    let (progress, resumed_stop) = {
        let mut inner = shared.lock();
        inner.started = true;
        let stop = inner.schedule.stop_reason().map(str::to_owned);
        (inner.progress.clone(), stop)
    };
    // Training time before a restart counts, so that wall_seconds covers
    // the whole run.
    let seconds_before = progress.seconds;
    let started = Instant::now();
    info!(workers = config.workers, "training started");

    let curvature = Arc::new(Mutex::new(CurvatureSet::new(
        &model,
        &validation,
        config.sgd_config(),
    )));
    let mut push_recorder = PushRecorder::create(run_dir.path())?;
    let evaluator = Arc::new(Mutex::new(Evaluator {
        workspace: Workspace::new(&model, EVAL_BATCH),
        model,
    }));
    let validation = Arc::new(validation);
    let mut stopping = resume_early_stopping(&config, &progress, run_dir)?;
    let mut previous = progress.previous;
    let mut evaluations = progress.evaluations;
    let mut last_version = progress.last_version;
    let mut next_eval = match progress.next_eval {
        0 => config.eval_every,
        next => next,
    };
    let mut epochs_done = shared.epochs_done.subscribe();

    let stop_reason: String = loop {
        if let Some(reason) = &resumed_stop {
            info!(stop_reason = %reason, "the run had stopped before the restart; finishing it");
            break reason.clone();
        }
        let last_epoch_done = tokio::select! {
            snapshot = servers.pull(next_eval) => Some(snapshot?),
            done = epochs_done.wait_for(|&done| done) => {
                done.map_err(|_| CoordinatorError::Interrupted)?;
                None
            }
            () = tokio::time::sleep(STALL_WARNING_AFTER) => {
                warn_stalled(shared, next_eval);
                continue;
            }
        };
        let final_pass = last_epoch_done.is_none();
        let snapshot = match last_epoch_done {
            Some(snapshot) => snapshot,
            None => servers.pull(0).await?,
        };

        if last_version != Some(snapshot.version) {
            last_version = Some(snapshot.version);
            evaluations += 1;
            let params = Arc::new(snapshot.params);
            let pass = Evaluator::evaluate(&evaluator, params.clone(), validation.clone()).await?;
            let totals = snapshot.totals;
            let seconds = seconds_before + started.elapsed().as_secs_f64();
            let epoch = totals.examples as f64 / train_examples as f64;

            let verdict = stopping.observe(stopping_metric(&pass, regression), || BestSnapshot {
                params: params.clone(),
                updates: snapshot.version,
                epoch,
            });
            if verdict == Verdict::Improved {
                run_dir.save_checkpoint(BEST_CHECKPOINT, &description, &params)?;
            }
            let best_error = stopping
                .best()
                .map_or(stopping_metric(&pass, regression), |(error, _)| error);
            let pushes = shared.lock().pushes.take();
            let (gradient_norm, clipping) = push_recorder.record(&pushes)?;
            let probe = CurvatureSet::probe(&curvature, params.clone(), snapshot.version).await?;
            let mut event = eval_event(
                evaluations,
                snapshot.version,
                epoch,
                seconds,
                &totals,
                previous,
                &pass,
                best_error,
                regression,
            );
            event.diagnostics = EvalDiagnostics {
                gradient_norm,
                clipping,
                curvature: probe,
            };
            log_progress(&event);
            metrics.observe(&event);
            run_dir.append_event(&event)?;
            previous = Mark {
                examples: totals.examples,
                loss_sum: totals.loss_sum,
                pushes: totals.pushes,
                staleness_sum: totals.staleness_sum,
                seconds,
            };
            {
                let mut inner = shared.lock();
                let (best_updates, best_epoch) = stopping
                    .best()
                    .map_or((0, 0.0), |(_, best)| (best.updates, best.epoch));
                inner.progress = DriverProgress {
                    evaluations,
                    best_validation_error: Some(best_error),
                    best_updates,
                    best_epoch,
                    evaluations_since_best: stopping.evaluations_since_best(),
                    last_version,
                    next_eval: (snapshot.version / config.eval_every + 1) * config.eval_every,
                    previous,
                    seconds,
                };
                // A failed write is logged; training goes on.
                let _ = shared.save(&inner, true);
            }

            if let Some(target) = config.target_accuracy
                && pass.accuracy() >= target
            {
                info!(
                    target_accuracy = target,
                    validation_accuracy = pass.accuracy(),
                    "validation accuracy reached the target; stopping"
                );
                break "target_accuracy".to_owned();
            }
            if let Some(target) = config.target_mse
                && pass.mean_loss() <= target
            {
                info!(
                    target_mse = target,
                    validation_mse = pass.mean_loss(),
                    "validation mean squared error reached the target; stopping"
                );
                break "target_mse".to_owned();
            }
            if verdict == Verdict::Stop {
                info!(
                    patience = config.patience,
                    best_validation_metric = best_error,
                    "validation {} stopped improving; stopping early",
                    metric_name(regression)
                );
                break "early_stopping".to_owned();
            }
        }
        if final_pass {
            info!(
                max_epochs = config.max_epochs,
                "reached the epoch limit; stopping"
            );
            break "max_epochs".to_owned();
        }
        next_eval = (snapshot.version / config.eval_every + 1) * config.eval_every;
    };
    // The schedule stops first, so that a worker whose push gets the reply
    // "training stopped" finds the stop at its next work request.
    {
        let mut inner = shared.lock();
        inner.schedule.stop(&stop_reason);
        inner.progress.seconds = seconds_before + started.elapsed().as_secs_f64();
        let _ = shared.save(&inner, true);
    }
    // NOTE: in sync mode with several parameter servers, a server can apply
    // the last step before it stops while another drops it. θ read below
    // can then mix two consecutive steps, and so can validation reads.
    servers.stop_training().await?;
    let wall_seconds = seconds_before + started.elapsed().as_secs_f64();
    let at_stop = servers.pull(0).await?;
    let totals_at_stop = &at_stop.totals;

    let (best_validation_error, best) = stopping
        .into_best()
        .expect("the loop runs at least one validation pass before it stops");
    let test_pass = match test {
        Some(test) => {
            Some(Evaluator::evaluate(&evaluator, best.params.clone(), Arc::new(test)).await?)
        }
        None => None,
    };

    wait_for_workers_to_stop(shared, config.workers).await;
    servers.finish().await;
    run_dir.save_checkpoint(LAST_CHECKPOINT, &description, &at_stop.params)?;
    let totals = &at_stop.totals;
    // Pushes reported since the last validation pass go to the push file
    // and the traffic totals too.
    let late_pushes = shared.lock().pushes.take();
    push_recorder.record(&late_pushes)?;

    let mut per_worker = shared.lock().workers.clone();
    for worker in &mut per_worker {
        worker.pushes = totals
            .pushes_by_worker
            .get(&worker.id)
            .copied()
            .unwrap_or(0);
    }
    let updates_lost = per_worker
        .iter()
        .map(|worker| worker.pushes_acked.saturating_sub(worker.pushes))
        .sum();
    let examples = totals_at_stop.examples;
    let summary = RunSummary {
        run_id: shared.info.run_id.clone(),
        data: config.data.display().to_string(),
        model: config.model.to_string(),
        parameters: description.parameters,
        test_accuracy: test_pass
            .filter(|_| !regression)
            .map(|pass| pass.accuracy()),
        test_mse: test_pass
            .filter(|_| regression)
            .map(|pass| pass.mean_loss()),
        test_loss: test_pass.map(|pass| pass.mean_loss()),
        test_examples: test_pass.map_or(0, |pass| pass.examples),
        task: splits.task.clone(),
        best_validation_error: (!regression).then_some(best_validation_error),
        best_validation_mse: regression.then_some(best_validation_error),
        best_updates: best.updates,
        best_epoch: best.epoch,
        epochs: examples as f64 / train_examples as f64,
        updates: at_stop.version,
        pushes: totals.pushes,
        examples,
        duplicate_pushes: totals.duplicates,
        updates_lost,
        epoch_usage: shared.lock().epochs.clone(),
        stop_reason: stop_reason.clone(),
        evaluations,
        wall_seconds,
        examples_per_second: examples as f64 / wall_seconds.max(f64::EPSILON),
        workers: per_worker.len(),
        per_worker,
        staleness: StalenessSummary {
            mean: totals.staleness_sum as f64 / totals.pushes.max(1) as f64,
            max: totals.max_staleness,
            histogram: totals
                .staleness_counts
                .iter()
                .map(|(&staleness, &pushes)| (staleness, pushes))
                .collect(),
        },
        consistency: config.consistency.to_string(),
        staleness_scaling: config.compensation.scale_by_staleness,
        dc_lambda: config.compensation.dc_lambda,
        push_every: config.push_every,
        fetch_every: config.fetch_every,
        push_encoding: if config.push_bf16 { "bf16" } else { "f32" }.to_owned(),
        gradients: if sparse_gradients { "sparse" } else { "dense" }.to_owned(),
        push_traffic: push_recorder.traffic(),
        train_examples,
        validation_examples: validation.len(),
        batch_size: config.batch_size,
        learning_rate: config.learning_rate,
        momentum: config.momentum,
        weight_decay: config.weight_decay,
        warmup_updates: config.warmup_updates,
        clip_norm: config.clip_norm,
        clip_value: config.clip_value,
        seed: config.seed,
        eval_every: config.eval_every,
        patience: config.patience,
        target_accuracy: config.target_accuracy,
        target_mse: config.target_mse,
        max_epochs: config.max_epochs,
        checkpoint: format!("{BEST_CHECKPOINT}.safetensors"),
        splits,
        scaling,
    };
    let path = run_dir.write_summary(&summary)?;
    info!(
        // A field whose value is None is left out of the line.
        test_accuracy = summary.test_accuracy,
        test_mse = summary.test_mse,
        best_validation_metric = best_validation_error,
        stop_reason = %stop_reason,
        epochs = summary.epochs,
        updates = summary.updates,
        wall_seconds,
        summary = %path.display(),
        "run finished"
    );
    Ok(summary)
}

/// Returns the early-stopping tracker at the saved progress, with the best
/// θ read back from the run directory, or a fresh one for a new run.
fn resume_early_stopping(
    config: &CoordinatorConfig,
    progress: &DriverProgress,
    run_dir: &RunDir,
) -> Result<EarlyStopping<BestSnapshot>, CoordinatorError> {
    let Some(best_error) = progress.best_validation_error else {
        return Ok(EarlyStopping::new(config.patience));
    };
    let path = run_dir
        .path()
        .join(format!("{BEST_CHECKPOINT}.safetensors"));
    let (_, params) = downpour_data::checkpoint::load(&path).map_err(|error| {
        CoordinatorError::resume(
            path.clone(),
            format!("the best θ cannot be read ({error}); start a new run"),
        )
    })?;
    let best = BestSnapshot {
        params: Arc::new(params),
        updates: progress.best_updates,
        epoch: progress.best_epoch,
    };
    Ok(EarlyStopping::resume(
        config.patience,
        (best_error, best),
        progress.evaluations_since_best,
    ))
}

/// Takes the leases of silent workers, checking four times per lease
/// timeout, until the task is aborted.
async fn expire_leases(shared: Arc<Shared>) {
    let Some(timeout) = shared.info.lease_timeout else {
        return;
    };
    let mut tick = tokio::time::interval((timeout / 4).max(Duration::from_millis(25)));
    loop {
        tick.tick().await;
        shared.expire_leases();
    }
}

/// Logs a warning for settings under which stale gradients may stall
/// training. Stale gradients act like extra momentum. On MNIST with
/// momentum 0.9, async training stalled from 4 workers up, while staleness
/// scaling trained.
fn warn_if_momentum_may_stall(config: &CoordinatorConfig) {
    if config.consistency != Consistency::Sync
        && config.workers >= 4
        && config.momentum >= 0.5
        && !config.compensation.scale_by_staleness
    {
        warn!(
            workers = config.workers,
            momentum = %config.momentum,
            consistency = %config.consistency,
            "stale gradients from this many workers add to the momentum and can stall training; if the validation error stops falling, add --staleness-scaling, lower --momentum or use --consistency sync"
        );
    }
}

fn warn_stalled(shared: &Shared, next_eval: u64) {
    let inner = shared.lock();
    let last_contact: Vec<String> = inner
        .workers
        .iter()
        .map(|worker| {
            format!(
                "{}:{:.0}s",
                worker.id,
                worker.last_contact.elapsed().as_secs_f64()
            )
        })
        .collect();
    // NOTE: in bounded and sync modes leases are off, so a worker that died
    // keeps its shard and the run cannot finish without it.
    warn!(
        waiting_for_update = next_eval,
        epoch = inner.schedule.epoch(),
        seconds_since_contact = %last_contact.join(" "),
        "no validation pass for {} s; a worker may have died",
        STALL_WARNING_AFTER.as_secs()
    );
}

async fn wait_for_workers_to_stop(shared: &Shared, workers: usize) {
    let mut stopped = shared.stopped_workers.subscribe();
    let all_stopped = stopped.wait_for(|&count| count >= workers);
    let in_time = tokio::time::timeout(WORKER_STOP_TIMEOUT, all_stopped)
        .await
        .is_ok();
    match in_time {
        true => info!(workers, "stop sent to every worker"),
        false => warn!(
            stop_sent = *shared.stopped_workers.borrow(),
            workers,
            timeout_seconds = WORKER_STOP_TIMEOUT.as_secs(),
            "not every worker asked for work after the stop; ending the run anyway"
        ),
    }
}

#[allow(clippy::too_many_arguments)] // one row of the event log, field by field
fn eval_event(
    evaluation: u32,
    updates: u64,
    epoch: f64,
    seconds: f64,
    totals: &PushTotals,
    previous: Mark,
    pass: &Evaluation,
    best_validation_metric: f64,
    regression: bool,
) -> EvalEvent {
    let pushes = totals.pushes.saturating_sub(previous.pushes);
    let examples = totals.examples.saturating_sub(previous.examples);
    let interval = seconds - previous.seconds;
    EvalEvent {
        evaluation,
        epoch,
        updates,
        examples: totals.examples,
        wall_seconds: seconds,
        train_loss: (pushes > 0).then(|| (totals.loss_sum - previous.loss_sum) / pushes as f64),
        validation_error: (!regression).then(|| pass.error_rate()),
        validation_mse: regression.then(|| pass.mean_loss()),
        validation_loss: pass.mean_loss(),
        best_validation_error: (!regression).then_some(best_validation_metric),
        best_validation_mse: regression.then_some(best_validation_metric),
        examples_per_second: if interval > 0.0 {
            examples as f64 / interval
        } else {
            0.0
        },
        mean_staleness: (pushes > 0).then(|| {
            totals.staleness_sum.saturating_sub(previous.staleness_sum) as f64 / pushes as f64
        }),
        diagnostics: EvalDiagnostics::default(),
    }
}

/// Returns the value early stopping minimizes: the 0-1 error of a
/// classifier, or the mean squared error of linear regression.
fn stopping_metric(pass: &Evaluation, regression: bool) -> f64 {
    match regression {
        true => pass.mean_loss(),
        false => pass.error_rate(),
    }
}

fn metric_name(regression: bool) -> &'static str {
    match regression {
        true => "mean squared error",
        false => "error",
    }
}

fn log_progress(event: &EvalEvent) {
    let train_loss = event
        .train_loss
        .map_or_else(|| "-".to_owned(), |loss| format!("{loss:.4}"));
    if let (Some(mse), Some(best)) = (event.validation_mse, event.best_validation_mse) {
        info!(
            target: "downpour::progress",
            "epoch {:>5.2} | updates {:>6} | train loss {} | val mse {:.4} (best {:.4}) | {:.0} examples/s",
            event.epoch,
            event.updates,
            train_loss,
            mse,
            best,
            event.examples_per_second,
        );
        return;
    }
    info!(
        target: "downpour::progress",
        "epoch {:>5.2} | updates {:>6} | train loss {} | val error {:.2}% (best {:.2}%) | {:.0} examples/s",
        event.epoch,
        event.updates,
        train_loss,
        100.0 * event.validation_error.unwrap_or(f64::NAN),
        100.0 * event.best_validation_error.unwrap_or(f64::NAN),
        event.examples_per_second,
    );
}
