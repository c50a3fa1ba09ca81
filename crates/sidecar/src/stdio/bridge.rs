//! Streamable HTTP in front of stdio servers: what `tollgate proxy
//! --upstream-command` puts behind the proxy instead of an `http://` URL.
//!
//! The session model: a stdio server serves one client, so every MCP
//! session gets a server process of its own. An `initialize` without a
//! session starts one and the response names its `Mcp-Session-Id`; the
//! session's messages go to that process's stdin, and its stdout comes
//! back as the POST's event stream (a request's response ends its stream)
//! or, for what the server says unprompted, on the session's GET stream.
//! `DELETE` ends the process. At most `max_sessions` run at once (one more
//! `initialize` is refused with 503 and `Retry-After`), and a session with
//! no request for `idle_timeout` is ended, its process stopped.
//!
//! The proxy reaches the bridge over in-process socket pairs
//! ([`Connector`]): there is no port another process could use to go
//! around the gate. The bridge knows nothing of policy: it sits behind
//! [`crate::transport`], which decides every message first.

use std::collections::HashMap;
use std::convert::Infallible;
use std::ffi::OsString;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::stream;
use http::{HeaderValue, Method, Request, Response, StatusCode, Uri, header};
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::UnixStream;
use tokio::sync::{mpsc, watch};

use tollgate_mcp::http as mcp_http;
use tollgate_mcp::jsonrpc::{self, INVALID_REQUEST, PARSE_ERROR, UPSTREAM_UNAVAILABLE};
use tollgate_mcp::sse;
use tollgate_runtime::body::{self, Body, BoxError};

use crate::metrics::{Metrics, UpstreamFailure};
use crate::stdio::child::{self, Child, FromChild};
use crate::stdio::pending::Pending;
use crate::stdio::{request_id, unavailable};

/// How the stdio servers behind the proxy are run.
#[derive(Clone, Debug)]
pub struct StdioUpstream {
    /// The server: program and arguments.
    pub command: Vec<OsString>,
    /// The most server processes (MCP sessions) at once.
    pub max_sessions: usize,
    /// A session without a request for this long is ended.
    pub idle_timeout: Duration,
    /// The longest line read from a server, and the largest message body
    /// taken from the proxy.
    pub max_line_bytes: usize,
    /// How long a server may take to answer a request.
    pub response_timeout: Duration,
    /// How long a server gets to exit after its input closes, and again
    /// after SIGTERM.
    pub stop_grace: Duration,
}

impl StdioUpstream {
    /// Defaults for `command`.
    pub fn new(command: Vec<OsString>) -> Self {
        StdioUpstream {
            command,
            max_sessions: 16,
            idle_timeout: Duration::from_secs(600),
            max_line_bytes: 32 << 20,
            response_timeout: Duration::from_secs(300),
            stop_grace: Duration::from_secs(5),
        }
    }
}

/// The servers behind one proxy, by session.
pub(crate) struct Bridge {
    config: StdioUpstream,
    sessions: Mutex<HashMap<String, Arc<Session>>>,
    metrics: Metrics,
}

/// One MCP session: one server process.
struct Session {
    id: String,
    child: Child,
    /// Requests waiting for their response, each with its POST's stream.
    routes: Mutex<Pending<mpsc::Sender<Value>>>,
    /// The session's GET stream, if one is open.
    stream: Mutex<Option<mpsc::Sender<Value>>>,
    /// The latest POST stream, for what the server says unprompted while
    /// no GET stream is open.
    latest: Mutex<Option<mpsc::Sender<Value>>>,
    last_used: Mutex<Instant>,
}

