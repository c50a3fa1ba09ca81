//! The span of one MCP request, when traces are on
//! ([`tollgate_runtime::otel`]).
//!
//! One span per client POST, made in one place (the POST handler) and only
//! when a tracer exists: with traces off the handler holds `None` and no
//! span, context or attribute is built. The span continues the agent's
//! W3C `traceparent` and is the parent the upstream request names in its
//! own `traceparent`, so the agent's trace runs through tollgate into the
//! MCP server. Each decided `tools/call` sets the decision's attributes
//! (a batch: the last call's, and one `tollgate.decision` event per call).

use http::{HeaderMap, StatusCode};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanKind, Status, TraceContextExt, Tracer};
use opentelemetry::{Context, KeyValue};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracer;
use tollgate_runtime::labels::LabelValue as _;

use tollgate_policy::Decision;

use crate::metrics::McpMethod;

/// The span of one request. Cloning shares the span (a handle for a
/// task that outlives the borrow); the SDK ends it when the last clone is
/// dropped.
#[derive(Clone)]
pub(crate) struct RequestSpan {
    cx: Context,
}

impl RequestSpan {
    /// Starts the span, a child of the agent's `traceparent` if it sent one.
    pub(crate) fn start(tracer: &SdkTracer, headers: &HeaderMap) -> Self {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        let span = tracer
            .span_builder("mcp")
            .with_kind(SpanKind::Server)
            .start_with_context(tracer, &parent);
        RequestSpan {
            cx: parent.with_span(span),
        }
    }

    /// Names the span for the request's MCP method (bounded: see [`McpMethod`]).
    pub(crate) fn method(&self, method: McpMethod) {
        let span = self.cx.span();
        span.update_name(format!("mcp {}", method.as_str()));
        span.set_attribute(KeyValue::new("mcp.method.name", method.as_str()));
    }

    /// Records the session, as the audit log does: its digest, since a
    /// session id is a bearer credential.
    pub(crate) fn session(&self, session: &str) {
        self.cx.span().set_attribute(KeyValue::new(
            "tollgate.session_sha256",
            crate::audit::digest(session),
        ));
    }

    /// Records one decided `tools/call`.
    pub(crate) fn decided(&self, d: &Decision, tool: &str, request_id: &serde_json::Value) {
        let mut attributes = vec![
            KeyValue::new("tollgate.decision", d.effect.as_str()),
            KeyValue::new("tollgate.reason", d.reason.as_str()),
            KeyValue::new("tollgate.tool", tool.to_owned()),
            KeyValue::new("jsonrpc.request.id", request_id.to_string()),
        ];
        if let Some(p) = &d.policy {
            attributes.push(KeyValue::new("tollgate.policy", p.clone()));
        }
        if let Some(r) = &d.rule {
            attributes.push(KeyValue::new("tollgate.rule", r.clone()));
        }
        let span = self.cx.span();
        span.add_event("tollgate.decision", attributes.clone());
        span.set_attributes(attributes);
    }

    /// Puts this span into the upstream request's `traceparent`
    /// (replacing the agent's, whose trace id it keeps).
    pub(crate) fn inject(&self, headers: &mut HeaderMap) {
        TraceContextPropagator::new().inject_context(&self.cx, &mut HeaderInjector(headers));
    }

    /// Records the HTTP status answered to the agent.
    pub(crate) fn answered(&self, status: StatusCode) {
        let span = self.cx.span();
        span.set_attribute(KeyValue::new(
            "http.response.status_code",
            i64::from(status.as_u16()),
        ));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
    }
}

impl std::fmt::Debug for RequestSpan {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestSpan")
            .field("span", self.cx.span().span_context())
            .finish()
    }
}
