//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! Kept apart from the agents' (or sidecars') listener so probes and scrapes
//! never share a port, or a NetworkPolicy, with the traffic they watch. The
//! sidecar and the controller serve the same three routes and differ only in
//! what "ready" means, which each says through [`AdminState`].

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::body::{self, Body};

/// Whether a process can take traffic, and a line that says why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Ready; the text says with what (e.g. the rules' version).
    Ready(String),
    /// Not ready; the text says what is missing.
    NotReady(String),
}

/// What one process reports on its admin listener.
pub trait AdminState: Send + Sync + 'static {
    /// Every metric, in the Prometheus text format.
    fn metrics(&self) -> Vec<u8>;
    /// Whether `/readyz` answers 200.
    fn readiness(&self) -> Readiness;
}

/// Answers one admin request.
pub async fn route<A: AdminState + ?Sized>(
    state: Arc<A>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(body::full(state.metrics()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n".into()),
        "/readyz" => match state.readiness() {
            Readiness::Ready(detail) => text(StatusCode::OK, format!("ok: {detail}\n")),
            Readiness::NotReady(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            "try /metrics, /healthz or /readyz\n".into(),
        ),
    };
    Ok(resp)
}

fn text(status: StatusCode, s: String) -> Response<Body> {
    let mut resp = Response::new(body::full(s));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
