//! The worker's clients of the parameter servers, each holding a contiguous
//! range of θ. Pulls and pushes go to every server at once.

use std::ops::Range;
use std::time::Duration;

use bytes::Bytes;
use downpour_proto::decode_f32s_into;
use downpour_proto::transport::{MAX_MESSAGE_BYTES, connect_with_retry};
use downpour_proto::v1::parameter_server_client::ParameterServerClient;
use downpour_proto::v1::{GradientEncoding, PsShard, PullRequest, PushRequest};
use tokio::task::JoinSet;
use tonic::transport::Channel;

use crate::error::WorkerError;

type PsClient = ParameterServerClient<Channel>;

#[derive(Debug)]
struct Server {
    address: String,
    range: Range<usize>,
    client: PsClient,
    /// Version of this server's range in the worker's θ.
    version: u64,
}

/// A gradient ready to push.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gradient<'a> {
    pub(crate) worker_id: u32,
    pub(crate) sequence: u64,
    /// The whole gradient, encoded as `encoding` says; each server gets its
    /// range.
    pub(crate) bytes: &'a Bytes,
    pub(crate) encoding: GradientEncoding,
    pub(crate) examples: u32,
    pub(crate) loss: f32,
    /// Epoch and shard index of the last minibatch behind the gradient.
    pub(crate) epoch: u32,
    pub(crate) batch: u32,
    /// Whether the servers should send θ back.
    pub(crate) fetch: bool,
}

/// What the servers said to a push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PushOutcome {
    Applied,
    /// Training stopped on at least one server.
    TrainingStopped,
}

/// Clients of every parameter server of the run, in θ order.
#[derive(Debug)]
pub(crate) struct ParameterServers {
    servers: Vec<Server>,
}

impl ParameterServers {
    /// Connects to the servers the coordinator named, or to `overrides` in
    /// their place, and checks that their ranges cover `parameters` values
    /// exactly once.
    pub(crate) async fn connect(
        shards: &[PsShard],
        overrides: Option<&[String]>,
        parameters: usize,
        timeout: Duration,
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
            let channel = connect_with_retry("parameter server", &address, timeout).await?;
            let client = ParameterServerClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES);
            servers.push(Server {
                address,
                range: start..start + length,
                client,
                version: 0,
            });
        }
        if expected_offset != parameters {
            return Err(WorkerError::Layout(format!(
                "the parameter servers hold {expected_offset} values, but the model has {parameters}"
            )));
        }
        Ok(Self { servers })
    }

    /// Returns the addresses of the servers, for logs.
    pub(crate) fn addresses(&self) -> Vec<&str> {
        self.servers.iter().map(|s| s.address.as_str()).collect()
    }

    /// Pulls every server's range into `params`.
    pub(crate) async fn pull(
        &mut self,
        worker_id: u32,
        params: &mut [f32],
    ) -> Result<(), WorkerError> {
        let mut pulls = JoinSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let mut client = server.client.clone();
            pulls.spawn(async move {
                let request = PullRequest {
                    min_version: 0,
                    worker_id: Some(worker_id),
                };
                let reply = client.pull(request).await;
                (index, reply.map(tonic::Response::into_inner))
            });
        }
        while let Some(joined) = pulls.join_next().await {
            let (index, reply) = joined.map_err(task_failed)?;
            let reply = reply.map_err(WorkerError::rpc("Pull"))?;
            let server = &mut self.servers[index];
            decode_f32s_into(&reply.params, &mut params[server.range.clone()])?;
            server.version = reply.version;
        }
        Ok(())
    }

    /// Pushes each server its range of the gradient, tagged with the version
    /// that range was computed at, and writes the returned θ into `params`
    /// when the gradient asks for it.
    pub(crate) async fn push(
        &mut self,
        gradient: Gradient<'_>,
        params: &mut [f32],
    ) -> Result<PushOutcome, WorkerError> {
        let mut outcome = PushOutcome::Applied;
        if let [server] = self.servers.as_mut_slice() {
            let request = push_request(&gradient, server);
            let reply = server
                .client
                .push(request)
                .await
                .map_err(WorkerError::rpc("Push"))?
                .into_inner();
            if reply.training_stopped {
                outcome = PushOutcome::TrainingStopped;
            }
            if gradient.fetch {
                decode_f32s_into(&reply.params, params)?;
                server.version = reply.version;
            }
            return Ok(outcome);
        }

        let mut pushes = JoinSet::new();
        for (index, server) in self.servers.iter().enumerate() {
            let request = push_request(&gradient, server);
            let mut client = server.client.clone();
            pushes.spawn(async move {
                let reply = client.push(request).await;
                (index, reply.map(tonic::Response::into_inner))
            });
        }
        while let Some(joined) = pushes.join_next().await {
            let (index, reply) = joined.map_err(task_failed)?;
            let reply = reply.map_err(WorkerError::rpc("Push"))?;
            if reply.training_stopped {
                outcome = PushOutcome::TrainingStopped;
            }
            if gradient.fetch {
                let server = &mut self.servers[index];
                decode_f32s_into(&reply.params, &mut params[server.range.clone()])?;
                server.version = reply.version;
            }
        }
        Ok(outcome)
    }
}

fn push_request(gradient: &Gradient<'_>, server: &Server) -> PushRequest {
    let width = match gradient.encoding {
        GradientEncoding::F32 => 4,
        GradientEncoding::Bf16 => 2,
    };
    let bytes = gradient
        .bytes
        .slice(server.range.start * width..server.range.end * width);
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
    }
}

fn task_failed(error: tokio::task::JoinError) -> WorkerError {
    WorkerError::Rpc {
        call: "parameter server request",
        code: tonic::Code::Internal,
        message: format!("the request task failed: {error}"),
    }
}
