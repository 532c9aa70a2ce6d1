//! Optimizer diagnostics of whole in-process clusters on a subset of the
//! bundled MNIST: the ill-conditioning check at two learning rates and
//! during a learning-rate warm-up, and gradient clipping counted per
//! evaluation.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::future::pending;
use std::path::Path;
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, RunSummary, defaults, prepare};
use downpour_data::{checkpoint, mnist};
use downpour_model::{Mlp, ModelSpec, Workspace};
use downpour_proto::auth::ClusterToken;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Clusters in this file run one at a time, so that they do not starve
/// each other's workers.
static ONE_CLUSTER_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Trains `mlp:64` with two workers and one parameter server on `data`,
/// with `adjust` applied to the settings, and returns the summary and the
/// rows of `events.jsonl`.
async fn train(
    data: &Path,
    run_dir: &Path,
    adjust: impl FnOnce(&mut CoordinatorConfig),
) -> (RunSummary, Vec<Value>) {
    let _turn = ONE_CLUSTER_AT_A_TIME.lock().await;
    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let mut config = CoordinatorConfig {
        data: data.to_owned(),
        model: ModelSpec::Mlp { hidden: vec![64] },
        workers: 2,
        eval_every: 20,
        patience: 100,
        max_epochs: 2,
        validation_size: 1_000,
        ..CoordinatorConfig::with_defaults(run_dir.to_owned(), vec![ps_address])
    };
    adjust(&mut config);
    let prepared = prepare(config).unwrap();
    let token = ClusterToken::random();
    let server = tokio::spawn(downpour_ps::serve(ps_listener, token.clone(), pending()));
    let workers: Vec<_> = (0..2)
        .map(|index| {
            let config = downpour_worker::WorkerConfig {
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
    for worker in workers {
        let report = timeout(TIMEOUT, worker).await.unwrap().unwrap();
        report.expect("worker stopped cleanly");
    }
    timeout(TIMEOUT, server).await.unwrap().unwrap().unwrap();
    let events = std::fs::read_to_string(run_dir.join("events.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    (summary, events)
}

/// Checks each row's curvature columns against each other and returns the
/// share of flagged evaluations. `step_after` returns the expected step ε
/// of the pass after that many updates.
fn flagged_share(events: &[Value], step_after: impl Fn(u64) -> f64) -> f64 {
    let mut flagged = 0;
    for event in events {
        let curvature = &event["curvature"];
        let gg = curvature["gradient_norm_squared"].as_f64().unwrap();
        let ghg = curvature["curvature"].as_f64().unwrap();
        let epsilon = curvature["learning_rate"].as_f64().unwrap();
        let expected_step = step_after(event["updates"].as_u64().unwrap());
        assert!(
            (epsilon - expected_step).abs() < 1e-6 * expected_step,
            "ε {epsilon}, expected {expected_step}: {event}"
        );
        let predicted = curvature["predicted_change"].as_f64().unwrap();
        let expected = 0.5 * epsilon * epsilon * ghg - epsilon * gg;
        assert!((predicted - expected).abs() <= 1e-9 * expected.abs().max(1.0));
        let flag = curvature["ill_conditioned"].as_bool().unwrap();
        assert_eq!(
            flag,
            0.5 * epsilon * epsilon * ghg > epsilon * gg,
            "{event}"
        );
        flagged += usize::from(flag);
    }
    flagged as f64 / events.len() as f64
}

/// Settings of the curvature runs: 10 epochs of the 5,000 training
/// examples with a validation pass every 10 updates, at most 78 passes.
fn curvature_run(config: &mut CoordinatorConfig) {
    config.max_epochs = 10;
    config.eval_every = 10;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curvature_flag_at_two_learning_rates() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    let momentum = f64::from(defaults::MOMENTUM);

    let (_, default_events) = train(&data, &dir.path().join("default"), curvature_run).await;
    let default_rate = f64::from(defaults::LEARNING_RATE) / (1.0 - momentum);
    let default_share = flagged_share(&default_events, |_| default_rate);

    let (_, fast_events) = train(&data, &dir.path().join("tenfold"), |config| {
        curvature_run(config);
        config.learning_rate = 10.0 * defaults::LEARNING_RATE;
    })
    .await;
    let fast_rate = 10.0 * f64::from(defaults::LEARNING_RATE) / (1.0 - momentum);
    let fast_share = flagged_share(&fast_events, |_| fast_rate);

    eprintln!(
        "flagged evaluations: {default_share:.2} of {} at the default learning rate, {fast_share:.2} of {} at ten times it",
        default_events.len(),
        fast_events.len()
    );
    assert!(
        default_events.len() >= 20,
        "{} passes",
        default_events.len()
    );
    assert!(fast_events.len() >= 20, "{} passes", fast_events.len());

    // The flag compares the Rayleigh quotient g'Hg/g'g with 2/ε. Printed
    // for the first pass, about 10 updates in, as a multiple of 2/ε.
    let first_ratio = |events: &[Value]| {
        let curvature = &events[0]["curvature"];
        let quotient = curvature["curvature"].as_f64().unwrap()
            / curvature["gradient_norm_squared"].as_f64().unwrap();
        quotient * curvature["learning_rate"].as_f64().unwrap() / 2.0
    };
    eprintln!(
        "first pass: g'Hg/g'g is {:.3} of 2/ε at the default rate, {:.3} at ten times it",
        first_ratio(&default_events),
        first_ratio(&fast_events)
    );
    let first_flag =
        |events: &[Value]| events[0]["curvature"]["ill_conditioned"].as_bool().unwrap();
    assert!(first_flag(&fast_events), "{}", fast_events[0]);
    assert!(!first_flag(&default_events), "{}", default_events[0]);
    // NOTE: the shares themselves are not asserted. In 26 runs of this test
    // 0% to 5% of the passes were flagged at the default rate and 4% to 41%
    // at ten times it, and three times the two counts were equal or one
    // apart. The fast run diverges in its first passes, its ReLUs die, and
    // the nearly constant network left has too little curvature along g to
    // flag.
}

/// Returns the step ε of the ill-conditioning check after `updates`
/// updates of a linear warm-up over `warmup_updates` to `learning_rate`.
fn warmup_step(learning_rate: f32, warmup_updates: u64, updates: u64) -> f64 {
    let ramp = ((updates + 1) as f64 / warmup_updates as f64).min(1.0);
    f64::from(learning_rate) * ramp / (1.0 - f64::from(defaults::MOMENTUM))
}

/// Ten times the default learning rate with a warm-up over five epochs and
/// gradients clipped to norm 0.5 trains without the divergence of
/// `curvature_flag_at_two_learning_rates`, and most of its passes are
/// flagged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curvature_flag_with_warmup_and_clipping() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    // Five epochs of the 5,000 training examples at batch 64.
    let warmup_updates = 5 * 5_000 / defaults::BATCH_SIZE as u64;
    let settings = |config: &mut CoordinatorConfig| {
        curvature_run(config);
        config.warmup_updates = warmup_updates;
        config.clip_norm = 0.5;
    };

    let (default_summary, default_events) =
        train(&data, &dir.path().join("default"), settings).await;
    let (fast_summary, fast_events) = train(&data, &dir.path().join("tenfold"), |config| {
        settings(config);
        config.learning_rate = 10.0 * defaults::LEARNING_RATE;
    })
    .await;
    let fast_rate = 10.0 * defaults::LEARNING_RATE;
    let default_share = flagged_share(&default_events, |updates| {
        warmup_step(defaults::LEARNING_RATE, warmup_updates, updates)
    });
    let fast_share = flagged_share(&fast_events, |updates| {
        warmup_step(fast_rate, warmup_updates, updates)
    });
    eprintln!(
        "warm-up and clipping: flagged {default_share:.2} of {} passes at the default rate (test accuracy {:?}), {fast_share:.2} of {} at ten times it (test accuracy {:?})",
        default_events.len(),
        default_summary.test_accuracy,
        fast_events.len(),
        fast_summary.test_accuracy,
    );
    assert!(
        default_events.len() >= 20,
        "{} passes",
        default_events.len()
    );
    assert!(fast_events.len() >= 20, "{} passes", fast_events.len());
    // The fast run still learns: a dead network scores about 10%.
    let fast_accuracy = fast_summary.test_accuracy.unwrap();
    assert!(fast_accuracy > 0.5, "test accuracy {fast_accuracy}");
    assert!(fast_share > 0.5, "{fast_share} of the passes flagged");
    assert!(
        default_share < fast_share,
        "{default_share} at the default rate, {fast_share} at ten times it"
    );
    // NOTE: in 15 runs of this test on a shared 2-core machine, 3% to 21%
    // of the passes were flagged at the default rate and 89% to 98% at ten
    // times it. The test accuracies were 90% to 91% and 82% to 88%.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curvature_step_follows_warmup() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 3_000, 500);
    let warmup_updates = 100;
    // 2,000 training examples are about 32 updates per epoch.
    let (summary, events) = train(&data, &dir.path().join("run"), |config| {
        config.max_epochs = 8;
        config.eval_every = 10;
        config.warmup_updates = warmup_updates;
    })
    .await;
    assert_eq!(summary.warmup_updates, warmup_updates);

    // The pass after `updates` updates probes with the step of update
    // number `updates` (from 0), lr·(updates + 1)/100 until the ramp ends.
    let mut during_warmup = 0;
    let mut after_warmup = 0;
    for event in &events {
        let updates = event["updates"].as_u64().unwrap();
        let expected = warmup_step(defaults::LEARNING_RATE, warmup_updates, updates);
        let epsilon = event["curvature"]["learning_rate"].as_f64().unwrap();
        assert!(
            (epsilon - expected).abs() <= 1e-6 * expected,
            "ε {epsilon} at update {updates}, expected {expected}"
        );
        if updates < warmup_updates {
            during_warmup += 1;
        } else {
            after_warmup += 1;
        }
    }
    assert!(
        during_warmup >= 2,
        "{during_warmup} passes during the warm-up"
    );
    assert!(after_warmup >= 2, "{after_warmup} passes after the warm-up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clip_norm_counted_per_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 3_000, 500);
    let run_dir = dir.path().join("run");
    let clip_norm = 0.05;
    let (summary, events) = train(&data, &run_dir, |config| {
        config.max_epochs = 1;
        config.clip_norm = clip_norm;
    })
    .await;

    let pushes: Vec<Value> = std::fs::read_to_string(run_dir.join("pushes.jsonl"))
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(!pushes.is_empty());
    let clipped_rows = pushes
        .iter()
        .filter(|push| push["clipped_by_norm"].as_bool().unwrap())
        .count();
    for push in &pushes {
        let norm = push["gradient_norm"].as_f64().unwrap();
        assert_eq!(
            push["clipped_by_norm"].as_bool().unwrap(),
            norm > f64::from(clip_norm),
            "{push}"
        );
    }
    // Early gradients of the MLP have norms near 1, far above 0.05.
    assert!(clipped_rows * 2 > pushes.len(), "{clipped_rows} clipped");

    let sum = |field: &str| -> u64 {
        events
            .iter()
            .map(|event| event["clipping"][field].as_u64().unwrap())
            .sum()
    };
    assert_eq!(sum("pushes"), pushes.len() as u64);
    assert_eq!(sum("clipped_by_norm"), clipped_rows as u64);
    assert_eq!(sum("clipped_values"), 0);
    let norm_count: u64 = events
        .iter()
        .filter_map(|event| event["gradient_norm"]["count"].as_u64())
        .sum();
    assert_eq!(norm_count, pushes.len() as u64);

    // Every push reported by a worker is in its staleness histogram.
    let per_worker: u64 = summary
        .per_worker
        .iter()
        .flat_map(|worker| worker.staleness_histogram.values())
        .sum();
    assert_eq!(per_worker, pushes.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn landscape_endpoints_and_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 3_000, 500);
    let run_dir = dir.path().join("run");
    train(&data, &run_dir, |config| config.max_epochs = 1).await;

    let options = downpour_report::LandscapeOptions {
        data: None,
        points: 21,
        train_examples: 0,
    };
    let points = downpour_report::landscape(&run_dir, &options).unwrap();
    assert_eq!(points.len(), 21);
    assert_eq!(points[0].alpha, -0.5);
    assert_eq!(points[20].alpha, 1.5);

    // The costs of θ₀ and θ* measured directly on the run's splits: the
    // validation split is the tail of the training file.
    let splits = mnist::load(&data).unwrap();
    let (train_split, validation) = splits.train.split_off_tail(1_000).unwrap();
    let cost = |name: &str, set: &downpour_data::Dataset| {
        let (description, params) =
            checkpoint::load(&run_dir.join(format!("{name}.safetensors"))).unwrap();
        let model = Mlp::new(&description).unwrap();
        let mut workspace = Workspace::new(&model, 1000);
        model.evaluate(&params, set.to_f32().view(), &set.labels, &mut workspace)
    };
    for (point, name) in [(&points[5], "initial"), (&points[15], "best")] {
        let on_train = cost(name, &train_split);
        let on_validation = cost(name, &validation);
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * b.abs().max(1.0);
        assert!(
            close(point.train_loss, on_train.mean_loss()),
            "{name}: {point:?} vs {}",
            on_train.mean_loss()
        );
        assert!(close(point.train_error, on_train.error_rate()), "{name}");
        assert!(
            close(point.validation_loss, on_validation.mean_loss()),
            "{name}"
        );
        assert!(
            close(point.validation_error, on_validation.error_rate()),
            "{name}"
        );
    }
    assert!(run_dir.join("landscape.csv").exists());
    let svg = std::fs::read_to_string(run_dir.join("landscape.svg")).unwrap();
    assert!(svg.starts_with("<svg"));

    let report = downpour_report::write_report(&run_dir).unwrap();
    let html = std::fs::read_to_string(report).unwrap();
    // Ten plots of the run and the landscape.
    assert_eq!(html.matches("<figure><svg").count(), 11);
    assert!(
        html.contains("evaluations ("),
        "the report states the flagged share"
    );
    assert!(!html.contains("<script"));
    // Nothing is loaded from elsewhere: the only URL is the SVG namespace.
    let urls = html.replace("http://www.w3.org/2000/svg", "");
    assert!(!urls.contains("http://"));
    assert!(!urls.contains("https://"));
}
