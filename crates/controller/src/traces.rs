//! The controller's spans, when traces are on ([`tollgate_runtime::otel`],
//! installed as the global pipeline by [`crate::run::run`]): one per
//! reconcile of a policy into the index, one per snapshot pushed to a
//! sidecar. With traces off the global tracer is OpenTelemetry's no-op one.

use std::time::{Duration, SystemTime};

use opentelemetry::KeyValue;
use opentelemetry::global::{self, BoxedSpan};
use opentelemetry::trace::{Span as _, SpanKind, Tracer as _};
use tollgate_runtime::labels::LabelValue as _;

use crate::metrics::WatchKind;

const SCOPE: &str = "tollgate-controller";

/// A reconcile: `event` (`apply`, `delete`, `relist`) of `kind` policies;
/// `policy` is `namespace/name` (`name` for a cluster policy), or absent for
/// a relist. End it (drop it) when the index has taken the change.
pub(crate) fn reconcile(kind: WatchKind, event: &'static str, policy: Option<String>) -> BoxedSpan {
    let mut attributes = vec![
        KeyValue::new("tollgate.kind", kind.as_str()),
        KeyValue::new("tollgate.event", event),
    ];
    if let Some(p) = policy {
        attributes.push(KeyValue::new("tollgate.policy", p));
    }
    global::tracer(SCOPE)
        .span_builder("reconcile")
        .with_kind(SpanKind::Internal)
        .with_attributes(attributes)
        .start(&global::tracer(SCOPE))
}

/// A snapshot pushed to a sidecar: the span runs from the snapshot's
/// computation (`waited` ago) to now, the latency
/// `tollgate_controller_push_seconds` measures.
pub(crate) fn pushed(pod: &str, version: &str, waited: Duration) {
    let tracer = global::tracer(SCOPE);
    let now = SystemTime::now();
    let mut span = tracer
        .span_builder("push")
        .with_kind(SpanKind::Producer)
        .with_start_time(now.checked_sub(waited).unwrap_or(now))
        .with_attributes([
            KeyValue::new("tollgate.pod", pod.to_owned()),
            KeyValue::new("tollgate.snapshot_version", version.to_owned()),
        ])
        .start(&tracer);
    span.end_with_timestamp(now);
}
