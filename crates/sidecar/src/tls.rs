//! Trust for the sidecar's TLS clients (the controller's push channel, a
//! JWKS endpoint): the CAs a PEM bundle names — and, where no bundle is
//! given and public roots make sense, Mozilla's roots.

use std::sync::Arc;

use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

/// The certificates of a PEM bundle as a root store; why not, as a
/// sentence that ends a message such as "… --controller-ca-file x: …".
pub(crate) fn roots(pem: &[u8]) -> Result<RootCertStore, String> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(pem) {
        let cert = cert.map_err(|e| format!("bad PEM ({e})"))?;
        roots.add(cert).map_err(|e| format!("unusable CA ({e})"))?;
    }
    if roots.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
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
