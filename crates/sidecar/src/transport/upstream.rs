//! The connection to the MCP server behind the proxy.

use std::time::Duration;

use bytes::Bytes;
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

pub(crate) use super::connections::source_text;
use super::connections::{Cause, Connections, SendError, UpstreamBody};

use crate::metrics::UpstreamFailure;

/// Why the upstream did not answer.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Nothing accepted the connection (the server is down or starting).
    /// Messages show the whole chain of causes: hyper's own words alone
    /// ("client error (Connect)") name none.
    #[error("cannot connect to the MCP server at {uri}: {source}")]
    Connect {
        /// The upstream.
        uri: Uri,
        /// Why.
        source: Cause,
    },
    /// It accepted but did not start answering in time.
    #[error("the MCP server did not answer within {0:?}")]
    Timeout(Duration),
    /// The exchange broke.
    #[error("the MCP server's response failed: {0}")]
    Protocol(#[source] Cause),
}

impl UpstreamError {
    /// The metric label value.
    pub(crate) fn kind(&self) -> UpstreamFailure {
        match self {
            UpstreamError::Connect { .. } => UpstreamFailure::Connect,
            UpstreamError::Timeout(_) => UpstreamFailure::Timeout,
            UpstreamError::Protocol(_) => UpstreamFailure::Protocol,
        }
    }
}

/// An upstream URL the proxy cannot use.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamUrlError {
    /// Only plain HTTP to a host (the MCP server in the same pod).
    #[error(
        "upstream {0} must be an http:// URL with a host, e.g. http://127.0.0.1:8080 (the MCP server in the same pod)"
    )]
    NotHttp(Uri),
}

/// The HTTP client for one upstream base URL.
#[derive(Clone)]
pub(crate) struct Upstream {
    client: Clients,
    base: Uri,
    response_timeout: Duration,
}

/// Over TCP, or to stdio servers run by this process.
#[derive(Clone)]
enum Clients {
    Tcp(std::sync::Arc<Connections>),
    Stdio(Box<Client<crate::stdio::bridge::Connector, Full<Bytes>>>),
}

