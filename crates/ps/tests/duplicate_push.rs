//! Pushes delivered twice over real gRPC on 127.0.0.1 are applied once.

use std::future::pending;

use downpour_proto::auth::{AuthChannel, ClusterToken, authenticated};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{InitRequest, OptimizerConfig, PullRequest, PushRequest};
use downpour_proto::{decode_f32s, encode_f32s};
use tokio::net::TcpListener;
use tonic::transport::Channel;

async fn server() -> ParameterServerClient<AuthChannel> {
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
    client
        .init(InitRequest {
            run_id: "duplicates".into(),
            params: encode_f32s(&[1.0, 2.0]),
            optimizer: Some(OptimizerConfig {
                learning_rate: 0.5,
                momentum: 0.0,
                weight_decay: 0.0,
            }),
            ..Default::default()
        })
        .await
        .expect("init");
    client
}

fn push(sequence: u64, version: u64) -> PushRequest {
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
async fn same_push_twice_is_applied_once() {
    let mut client = server().await;

    let first = client
        .push(push(1, 0))
        .await
        .expect("first push")
        .into_inner();
    let again = client
        .push(push(1, 0))
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
async fn next_sequence_is_applied_after_a_duplicate() {
    let mut client = server().await;
    client.push(push(1, 0)).await.expect("first push");
    client.push(push(1, 0)).await.expect("duplicate");

    let next = client
        .push(push(2, 1))
        .await
        .expect("next push")
        .into_inner();

    assert_eq!(next.version, 2);
    assert_eq!(decode_f32s(&next.params).expect("θ"), [-1.0, 4.0]);
}
