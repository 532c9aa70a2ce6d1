//! Transport settings shared by every Downpour server and client.

use std::time::{Duration, Instant};

use tonic::transport::{Channel, Endpoint, Server};

/// Largest gRPC message any Downpour service accepts or sends: 256 MiB.
///
/// A pull or push carries all of θ in one message, so this bounds the model
/// size at 64 million f32 parameters.
// NOTE: θ larger than this limit needs chunked pulls and pushes, which the
// protocol does not have yet.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// HTTP/2 frame size. Raising it from the 16 KiB default cuts the per-frame
/// overhead of the roughly 1 MiB pushes and pulls.
const MAX_FRAME_BYTES: u32 = 1024 * 1024 - 1;

/// HTTP/2 flow-control windows, so one push never stalls on window updates.
const WINDOW_BYTES: u32 = 16 * 1024 * 1024;

/// Returns a server builder with the shared HTTP/2 settings.
pub fn server_builder() -> Server {
    Server::builder()
        .max_frame_size(MAX_FRAME_BYTES)
        .initial_stream_window_size(WINDOW_BYTES)
        .initial_connection_window_size(WINDOW_BYTES)
        .tcp_nodelay(true)
}

/// Builds a client endpoint for `address`, given as `HOST:PORT` or as a URL.
///
/// # Errors
///
/// Returns an error when the address is not a valid URI.
pub fn endpoint(address: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if address.contains("://") {
        address.to_owned()
    } else {
        format!("http://{address}")
    };
    Ok(Endpoint::from_shared(uri)?
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
    #[error("invalid address {address:?}: {source}")]
    InvalidAddress {
        address: String,
        source: tonic::transport::Error,
    },
    #[error("could not reach the {role} at {address} within {waited:?}: {source}")]
    Unreachable {
        role: &'static str,
        address: String,
        waited: Duration,
        source: tonic::transport::Error,
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
) -> Result<Channel, ConnectError> {
    let endpoint = endpoint(address).map_err(|source| ConnectError::InvalidAddress {
        address: address.to_owned(),
        source,
    })?;
    let started = Instant::now();
    let mut delay = FIRST_RETRY_DELAY;
    loop {
        match endpoint.connect().await {
            Ok(channel) => return Ok(channel),
            Err(source) if started.elapsed() + delay > timeout => {
                return Err(ConnectError::Unreachable {
                    role,
                    address: address.to_owned(),
                    waited: started.elapsed(),
                    source,
                });
            }
            Err(error) => {
                tracing::warn!(
                    role,
                    address,
                    error = %error,
                    retry_in_ms = delay.as_millis() as u64,
                    "connection failed; retrying"
                );
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(MAX_RETRY_DELAY);
            }
        }
    }
}
