//! The metrics endpoint of a command: one registry for every node the
//! process runs, served at `--metrics-addr`.

use anyhow::Context;
use downpour_coordinator::CoordinatorMetrics;
use downpour_metrics::prometheus::Registry;
use downpour_ps::ParameterServerService;
use downpour_worker::WorkerMetrics;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tracing::warn;

use crate::args::MetricsArgs;

/// A running metrics endpoint, or none when `--metrics-addr` is not set.
/// Dropping it stops the endpoint.
#[derive(Debug, Default)]
pub(crate) struct MetricsEndpoint {
    registry: Option<Registry>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl MetricsEndpoint {
    /// Binds `--metrics-addr` and starts serving, when it is set.
    pub(crate) async fn start(args: &MetricsArgs) -> anyhow::Result<Self> {
        let Some(address) = &args.metrics_addr else {
            return Ok(Self::default());
        };
        let listener = TcpListener::bind(address).await.with_context(|| {
            format!(
                "--metrics-addr {address}: cannot listen on this address; pick a free HOST:PORT"
            )
        })?;
        let registry = Registry::new();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(downpour_metrics::serve(listener, registry.clone(), async {
            stopped.await.ok();
        }));
        Ok(Self {
            registry: Some(registry),
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// Registers the metrics of the parameter server named `node`.
    pub(crate) fn ps(
        &self,
        service: ParameterServerService,
        node: &str,
    ) -> anyhow::Result<ParameterServerService> {
        match &self.registry {
            Some(registry) => service
                .with_metrics(registry, node)
                .with_context(|| format!("registering the metrics of {node}")),
            None => Ok(service),
        }
    }

    /// Returns the metrics of the worker named `node`.
    pub(crate) fn worker(&self, node: &str) -> anyhow::Result<WorkerMetrics> {
        match &self.registry {
            Some(registry) => WorkerMetrics::new(registry, node).with_context(|| {
                format!("registering the metrics of worker {node}; give each worker its own --name")
            }),
            None => Ok(WorkerMetrics::unregistered()),
        }
    }

    /// Returns the coordinator's metrics.
    pub(crate) fn coordinator(&self) -> anyhow::Result<CoordinatorMetrics> {
        match &self.registry {
            Some(registry) => CoordinatorMetrics::new(registry)
                .context("registering the metrics of the coordinator"),
            None => Ok(CoordinatorMetrics::unregistered()),
        }
    }

    /// Stops the endpoint and waits until its connections are closed.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take()
            && let Err(error) = task.await
        {
            warn!(%error, "metrics endpoint task failed");
        }
    }
}

impl Drop for MetricsEndpoint {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
