//! The keep-alive HTTP/1.1 connections to a TCP upstream: a stack of idle
//! senders, each handed back by the response body that used it once that
//! body has been read to its end.
//!
//! Why not hyper_util's pooled `Client`, which the proxy used before: it is
//! built for many hosts, and pays for that on every call — it hashes a pool
//! key, races a checkout against a lazy connect, rewrites the URI to origin
//! form, and, because a response's body is still unread when its head
//! arrives, spawns a task per call that waits for the connection to go idle
//! before returning it to the pool. The proxy talks to one upstream, and the
//! body it relays knows exactly when the connection is free again.
//!
//! A connection is reused only after a clean end of its response: a body
//! dropped half-read (a client that went away from a stream) closes its
//! connection, so a reused one is never still busy with someone else's
//! response. A request that an idle connection refused before writing
//! anything (the upstream closed it meanwhile) is sent again once on a fresh
//! connection, as hyper's pooled client does.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery};
use http::{Request, Response, Uri};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

/// Idle connections kept at most; more are closed when handed back.
const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed instead of reused.
const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// How long a connection handed back may take to be ready again before a
/// new one is made instead.
const READY_WAIT: Duration = Duration::from_secs(1);

type Sender = SendRequest<Full<Bytes>>;

/// What failed underneath an a request to the upstream, shown with its whole chain.
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The TCP connection did not open in time.
    #[error("no connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The TCP connection did not open.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// HTTP on the connection failed.
    #[error("{}", source_text(.0))]
    Http(#[from] hyper::Error),
    /// The stdio upstream's client failed.
    #[error("{}", source_text(.0))]
    Stdio(#[from] hyper_util::client::legacy::Error),
}

/// An error and its sources, e.g. "client error (Connect): connection refused".
pub(crate) fn source_text(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        text.push_str(": ");
        text.push_str(&s.to_string());
        cur = s.source();
    }
    text
}

/// Why a request got no response head.
#[derive(Debug)]
pub(crate) enum SendError {
    /// No connection could be made.
    Connect(Cause),
    /// A connection was made but the exchange failed.
    Exchange(Cause),
}

/// The idle connections to one upstream address.
pub(crate) struct Connections {
    authority: Authority,
    host: HeaderValue,
    connect_timeout: Duration,
    idle: Mutex<VecDeque<Idle>>,
}

struct Idle {
    sender: Sender,
    since: Instant,
}

impl Connections {
    pub(crate) fn new(authority: Authority, connect_timeout: Duration) -> Arc<Self> {
        let host = HeaderValue::from_str(authority.as_str())
            .unwrap_or_else(|_| HeaderValue::from_static("localhost"));
        Arc::new(Connections {
            authority,
            host,
            connect_timeout,
            idle: Mutex::new(VecDeque::new()),
        })
    }

    /// Sends `req` (whose URI may be absolute: only its path and query go on
    /// the request line) and waits for the response head.
    pub(crate) async fn send(
        self: &Arc<Self>,
        mut req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, SendError> {
        let origin = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(origin);
        req.headers_mut()
            .entry(header::HOST)
            .or_insert_with(|| self.host.clone());
        // Connecting is boxed: rare once warm, and its state would size
        // every call's future.
        let (mut sender, reused) = match self.ready_idle().await {
            Some(sender) => (sender, true),
            None => (Box::pin(self.connect()).await?, false),
        };
        let response = match sender.try_send_request(req).await {
            Ok(response) => response,
            Err(mut failed) => match failed.take_message() {
                // Never written: the idle connection was closed under us.
                Some(req) if reused => {
                    sender = Box::pin(self.connect()).await?;
                    sender
                        .send_request(req)
                        .await
                        .map_err(|e| SendError::Exchange(e.into()))?
                }
                _ => return Err(SendError::Exchange(failed.into_error().into())),
            },
        };
        let (parts, body) = response.into_parts();
        let back = Some(HandBack {
            sender,
            connections: self.clone(),
        });
        Ok(Response::from_parts(parts, UpstreamBody { body, back }))
    }

    /// The most recently used idle connection that is still open, once it
    /// is ready for a request. Its last response was read to the end, so
    /// that is at most the moment its driver task takes to notice.
    async fn ready_idle(&self) -> Option<Sender> {
        while let Some(mut sender) = self.take_idle() {
            if sender.is_ready() {
                return Some(sender);
            }
            if let Ok(Ok(())) = tokio::time::timeout(READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
        None
    }

    fn take_idle(&self) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(Idle { sender, since }) = idle.pop_back() {
            if since.elapsed() < IDLE_TIMEOUT && !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    /// Keeps a connection whose response was read to its end.
    fn hand_back(&self, sender: Sender) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        while idle
            .front()
            .is_some_and(|i| idle_too_long(i) || i.sender.is_closed())
            || idle.len() >= MAX_IDLE
        {
            idle.pop_front();
        }
        idle.push_back(Idle {
            sender,
            since: Instant::now(),
        });
    }

    /// A new connection, its driver running as its own task.
    async fn connect(&self) -> Result<Sender, SendError> {
        let address = self.authority.as_str();
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(address))
            .await
            .map_err(|_| SendError::Connect(Cause::ConnectTimeout(self.connect_timeout)))?
            .map_err(|e| SendError::Connect(e.into()))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, connection) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "upstream connection ended");
            }
        });
        sender
            .ready()
            .await
            .map_err(|e| SendError::Connect(e.into()))?;
        Ok(sender)
    }
}

