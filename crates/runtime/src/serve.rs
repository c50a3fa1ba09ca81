//! Listeners: accepting connections with bounded resources and draining
//! them on shutdown. The sidecar's agent and admin listeners, the
//! controller's push, admin and webhook listeners all serve through here.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::body::Body;

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
    while let Some((permit, socket, peer)) = accept(&listener, &permits, &mut shutdown).await {
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

/// The next connection on `listener` once one of `permits` is free, or
/// `None` when `shutdown` fires. The permit is held for as long as the
/// connection lives; a failed accept (EMFILE and friends) backs off
/// instead of spinning.
pub async fn accept(
    listener: &TcpListener,
    permits: &Arc<Semaphore>,
    shutdown: &mut watch::Receiver<bool>,
) -> Option<(OwnedSemaphorePermit, TcpStream, SocketAddr)> {
    let permit = tokio::select! {
        _ = shutdown.changed() => return None,
        permit = permits.clone().acquire_owned() => permit.ok()?,
    };
    loop {
        tokio::select! {
            _ = shutdown.changed() => return None,
            accepted = listener.accept() => match accepted {
                Ok((socket, peer)) => {
                    let _ = socket.set_nodelay(true);
                    return Some((permit, socket, peer));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

/// A listener that could not be opened, naming the flag that moves it.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr} ({source}); choose another address with {flag}")]
pub struct BindError {
    addr: SocketAddr,
    flag: &'static str,
    source: std::io::Error,
}

/// Binds `addr`, saying which flag to change when it is taken.
pub async fn bind(addr: SocketAddr, flag: &'static str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, flag, source })
}
