//! Client POSTs: each JSON-RPC message (or every element of a batch) is read
//! once, checked, decided, and then either answered by the proxy or
//! forwarded as the proxy's own re-serialisation of what it decided on.
//!
//! Works for both transports: a POST to a legacy (2024-11-05) session
//! endpoint gets `202 Accepted` and its answers on the session's SSE stream;
//! any other POST is Streamable HTTP and gets its answers in the response.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http::{HeaderMap, Method, Response, StatusCode, header, request::Parts};
use hyper::body::Incoming;
use serde_json::Value;

use tollgate_mcp::http::{self as mcp_http, Mirrored};
use tollgate_mcp::json::StrictJsonError;
use tollgate_mcp::jsonrpc::{self, INVALID_REQUEST, PARSE_ERROR, RpcError, UPSTREAM_UNAVAILABLE};
use tollgate_mcp::{sse, tools};

use crate::gate::Caller;
use crate::metrics::{McpMethod, Rejection, UpstreamFailure};
use crate::proxy::Proxy;
use crate::traces::RequestSpan;
use crate::transport::headers;
use crate::transport::lists::ListHook;
use crate::transport::open_streams::LegacySession;
use crate::transport::plan::{Step, plan_message};
use crate::transport::progress;
use crate::transport::relay::Relay;
use tollgate_runtime::body::{self, Body, ReadError};

/// What to do with the messages of one POST.
#[derive(Default)]
struct Plan {
    /// Messages to forward, in order.
    forward: Vec<Value>,
    /// Responses the proxy gives itself (denials, errors).
    answers: Vec<Value>,
    /// Whether any answer is an error about the message itself (HTTP 400
    /// for a single message) rather than a policy denial.
    refused: bool,
    /// Ids of forwarded `tools/list` requests.
    list_ids: Vec<Value>,
    /// Whether an `initialize` is forwarded (its response issues a session).
    initialize: bool,
}

/// Handles one POST, in a span when traces are on (the only place the
/// data path makes one; with traces off nothing of them is built).
pub(crate) async fn handle(
    proxy: &Arc<Proxy>,
    parts: Parts,
    body: Incoming,
    subject: Option<String>,
) -> Response<Body> {
    let Some(tracer) = proxy.tracer() else {
        return handle_in(proxy, parts, body, subject, None).await;
    };
    let span = RequestSpan::start(tracer, &parts.headers);
    let response = handle_in(proxy, parts, body, subject, Some(&span)).await;
    span.answered(response.status());
    response
}

async fn handle_in(
    proxy: &Arc<Proxy>,
    parts: Parts,
    body: Incoming,
    subject: Option<String>,
    span: Option<&RequestSpan>,
) -> Response<Body> {
    if let Some(refused) = check_content_headers(proxy, &parts.headers) {
        return refused;
    }
    let bytes = match proxy.read_request(&parts, body).await {
        Ok(b) => b,
        Err(e) => {
            let (status, reason) = match e {
                ReadError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, Rejection::TooLarge),
                ReadError::Timeout(_) => (StatusCode::REQUEST_TIMEOUT, Rejection::Timeout),
                ReadError::Io(_) => (StatusCode::BAD_REQUEST, Rejection::Io),
            };
            return reject(proxy, status, PARSE_ERROR, &e.to_string(), reason);
        }
    };
    let value = match proxy.parse(bytes).await {
        Ok(v) => v,
        Err(e) => {
            let reason = match e {
                StrictJsonError::TooManyValues(_) => Rejection::TooComplex,
                _ => Rejection::Malformed,
            };
            return reject(
                proxy,
                StatusCode::BAD_REQUEST,
                PARSE_ERROR,
                &e.to_string(),
                reason,
            );
        }
    };
    if let Some(token) = progress::wanted(proxy, &parts, &value) {
        let (progress, rx) = progress::channel(token);
        let (limit, timeout) = proxy.upstream_limits();
        // Boxed as `dyn Future + Send`: spawning the `async fn` directly
        // trips the compiler's higher-ranked Send inference.
        let decided: progress::Decided = Box::pin(decide_and_forward(
            proxy.clone(),
            parts,
            value,
            subject,
            Some(progress),
            span.cloned(),
        ));
        return progress::respond(decided, rx, limit, timeout).await;
    }
    decide_and_forward(proxy.clone(), parts, value, subject, None, span.cloned()).await
}

