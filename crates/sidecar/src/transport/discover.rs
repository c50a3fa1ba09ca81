//! Learning the upstream's tools first-hand.
//!
//! Resource rules need to know what each tool creates, and that knowledge
//! may only come from the upstream itself, never from a client. Waiting for
//! a client's `tools/list` is not enough — an agent may call tools without
//! listing them — so the sidecar opens its own MCP session with the upstream
//! (initialize, `tools/list` with every page, then DELETE) at startup, and
//! again before judging a call if it still knows nothing.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, header};
use http_body_util::BodyExt;
use serde_json::{Value, json};

use tollgate_mcp::{http as mcp_http, sse};

use crate::transport::upstream::Upstream;

/// The protocol version the sidecar speaks when it asks for itself.
pub(crate) const PROTOCOL_VERSION: &str = "2025-06-18";
/// The most `tools/list` pages read.
const MAX_PAGES: usize = 50;

/// Reading every page of a server's `tools/list`, whatever carries the
/// requests: ask with [`ToolPages::next`]'s params until it says stop,
/// handing each result to [`ToolPages::take`]. At most [`MAX_PAGES`] pages.
#[derive(Default)]
pub(crate) struct ToolPages {
    tools: Vec<Value>,
    cursor: Option<String>,
    asked: usize,
    done: bool,
}

impl ToolPages {
    /// The number and params of the next page's request, or `None` when
    /// every page is read.
    pub(crate) fn next(&mut self) -> Option<(usize, Option<Value>)> {
        if self.done || self.asked == MAX_PAGES {
            return None;
        }
        self.asked += 1;
        let params = self.cursor.as_ref().map(|c| json!({ "cursor": c }));
        Some((self.asked, params))
    }

    /// Takes one page's result.
    pub(crate) fn take(&mut self, result: &Value) {
        self.tools.extend(
            tollgate_mcp::tools::listed(result)
                .cloned()
                .unwrap_or_default(),
        );
        self.cursor = result
            .get("nextCursor")
            .and_then(Value::as_str)
            .map(str::to_owned);
        self.done = self.cursor.is_none();
    }

    /// The tools of every page read.
    pub(crate) fn tools(self) -> Vec<Value> {
        self.tools
    }
}
/// How the sidecar's own requests introduce themselves.
pub(crate) const USER_AGENT: &str = concat!("tollgate-discovery/", env!("CARGO_PKG_VERSION"));

