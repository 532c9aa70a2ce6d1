//! The HTTP endpoint that serves a registry in the Prometheus text format.

use std::convert::Infallible;
use std::future::Future;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use prometheus::{Encoder, Registry, TextEncoder};
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

/// Path of the metrics page.
const METRICS_PATH: &str = "/metrics";

/// Serves `registry` at `GET /metrics` on `listener` over HTTP/1.1 until
/// `shutdown` resolves, then closes every open connection. Any other path
/// gets 404 and any other method 405.
///
/// The endpoint has no authentication and no TLS, so bind it to a loopback
/// or otherwise private address.
pub async fn serve(
    listener: TcpListener,
    registry: Registry,
    shutdown: impl Future<Output = ()> + Send,
) {
    match listener.local_addr() {
        Ok(address) => {
            info!(%address, "metrics endpoint listening at http://{address}{METRICS_PATH}")
        }
        Err(error) => warn!(%error, "metrics endpoint listening on an unknown address"),
    }
    tokio::pin!(shutdown);
    let mut connections = JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
            // Reaps finished connections so the set does not grow.
            Some(_) = connections.join_next() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Accept errors such as too many open files are transient.
                warn!(%error, "metrics endpoint: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let registry = registry.clone();
        connections.spawn(async move {
            let service = service_fn(move |request| {
                let response = respond(&registry, &request);
                async move { Ok::<_, Infallible>(response) }
            });
            if let Err(error) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                debug!(%peer, %error, "metrics endpoint: connection ended with an error");
            }
        });
    }
    connections.shutdown().await;
    info!("metrics endpoint stopped");
}

fn respond(registry: &Registry, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.uri().path() != METRICS_PATH {
        return plain(
            StatusCode::NOT_FOUND,
            format!("not found; metrics are at {METRICS_PATH}\n"),
        );
    }
    if request.method() != Method::GET && request.method() != Method::HEAD {
        let mut response = plain(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("method {} not allowed; use GET\n", request.method()),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    let encoder = TextEncoder::new();
    let mut body = Vec::new();
    if let Err(error) = encoder.encode(&registry.gather(), &mut body) {
        warn!(%error, "metrics endpoint: encoding the metrics failed");
        return plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("encoding the metrics failed: {error}\n"),
        );
    }
    let mut response = Response::new(Full::new(Bytes::from(body)));
    if let Ok(value) = header::HeaderValue::from_str(encoder.format_type()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    response
}

fn plain(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use prometheus::IntCounter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    use super::*;

    /// Sends one HTTP/1.1 request and returns the whole response.
    async fn fetch(address: std::net::SocketAddr, request_line: &str) -> String {
        let mut stream = TcpStream::connect(address).await.unwrap();
        let request = format!("{request_line}\r\nHost: test\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response
    }

    #[tokio::test]
    async fn endpoint_serves_registry() {
        let registry = Registry::new();
        let counter = IntCounter::with_opts(crate::opts(
            "downpour_test_total",
            "Requests in the test.",
            "ps-0",
        ))
        .unwrap();
        registry.register(Box::new(counter.clone())).unwrap();
        counter.inc_by(3);

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, registry, async {
            stopped.await.ok();
        }));

        let page = fetch(address, "GET /metrics HTTP/1.1").await;
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("text/plain; version=0.0.4"), "{page}");
        assert!(
            page.contains("# TYPE downpour_test_total counter"),
            "{page}"
        );
        assert!(
            page.contains("downpour_test_total{node=\"ps-0\"} 3"),
            "{page}"
        );

        let missing = fetch(address, "GET /other HTTP/1.1").await;
        assert!(missing.starts_with("HTTP/1.1 404"), "{missing}");
        let posted = fetch(address, "POST /metrics HTTP/1.1").await;
        assert!(posted.starts_with("HTTP/1.1 405"), "{posted}");
        assert!(
            posted.to_lowercase().contains("allow: get, head"),
            "{posted}"
        );

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .expect("the endpoint stops on shutdown")
            .unwrap();
    }
}