/// Plans the messages of a read POST, forwards what is allowed and answers
/// the rest; `progress` carries a held call's progress notifications.
async fn decide_and_forward(
    proxy: Arc<Proxy>,
    parts: Parts,
    value: Value,
    subject: Option<String>,
    progress: Option<crate::approvals::Progress>,
    span: Option<RequestSpan>,
) -> Response<Body> {
    let proxy = &proxy;
    let span = span.as_ref();
    let mirrored = match mirrored(&parts.headers) {
        Ok(m) => m,
        Err(bad) => {
            return reject(
                proxy,
                StatusCode::BAD_REQUEST,
                jsonrpc::HEADER_MISMATCH,
                &bad.to_string(),
                Rejection::HeaderMismatch,
            );
        }
    };
    let path_and_query = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let legacy = proxy.streams().legacy(path_and_query);
    // Legacy sessions are keyed apart from Streamable HTTP ones, so a
    // client cannot name one in an `Mcp-Session-Id` header.
    let session = match &legacy {
        Some(l) => Some(format!("legacy:{}", l.endpoint())),
        None => parts
            .headers
            .get(mcp_http::SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| proxy.session_known(id))
            .map(str::to_owned),
    };

    let (batch, messages) = match value {
        Value::Array(items) if items.is_empty() => {
            return reject(
                proxy,
                StatusCode::BAD_REQUEST,
                INVALID_REQUEST,
                "an empty batch",
                Rejection::InvalidRequest,
            );
        }
        Value::Array(items) => (true, items),
        other => (false, vec![other]),
    };
    if batch && mirrored.any() {
        return reject(
            proxy,
            StatusCode::BAD_REQUEST,
            jsonrpc::HEADER_MISMATCH,
            "Mcp-Method/Mcp-Name headers cannot describe a batch",
            Rejection::HeaderMismatch,
        );
    }

    if messages
        .iter()
        .any(|m| m.get("method").and_then(Value::as_str) == Some(tools::CALL))
    {
        proxy.ensure_catalog(parts.uri.path()).await;
    }
    let mut plan = Plan::default();
    let method_label = if batch {
        McpMethod::Batch
    } else {
        method_label(&messages[0])
    };
    if let Some(span) = span {
        span.method(method_label);
        if let Some(session) = &session {
            span.session(session);
        }
    }
    let caller = Caller {
        session: session.as_deref(),
        subject: subject.as_deref(),
        progress: progress.as_ref(),
        span,
    };
    for message in messages {
        if let Err(mismatch) = plan_one(proxy, &mut plan, message, batch, &mirrored, caller).await {
            return body::json(StatusCode::BAD_REQUEST, &mismatch.to_response());
        }
    }
    if let Some(l) = &legacy
        && !l.expect_lists(&plan.list_ids, caller.subject)
    {
        // Forwarded, their answers would reach the client unfiltered.
        return reject(
            proxy,
            StatusCode::TOO_MANY_REQUESTS,
            INVALID_REQUEST,
            "too many tools/list requests of this session await their answer",
            Rejection::PendingLists,
        );
    }

    if plan.forward.is_empty() {
        return answer_locally(plan, batch, legacy.as_deref()).await;
    }
    let body = if batch {
        Value::Array(std::mem::take(&mut plan.forward))
    } else {
        plan.forward.pop().unwrap_or_default()
    };
    let bytes = Bytes::from(serde_json::to_vec(&body).unwrap_or_default());
    let uri = proxy.upstream().uri_for(parts.uri.path_and_query());
    let mut request = headers::upstream_request(Method::POST, uri, &parts.headers, bytes);
    if let Some(span) = span {
        span.inject(request.headers_mut());
    }
    let started = Instant::now();
    let upstream = match proxy.upstream().send(request).await {
        Ok(resp) => resp,
        Err(e) => {
            proxy.metrics().upstream_failed(e.kind());
            tracing::warn!(error = %e, "upstream request failed");
            return upstream_failed(&body, &e.to_string(), plan.answers);
        }
    };
    proxy
        .metrics()
        .upstream_answered(method_label, started.elapsed().as_secs_f64());
    respond(proxy, upstream, plan, batch, legacy, subject).await
}

