//! The controller's TLS certificate, for both of its TLS listeners: the push
//! server (sidecars verify it against the CA the injection webhook hands
//! them) and the webhook (the apiserver verifies it through the `caBundle`
//! of the MutatingWebhookConfiguration). Generated, kept in a Secret, and
//! renewed before it expires.
//!
//! A self-signed CA (10 years) signs a serving certificate (1 year) for the
//! DNS names of the controller's Services. Both live in one Secret in the
//! controller's namespace, so every replica serves the same certificate;
//! whichever replica gets there first creates it, the others use it. The
//! serving certificate is re-issued by the same CA when less than 30 days
//! remain — the CA does not change, so there is no window where the
//! apiserver or a sidecar distrusts the controller. With `--tls-cert-dir`
//! (cert-manager) none of this runs: the files are read and re-read instead.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use k8s_openapi::ByteString;
use k8s_openapi::api::admissionregistration::v1::MutatingWebhookConfiguration;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{Api, PostParams};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use time::OffsetDateTime;
use tokio::sync::watch;

/// Renew the serving certificate when less than this remains.
pub(crate) const RENEW_BEFORE: time::Duration = time::Duration::days(30);
const SERVING_VALIDITY: time::Duration = time::Duration::days(365);
const CA_VALIDITY: time::Duration = time::Duration::days(3650);
const CA_NAME: &str = "tollgate controller CA";
const NOT_AFTER: &str = "tollgate.dev/not-after";
/// The names the serving certificate covers, comma-separated: a Secret
/// made for other names (an older version, another Service name) is
/// re-issued under the same CA.
const NAMES: &str = "tollgate.dev/names";

/// PEM material for the controller's listeners.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Bundle {
    /// The CA certificate (what `caBundle` holds and sidecars trust).
    pub ca_cert: String,
    /// The CA key (stays in the Secret).
    pub ca_key: String,
    /// The serving certificate.
    pub cert: String,
    /// Its key.
    pub key: String,
    /// When the serving certificate expires (Unix seconds).
    pub not_after: i64,
    /// The names it covers.
    pub names: Vec<String>,
}

/// Why certificates could not be made or stored.
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    /// rcgen failed.
    #[error("generating a certificate failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// The Kubernetes API failed.
    #[error("{0}")]
    Api(#[from] kube::Error),
    /// PEM that does not read.
    #[error("the certificate or key cannot be used: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    /// PEM without a certificate.
    #[error("the certificate or key cannot be used: no certificate in the PEM")]
    NoCertificate,
    /// A key rustls cannot sign with.
    #[error("the certificate or key cannot be used: {0}")]
    Key(#[source] rustls::Error),
    /// The Secret lacks the certificate, the key or the CA.
    #[error("the certificate or key cannot be used: Secret {secret} is incomplete")]
    Incomplete {
        /// The Secret's name.
        secret: String,
    },
}

fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.distinguished_name.push(DnType::CommonName, CA_NAME);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

/// A new CA and a serving certificate for `names` (DNS names or IPs).
pub(crate) fn generate(names: &[String]) -> Result<Bundle, rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::generate()?;
    let mut params = ca_params()?;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + CA_VALIDITY;
    let ca_cert = params.self_signed(&ca_key)?;
    let (cert, key, not_after) = issue(&ca_key.serialize_pem(), names)?;
    Ok(Bundle {
        ca_cert: ca_cert.pem(),
        ca_key: ca_key.serialize_pem(),
        cert,
        key,
        not_after,
        names: names.to_vec(),
    })
}

/// A serving certificate for `names`, signed by the CA whose key is
/// `ca_key_pem` (the CA's name and key identify it; its certificate is not
/// needed to sign).
pub(crate) fn issue(
    ca_key_pem: &str,
    names: &[String],
) -> Result<(String, String, i64), rcgen::Error> {
    let now = OffsetDateTime::now_utc();
    let ca_key = KeyPair::from_pem(ca_key_pem)?;
    let issuer = Issuer::new(ca_params()?, ca_key);
    let key = KeyPair::generate()?;
    let mut params = CertificateParams::new(names.to_vec())?;
    params.distinguished_name.push(
        DnType::CommonName,
        names.first().map_or("tollgate-webhook", String::as_str),
    );
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + SERVING_VALIDITY;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer)?;
    Ok((
        cert.pem(),
        key.serialize_pem(),
        params.not_after.unix_timestamp(),
    ))
}

/// Serves whichever certificate is current; swapped on renewal.
#[derive(Debug)]
pub(crate) struct Resolver {
    current: ArcSwap<CertifiedKey>,
}