fn idle_too_long(i: &Idle) -> bool {
    i.since.elapsed() >= IDLE_TIMEOUT
}

/// Gives a connection back to its [`Connections`].
struct HandBack {
    sender: Sender,
    connections: Arc<Connections>,
}

/// An upstream response body. When it has been read to its end its
/// connection goes back to be reused; dropped earlier, the connection closes.
pub(crate) struct UpstreamBody {
    body: Incoming,
    back: Option<HandBack>,
}

impl UpstreamBody {
    /// A body from a connection this module does not manage.
    pub(crate) fn unmanaged(body: Incoming) -> Self {
        UpstreamBody { body, back: None }
    }

    fn finished(&mut self) {
        if let Some(HandBack {
            sender,
            connections,
        }) = self.back.take()
        {
            connections.hand_back(sender);
        }
    }
}

impl std::fmt::Debug for UpstreamBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamBody")
            .field("body", &self.body)
            .field("reusable", &self.back.is_some())
            .finish()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        // Read to the end but never polled past it (an empty body, or a
        // reader that trusted `is_end_stream`): still reusable.
        if self.body.is_end_stream() {
            self.finished();
        }
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.body).poll_frame(cx);
        match &polled {
            Poll::Ready(None) => this.finished(),
            // A reader may stop at the last frame, asking `is_end_stream`
            // instead of polling for the end.
            Poll::Ready(Some(Ok(_))) if this.body.is_end_stream() => this.finished(),
            Poll::Ready(Some(Err(_))) => this.back = None,
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use http_body_util::BodyExt;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A raw HTTP/1.1 server on 127.0.0.1 that counts connections and
    /// answers the n-th request of a connection, the i-th of all, with
    /// `answer(n, i)` (both from 0); the connection closes when `answer`
    /// gives `None`. Stops with the test.
    async fn server(
        answer: impl Fn(usize, usize) -> Option<&'static [u8]> + Send + Sync + Copy + 'static,
    ) -> (Authority, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let requests = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let requests = requests.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    for n in 0.. {
                        // Each test request is one small read: a head and a short body.
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(_) => {}
                        }
                        match answer(n, requests.fetch_add(1, Ordering::SeqCst)) {
                            Some(bytes) => {
                                if socket.write_all(bytes).await.is_err() {
                                    return;
                                }
                            }
                            None => return,
                        }
                    }
                });
            }
        });
        (address.to_string().parse().unwrap(), accepted)
    }

    const OK: &[u8] = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
    /// A stream that never ends.
    const STREAM: &[u8] = b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n6\r\nevent1\r\n";

    fn post() -> Request<Full<Bytes>> {
        Request::post("http://upstream/mcp")
            .body(Full::new(Bytes::from_static(b"{\"jsonrpc\":\"2.0\"}")))
            .unwrap()
    }

    #[tokio::test]
    async fn responses_read_to_the_end_reuse_one_connection() {
        let (address, accepted) = server(|_, _| Some(OK)).await;
        let connections = Connections::new(address, Duration::from_secs(1));
        for _ in 0..5 {
            let resp = connections.send(post()).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"{}");
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_response_dropped_half_read_is_not_reused() {
        let (address, accepted) = server(|_, i| Some(if i == 0 { STREAM } else { OK })).await;
        let connections = Connections::new(address, Duration::from_secs(1));
        let mut stream = connections.send(post()).await.unwrap().into_body();
        let first = stream.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "event1");
        drop(stream);
        // The stream's connection is still busy: a new one answers.
        let resp = connections.send(post()).await.unwrap();
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"{}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn an_idle_connection_the_upstream_closed_is_replaced() {
        // One answer per connection, then the server hangs up while the
        // connection is idle (as servers with a keep-alive timeout do).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (closed_tx, mut closed) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 4096];
                if socket.read(&mut buf).await.unwrap_or(0) > 0 {
                    let _ = socket.write_all(OK).await;
                }
                drop(socket);
                let _ = closed_tx.send(());
            }
        });
        let connections =
            Connections::new(address.to_string().parse().unwrap(), Duration::from_secs(1));
        for _ in 0..3 {
            let resp = connections.send(post()).await.unwrap();
            let body = resp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(&body[..], b"{}");
            closed.recv().await.unwrap();
        }
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap().to_string();
        drop(listener);
        let connections = Connections::new(address.parse().unwrap(), Duration::from_secs(1));
        let err = connections.send(post()).await.unwrap_err();
        assert!(matches!(err, SendError::Connect(_)), "{err:?}");
    }

    #[tokio::test]
    async fn the_request_line_is_origin_form_with_the_upstreams_host() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let seen = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let n = socket.read(&mut buf).await.unwrap();
            socket.write_all(OK).await.unwrap();
            String::from_utf8_lossy(&buf[..n]).into_owned()
        });
        let connections =
            Connections::new(address.to_string().parse().unwrap(), Duration::from_secs(1));
        let req = Request::post("http://ignored:1/mcp?x=1")
            .body(Full::new(Bytes::from_static(b"{}")))
            .unwrap();
        let resp = connections.send(req).await.unwrap();
        resp.into_body().collect().await.unwrap();
        let head = seen.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("post /mcp?x=1 http/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("host: {address}\r\n")), "{head}");
        assert!(head.contains("content-length: 2\r\n"), "{head}");
    }
}
