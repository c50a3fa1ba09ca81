//! Trust for the sidecar's TLS clients (the controller's push channel, a
//! JWKS endpoint): the CAs a PEM bundle names — and, where no bundle is
//! given and public roots make sense, Mozilla's roots.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// Why a PEM bundle gives no root store; its text ends a message such as
/// "… --controller-ca-file x: …".
#[derive(Debug, thiserror::Error)]
pub enum BadRoots {
    #[error("bad PEM ({0})")]
    Pem(rustls::pki_types::pem::Error),
    #[error("unusable CA ({0})")]
    Unusable(rustls::Error),
    #[error("holds no PEM certificate (-----BEGIN CERTIFICATE-----)")]
    Empty,
}

/// The certificates of a PEM bundle as a root store.
pub(crate) fn roots(pem: &[u8]) -> Result<RootCertStore, BadRoots> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(BadRoots::Pem)?;
        roots.add(cert).map_err(BadRoots::Unusable)?;
    }
    if roots.is_empty() {
        return Err(BadRoots::Empty);
    }
    Ok(roots)
}

/// A client configuration (ring, safe defaults, no client certificate)
/// that trusts `roots` and nothing else.
pub(crate) fn client_config(roots: RootCertStore) -> Result<rustls::ClientConfig, rustls::Error> {
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth())
}
