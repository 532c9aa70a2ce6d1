//! Sparse pushes over gRPC on 127.0.0.1: a real LIBSVM minibatch split
//! over two parameter servers and sent in pieces, and the replay of sparse
//! pushes to a server restored from an older checkpoint.

use std::future::pending;
use std::io::BufReader;
use std::path::Path;
use std::time::Duration;

use downpour_data::formats::SparseRows;
use downpour_data::formats::libsvm::LibsvmRows;
use downpour_data::{Dataset, Features};
use downpour_model::{Mlp, ModelDescription, ModelSpec};
use downpour_proto::auth::ClusterToken;
use downpour_proto::encode_f32s;
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{GradientEncoding, InitRequest, OptimizerConfig, PsShard};
use tokio::net::TcpListener;

use super::{Gradient, ParameterServers};
use crate::trainer::Trainer;

const FEATURES: usize = 126;
const ROWS: usize = 32;
const LEARNING_RATE: f32 = 0.5;
const WEIGHT_DECAY: f32 = 0.01;

/// Reads the first `ROWS` examples of the bundled agaricus training file.
fn agaricus_rows() -> Dataset {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../data/agaricus/agaricus.txt.train");
    let file = std::fs::File::open(&path).expect("the agaricus data is in data/agaricus");
    let mut rows = SparseRows::new();
    let mut labels = Vec::new();
    for row in LibsvmRows::new(&path, BufReader::new(file), Default::default()).take(ROWS) {
        let row = row.expect("valid LIBSVM line");
        rows.push_row(&row.indices, &row.values);
        labels.push(row.label.parse().expect("label 0 or 1"));
    }
    let features = Features::Sparse {
        rows,
        width: FEATURES,
    };
    Dataset::new(features, labels, 2).expect("valid data set")
}

/// Starts a parameter server on 127.0.0.1 holding `params`, and returns
/// its address.
async fn start_server(params: &[f32], token: &ClusterToken) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    tokio::spawn(downpour_ps::serve(listener, token.clone(), pending()));
    let channel = downpour_proto::transport::connect_with_retry(
        "parameter server",
        &address,
        Duration::from_secs(10),
        token,
    )
    .await
    .expect("connect");
    let mut client =
        ParameterServerClient::new(downpour_proto::auth::authenticated(channel, token));
    let init = InitRequest {
        run_id: "sparse".into(),
        params: encode_f32s(params),
        optimizer: Some(OptimizerConfig {
            learning_rate: LEARNING_RATE,
            momentum: 0.9,
            weight_decay: WEIGHT_DECAY,
            warmup_updates: 0,
        }),
        push_every: 1,
        ..Default::default()
    };
    client.init(init).await.expect("init");
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sparse_push_carries_touched_values_only() {
    let description = ModelDescription::new(&ModelSpec::Softmax, FEATURES, 2).expect("model");
    let model = Mlp::new(&description).expect("model");
    let initial = model.init_params(3);
    let parameters = initial.len();
    let token = ClusterToken::random();
    // Two servers split θ inside the weight row of class 1.
    let split = 180;
    let mut shards = Vec::new();
    for range in [0..split, split..parameters] {
        let address = start_server(&initial[range.clone()], &token).await;
        shards.push(PsShard {
            address,
            offset: range.start as u64,
            length: range.len() as u64,
        });
    }
    // 40 values per message sends each server's part in pieces.
    let mut servers = ParameterServers::connect(
        &shards,
        None,
        parameters,
        40,
        Duration::from_secs(10),
        &token,
    )
    .await
    .expect("connect");
    let data = agaricus_rows();
    let mut trainer = Trainer::new(model, ROWS, true);
    servers.pull(0, &mut trainer.params).await.expect("pull");
    assert_eq!(trainer.params, initial);
    trainer.step(&data, 0..ROWS);
    let gradient = trainer.sparse_gradient.clone();

    let rows = data.sparse_rows().expect("sparse rows");
    let mut features = rows.indices.clone();
    features.sort_unstable();
    features.dedup();
    // Every class's weight of each feature in the minibatch, plus the biases.
    let touched = features.len() * 2 + 2;
    assert_eq!(gradient.len(), touched);
    assert!(touched < parameters, "the minibatch leaves features out");

    let bytes = encode_f32s(&gradient.values);
    let outcome = servers
        .push(
            Gradient {
                worker_id: 0,
                sequence: 1,
                bytes: &bytes,
                indices: Some(&gradient.indices),
                encoding: GradientEncoding::F32,
                examples: ROWS as u32,
                loss: 0.5,
                epoch: 0,
                batch: 0,
                fetch: true,
            },
            &mut trainer.params,
        )
        .await
        .expect("push");
    assert!(outcome.applied);
    assert_eq!(outcome.pushed_values, touched as u64);
    assert!(outcome.push_bytes > 0);

    // With zero momentum so far, a listed value moves by
    // lr · (g + weight_decay · θ); every other value keeps θ₀ exactly.
    let mut listed = gradient.indices.iter().zip(&gradient.values).peekable();
    for (index, (&after, &before)) in trainer.params.iter().zip(&initial).enumerate() {
        match listed.next_if(|(listed_index, _)| **listed_index as usize == index) {
            Some((_, &g)) => {
                let expected = before - LEARNING_RATE * (g + WEIGHT_DECAY * before);
                assert!(
                    (after - expected).abs() < 1e-6,
                    "θ[{index}] is {after}, expected {expected}"
                );
                assert_ne!(after, before, "θ[{index}] is listed but did not move");
            }
            None => assert_eq!(after, before, "θ[{index}] is not listed but moved"),
        }
    }
}