/// Decides one message and records what to do with it. An error is a
/// header/body mismatch, which refuses the whole request.
async fn plan_one(
    proxy: &Proxy,
    plan: &mut Plan,
    message: Value,
    batch: bool,
    mirrored: &Mirrored<'_>,
    caller: Caller<'_>,
) -> Result<(), RpcError> {
    let check = |m: &Value, e: &jsonrpc::Envelope<'_>| {
        if batch { Ok(()) } else { mirrored.check(m, e) }
    };
    match plan_message(proxy.gate(), proxy.metrics(), message, caller, check).await? {
        Step::Forward(m) => plan.forward.push(m),
        Step::ForwardList(m, id) => {
            plan.list_ids.push(id);
            plan.forward.push(m);
        }
        Step::ForwardInitialize(m) => {
            plan.initialize = true;
            plan.forward.push(m);
        }
        Step::Answer { response, refused } => {
            plan.answers.push(response);
            plan.refused |= refused;
        }
    }
    Ok(())
}

/// Nothing to forward: every message was answered by the proxy.
async fn answer_locally(plan: Plan, batch: bool, legacy: Option<&LegacySession>) -> Response<Body> {
    if let Some(session) = legacy {
        for answer in &plan.answers {
            if !session.answer(answer).await {
                return body::status(StatusCode::GONE);
            }
        }
        return body::status(StatusCode::ACCEPTED);
    }
    match (batch, plan.answers.len()) {
        (false, 1) => {
            let status = if plan.refused {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::OK
            };
            let answer = plan.answers.into_iter().next().unwrap_or_default();
            body::json(status, &answer)
        }
        // Only notifications or responses, all refused: nothing to say back.
        (_, 0) => body::status(StatusCode::ACCEPTED),
        _ => body::json(StatusCode::OK, &Value::Array(plan.answers)),
    }
}

/// Turns the upstream's response into the client's, merging the proxy's
/// own answers and filtering `tools/list` results.
async fn respond(
    proxy: &Arc<Proxy>,
    upstream: Response<super::connections::UpstreamBody>,
    plan: Plan,
    batch: bool,
    legacy: Option<Arc<LegacySession>>,
    subject: Option<String>,
) -> Response<Body> {
    let (mut parts, incoming) = upstream.into_parts();
    headers::strip_hop_by_hop(&mut parts.headers);
    if plan.initialize
        && parts.status.is_success()
        && let Some(id) = parts
            .headers
            .get(mcp_http::SESSION_ID)
            .and_then(|v| v.to_str().ok())
    {
        proxy.session_opened(id, subject.as_deref());
    }
    if let Some(session) = legacy {
        // Legacy: the upstream's answers travel on the SSE stream; so do ours.
        for answer in &plan.answers {
            session.answer(answer).await;
        }
        return Response::from_parts(parts, body::stream(incoming));
    }
    if !parts.status.is_success() || (plan.answers.is_empty() && plan.list_ids.is_empty()) {
        return Response::from_parts(parts, body::stream(incoming));
    }
    if parts.status == StatusCode::ACCEPTED || parts.status == StatusCode::NO_CONTENT {
        // The upstream had nothing to say; the proxy does.
        if plan.answers.is_empty() {
            return Response::from_parts(parts, body::stream(incoming));
        }
        return body::json(StatusCode::OK, &Value::Array(plan.answers));
    }
    let hook = ListHook {
        proxy: proxy.clone(),
        ids: plan.list_ids,
        subject,
    };
    if headers::is_event_stream(&parts.headers) {
        parts.headers.remove(header::CONTENT_LENGTH);
        let first = plan
            .answers
            .iter()
            .map(|a| sse::encode(Some("message"), None, &a.to_string()))
            .collect();
        let relay = Relay::new(incoming, Box::new(hook), first, None, Vec::new());
        return Response::from_parts(parts, http_body_util::BodyExt::boxed_unsync(relay));
    }
    if !headers::is_json(&parts.headers) {
        return Response::from_parts(parts, body::stream(incoming));
    }
    let bytes = match proxy.read_upstream(incoming).await {
        Ok(b) => b,
        Err(e) => {
            proxy.metrics().upstream_failed(UpstreamFailure::Protocol);
            return body::json(
                StatusCode::BAD_GATEWAY,
                &jsonrpc::error_response(
                    &Value::Null,
                    UPSTREAM_UNAVAILABLE,
                    &format!("upstream response: {e}"),
                    None,
                ),
            );
        }
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        // Not JSON after all: pass it on as it came, nothing to filter.
        parts.headers.remove(header::CONTENT_LENGTH);
        return Response::from_parts(parts, body::full(bytes));
    };
    let mut hook = hook;
    hook.rewrite(&mut value);
    if batch && !plan.answers.is_empty() {
        value = match value {
            Value::Array(mut items) => {
                items.extend(plan.answers);
                Value::Array(items)
            }
            single => {
                let mut items = vec![single];
                items.extend(plan.answers);
                Value::Array(items)
            }
        };
    }
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(
        parts,
        body::full(serde_json::to_vec(&value).unwrap_or_default()),
    )
}