impl Bridge {
    /// A bridge with no sessions.
    pub(crate) fn new(config: StdioUpstream, metrics: Metrics) -> Arc<Self> {
        metrics.register_stdio();
        Arc::new(Bridge {
            config,
            sessions: Mutex::new(HashMap::new()),
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Session>>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Answers one request from the proxy.
    async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
        let session_id = req
            .headers()
            .get(mcp_http::SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let session = match &session_id {
            Some(id) => match self.lock().get(id) {
                Some(s) => Some(s.clone()),
                None => {
                    return Ok(error(
                        StatusCode::NOT_FOUND,
                        INVALID_REQUEST,
                        "this MCP session has ended (its server process is gone); initialize a new one",
                    ));
                }
            },
            None => None,
        };
        if let Some(s) = &session {
            *s.last_used.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now();
        }
        Ok(match *req.method() {
            Method::POST => self.post(session, req).await,
            Method::GET => match session {
                Some(s) => s.open_stream(),
                None => body::status(StatusCode::METHOD_NOT_ALLOWED),
            },
            Method::DELETE => match session {
                Some(s) => {
                    self.end(&s.id);
                    body::status(StatusCode::OK)
                }
                None => error(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "DELETE needs an Mcp-Session-Id",
                ),
            },
            _ => body::status(StatusCode::METHOD_NOT_ALLOWED),
        })
    }

    async fn post(
        self: &Arc<Self>,
        session: Option<Arc<Session>>,
        req: Request<Incoming>,
    ) -> Response<Body> {
        let bytes = match body::read(
            req.into_body(),
            self.config.max_line_bytes,
            self.config.response_timeout,
        )
        .await
        {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, PARSE_ERROR, &e.to_string()),
        };
        let Ok(message) = serde_json::from_slice::<Value>(&bytes) else {
            return error(StatusCode::BAD_REQUEST, PARSE_ERROR, "the body is not JSON");
        };
        let initialize = message.get("method").and_then(Value::as_str) == Some("initialize");
        let (session, new) = match session {
            Some(s) => (s, false),
            None if initialize => match self.start() {
                Ok(s) => (s, true),
                Err(response) => return *response,
            },
            None => {
                return error(
                    StatusCode::BAD_REQUEST,
                    INVALID_REQUEST,
                    "no Mcp-Session-Id: start a session with initialize",
                );
            }
        };
        let ids: Vec<Value> = match &message {
            Value::Array(items) => items.iter().filter_map(request_id).collect(),
            single => request_id(single).into_iter().collect(),
        };
        if ids.is_empty() {
            let sent = session.child.send(&message).await;
            return match sent {
                Ok(()) => body::status(StatusCode::ACCEPTED),
                Err(e) => error(
                    StatusCode::BAD_GATEWAY,
                    UPSTREAM_UNAVAILABLE,
                    &e.to_string(),
                ),
            };
        }
        let (tx, rx) = mpsc::channel(64);
        {
            let deadline = Instant::now() + self.config.response_timeout;
            let mut routes = session.lock_routes();
            for id in &ids {
                routes.insert(id, deadline, tx.clone());
            }
        }
        *session.latest.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        if let Err(e) = session.child.send(&message).await {
            session.fail_all(&e.to_string(), &self.metrics);
        }
        // A new session's id reaches only the client of this response: if
        // that client is gone before its answer (a discovery that timed
        // out), the session ends with the stream rather than when idle.
        let unclaimed = new.then(|| Unclaimed {
            bridge: self.clone(),
            id: session.id.clone(),
            claimed: false,
        });
        let mut resp = Response::new(event_stream(rx, Some(ids.len()), unclaimed));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        if new && let Ok(v) = HeaderValue::from_str(&session.id) {
            resp.headers_mut().insert(mcp_http::SESSION_ID, v);
        }
        resp
    }

    /// Starts a server for a new session, unless as many run as allowed.
    fn start(self: &Arc<Self>) -> Result<Arc<Session>, Box<Response<Body>>> {
        if self.lock().len() >= self.config.max_sessions {
            tracing::warn!(
                max = self.config.max_sessions,
                "refusing a new MCP session: as many stdio servers run as --max-stdio-sessions allows"
            );
            let mut resp = error(
                StatusCode::SERVICE_UNAVAILABLE,
                UPSTREAM_UNAVAILABLE,
                &format!(
                    "tollgate already runs {} MCP server processes (one per session, --max-stdio-sessions); end a session or retry later",
                    self.config.max_sessions
                ),
            );
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            return Err(Box::new(resp));
        }
        let (child, from_child) = child::spawn(&child::Command {
            argv: self.config.command.clone(),
            max_line_bytes: self.config.max_line_bytes,
        })
        .map_err(|e| {
            tracing::error!(error = %e, "cannot start the MCP server");
            error(
                StatusCode::BAD_GATEWAY,
                UPSTREAM_UNAVAILABLE,
                &e.to_string(),
            )
        })?;
        let session = Arc::new(Session {
            id: session_id(),
            child,
            routes: Mutex::new(Pending::default()),
            stream: Mutex::new(None),
            latest: Mutex::new(None),
            last_used: Mutex::new(Instant::now()),
        });
        let count = {
            let mut sessions = self.lock();
            sessions.insert(session.id.clone(), session.clone());
            sessions.len()
        };
        self.metrics.stdio_servers(count);
        tracing::info!(
            sessions = count,
            "started an MCP server process for a new session"
        );
        tokio::spawn(self.clone().read_server(session.clone(), from_child));
        Ok(session)
    }

    /// Routes what one session's server writes, until its stdout ends;
    /// then the session is over.
    async fn read_server(
        self: Arc<Self>,
        session: Arc<Session>,
        mut from_child: mpsc::Receiver<FromChild>,
    ) {
        while let Some(m) = from_child.recv().await {
            match m {
                FromChild::Message(v) => session.route(v).await,
                FromChild::Unreadable(detail) => {
                    self.metrics.upstream_failed(UpstreamFailure::Unreadable);
                    tracing::warn!(
                        detail,
                        "the MCP server wrote a line that is not JSON-RPC; not passed on"
                    );
                }
                FromChild::TooLong(bytes) => {
                    self.metrics.upstream_failed(UpstreamFailure::Unreadable);
                    session.fail_all(
                        &format!("the MCP server wrote a message of more than {bytes} bytes, over the limit; its answer is lost"),
                        &self.metrics,
                    );
                }
                FromChild::Closed => break,
            }
        }
        let exit = tokio::time::timeout(self.config.stop_grace, session.child.wait()).await;
        let why = match exit {
            Ok(e) => format!("the MCP server {e} before answering"),
            Err(_) => "the MCP server closed its output before answering".to_owned(),
        };
        session.fail_all(&why, &self.metrics);
        self.end(&session.id);
    }

    /// Ends a session: forgets it and stops its server.
    fn end(self: &Arc<Self>, id: &str) {
        let (session, count) = {
            let mut sessions = self.lock();
            let s = sessions.remove(id);
            (s, sessions.len())
        };
        self.metrics.stdio_servers(count);
        if let Some(s) = session {
            let grace = self.config.stop_grace;
            tokio::spawn(async move {
                let exit = s.child.stop(grace).await;
                tracing::info!(%exit, "an MCP session ended; its server process stopped");
            });
        }
    }

    /// Fails late requests and ends idle sessions every second; on
    /// shutdown, stops every server.
    pub(crate) async fn reap(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {}
            }
            let now = Instant::now();
            let sessions: Vec<Arc<Session>> = self.lock().values().cloned().collect();
            for s in sessions {
                let late = s.lock_routes().expired(now);
                for (id, tx) in late {
                    self.metrics.upstream_failed(UpstreamFailure::Timeout);
                    let why = format!(
                        "the MCP server did not answer within {:?}",
                        self.config.response_timeout
                    );
                    let _ = tx.try_send(unavailable(&id, &why));
                }
                let idle = now.saturating_duration_since(
                    *s.last_used.lock().unwrap_or_else(|e| e.into_inner()),
                );
                if idle >= self.config.idle_timeout && s.lock_routes().len() == 0 {
                    tracing::info!(?idle, "ending an idle MCP session");
                    self.end(&s.id);
                }
            }
        }
        let sessions: Vec<Arc<Session>> = self.lock().drain().map(|(_, s)| s).collect();
        self.metrics.stdio_servers(0);
        let grace = self.config.stop_grace;
        futures_util::future::join_all(sessions.iter().map(|s| s.child.stop(grace))).await;
    }
}

