//! RPC latency histograms, for gRPC servers and for clients.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::{HistogramVec, Registry};
use tonic::server::NamedService;
use tower_service::Service;

/// Upper bounds of the latency buckets, in seconds: 100 µs to 10 s.
const LATENCY_BUCKETS: [f64; 16] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// Label value of a call whose method is not in the timer's list, which
/// keeps the number of label values bounded whatever clients send.
const UNKNOWN_METHOD: &str = "unknown";

/// A histogram of RPC durations per method.
#[derive(Debug, Clone)]
pub struct RpcTimer {
    seconds: HistogramVec,
    methods: &'static [&'static str],
}

impl RpcTimer {
    /// Creates the server-side histogram `downpour_rpc_server_duration_seconds`
    /// of `node`, the time from a request's arrival to its response headers,
    /// with one series per name in `methods`.
    ///
    /// # Errors
    ///
    /// Fails when `registry` already holds this histogram for `node`.
    pub fn server(
        registry: Option<&Registry>,
        node: &str,
        methods: &'static [&'static str],
    ) -> prometheus::Result<Self> {
        Self::new(
            registry,
            "downpour_rpc_server_duration_seconds",
            "Time from the arrival of an RPC to its response headers, in seconds. For the \
             streaming FetchShard it ends when the stream starts.",
            node,
            methods,
        )
    }

    /// Creates the client-side histogram `downpour_rpc_client_duration_seconds`
    /// of `node`, the time a call takes as its caller sees it, retries and
    /// every server of a split θ included.
    ///
    /// # Errors
    ///
    /// Fails when `registry` already holds this histogram for `node`.
    pub fn client(
        registry: Option<&Registry>,
        node: &str,
        methods: &'static [&'static str],
    ) -> prometheus::Result<Self> {
        Self::new(
            registry,
            "downpour_rpc_client_duration_seconds",
            "Time an RPC takes as the caller sees it, in seconds, retries and every \
             parameter server of a split θ included.",
            node,
            methods,
        )
    }

    fn new(
        registry: Option<&Registry>,
        name: &str,
        help: &str,
        node: &str,
        methods: &'static [&'static str],
    ) -> prometheus::Result<Self> {
        let seconds = HistogramVec::new(
            crate::histogram_opts(name, help, node, LATENCY_BUCKETS.to_vec()),
            &["method"],
        )?;
        crate::register(registry, &seconds)?;
        // Series for every method from the start, so that rates are
        // defined before the first call.
        for method in methods.iter().chain([&UNKNOWN_METHOD]) {
            seconds.with_label_values(&[*method]);
        }
        Ok(Self { seconds, methods })
    }

    /// Records one call of `method` that took `elapsed`.
    pub fn observe(&self, method: &str, elapsed: Duration) {
        let method = self
            .methods
            .iter()
            .find(|known| **known == method)
            .copied()
            .unwrap_or(UNKNOWN_METHOD);
        self.seconds
            .with_label_values(&[method])
            .observe(elapsed.as_secs_f64());
    }

    /// Times `call` as one call of `method` and returns its output.
    pub async fn time<T>(&self, method: &str, call: impl Future<Output = T>) -> T {
        let started = Instant::now();
        let output = call.await;
        self.observe(method, started.elapsed());
        output
    }

    /// Wraps a gRPC service so that this timer records each of its calls.
    pub fn wrap<S>(&self, service: S) -> Timed<S> {
        Timed {
            inner: service,
            timer: self.clone(),
        }
    }
}

/// A gRPC service whose calls an [`RpcTimer`] records, by the method name
/// at the end of the request path (`/package.Service/Method`).
#[derive(Debug, Clone)]
pub struct Timed<S> {
    inner: S,
    timer: RpcTimer,
}

impl<S, B> Service<http::Request<B>> for Timed<S>
where
    S: Service<http::Request<B>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let method = request
            .uri()
            .path()
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        let timer = self.timer.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            timer.observe(&method, started.elapsed());
            response
        })
    }
}

impl<S: NamedService> NamedService for Timed<S> {
    const NAME: &'static str = S::NAME;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_methods_share_one_series() {
        let registry = Registry::new();
        let timer = RpcTimer::server(Some(&registry), "ps-0", &["Push", "Pull"]).unwrap();
        timer.observe("Push", Duration::from_millis(3));
        timer.observe("NoSuchMethod", Duration::from_millis(1));
        timer.observe("AnotherOne", Duration::from_millis(1));

        let families = registry.gather();
        assert_eq!(families.len(), 1);
        let counts: Vec<(String, u64)> = families[0]
            .get_metric()
            .iter()
            .map(|metric| {
                let method = metric
                    .get_label()
                    .iter()
                    .find(|pair| pair.name() == "method")
                    .map(|pair| pair.value().to_owned())
                    .unwrap();
                (method, metric.get_histogram().get_sample_count())
            })
            .collect();
        assert!(counts.contains(&("Push".to_owned(), 1)), "{counts:?}");
        assert!(counts.contains(&("Pull".to_owned(), 0)), "{counts:?}");
        assert!(counts.contains(&("unknown".to_owned(), 2)), "{counts:?}");
        assert_eq!(counts.len(), 3);
    }

    #[test]
    fn same_timer_twice_is_rejected() {
        let registry = Registry::new();
        RpcTimer::server(Some(&registry), "ps-0", &["Push"]).unwrap();
        // A second node in the same process registers fine.
        RpcTimer::server(Some(&registry), "ps-1", &["Push"]).unwrap();
        assert!(RpcTimer::server(Some(&registry), "ps-0", &["Push"]).is_err());
    }
}
