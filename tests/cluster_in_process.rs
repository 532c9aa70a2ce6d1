//! A whole cluster in one process: a coordinator, a parameter server and
//! three workers on 127.0.0.1, talking real gRPC, trained on a subset of the
//! bundled MNIST.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::future::pending;
use std::path::Path;
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, RunSummary, prepare};
use downpour_data::{checkpoint, mnist};
use downpour_model::{Mlp, ModelSpec, Workspace};
use downpour_proto::auth::ClusterToken;
use downpour_ps::{Compensation, Consistency};
use downpour_worker::{WorkerConfig, WorkerReport};
use tokio::net::TcpListener;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Clusters in this file run one at a time: on a small machine, several
/// clusters at once starve each other's workers, which changes staleness
/// and so the accuracy the tests check.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A finished in-process run: what the coordinator and the workers returned.
struct Cluster {
    summary: RunSummary,
    reports: Vec<WorkerReport>,
}

/// Trains `mlp:64` on `data` with `workers` workers and `ps_shards`
/// parameter servers, all in this process on 127.0.0.1.
async fn run_cluster(data: &Path, run_dir: &Path, workers: usize, ps_shards: usize) -> Cluster {
    run_cluster_with(data, run_dir, workers, ps_shards, |_| {}).await
}

/// Like `run_cluster`, with `adjust` applied to the coordinator's settings.
async fn run_cluster_with(
    data: &Path,
    run_dir: &Path,
    workers: usize,
    ps_shards: usize,
    adjust: impl FnOnce(&mut CoordinatorConfig),
) -> Cluster {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let mut ps_listeners = Vec::new();
    let mut ps_addresses = Vec::new();
    for _ in 0..ps_shards {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        ps_addresses.push(listener.local_addr().unwrap().to_string());
        ps_listeners.push(listener);
    }
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let mut config = CoordinatorConfig {
        data: data.to_owned(),
        model: ModelSpec::Mlp { hidden: vec![64] },
        workers,
        eval_every: 40,
        patience: 5,
        max_epochs: 10,
        validation_size: 1_000,
        ..CoordinatorConfig::with_defaults(run_dir.to_owned(), ps_addresses)
    };
    adjust(&mut config);
    let prepared = prepare(config).unwrap();
    let token = ClusterToken::random();

    let servers: Vec<_> = ps_listeners
        .into_iter()
        .map(|listener| tokio::spawn(downpour_ps::serve(listener, token.clone(), pending())))
        .collect();
    let worker_tasks: Vec<_> = (0..workers)
        .map(|index| {
            let config = WorkerConfig {
                coordinator: coordinator_address.clone(),
                ps: None,
                name: format!("test-{index}"),
                connect_timeout: Duration::from_secs(10),
                token: token.clone(),
            };
            tokio::spawn(downpour_worker::run(config, pending()))
        })
        .collect();
    let summary = timeout(
        TIMEOUT,
        downpour_coordinator::run(prepared, coordinator_listener, token, pending()),
    )
    .await
    .expect("training finished in time")
    .expect("training succeeded");
    let mut reports = Vec::new();
    for worker in worker_tasks {
        let report = timeout(TIMEOUT, worker).await.unwrap().unwrap();
        reports.push(report.expect("worker stopped cleanly"));
    }
    for server in servers {
        timeout(TIMEOUT, server)
            .await
            .expect("parameter server stopped after the run")
            .unwrap()
            .unwrap();
    }
    Cluster { summary, reports }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_workers_train_mnist_subset() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 2_000);
    let run_dir = dir.path().join("run");

    // Stale gradients from three asynchronous workers add to the momentum,
    // and at 0.9 some runs on this small subset stalled below 80%.
    let Cluster { summary, reports } = run_cluster_with(&data, &run_dir, 3, 1, |config| {
        config.momentum = 0.5;
    })
    .await;

    // Accuracy well above the 10% of chance.
    let accuracy = summary.test_accuracy.expect("the subset has a test split");
    assert!(
        accuracy >= 0.80,
        "test accuracy {accuracy} after {:.2} epochs, {} evaluations, stopped by {}",
        summary.epochs,
        summary.evaluations,
        summary.stop_reason
    );
    assert_eq!(summary.test_examples, 2_000);
    assert_eq!(summary.train_examples, 5_000);
    assert_eq!(summary.validation_examples, 1_000);
    assert!(
        ["early_stopping", "max_epochs"].contains(&summary.stop_reason.as_str()),
        "stop reason {}",
        summary.stop_reason
    );

    // Every worker pushed, and the server applied every push.
    assert_eq!(summary.workers, 3);
    assert_eq!(reports.len(), 3);
    for report in &reports {
        assert!(
            report.pushes > 0,
            "worker {} pushed nothing",
            report.worker_id
        );
        let record = &summary.per_worker[report.worker_id as usize];
        assert_eq!(record.pushes, report.pushes);
        // A worker drops the rest of its range when training stops, so the
        // coordinator counts at most one range less than the worker did.
        assert!(record.examples <= report.examples);
        assert!(report.examples - record.examples < 16 * 64);
    }
    // θ is frozen at the stop decision: pushes that arrive later are not
    // applied, so the updates are exactly the pushes the workers had
    // accepted.
    let pushes: u64 = reports.iter().map(|r| r.pushes).sum();
    let examples: u64 = reports.iter().map(|r| r.examples).sum();
    assert_eq!(summary.updates, pushes);
    assert_eq!(summary.pushes, pushes);
    assert!(summary.examples <= examples);
    assert_eq!(summary.consistency, "async");
    assert_eq!(summary.staleness.histogram.values().sum::<u64>(), pushes);
    assert!((summary.epochs - summary.examples as f64 / 5_000.0).abs() < 1e-9);

    // The files record what the run did.
    let written: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run_dir.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(written["test_accuracy"].as_f64(), Some(accuracy));
    assert_eq!(written["updates"].as_u64(), Some(summary.updates));
    assert_eq!(written["workers"].as_u64(), Some(3));
    assert_eq!(
        written["stop_reason"].as_str(),
        Some(summary.stop_reason.as_str())
    );
    for key in [
        "best_validation_error",
        "epochs",
        "wall_seconds",
        "examples_per_second",
    ] {
        assert!(written[key].is_number(), "summary.json lacks {key}");
    }

    let events: Vec<serde_json::Value> = std::fs::read_to_string(run_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(events.len(), summary.evaluations as usize);
    let best_in_log = events
        .iter()
        .map(|e| e["validation_error"].as_f64().unwrap())
        .fold(f64::INFINITY, f64::min);
    assert_eq!(Some(best_in_log), summary.best_validation_error);
    for key in [
        "epoch",
        "updates",
        "examples",
        "wall_seconds",
        "train_loss",
        "validation_error",
    ] {
        assert!(!events[0][key].is_null(), "event row lacks {key}");
    }
    if summary.stop_reason == "early_stopping" {
        let best_index = events
            .iter()
            .position(|e| e["validation_error"].as_f64() == Some(best_in_log))
            .unwrap();
        assert_eq!(
            events[best_index]["updates"].as_u64(),
            Some(summary.best_updates)
        );
        assert_eq!(
            events.len() - 1 - best_index,
            5,
            "stops after a patience of 5"
        );
    }

    // The checkpoint contains the best θ: scoring it gives the reported accuracy.
    let (description, params) = checkpoint::load(&run_dir.join("best.safetensors")).unwrap();
    let model = Mlp::new(&description).unwrap();
    let test = mnist::load(&data).unwrap().test.unwrap();
    let mut workspace = Workspace::new(&model, 500);
    let pass = model.evaluate(&params, test.to_f32().view(), &test.labels, &mut workspace);
    assert_eq!(pass.accuracy(), accuracy);
    assert!(run_dir.join("model.json").exists());
    assert!(run_dir.join("initial.safetensors").exists());
    assert!(run_dir.join("last.safetensors").exists());
}

