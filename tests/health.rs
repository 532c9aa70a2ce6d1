//! Every role serves the standard gRPC health service without the cluster
//! token, so orchestrators' probes can call it, while the role's own
//! services still require the token.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use downpour_proto::auth::ClusterToken;
use tokio::net::TcpListener;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

const TOKEN: &str = "health-test-token-0123456789";

/// Checks the overall health of the server at `address`, retrying while it
/// starts.
async fn check(address: &str) -> ServingStatus {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint =
            tonic::transport::Endpoint::from_shared(format!("http://{address}")).unwrap();
        match endpoint.connect().await {
            Ok(channel) => {
                let reply = HealthClient::new(channel)
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                return reply.status();
            }
            Err(error) if Instant::now() > deadline => panic!("{address}: {error}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[tokio::test]
async fn parameter_server_reports_serving() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let token = ClusterToken::new(TOKEN, "test").unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(downpour_ps::serve(listener, token, async {
        stopped.await.ok();
    }));
    assert_eq!(check(&address).await, ServingStatus::Serving);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn worker_serves_health_while_waiting() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let health_address = free.local_addr().unwrap().to_string();
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let coordinator_address = unused.local_addr().unwrap().to_string();
    drop((free, unused));
    // The coordinator never starts, so the worker keeps retrying while its
    // health service answers.
    let mut worker = Command::new(env!("CARGO_BIN_EXE_downpour"))
        .args(["worker", "--coordinator", &coordinator_address])
        .args([
            "--health-listen",
            &health_address,
            "--connect-timeout",
            "60",
        ])
        .env("DOWNPOUR_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let status = check(&health_address).await;
    worker.kill().unwrap();
    worker.wait().unwrap();
    assert_eq!(status, ServingStatus::Serving);
}