impl Session {
    fn lock_routes(&self) -> std::sync::MutexGuard<'_, Pending<mpsc::Sender<Value>>> {
        self.routes.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends a message from the server where it belongs.
    async fn route(&self, value: Value) {
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        for item in items {
            let response = item.get("method").is_none();
            if response && let Some(id) = item.get("id").filter(|i| !i.is_null()) {
                let route = self.lock_routes().take(id);
                match route {
                    Some(tx) => {
                        let _ = tx.send(item).await;
                    }
                    None => tracing::debug!(%id, "dropped a response no request waits for"),
                }
                continue;
            }
            // Unprompted: the GET stream, else the latest POST stream.
            let target = {
                let get = self.stream.lock().unwrap_or_else(|e| e.into_inner());
                get.clone().filter(|t| !t.is_closed())
            }
            .or_else(|| {
                self.latest
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
                    .filter(|t| !t.is_closed())
            });
            match target {
                Some(tx) => {
                    let _ = tx.send(item).await;
                }
                None => tracing::debug!("dropped a server message: no stream is open"),
            }
        }
    }

    /// Answers every waiting request with an error.
    fn fail_all(&self, why: &str, metrics: &Metrics) {
        let waiting = self.lock_routes().drain();
        for (id, tx) in waiting {
            metrics.upstream_failed(UpstreamFailure::Exited);
            let _ = tx.try_send(unavailable(&id, why));
        }
    }

