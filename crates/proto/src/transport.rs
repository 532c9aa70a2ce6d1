//! Transport settings shared by every Downpour server and client.

use std::time::{Duration, Instant};

use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server};

use crate::auth::ClusterToken;

/// Largest gRPC message any Downpour service accepts or sends: 256 MiB.
/// θ and gradients larger than one piece travel in several messages, so
/// this does not bound the model size.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// Default size of one piece of θ or of a gradient, in f32 values (4 MiB).
/// Ranges larger than this travel in several messages. Messages of tens of
/// MiB are slower: each one gets fresh pages from the kernel, and moving a
/// 20-million-parameter θ took 350 ms per step in one message per server
/// against 220-250 ms in 4 MiB pieces.
pub const DEFAULT_PIECE_VALUES: usize = 1 << 20;

/// HTTP/2 frame size. Raising it from the 16 KiB default cuts the per-frame
/// overhead of the roughly 1 MiB pushes and pulls.
const MAX_FRAME_BYTES: u32 = 1024 * 1024 - 1;

/// HTTP/2 flow-control windows, so one push never stalls on window updates.
const WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Wraps a bound listener for `serve_with_incoming`, with Nagle's algorithm
/// off on every accepted connection. The builder's own `tcp_nodelay` applies
/// only to listeners that tonic binds itself, and without it a reply can wait
/// for the peer's delayed ACK.
pub fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// Returns a server builder with the shared HTTP/2 settings, serving TLS
/// when `token` carries TLS material.
///
/// # Errors
///
/// Fails when the certificate or key cannot be used.
pub fn server_builder(token: &ClusterToken) -> Result<Server, tonic::transport::Error> {
    let builder = Server::builder()
        .max_frame_size(MAX_FRAME_BYTES)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .tcp_nodelay(true);
    match token.tls() {
        Some(tls) => builder.tls_config(tls.server_config()),
        None => Ok(builder),
    }
}

/// Creates the standard gRPC health service, `grpc.health.v1.Health`, which
/// reports SERVING for the server as a whole (service name "") until the
/// reporter says otherwise. Servers add it without the token check, so
/// that probes of an orchestrator, which send no token, can call it.
pub fn health_service() -> (
    tonic_health::server::HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    tonic_health::server::health_reporter()
}

/// An address that cannot be dialled.
#[derive(Debug, thiserror::Error)]
pub enum AddressError {
    #[error("invalid address {0:?}: expected HOST:PORT, such as 127.0.0.1:7000")]
    MissingPort(String),
    #[error("invalid address {address:?}: {reason}")]
    Invalid { address: String, reason: String },
}

/// Formats an error with its chain of sources, such as
/// "transport error: tcp connect error: Connection refused".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// Builds a client endpoint for `address`, given as `HOST:PORT` or as a URL.
///
/// # Errors
///
/// Returns an error when the address has no port or is not a valid URI.
pub fn endpoint(address: &str) -> Result<Endpoint, AddressError> {
    endpoint_with_scheme(address, "http")
}

/// Like [`endpoint`], with `scheme` for a bare `HOST:PORT`.
fn endpoint_with_scheme(address: &str, scheme: &str) -> Result<Endpoint, AddressError> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        let port = address.rsplit_once(':').map(|(_, port)| port);
        if port.is_none_or(|port| port.parse::<u16>().is_err()) {
            return Err(AddressError::MissingPort(address.to_owned()));
        }
        format!("{scheme}://{address}")
    };
    let endpoint = Endpoint::from_shared(uri).map_err(|source| AddressError::Invalid {
        address: address.to_owned(),
        reason: error_chain(&source),
    })?;
    Ok(endpoint
        .max_frame_size(MAX_FRAME_BYTES)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .tcp_nodelay(true)
        .connect_timeout(Duration::from_secs(5)))
}

/// First delay between connection attempts; it doubles up to
/// [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// A peer that could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    InvalidAddress(#[from] AddressError),
    #[error("could not reach the {role} at {address} within {waited:.1?}: {reason}")]
    Unreachable {
        role: &'static str,
        address: String,
        waited: Duration,
        reason: String,
    },
}

/// Connects to `address`, retrying with exponential backoff until
/// `timeout` has passed, so roles may start in any order.
///
/// `role` names the peer in log lines and errors, such as "coordinator".
///
/// # Errors
///
/// Returns an error when the address is invalid or the peer did not accept
/// a connection in time.
pub async fn connect_with_retry(
    role: &'static str,
    address: &str,
    timeout: Duration,
    token: &ClusterToken,
) -> Result<Channel, ConnectError> {
    let endpoint = match token.tls() {
        Some(tls) => endpoint_with_scheme(address, "https")?
            .tls_config(tls.client_config())
            .map_err(|error| AddressError::Invalid {
                address: address.to_owned(),
                reason: format!("TLS settings: {}", error_chain(&error)),
            })?,
        None => endpoint(address)?,
    };
    let started = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(error) if started.elapsed() + delay > timeout => {
                return Err(ConnectError::Unreachable {
                    role,
                    address: address.to_owned(),
                    waited: started.elapsed(),
                    reason: error_chain(&error),
                });
            }
            Err(error) => {
                tracing::warn!(
                    role,
                    address,
                    error = %error_chain(&error),
                    retry_in_ms = delay.as_millis() as u64,
                    "connection failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
