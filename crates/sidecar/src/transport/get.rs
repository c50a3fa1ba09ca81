//! GET and DELETE: event streams from the server, legacy session streams,
//! session teardown and anything else that is not a client message.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header, request::Parts};
use serde_json::Value;

use tollgate_mcp::http as mcp_http;
use tollgate_mcp::sse;
use tollgate_policy::budget::CallerKey;

use crate::metrics::Rejection;
use crate::proxy::Proxy;
use crate::transport::headers;
use crate::transport::lists::{notice_list_changed, rewrite_lists};
use crate::transport::open_streams::{LegacySession, StreamsFull};
use crate::transport::relay::Relay;
use tollgate_runtime::body::{self, Body};

/// Forwards a bodiless request (GET, HEAD, DELETE, OPTIONS); relays event
/// streams so the proxy can speak on them. An event stream needs a place
/// among the open streams (see [`open_streams`](crate::transport::open_streams))
/// of its caller, who is `subject`, else its session: taken before the
/// upstream is asked when the client asks for a stream, else once the
/// upstream answers with one.
pub(crate) async fn handle(
    proxy: &Arc<Proxy>,
    parts: Parts,
    subject: Option<&str>,
) -> Response<Body> {
    let caller = || {
        let session = parts
            .headers
            .get(mcp_http::SESSION_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|id| proxy.session_known(id));
        CallerKey::new(subject, session)
    };
    let wants_stream = parts
        .headers
        .get_all(header::ACCEPT)
        .iter()
        .any(|v| v.to_str().is_ok_and(|a| a.contains("text/event-stream")));
    let mut permit = None;
    if parts.method == Method::GET && wants_stream {
        match proxy.streams().reserve(caller()) {
            Ok(p) => permit = Some(p),
            Err(full) => return too_many_streams(proxy, &full),
        }
    }
    let uri = proxy.upstream().uri_for(parts.uri.path_and_query());
    let request =
        headers::upstream_request(parts.method.clone(), uri, &parts.headers, Bytes::new());
    let upstream = match proxy.upstream().send(request).await {
        Ok(r) => r,
        Err(e) => {
            proxy.metrics().upstream_failed(e.kind());
            tracing::warn!(error = %e, method = %parts.method, "upstream request failed");
            let message = format!("tollgate could not reach the MCP server: {e}");
            return body::json(
                StatusCode::BAD_GATEWAY,
                &tollgate_mcp::jsonrpc::error_response(
                    &Value::Null,
                    tollgate_mcp::jsonrpc::UPSTREAM_UNAVAILABLE,
                    &message,
                    None,
                ),
            );
        }
    };
    let (mut resp, incoming) = upstream.into_parts();
    headers::strip_hop_by_hop(&mut resp.headers);
    if parts.method == Method::DELETE
        && resp.status.is_success()
        && let Some(id) = parts
            .headers
            .get(mcp_http::SESSION_ID)
            .and_then(|v| v.to_str().ok())
    {
        proxy.session_closed(id);
    }
    if parts.method != Method::GET
        || !resp.status.is_success()
        || !headers::is_event_stream(&resp.headers)
    {
        return Response::from_parts(resp, body::stream(incoming));
    }
    let permit = match permit {
        Some(p) => p,
        None => match proxy.streams().reserve(caller()) {
            Ok(p) => p,
            // Dropping the upstream's answer closes its stream.
            Err(full) => return too_many_streams(proxy, &full),
        },
    };
    resp.headers.remove(header::CONTENT_LENGTH);
    // The hook owns the stream's registration: it turns it into a legacy
    // session if an `endpoint` event comes, and drops it with the stream.
    let (guard, rx, tx) = proxy.streams().open(proxy.metrics(), permit);
    let hook = SessionHook {
        proxy: proxy.clone(),
        request_path: parts.uri.path().to_owned(),
        inject: Some(tx),
        guard,
        session: None,
    };
    let relay = Relay::new(incoming, Box::new(hook), Vec::new(), Some(rx), Vec::new());
    Response::from_parts(resp, http_body_util::BodyExt::boxed_unsync(relay))
}

/// Refuses a stream past its caller's share or the proxy's total.
fn too_many_streams(proxy: &Proxy, full: &StreamsFull) -> Response<Body> {
    proxy.metrics().reject(Rejection::TooManyStreams);
    tracing::debug!(error = %full, "event stream refused");
    let mut resp = body::json(
        StatusCode::TOO_MANY_REQUESTS,
        &tollgate_mcp::jsonrpc::error_response(
            &Value::Null,
            tollgate_mcp::jsonrpc::INVALID_REQUEST,
            &full.to_string(),
            None,
        ),
    );
    resp.headers_mut()
        .insert(header::RETRY_AFTER, http::HeaderValue::from_static("5"));
    resp
}

/// Watches a server stream: a legacy `endpoint` event makes it a session
/// the proxy can answer on; that session's `tools/list` results are
/// filtered.
struct SessionHook {
    proxy: Arc<Proxy>,
    request_path: String,
    inject: Option<tokio::sync::mpsc::Sender<Bytes>>,
    guard: crate::transport::open_streams::StreamGuard,
    session: Option<Arc<LegacySession>>,
}

impl crate::transport::relay::Hook for SessionHook {
    fn on_event(&mut self, event: &sse::Event) -> Option<Bytes> {
        notice_list_changed(&self.proxy, event);
        if event.event.as_deref() == Some("endpoint") && self.session.is_none() {
            let (endpoint, rewritten) = self.resolve(event.data.trim());
            if let Some(inject) = self.inject.take() {
                self.session = Some(self.proxy.streams().register_legacy(
                    &mut self.guard,
                    endpoint.clone(),
                    inject,
                ));
            }
            return rewritten
                .then(|| sse::encode(Some("endpoint"), event.id.as_deref(), &endpoint));
        }
        let session = self.session.as_ref()?;
        if !event.is_message() {
            return None;
        }
        let mut value: Value = serde_json::from_str(&event.data).ok()?;
        let changed = rewrite_lists(
            self.proxy.gate(),
            self.proxy.metrics(),
            &mut value,
            &mut |id| session.take_list(id),
        );
        changed.then(|| {
            sse::encode(
                event.event.as_deref(),
                event.id.as_deref(),
                &value.to_string(),
            )
        })
    }
}

impl SessionHook {
    /// The endpoint as the client will POST it (path and query on the
    /// proxy), and whether the event must be rewritten to say so.
    fn resolve(&self, data: &str) -> (String, bool) {
        let prefix = self
            .proxy
            .upstream()
            .uri_for(None)
            .path()
            .trim_end_matches('/')
            .to_owned();
        let (path_and_query, rewritten) = if let Ok(uri) = data.parse::<http::Uri>()
            && uri.scheme().is_some()
        {
            // An absolute URL would send the client around the proxy.
            (
                uri.path_and_query()
                    .map_or("/".to_owned(), |p| p.as_str().to_owned()),
                true,
            )
        } else if data.starts_with('/') {
            (data.to_owned(), false)
        } else {
            let dir = self.request_path.rsplit_once('/').map_or("", |(d, _)| d);
            (format!("{dir}/{data}"), true)
        };
        match path_and_query.strip_prefix(&prefix) {
            Some(rest) if !prefix.is_empty() && rest.starts_with('/') => (rest.to_owned(), true),
            _ => (path_and_query, rewritten),
        }
    }
}
