//! The gRPC face of the parameter server.

use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};

use downpour_proto::transport::{MAX_MESSAGE_BYTES, incoming, server_builder};
use downpour_proto::v1::parameter_server_server::{ParameterServer, ParameterServerServer};
use downpour_proto::v1::{
    FinishReply, FinishRequest, InitReply, InitRequest, PullReply, PullRequest, PushReply,
    PushRequest,
};
use downpour_proto::{decode_f32s, decode_f32s_into, encode_f32s};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tonic::{Request, Response, Status};
use tracing::{info, warn};

use crate::optimizer::SgdConfig;
use crate::store::{ParamStore, Push, PushTotals, StoreError};

/// Shared state behind the service: the store, once initialised, and a
/// reusable buffer for decoding gradients.
#[derive(Debug, Default)]
struct State {
    store: Option<ParamStore>,
    gradient: Vec<f32>,
}

/// The `ParameterServer` gRPC service.
#[derive(Debug, Clone)]
pub struct ParameterServerService {
    state: Arc<Mutex<State>>,
    version: watch::Sender<VersionState>,
    finished: Arc<Notify>,
}

/// The state that long-polling pulls wait on.
#[derive(Debug, Clone, Copy, Default)]
struct VersionState {
    version: u64,
    finished: bool,
}

impl Default for ParameterServerService {
    fn default() -> Self {
        Self::new()
    }
}

impl ParameterServerService {
    /// Creates an uninitialised server; the coordinator's `Init` sets θ.
    pub fn new() -> Self {
        Self {
            state: Arc::default(),
            version: watch::Sender::new(VersionState::default()),
            finished: Arc::new(Notify::new()),
        }
    }

    /// Resolves once a client has called `Finish`.
    pub async fn finished(&self) {
        self.finished.notified().await;
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock would be a bug in the store; the
        // state itself stays consistent because every update validates first.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl From<StoreError> for Status {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::FutureVersion { .. } => Status::out_of_range(error.to_string()),
            StoreError::Diverged { .. } => Status::failed_precondition(error.to_string()),
            _ => Status::invalid_argument(error.to_string()),
        }
    }
}

fn not_initialised() -> Status {
    Status::failed_precondition("parameter server has no parameters yet: Init was not called")
}

fn totals_to_proto(totals: &PushTotals) -> downpour_proto::v1::PushTotals {
    downpour_proto::v1::PushTotals {
        examples: totals.examples,
        loss_sum: totals.loss_sum,
        pushes: totals.pushes,
        staleness_sum: totals.staleness_sum,
        max_staleness: totals.max_staleness,
        pushes_by_worker: totals.pushes_by_worker.clone().into_iter().collect(),
    }
}

#[tonic::async_trait]
impl ParameterServer for ParameterServerService {
    async fn init(&self, request: Request<InitRequest>) -> Result<Response<InitReply>, Status> {
        let request = request.into_inner();
        let mut state = self.lock();
        if let Some(store) = &state.store {
            if store.run_id() == request.run_id {
                return Ok(Response::new(InitReply {
                    version: store.version(),
                }));
            }
            return Err(Status::already_exists(format!(
                "parameter server already serves run {}; start a new server for run {}",
                store.run_id(),
                request.run_id
            )));
        }

        let params = decode_f32s(&request.params)
            .map_err(|e| Status::invalid_argument(format!("params: {e}")))?;
        let optimizer = request
            .optimizer
            .ok_or_else(|| Status::invalid_argument("optimizer settings are missing"))?;
        let sgd = SgdConfig {
            learning_rate: optimizer.learning_rate,
            momentum: optimizer.momentum,
            weight_decay: optimizer.weight_decay,
        };
        let store = ParamStore::new(request.run_id.clone(), params, sgd)?;
        info!(
            run_id = %request.run_id,
            parameters = store.params().len(),
            learning_rate = %sgd.learning_rate,
            momentum = %sgd.momentum,
            weight_decay = %sgd.weight_decay,
            "parameter server initialised"
        );
        state.gradient = vec![0.0; store.params().len()];
        state.store = Some(store);
        Ok(Response::new(InitReply { version: 0 }))
    }

    async fn pull(&self, request: Request<PullRequest>) -> Result<Response<PullReply>, Status> {
        let min_version = request.into_inner().min_version;
        if min_version > 0 {
            let mut versions = self.version.subscribe();
            let reached = versions
                .wait_for(|state| state.version >= min_version || state.finished)
                .await
                .map_err(|_| Status::unavailable("parameter server is shutting down"))?;
            if reached.finished {
                return Err(Status::unavailable("parameter server finished its run"));
            }
        }

        let state = self.lock();
        let store = state.store.as_ref().ok_or_else(not_initialised)?;
        Ok(Response::new(PullReply {
            version: store.version(),
            params: encode_f32s(store.params()),
            totals: Some(totals_to_proto(store.totals())),
        }))
    }

    async fn push(&self, request: Request<PushRequest>) -> Result<Response<PushReply>, Status> {
        let request = request.into_inner();
        let mut guard = self.lock();
        let state = &mut *guard;
        let store = state.store.as_mut().ok_or_else(not_initialised)?;

        if let Err(error) = decode_f32s_into(&request.gradient, &mut state.gradient) {
            warn!(worker_id = request.worker_id, %error, "push rejected");
            return Err(Status::invalid_argument(format!("gradient: {error}")));
        }
        let push = Push {
            worker_id: request.worker_id,
            version: request.version,
            gradient: &state.gradient,
            examples: request.examples,
            loss: request.loss,
        };
        let outcome = match store.apply_push(push) {
            Ok(outcome) => outcome,
            Err(error) => {
                warn!(worker_id = request.worker_id, %error, "push rejected");
                return Err(error.into());
            }
        };

        let params = if request.return_params {
            encode_f32s(store.params())
        } else {
            Default::default()
        };
        drop(guard);
        self.version
            .send_modify(|state| state.version = state.version.max(outcome.version));

        Ok(Response::new(PushReply {
            version: outcome.version,
            staleness: outcome.staleness,
            params,
        }))
    }

    async fn finish(
        &self,
        _request: Request<FinishRequest>,
    ) -> Result<Response<FinishReply>, Status> {
        let version = self.lock().store.as_ref().map_or(0, ParamStore::version);
        info!(version, "run finished; parameter server stopping");
        self.version.send_modify(|state| state.finished = true);
        self.finished.notify_one();
        Ok(Response::new(FinishReply { version }))
    }
}

/// Serves the parameter server on `listener` until a client calls `Finish`
/// or `shutdown` resolves.
///
/// # Errors
///
/// Returns the transport error when the server fails.
pub async fn serve(
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let service = ParameterServerService::new();
    let finished = service.clone();
    match listener.local_addr() {
        Ok(address) => info!(%address, "parameter server listening"),
        Err(error) => warn!(%error, "parameter server listening on an unknown address"),
    }

    let server = ParameterServerServer::new(service)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    server_builder()
        .add_service(server)
        .serve_with_incoming_shutdown(incoming(listener), async move {
            tokio::select! {
                () = finished.finished() => {}
                () = shutdown => {}
            }
        })
        .await
}
