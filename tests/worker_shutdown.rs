//! A worker that shuts down deregisters: in async mode the coordinator
//! hands its unfinished work to the others at once, long before its lease
//! would expire, and the run finishes.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::future::pending;
use std::path::PathBuf;
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, prepare};
use downpour_model::ModelSpec;
use downpour_proto::auth::ClusterToken;
use downpour_worker::WorkerConfig;
use tokio::net::TcpListener;
use tokio::time::timeout;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Resolves once the coordinator has logged `passes` validation passes.
async fn validation_passes(run_dir: PathBuf, passes: usize) {
    loop {
        let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap_or_default();
        if events.lines().count() >= passes {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_worker_hands_work_to_others() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 6_000, 1_000);
    let run_dir = dir.path().join("run");
    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        data,
        model: ModelSpec::Mlp { hidden: vec![32] },
        workers: 2,
        eval_every: 20,
        patience: 5,
        max_epochs: 4,
        validation_size: 1_000,
        momentum: 0.5,
        // Far longer than the test may take, so only the deregistration
        // can hand the stopped worker's shard to the other.
        lease_timeout: Duration::from_secs(3_600),
        ..CoordinatorConfig::with_defaults(run_dir.clone(), vec![ps_address])
    };
    let prepared = prepare(config).unwrap();
    let token = ClusterToken::random();

    let server = tokio::spawn(downpour_ps::serve(ps_listener, token.clone(), pending()));
    let worker_config = |name: &str| WorkerConfig {
        coordinator: coordinator_address.clone(),
        ps: None,
        name: name.to_owned(),
        connect_timeout: Duration::from_secs(10),
        token: token.clone(),
    };
    let stopping = tokio::spawn(downpour_worker::run(
        worker_config("stopping"),
        validation_passes(run_dir.clone(), 1),
    ));
    let staying = tokio::spawn(downpour_worker::run(worker_config("staying"), pending()));
    let summary = timeout(
        TIMEOUT,
        downpour_coordinator::run(prepared, coordinator_listener, token, pending()),
    )
    .await
    .expect("training finished in time")
    .expect("training succeeded");

    let stopped = timeout(TIMEOUT, stopping).await.unwrap().unwrap();
    assert!(
        matches!(stopped, Err(downpour_worker::WorkerError::Interrupted)),
        "{stopped:?}"
    );
    timeout(TIMEOUT, staying)
        .await
        .unwrap()
        .unwrap()
        .expect("the remaining worker stopped cleanly");
    timeout(TIMEOUT, server).await.unwrap().unwrap().unwrap();

    let record = |name: &str| {
        summary
            .per_worker
            .iter()
            .find(|worker| worker.name == name)
            .unwrap()
            .clone()
    };
    assert_eq!(record("stopping").leases_lost, 1);
    assert!(record("stopping").shards.is_empty());
    assert_eq!(record("staying").leases_lost, 0);
    let mut shards = record("staying").shards;
    shards.sort_unstable();
    assert_eq!(shards, vec![0, 1]);
    // A range the stopped worker had in flight counts as reassigned, but
    // whether it had one depends on when the signal came. The test checks
    // coverage instead: every finished epoch covered the whole training
    // set, so the other worker did the stopped worker's shard.
    assert!(summary.epoch_usage.len() >= 2, "{:?}", summary.epoch_usage);
    let finished = &summary.epoch_usage[..summary.epoch_usage.len() - 1];
    for epoch in finished {
        assert_eq!(epoch.examples, summary.train_examples as u64);
    }
}
