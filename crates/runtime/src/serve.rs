//! Listeners: accepting connections with bounded resources and draining
//! them on shutdown. The sidecar's agent and admin listeners, the
//! controller's push, admin and webhook listeners all serve through here.
//!
//! Every connection holds one of a bounded number of slots
//! ([`crate::slots`]): headers must arrive within the header-read timeout
//! (which also closes idle keep-alive connections), and when every slot is
//! taken a connection that is not serving anyone is reclaimed for the
//! newcomer rather than the newcomer waiting. When every slot is serving a
//! request, a newcomer waits for one as long as it could have taken to
//! send its headers, then hears `503` with `Retry-After: 1`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::body::Body;
use crate::slots::{Admission, Phase, Reclaim, Slot, Slots};

/// How a listener bounds its connections.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// The most connections served at once.
    pub max_connections: usize,
    /// How long a client may take to send request headers; also how long
    /// an idle keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// How long in-flight requests get to finish on shutdown.
    pub grace: Duration,
    /// How long a connection must have been unused (silent, stalled in a
    /// body, idle) before a newcomer may reclaim its slot.
    pub reclaim_after: Duration,
}

/// The default [`ServeOptions::reclaim_after`]: time for a new client to
/// send its request, and for a served one to send its next, before a flood
/// of newcomers can take its slot.
pub const RECLAIM_AFTER: Duration = Duration::from_secs(1);

/// What happened to a client connection, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionEvent {
    /// A connection was accepted.
    Opened,
    /// A connection ended, for whatever reason.
    Closed,
    /// The server closed a connection to free its slot.
    Reclaimed(Reclaim),
    /// A connection was refused: every slot was serving a request.
    Refused,
}

/// How long a reclaimed idle connection gets to flush what it was sending.
const RECLAIM_FLUSH: Duration = Duration::from_secs(1);
/// The most newcomers accepted while every slot is at work; they wait (up
/// to the header-read timeout) for a slot, the rest in the listen backlog.
const WAITING: usize = 64;
/// The least time between looks for a reclaimable slot while newcomers wait.
const RECHECK: Duration = Duration::from_millis(10);
/// How long a refused client gets to take its 503.
const REFUSE_WRITE: Duration = Duration::from_secs(1);

/// Serves `handler` on `listener` until `shutdown` fires, then gives
/// in-flight requests `grace` to finish. `on_connection` sees +1 and -1 as
/// connections open and close.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    max_connections: usize,
    header_read_timeout: Duration,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
    on_connection: impl Fn(i64) + Send + Sync + Clone + 'static,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    let options = ServeOptions {
        max_connections,
        header_read_timeout,
        grace,
        reclaim_after: RECLAIM_AFTER,
    };
    serve_with(
        listener,
        handler,
        options,
        shutdown,
        move |event| match event {
            ConnectionEvent::Opened => on_connection(1),
            ConnectionEvent::Closed => on_connection(-1),
            ConnectionEvent::Reclaimed(_) | ConnectionEvent::Refused => {}
        },
    )
    .await
}

