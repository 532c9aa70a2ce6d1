//! With TLS on, the roles train over TLS with certificates from one
//! authority, and the servers refuse plain-text clients, clients without a
//! certificate and clients with a certificate from another authority.

#![allow(clippy::unwrap_used)] // setup helpers outside #[test] fail the test by panicking

mod support;

use std::future::pending;
use std::time::Duration;

use downpour_coordinator::{CoordinatorConfig, prepare};
use downpour_model::ModelSpec;
use downpour_proto::auth::{ClusterToken, Tls, authenticated};
use downpour_proto::v1::PullRequest;
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_worker::WorkerConfig;
use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::net::TcpListener;
use tonic::transport::{Certificate, Channel, ClientTlsConfig};

/// Makes a certificate authority and one certificate it signed for
/// 127.0.0.1, and returns them as PEM: (authority, certificate, key).
fn authority() -> (String, String, String) {
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);

    let mut leaf =
        CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
    leaf.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let leaf_key = KeyPair::generate().unwrap();
    let leaf_cert = leaf.signed_by(&leaf_key, &issuer).unwrap();
    (ca_cert.pem(), leaf_cert.pem(), leaf_key.serialize_pem())
}

fn token_with(pem: &(String, String, String)) -> ClusterToken {
    let (ca, cert, key) = pem.clone();
    ClusterToken::random().with_tls(Tls::from_pem(ca.into(), cert.into(), key.into()))
}

/// Pulls over `channel`, when it connected, and returns whether the pull
/// succeeded.
async fn pull_succeeds(
    channel: Result<Channel, tonic::transport::Error>,
    token: &ClusterToken,
) -> bool {
    let Ok(channel) = channel else {
        return false;
    };
    let mut client = ParameterServerClient::new(authenticated(channel, token));
    client.pull(PullRequest::default()).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_trains_over_tls_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let data = support::mnist_subset(&dir.path().join("mnist"), 2_000, 500);
    let pem = authority();
    let token = token_with(&pem);

    let ps_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ps_address = ps_listener.local_addr().unwrap().to_string();
    let ps = tokio::spawn(downpour_ps::serve(ps_listener, token.clone(), pending()));
    let coordinator_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let coordinator_address = coordinator_listener.local_addr().unwrap().to_string();
    let config = CoordinatorConfig {
        data,
        model: ModelSpec::Mlp { hidden: vec![32] },
        validation_size: 500,
        max_epochs: 1,
        eval_every: 20,
        ..CoordinatorConfig::with_defaults(dir.path().join("run"), vec![ps_address.clone()])
    };
    let prepared = prepare(config).unwrap();
    let coordinator = tokio::spawn(downpour_coordinator::run(
        prepared,
        coordinator_listener,
        token.clone(),
        pending(),
    ));

    // Strangers, while the run is on: plain text, TLS without a client
    // certificate, and a certificate from another authority.
    let uri = format!("https://{ps_address}");
    let plain = Channel::from_shared(format!("http://{ps_address}"))
        .unwrap()
        .connect()
        .await;
    assert!(
        !pull_succeeds(plain, &token).await,
        "plain text was accepted"
    );
    let no_certificate = Channel::from_shared(uri.clone())
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(&pem.0)))
        .unwrap()
        .connect()
        .await;
    assert!(
        !pull_succeeds(no_certificate, &token).await,
        "a client without a certificate was accepted"
    );
    let other = token_with(&authority());
    let other_channel = Channel::from_shared(uri)
        .unwrap()
        .tls_config(
            other
                .tls()
                .unwrap()
                .client_config()
                .ca_certificate(Certificate::from_pem(&pem.0)),
        )
        .unwrap()
        .connect()
        .await;
    assert!(
        !pull_succeeds(other_channel, &token).await,
        "a certificate from another authority was accepted"
    );

    let workers: Vec<_> = (0..2)
        .map(|index| {
            let config = WorkerConfig {
                coordinator: coordinator_address.clone(),
                ps: None,
                name: format!("tls-{index}"),
                connect_timeout: Duration::from_secs(10),
                token: token.clone(),
            };
            tokio::spawn(downpour_worker::run(config, pending()))
        })
        .collect();
    let summary = coordinator.await.unwrap().unwrap();
    assert_eq!(summary.stop_reason, "max_epochs");
    for worker in workers {
        worker.await.unwrap().unwrap();
    }
    ps.await.unwrap().unwrap();
}