    /// A GET: the stream of what the server says unprompted.
    fn open_stream(&self) -> Response<Body> {
        let (tx, rx) = mpsc::channel(64);
        *self.stream.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        let mut resp = Response::new(event_stream(rx, None, None));
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        resp
    }
}

/// A new session until its client has had the answer to its `initialize`;
/// dropped before that, it ends the session.
struct Unclaimed {
    bridge: Arc<Bridge>,
    id: String,
    claimed: bool,
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        // `end` spawns the server's stop: only where a runtime runs (not
        // while the process is shutting down, which stops every server).
        if !self.claimed && tokio::runtime::Handle::try_current().is_ok() {
            tracing::info!("a new MCP session's client left before its answer; ending it");
            self.bridge.end(&self.id);
        }
    }
}

/// An SSE body of the messages on `rx`; with `responses`, it ends once
/// that many responses have passed, which claims `unclaimed`.
fn event_stream(
    rx: mpsc::Receiver<Value>,
    responses: Option<usize>,
    unclaimed: Option<Unclaimed>,
) -> Body {
    let events = stream::unfold(
        (rx, responses, unclaimed),
        |(mut rx, left, mut unclaimed)| async move {
            if left == Some(0) {
                return None;
            }
            let message = rx.recv().await?;
            let is_response = message.get("method").is_none();
            let left = left.map(|n| if is_response { n - 1 } else { n });
            if left == Some(0)
                && let Some(u) = &mut unclaimed
            {
                u.claimed = true;
            }
            let frame = Frame::data(sse::encode(Some("message"), None, &message.to_string()));
            Some((Ok::<_, BoxError>(frame), (rx, left, unclaimed)))
        },
    );
    StreamBody::new(events).boxed_unsync()
}

fn error(status: StatusCode, code: i64, message: &str) -> Response<Body> {
    body::json(
        status,
        &jsonrpc::error_response(&Value::Null, code, message, None),
    )
}

/// A session id nobody can guess: 128 random bits, hex.
fn session_id() -> String {
    let mut raw = [0u8; 16];
    if getrandom::fill(&mut raw).is_err() {
        // No randomness from the OS: fall back to the clock and a hash
        // seeded by the standard library's per-process random keys.
        use std::hash::{BuildHasher, Hasher};
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default(),
        );
        raw[..8].copy_from_slice(&h.finish().to_le_bytes());
    }
    raw.iter().map(|b| format!("{b:02x}")).collect()
}

/// Connects the proxy's HTTP client to the bridge: each connection is a
/// socket pair inside this process, its far end served by the bridge.
#[derive(Clone)]
pub(crate) struct Connector {
    bridge: Arc<Bridge>,
}

impl Connector {
    pub(crate) fn new(bridge: Arc<Bridge>) -> Self {
        Connector { bridge }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Uri) -> Self::Future {
        let (near, far) = match UnixStream::pair() {
            Ok(p) => p,
            Err(e) => return std::future::ready(Err(e)),
        };
        let bridge = self.bridge.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| bridge.clone().handle(req));
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(far), service)
                .await
            {
                tracing::debug!(error = %e, "a connection to the stdio bridge ended with an error");
            }
        });
        std::future::ready(Ok(TokioIo::new(near)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_long_and_distinct() {
        let (a, b) = (session_id(), session_id());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
