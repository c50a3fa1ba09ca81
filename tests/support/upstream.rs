//! A small MCP server for protocol tests: it answers like a Streamable HTTP
//! server (JSON or SSE framing) and records every request that reaches it,
//! so a test can prove what the proxy forwarded — and what it did not.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::net::TcpListener;

/// How responses are framed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// `application/json`.
    Json,
    /// `text/event-stream`, one event per response.
    Sse,
}

/// One request as the upstream received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Seen {
    /// The body as JSON (panics with the body if it is not: a proxy that
    /// forwarded something else must not look like one that sent `null`).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "the upstream received a {} body that is not JSON ({e}): {:?}",
                self.method,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// Whether this is the sidecar's own discovery session: its User-Agent
    /// *and* one of the messages discovery sends (initialize as client
    /// "tollgate", notifications/initialized, tools/list, its DELETE). A
    /// client can send that User-Agent too, so the header alone would let a
    /// forwarded `tools/call` (or a batch) vanish from [`Upstream::seen`].
    fn is_discovery(&self) -> bool {
        let agent = self
            .headers
            .get("user-agent")
            .is_some_and(|ua| ua.as_bytes().starts_with(b"tollgate-discovery/"));
        if !agent {
            return false;
        }
        match self.method.as_str() {
            "DELETE" => self.body.is_empty(),
            "POST" => {
                let Ok(m) = serde_json::from_slice::<Value>(&self.body) else {
                    return false;
                };
                match m["method"].as_str() {
                    Some("initialize") => m["params"]["clientInfo"]["name"] == "tollgate",
                    Some("notifications/initialized" | "tools/list") => true,
                    _ => false,
                }
            }
            _ => false,
        }
    }
}

/// A server-to-client stream a client holds open.
type Stream = tokio::sync::mpsc::Sender<Result<Frame<Bytes>, Infallible>>;

/// A running test upstream.
#[derive(Clone)]
pub struct Upstream {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    framing: Arc<Mutex<Framing>>,
    /// What `tools/list` answers ([`tools`] until a test changes it).
    listed: Arc<Mutex<Value>>,
    /// The GET streams clients hold open.
    streams: Arc<Mutex<Vec<Stream>>>,
}

