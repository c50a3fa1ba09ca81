//! Fetching the key set that signs agents' JWTs over HTTPS: from
//! `--jwks-url`, or discovered from the issuer the way OpenID Connect
//! clients do (`{iss}/.well-known/openid-configuration` → `jwks_uri`).
//!
//! Identity providers rotate signing keys on their own schedule and publish
//! the new set at the same URL, so a sidecar that read its keys once would
//! start refusing every agent on the day of the rotation. The verifier
//! (`identity.rs`) stays pure; this module only moves bytes, and
//! [`watch`] decides when: at start, every `refresh`, and soon after a token
//! names a key the set does not have yet.
//!
//! HTTPS only (a JWKS fetched over plain HTTP could be swapped by anyone on
//! the path, and with it every identity); public roots are built in, a
//! private IdP CA comes from `--jwks-ca-file`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::RootCertStore;
use tokio::sync::{Notify, watch as shutdown_watch};

use crate::identity::{JwksReload, JwtVerifier};
use crate::transport::upstream::source_text;

/// Largest JWKS or discovery document accepted.
const MAX_BYTES: usize = 1 << 20;
/// After a failed fetch, the next try comes this soon.
const RETRY: Duration = Duration::from_secs(10);
/// An unknown `kid` triggers a fetch at most this often (an attacker
/// sending made-up key ids must not turn the sidecar into a load generator
/// against the identity provider).
const UNKNOWN_KID_MIN_INTERVAL: Duration = Duration::from_secs(30);

/// A JWKS location or CA file that cannot be used, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum FetcherError {
    /// `--jwks-ca-file` cannot be read.
    #[error("cannot read --jwks-ca-file {}: {source}", path.display())]
    ReadCa {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// `--jwks-ca-file` holds bad PEM or an unusable certificate.
    #[error("--jwks-ca-file {}: {problem}", path.display())]
    BadCa {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        problem: crate::tls::BadRoots,
    },
    /// TLS could not be set up (a bug in the crypto provider's settings).
    #[error("TLS setup for the JWKS: {0}")]
    Tls(#[from] rustls::Error),
    /// The URL is not an https:// URL.
    #[error(transparent)]
    Url(#[from] UrlError),
}

/// A URL that keys must not be fetched from.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Not a URL at all.
    #[error("{what} {url:?} is not a URL: {source}")]
    Invalid {
        /// The flag or field that named it.
        what: &'static str,
        /// The text.
        url: String,
        /// Why.
        source: http::uri::InvalidUri,
    },
    /// Not https://.
    #[error(
        "{what} {url:?} must be an https:// URL: keys fetched over plain HTTP could be replaced on the way"
    )]
    NotHttps {
        /// The flag or field that named it.
        what: &'static str,
        /// The text.
        url: String,
    },
}

