//! The controller's TLS listeners: the push server (sidecars) and the
//! injection webhook (the apiserver) both serve HTTP/1.1 over TLS with the
//! certificate [`certs`](crate::certs) keeps, through this one loop.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use tollgate_runtime::body::Body;

use crate::certs::Resolver;

/// How long a client may take to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `handler` over TLS on `listener` with the certificate `resolver`
/// holds, at most `max_connections` at once, until `shutdown`.
pub(crate) async fn serve<H, F>(
    listener: TcpListener,
    resolver: Arc<Resolver>,
    handler: H,
    max_connections: usize,
    header_read_timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let tls = match rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_no_client_auth().with_cert_resolver(resolver),
        Err(e) => {
            tracing::error!(error = %e, "cannot configure TLS");
            return;
        }
    };
    let acceptor = TlsAcceptor::from(Arc::new(tls));
    let permits = Arc::new(Semaphore::new(max_connections));
    let mut connections = tokio::task::JoinSet::new();
    while let Some((permit, socket, peer)) =
        tollgate_runtime::serve::accept(&listener, &permits, &mut shutdown).await
    {
        let (acceptor, handler) = (acceptor.clone(), handler.clone());
        connections.spawn(async move {
            let _permit = permit;
            let stream =
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(socket)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => return,
                };
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service_fn(handler));
            if let Err(e) = conn.await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
        // Reap finished connections so the set does not grow.
        while connections.try_join_next().is_some() {}
    }
    // Long-lived streams (sidecars) end with the process: they reconnect to
    // another replica.
    connections.abort_all();
}
