//! Listeners: accepting connections with bounded resources, routing each
//! request to its handler, and draining on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

use crate::mcp::jsonrpc;

use super::Proxy;
use super::body::{self, Body};
use super::identity::IdentityError;
use super::{post, stream};

/// Routes one client request.
pub async fn route(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = req.into_parts();
    // A CORS preflight carries no credentials; everything else is
    // identified before it goes anywhere.
    let subject = if parts.method == Method::OPTIONS {
        None
    } else {
        match proxy.identities.identify(&parts.headers).await {
            Ok(subject) => subject,
            Err(e) => return Ok(identity_refused(&proxy, &e)),
        }
    };
    let resp = match parts.method {
        Method::POST => post::handle(&proxy, parts, incoming, subject).await,
        Method::GET | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            stream::handle(&proxy, parts).await
        }
        _ => {
            // Any other method could carry a message past the decision.
            proxy
                .gate
                .metrics
                .rejected
                .with_label_values(&["method"])
                .inc();
            let mut resp = body::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &jsonrpc::error_response(
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "MCP uses POST, GET and DELETE",
                    None,
                ),
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, POST, DELETE, HEAD, OPTIONS"),
            );
            resp
        }
    };
    Ok(resp)
}

/// A request whose caller could not be identified: 401 for a missing or
/// refused token (RFC 6750), 503 while the verifier cannot be asked.
fn identity_refused(proxy: &Proxy, e: &IdentityError) -> Response<Body> {
    proxy
        .gate
        .metrics
        .identity_failures
        .with_label_values(&[e.reason()])
        .inc();
    tracing::info!(reason = e.reason(), error = %e, "request refused: caller not identified");
    let (status, challenge) = match e {
        IdentityError::Missing => (StatusCode::UNAUTHORIZED, "Bearer"),
        IdentityError::Invalid(_) => (StatusCode::UNAUTHORIZED, "Bearer error=\"invalid_token\""),
        IdentityError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ""),
    };
    let mut resp = body::json(
        status,
        &jsonrpc::error_response(
            &Value::Null,
            jsonrpc::IDENTITY_REFUSED,
            &e.to_string(),
            None,
        ),
    );
    let headers = resp.headers_mut();
    if challenge.is_empty() {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    } else {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    resp
}

/// Serves `handler` on `listener` until `shutdown` fires, then gives
/// in-flight requests `grace` to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    max_connections: usize,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    on_connection: impl Fn(i64) + Send + Sync + Clone + 'static,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // HTTP/1.1 only: MCP clients speak it, and hyper's header timeout then
    // runs from the first moment of a connection. (Protocol auto-detection
    // would wait for the first bytes with no timeout at all, letting idle
    // sockets pile up.)
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .keep_alive(true);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(max_connections));
    loop {
        let permit = tokio::select! {
            _ = shutdown.changed() => break,
            permit = permits.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (socket, peer) = tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = socket.set_nodelay(true);
        let handler = handler.clone();
        let conn = builder.serve_connection(TokioIo::new(socket), service_fn(handler));
        let conn = graceful.watch(conn);
        let on_connection = on_connection.clone();
        tokio::spawn(async move {
            on_connection(1);
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
            on_connection(-1);
            drop(permit);
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period; closing them"
        );
    }
}

/// Binds `addr`, saying which flag to change when it is taken.
pub async fn bind(addr: SocketAddr, flag: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {addr} ({e}); choose another address with {flag}")
    })
}