/// Why one fetch of the keys failed; the previous keys stay in force.
#[derive(Debug, thiserror::Error)]
pub(crate) enum FetchError {
    /// The discovery document is not JSON.
    #[error("{url} is not an OpenID configuration: {source}")]
    NotDiscovery {
        /// Where it was read.
        url: String,
        /// Why.
        source: serde_json::Error,
    },
    /// The discovery document speaks for another issuer.
    #[error("{url} names issuer {named}, not {expected:?}")]
    OtherIssuer {
        /// Where it was read.
        url: String,
        /// The `issuer` it names (JSON, `null` if none).
        named: serde_json::Value,
        /// The configured issuer.
        expected: String,
    },
    /// The discovery document names no key set.
    #[error("{url} has no jwks_uri")]
    NoJwksUri {
        /// Where it was read.
        url: String,
    },
    /// A URL named by the discovery document is unusable.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// The request could not be made.
    #[error("GET {uri}: {source}")]
    Request {
        /// What was fetched.
        uri: Uri,
        /// Why.
        source: http::Error,
    },
    /// The identity provider could not be reached (the whole chain of
    /// causes is shown: hyper's own words alone name none).
    #[error("GET {uri}: {}", source_text(.source))]
    Send {
        /// What was fetched.
        uri: Uri,
        /// Why.
        source: hyper_util::client::legacy::Error,
    },
    /// It answered with an error status.
    #[error("GET {uri}: HTTP {status}")]
    Status {
        /// What was fetched.
        uri: Uri,
        /// The status.
        status: http::StatusCode,
    },
    /// The body could not be read, or is larger than [`MAX_BYTES`].
    #[error("GET {uri}: {source} (at most {MAX_BYTES} bytes)")]
    Body {
        /// What was fetched.
        uri: Uri,
        /// Why.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// No answer in time.
    #[error("GET {uri}: no answer within {timeout:?}")]
    Timeout {
        /// What was fetched.
        uri: Uri,
        /// How long it had.
        timeout: Duration,
    },
}

/// Where the keys come from.
#[derive(Clone, Debug)]
pub(crate) enum Location {
    /// A JWKS URL (checked to be https:// by [`Fetcher::new`]).
    Url(String),
    /// The issuer's OpenID configuration names it.
    Discovered {
        /// The `iss` value, e.g. `https://idp.example/realms/agents`.
        issuer: String,
    },
}

/// Fetches a JWKS over HTTPS.
pub(crate) struct Fetcher {
    client: Client<HttpsConnector<HttpConnector>, Empty<Bytes>>,
    location: Location,
    timeout: Duration,
}

impl Fetcher {
    /// A fetcher trusting the public roots, or only the CAs in `ca_file`.
    pub(crate) fn new(location: Location, ca_file: Option<&Path>) -> Result<Self, FetcherError> {
        let roots = match ca_file {
            Some(path) => {
                let pem = std::fs::read(path).map_err(|source| FetcherError::ReadCa {
                    path: path.to_owned(),
                    source,
                })?;
                crate::tls::roots(&pem).map_err(|problem| FetcherError::BadCa {
                    path: path.to_owned(),
                    problem,
                })?
            }
            None => RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        };
        let tls = crate::tls::client_config(roots)?;
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let location = match location {
            Location::Url(url) => {
                https(&url, "--jwks-url")?;
                Location::Url(url)
            }
            Location::Discovered { issuer } => {
                https(&issuer, "--jwt-issuer")?;
                Location::Discovered { issuer }
            }
        };
        Ok(Fetcher {
            client: Client::builder(TokioExecutor::new()).build(connector),
            location,
            timeout: Duration::from_secs(5),
        })
    }

    /// Where the keys are read from, for logs.
    pub(crate) fn describe(&self) -> String {
        match &self.location {
            Location::Url(url) => url.clone(),
            Location::Discovered { issuer } => format!("{issuer} (OpenID discovery)"),
        }
    }

    /// The JWKS document, as bytes for [`JwtVerifier::install`].
    pub(crate) async fn fetch(&self) -> Result<Bytes, FetchError> {
        let jwks_uri = match &self.location {
            Location::Url(url) => https(url, "--jwks-url")?,
            Location::Discovered { issuer } => self.discover(issuer).await?,
        };
        self.get(&jwks_uri).await
    }

    /// `jwks_uri` from the issuer's OpenID configuration, whose `issuer`
    /// must be the configured one (OpenID Connect Discovery §4.3: otherwise
    /// a document from elsewhere could name its own keys).
    async fn discover(&self, issuer: &str) -> Result<Uri, FetchError> {
        let url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let doc = self.get(&https(&url, "--jwt-issuer")?).await?;
        let doc: serde_json::Value = match serde_json::from_slice(&doc) {
            Ok(doc) => doc,
            Err(source) => return Err(FetchError::NotDiscovery { url, source }),
        };
        if doc.get("issuer").and_then(|i| i.as_str()) != Some(issuer) {
            return Err(FetchError::OtherIssuer {
                named: doc.get("issuer").cloned().unwrap_or_default(),
                expected: issuer.to_owned(),
                url,
            });
        }
        let jwks_uri = doc
            .get("jwks_uri")
            .and_then(|u| u.as_str())
            .ok_or_else(|| FetchError::NoJwksUri { url: url.clone() })?;
        Ok(https(jwks_uri, "jwks_uri")?)
    }

