//! [`serve`]: the HTTP listener, with the bounds `axum::serve` lacks.
//!
//! - At most [`HttpLimits::max_connections`] connections at once: past
//!   that, new ones wait in the kernel's accept backlog until one closes,
//!   so a flood cannot exhaust file descriptors or memory.
//! - A connection must send a request's headers within
//!   [`HttpLimits::header_timeout`] (also while it idles between
//!   keep-alive requests), else it is closed: slow-header ("slow-loris")
//!   clients cannot hold connections open.
//! - A request's whole body must arrive within
//!   [`HttpLimits::body_timeout`] ([`read_body_within`]): the timeout is
//!   on the total, not per chunk, so a byte every few seconds does not
//!   keep it alive. Past it: `408` and the connection is closed.
//!
//! HTTP/1.1 only: Fly's proxy speaks it to the app, and hyper's header
//! timeout has no HTTP/2 counterpart.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::Service;

use crate::api::routes::ApiError;
use crate::configuration::HttpLimits;

/// Serves `router` on `listener` until `shutdown` resolves, then waits for
/// open connections to finish (the caller bounds that wait). Handlers can
/// read the peer's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: &HttpLimits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // EMFILE and friends: wait for descriptors to free up
                    // instead of spinning on the error.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo(peer));
            router.clone().call(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            // A client that goes away mid-request is no error of ours.
            let _ = connection.await;
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The client's address as the connection saw it (absent only when a
/// router is driven without [`serve`], as in unit tests).
pub fn peer(request: &axum::http::Extensions) -> Option<SocketAddr> {
    request
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| *addr)
}

/// Middleware: reads the whole request body within the body timeout and
/// the body limit, then hands the request on with the body in memory
/// (every route takes a small body and would buffer it anyway).
pub async fn read_body_within(
    State(limits): State<Arc<BodyLimits>>,
    request: Request,
    next: Next,
) -> Response {
    let (parts, body) = request.into_parts();
    let max_bytes = limits.for_path(parts.uri.path());
    let reading = Limited::new(body, max_bytes).collect();
    let bytes = match tokio::time::timeout(limits.timeout, reading).await {
        Ok(Ok(collected)) => collected.to_bytes(),
        Ok(Err(error)) if error.is::<LengthLimitError>() => {
            return closing(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the request body is larger than {max_bytes} bytes"),
            ))
        }
        Ok(Err(_)) => {
            return closing(ApiError::new(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            ))
        }
        Err(_) => {
            return closing(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                format!(
                    "the request body did not arrive within {} s",
                    limits.timeout.as_secs()
                ),
            ))
        }
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

/// What [`read_body_within`] enforces.
#[derive(Clone, Debug)]
pub struct BodyLimits {
    pub max_bytes: usize,
    /// `POST /batches` carries thousands of job bodies: its own limit.
    pub batch_max_bytes: usize,
    pub timeout: Duration,
}

impl BodyLimits {
    fn for_path(&self, path: &str) -> usize {
        if path == "/batches" {
            self.batch_max_bytes
        } else {
            self.max_bytes
        }
    }
}

/// An error answer after which the connection is closed: the rest of the
/// body may still be on its way and must not be read as a next request.
fn closing(error: ApiError) -> Response {
    let mut response = error.into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}
