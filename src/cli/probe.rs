//! `tollgate probe`: what the chart's `helm test` pod runs (the tollgate
//! image itself, no other image): the controller answers `/readyz` with
//! 200, and the webhook's endpoint serves TLS with a certificate the
//! release's CA signed for its name, and answers HTTP.
//!
//! Exit codes: 0 every probe passed; 1 one failed; 2 bad flags (an
//! unreadable CA file).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Flags of `tollgate probe`.
#[derive(clap::Args)]
pub(crate) struct ProbeArgs {
    /// A URL that must answer GET with 2xx (the controller's /readyz).
    #[arg(long)]
    ready: Vec<http::Uri>,
    /// An https URL whose server must present a certificate for its host
    /// signed by --ca-file and answer HTTP (any status: the webhook serves
    /// only POSTs of AdmissionReviews).
    #[arg(long, requires = "ca_file")]
    tls: Vec<http::Uri>,
    /// The CA (PEM) the --tls servers' certificates must chain to.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

/// Why a probe could not be set up.
#[derive(Debug, thiserror::Error)]
enum ProbeError {
    #[error("reading --ca-file {0}: {1}")]
    CaFile(PathBuf, std::io::Error),
    #[error("--ca-file {0} holds no usable PEM certificate")]
    NoCa(PathBuf),
    #[error("the TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

pub(crate) fn run(args: &ProbeArgs) -> ExitCode {
    let probed = match super::block_on(probe(args)) {
        Ok(p) => p,
        Err(code) => return code,
    };
    match probed {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn probe(args: &ProbeArgs) -> Result<bool, ProbeError> {
    let mut passed = true;
    let plain = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    for url in &args.ready {
        match get(&plain, url).await {
            Ok(status) if status.is_success() => println!("[ok  ] ready: {url} answered {status}"),
            Ok(status) => {
                passed = false;
                println!("[FAIL] ready: {url} answered {status}");
            }
            Err(e) => {
                passed = false;
                println!("[FAIL] ready: {url}: {e}");
            }
        }
    }
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).map_err(|e| ProbeError::CaFile(ca.clone(), e))?;
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
        if roots.is_empty() {
            return Err(ProbeError::NoCa(ca.clone()));
        }
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        let verified = Client::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(connector);
        for url in &args.tls {
            match get(&verified, url).await {
                Ok(status) => println!(
                    "[ok  ] tls: {url} presented a certificate the CA signed and answered {status}"
                ),
                Err(e) => {
                    passed = false;
                    println!("[FAIL] tls: {url}: {e}");
                }
            }
        }
    }
    Ok(passed)
}

/// Why one GET got no answer.
#[derive(Debug, thiserror::Error)]
enum GetError {
    #[error("{0}")]
    Request(#[from] http::Error),
    /// The connection, TLS verification or exchange failed (with its causes).
    #[error("{0}")]
    Exchange(String),
    #[error("no answer within 10s")]
    Timeout,
}

/// One GET, 10 s at most; the status.
async fn get<C>(
    client: &Client<C, Empty<Bytes>>,
    url: &http::Uri,
) -> Result<http::StatusCode, GetError>
where
    C: hyper_util::client::legacy::connect::Connect + Clone + Send + Sync + 'static,
{
    let request = http::Request::get(url.clone()).body(Empty::new())?;
    let exchange = async {
        let response = client
            .request(request)
            .await
            .map_err(|e| GetError::Exchange(super::error_chain(&e)))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        Ok::<_, GetError>(status)
    };
    tokio::time::timeout(Duration::from_secs(10), exchange)
        .await
        .map_err(|_| GetError::Timeout)?
}
