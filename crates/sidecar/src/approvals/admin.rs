//! The approval routes of the sidecar's admin listener (file mode):
//!
//! - `GET /approvals`: every approval kept, newest first;
//! - `GET /approvals/{id}`: one;
//! - `POST /approvals/{id}/approve` and `/reject` with
//!   `{"by": NAME, "groups": [..], "reason": TEXT}`: a person's decision.
//!
//! Served only when the admin listener is bound to loopback, or with
//! `--approvals-remote`: whoever reaches these routes decides.

use std::time::Duration;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::{Value, json};

use tollgate_runtime::body::{self, Body};

use super::Approvals;
use super::store::{DecideError, Verdict};

/// The path prefix of these routes.
pub(crate) const PREFIX: &str = "/approvals";
/// The largest decision body read.
const MAX_BODY: usize = 16 << 10;

/// A person's decision as posted.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    by: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    reason: Option<String>,
}

/// Answers one request under [`PREFIX`].
pub(crate) async fn route(approvals: &Approvals, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().trim_end_matches('/').to_owned();
    let rest = path.strip_prefix(PREFIX).unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    match (req.method(), parts.as_slice()) {
        (&Method::GET, []) => body::json(StatusCode::OK, &json!({ "approvals": approvals.list() })),
        (&Method::GET, [id]) => match approvals.get(id) {
            Some(r) => body::json(StatusCode::OK, &json!(r)),
            None => problem(
                StatusCode::NOT_FOUND,
                &DecideError::NotFound((*id).to_owned()).to_string(),
            ),
        },
        (&Method::POST, [id, action @ ("approve" | "reject")]) => {
            let verdict = if *action == "approve" {
                Verdict::Approve
            } else {
                Verdict::Reject
            };
            let id = (*id).to_owned();
            let bytes = match body::read(req.into_body(), MAX_BODY, Duration::from_secs(10)).await {
                Ok(b) => b,
                Err(e) => return problem(StatusCode::BAD_REQUEST, &e.to_string()),
            };
            let decision: Decision = match serde_json::from_slice(&bytes) {
                Ok(d) => d,
                Err(e) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        &format!(
                            "the body must be {{\"by\": NAME, \"groups\": [..], \"reason\": TEXT}}: {e}"
                        ),
                    );
                }
            };
            match approvals.decide(
                &id,
                &decision.by,
                &decision.groups,
                verdict,
                decision.reason,
            ) {
                Ok(d) => body::json(StatusCode::OK, &json!(d.record)),
                Err(e) => problem(status_of(&e), &e.to_string()),
            }
        }
        _ => problem(
            StatusCode::NOT_FOUND,
            "try GET /approvals, GET /approvals/ID, POST /approvals/ID/approve or POST /approvals/ID/reject",
        ),
    }
}

/// The admin listener with these routes: approvals (when `serve`d here),
/// else metrics and probes of `state`.
pub(crate) async fn route_or<A: tollgate_runtime::admin::AdminState + ?Sized>(
    state: std::sync::Arc<A>,
    approvals: std::sync::Arc<Approvals>,
    serve: bool,
    req: Request<Incoming>,
) -> Result<Response<Body>, std::convert::Infallible> {
    if !req.uri().path().starts_with(PREFIX) {
        return tollgate_runtime::admin::route(state, req).await;
    }
    Ok(if serve {
        route(&approvals, req).await
    } else {
        not_served()
    })
}

/// The answer when these routes are not served on this listener.
fn not_served() -> Response<Body> {
    problem(
        StatusCode::FORBIDDEN,
        "approvals are decided on a loopback admin listener only; bind --admin-listen to 127.0.0.1 or pass --approvals-remote",
    )
}

fn status_of(e: &DecideError) -> StatusCode {
    match e {
        DecideError::NotFound(_) => StatusCode::NOT_FOUND,
        DecideError::Final { .. } | DecideError::Approved(_) | DecideError::Twice { .. } => {
            StatusCode::CONFLICT
        }
        DecideError::SelfApproval { .. } | DecideError::NotAnApprover { .. } => {
            StatusCode::FORBIDDEN
        }
        DecideError::NoName => StatusCode::BAD_REQUEST,
    }
}

fn problem(status: StatusCode, message: &str) -> Response<Body> {
    body::json(status, &json!({ "error": message }) as &Value)
}
