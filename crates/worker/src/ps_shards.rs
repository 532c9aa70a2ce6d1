//! The worker's clients of the parameter servers, each holding a contiguous
//! range of θ. Pulls and pushes go to every server at once; a range larger
//! than one message travels in pieces, one after the other.

use std::collections::VecDeque;
use std::future::Future;
use std::ops::Range;
use std::time::{Duration, Instant};

use bytes::Bytes;
use downpour_proto::auth::{AuthChannel, ClusterToken, authenticated};
use downpour_proto::decode_f32s_into;
use downpour_proto::transport::{MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{GradientEncoding, PsShard, PullRequest, PushRequest};
use prost::Message as _;
use tokio::task::JoinSet;
use tracing::{debug, warn};

use crate::error::WorkerError;

type PsClient = ParameterServerClient<AuthChannel>;

#[derive(Debug)]
struct Server {
    address: String,
    range: Range<usize>,
    client: PsClient,
    /// Version of this server's range in the worker's θ.
    version: u64,
    /// Highest sequence number of this worker that the server's last
    /// checkpoint holds.
    durable: u64,
}

/// A pushed gradient that some server's checkpoint does not hold yet. A
/// server that restarts from that checkpoint gets it again, so that no
/// acknowledged push is lost.
#[derive(Debug)]
struct Retained {
    sequence: u64,
    bytes: Bytes,
    /// Positions in θ of a sparse gradient's values.
    indices: Option<Vec<u32>>,
    encoding: GradientEncoding,
    examples: u32,
    loss: f32,
    epoch: u32,
    batch: u32,
}

/// Most bytes of pushes kept for replay. Past it the oldest are dropped,
/// with a warning, and a server restart can lose them.
const MAX_RETAINED_BYTES: usize = 1 << 30;

/// A gradient ready to push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gradient<'a> {
    pub(crate) worker_id: u32,
    pub(crate) sequence: u64,
    /// The whole gradient, encoded as `encoding` specifies, or with
    /// `indices` the values at those positions only. Each server gets its
    /// range.
    pub(crate) bytes: &'a Bytes,
    /// Positions in θ of a sparse gradient's values, strictly increasing;
    /// `None` for a dense gradient.
    pub(crate) indices: Option<&'a [u32]>,
    pub(crate) encoding: GradientEncoding,
    pub(crate) examples: u32,
    pub(crate) loss: f32,
    /// Epoch and shard index of the last minibatch behind the gradient.
    pub(crate) epoch: u32,
    pub(crate) batch: u32,
    /// Whether the servers should send θ back.
    pub(crate) fetch: bool,
}

/// The servers' replies to a push, combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PushOutcome {
    /// Every server put the push into θ.
    pub(crate) applied: bool,
    /// Training stopped on at least one server.
    pub(crate) training_stopped: bool,
    /// A server is behind the worker's θ; the worker must pull θ again.
    pub(crate) resync: bool,
    /// Version of θ after the push, the largest over the servers.
    pub(crate) version: u64,
    /// Staleness of the push, the largest over the servers.
    pub(crate) staleness: u64,
    /// Gradient values sent, summed over the servers.
    pub(crate) pushed_values: u64,
    /// Encoded size of the PushRequest messages sent, summed over the
    /// servers and pieces.
    pub(crate) push_bytes: u64,
}

/// Clients of every parameter server of the run, in θ order.
#[derive(Debug)]
pub(crate) struct ParameterServers {
    servers: Vec<Server>,
    /// Largest number of values in one message.
    piece_values: usize,
    /// Pushes not yet in every server's checkpoint, oldest first.
    retained: VecDeque<Retained>,
    retained_bytes: usize,
}

/// A server's reply to a push, and θ when it was requested.
#[derive(Debug)]
struct Pushed {
    version: u64,
    /// Version and staleness in the server's reply to the push.
    applied_version: u64,
    staleness: u64,
    training_stopped: bool,
    applied: bool,
    /// The server is at an older version than the worker's θ, as after a
    /// restore from a checkpoint; the push was not applied.
    resync: bool,
    /// θ of the server's range, in pieces; empty unless fetched.
    params: Vec<Bytes>,
    /// Highest sequence number of this worker in the server's checkpoint.
    durable: u64,
    /// Encoded size of the PushRequest messages sent.
    bytes: u64,
}

/// A server's range of θ, pulled in pieces.
#[derive(Debug)]
struct Pulled {
    /// Version of the first piece.
    version: u64,
    pieces: Vec<Bytes>,
    /// Highest sequence number of this worker the server applied.
    applied_sequence: u64,
}

