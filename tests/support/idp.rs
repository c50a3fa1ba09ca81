//! An OpenID Connect identity provider as far as a JWT verifier sees one:
//! HTTPS on loopback (certificate from its own test CA), the discovery
//! document at `/.well-known/openid-configuration`, and a JWKS at `/keys`
//! that a test can rotate or break. Counts the JWKS requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;

use super::redis::Tls;

/// What the IdP serves.
struct State {
    /// The JWKS body (any text, so a test can break it).
    jwks: String,
    /// The `issuer` the discovery document claims.
    claimed_issuer: String,
    /// Answer 503 to everything (an outage).
    down: bool,
    /// Requests answered 503 during outages.
    refused: usize,
}

pub struct OidcProvider {
    pub addr: SocketAddr,
    pki: Tls,
    state: Arc<Mutex<State>>,
    jwks_requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for OidcProvider {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A signing key and its id.
pub struct SigningKey {
    pub kid: String,
    pub key: EncodingKey,
    jwk: Jwk,
}

impl SigningKey {
    pub fn new(kid: &str) -> SigningKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some(kid.into());
        SigningKey {
            kid: kid.into(),
            key,
            jwk,
        }
    }

    /// A token for `sub` from `issuer`, valid for five minutes.
    pub fn token(&self, issuer: &str, sub: &str) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(self.kid.clone());
        let claims =
            serde_json::json!({"sub": sub, "iss": issuer, "aud": "tollgate", "exp": now + 300});
        encode(&header, &claims, &self.key).unwrap()
    }
}

impl OidcProvider {
    /// Starts on a free loopback port, serving `keys`.
    pub async fn start(keys: &[&SigningKey]) -> OidcProvider {
        let pki = Tls::generate(0, false);
        let cert = std::fs::read(pki.server_cert()).unwrap();
        let key = std::fs::read(pki.server_key()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            CertificateDer::pem_slice_iter(&cert)
                .collect::<Result<_, _>>()
                .unwrap(),
            PrivateKeyDer::from_pem_slice(&key).unwrap(),
        )
        .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            jwks: String::new(),
            claimed_issuer: format!("https://{addr}"),
            down: false,
            refused: 0,
        }));
        let jwks_requests = Arc::new(AtomicUsize::new(0));
        let (s, n) = (state.clone(), jwks_requests.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (acceptor, s, n) = (acceptor.clone(), s.clone(), n.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |req: Request<Incoming>| {
                        let (s, n) = (s.clone(), n.clone());
                        async move { Ok::<_, Infallible>(answer(&req, addr, &s, &n)) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        let idp = OidcProvider {
            addr,
            pki,
            state,
            jwks_requests,
            task,
        };
        idp.serve_keys(keys);
        idp
    }

    /// `https://127.0.0.1:<port>`.
    pub fn issuer(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The PEM file of the CA its certificate chains to.
    pub fn ca(&self) -> PathBuf {
        self.pki.ca()
    }

    /// Serves `keys` as the JWKS from now on.
    pub fn serve_keys(&self, keys: &[&SigningKey]) {
        let set = JwkSet {
            keys: keys.iter().map(|k| k.jwk.clone()).collect(),
        };
        self.state.lock().unwrap().jwks = serde_json::to_string(&set).unwrap();
    }

    /// Serves `body` as the JWKS (e.g. something broken).
    pub fn serve_raw(&self, body: &str) {
        self.state.lock().unwrap().jwks = body.to_owned();
    }

    /// Makes the discovery document claim another issuer.
    pub fn claim_issuer(&self, issuer: &str) {
        self.state.lock().unwrap().claimed_issuer = issuer.to_owned();
    }

    /// How many times `/keys` was fetched.
    pub fn jwks_requests(&self) -> usize {
        self.jwks_requests.load(Ordering::SeqCst)
    }

    /// How many requests an outage has refused so far (each one a fetch
    /// the sidecar tried and saw fail).
    pub fn refused(&self) -> usize {
        self.state.lock().unwrap().refused
    }

    /// An outage: every request gets 503 until [`Self::recover`].
    pub fn fail(&self) {
        self.state.lock().unwrap().down = true;
    }
}

fn answer(
    req: &Request<Incoming>,
    addr: SocketAddr,
    state: &Mutex<State>,
    jwks_requests: &AtomicUsize,
) -> Response<Full<Bytes>> {
    let mut state = state.lock().unwrap();
    let (status, body) = match req.uri().path() {
        _ if state.down => {
            state.refused += 1;
            (StatusCode::SERVICE_UNAVAILABLE, String::new())
        }
        "/.well-known/openid-configuration" => (
            StatusCode::OK,
            serde_json::json!({
                "issuer": state.claimed_issuer,
                "jwks_uri": format!("https://{addr}/keys"),
            })
            .to_string(),
        ),
        "/keys" => {
            jwks_requests.fetch_add(1, Ordering::SeqCst);
            (StatusCode::OK, state.jwks.clone())
        }
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}