impl Resolver {
    /// A resolver serving `cert`/`key`.
    pub(crate) fn new(cert: &str, key: &str) -> Result<Self, CertError> {
        Ok(Resolver {
            current: ArcSwap::from_pointee(certified(cert, key)?),
        })
    }

    /// Serves `cert`/`key` from now on.
    pub(crate) fn set(&self, cert: &str, key: &str) -> Result<(), CertError> {
        self.current.store(Arc::new(certified(cert, key)?));
        Ok(())
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, _: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current.load_full())
    }
}

fn certified(cert: &str, key: &str) -> Result<CertifiedKey, CertError> {
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>()?;
    if chain.is_empty() {
        return Err(CertError::NoCertificate);
    }
    let key = PrivateKeyDer::from_pem_slice(key.as_bytes())?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key).map_err(CertError::Key)?;
    Ok(CertifiedKey::new(chain, signing))
}

/// Keeps the Secret and `caBundle` current.
pub(crate) struct Keeper {
    /// Secrets in the controller's namespace.
    pub secrets: Api<Secret>,
    /// The webhook configurations.
    pub webhooks: Api<MutatingWebhookConfiguration>,
    /// The Secret's name.
    pub secret: String,
    /// The MutatingWebhookConfiguration whose `caBundle` is kept, if the
    /// webhook is served.
    pub configuration: Option<String>,
    /// DNS names (and IPs) the serving certificate covers.
    pub names: Vec<String>,
}

