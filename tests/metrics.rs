//! The Prometheus metrics of a whole in-process cluster agree with the run
//! summary, and the parameter server counts rejected pushes by reason. All
//! over real gRPC on 127.0.0.1.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::future::pending;
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, CoordinatorMetrics, prepare};
use downpour_metrics::prometheus::Registry;
use downpour_metrics::prometheus::proto::{MetricFamily, MetricType};
use downpour_model::ModelSpec;
use downpour_proto::auth::{ClusterToken, authenticated};
use downpour_proto::encode_f32s;
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{InitRequest, OptimizerConfig, PushRequest, StopTrainingRequest};
use downpour_ps::ParameterServerService;
use downpour_worker::{WorkerConfig, WorkerMetrics};
use tokio::net::TcpListener;
use tokio::time::timeout;
use tonic::transport::Channel;

const TIMEOUT: Duration = Duration::from_secs(300);

/// Returns the value of the sample of `name` whose labels include every
/// pair in `labels`: a counter's or gauge's value, or a histogram's count.
fn sample(families: &[MetricFamily], name: &str, labels: &[(&str, &str)]) -> f64 {
    let family = families
        .iter()
        .find(|family| family.name() == name)
        .unwrap_or_else(|| panic!("no metric {name}"));
    let metric = family
        .get_metric()
        .iter()
        .find(|metric| {
            labels.iter().all(|(key, value)| {
                metric
                    .get_label()
                    .iter()
                    .any(|pair| pair.name() == *key && pair.value() == *value)
            })
        })
        .unwrap_or_else(|| panic!("no sample of {name} with labels {labels:?}"));
    match family.get_field_type() {
        MetricType::HISTOGRAM => metric.get_histogram().get_sample_count() as f64,
        MetricType::COUNTER => metric.get_counter().get_value(),
        _ => metric.get_gauge().get_value(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_metrics_match_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 3_000, 500);
    let run_dir = dir.path().join("run");
    let registry = Registry::new();

    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        data,
        model: ModelSpec::Mlp { hidden: vec![32] },
        workers: 2,
        eval_every: 20,
        max_epochs: 2,
        validation_size: 500,
        tensorboard: true,
        ..CoordinatorConfig::with_defaults(run_dir.clone(), vec![ps_address])
    };
    let prepared = prepare(config).unwrap();
    let token = ClusterToken::random();

    let service = ParameterServerService::new()
        .with_metrics(&registry, "ps-0")
        .unwrap();
    let server = tokio::spawn(downpour_ps::serve_service(
        service,
        ps_listener,
        token.clone(),
        pending(),
    ));
    let names = ["test-0", "test-1"];
    let workers: Vec<_> = names
        .iter()
        .map(|name| {
            let config = WorkerConfig {
                coordinator: coordinator_address.clone(),
                ps: None,
                name: (*name).to_owned(),
                connect_timeout: Duration::from_secs(10),
                token: token.clone(),
            };
            let metrics = WorkerMetrics::new(&registry, name).unwrap();
            tokio::spawn(downpour_worker::run_with_metrics(
                config,
                metrics,
                pending(),
            ))
        })
        .collect();
    let coordinator_metrics = CoordinatorMetrics::new(&registry).unwrap();
    let summary = timeout(
        TIMEOUT,
        downpour_coordinator::run_with_metrics(
            prepared,
            coordinator_listener,
            token,
            pending(),
            coordinator_metrics,
        ),
    )
    .await
    .expect("training finished in time")
    .expect("training succeeded");
    let mut reports = Vec::new();
    for worker in workers {
        reports.push(timeout(TIMEOUT, worker).await.unwrap().unwrap().unwrap());
    }
    timeout(TIMEOUT, server).await.unwrap().unwrap().unwrap();

    let families = registry.gather();
    let ps = [("node", "ps-0")];
    assert_eq!(
        sample(&families, "downpour_ps_updates_total", &ps),
        summary.updates as f64
    );
    assert_eq!(
        sample(&families, "downpour_ps_pushes_applied_total", &ps),
        summary.pushes as f64
    );
    assert_eq!(
        sample(&families, "downpour_ps_examples_total", &ps),
        summary.examples as f64
    );
    assert_eq!(
        sample(&families, "downpour_ps_duplicate_pushes_total", &ps),
        summary.duplicate_pushes as f64
    );
    assert_eq!(
        sample(&families, "downpour_ps_push_staleness_updates", &ps),
        summary.staleness.histogram.values().sum::<u64>() as f64
    );
    assert_eq!(sample(&families, "downpour_ps_training_stopped", &ps), 1.0);

    let coordinator = [("node", "coordinator")];
    assert_eq!(
        sample(
            &families,
            "downpour_coordinator_evaluations_total",
            &coordinator
        ),
        f64::from(summary.evaluations)
    );
    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(events.lines().last().unwrap()).unwrap();
    assert_eq!(
        sample(
            &families,
            "downpour_coordinator_validation_error_ratio",
            &coordinator
        ),
        last["validation_error"].as_f64().unwrap()
    );
    assert_eq!(
        sample(
            &families,
            "downpour_coordinator_best_validation_error_ratio",
            &coordinator
        ),
        summary.best_validation_error.unwrap()
    );
    assert!(
        sample(
            &families,
            "downpour_rpc_server_duration_seconds",
            &[("node", "coordinator"), ("method", "Register")]
        ) >= 2.0
    );

    for (name, report) in names.iter().zip(&reports) {
        let worker = [("node", *name)];
        assert_eq!(
            sample(&families, "downpour_worker_minibatches_total", &worker),
            report.minibatches as f64,
            "{name}"
        );
        assert_eq!(
            sample(&families, "downpour_worker_examples_total", &worker),
            report.examples as f64,
            "{name}"
        );
        assert_eq!(
            sample(&families, "downpour_worker_pushes_applied_total", &worker),
            report.pushes as f64,
            "{name}"
        );
        let norm = sample(&families, "downpour_worker_gradient_norm", &worker);
        assert!(norm.is_finite(), "{name}: gradient norm {norm}");
        assert!(norm > 0.0, "{name}: gradient norm {norm}");
        let pushes = sample(
            &families,
            "downpour_rpc_client_duration_seconds",
            &[("node", name), ("method", "Push")],
        );
        assert!(
            pushes >= report.pushes as f64,
            "{name}: {pushes} timed pushes"
        );
    }

    let event_files: Vec<_> = std::fs::read_dir(&run_dir)
        .unwrap()
        .filter_map(Result::ok)
        .filter(|entry| entry.file_name().to_string_lossy().contains("tfevents"))
        .collect();
    assert_eq!(event_files.len(), 1, "one TensorBoard event file");
}

