//! The implementation of each subcommand.

use std::time::Duration;

use anyhow::{Context, bail};
use downpour_coordinator::{PreparedRun, RunSummary, prepare};
use downpour_data::checkpoint;
use downpour_model::{Mlp, Workspace};
use downpour_proto::auth::ClusterToken;
use downpour_proto::transport::{health_service, incoming, server_builder};
use downpour_ps::{Checkpointing, ParameterServerService};
use downpour_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{error, info};

use crate::args::{
    Cli, Command, CoordinatorArgs, EvalArgs, LandscapeArgs, PsArgs, ReportArgs, TrainArgs,
    TrainingArgs, WorkerArgs,
};
use crate::metrics::MetricsEndpoint;
use crate::progress::ProgressDisplay;

/// Runs the chosen subcommand.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Train(args) => train(args).await,
        Command::Coordinator(args) => coordinator(args).await,
        Command::Ps(args) => ps(args).await,
        Command::Worker(args) => worker(args).await,
        Command::Eval(args) => eval(args).await,
        Command::Landscape(args) => landscape(args).await,
        Command::Report(args) => report(args),
        Command::Predict(args) => {
            tokio::task::spawn_blocking(move || crate::predict::predict(&args))
                .await
                .context("prediction task failed")?
        }
    }
}

/// Resolves when the process receives Ctrl-C (SIGINT) or SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            // Without a signal handler, run until the work ends by itself.
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut stream) => {
                stream.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        () = interrupt => info!("interrupt received; shutting down"),
        () = terminate => info!("SIGTERM received; shutting down"),
    }
}

async fn bind(address: &str, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("{flag} {address}: cannot listen on this address"))
}

/// Loads and shards the data on a blocking thread.
async fn prepare_run(
    training: &TrainingArgs,
    ps_addresses: Vec<String>,
    connect_timeout: Duration,
) -> anyhow::Result<PreparedRun> {
    training.read.require_labels()?;
    if !training.data.exists() {
        bail!(
            "--data {}: not found; pass an existing MNIST folder or a CSV, LIBSVM, NumPy or IDX file (relative paths start at the current directory, {})",
            training.data.display(),
            std::env::current_dir()
                .map_or_else(|_| "unknown".to_owned(), |d| d.display().to_string())
        );
    }
    let mut config = training.to_config(training.run_dir_or_default(), ps_addresses);
    config.connect_timeout = connect_timeout;
    let prepared = tokio::task::spawn_blocking(move || prepare(config))
        .await
        .context("data preparation task failed")??;
    Ok(prepared)
}

fn print_summary(summary: &RunSummary, run_dir: &std::path::Path) {
    let figures = match summary.best_validation_mse {
        Some(best_mse) => {
            let test_mse = summary
                .test_mse
                .map_or_else(|| "n/a".to_owned(), |mse| format!("{mse:.4}"));
            format!("test mse {test_mse} | best validation mse {best_mse:.4}")
        }
        None => {
            let accuracy = summary
                .test_accuracy
                .map_or_else(|| "n/a".to_owned(), |a| format!("{a:.4}"));
            let best_error = summary.best_validation_error.unwrap_or(f64::NAN);
            format!(
                "test accuracy {accuracy} | best validation error {:.2}%",
                100.0 * best_error
            )
        }
    };
    println!(
        "{figures} | {:.2} epochs | {} updates | stopped by {} | {:.1} s | {:.0} examples/s",
        summary.epochs,
        summary.updates,
        summary.stop_reason.replace('_', " "),
        summary.wall_seconds,
        summary.examples_per_second,
    );
    println!("run directory: {}", run_dir.display());
}

