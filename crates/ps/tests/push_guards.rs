//! Bad pushes get the matching gRPC status and leave θ unchanged, a push
//! delivered twice is applied once, and many workers pushing at once lose
//! no acknowledged update. All run over real gRPC on 127.0.0.1.

use std::future::pending;

use downpour_proto::auth::{AuthChannel, ClusterToken, authenticated};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{InitRequest, OptimizerConfig, PullRequest, PushRequest};
use downpour_proto::{decode_f32s, encode_f32s};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tonic::Code;
use tonic::transport::Channel;

type Client = ParameterServerClient<AuthChannel>;

const INITIAL: [f32; 3] = [1.0, 2.0, 3.0];

/// Starts a server on 127.0.0.1, initialises it with `init` and returns a
/// connected client.
async fn server(init: InitRequest) -> Client {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let token = ClusterToken::random();
    tokio::spawn(downpour_ps::serve(listener, token.clone(), pending()));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    let mut client = ParameterServerClient::new(authenticated(channel, &token));
    client.init(init).await.expect("init");
    client
}

/// θ = `params` for plain SGD at `learning_rate`, for `workers` workers
/// with one minibatch per push and `batches` minibatches each; 0 workers
/// leaves the schedule out.
fn init(params: &[f32], learning_rate: f32, workers: usize, batches: u32) -> InitRequest {
    InitRequest {
        run_id: "guards".into(),
        params: encode_f32s(params),
        optimizer: Some(OptimizerConfig {
            learning_rate,
            momentum: 0.0,
            weight_decay: 0.0,
            warmup_updates: 0,
        }),
        worker_batches: vec![batches; workers],
        push_every: 1,
        ..Default::default()
    }
}

fn push(worker_id: u32, sequence: u64, gradient: &[f32]) -> PushRequest {
    PushRequest {
        worker_id,
        sequence,
        gradient: encode_f32s(gradient),
        examples: 64,
        loss: 1.0,
        ..Default::default()
    }
}

async fn theta(client: &mut Client) -> (u64, Vec<f32>) {
    let reply = client
        .pull(PullRequest::default())
        .await
        .expect("pull")
        .into_inner();
    (reply.version, decode_f32s(&reply.params).expect("θ"))
}