    async fn get(&self, uri: &Uri) -> Result<Bytes, FetchError> {
        let request = http::Request::get(uri.clone())
            .header(http::header::ACCEPT, "application/json")
            .header(http::header::USER_AGENT, "tollgate")
            .body(Empty::new())
            .map_err(|source| FetchError::Request {
                uri: uri.clone(),
                source,
            })?;
        tokio::time::timeout(self.timeout, async {
            let response =
                self.client
                    .request(request)
                    .await
                    .map_err(|source| FetchError::Send {
                        uri: uri.clone(),
                        source,
                    })?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status {
                    uri: uri.clone(),
                    status,
                });
            }
            Limited::new(response.into_body(), MAX_BYTES)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .map_err(|source| FetchError::Body {
                    uri: uri.clone(),
                    source,
                })
        })
        .await
        .map_err(|_| FetchError::Timeout {
            uri: uri.clone(),
            timeout: self.timeout,
        })?
    }
}

/// `url` parsed, if it is an https URL with a host.
fn https(url: &str, what: &'static str) -> Result<Uri, UrlError> {
    let uri: Uri = url.parse().map_err(|source| UrlError::Invalid {
        what,
        url: url.to_owned(),
        source,
    })?;
    if uri.scheme_str() != Some("https") || uri.host().is_none() {
        return Err(UrlError::NotHttps {
            what,
            url: url.to_owned(),
        });
    }
    Ok(uri)
}

/// Keeps `verifier`'s keys current from `fetcher`: now, every `refresh`,
/// after a failure every 10 s, and when a token names an unknown key
/// (`wanted`, at most every 30 s). A failure keeps the keys in force, is
/// logged once per distinct problem and raises `failing`.
pub(crate) async fn watch(
    verifier: Arc<JwtVerifier>,
    fetcher: Fetcher,
    refresh: Duration,
    wanted: Arc<Notify>,
    failing: prometheus::IntGauge,
    mut shutdown: shutdown_watch::Receiver<bool>,
) {
    let source = fetcher.describe();
    let mut last_problem: Option<String> = None;
    loop {
        // Attempts, not successes, pace the unknown-kid trigger: a stream
        // of made-up key ids during an IdP outage must not become a stream
        // of requests to it.
        let attempted = Instant::now();
        let wait = match fetcher.fetch().await {
            Ok(bytes) => match verifier.install(&bytes, &source) {
                JwksReload::Replaced(keys) => {
                    failing.set(0);
                    last_problem = None;
                    tracing::info!(%source, keys, "JWKS fetched: new keys in force");
                    refresh
                }
                JwksReload::Unchanged => {
                    failing.set(0);
                    last_problem = None;
                    refresh
                }
                JwksReload::Refused(problem) => {
                    let problem = problem.to_string();
                    failing.set(1);
                    if last_problem.as_deref() != Some(problem.as_str()) {
                        tracing::error!(%source, %problem, "JWKS refused: the previous keys stay in force");
                        last_problem = Some(problem);
                    }
                    RETRY
                }
            },
            Err(problem) => {
                let problem = problem.to_string();
                failing.set(1);
                if last_problem.as_deref() != Some(problem.as_str()) {
                    tracing::error!(%source, %problem, "cannot fetch the JWKS; the previous keys (if any) stay in force");
                    last_problem = Some(problem);
                }
                RETRY
            }
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = wanted.notified() => {
                    if attempted.elapsed() >= UNKNOWN_KID_MIN_INTERVAL {
                        break;
                    }
                }
                _ = shutdown.changed() => return,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_are_accepted() {
        for bad in [
            "http://idp.example/jwks.json",
            "idp.example/jwks.json",
            "https:///jwks.json",
        ] {
            assert!(https(bad, "--jwks-url").is_err(), "{bad}");
        }
        assert!(https("https://idp.example:8443/jwks.json", "--jwks-url").is_ok());
        let err = Fetcher::new(
            Location::Discovered {
                issuer: "http://idp.example".into(),
            },
            None,
        )
        .err()
        .unwrap();
        assert!(
            matches!(err, FetcherError::Url(UrlError::NotHttps { .. })),
            "{err}"
        );
    }
}
