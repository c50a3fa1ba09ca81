//! The admin listener: `/metrics`, `/healthz`, `/readyz`.
//!
//! Kept apart from the MCP listener so probes and scrapes never share a
//! port (or a NetworkPolicy) with agents.

use std::convert::Infallible;
use std::sync::Arc;

use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use super::Proxy;
use super::body::{self, Body};

/// Answers one admin request.
pub async fn route(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let resp = match req.uri().path() {
        "/metrics" => {
            let mut resp = Response::new(body::full(proxy.gate.metrics.encode()));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            resp
        }
        "/healthz" => text(StatusCode::OK, "ok\n"),
        "/readyz" => match proxy.gate.store.current() {
            Some(rules) => text(
                StatusCode::OK,
                &format!("ok: rules {}\n", rules.set.version()),
            ),
            None if proxy.gate.fail_open => {
                text(StatusCode::OK, "ok: no rules yet, failing open\n")
            }
            None => text(
                StatusCode::SERVICE_UNAVAILABLE,
                "not ready: no rules received from the controller yet\n",
            ),
        },
        _ => text(StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n"),
    };
    Ok(resp)
}

fn text(status: StatusCode, s: &str) -> Response<Body> {
    let mut resp = Response::new(body::full(s.to_owned()));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