#[tokio::test]
async fn bad_pushes_leave_theta_alone() {
    let mut client = server(init(&INITIAL, 0.01, 2, 10)).await;
    let cases = [
        (
            "wrong length",
            push(0, 1, &[1.0, 1.0]),
            Code::InvalidArgument,
        ),
        (
            "NaN",
            push(0, 1, &[1.0, f32::NAN, 1.0]),
            Code::InvalidArgument,
        ),
        (
            "infinity",
            push(0, 1, &[f32::INFINITY, 0.0, 0.0]),
            Code::InvalidArgument,
        ),
        (
            "unknown worker",
            push(7, 1, &[1.0, 1.0, 1.0]),
            Code::InvalidArgument,
        ),
        (
            "future version",
            PushRequest {
                version: 5,
                ..push(0, 1, &[1.0, 1.0, 1.0])
            },
            Code::OutOfRange,
        ),
        (
            "misaligned bytes",
            PushRequest {
                gradient: vec![0u8; 7].into(),
                ..push(0, 1, &[])
            },
            Code::InvalidArgument,
        ),
    ];

    for (case, request, code) in cases {
        let status = client.push(request).await.expect_err(case);
        assert_eq!(status.code(), code, "{case}: {status:?}");
        assert_eq!(theta(&mut client).await, (0, INITIAL.to_vec()), "{case}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_workers_lose_no_push() {
    const WORKERS: u32 = 32;
    const PUSHES: u64 = 50;
    let client = server(init(&INITIAL, 0.01, WORKERS as usize, PUSHES as u32)).await;

    let mut tasks = JoinSet::new();
    for worker in 0..WORKERS {
        let mut client = client.clone();
        tasks.spawn(async move {
            let mut acknowledged = 0u64;
            for sequence in 1..=PUSHES {
                let request = PushRequest {
                    batch: (sequence - 1) as u32,
                    ..push(worker, sequence, &[1e-3, -1e-3, 0.0])
                };
                let reply = client.push(request).await.expect("push").into_inner();
                if reply.applied {
                    acknowledged += 1;
                }
            }
            acknowledged
        });
    }
    let mut acknowledged = 0;
    while let Some(count) = tasks.join_next().await {
        acknowledged += count.expect("push task");
    }

    let mut client = client;
    let reply = client
        .pull(PullRequest::default())
        .await
        .expect("pull")
        .into_inner();
    let totals = reply.totals.expect("totals");
    assert_eq!(acknowledged, u64::from(WORKERS) * PUSHES);
    assert_eq!(totals.pushes, acknowledged);
    assert_eq!(reply.version, acknowledged);
    assert_eq!(totals.pushes_by_worker.len(), WORKERS as usize);
    assert!(totals.pushes_by_worker.values().all(|&n| n == PUSHES));
}

fn repeatable_push(sequence: u64, version: u64) -> PushRequest {
    PushRequest {
        worker_id: 3,
        sequence,
        version,
        gradient: encode_f32s(&[2.0, -2.0]),
        examples: 64,
        loss: 1.0,
        return_params: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn same_push_twice_applies_once() {
    let mut client = server(init(&[1.0, 2.0], 0.5, 0, 0)).await;

    let first = client
        .push(repeatable_push(1, 0))
        .await
        .expect("first push")
        .into_inner();
    let again = client
        .push(repeatable_push(1, 0))
        .await
        .expect("second push")
        .into_inner();

    assert!(first.applied);
    assert!(again.applied, "a duplicate is acknowledged");
    assert_eq!(first.version, 1);
    assert_eq!(again.version, 1, "the duplicate did not bump the version");
    assert_eq!(decode_f32s(&again.params).expect("θ"), [0.0, 3.0]);
    let pulled = client
        .pull(PullRequest::default())
        .await
        .expect("pull")
        .into_inner();
    let totals = pulled.totals.expect("totals");
    assert_eq!(totals.pushes, 1);
    assert_eq!(totals.duplicates, 1);
    assert_eq!(decode_f32s(&pulled.params).expect("θ"), [0.0, 3.0]);
}

#[tokio::test]
async fn next_sequence_applies_after_duplicate() {
    let mut client = server(init(&[1.0, 2.0], 0.5, 0, 0)).await;
    client
        .push(repeatable_push(1, 0))
        .await
        .expect("first push");
    client.push(repeatable_push(1, 0)).await.expect("duplicate");

    let next = client
        .push(repeatable_push(2, 1))
        .await
        .expect("next push")
        .into_inner();

    assert_eq!(next.version, 2);
    assert_eq!(decode_f32s(&next.params).expect("θ"), [-1.0, 4.0]);
}

/// Connects to a server that runs `service` on 127.0.0.1.
async fn serve_on_loopback(service: downpour_ps::ParameterServerService) -> Client {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("address");
    let token = ClusterToken::random();
    tokio::spawn(downpour_ps::serve_service(
        service,
        listener,
        token.clone(),
        pending(),
    ));
    let channel = Channel::from_shared(format!("http://{address}"))
        .expect("address")
        .connect()
        .await
        .expect("connect");
    ParameterServerClient::new(authenticated(channel, &token))
}

#[tokio::test]
async fn restored_server_gets_lost_pushes_again() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let live_path = dir.path().join("ps.safetensors");
    let service =
        downpour_ps::ParameterServerService::new().with_checkpointing(downpour_ps::Checkpointing {
            path: live_path.clone(),
            every_updates: 2,
            every: None,
        });
    let mut live = serve_on_loopback(service).await;
    live.init(init(&INITIAL, 0.5, 1, 100)).await.expect("init");
    let gradients = [
        [1.0, 0.0, 0.0],
        [0.0, 1.0, 0.0],
        [0.0, 0.0, 1.0],
        [1.0, 1.0, 1.0],
    ];

    for (sequence, gradient) in (1..=2).zip(&gradients) {
        live.push(push(0, sequence, gradient)).await.expect("push");
    }
    // The checkpoint at version 2 is written in the background.
    let mut durable = 0;
    for _ in 0..100 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        if live_path.exists() {
            let reply = live.push(push(0, 2, &gradients[1])).await.expect("repeat");
            durable = reply.into_inner().durable_sequence;
            if durable == 2 {
                break;
            }
        }
    }
    assert_eq!(durable, 2, "the checkpoint at version 2 holds push 2");
    let saved = dir.path().join("saved.safetensors");
    std::fs::copy(&live_path, &saved).expect("copy the checkpoint");
    let reply = live
        .push(push(0, 3, &gradients[2]))
        .await
        .expect("push 3")
        .into_inner();
    assert_eq!(reply.durable_sequence, 2, "push 3 is in no checkpoint yet");
    live.push(push(0, 4, &gradients[3])).await.expect("push 4");

    // A server restored from the copy lacks pushes 3 and 4.
    let restored = downpour_ps::ParameterServerService::new()
        .with_checkpointing(downpour_ps::Checkpointing {
            path: dir.path().join("restored.safetensors"),
            every_updates: 100,
            every: None,
        })
        .restore(&saved)
        .expect("restore");
    let mut restored = serve_on_loopback(restored).await;
    let skipped = restored
        .push(push(0, 5, &[1.0, 2.0, 3.0]))
        .await
        .expect_err("push 5 skips 3 and 4");
    assert_eq!(skipped.code(), Code::OutOfRange, "{skipped:?}");
    let (version, _) = theta(&mut restored).await;
    assert_eq!(version, 2, "the skipping push left θ alone");
    let applied = restored
        .pull(PullRequest {
            worker_id: Some(0),
            ..Default::default()
        })
        .await
        .expect("pull")
        .into_inner()
        .applied_sequence;
    assert_eq!(applied, 2);

    for (sequence, gradient) in (3..=4).zip(&gradients[2..]) {
        let resent = PushRequest {
            resend: true,
            ..push(0, sequence, gradient)
        };
        restored.push(resent).await.expect("resend");
    }
    assert_eq!(theta(&mut restored).await, theta(&mut live).await);
}

/// Builds a sparse push of `values` at the positions `indices`.
fn sparse_push(worker_id: u32, sequence: u64, indices: &[u32], values: &[f32]) -> PushRequest {
    let indices: Vec<u8> = indices.iter().flat_map(|i| i.to_le_bytes()).collect();
    PushRequest {
        sparse: true,
        indices: indices.into(),
        ..push(worker_id, sequence, values)
    }
}

#[tokio::test]
async fn bad_sparse_pushes_leave_theta_alone() {
    let mut client = server(init(&INITIAL, 0.01, 2, 10)).await;
    let cases = [
        ("index past the range", sparse_push(0, 1, &[3], &[1.0])),
        ("unsorted indices", sparse_push(0, 1, &[2, 0], &[1.0, 1.0])),
        ("duplicate index", sparse_push(0, 1, &[1, 1], &[1.0, 1.0])),
        (
            "more indices than values",
            sparse_push(0, 1, &[0, 1], &[1.0]),
        ),
        (
            "misaligned indices",
            PushRequest {
                indices: vec![0u8; 5].into(),
                ..sparse_push(0, 1, &[], &[1.0])
            },
        ),
        ("NaN value", sparse_push(0, 1, &[0], &[f32::NAN])),
        (
            "empty piece",
            PushRequest {
                more: true,
                ..sparse_push(0, 1, &[], &[])
            },
        ),
        ("unknown worker", sparse_push(7, 1, &[0], &[1.0])),
    ];

    for (case, request) in cases {
        let status = client.push(request).await.expect_err(case);
        assert_eq!(status.code(), Code::InvalidArgument, "{case}: {status:?}");
        assert_eq!(theta(&mut client).await, (0, INITIAL.to_vec()), "{case}");
    }

    let orphan = PushRequest {
        offset: 1,
        ..sparse_push(0, 1, &[2], &[1.0])
    };
    let status = client.push(orphan).await.expect_err("orphan piece");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(theta(&mut client).await, (0, INITIAL.to_vec()));
}

#[tokio::test]
async fn sparse_push_moves_listed_values_only() {
    let mut client = server(InitRequest {
        optimizer: Some(OptimizerConfig {
            learning_rate: 0.5,
            momentum: 0.9,
            weight_decay: 0.1,
            warmup_updates: 0,
        }),
        ..init(&[1.0, 2.0, 3.0, 4.0], 0.5, 0, 0)
    })
    .await;

    let reply = client
        .push(sparse_push(0, 1, &[1, 3], &[1.0, -1.0]))
        .await
        .expect("sparse push")
        .into_inner();
    assert!(reply.applied);
    let (version, after) = theta(&mut client).await;
    assert_eq!(version, 1);
    // θ₁: v = 1 + 0.1·2, θ = 2 − 0.5·1.2; θ₃: v = −1 + 0.1·4, θ = 4 + 0.5·0.6.
    assert_eq!(after[0], 1.0);
    assert!((after[1] - 1.4).abs() < 1e-6, "{after:?}");
    assert_eq!(after[2], 3.0);
    assert!((after[3] - 4.3).abs() < 1e-6, "{after:?}");

    // In pieces, `offset` counts entries: 2 entries, then 1. The momentum
    // θ₁ and θ₃ carry moves them only where a push lists them again.
    let first = PushRequest {
        more: true,
        ..sparse_push(0, 2, &[0, 1], &[0.0, 0.0])
    };
    let reply = client.push(first).await.expect("first piece").into_inner();
    assert!(!reply.applied, "the first piece is not applied on its own");
    let last = PushRequest {
        offset: 2,
        ..sparse_push(0, 2, &[2], &[0.0])
    };
    client.push(last).await.expect("last piece");
    let (version, pieced) = theta(&mut client).await;
    assert_eq!(version, 2);
    // θ₀: v = 0.1·1, θ = 1 − 0.05; θ₁: v = 0.9·1.2 + 0.1·1.4; θ₂: v = 0.3.
    assert!((pieced[0] - 0.95).abs() < 1e-6, "{pieced:?}");
    assert!((pieced[1] - (1.4 - 0.5 * 1.22)).abs() < 1e-6, "{pieced:?}");
    assert!((pieced[2] - 2.85).abs() < 1e-6, "{pieced:?}");
    assert_eq!(
        pieced[3], after[3],
        "θ₃ is not listed, so it keeps its value"
    );
}