/// Why a server's tools could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListToolsError {
    /// The URL is unusable.
    #[error(transparent)]
    Url(#[from] crate::transport::upstream::UpstreamUrlError),
    /// The HTTP server did not answer as an MCP server.
    #[error(transparent)]
    Http(#[from] HttpDiscoveryError),
    /// The stdio server did not answer as an MCP server.
    #[error(transparent)]
    Stdio(#[from] crate::stdio::discover_error::StdioDiscoveryError),
    /// The stdio server could not be started.
    #[error(transparent)]
    Spawn(#[from] crate::stdio::child::SpawnError),
}

/// Why an HTTP upstream did not list its tools.
#[derive(Debug, thiserror::Error)]
pub enum HttpDiscoveryError {
    /// No answer in time.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The request did not get through.
    #[error(transparent)]
    Send(#[from] crate::transport::upstream::UpstreamError),
    /// A status other than success; a 404 most likely means a wrong path.
    #[error(
        "the upstream answered {status} to {method} at {uri}{}",
        if *.status == http::StatusCode::NOT_FOUND {
            "; nothing answers MCP at that path: give --upstream the MCP server's URL as MCP clients write it, e.g. http://127.0.0.1:8081/mcp"
        } else {
            ""
        }
    )]
    Status {
        status: http::StatusCode,
        method: Value,
        uri: http::Uri,
    },
    /// The response body broke off.
    #[error("{0}")]
    Body(hyper::Error),
    /// The event stream is not SSE.
    #[error(transparent)]
    Sse(#[from] sse::SseError),
    /// The event stream closed before the response came.
    #[error("the upstream's event stream ended without a response")]
    StreamEnded,
    /// The response is not JSON.
    #[error("the upstream's response is not JSON: {0}")]
    NotJson(serde_json::Error),
    /// A `tools/list` response without a `result`.
    #[error("the upstream's tools/list had no result")]
    NoResult,
}

/// The tools of the MCP server at `url` (written as an MCP client writes
/// it, e.g. `http://127.0.0.1:8081/mcp`), every page: what `tollgate scan`
/// and `tollgate check --upstream` read, the way the sidecar does.
pub async fn list_tools_at(
    url: http::Uri,
    timeout: Duration,
) -> Result<Vec<Value>, ListToolsError> {
    let upstream = Upstream::new(url, timeout, timeout)?;
    Ok(list_tools(&upstream, "/mcp", timeout).await?)
}

/// The upstream's tools, asked over a session of the sidecar's own.
pub(crate) async fn list_tools(
    upstream: &Upstream,
    path: &str,
    timeout: Duration,
) -> Result<Vec<Value>, HttpDiscoveryError> {
    tokio::time::timeout(timeout, session(upstream, path))
        .await
        .map_err(|_| HttpDiscoveryError::Timeout(timeout))?
}

async fn session(upstream: &Upstream, path: &str) -> Result<Vec<Value>, HttpDiscoveryError> {
    let init = json!({
        "jsonrpc": "2.0", "id": 0, "method": "initialize",
        "params": {"protocolVersion": PROTOCOL_VERSION, "capabilities": {}, "clientInfo": {"name": "tollgate", "version": env!("CARGO_PKG_VERSION")}}
    });
    let (headers, _) = exchange(upstream, path, None, &init).await?;
    let session = headers.get(mcp_http::SESSION_ID).cloned();
    let initialized = json!({"jsonrpc": "2.0", "method": "notifications/initialized"});
    exchange(upstream, path, session.as_ref(), &initialized).await?;
    let mut pages = ToolPages::default();
    while let Some((page, params)) = pages.next() {
        let mut req = json!({"jsonrpc": "2.0", "id": page, "method": "tools/list"});
        if let Some(p) = params {
            req["params"] = p;
        }
        let (_, response) = exchange(upstream, path, session.as_ref(), &req).await?;
        let result = response
            .and_then(|r| r.get("result").cloned())
            .ok_or(HttpDiscoveryError::NoResult)?;
        pages.take(&result);
    }
    let tools = pages.tools();
    if let Some(id) = session {
        let mut headers = HeaderMap::new();
        headers.insert(mcp_http::SESSION_ID, id);
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        let uri = upstream.uri_for(path.parse().ok().as_ref());
        let req = crate::transport::headers::upstream_request(
            Method::DELETE,
            uri,
            &headers,
            Bytes::new(),
        );
        let _ = upstream.send(req).await;
    }
    Ok(tools)
}

/// POSTs one message; returns the response headers and, for a request, the
/// JSON-RPC response (from a JSON body or the SSE stream).
async fn exchange(
    upstream: &Upstream,
    path: &str,
    session: Option<&HeaderValue>,
    message: &Value,
) -> Result<(HeaderMap, Option<Value>), HttpDiscoveryError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        header::ACCEPT,
        HeaderValue::from_static("application/json, text/event-stream"),
    );
    headers.insert(
        mcp_http::PROTOCOL_VERSION,
        HeaderValue::from_static(PROTOCOL_VERSION),
    );
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if let Some(id) = session {
        headers.insert(mcp_http::SESSION_ID, id.clone());
    }
    let uri = upstream.uri_for(path.parse().ok().as_ref());
    let body = Bytes::from(serde_json::to_vec(message).unwrap_or_default());
    let response = upstream
        .send(crate::transport::headers::upstream_request(
            Method::POST,
            uri.clone(),
            &headers,
            body,
        ))
        .await?;
    let (parts, body) = response.into_parts();
    if !parts.status.is_success() {
        return Err(HttpDiscoveryError::Status {
            status: parts.status,
            method: message["method"].clone(),
            uri,
        });
    }
    if message.get("id").is_none() {
        return Ok((parts.headers, None));
    }
    let id = message["id"].clone();
    if crate::transport::headers::is_event_stream(&parts.headers) {
        // Read events until the response arrives; the stream may stay open.
        let mut parser = sse::Parser::new();
        let mut body = body;
        while let Some(frame) = body.frame().await {
            let Ok(data) = frame.map_err(HttpDiscoveryError::Body)?.into_data() else {
                continue;
            };
            for event in parser.push(&data)? {
                if let Ok(v) = serde_json::from_str::<Value>(&event.data)
                    && v.get("id") == Some(&id)
                {
                    return Ok((parts.headers, Some(v)));
                }
            }
        }
        return Err(HttpDiscoveryError::StreamEnded);
    }
    let bytes = body
        .collect()
        .await
        .map_err(HttpDiscoveryError::Body)?
        .to_bytes();
    let v: Value = serde_json::from_slice(&bytes).map_err(HttpDiscoveryError::NotJson)?;
    Ok((parts.headers, Some(v)))
}