async fn train(args: TrainArgs) -> anyhow::Result<()> {
    let training = &args.training;
    if args.ps_shards == 0 {
        bail!("--ps-shards must be at least 1, got 0");
    }
    let mut ps_listeners = Vec::with_capacity(args.ps_shards);
    let mut ps_addresses = Vec::with_capacity(args.ps_shards);
    for _ in 0..args.ps_shards {
        let listener = bind("127.0.0.1:0", "parameter server").await?;
        ps_addresses.push(listener.local_addr()?.to_string());
        ps_listeners.push(listener);
    }
    let coordinator_listener = bind("127.0.0.1:0", "coordinator").await?;
    let coordinator_address = coordinator_listener.local_addr()?.to_string();

    let token = args.token.read_or_random()?;
    let prepared = prepare_run(training, ps_addresses, Duration::from_secs(10)).await?;
    let run_dir = prepared.config.run_dir.clone();
    let worker_count = prepared.config.workers;
    let metrics = MetricsEndpoint::start(&args.metrics).await?;

    let mut servers = JoinSet::new();
    for (index, listener) in ps_listeners.into_iter().enumerate() {
        let service = metrics.ps(ParameterServerService::new(), &format!("ps-{index}"))?;
        servers.spawn(downpour_ps::serve_service(
            service,
            listener,
            token.clone(),
            std::future::pending(),
        ));
    }
    let mut workers = JoinSet::new();
    for index in 0..worker_count {
        let name = format!("local-{index}");
        let worker_metrics = metrics.worker(&name)?;
        let config = WorkerConfig {
            coordinator: coordinator_address.clone(),
            ps: None,
            name,
            connect_timeout: Duration::from_secs(10),
            token: token.clone(),
        };
        workers.spawn(downpour_worker::run_with_metrics(
            config,
            worker_metrics,
            std::future::pending(),
        ));
    }

    let coordinator_metrics = metrics.coordinator()?;
    let progress = ProgressDisplay::start(coordinator_metrics.clone(), training.max_epochs);
    // A worker that fails ends the run, since no other worker takes over
    // its shard.
    let coordinator = downpour_coordinator::run_with_metrics(
        prepared,
        coordinator_listener,
        token,
        shutdown_signal(),
        coordinator_metrics,
    );
    tokio::pin!(coordinator);
    let summary = loop {
        tokio::select! {
            outcome = &mut coordinator => break outcome?,
            Some(joined) = workers.join_next() => match joined {
                Ok(Ok(_)) => {}
                Ok(Err(error)) => bail!("worker failed: {error}"),
                Err(error) => bail!("worker task failed: {error}"),
            },
        }
    };
    while let Some(joined) = workers.join_next().await {
        match joined {
            Ok(Ok(_)) => {}
            Ok(Err(worker_error)) => error!(error = %worker_error, "worker failed"),
            Err(join_error) => error!(error = %join_error, "worker task failed"),
        }
    }
    while let Some(joined) = servers.join_next().await {
        if let Ok(Err(ps_error)) = joined {
            error!(error = %ps_error, "parameter server failed");
        }
    }
    if let Some(progress) = progress {
        progress.finish();
    }
    metrics.stop().await;
    print_summary(&summary, &run_dir);
    Ok(())
}

async fn coordinator(args: CoordinatorArgs) -> anyhow::Result<()> {
    let token = args.token.read()?;
    let mut prepared = prepare_run(
        &args.training,
        args.ps.clone(),
        Duration::from_secs(args.connect_timeout),
    )
    .await?;
    prepared.config.resume = args.resume;
    let run_dir = prepared.config.run_dir.clone();
    let listener = bind(&args.listen, "--listen").await?;
    let metrics = MetricsEndpoint::start(&args.metrics).await?;
    let summary = downpour_coordinator::run_with_metrics(
        prepared,
        listener,
        token,
        shutdown_signal(),
        metrics.coordinator()?,
    )
    .await?;
    metrics.stop().await;
    print_summary(&summary, &run_dir);
    Ok(())
}

/// File name of a parameter server's checkpoint in `--checkpoint-dir`.
const PS_CHECKPOINT: &str = "ps.safetensors";

async fn ps(args: PsArgs) -> anyhow::Result<()> {
    let token = args.token.read()?;
    if args.restore && args.checkpoint_dir.is_none() {
        bail!(
            "--restore needs --checkpoint-dir, the folder that holds the checkpoint to resume from"
        );
    }
    if args.checkpoint_every == 0 {
        bail!("--checkpoint-every must be at least 1 update, got 0");
    }
    let every = match args.checkpoint_seconds {
        None => None,
        Some(seconds) if seconds.is_finite() && seconds >= 0.01 => {
            Some(Duration::from_secs_f64(seconds))
        }
        Some(seconds) => {
            bail!("--checkpoint-seconds must be at least 0.01 seconds, got {seconds}")
        }
    };
    let mut service = ParameterServerService::new();
    if let Some(dir) = &args.checkpoint_dir {
        std::fs::create_dir_all(dir).with_context(|| {
            format!(
                "--checkpoint-dir {}: cannot create the folder",
                dir.display()
            )
        })?;
        let path = dir.join(PS_CHECKPOINT);
        service = service.with_checkpointing(Checkpointing {
            path: path.clone(),
            every_updates: args.checkpoint_every,
            every,
        });
        if args.restore {
            service = service.restore(&path)?;
        }
    }
    let listener = bind(&args.listen, "--listen").await?;
    let metrics = MetricsEndpoint::start(&args.metrics).await?;
    let service = metrics.ps(service, "ps")?;
    downpour_ps::serve_service(service, listener, token, shutdown_signal())
        .await
        .context("parameter server failed")?;
    metrics.stop().await;
    Ok(())
}