/// θ split over two parameter servers trains as well, and every worker's
/// pushes reach both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_parameter_servers_train_mnist_subset() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 2_000);
    let run_dir = dir.path().join("run");

    let Cluster { summary, reports } = run_cluster(&data, &run_dir, 2, 2).await;

    let accuracy = summary.test_accuracy.unwrap();
    assert!(accuracy >= 0.80, "test accuracy {accuracy}");
    let pushes: u64 = reports.iter().map(|r| r.pushes).sum();
    assert!(reports.iter().all(|r| r.pushes > 0));
    assert_eq!(summary.updates, summary.pushes);
    // A push in flight at the stop may reach one server before it stops
    // and the other after, so the counts can differ by one per worker.
    assert!(
        summary.pushes.abs_diff(pushes) <= 2,
        "{} vs {pushes}",
        summary.pushes
    );
    let (description, params) = checkpoint::load(&run_dir.join("best.safetensors")).unwrap();
    assert_eq!(params.len(), description.parameters);
    let model = Mlp::new(&description).unwrap();
    let test = mnist::load(&data).unwrap().test.unwrap();
    let mut workspace = Workspace::new(&model, 500);
    let pass = model.evaluate(&params, test.to_f32().view(), &test.labels, &mut workspace);
    assert_eq!(pass.accuracy(), accuracy);
}