/// Builds worker 0's sparse push `sequence` of the f32 `values` at
/// `indices`, without θ in the reply.
fn sparse_gradient<'a>(
    sequence: u64,
    indices: &'a [u32],
    values: &'a bytes::Bytes,
) -> Gradient<'a> {
    Gradient {
        worker_id: 0,
        sequence,
        bytes: values,
        indices: Some(indices),
        encoding: GradientEncoding::F32,
        examples: 8,
        loss: 1.0,
        epoch: 0,
        batch: sequence as u32 - 1,
        fetch: false,
    }
}

/// Encodes a dense push of `gradient` for worker 0.
fn dense_push(sequence: u64, gradient: &[f32]) -> downpour_proto::v1::PushRequest {
    downpour_proto::v1::PushRequest {
        worker_id: 0,
        sequence,
        gradient: encode_f32s(gradient),
        examples: 8,
        loss: 1.0,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restored_server_gets_sparse_pushes_again() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let live_path = dir.path().join("live.safetensors");
    let token = ClusterToken::random();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address").to_string();
    let live =
        downpour_ps::ParameterServerService::new().with_checkpointing(downpour_ps::Checkpointing {
            path: live_path.clone(),
            every_updates: 2,
            every: None,
        });
    let (stop_live, live_stopped) = tokio::sync::oneshot::channel::<()>();
    let live_server = tokio::spawn(downpour_ps::serve_service(
        live,
        listener,
        token.clone(),
        async move {
            let _ = live_stopped.await;
        },
    ));
    let channel = downpour_proto::transport::connect_with_retry(
        "parameter server",
        &address,
        Duration::from_secs(10),
        &token,
    )
    .await
    .expect("connect");
    let mut client =
        ParameterServerClient::new(downpour_proto::auth::authenticated(channel, &token));
    let initial = [1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let init = InitRequest {
        run_id: "replay".into(),
        params: encode_f32s(&initial),
        optimizer: Some(OptimizerConfig {
            learning_rate: 0.5,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 0,
        }),
        worker_batches: vec![100],
        push_every: 1,
        ..Default::default()
    };
    client.init(init).await.expect("init");

    // Pushes 1 and 2 reach the checkpoint at version 2; a repeat of push 2
    // reports when it is written.
    let ones = [1.0f32; 6];
    client.push(dense_push(1, &ones)).await.expect("push 1");
    client.push(dense_push(2, &ones)).await.expect("push 2");
    let mut durable = 0;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let reply = client.push(dense_push(2, &ones)).await.expect("repeat");
        durable = reply.into_inner().durable_sequence;
        if durable == 2 {
            break;
        }
    }
    assert_eq!(durable, 2, "the checkpoint at version 2 contains push 2");
    let saved = dir.path().join("saved.safetensors");
    std::fs::copy(&live_path, &saved).expect("copy the checkpoint");

    let shards = [PsShard {
        address: address.clone(),
        offset: 0,
        length: initial.len() as u64,
    }];
    let mut servers = ParameterServers::connect(
        &shards,
        None,
        initial.len(),
        100,
        Duration::from_secs(10),
        &token,
    )
    .await
    .expect("connect");
    let mut params = vec![0.0; initial.len()];
    let applied = servers.pull(0, &mut params).await.expect("pull");
    assert_eq!(applied, 2);
    let third = encode_f32s(&[1.0, -1.0]);
    let fourth = encode_f32s(&[2.0, 2.0]);

    // Push 3 reaches the live server only; then it stops, and a server
    // restored from the copy at version 2 takes its address.
    let outcome = servers
        .push(sparse_gradient(3, &[1, 4], &third), &mut params)
        .await
        .expect("push 3");
    assert!(outcome.applied);
    assert!(!outcome.resync);
    stop_live.send(()).expect("live server runs");
    live_server
        .await
        .expect("join")
        .expect("live server stopped");
    let restored = downpour_ps::ParameterServerService::new()
        .with_checkpointing(downpour_ps::Checkpointing {
            path: dir.path().join("restored.safetensors"),
            every_updates: 100,
            every: None,
        })
        .restore(&saved)
        .expect("restore");
    let listener = TcpListener::bind(&address)
        .await
        .expect("bind the same port");
    tokio::spawn(downpour_ps::serve_service(
        restored,
        listener,
        token.clone(),
        pending(),
    ));

    let outcome = servers
        .push(sparse_gradient(4, &[0, 5], &fourth), &mut params)
        .await
        .expect("push 4");
    assert!(outcome.resync, "the restored server lacked push 3");

    // θ = θ₀ − 0.5·(1 + 1) everywhere, then push 3 and push 4, once each.
    let mut expected: Vec<f32> = initial.iter().map(|v| v - 1.0).collect();
    expected[1] -= 0.5;
    expected[4] += 0.5;
    expected[0] -= 1.0;
    expected[5] -= 1.0;
    let applied = servers.pull(0, &mut params).await.expect("pull");
    assert_eq!(applied, 4);
    assert_eq!(params, expected);
}
