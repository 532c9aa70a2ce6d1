//! No RPC of any service succeeds without the cluster token: every call with
//! no token or a wrong one gets Unauthenticated, over real gRPC on
//! 127.0.0.1.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use downpour_coordinator::{CoordinatorConfig, prepare};
use downpour_model::ModelSpec;
use downpour_proto::auth::{ClusterToken, authenticated};
use downpour_proto::v1::coordinator_client::CoordinatorClient;
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{
    CompleteWorkRequest, FetchShardRequest, FinishRequest, InitRequest, NextWorkRequest,
    PullRequest, PushRequest, RegisterRequest, StopTrainingRequest,
};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Code, Status};

async fn channel(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn assert_refused<T: std::fmt::Debug>(call: &str, result: Result<T, Status>) {
    let status = result.expect_err(call);
    assert_eq!(status.code(), Code::Unauthenticated, "{call}: {status:?}");
}

/// Calls every parameter-server RPC on `client` and checks each is refused.
async fn ps_refuses<T>(mut client: ParameterServerClient<T>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    assert_refused("Init", client.init(InitRequest::default()).await);
    assert_refused("Pull", client.pull(PullRequest::default()).await);
    assert_refused("Push", client.push(PushRequest::default()).await);
    assert_refused(
        "StopTraining",
        client.stop_training(StopTrainingRequest {}).await,
    );
    assert_refused("Finish", client.finish(FinishRequest {}).await);
}

/// Calls every coordinator RPC on `client` and checks each is refused.
async fn coordinator_refuses<T>(mut client: CoordinatorClient<T>)
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = bytes::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    assert_refused(
        "Register",
        client.register(RegisterRequest::default()).await,
    );
    assert_refused(
        "NextWork",
        client.next_work(NextWorkRequest::default()).await,
    );
    assert_refused(
        "CompleteWork",
        client.complete_work(CompleteWorkRequest::default()).await,
    );
    assert_refused(
        "FetchShard",
        client.fetch_shard(FetchShardRequest::default()).await,
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rpc_needs_the_cluster_token() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 600, 100);
    let token = ClusterToken::random();
    let wrong = ClusterToken::random();

    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let (stop_ps, ps_stopped) = oneshot::channel::<()>();
    let ps = tokio::spawn(downpour_ps::serve(ps_listener, token.clone(), async {
        ps_stopped.await.ok();
    }));

    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        data,
        model: ModelSpec::Softmax,
        validation_size: 100,
        ..CoordinatorConfig::with_defaults(dir.path().join("run"), vec![ps_address.clone()])
    };
    let prepared = prepare(config).unwrap();
    let (stop_coordinator, coordinator_stopped) = oneshot::channel::<()>();
    let coordinator = tokio::spawn(downpour_coordinator::run(
        prepared,
        coordinator_listener,
        token.clone(),
        async {
            coordinator_stopped.await.ok();
        },
    ));

    // No token, then a wrong one, on each service.
    ps_refuses(ParameterServerClient::new(channel(&ps_address).await)).await;
    ps_refuses(ParameterServerClient::new(authenticated(
        channel(&ps_address).await,
        &wrong,
    )))
    .await;
    coordinator_refuses(CoordinatorClient::new(channel(&coordinator_address).await)).await;
    coordinator_refuses(CoordinatorClient::new(authenticated(
        channel(&coordinator_address).await,
        &wrong,
    )))
    .await;

    // The right token gets through: the coordinator has initialised the
    // parameter server with it, and a pull now succeeds.
    let mut allowed = ParameterServerClient::new(authenticated(channel(&ps_address).await, &token));
    let mut pulled = allowed.pull(PullRequest::default()).await;
    for _ in 0..100 {
        if pulled.is_ok() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        pulled = allowed.pull(PullRequest::default()).await;
    }
    assert!(pulled.is_ok(), "{pulled:?}");

    stop_coordinator.send(()).unwrap();
    let ended = coordinator.await.unwrap();
    assert!(ended.is_err(), "the coordinator stops as interrupted");
    stop_ps.send(()).unwrap();
    ps.await.unwrap().unwrap();
}