impl ParameterServers {
    /// Connects to the servers the coordinator named, or to `overrides` in
    /// their place, and checks that their ranges cover `parameters` values
    /// exactly once.
    pub(crate) async fn connect(
        shards: &[PsShard],
        overrides: Option<&[String]>,
        parameters: usize,
        piece_values: usize,
        timeout: Duration,
        token: &ClusterToken,
    ) -> Result<Self, WorkerError> {
        if let Some(overrides) = overrides
            && overrides.len() != shards.len()
        {
            return Err(WorkerError::Layout(format!(
                "--ps names {} servers, but the run has {}",
                overrides.len(),
                shards.len()
            )));
        }
        let mut servers = Vec::with_capacity(shards.len());
        let mut expected_offset = 0usize;
        for (index, shard) in shards.iter().enumerate() {
            let start = usize::try_from(shard.offset).unwrap_or(usize::MAX);
            let length = usize::try_from(shard.length).unwrap_or(usize::MAX);
            if start != expected_offset || length == 0 || start.saturating_add(length) > parameters
            {
                return Err(WorkerError::Layout(format!(
                    "invalid range for parameter server {index}: {length} values from offset {start}, expected a non-empty range from offset {expected_offset} within {parameters} parameters"
                )));
            }
            expected_offset = start + length;
            let address = overrides.map_or_else(|| shard.address.clone(), |o| o[index].clone());
            let channel = connect_with_retry("parameter server", &address, timeout, token).await?;
            let client = ParameterServerClient::new(authenticated(channel, token))
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            servers.push(Server {
                address,
                range: start..start + length,
                client,
                version: 0,
                durable: 0,
            });
        }
        if expected_offset != parameters {
            return Err(WorkerError::Layout(format!(
                "the parameter servers hold {expected_offset} values, but the model has {parameters}"
            )));
        }
        let piece_values = piece_values.max(1);
        for server in &servers {
            let pieces = server.range.len().div_ceil(piece_values);
            if pieces > 1 {
                debug!(
                    ps = %server.address,
                    values = server.range.len(),
                    pieces,
                    "this server's range travels in pieces"
                );
            }
        }
        Ok(Self {
            servers,
            piece_values,
            retained: VecDeque::new(),
            retained_bytes: 0,
        })
    }