impl Upstream {
    /// A client for `base` (`http://host:port[/prefix]`).
    pub(crate) fn new(
        base: Uri,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self, UpstreamUrlError> {
        if base.scheme() != Some(&Scheme::HTTP) || base.authority().is_none() {
            return Err(UpstreamUrlError::NotHttp(base));
        }
        let Some(authority) = base.authority().cloned() else {
            return Err(UpstreamUrlError::NotHttp(base));
        };
        let authority = match authority.port() {
            Some(_) => authority,
            // http:// without a port: 80, as the URL means.
            None => format!("{}:80", authority.host())
                .parse()
                .unwrap_or(authority),
        };
        Ok(Upstream {
            client: Clients::Tcp(Connections::new(authority, connect_timeout)),
            base,
            response_timeout,
        })
    }

    /// A client for stdio servers behind `connector` (`--upstream-command`).
    pub(crate) fn stdio(
        connector: crate::stdio::bridge::Connector,
        response_timeout: Duration,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .build(connector);
        Upstream {
            client: Clients::Stdio(Box::new(client)),
            base: Uri::from_static("http://stdio.tollgate"),
            response_timeout,
        }
    }

    /// The upstream URL for a client request's path and query.
    ///
    /// The upstream's path is a prefix (`--upstream http://h:1/api`: `/mcp`
    /// goes to `/api/mcp`), unless the client's path already lies under it:
    /// `--upstream http://h:1/mcp`, written the way MCP clients write the
    /// endpoint, sends `/mcp` to `/mcp`, not `/mcp/mcp`.
    pub(crate) fn uri_for(&self, path_and_query: Option<&PathAndQuery>) -> Uri {
        let prefix = self.base.path().trim_end_matches('/');
        let mut parts = self.base.clone().into_parts();
        let under_prefix = |pq: &PathAndQuery| {
            pq.path()
                .strip_prefix(prefix)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        };
        parts.path_and_query = match path_and_query {
            // The common case, on every call: no prefix to add, and the
            // client's path and query were validated when the request was
            // parsed, so they are reused rather than formatted and re-parsed.
            Some(pq) if prefix.is_empty() || under_prefix(pq) => Some(pq.clone()),
            pq => format!("{prefix}{}", pq.map_or("/", PathAndQuery::as_str))
                .parse()
                .ok(),
        };
        Uri::from_parts(parts).unwrap_or_else(|_| self.base.clone())
    }

    /// Sends a request and waits for the response head.
    pub(crate) async fn send(
        &self,
        req: Request<Full<Bytes>>,
    ) -> Result<Response<UpstreamBody>, UpstreamError> {
        let timeout = self.response_timeout;
        let sent = match &self.client {
            Clients::Tcp(c) => tokio::time::timeout(timeout, c.send(req)).await,
            Clients::Stdio(c) => {
                tokio::time::timeout(timeout, async {
                    match c.request(req).await {
                        Ok(resp) => Ok(resp.map(UpstreamBody::unmanaged)),
                        Err(e) if e.is_connect() => Err(SendError::Connect(e.into())),
                        Err(e) => Err(SendError::Exchange(e.into())),
                    }
                })
                .await
            }
        };
        match sent {
            Err(_) => Err(UpstreamError::Timeout(timeout)),
            Ok(Ok(resp)) => Ok(resp),
            Ok(Err(SendError::Connect(source))) => Err(UpstreamError::Connect {
                uri: self.base.clone(),
                source,
            }),
            Ok(Err(SendError::Exchange(e))) => Err(UpstreamError::Protocol(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(base: &str, pq: Option<&str>) -> String {
        let up = Upstream::new(
            base.parse().unwrap(),
            Duration::from_secs(1),
            Duration::from_secs(1),
        )
        .unwrap();
        let pq: Option<PathAndQuery> = pq.map(|p| p.parse().unwrap());
        up.uri_for(pq.as_ref()).to_string()
    }

    #[test]
    fn request_paths_go_under_the_upstream_prefix() {
        assert_eq!(
            uri("http://127.0.0.1:8081", Some("/mcp?x=1")),
            "http://127.0.0.1:8081/mcp?x=1"
        );
        assert_eq!(
            uri("http://127.0.0.1:8081/", Some("/mcp")),
            "http://127.0.0.1:8081/mcp"
        );
        assert_eq!(
            uri("http://h:1/api/", Some("/mcp?s=a%20b")),
            "http://h:1/api/mcp?s=a%20b"
        );
        assert_eq!(uri("http://h:1/api", None), "http://h:1/api/");
        assert_eq!(uri("http://h:1", None), "http://h:1/");
    }

    #[test]
    fn an_endpoint_url_as_mcp_clients_write_it_is_not_prefixed_again() {
        for base in ["http://h:1/mcp", "http://h:1/mcp/"] {
            assert_eq!(uri(base, Some("/mcp")), "http://h:1/mcp");
            assert_eq!(uri(base, Some("/mcp?x=1")), "http://h:1/mcp?x=1");
            assert_eq!(
                uri(base, Some("/mcp/message?s=1")),
                "http://h:1/mcp/message?s=1"
            );
        }
        // A path that only starts with the same letters is still prefixed.
        assert_eq!(uri("http://h:1/mcp", Some("/mcpx")), "http://h:1/mcp/mcpx");
        assert_eq!(
            uri("http://h:1/api", Some("/api/mcp")),
            "http://h:1/api/mcp"
        );
    }

    #[test]
    fn only_http_upstreams_with_a_host() {
        for bad in ["https://h:1", "/mcp", "ftp://h"] {
            assert!(
                Upstream::new(
                    bad.parse().unwrap(),
                    Duration::from_secs(1),
                    Duration::from_secs(1)
                )
                .is_err(),
                "{bad}"
            );
        }
    }
}