impl Keeper {
    /// The current bundle: read, created, or renewed as needed.
    pub(crate) async fn ensure(&self) -> Result<Bundle, CertError> {
        let now = OffsetDateTime::now_utc().unix_timestamp();
        let existing = self.secrets.get_opt(&self.secret).await?;
        if let Some(bundle) = existing.as_ref().and_then(read) {
            if bundle.not_after - now > RENEW_BEFORE.whole_seconds() && bundle.names == self.names {
                return Ok(bundle);
            }
            // Renew under the same CA, so caBundle stays valid throughout.
            let (cert, key, not_after) = issue(&bundle.ca_key, &self.names)?;
            let renewed = Bundle {
                cert,
                key,
                not_after,
                names: self.names.clone(),
                ..bundle
            };
            let mut secret = existing.unwrap_or_default();
            fill(&mut secret, &renewed);
            return match self
                .secrets
                .replace(&self.secret, &PostParams::default(), &secret)
                .await
            {
                Ok(_) => {
                    tracing::info!(secret = %self.secret, "renewed the serving certificate");
                    Ok(renewed)
                }
                // Another replica renewed it first: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => self.read_back().await,
                Err(e) => Err(e.into()),
            };
        }
        let bundle = generate(&self.names)?;
        let mut secret = Secret {
            metadata: ObjectMeta {
                name: Some(self.secret.clone()),
                ..Default::default()
            },
            type_: Some("kubernetes.io/tls".into()),
            ..Default::default()
        };
        fill(&mut secret, &bundle);
        let result = match existing {
            // Present but empty or unreadable (e.g. created empty by the
            // Helm chart): fill it, keeping its type (immutable) and labels.
            Some(old) => {
                secret.metadata.resource_version = old.metadata.resource_version;
                secret.metadata.labels = old.metadata.labels;
                secret.type_ = old.type_;
                self.secrets
                    .replace(&self.secret, &PostParams::default(), &secret)
                    .await
            }
            None => self.secrets.create(&PostParams::default(), &secret).await,
        };
        match result {
            Ok(_) => {
                tracing::info!(secret = %self.secret, "created the CA and serving certificate");
                Ok(bundle)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => self.read_back().await,
            Err(e) => Err(e.into()),
        }
    }

    async fn read_back(&self) -> Result<Bundle, CertError> {
        let secret = self.secrets.get(&self.secret).await?;
        read(&secret).ok_or_else(|| CertError::Incomplete {
            secret: self.secret.clone(),
        })
    }

    /// Puts the CA into every webhook's `caBundle` of the configuration.
    pub(crate) async fn publish_ca(&self, ca_cert: &str) -> Result<bool, CertError> {
        let Some(configuration) = &self.configuration else {
            return Ok(false);
        };
        let Some(mut config) = self.webhooks.get_opt(configuration).await? else {
            tracing::warn!(%configuration, "no MutatingWebhookConfiguration of that name; the apiserver will not call the webhook");
            return Ok(false);
        };
        let bundle = ByteString(ca_cert.as_bytes().to_vec());
        let mut changed = false;
        for w in config.webhooks.iter_mut().flatten() {
            if w.client_config.ca_bundle.as_ref() != Some(&bundle) {
                w.client_config.ca_bundle = Some(bundle.clone());
                changed = true;
            }
        }
        if changed {
            match self
                .webhooks
                .replace(configuration, &PostParams::default(), &config)
                .await
            {
                Ok(_) => {
                    tracing::info!(%configuration, "published the CA in the webhook's caBundle")
                }
                Err(kube::Error::Api(e)) if e.code == 409 => return Ok(false),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(changed)
    }

    /// Re-checks every `every`: renews, republishes, and swaps what
    /// `resolver` serves when the Secret changed.
    pub(crate) async fn run(
        self,
        resolver: Arc<Resolver>,
        mut current: Bundle,
        every: Duration,
        mut shutdown: watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match self.ensure().await {
                Ok(bundle) => {
                    if bundle.cert != current.cert {
                        match resolver.set(&bundle.cert, &bundle.key) {
                            Ok(()) => tracing::info!("serving the renewed certificate"),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot use the renewed certificate")
                            }
                        }
                    }
                    if let Err(e) = self.publish_ca(&bundle.ca_cert).await {
                        tracing::warn!(error = %e, "cannot publish the CA in the webhook's caBundle");
                    }
                    current = bundle;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot check the serving certificate; retrying")
                }
            }
        }
    }
}

fn read(secret: &Secret) -> Option<Bundle> {
    let data = secret.data.as_ref()?;
    let text = |k: &str| {
        data.get(k)
            .and_then(|b| String::from_utf8(b.0.clone()).ok())
    };
    let not_after = secret
        .metadata
        .annotations
        .as_ref()?
        .get(NOT_AFTER)?
        .parse()
        .ok()?;
    Some(Bundle {
        ca_cert: text("ca.crt")?,
        ca_key: text("ca.key")?,
        cert: text("tls.crt")?,
        key: text("tls.key")?,
        not_after,
        names: secret
            .metadata
            .annotations
            .as_ref()?
            .get(NAMES)
            .map(|n| n.split(',').map(str::to_owned).collect())
            .unwrap_or_default(),
    })
}

fn fill(secret: &mut Secret, b: &Bundle) {
    let bytes = |s: &str| ByteString(s.as_bytes().to_vec());
    secret.data = Some(BTreeMap::from([
        ("ca.crt".into(), bytes(&b.ca_cert)),
        ("ca.key".into(), bytes(&b.ca_key)),
        ("tls.crt".into(), bytes(&b.cert)),
        ("tls.key".into(), bytes(&b.key)),
    ]));
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(NOT_AFTER.into(), b.not_after.to_string());
    secret
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(NAMES.into(), b.names.join(","));
}

/// Serves certificates from files (cert-manager) and re-reads them.
pub(crate) async fn follow_files(
    dir: std::path::PathBuf,
    resolver: Arc<Resolver>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut last = std::fs::read(dir.join("tls.crt")).unwrap_or_default();
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
        }
        let cert = std::fs::read(dir.join("tls.crt")).unwrap_or_default();
        if cert != last {
            let key = std::fs::read_to_string(dir.join("tls.key")).unwrap_or_default();
            match resolver.set(&String::from_utf8_lossy(&cert), &key) {
                Ok(()) => {
                    tracing::info!(dir = %dir.display(), "serving the renewed certificate")
                }
                Err(e) => {
                    tracing::error!(error = %e, "cannot use the renewed certificate files")
                }
            }
            last = cert;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generated_bundle_serves_and_renews_under_the_same_ca() {
        let names = vec![
            "tollgate-webhook.tollgate-system.svc".to_owned(),
            "127.0.0.1".to_owned(),
        ];
        let b = generate(&names).unwrap();
        let year = OffsetDateTime::now_utc().unix_timestamp() + SERVING_VALIDITY.whole_seconds();
        assert!((b.not_after - year).abs() < 120);
        let resolver = Resolver::new(&b.cert, &b.key).unwrap();
        let (cert, key, _) = issue(&b.ca_key, &names).unwrap();
        assert_ne!(cert, b.cert);
        resolver.set(&cert, &key).unwrap();
        assert!(Resolver::new("not pem", &key).is_err());
    }

    #[test]
    fn the_secret_round_trips() {
        let b = generate(&["x".to_owned()]).unwrap();
        let mut s = Secret::default();
        fill(&mut s, &b);
        assert_eq!(read(&s), Some(b));
        s.metadata.annotations = None;
        assert_eq!(
            read(&s),
            None,
            "without the expiry the Secret is regenerated"
        );
    }
}