    /// Returns the addresses of the servers, for logs.
    pub(crate) fn addresses(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.address.as_str()).collect()
    }

    /// Pulls every server's range into `params`, and returns the highest
    /// sequence number of this worker that any server applied.
    pub(crate) async fn pull(
        &mut self,
        worker_id: u32,
        params: &mut [f32],
    ) -> Result<u64, WorkerError> {
        let mut pulls = JoinSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let client = server.client.clone();
            let (len, piece) = (server.range.len(), self.piece_values);
            pulls.spawn(async move {
                let pulled = with_retry("Pull", || {
                    let mut client = client.clone();
                    async move { pull_range(&mut client, worker_id, len, piece).await }
                })
                .await;
                (index, pulled)
            });
        }
        let mut applied = 0;
        while let Some(joined) = pulls.join_next().await {
            let (index, pulled) = joined.map_err(task_failed)?;
            let pulled = pulled?;
            let server = &mut self.servers[index];
            decode_pieces(&pulled.pieces, &mut params[server.range.clone()])?;
            server.version = pulled.version;
            applied = applied.max(pulled.applied_sequence);
        }
        Ok(applied)
    }

    /// Forgets the pushes kept for replay, as when the worker registers
    /// again under a new id.
    pub(crate) fn clear_retained(&mut self) {
        self.retained.clear();
        self.retained_bytes = 0;
    }

    /// Keeps `gradient` until every server's checkpoint contains it.
    fn retain(&mut self, gradient: &Gradient<'_>) {
        self.retained_bytes += retained_size(gradient.bytes, gradient.indices);
        self.retained.push_back(Retained {
            sequence: gradient.sequence,
            bytes: gradient.bytes.clone(),
            indices: gradient.indices.map(<[u32]>::to_vec),
            encoding: gradient.encoding,
            examples: gradient.examples,
            loss: gradient.loss,
            epoch: gradient.epoch,
            batch: gradient.batch,
        });
        let mut dropped = 0;
        while self.retained_bytes > MAX_RETAINED_BYTES && self.retained.len() > 1 {
            if let Some(oldest) = self.retained.pop_front() {
                self.retained_bytes -= retained_size(&oldest.bytes, oldest.indices.as_deref());
                dropped += 1;
            }
        }
        if dropped > 0 {
            warn!(
                dropped,
                limit_mib = MAX_RETAINED_BYTES >> 20,
                "too many pushes wait for a parameter-server checkpoint; the oldest are no longer kept for replay, so write checkpoints more often"
            );
        }
    }

    /// Drops the kept pushes that every server's checkpoint holds.
    fn prune_retained(&mut self) {
        let durable = self.servers.iter().map(|s| s.durable).min().unwrap_or(0);
        while let Some(oldest) = self.retained.front()
            && oldest.sequence <= durable
        {
            self.retained_bytes -= retained_size(&oldest.bytes, oldest.indices.as_deref());
            self.retained.pop_front();
        }
    }

    /// Brings server `index` back in line after it restarted from an older
    /// checkpoint: pulls its range of θ into `params`, then pushes it again
    /// every kept push it has not applied, oldest first.
    async fn replay(
        &mut self,
        index: usize,
        worker_id: u32,
        params: &mut [f32],
    ) -> Result<(), WorkerError> {
        let piece = self.piece_values;
        let server = &mut self.servers[index];
        let len = server.range.len();
        let pulled = with_retry("Pull", || {
            let mut client = server.client.clone();
            async move { pull_range(&mut client, worker_id, len, piece).await }
        })
        .await?;
        decode_pieces(&pulled.pieces, &mut params[server.range.clone()])?;
        server.version = pulled.version;
        let missing: Vec<&Retained> = self
            .retained
            .iter()
            .filter(|r| r.sequence > pulled.applied_sequence)
            .collect();
        warn!(
            ps = %server.address,
            worker_id,
            applied_sequence = pulled.applied_sequence,
            replayed = missing.len(),
            "parameter server restarted from an older checkpoint; sending it the pushes it lost"
        );
        for retained in missing {
            let gradient = Gradient {
                worker_id,
                sequence: retained.sequence,
                bytes: &retained.bytes,
                indices: retained.indices.as_deref(),
                encoding: retained.encoding,
                examples: retained.examples,
                loss: retained.loss,
                epoch: retained.epoch,
                batch: retained.batch,
                fetch: false,
            };
            let request = PushRequest {
                resend: true,
                ..push_request(&gradient, server)
            };
            let client = &server.client;
            let pushed = with_retry("Push", || {
                let (mut client, request) = (client.clone(), request.clone());
                async move { push_range(&mut client, request, len, piece).await }
            })
            .await?;
            if pushed.resync {
                return Err(WorkerError::Rpc {
                    call: "Push",
                    code: tonic::Code::OutOfRange,
                    message: format!(
                        "parameter server {} went back to an older version again while this worker replayed its pushes",
                        server.address
                    ),
                });
            }
            server.durable = pushed.durable;
        }
        Ok(())
    }

    /// Pushes each server its range of the gradient, tagged with the version
    /// that range was computed at, and writes the returned θ into `params`
    /// when the gradient requests it. A server that restarted from an older
    /// checkpoint first gets the kept pushes it lost, then this one.
    pub(crate) async fn push(
        &mut self,
        gradient: Gradient<'_>,
        params: &mut [f32],
    ) -> Result<PushOutcome, WorkerError> {
        self.retain(&gradient);
        let mut outcome = PushOutcome {
            applied: true,
            training_stopped: false,
            resync: false,
            version: 0,
            staleness: 0,
            pushed_values: 0,
            push_bytes: 0,
        };
        let mut replays = Vec::new();
        let mut pushes = JoinSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let request = push_request(&gradient, server);
            outcome.pushed_values += pushed_values(&request) as u64;
            let client = server.client.clone();
            let (len, piece) = (server.range.len(), self.piece_values);
            pushes.spawn(async move {
                let pushed = with_retry("Push", || {
                    let (mut client, request) = (client.clone(), request.clone());
                    async move { push_range(&mut client, request, len, piece).await }
                })
                .await;
                (index, pushed)
            });
        }
        while let Some(joined) = pushes.join_next().await {
            let (index, pushed) = joined.map_err(task_failed)?;
            let pushed = pushed?;
            outcome.push_bytes += pushed.bytes;
            if pushed.resync {
                replays.push(index);
                continue;
            }
            outcome.applied &= pushed.applied;
            outcome.training_stopped |= pushed.training_stopped;
            outcome.version = outcome.version.max(pushed.applied_version);
            outcome.staleness = outcome.staleness.max(pushed.staleness);
            let server = &mut self.servers[index];
            server.durable = pushed.durable;
            if gradient.fetch {
                decode_pieces(&pushed.params, &mut params[server.range.clone()])?;
                server.version = pushed.version;
            }
        }
        // The replay ends with this push, so it counts as applied.
        for index in replays {
            self.replay(index, gradient.worker_id, params).await?;
            outcome.resync = true;
        }
        self.prune_retained();
        Ok(outcome)
    }
}

