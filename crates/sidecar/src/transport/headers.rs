//! Which headers cross the proxy.
//!
//! Hop-by-hop headers belong to one connection and never cross. The proxy
//! also drops `Accept-Encoding` on the way up: it must be able to read the
//! responses it filters, and compression buys nothing on loopback.

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName};
use http::{Method, Request, Uri};
use http_body_util::Full;

const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including those named in `Connection`.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named = connection_named(headers);
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers.remove("keep-alive");
    headers.remove("proxy-connection");
}

/// Headers a `Connection` header names as hop-by-hop (usually none).
fn connection_named(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect()
}

/// The request the upstream gets for a client request: the client's
/// headers minus hop-by-hop ones, `Host` (the upstream's own is set from the
/// URI), `Content-Length` (the body is the proxy's re-serialisation) and
/// `Accept-Encoding`. Built by copying what passes rather than cloning and
/// pruning: this runs on every call.
pub(crate) fn upstream_request(
    method: Method,
    uri: Uri,
    client: &HeaderMap,
    body: Bytes,
) -> Request<Full<Bytes>> {
    let named = connection_named(client);
    let mut headers = HeaderMap::with_capacity(client.len());
    for (name, value) in client {
        let dropped = HOP_BY_HOP.contains(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::ACCEPT_ENCODING
            || name.as_str() == "keep-alive"
            || name.as_str() == "proxy-connection"
            || named.contains(name);
        if !dropped {
            headers.append(name.clone(), value.clone());
        }
    }
    let mut req = Request::new(Full::new(body));
    *req.method_mut() = method;
    *req.uri_mut() = uri;
    *req.headers_mut() = headers;
    req
}

/// Whether a `Content-Type` value is JSON in UTF-8 (the only encoding MCP
/// uses; any other charset could be read differently upstream).
pub(crate) fn is_json_utf8(value: &str) -> bool {
    let mut parts = value.split(';').map(str::trim);
    let media = parts.next().unwrap_or("");
    if !media.eq_ignore_ascii_case("application/json") {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
        }
        Some(_) => true,
        None => p.is_empty(),
    })
}

/// Whether a response `Content-Type` is an SSE stream.
pub(crate) fn is_event_stream(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m.eq_ignore_ascii_case("text/event-stream"))
}

/// Whether a response `Content-Type` is JSON.
pub(crate) fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m.eq_ignore_ascii_case("application/json"))
}

fn media_type(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(v.split(';').next().unwrap_or("").trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            "application/json;charset=\"UTF-8\"",
        ] {
            assert!(is_json_utf8(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/json; charset=utf-16",
            "application/json; charset=latin1",
            "application/jsonx",
            "",
        ] {
            assert!(!is_json_utf8(bad), "{bad}");
        }
    }

    #[test]
    fn hop_by_hop_headers_and_those_named_in_connection_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret-hop".parse().unwrap(),
        );
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("mcp-session-id", "abc".parse().unwrap());
        let upstream = upstream_request(
            Method::POST,
            Uri::from_static("http://up/mcp"),
            &h,
            Bytes::new(),
        );
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("mcp-session-id"));
        assert_eq!(
            upstream.headers(),
            &h,
            "requests and responses drop the same"
        );
    }

    #[test]
    fn upstream_requests_keep_end_to_end_headers_in_order() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "proxy:8080".parse().unwrap());
        h.insert(header::CONTENT_LENGTH, "12".parse().unwrap());
        h.insert(header::ACCEPT_ENCODING, "gzip".parse().unwrap());
        h.append("x-multi", "a".parse().unwrap());
        h.append("x-multi", "b".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer t".parse().unwrap());
        let req = upstream_request(
            Method::POST,
            Uri::from_static("http://up/mcp"),
            &h,
            Bytes::new(),
        );
        let names: Vec<&str> = req.headers().keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-multi", "authorization"]);
        let multi: Vec<&str> = req
            .headers()
            .get_all("x-multi")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect();
        assert_eq!(multi, ["a", "b"]);
    }
}
