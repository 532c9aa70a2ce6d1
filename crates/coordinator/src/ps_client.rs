//! The coordinator's view of the parameter servers: one client per server,
//! each holding a contiguous range of θ.

use std::ops::Range;
use std::time::{Duration, Instant};

use downpour_proto::auth::{AuthChannel, ClusterToken, authenticated};
use downpour_proto::transport::{MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{
    FinishRequest, InitRequest, PullReply, PullRequest, PushTotals, StopTrainingRequest,
};
use downpour_proto::{decode_f32s_into, encode_f32s};
use tokio::task::JoinSet;
use tonic::{Code, Status};
use tracing::warn;

use crate::error::CoordinatorError;

/// How long the coordinator keeps retrying a pull from a parameter server
/// that does not reply, as while it restarts from a checkpoint.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Pulls with `request`, retrying while the server is unreachable. A
/// server killed mid-request shows up as UNAVAILABLE, UNKNOWN or CANCELLED,
/// depending on where the connection broke.
async fn pull_with_retry(client: &mut PsClient, request: PullRequest) -> Result<PullReply, Status> {
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.pull(request).await {
            Ok(reply) => return Ok(reply.into_inner()),
            Err(status)
                if matches!(
                    status.code(),
                    Code::Unavailable | Code::Unknown | Code::Cancelled
                ) && Instant::now() < deadline =>
            {
                warn!(
                    code = ?status.code(),
                    error = %status.message(),
                    retry_in_ms = backoff.as_millis() as u64,
                    "parameter server unreachable; retrying the pull"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            Err(status) => return Err(status),
        }
    }
}

type PsClient = ParameterServerClient<AuthChannel>;

#[derive(Debug, Clone)]
struct Server {
    address: String,
    range: Range<usize>,
    client: PsClient,
}

/// θ assembled from every server.
#[derive(Debug)]
pub(crate) struct Snapshot {
    /// Version of the first server; every server had reached the requested
    /// minimum version.
    pub(crate) version: u64,
    /// Push totals of the first server. Every push reaches every server, so
    /// one server's totals describe the run.
    pub(crate) totals: PushTotals,
    pub(crate) params: Vec<f32>,
}

/// Clients of all parameter servers of a run, in θ order.
#[derive(Debug, Clone)]
pub(crate) struct ParameterServers {
    servers: Vec<Server>,
    parameters: usize,
    /// Largest number of values in one message.
    piece_values: usize,
}

fn rpc_error(address: &str) -> impl Fn(tonic::Status) -> CoordinatorError + '_ {
    move |status| CoordinatorError::ParameterServer {
        address: address.to_owned(),
        message: format!("{:?}: {}", status.code(), status.message()),
    }
}

impl ParameterServers {
    /// Connects to every server, retrying each for up to `timeout`.
    pub(crate) async fn connect(
        addresses: &[String],
        ranges: &[Range<usize>],
        piece_values: usize,
        timeout: Duration,
        token: &ClusterToken,
    ) -> Result<Self, CoordinatorError> {
        let mut servers = Vec::with_capacity(addresses.len());
        for (address, range) in addresses.iter().zip(ranges) {
            let channel = connect_with_retry("parameter server", address, timeout, token)
                .await
                .map_err(|error| CoordinatorError::ParameterServer {
                    address: address.clone(),
                    message: error.to_string(),
                })?;
            let client = ParameterServerClient::new(authenticated(channel, token))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            servers.push(Server {
                address: address.clone(),
                range: range.clone(),
                client,
            });
        }
        let parameters = ranges.last().map_or(0, |range| range.end);
        Ok(Self {
            servers,
            parameters,
            piece_values: piece_values.max(1),
        })
    }

    /// Sends each server its range of θ₀ and the settings in `settings`,
    /// whose `params` field is ignored.
    pub(crate) async fn init(
        &mut self,
        settings: &InitRequest,
        params: &[f32],
    ) -> Result<(), CoordinatorError> {
        for server in &mut self.servers {
            let range = &params[server.range.clone()];
            let pieces = range.chunks(self.piece_values);
            let in_pieces = pieces.len() > 1;
            for (index, piece) in pieces.enumerate() {
                server
                    .client
                    .init(InitRequest {
                        params: encode_f32s(piece),
                        total_params: if in_pieces { range.len() as u64 } else { 0 },
                        offset: (index * self.piece_values) as u64,
                        ..settings.clone()
                    })
                    .await
                    .map_err(rpc_error(&server.address))?;
            }
        }
        Ok(())
    }

    /// Freezes θ on every server. No push is applied from now on, and
    /// pushes waiting for other workers get their reply.
    pub(crate) async fn stop_training(&mut self) -> Result<(), CoordinatorError> {
        for server in &mut self.servers {
            server
                .client
                .stop_training(StopTrainingRequest {})
                .await
                .map_err(rpc_error(&server.address))?;
        }
        Ok(())
    }

    /// Pulls every server's range at once, each waiting until its version
    /// reaches `min_version`, and assembles θ.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future abandons the pulls; nothing on the servers
    /// changes.
    pub(crate) async fn pull(&self, min_version: u64) -> Result<Snapshot, CoordinatorError> {
        let mut pulls = JoinSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let mut client = server.client.clone();
            let (len, piece) = (server.range.len(), self.piece_values);
            pulls.spawn(async move {
                let mut replies = Vec::with_capacity(len.div_ceil(piece));
                for offset in (0..len).step_by(piece) {
                    let request = PullRequest {
                        // Only the first piece waits for the version.
                        min_version: if offset == 0 { min_version } else { 0 },
                        worker_id: None,
                        offset: offset as u64,
                        length: if len <= piece { 0 } else { piece as u64 },
                    };
                    match pull_with_retry(&mut client, request).await {
                        Ok(reply) => replies.push(reply),
                        Err(status) => return (index, Err(status)),
                    }
                }
                (index, Ok(replies))
            });
        }

        let mut replies: Vec<Vec<PullReply>> = vec![Vec::new(); self.servers.len()];
        while let Some(joined) = pulls.join_next().await {
            let (index, reply) = joined.map_err(|error| CoordinatorError::ParameterServer {
                address: "(all)".to_owned(),
                message: format!("pull task failed: {error}"),
            })?;
            let address = &self.servers[index].address;
            replies[index] = reply.map_err(rpc_error(address))?;
        }

        let mut params = vec![0.0; self.parameters];
        for (server, pieces) in self.servers.iter().zip(&replies) {
            let malformed = |message: String| CoordinatorError::ParameterServer {
                address: server.address.clone(),
                message: format!("pulled parameters are malformed: {message}"),
            };
            let mut start = server.range.start;
            for piece in pieces {
                let end = start + piece.params.len() / 4;
                let target = params
                    .get_mut(start..end.min(server.range.end))
                    .filter(|target| target.len() == end - start)
                    .ok_or_else(|| malformed("more values than the range holds".to_owned()))?;
                decode_f32s_into(&piece.params, target)
                    .map_err(|error| malformed(error.to_string()))?;
                start = end;
            }
            if start != server.range.end {
                return Err(malformed(format!(
                    "{} values for a range of {}",
                    start - server.range.start,
                    server.range.len()
                )));
            }
        }
        let first = replies
            .into_iter()
            .next()
            .and_then(|pieces| pieces.into_iter().next())
            .expect("a run has at least one parameter server with a non-empty range");
        Ok(Snapshot {
            version: first.version,
            totals: first.totals.unwrap_or_default(),
            params,
        })
    }

    /// Tells every server the run is over. A server that does not reply is
    /// logged and skipped.
    pub(crate) async fn finish(&mut self) {
        for server in &mut self.servers {
            if let Err(status) = server.client.finish(FinishRequest {}).await {
                warn!(
                    ps = %server.address,
                    error = %status.message(),
                    "parameter server did not acknowledge the end of the run"
                );
            }
        }
    }
}
