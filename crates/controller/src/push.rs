//! The push server: each sidecar's snapshot stream and its acks (the
//! contract is in [`tollgate_policy::snapshot`]).

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::json;
use tokio::sync::watch;

use tollgate_mcp::sse;
use tollgate_policy::snapshot::{
    Ack, FEATURE_STATE_FRESH, HEARTBEAT_EVENT, Heartbeat, SIDECAR_LABEL, SNAPSHOT_EVENT,
    STREAM_FEATURES_HEADER,
};
use tollgate_runtime::body::{self, Body, BoxError};

use crate::acks::AckBook;
use crate::cluster_state::{ClusterState, StateSender};
use crate::index::{Index, Published};
use crate::metrics::ControllerMetrics;
use crate::watch::Synced;
use tollgate_runtime::token_review::{AuthError, Authenticator, Identity, authorize};

/// The largest ack body accepted: a version and at most
/// `MAX_WOULD_DENY` would-be denial counts with their names.
const MAX_ACK_BYTES: usize = 16 * 1024;

/// What the push server needs.
pub(crate) struct PushService {
    /// The index.
    pub index: Arc<Mutex<Index>>,
    /// Token reviews.
    pub auth: Authenticator,
    /// Acks.
    pub acks: Arc<AckBook>,
    /// Metrics.
    pub metrics: ControllerMetrics,
    /// How often a quiet stream carries a heartbeat.
    pub heartbeat: Duration,
    /// KubeVirt state for the sidecars.
    pub cluster: watch::Receiver<Arc<ClusterState>>,
    /// Whether the index holds complete lists: no snapshot is served before.
    pub synced: Synced,
}

/// Routes one request.
pub(crate) async fn route(
    svc: Arc<PushService>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let path: Vec<String> = req
        .uri()
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_owned)
        .collect();
    let resp = match (
        req.method(),
        path.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
    ) {
        (&Method::GET, ["v1", "snapshots", ns, pod]) => snapshots(&svc, &req, ns, pod).await,
        (&Method::POST, ["v1", "acks", ns, pod]) => {
            let (ns, pod) = (ns.to_string(), pod.to_string());
            ack(&svc, req, &ns, &pod).await
        }
        _ => error(
            StatusCode::NOT_FOUND,
            "unknown endpoint; sidecars use GET /v1/snapshots/{namespace}/{pod} and POST /v1/acks/{namespace}/{pod}",
        ),
    };
    Ok(resp)
}

async fn identify(svc: &PushService, req: &Request<Incoming>) -> Result<Identity, Response<Body>> {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let result = match token {
        Some(t) => svc.auth.authenticate(t).await,
        None => Err(AuthError::Missing),
    };
    result.map_err(|e| refuse(svc, &e))
}

fn refuse(svc: &PushService, e: &AuthError) -> Response<Body> {
    svc.metrics.auth_failed(e.reason());
    tracing::warn!(error = %e, "sidecar request refused");
    let status = match e {
        AuthError::Missing | AuthError::Refused(_) => StatusCode::UNAUTHORIZED,
        AuthError::Forbidden(_) => StatusCode::FORBIDDEN,
        AuthError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
    };
    error(status, &e.to_string())
}

/// Whether the sidecar named `feature` among the stream features it
/// understands.
fn understands(req: &Request<Incoming>, feature: &str) -> bool {
    req.headers()
        .get_all(STREAM_FEATURES_HEADER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|f| f.trim().eq_ignore_ascii_case(feature))
}

async fn snapshots(
    svc: &Arc<PushService>,
    req: &Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    // A snapshot built from half a list would take rules away (or leave
    // out a policy's cap); the sidecar keeps what it enforces and retries.
    if let Err(why) = svc.synced.check() {
        tracing::debug!(pod = %format!("{ns}/{pod}"), %why, "sidecar asked before the index was complete");
        let mut resp = error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("the controller is not ready to serve snapshots: {why}"),
        );
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return resp;
    }
    let who = match identify(svc, req).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let subscription = svc
        .index
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .subscribe(ns, pod);
    let Some(sub) = subscription else {
        return error(
            StatusCode::NOT_FOUND,
            &format!(
                "pod {ns}/{pod} is not known to the controller yet: it must exist and carry the label {SIDECAR_LABEL}=true"
            ),
        );
    };
    if let Err(e) = authorize(&who, ns, pod, &sub.uid) {
        return refuse(svc, &e);
    }
    tracing::info!(pod = %format!("{ns}/{pod}"), "sidecar connected");
    let stream = SnapshotStream {
        pod: format!("{ns}/{pod}"),
        rx: sub.rx,
        cluster: svc.cluster.clone(),
        sent: StateSender::new(understands(req, FEATURE_STATE_FRESH)),
        heartbeat: tokio::time::interval(svc.heartbeat),
        first: true,
        queued: None,
        guard: Connected::new(svc.metrics.clone()),
    };
    let frames = futures_util::stream::unfold(stream, |mut s| async move {
        let bytes = s.next().await?;
        Some((Ok::<_, BoxError>(Frame::data(bytes)), s))
    });
    let mut resp = Response::new(StreamBody::new(frames).boxed_unsync());
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