/// Serves only the gRPC health service on `address` until the process
/// ends, for a role that has no server of its own.
async fn serve_health(address: &str, token: &ClusterToken) -> anyhow::Result<()> {
    let listener = bind(address, "--health-listen").await?;
    info!(address, "health service listening");
    let (reporter, health) = health_service();
    let router = server_builder(token)
        .context("--health-listen: cannot use the TLS settings")?
        .add_service(health);
    tokio::spawn(async move {
        // The reporter lives as long as the server.
        let _reporter = reporter;
        if let Err(error) = router
            .serve_with_incoming_shutdown(incoming(listener), shutdown_signal())
            .await
        {
            error!(error = %error, "health service failed");
        }
    });
    Ok(())
}

async fn worker(args: WorkerArgs) -> anyhow::Result<()> {
    let token = args.token.read()?;
    if let Some(address) = &args.health_listen {
        serve_health(address, &token).await?;
    }
    let name = args
        .name
        .unwrap_or_else(|| format!("worker-{}", std::process::id()));
    let metrics = MetricsEndpoint::start(&args.metrics).await?;
    let worker_metrics = metrics.worker(&name)?;
    let config = WorkerConfig {
        coordinator: args.coordinator,
        ps: args.ps,
        name,
        connect_timeout: Duration::from_secs(args.connect_timeout),
        token,
    };
    let report =
        downpour_worker::run_with_metrics(config, worker_metrics, shutdown_signal()).await?;
    metrics.stop().await;
    info!(
        worker_id = report.worker_id,
        minibatches = report.minibatches,
        examples = report.examples,
        "worker finished"
    );
    Ok(())
}

async fn eval(args: EvalArgs) -> anyhow::Result<()> {
    let result = tokio::task::spawn_blocking(move || evaluate_checkpoint(&args))
        .await
        .context("evaluation task failed")??;
    println!("{result}");
    Ok(())
}

fn evaluate_checkpoint(args: &EvalArgs) -> anyhow::Result<String> {
    let (description, params, metadata) = checkpoint::load_with_metadata(&args.checkpoint)?;
    let model = Mlp::new(&description)
        .with_context(|| format!("{}: invalid model description", args.checkpoint.display()))?;
    let dataset = crate::eval_data::load_eval_data(args, &description, &metadata)?;
    if model.is_regression() {
        let features = dataset.to_f32();
        let mut workspace = Workspace::new(&model, 1000);
        let pass =
            model.evaluate_regression(&params, features.view(), &dataset.targets, &mut workspace);
        let report = serde_json::json!({
            "checkpoint": args.checkpoint.display().to_string(),
            "data": args.data.display().to_string(),
            "examples": pass.examples,
            "mse": pass.mean_loss(),
            "rmse": pass.mean_loss().sqrt(),
        });
        return Ok(serde_json::to_string_pretty(&report)?);
    }
    if dataset.classes > model.classes() {
        bail!(
            "{}: the data has {} classes, but the checkpoint's model has {}",
            args.data.display(),
            dataset.classes,
            model.classes()
        );
    }
    let features = dataset.to_f32();
    let mut workspace = Workspace::new(&model, 1000);
    let pass = model.evaluate(&params, features.view(), &dataset.labels, &mut workspace);
    let report = serde_json::json!({
        "checkpoint": args.checkpoint.display().to_string(),
        "data": args.data.display().to_string(),
        "examples": pass.examples,
        "accuracy": pass.accuracy(),
        "error": pass.error_rate(),
        "loss": pass.mean_loss(),
    });
    Ok(serde_json::to_string_pretty(&report)?)
}

async fn landscape(args: LandscapeArgs) -> anyhow::Result<()> {
    let options = downpour_report::LandscapeOptions {
        data: args.data,
        points: args.points,
        train_examples: args.train_examples,
    };
    let run_dir = args.run_dir;
    let (points, run_dir) = tokio::task::spawn_blocking(move || {
        downpour_report::landscape(&run_dir, &options).map(|points| (points, run_dir))
    })
    .await
    .context("landscape task failed")??;
    println!("    alpha  train loss  train error  val loss  val error");
    for p in &points {
        println!(
            "{:>9.2}  {:>10.4}  {:>10.2}%  {:>8.4}  {:>8.2}%",
            p.alpha,
            p.train_loss,
            100.0 * p.train_error,
            p.validation_loss,
            100.0 * p.validation_error
        );
    }
    println!(
        "wrote {} and {}",
        run_dir
            .join(downpour_report::landscape::LANDSCAPE_CSV)
            .display(),
        run_dir
            .join(downpour_report::landscape::LANDSCAPE_SVG)
            .display()
    );
    Ok(())
}

fn report(args: ReportArgs) -> anyhow::Result<()> {
    let path = downpour_report::write_report(&args.run_dir)?;
    println!("wrote {}", path.display());
    Ok(())
}