/// Refuses bodies the proxy cannot read exactly as the upstream would.
fn check_content_headers(proxy: &Proxy, h: &HeaderMap) -> Option<Response<Body>> {
    let content_type = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    if !content_type.is_some_and(headers::is_json_utf8) {
        return Some(reject(
            proxy,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PARSE_ERROR,
            "MCP messages must be sent as Content-Type: application/json in UTF-8",
            Rejection::ContentType,
        ));
    }
    let encoded = h.get_all(header::CONTENT_ENCODING).iter().any(|v| {
        !v.to_str()
            .is_ok_and(|s| s.trim().eq_ignore_ascii_case("identity"))
    });
    if encoded {
        return Some(reject(
            proxy,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            PARSE_ERROR,
            "compressed request bodies are not accepted; send the JSON uncompressed",
            Rejection::ContentEncoding,
        ));
    }
    None
}

/// Why a mirrored MCP header (`Mcp-Method`, …) cannot be read.
#[derive(Debug, thiserror::Error)]
enum BadMirror {
    #[error("the {0} header is sent more than once")]
    Repeated(&'static str),
    #[error("the {0} header is not visible ASCII")]
    NotAscii(&'static str),
}

fn mirrored(h: &HeaderMap) -> Result<Mirrored<'_>, BadMirror> {
    let get = |name: &'static str| -> Result<Option<&str>, BadMirror> {
        let mut values = h.get_all(name).iter();
        let first = values.next();
        if values.next().is_some() {
            return Err(BadMirror::Repeated(name));
        }
        first
            .map(|v| v.to_str().map_err(|_| BadMirror::NotAscii(name)))
            .transpose()
    };
    Ok(Mirrored {
        protocol_version: get(mcp_http::PROTOCOL_VERSION)?,
        method: get(mcp_http::METHOD)?,
        name: get(mcp_http::NAME)?,
    })
}

/// Refuses the whole request before any decision.
fn reject(
    proxy: &Proxy,
    status: StatusCode,
    code: i64,
    message: &str,
    reason: Rejection,
) -> Response<Body> {
    proxy.metrics().reject(reason);
    proxy.gate().malformed(message, &Value::Null);
    tracing::debug!(%status, %reason, message, "request refused");
    body::json(
        status,
        &jsonrpc::error_response(&Value::Null, code, message, None),
    )
}

/// The upstream did not answer: every forwarded request gets an error.
fn upstream_failed(forwarded: &Value, message: &str, mut answers: Vec<Value>) -> Response<Body> {
    let text = format!("tollgate could not reach the MCP server: {message}");
    let requests: Vec<&Value> = match forwarded {
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    for r in &requests {
        if let Some(id) = r.get("id").filter(|_| r.get("method").is_some()) {
            answers.push(jsonrpc::error_response(
                id,
                UPSTREAM_UNAVAILABLE,
                &text,
                None,
            ));
        }
    }
    let value = match (forwarded.is_array(), answers.len()) {
        (false, 1) => answers.pop().unwrap_or_default(),
        (_, 0) => jsonrpc::error_response(&Value::Null, UPSTREAM_UNAVAILABLE, &text, None),
        _ => Value::Array(answers),
    };
    body::json(StatusCode::BAD_GATEWAY, &value)
}

/// A bounded label for the upstream latency histogram.
fn method_label(message: &Value) -> McpMethod {
    match message.get("method").and_then(Value::as_str) {
        Some(tools::CALL) => McpMethod::ToolsCall,
        Some(tools::LIST) => McpMethod::ToolsList,
        Some("initialize") => McpMethod::Initialize,
        Some(_) => McpMethod::Other,
        None => McpMethod::Response,
    }
}