async fn ack(
    svc: &Arc<PushService>,
    req: Request<Incoming>,
    ns: &str,
    pod: &str,
) -> Response<Body> {
    let who = match identify(svc, &req).await {
        Ok(w) => w,
        Err(resp) => return resp,
    };
    let current = {
        let index = svc.index.lock().unwrap_or_else(|e| e.into_inner());
        index
            .subscribe(ns, pod)
            .map(|s| (s.uid, s.rx.borrow().clone()))
    };
    let Some((uid, published)) = current else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("pod {ns}/{pod} is not known to the controller"),
        );
    };
    if let Err(e) = authorize(&who, ns, pod, &uid) {
        return refuse(svc, &e);
    }
    let bytes = match body::read(req.into_body(), MAX_ACK_BYTES, Duration::from_secs(10)).await {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    let Ok(ack) = serde_json::from_slice::<Ack>(&bytes) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the body must be {\"version\": \"...\"}",
        );
    };
    let first = svc.acks.record(
        (ns.to_owned(), pod.to_owned()),
        &uid,
        &ack.version,
        ack.would_deny,
    );
    // A repeated ack (new would-be denial counts) is not a new delivery.
    let delivered =
        (first && ack.version == published.snapshot.version).then(|| published.at.elapsed());
    svc.metrics.acked(delivered);
    tracing::debug!(pod = %format!("{ns}/{pod}"), version = %ack.version, "sidecar acknowledged");
    body::status(StatusCode::NO_CONTENT)
}

struct SnapshotStream {
    /// `namespace/name`, for the push span.
    pod: String,
    rx: watch::Receiver<Arc<Published>>,
    cluster: watch::Receiver<Arc<ClusterState>>,
    /// What this stream's sidecar was sent of the cluster state.
    sent: StateSender,
    heartbeat: tokio::time::Interval,
    first: bool,
    queued: Option<Bytes>,
    guard: Connected,
}

impl SnapshotStream {
    /// The next event, or `None` when the pod is gone.
    async fn next(&mut self) -> Option<Bytes> {
        if self.first {
            self.first = false;
            // The interval's first tick is immediate; skip it.
            self.heartbeat.tick().await;
            if !self.cluster.borrow().report().observed_at.is_empty() {
                self.queued = Some(self.state());
            }
            return Some(self.snapshot());
        }
        if let Some(queued) = self.queued.take() {
            return Some(queued);
        }
        tokio::select! {
            changed = self.rx.changed() => changed.ok().map(|()| self.snapshot()),
            Ok(()) = self.cluster.changed() => Some(self.state()),
            _ = self.heartbeat.tick() => {
                let version = self.rx.borrow().snapshot.version.clone();
                let data = serde_json::to_string(&Heartbeat { version }).unwrap_or_default();
                Some(sse::encode(Some(HEARTBEAT_EVENT), None, &data))
            }
        }
    }

    fn state(&mut self) -> Bytes {
        let state = self.cluster.borrow_and_update().clone();
        self.sent.event(&state)
    }

    fn snapshot(&mut self) -> Bytes {
        let published = self.rx.borrow_and_update().clone();
        let data = serde_json::to_string(&published.snapshot).unwrap_or_default();
        let metrics = &self.guard.metrics;
        let waited = published.at.elapsed();
        metrics.snapshot_sent(waited);
        crate::traces::pushed(&self.pod, &published.snapshot.version, waited);
        sse::encode(
            Some(SNAPSHOT_EVENT),
            Some(&published.snapshot.version),
            &data,
        )
    }
}

/// Counts a connected sidecar for as long as its stream lives.
struct Connected {
    metrics: ControllerMetrics,
    since: Instant,
}

impl Connected {
    fn new(metrics: ControllerMetrics) -> Self {
        metrics.stream_opened();
        Connected {
            metrics,
            since: Instant::now(),
        }
    }
}

impl Drop for Connected {
    fn drop(&mut self) {
        self.metrics.stream_closed();
        tracing::debug!(connected_for = ?self.since.elapsed(), "sidecar stream closed");
    }
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    body::json(status, &json!({ "error": message }))
}