/// The tools the test upstream lists, with fields a proxy must not touch.
pub fn tools() -> Value {
    json!({
        "tools": [
            {"name": "vm_clone", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": false}, "_meta": {"x": 1}},
            {"name": "pods_list", "inputSchema": {"type": "object"}, "annotations": {"readOnlyHint": true}},
            {"name": "pods_delete", "inputSchema": {"type": "object"}},
            {"name": "secret_tool", "inputSchema": {"type": "object"}, "title": "Secret"}
        ],
        "ttlMs": 5000,
        "cacheScope": "public",
        "_meta": {"vendor": "test"}
    })
}

impl Upstream {
    /// Starts on a free loopback port.
    pub async fn start(framing: Framing) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let up = Upstream {
            addr: listener.local_addr().unwrap(),
            seen: Arc::default(),
            framing: Arc::new(Mutex::new(framing)),
            listed: Arc::new(Mutex::new(tools())),
            streams: Arc::default(),
        };
        let server = up.clone();
        tokio::spawn(async move {
            loop {
                let Ok((socket, _)) = listener.accept().await else {
                    return;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.handle(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(socket), svc)
                        .await;
                });
            }
        });
        up
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request from clients so far (not the sidecar's own discovery).
    pub fn seen(&self) -> Vec<Seen> {
        let all = self.seen.lock().unwrap().clone();
        all.into_iter().filter(|s| !s.is_discovery()).collect()
    }

    /// The sidecar's own discovery requests so far.
    pub fn discovery(&self) -> Vec<Seen> {
        let all = self.seen.lock().unwrap().clone();
        all.into_iter().filter(Seen::is_discovery).collect()
    }

    /// The POSTed messages so far, flattened out of batches.
    pub fn messages(&self) -> Vec<Value> {
        self.seen()
            .iter()
            .filter(|s| s.method == "POST")
            .flat_map(|s| match s.json() {
                Value::Array(items) => items,
                other => vec![other],
            })
            .collect()
    }

    /// Names of the tools called so far.
    pub fn calls(&self) -> Vec<String> {
        self.messages()
            .iter()
            .filter(|m| m["method"] == "tools/call")
            .map(|m| m["params"]["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    }

    /// The name of the tool in the `tools/call` with `id` this upstream
    /// received, if it received one.
    pub fn received(&self, id: u64) -> Option<String> {
        self.messages()
            .iter()
            .find(|m| m["method"] == "tools/call" && m["id"] == id)
            .map(|m| m["params"]["name"].as_str().unwrap_or("?").to_owned())
    }

    /// Calls `tool` through the proxy at `proxy` and judges both ends:
    /// `Allowed` only if this upstream received that very call, `Denied`
    /// only if it did not. A disagreement between the client's answer and
    /// what reached the server is a bug wherever it shows, so it panics.
    pub async fn through(
        &self,
        proxy: SocketAddr,
        headers: &[(&str, &str)],
        tool: &str,
        arguments: Value,
    ) -> super::Answer {
        let id = super::fresh_id();
        let answer = super::ask(proxy, headers, id, tool, arguments).await;
        let received = self.received(id);
        match &answer {
            super::Answer::Allowed(_) => assert_eq!(
                received.as_deref(),
                Some(tool),
                "{tool} was answered as allowed, but the MCP server did not get call {id}: {answer:?}"
            ),
            super::Answer::Denied(_) => assert_eq!(
                received, None,
                "{tool} was answered as denied, but the MCP server got call {id}: {answer:?}"
            ),
            super::Answer::Other(_) => {}
        }
        answer
    }

    /// Whether the proxy let a call of `tool` (no arguments) through to this upstream.
    pub async fn allows(&self, proxy: SocketAddr, tool: &str) -> bool {
        self.through(proxy, &[], tool, json!({})).await.is_allowed()
    }

    /// Whether the proxy refused a call of `tool` itself, before this upstream.
    pub async fn denies(&self, proxy: SocketAddr, tool: &str) -> bool {
        self.through(proxy, &[], tool, json!({})).await.is_denied()
    }

    /// Switches the response framing.
    pub fn set_framing(&self, f: Framing) {
        *self.framing.lock().unwrap() = f;
    }

    /// Changes what `tools/list` answers from now on (a `tools/list`
    /// result), without telling anyone.
    pub fn set_tools(&self, result: Value) {
        *self.listed.lock().unwrap() = result;
    }

    /// How many GET streams are open.
    pub fn open_streams(&self) -> usize {
        let mut streams = self.streams.lock().unwrap();
        streams.retain(|s| !s.is_closed());
        streams.len()
    }

    /// Sends `notifications/tools/list_changed` on every open GET stream.
    pub async fn announce_list_changed(&self) {
        let streams: Vec<Stream> = self.streams.lock().unwrap().clone();
        let event = format!(
            "event: message\ndata: {}\n\n",
            json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"})
        );
        for s in streams {
            let _ = s.send(Ok(Frame::data(Bytes::from(event.clone())))).await;
        }
    }

    async fn handle(
        &self,
        req: Request<Incoming>,
    ) -> Response<http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>> {
        let (parts, body) = req.into_parts();
        let body = body
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        self.seen.lock().unwrap().push(Seen {
            method: parts.method.to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            headers: parts.headers.clone(),
            body: body.clone(),
        });
        let framing = *self.framing.lock().unwrap();
        match parts.method.as_str() {
            "GET" => {
                // A server-to-client stream that stays open until the client goes.
                let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
                self.streams.lock().unwrap().push(tx.clone());
                tokio::spawn(async move {
                    let _ = tx
                        .send(Ok(Frame::data(Bytes::from_static(b": open\n\n"))))
                        .await;
                    tx.closed().await;
                });
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|f| (f, rx))
                });
                Response::builder()
                    .header("content-type", "text/event-stream")
                    .body(StreamBody::new(stream).boxed_unsync())
                    .unwrap()
            }
            "DELETE" => Response::builder()
                .status(StatusCode::NO_CONTENT)
                .body(empty())
                .unwrap(),
            _ => {
                let Ok(value) = serde_json::from_slice::<Value>(&body) else {
                    return Response::builder()
                        .status(400)
                        .body(full(b"bad json".to_vec()))
                        .unwrap();
                };
                let (batch, items) = match value {
                    Value::Array(items) => (true, items),
                    v => (false, vec![v]),
                };
                let mut session = None;
                let responses: Vec<Value> = items
                    .iter()
                    .filter_map(|m| {
                        let id = m.get("id")?.clone();
                        let method = m.get("method")?.as_str()?;
                        let result = match method {
                            "initialize" => {
                                session = Some("session-from-upstream");
                                json!({"protocolVersion": "2025-11-25", "capabilities": {"tools": {"listChanged": true}}, "serverInfo": {"name": "test-upstream", "version": "1"}})
                            }
                            "tools/list" => self.listed.lock().unwrap().clone(),
                            "tools/call" => json!({"content": [{"type": "text", "text": format!("called {}", m["params"]["name"])}]}),
                            _ => json!({}),
                        };
                        Some(json!({"jsonrpc": "2.0", "id": id, "result": result}))
                    })
                    .collect();
                if responses.is_empty() {
                    return Response::builder()
                        .status(StatusCode::ACCEPTED)
                        .body(empty())
                        .unwrap();
                }
                let mut builder = Response::builder();
                if let Some(s) = session {
                    builder = builder.header("mcp-session-id", s);
                }
                match framing {
                    Framing::Json => {
                        let v = if batch {
                            Value::Array(responses)
                        } else {
                            responses.into_iter().next().unwrap()
                        };
                        builder
                            .header("content-type", "application/json")
                            .body(full(serde_json::to_vec(&v).unwrap()))
                            .unwrap()
                    }
                    Framing::Sse => {
                        let mut out = String::from(": stream start\n\n");
                        for r in responses {
                            out.push_str(&format!("event: message\ndata: {r}\n\n"));
                        }
                        builder
                            .header("content-type", "text/event-stream")
                            .body(full(out.into_bytes()))
                            .unwrap()
                    }
                }
            }
        }
    }
}

fn full(b: Vec<u8>) -> http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible> {
    Full::new(Bytes::from(b)).boxed_unsync()
}

fn empty() -> http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible> {
    full(Vec::new())
}