impl Pushed {
    fn resync() -> Self {
        Self {
            version: 0,
            applied_version: 0,
            staleness: 0,
            training_stopped: false,
            applied: false,
            resync: true,
            params: Vec::new(),
            durable: 0,
            bytes: 0,
        }
    }
}

/// How long a worker keeps retrying a peer that does not reply, as while a
/// parameter server restarts from a checkpoint or a coordinator resumes.
const RETRY_FOR: Duration = Duration::from_secs(120);

/// Runs `attempt` until it succeeds, fails for a reason other than an
/// unreachable parameter server, or [`RETRY_FOR`] passes, waiting longer
/// after each failure.
async fn with_retry<T, F, Fut>(call: &'static str, attempt: F) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WorkerError>>,
{
    retry_unreachable("parameter server", call, attempt).await
}

/// Runs `attempt` until it succeeds, fails for a reason other than an
/// unreachable `peer`, or [`RETRY_FOR`] passes, waiting longer after each
/// failure. A peer killed mid-request shows up as UNAVAILABLE, UNKNOWN or
/// CANCELLED, depending on where the connection broke. The request must be
/// safe to send twice.
pub(crate) async fn retry_unreachable<T, F, Fut>(
    peer: &'static str,
    call: &'static str,
    mut attempt: F,
) -> Result<T, WorkerError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, WorkerError>>,
{
    let deadline = Instant::now() + RETRY_FOR;
    let mut backoff = Duration::from_millis(100);
    loop {
        match attempt().await {
            Err(WorkerError::Rpc { code, message, .. })
                if matches!(
                    code,
                    tonic::Code::Unavailable | tonic::Code::Unknown | tonic::Code::Cancelled
                ) && Instant::now() < deadline =>
            {
                warn!(
                    peer,
                    call,
                    ?code,
                    %message,
                    retry_in_ms = backoff.as_millis() as u64,
                    "peer unreachable; retrying"
                );
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
            result => return result,
        }
    }
}

/// Pulls a server's `len` values in pieces of at most `piece` values.
async fn pull_range(
    client: &mut PsClient,
    worker_id: u32,
    len: usize,
    piece: usize,
) -> Result<Pulled, WorkerError> {
    let mut version = None;
    let mut applied_sequence = 0;
    let mut pieces = Vec::with_capacity(len.div_ceil(piece));
    for offset in (0..len).step_by(piece) {
        let request = PullRequest {
            min_version: 0,
            worker_id: Some(worker_id),
            offset: offset as u64,
            length: if len <= piece { 0 } else { piece as u64 },
        };
        let reply = client
            .pull(request)
            .await
            .map_err(WorkerError::rpc("Pull"))?
            .into_inner();
        // With pieces, θ may move between pulls; the oldest version is the
        // one the whole range is at least as new as.
        version.get_or_insert(reply.version);
        applied_sequence = reply.applied_sequence;
        pieces.push(reply.params);
    }
    Ok(Pulled {
        version: version.unwrap_or(0),
        pieces,
        applied_sequence,
    })
}

/// Pushes `request`'s gradient of `len` values, in pieces of at most
/// `piece` values when it is larger, and fetches θ back when asked.
async fn push_range(
    client: &mut PsClient,
    request: PushRequest,
    len: usize,
    piece: usize,
) -> Result<Pushed, WorkerError> {
    let values = pushed_values(&request);
    if values <= piece {
        let bytes = request.encoded_len() as u64;
        let reply = match client.push(request).await {
            Ok(reply) => reply.into_inner(),
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                return Ok(Pushed::resync());
            }
            Err(status) => return Err(WorkerError::rpc("Push")(status)),
        };
        return Ok(Pushed {
            version: reply.version,
            applied_version: reply.version,
            staleness: reply.staleness,
            training_stopped: reply.training_stopped,
            applied: reply.applied,
            resync: false,
            params: vec![reply.params],
            durable: reply.durable_sequence,
            bytes,
        });
    }

    // Dense pieces cut the range of θ; sparse pieces cut the list of
    // entries, and `offset` then counts entries.
    let width = request.gradient.len() / values;
    let mut reply = None;
    let mut bytes = 0;
    for offset in (0..values).step_by(piece) {
        let end = (offset + piece).min(values);
        let indices = if request.sparse {
            request.indices.slice(offset * 4..end * 4)
        } else {
            Bytes::new()
        };
        let piece_request = PushRequest {
            gradient: request.gradient.slice(offset * width..end * width),
            indices,
            offset: offset as u64,
            more: end < values,
            return_params: false,
            ..request.clone()
        };
        bytes += piece_request.encoded_len() as u64;
        reply = match client.push(piece_request).await {
            Ok(reply) => Some(reply.into_inner()),
            Err(status) if status.code() == tonic::Code::OutOfRange => {
                return Ok(Pushed::resync());
            }
            Err(status) => return Err(WorkerError::rpc("Push")(status)),
        };
    }
    let reply = reply.unwrap_or_default();
    let mut pushed = Pushed {
        version: reply.version,
        applied_version: reply.version,
        staleness: reply.staleness,
        training_stopped: reply.training_stopped,
        applied: reply.applied,
        resync: false,
        params: Vec::new(),
        durable: reply.durable_sequence,
        bytes,
    };
    if request.return_params {
        let pulled = pull_range(client, request.worker_id, len, piece).await?;
        pushed.version = pulled.version;
        pushed.params = pulled.pieces;
    }
    Ok(pushed)
}

/// Decodes θ that arrived in pieces into `out`.
fn decode_pieces(pieces: &[Bytes], out: &mut [f32]) -> Result<(), WorkerError> {
    let mut start = 0;
    for piece in pieces {
        let end = start + piece.len() / 4;
        let Some(target) = out.get_mut(start..end) else {
            return Err(WorkerError::Rpc {
                call: "Pull",
                code: tonic::Code::Internal,
                message: format!(
                    "the parameter server sent more than the {} values of its range",
                    out.len()
                ),
            });
        };
        decode_f32s_into(piece, target)?;
        start = end;
    }
    if start != out.len() {
        return Err(WorkerError::Rpc {
            call: "Pull",
            code: tonic::Code::Internal,
            message: format!(
                "the parameter server sent {start} values for a range of {}",
                out.len()
            ),
        });
    }
    Ok(())
}

/// Returns the number of gradient values `request` carries: the server's
/// whole range for a dense push, the listed positions for a sparse one.
fn pushed_values(request: &PushRequest) -> usize {
    if request.sparse {
        return request.indices.len() / 4;
    }
    match GradientEncoding::try_from(request.encoding) {
        Ok(GradientEncoding::Bf16) => request.gradient.len() / 2,
        _ => request.gradient.len() / 4,
    }
}

/// Memory a kept push takes, counted against [`MAX_RETAINED_BYTES`].
fn retained_size(bytes: &Bytes, indices: Option<&[u32]>) -> usize {
    bytes.len() + indices.map_or(0, |indices| indices.len() * 4)
}

/// Builds the push of `server`'s range: a slice of a dense gradient, or
/// the entries of a sparse one that fall in the range, with positions
/// counted from the range's start.
fn push_request(gradient: &Gradient<'_>, server: &Server) -> PushRequest {
    let width = match gradient.encoding {
        GradientEncoding::F32 => 4,
        GradientEncoding::Bf16 => 2,
    };
    let range = &server.range;
    let (bytes, indices) = match gradient.indices {
        None => (
            gradient.bytes.slice(range.start * width..range.end * width),
            Bytes::new(),
        ),
        Some(indices) => {
            let first = indices.partition_point(|&index| (index as usize) < range.start);
            let end = indices.partition_point(|&index| (index as usize) < range.end);
            let mut local = Vec::with_capacity((end - first) * 4);
            for &index in &indices[first..end] {
                local.extend_from_slice(&(index - range.start as u32).to_le_bytes());
            }
            (
                gradient.bytes.slice(first * width..end * width),
                Bytes::from(local),
            )
        }
    };
    PushRequest {
        worker_id: gradient.worker_id,
        sequence: gradient.sequence,
        version: server.version,
        gradient: bytes,
        examples: gradient.examples,
        loss: gradient.loss,
        return_params: gradient.fetch,
        epoch: gradient.epoch,
        batch: gradient.batch,
        encoding: gradient.encoding.into(),
        offset: 0,
        more: false,
        resend: false,
        sparse: gradient.indices.is_some(),
        indices,
    }
}

fn task_failed(error: tokio::task::JoinError) -> WorkerError {
    WorkerError::Rpc {
        call: "parameter server request",
        code: tonic::Code::Internal,
        message: format!("the request task failed: {error}"),
    }
}

#[cfg(test)]
mod tests;
