//! Response bodies and bounded request-body reading.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full, Limited, combinators::UnsyncBoxBody};
use hyper::body::Incoming;
use serde_json::Value;

use crate::slots::Slot;

/// Errors inside response bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every response body the proxy produces.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// A complete body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// No body.
pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// An upstream body passed through as it streams.
pub fn stream<B>(upstream: B) -> Body
where
    B: hyper::body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    upstream.map_err(Into::into).boxed_unsync()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_default();
    let mut resp = Response::new(full(bytes));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// A response with no body.
pub fn status(status: StatusCode) -> Response<Body> {
    let mut resp = Response::new(empty());
    *resp.status_mut() = status;
    resp
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// Longer than allowed.
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    /// Not finished in time.
    #[error("the request body was not received within {0:?}")]
    Timeout(Duration),
    /// The connection failed mid-body.
    #[error("the request body could not be read: {0}")]
    Io(#[source] BoxError),
}

/// Reads a whole request body like [`read`]; while it arrives, a stalled
/// sender's connection may be reclaimed for another client (see
/// [`crate::slots`]).
pub async fn read_request(
    parts: &http::request::Parts,
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, ReadError> {
    let _receiving = parts.extensions.get::<Slot>().map(Slot::receiving);
    read(body, limit, timeout).await
}

/// Reads a whole body, at most `limit` bytes, within `timeout`.
pub async fn read<B>(body: B, limit: usize, timeout: Duration) -> Result<Bytes, ReadError>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let collect = Limited::new(body, limit).collect();
    match tokio::time::timeout(timeout, collect).await {
        Err(_) => Err(ReadError::Timeout(timeout)),
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(ReadError::TooLarge(limit)),
        Ok(Err(e)) => Err(ReadError::Io(e)),
    }
}
