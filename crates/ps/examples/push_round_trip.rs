//! Measures push round trips against an in-process parameter server on
//! 127.0.0.1: each push carries a gradient of the default MLP's size
//! (235,146 f32) and returns θ, as a worker's step does.
//!
//! Run with `cargo run --release -p downpour-ps --example push_round_trip`.

use std::time::{Duration, Instant};

use downpour_proto::auth::{ClusterToken, authenticated};
use downpour_proto::encode_f32s;
use downpour_proto::transport::{MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{InitRequest, OptimizerConfig, PushRequest};

const PARAMETERS: usize = 235_146;
const ROUND_TRIPS: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?.to_string();
    let token = ClusterToken::random();
    tokio::spawn(downpour_ps::serve(
        listener,
        token.clone(),
        std::future::pending(),
    ));

    let channel =
        connect_with_retry("parameter server", &address, Duration::from_secs(5), &token).await?;
    let mut client = ParameterServerClient::new(authenticated(channel, &token))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    client
        .init(InitRequest {
            run_id: "bench".into(),
            params: encode_f32s(&vec![0.0; PARAMETERS]),
            optimizer: Some(OptimizerConfig {
                learning_rate: 0.01,
                momentum: 0.9,
                weight_decay: 0.0,
                warmup_updates: 0,
            }),
            ..Default::default()
        })
        .await?;

    let gradient = encode_f32s(&vec![1e-3; PARAMETERS]);
    let started = Instant::now();
    for sequence in 1..=ROUND_TRIPS as u64 {
        let reply = client
            .push(PushRequest {
                worker_id: 0,
                sequence,
                version: sequence - 1,
                gradient: gradient.clone(),
                examples: 64,
                loss: 1.0,
                return_params: true,
                ..Default::default()
            })
            .await?
            .into_inner();
        assert_eq!(reply.params.len(), PARAMETERS * 4);
    }
    let elapsed = started.elapsed();
    println!(
        "{ROUND_TRIPS} push round trips of {PARAMETERS} f32: {:.1} µs each, {:.0} per second",
        elapsed.as_secs_f64() * 1e6 / ROUND_TRIPS as f64,
        ROUND_TRIPS as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