/// With one worker the updates are applied in a fixed order, so splitting θ
/// over 1, 2 or 4 parameter servers must give bitwise the same final θ.
/// Sending θ and gradients in pieces of 10,000 values must too: the model
/// has 50,890 parameters, so each of 2 servers gets 3 pieces per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_count_and_pieces_keep_theta() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 3_000, 500);

    let mut finals = Vec::new();
    for (ps_shards, piece_values) in [(1, None), (2, None), (4, None), (2, Some(10_000))] {
        let run_dir = dir.path().join(format!("run-{ps_shards}-{piece_values:?}"));
        let Cluster { summary, .. } = run_cluster_with(&data, &run_dir, 1, ps_shards, |config| {
            config.max_epochs = 2;
            config.patience = 1_000;
            if let Some(piece_values) = piece_values {
                config.piece_values = piece_values;
            }
        })
        .await;
        assert_eq!(summary.stop_reason, "max_epochs");
        assert_eq!(summary.parameters, 50_890);
        let (_, params) = checkpoint::load(&run_dir.join("last.safetensors")).unwrap();
        finals.push((ps_shards, piece_values, summary.updates, params));
    }

    let (_, _, updates, params) = &finals[0];
    for (ps_shards, piece_values, other_updates, other_params) in &finals[1..] {
        let setup = format!("{ps_shards} servers, pieces {piece_values:?}");
        assert_eq!(other_updates, updates, "{setup}");
        let differing = params
            .iter()
            .zip(other_params)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differing, 0, "θ differs with {setup}");
    }
}

/// 1,281 training examples over two workers: shards of 641 and 640
/// examples, so 11 and 10 minibatches of 64.
fn uneven_subset(dir: &Path) -> std::path::PathBuf {
    support::mnist_subset(&dir.join("mnist"), 2_281, 500)
}

/// Sync mode averages one push per worker into each update, in worker
/// order, so splitting θ over 1, 2 or 4 parameter servers gives bitwise the
/// same θ with two workers too, and the counts follow from the shard sizes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_ignores_server_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = uneven_subset(dir.path());

    let mut finals = Vec::new();
    for ps_shards in [1, 2, 4] {
        let run_dir = dir.path().join(format!("run-{ps_shards}"));
        let Cluster { summary, reports } =
            run_cluster_with(&data, &run_dir, 2, ps_shards, |config| {
                config.consistency = Consistency::Sync;
                config.max_epochs = 2;
                config.patience = 1_000;
                config.eval_every = 5;
            })
            .await;
        assert_eq!(summary.stop_reason, "max_epochs");
        // Each epoch has 11 steps; the shorter shard skips the last one.
        assert_eq!(summary.updates, 22);
        assert_eq!(summary.pushes, 2 * (11 + 10));
        assert_eq!(reports.iter().map(|r| r.pushes).sum::<u64>(), 42);
        assert_eq!(summary.staleness.max, 0);
        assert_eq!(summary.consistency, "sync");
        let (_, params) = checkpoint::load(&run_dir.join("last.safetensors")).unwrap();
        finals.push((ps_shards, params));
    }

    let (_, params) = &finals[0];
    for (ps_shards, other) in &finals[1..] {
        let differing = params
            .iter()
            .zip(other)
            .filter(|(a, b)| a.to_bits() != b.to_bits())
            .count();
        assert_eq!(differing, 0, "θ differs with {ps_shards} servers");
    }
}

/// Pushing every 4 minibatches in sync mode gives one update per 4
/// minibatches of the longest shard, and bf16 gradients still train.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_mode_with_push_every_and_bf16() {
    let dir = tempfile::tempdir().unwrap();
    let data = uneven_subset(dir.path());
    let run_dir = dir.path().join("run");

    let Cluster { summary, .. } = run_cluster_with(&data, &run_dir, 2, 2, |config| {
        config.consistency = Consistency::Sync;
        config.push_every = 4;
        config.push_bf16 = true;
        config.max_epochs = 2;
        config.patience = 1_000;
        config.eval_every = 2;
    })
    .await;

    // 11 minibatches in steps of 4: pushes after minibatches 4, 8 and 11
    // (and 4, 8 and 10 for the shorter shard).
    assert_eq!(summary.updates, 2 * 3);
    assert_eq!(summary.pushes, 2 * 2 * 3);
    assert_eq!(summary.examples, 2 * 1_281);
    assert_eq!(summary.push_every, 4);
    assert_eq!(summary.push_encoding, "bf16");
    let accuracy = summary.test_accuracy.unwrap();
    assert!(accuracy > 0.3, "test accuracy {accuracy}");
}

/// Bounded staleness keeps every push within the bound's reach: with three
/// workers and S = 0, another worker can apply at most 2S + 1 pushes while
/// one computes, so no push is more than 2 updates stale. Staleness
/// scaling and delay compensation train as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounded_mode_limits_staleness() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 2_000);
    let run_dir = dir.path().join("run");

    let Cluster { summary, .. } = run_cluster_with(&data, &run_dir, 3, 1, |config| {
        config.consistency = Consistency::Bounded { bound: 0 };
        config.compensation = Compensation {
            scale_by_staleness: true,
            dc_lambda: 0.04,
        };
        config.max_epochs = 3;
    })
    .await;

    assert_eq!(summary.consistency, "bounded:0");
    assert!(summary.staleness.max <= 2, "{:?}", summary.staleness);
    assert_eq!(
        summary.staleness.histogram.values().sum::<u64>(),
        summary.pushes
    );
    assert!(summary.staleness_scaling);
    assert_eq!(summary.dc_lambda, 0.04);
    let accuracy = summary.test_accuracy.unwrap();
    assert!(accuracy >= 0.80, "test accuracy {accuracy}");
}