#[tokio::test]
async fn rejected_pushes_counted_by_reason() {
    let registry = Registry::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let token = ClusterToken::random();
    let service = ParameterServerService::new()
        .with_metrics(&registry, "ps-0")
        .unwrap();
    tokio::spawn(downpour_ps::serve_service(
        service,
        listener,
        token.clone(),
        pending(),
    ));
    let channel = Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ParameterServerClient::new(authenticated(channel, &token));
    let push = |worker_id: u32, sequence: u64, gradient: &[f32]| PushRequest {
        worker_id,
        sequence,
        gradient: encode_f32s(gradient),
        examples: 8,
        loss: 1.0,
        ..Default::default()
    };

    client.push(push(0, 1, &[1.0, 1.0])).await.unwrap_err();
    client
        .init(InitRequest {
            run_id: "metrics".into(),
            params: encode_f32s(&[1.0, 2.0]),
            optimizer: Some(OptimizerConfig {
                learning_rate: 0.1,
                momentum: 0.0,
                weight_decay: 0.0,
                warmup_updates: 0,
            }),
            worker_batches: vec![10],
            push_every: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    client.push(push(0, 1, &[1.0])).await.unwrap_err();
    client.push(push(0, 2, &[f32::NAN, 1.0])).await.unwrap_err();
    client.push(push(3, 1, &[1.0, 1.0])).await.unwrap_err();
    let misaligned = PushRequest {
        gradient: vec![0u8; 7].into(),
        ..push(0, 2, &[])
    };
    client.push(misaligned).await.unwrap_err();
    client.push(push(0, 3, &[1.0, 1.0])).await.unwrap();
    client.stop_training(StopTrainingRequest {}).await.unwrap();
    let stopped = client.push(push(0, 4, &[1.0, 1.0])).await.unwrap();
    assert!(stopped.get_ref().training_stopped);

    let families = registry.gather();
    let rejected = |reason: &str| {
        sample(
            &families,
            "downpour_ps_pushes_rejected_total",
            &[("node", "ps-0"), ("reason", reason)],
        )
    };
    assert_eq!(rejected("not_initialised"), 1.0);
    assert_eq!(rejected("wrong_length"), 1.0);
    assert_eq!(rejected("non_finite_gradient"), 1.0);
    assert_eq!(rejected("out_of_schedule"), 1.0);
    assert_eq!(rejected("training_stopped"), 1.0);
    assert_eq!(rejected("malformed"), 1.0);
    assert_eq!(rejected("diverged"), 0.0);
    let ps = [("node", "ps-0")];
    assert_eq!(
        sample(&families, "downpour_ps_pushes_applied_total", &ps),
        1.0
    );
    assert_eq!(
        sample(
            &families,
            "downpour_rpc_server_duration_seconds",
            &[("node", "ps-0"), ("method", "Push")]
        ),
        7.0
    );
}
