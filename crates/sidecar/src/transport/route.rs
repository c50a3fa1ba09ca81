//! Routing one client request: identify the caller, then hand it to the
//! POST handler (client messages) or the GET/DELETE handler (server streams
//! and session ends). Every other method is refused, since it could carry a
//! message past the decision.

use std::convert::Infallible;
use std::sync::Arc;

use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::Value;

use tollgate_mcp::jsonrpc;

use super::{get, post};
use crate::identity::IdentityError;
use crate::metrics::Rejection;
use crate::proxy::Proxy;
use tollgate_runtime::body::{self, Body};

/// Routes one client request.
pub(crate) async fn route(
    proxy: Arc<Proxy>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, incoming) = req.into_parts();
    // A CORS preflight carries no credentials; everything else is
    // identified before it goes anywhere.
    let subject = if parts.method == Method::OPTIONS {
        None
    } else {
        match proxy.identify(&parts.headers).await {
            Ok(subject) => subject,
            Err(e) => return Ok(identity_refused(&proxy, &e)),
        }
    };
    let resp = match parts.method {
        Method::POST => post::handle(&proxy, parts, incoming, subject).await,
        Method::GET | Method::DELETE | Method::HEAD | Method::OPTIONS => {
            get::handle(&proxy, parts, subject.as_deref()).await
        }
        _ => {
            // Any other method could carry a message past the decision.
            proxy.metrics().reject(Rejection::Method);
            let mut resp = body::json(
                StatusCode::METHOD_NOT_ALLOWED,
                &jsonrpc::error_response(
                    &Value::Null,
                    jsonrpc::INVALID_REQUEST,
                    "MCP uses POST, GET and DELETE",
                    None,
                ),
            );
            resp.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, POST, DELETE, HEAD, OPTIONS"),
            );
            resp
        }
    };
    Ok(resp)
}

/// A request whose caller could not be identified: 401 for a missing or
/// refused token (RFC 6750), 503 while the verifier cannot be asked.
fn identity_refused(proxy: &Proxy, e: &IdentityError) -> Response<Body> {
    proxy.metrics().identity_failed(e.reason());
    tracing::info!(reason = %e.reason(), error = %e, "request refused: caller not identified");
    let (status, challenge) = match e {
        IdentityError::Missing => (StatusCode::UNAUTHORIZED, "Bearer"),
        IdentityError::Invalid(_) => (StatusCode::UNAUTHORIZED, "Bearer error=\"invalid_token\""),
        IdentityError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ""),
    };
    let mut resp = body::json(
        status,
        &jsonrpc::error_response(
            &Value::Null,
            jsonrpc::IDENTITY_REFUSED,
            &e.to_string(),
            None,
        ),
    );
    let headers = resp.headers_mut();
    if challenge.is_empty() {
        headers.insert(
            http::header::RETRY_AFTER,
            http::HeaderValue::from_static("1"),
        );
    } else {
        headers.insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static(challenge),
        );
    }
    resp
}
