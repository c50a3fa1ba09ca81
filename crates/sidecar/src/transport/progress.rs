//! Progress while a call is held for approval: a Streamable HTTP POST of
//! one `tools/call` whose `_meta.progressToken` is set, from a client that
//! accepts `text/event-stream`, is decided on its own task. If it answers
//! at once the client gets the usual response; once the call is held (the
//! gate sends its first progress), the response becomes an SSE stream:
//! `notifications/progress` events while it waits, then the call's
//! response (tollgate's answer, or the MCP server's, relayed) as the last
//! event. MCP lets a server send related notifications on a request's SSE
//! stream before its response (MCP-NOTES.md, Streamable HTTP).

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderValue, Response, StatusCode, header, request::Parts};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use serde_json::Value;
use tokio::sync::mpsc;

use tollgate_mcp::{sse, tools};
use tollgate_runtime::body::{self, Body, BoxError};

use crate::approvals::Progress;
use crate::proxy::Proxy;
use crate::transport::headers;

/// Notifications waiting for a slow reader, at most (then ticks drop).
const BUFFER: usize = 16;

/// The progress token of a POST that qualifies (see the module doc).
pub(crate) fn wanted(proxy: &Proxy, parts: &Parts, value: &Value) -> Option<Value> {
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let accepts_stream = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"));
    let token = value.get("params")?.get("_meta")?.get("progressToken")?;
    let is_call = value.get("method").and_then(Value::as_str) == Some(tools::CALL);
    (is_call
        && accepts_stream
        && (token.is_string() || token.is_i64() || token.is_u64())
        && proxy.streams().legacy(path).is_none())
    .then(|| token.clone())
}

/// A held call's progress and the receiving end the response reads.
pub(crate) fn channel(token: Value) -> (Progress, mpsc::Receiver<Value>) {
    let (tx, rx) = mpsc::channel(BUFFER);
    (Progress::new(token, tx), rx)
}

/// The decision and forwarding of a POST, as [`respond`] runs it.
pub(crate) type Decided = Pin<Box<dyn Future<Output = Response<Body>> + Send>>;

/// Runs `decided` (which holds the [`Progress`] of `rx`) on a task; streams
/// progress if the call is held, else answers as it answers.
pub(crate) async fn respond(
    decided: Decided,
    mut rx: mpsc::Receiver<Value>,
    limit: usize,
    timeout: Duration,
) -> Response<Body> {
    let mut task = tokio::spawn(decided);
    let failed = |_| body::status(StatusCode::INTERNAL_SERVER_ERROR);
    let first = tokio::select! {
        done = &mut task => return done.unwrap_or_else(failed),
        first = rx.recv() => first,
    };
    // The channel closed with the task, before any progress: not held.
    let Some(first) = first else {
        return task.await.unwrap_or_else(failed);
    };
    // Held: from here the client reads a stream.
    let events = futures_util::stream::unfold(
        (Some(first), rx, Some(task)),
        move |(next, mut rx, task)| async move {
            if let Some(n) = next {
                let event = sse::encode(Some("message"), None, &n.to_string());
                return Some((Ok(event), (rx.recv().await, rx, task)));
            }
            // The sender lives in the task: the channel ends with it.
            let task = task?;
            let last = match task.await {
                Ok(response) => as_events(response, limit, timeout).await,
                Err(e) => Err(HeldError::Task(e)),
            };
            Some((last, (None, rx, None)))
        },
    );
    let mut response = Response::new(StreamBody::new(events.map(frame)).boxed_unsync());
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// Why a held call's stream ended without its response.
#[derive(Debug, thiserror::Error)]
enum HeldError {
    #[error("deciding the held call failed: {0}")]
    Task(#[source] tokio::task::JoinError),
    #[error("the MCP server's response took longer than --upstream-timeout")]
    Timeout,
    #[error("reading the MCP server's response: {0}")]
    Read(#[source] BoxError),
    #[error("the MCP server's response is larger than {0} bytes")]
    TooLarge(usize),
}

fn frame(r: Result<Bytes, HeldError>) -> Result<Frame<Bytes>, BoxError> {
    match r {
        Ok(b) => Ok(Frame::data(b)),
        Err(e) => Err(Box::new(e)),
    }
}

/// The call's response as SSE: an SSE response passes as it is, JSON
/// becomes one `message` event.
async fn as_events(
    response: Response<Body>,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, HeldError> {
    let (parts, mut body) = response.into_parts();
    // Read by hand, not with `Limited`: its error conversion trips the
    // compiler's Send inference inside the stream.
    let read = async {
        let mut bytes = bytes::BytesMut::new();
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.map_err(HeldError::Read)?.into_data() {
                if bytes.len() + data.len() > limit {
                    return Err(HeldError::TooLarge(limit));
                }
                bytes.extend_from_slice(&data);
            }
        }
        Ok(bytes.freeze())
    };
    let bytes = tokio::time::timeout(timeout, read)
        .await
        .map_err(|_| HeldError::Timeout)??;
    if headers::is_event_stream(&parts.headers) {
        return Ok(bytes);
    }
    let text = String::from_utf8_lossy(&bytes);
    Ok(sse::encode(Some("message"), None, text.trim()))
}