/// Serves `handler` on `listener` within `options` until `shutdown` fires;
/// `events` hears of every connection opened, closed, reclaimed or refused.
pub async fn serve_with<H, F>(
    listener: TcpListener,
    handler: H,
    options: ServeOptions,
    mut shutdown: watch::Receiver<bool>,
    events: impl Fn(ConnectionEvent) + Send + Sync + Clone + 'static,
) where
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    // HTTP/1.1 only: MCP clients speak it, and hyper's header timeout then
    // runs from the first moment of a connection and again whenever it
    // goes idle. (Protocol auto-detection would wait for the first bytes
    // with no timeout at all, letting idle sockets pile up.)
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true);
    let slots = Arc::new(Slots::new(options.max_connections, options.reclaim_after));
    let mut connections = JoinSet::new();
    // Newcomers accepted while every slot is at work, oldest first, each
    // with the moment it is refused. Past WAITING more stay in the backlog.
    let mut waiting: VecDeque<(TcpStream, SocketAddr, Instant)> = VecDeque::new();
    let waiting_max = options.max_connections.clamp(1, WAITING);
    loop {
        while connections.try_join_next().is_some() {}
        while !waiting.is_empty() {
            let Admission::Admitted { slot, reclaimed } = slots.admit() else {
                break;
            };
            let Some((socket, peer, _)) = waiting.pop_front() else {
                slots.release(&slot);
                break;
            };
            if let Some(phase) = reclaimed {
                events(ConnectionEvent::Reclaimed(phase.reclaim()));
            }
            let _ = socket.set_nodelay(true);
            events(ConnectionEvent::Opened);
            let conn = Conn {
                handler: handler.clone(),
                slot,
                slots: slots.clone(),
                events: events.clone(),
                shutdown: shutdown.clone(),
                grace: options.grace,
            };
            connections.spawn(conn.run(builder.clone(), socket, peer));
        }
        let now = Instant::now();
        while waiting
            .front()
            .is_some_and(|(_, _, refuse_at)| *refuse_at <= now)
        {
            if let Some((socket, _, _)) = waiting.pop_front() {
                events(ConnectionEvent::Refused);
                connections.spawn(refuse(socket));
            }
        }
        let next_refusal = waiting.front().map(|(_, _, at)| *at);
        tokio::select! {
            _ = shutdown.changed() => break,
            accepted = listener.accept(), if waiting.len() < waiting_max => match accepted {
                Ok((socket, peer)) => {
                    waiting.push_back((socket, peer, Instant::now() + options.header_read_timeout));
                }
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = slots.wait_for_room(), if !waiting.is_empty() => {}
            // A connection may have been unused long enough by now.
            _ = tokio::time::sleep((options.reclaim_after / 4).max(RECHECK)), if !waiting.is_empty() => {}
            _ = tokio::time::sleep_until(next_refusal.unwrap_or(now)), if next_refusal.is_some() => {}
        }
    }
    drop(listener);
    let drained = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(options.grace, drained).await.is_err() {
        tracing::warn!(
            grace = ?options.grace,
            "connections still open after the shutdown grace period; closing them"
        );
        connections.shutdown().await;
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

/// One accepted connection and what it needs.
struct Conn<H, E> {
    handler: H,
    slot: Slot,
    slots: Arc<Slots>,
    events: E,
    shutdown: watch::Receiver<bool>,
    grace: Duration,
}

impl<H, F, E> Conn<H, E>
where
    H: Fn(Request<Incoming>) -> F + Send + Sync + Clone + 'static,
    F: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    E: Fn(ConnectionEvent) + Send + Sync + Clone + 'static,
{
    /// Serves the connection until it ends, is reclaimed or the server
    /// shuts down.
    async fn run(mut self, builder: http1::Builder, socket: TcpStream, peer: SocketAddr) {
        let (handler, slot) = (self.handler.clone(), self.slot.clone());
        let service = service_fn(move |mut req: Request<Incoming>| {
            let in_use = slot.request();
            req.extensions_mut().insert(slot.clone());
            // The handler's future is made inside this one, not captured by
            // it: a captured future is stored beside the one being awaited,
            // doubling what hyper moves for every request.
            let handler = handler.clone();
            async move {
                let response = handler(req).await?;
                // The body holds the slot in use until it is sent (or dropped).
                let held = move |frame| {
                    let _ = &in_use;
                    frame
                };
                Ok::<_, Infallible>(response.map(|body| body.map_frame(held).boxed_unsync()))
            }
        });
        let mut conn = Box::pin(builder.serve_connection(TokioIo::new(socket), service));
        let ended = tokio::select! {
            ended = conn.as_mut() => Some(ended),
            _ = self.slot.evicted() => None,
            _ = self.shutdown.changed() => {
                conn.as_mut().graceful_shutdown();
                Some(tokio::time::timeout(self.grace, conn.as_mut()).await.unwrap_or(Ok(())))
            }
        };
        match ended {
            Some(Err(e)) if e.is_timeout() => {
                (self.events)(ConnectionEvent::Reclaimed(Reclaim::HeaderTimeout));
            }
            Some(Err(e)) => tracing::debug!(%peer, error = %e, "connection ended with an error"),
            Some(Ok(())) => {}
            // Reclaimed. Nothing was started on a connection that never
            // sent a whole request, so it is dropped at once; one that may
            // still be flushing a response, or that began a request since
            // it was chosen, closes after it.
            None => match self.slot.phase() {
                Phase::Fresh | Phase::Receiving => {}
                Phase::Idle => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(RECLAIM_FLUSH, conn.as_mut()).await;
                }
                Phase::Busy => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.as_mut().await;
                }
            },
        }
        drop(conn);
        self.slots.release(&self.slot);
        (self.events)(ConnectionEvent::Closed);
    }
}

/// Tells a client there is no slot for it, and closes.
async fn refuse(mut socket: TcpStream) {
    const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
    let _ = tokio::time::timeout(REFUSE_WRITE, socket.write_all(BUSY)).await;
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
