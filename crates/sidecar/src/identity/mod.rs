//! Who is calling: the subject of the bearer token an agent sends, verified,
//! for rules' `subjects` and `key.subject` budgets.
//!
//! - `jwt`: a JWT whose signature checks against a JWKS (`--jwks-file`),
//!   with `exp` required and `iss`/`aud` checked when configured; the subject
//!   is its `sub`. The file is re-read when it changes (a mounted ConfigMap
//!   or Secret updated for a key rotation); a new file that is not a usable
//!   JWKS keeps the previous keys in force.
//! - `kubernetes`: a ServiceAccount token, checked with a TokenReview for the
//!   configured audience (cached); the subject is
//!   `system:serviceaccount:<namespace>:<name>`.
//!
//! A token that is present and fails verification (forged, expired, wrong
//! issuer or audience) refuses the request outright — it is never
//! forwarded. A request without a token has no subject (anonymous) unless
//! `--require-identity` refuses it too. The token is forwarded unchanged:
//! the MCP server may need it for its own authorization.

pub(crate) mod jwks;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use http::{HeaderMap, header};
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, Validation, decode, decode_header};
use sha2::{Digest, Sha256};
use tokio::sync::Notify;

use tollgate_runtime::expiring::ExpiringCache;
use tollgate_runtime::token_review::{AuthError, Authenticator};

use crate::metrics::IdentityFailure;

/// How long a verified JWT's subject is remembered (never past `exp`).
const JWT_CACHE: Duration = Duration::from_secs(60);
/// The most verified tokens remembered; past this the least recently used go.
const JWT_CACHE_MAX: usize = 16_384;

/// Identity settings that cannot work, found at start-up.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    /// `--identity jwt` without any source of keys.
    #[error(
        "--identity jwt needs the key set that signs your agents' tokens: --jwks-file, --jwks-url, or --jwt-issuer to discover it"
    )]
    NoKeys,
    /// The JWKS file is unusable.
    #[error(transparent)]
    Jwks(#[from] JwksError),
    /// No Kubernetes client for TokenReviews.
    #[error("--identity kubernetes reviews tokens with the Kubernetes API: {0}")]
    KubeClient(#[source] tollgate_runtime::kube_client::ClientError),
    /// `--require-identity` with nothing to verify tokens.
    #[error("--require-identity needs --identity jwt or --identity kubernetes")]
    RequireWithoutVerifier,
}

/// A key set that cannot be used; the previous keys (if any) stay.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwksError {
    /// The file cannot be read.
    #[error("cannot read the JWKS {path}: {problem}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        problem: String,
    },
    /// Not a JWKS document.
    #[error("{source_name} is not a JWKS: {problem}")]
    NotJwks {
        /// Where it came from.
        source_name: String,
        /// The JSON error.
        problem: String,
    },
    /// A JWKS with no keys would refuse every agent.
    #[error("the JWKS {0} has no keys")]
    NoKeys(String),
}

/// Why a caller was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum IdentityError {
    /// No token, and one is required.
    #[error("a bearer token is required: send `Authorization: Bearer <token>`")]
    Missing,
    /// The token does not verify.
    #[error("the bearer token was refused: {0}")]
    Invalid(TokenRefused),
    /// The verifier could not be asked (TokenReview unavailable).
    #[error("the bearer token cannot be checked right now: {0}")]
    Unavailable(#[source] CannotCheck),
}

/// Why a token cannot be checked now (the caller may retry).
#[derive(Debug, thiserror::Error)]
pub(crate) enum CannotCheck {
    /// `--jwks-url`: the first fetch of the keys has not succeeded yet.
    #[error("the keys that sign agents' tokens have not been fetched yet")]
    NoKeysYet,
    /// The apiserver could not be asked for a TokenReview.
    #[error("{0}")]
    Review(#[source] Arc<kube::Error>),
}

/// Why a bearer token does not verify.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TokenRefused {
    #[error("not a JWT ({0})")]
    NotJwt(jsonwebtoken::errors::Error),
    #[error("no key {0:?} in the JWKS")]
    UnknownKey(String),
    #[error("the JWT names no key (kid) and the JWKS has several")]
    NoKeyId,
    #[error("the JWKS key has an unsupported type")]
    UnsupportedKey,
    #[error("the JWT is signed with {0:?}, which its key is not for")]
    WrongKeyType(Algorithm),
    #[error("the key is for {named}, the JWT says {alg:?}")]
    AlgorithmMismatch { named: KeyAlgorithm, alg: Algorithm },
    #[error("unusable key in the JWKS ({0})")]
    UnusableKey(jsonwebtoken::errors::Error),
    /// Signature, expiry, audience or issuer (jsonwebtoken's own words).
    #[error("{0}")]
    Claims(jsonwebtoken::errors::Error),
    #[error("the JWT has no subject")]
    NoSubject,
    /// TokenReview said no.
    #[error(transparent)]
    Review(AuthError),
}

impl IdentityError {
    /// The metric label value.
    pub(crate) fn reason(&self) -> IdentityFailure {
        match self {
            IdentityError::Missing => IdentityFailure::Missing,
            IdentityError::Invalid(_) => IdentityFailure::Invalid,
            IdentityError::Unavailable(_) => IdentityFailure::Unavailable,
        }
    }
}

/// Verifies JWTs against a key set.
pub(crate) struct JwtVerifier {
    /// The JWKS file; `None` when the keys are fetched ([`crate::identity::jwks`]).
    path: Option<PathBuf>,
    keys: ArcSwap<JwkSet>,
    /// Digest of the JWKS last seen (in force or refused), so an unchanged
    /// one is neither parsed again nor reported again.
    seen: Mutex<[u8; 32]>,
    issuer: Option<String>,
    audience: Option<String>,
    cache: Mutex<ExpiringCache<[u8; 32], String>>,
    /// Woken when a token names a key the fetched set lacks: the IdP may
    /// have rotated, and the fetcher looks again.
    wanted: Arc<Notify>,
}

/// What a [`JwtVerifier::reload`] or [`JwtVerifier::install`] found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum JwksReload {
    /// The key set is as last seen.
    Unchanged,
    /// New keys are in force (how many).
    Replaced(usize),
    /// It changed but cannot be used; the previous keys stay.
    Refused(JwksError),
}

/// `bytes` as a key set with at least one key; `source` names it in errors.
fn parse_jwks(bytes: &[u8], source: &str) -> Result<JwkSet, JwksError> {
    let keys = serde_json::from_slice::<JwkSet>(bytes).map_err(|e| JwksError::NotJwks {
        source_name: source.to_owned(),
        problem: e.to_string(),
    })?;
    if keys.keys.is_empty() {
        return Err(JwksError::NoKeys(source.to_owned()));
    }
    Ok(keys)
}

fn read_jwks(path: &Path) -> Result<Vec<u8>, JwksError> {
    std::fs::read(path).map_err(|e| JwksError::Read {
        path: path.display().to_string(),
        problem: e.to_string(),
    })
}

impl JwtVerifier {
    /// What the key fetcher waits on besides its timer: woken when a token
    /// names a key the fetched set lacks.
    pub(crate) fn wanted(&self) -> Arc<Notify> {
        self.wanted.clone()
    }

    /// Reads the JWKS (RFC 7517 JSON) at `path`.
    pub(crate) fn from_file(
        path: &Path,
        issuer: Option<String>,
        audience: Option<String>,
    ) -> Result<Self, JwksError> {
        let bytes = read_jwks(path)?;
        let keys = parse_jwks(&bytes, &path.display().to_string())?;
        Ok(JwtVerifier {
            path: Some(path.to_owned()),
            keys: ArcSwap::from_pointee(keys),
            seen: Mutex::new(Sha256::digest(&bytes).into()),
            issuer,
            audience,
            cache: Mutex::new(ExpiringCache::new(JWT_CACHE_MAX)),
            wanted: Arc::default(),
        })
    }

    /// A verifier whose keys arrive later through [`Self::install`]; until
    /// then tokens cannot be checked (refused as unavailable, not invalid).
    pub(crate) fn awaiting_keys(issuer: Option<String>, audience: Option<String>) -> Self {
        JwtVerifier {
            path: None,
            keys: ArcSwap::from_pointee(JwkSet { keys: Vec::new() }),
            seen: Mutex::new([0; 32]),
            issuer,
            audience,
            cache: Mutex::new(ExpiringCache::new(JWT_CACHE_MAX)),
            wanted: Arc::default(),
        }
    }

    /// Re-reads the JWKS file (nothing for fetched keys).
    pub(crate) fn reload(&self) -> JwksReload {
        let Some(path) = &self.path else {
            return JwksReload::Unchanged;
        };
        match read_jwks(path) {
            Ok(bytes) => self.install(&bytes, &path.display().to_string()),
            // Mid-swap (a ConfigMap's symlink flip) or gone: keep the keys;
            // report it once per distinct problem.
            Err(e) => {
                let digest: [u8; 32] = Sha256::digest(e.to_string().as_bytes()).into();
                let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
                if *seen == digest {
                    return JwksReload::Unchanged;
                }
                *seen = digest;
                JwksReload::Refused(e)
            }
        }
    }

    /// Puts the JWKS `bytes` in force if they changed and are usable. New
    /// keys take effect at once, and subjects remembered from tokens of the
    /// old keys are forgotten (a key removed from the set must stop
    /// admitting its tokens now, not in a minute).
    pub(crate) fn install(&self, bytes: &[u8], source: &str) -> JwksReload {
        let digest: [u8; 32] = Sha256::digest(bytes).into();
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if *seen == digest {
            return JwksReload::Unchanged;
        }
        *seen = digest;
        match parse_jwks(bytes, source) {
            Ok(keys) => {
                let n = keys.keys.len();
                self.keys.store(Arc::new(keys));
                self.cache.lock().unwrap_or_else(|p| p.into_inner()).clear();
                JwksReload::Replaced(n)
            }
            Err(e) => JwksReload::Refused(e),
        }
    }

    /// The verified subject of `token`.
    pub(crate) fn verify(&self, token: &str) -> Result<String, IdentityError> {
        let keys = self.keys.load();
        if keys.keys.is_empty() {
            return Err(IdentityError::Unavailable(CannotCheck::NoKeysYet));
        }
        self.verify_with(&keys, token)
            .map_err(IdentityError::Invalid)
    }

    fn verify_with(&self, keys: &JwkSet, token: &str) -> Result<String, TokenRefused> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(sub) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&digest, Instant::now())
        {
            return Ok(sub);
        }
        let header = decode_header(token).map_err(TokenRefused::NotJwt)?;
        let jwk = match &header.kid {
            Some(kid) => keys.find(kid).ok_or_else(|| {
                if self.path.is_none() {
                    self.wanted.notify_one();
                }
                TokenRefused::UnknownKey(kid.clone())
            })?,
            None if keys.keys.len() == 1 => &keys.keys[0],
            None => return Err(TokenRefused::NoKeyId),
        };
        check_algorithm(jwk, header.alg)?;
        let key = DecodingKey::from_jwk(jwk).map_err(TokenRefused::UnusableKey)?;
        let mut validation = Validation::new(header.alg);
        validation.set_required_spec_claims(&["exp", "sub"]);
        // A token whose `nbf` lies ahead is not valid yet.
        validation.validate_nbf = true;
        match &self.audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        if let Some(iss) = &self.issuer {
            validation.set_issuer(&[iss]);
        }
        let data =
            decode::<serde_json::Value>(token, &key, &validation).map_err(TokenRefused::Claims)?;
        let sub = data
            .claims
            .get("sub")
            .and_then(|s| s.as_str())
            .filter(|s| !s.is_empty())
            .ok_or(TokenRefused::NoSubject)?
            .to_owned();
        let exp = data.claims.get("exp").and_then(|e| e.as_i64()).unwrap_or(0);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let keep = JWT_CACHE.min(Duration::from_secs(exp.saturating_sub(now).max(0) as u64));
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(
            digest,
            sub.clone(),
            Instant::now() + keep,
        );
        Ok(sub)
    }
}

/// Re-reads the JWKS file every `interval` until shutdown, so a rotated key
/// set (a mounted ConfigMap or Secret, updated by a symlink swap) takes effect
/// without a restart. A refused file is logged once and flagged in
/// `tollgate_jwks_reload_failing`; the keys in force stay.
pub(crate) async fn watch_jwks(
    verifier: Arc<JwtVerifier>,
    failing: prometheus::IntGauge,
    interval: Duration,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let path = verifier
        .path
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => return,
        }
        // Reading a small file: blocking for microseconds is fine here.
        match verifier.reload() {
            JwksReload::Unchanged => {}
            JwksReload::Replaced(keys) => {
                failing.set(0);
                tracing::info!(%path, keys, "JWKS reloaded: new keys in force");
            }
            JwksReload::Refused(problem) => {
                failing.set(1);
                tracing::error!(%path, %problem, "JWKS change refused: the previous keys stay in force");
            }
        }
    }
}

/// The token's `alg` header is the sender's claim: it must be what the key
/// is for (no RSA public key used as an HMAC secret, no algorithm the key
/// does not name).
fn check_algorithm(jwk: &Jwk, alg: Algorithm) -> Result<(), TokenRefused> {
    use Algorithm::*;
    let fits = match &jwk.algorithm {
        AlgorithmParameters::EllipticCurve(_) => matches!(alg, ES256 | ES384),
        AlgorithmParameters::RSA(_) => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
        AlgorithmParameters::OctetKeyPair(_) => alg == EdDSA,
        AlgorithmParameters::OctetKey(_) => matches!(alg, HS256 | HS384 | HS512),
        _ => return Err(TokenRefused::UnsupportedKey),
    };
    if !fits {
        return Err(TokenRefused::WrongKeyType(alg));
    }
    match jwk.common.key_algorithm {
        Some(named) if KeyAlgorithm::from(alg) != named => {
            Err(TokenRefused::AlgorithmMismatch { named, alg })
        }
        _ => Ok(()),
    }
}

/// The configured verifier, if any.
pub(crate) enum Verifier {
    /// JWTs against a JWKS (shared with the task that reloads it).
    Jwt(Arc<JwtVerifier>),
    /// Kubernetes ServiceAccount tokens via TokenReview.
    Kubernetes(Box<Authenticator>),
}

/// Identifies callers.
pub(crate) struct Identities {
    /// How tokens are verified; `None` ignores tokens.
    verifier: Option<Verifier>,
    /// Refuse calls without a token.
    required: bool,
}

impl Identities {
    /// Callers identified by `verifier` (`None` ignores tokens); with
    /// `required`, a request without a token is refused.
    pub(crate) fn new(verifier: Option<Verifier>, required: bool) -> Self {
        Identities { verifier, required }
    }

    /// The JWT verifier, whose keys a task keeps fresh, when tokens are JWTs.
    pub(crate) fn jwt(&self) -> Option<&Arc<JwtVerifier>> {
        match &self.verifier {
            Some(Verifier::Jwt(jwt)) => Some(jwt),
            _ => None,
        }
    }

    /// The caller's subject, `None` for anonymous.
    pub(crate) async fn identify(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<String>, IdentityError> {
        let Some(verifier) = &self.verifier else {
            return Ok(None);
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty());
        let Some(token) = token else {
            return if self.required {
                Err(IdentityError::Missing)
            } else {
                Ok(None)
            };
        };
        match verifier {
            Verifier::Jwt(v) => v.verify(token).map(Some),
            Verifier::Kubernetes(a) => match a.service_account(token).await {
                Ok(user) => Ok(Some(user)),
                Err(AuthError::Unavailable(e)) => {
                    Err(IdentityError::Unavailable(CannotCheck::Review(e)))
                }
                Err(e) => Err(IdentityError::Invalid(TokenRefused::Review(e))),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    struct Issuer {
        key: EncodingKey,
        _dir: tempfile::TempDir,
        verifier: JwtVerifier,
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64
    }

    fn ec_key() -> EncodingKey {
        let pair = rcgen::KeyPair::generate().unwrap();
        EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap()
    }

    /// A key, its JWKS on disk, and a verifier requiring `iss`/`aud`.
    fn issuer() -> Issuer {
        let key = ec_key();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("jwks.json");
        std::fs::write(
            &path,
            serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
        )
        .unwrap();
        let verifier =
            JwtVerifier::from_file(&path, Some("https://idp".into()), Some("tollgate".into()))
                .unwrap();
        Issuer {
            key,
            _dir: dir,
            verifier,
        }
    }

    fn sign(key: &EncodingKey, claims: serde_json::Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k1".into());
        encode(&header, &claims, key).unwrap()
    }

    fn claims(sub: &str) -> serde_json::Value {
        json!({"sub": sub, "iss": "https://idp", "aud": "tollgate", "exp": now() + 300})
    }

    #[test]
    fn a_valid_token_yields_its_subject() {
        let i = issuer();
        assert_eq!(
            i.verifier.verify(&sign(&i.key, claims("agent-a"))).unwrap(),
            "agent-a"
        );
    }

    #[test]
    fn a_rotated_jwks_takes_effect_and_a_bad_one_keeps_the_old_keys() {
        let i = issuer();
        let path = i._dir.path().join("jwks.json");
        let old_token = sign(&i.key, claims("agent-a"));
        assert_eq!(i.verifier.verify(&old_token).unwrap(), "agent-a");
        assert_eq!(i.verifier.reload(), JwksReload::Unchanged);

        // Rotation: a new key under the same kid. Tokens of the old key,
        // even one verified (and remembered) a moment ago, stop working.
        let new_key = ec_key();
        let mut jwk = Jwk::from_encoding_key(&new_key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap();
        std::fs::write(&path, &jwks).unwrap();
        assert_eq!(i.verifier.reload(), JwksReload::Replaced(1));
        let err = i.verifier.verify(&old_token).unwrap_err().to_string();
        assert!(err.contains("InvalidSignature"), "{err}");
        let new_token = sign(&new_key, claims("agent-b"));
        assert_eq!(i.verifier.verify(&new_token).unwrap(), "agent-b");

        // Unusable files are refused once each; the new keys stay.
        for (content, problem) in [
            (Some("{not json"), "is not a JWKS"),
            (Some(r#"{"keys": []}"#), "has no keys"),
            (None, "cannot read the JWKS"),
        ] {
            match content {
                Some(c) => std::fs::write(&path, c).unwrap(),
                None => std::fs::remove_file(&path).unwrap(),
            }
            match i.verifier.reload() {
                JwksReload::Refused(e) => assert!(e.to_string().contains(problem), "{e}"),
                other => panic!("{problem}: {other:?}"),
            }
            assert_eq!(i.verifier.reload(), JwksReload::Unchanged, "{problem}");
            assert_eq!(i.verifier.verify(&new_token).unwrap(), "agent-b");
        }
        // And the good file again is taken back.
        std::fs::write(&path, &jwks).unwrap();
        assert_eq!(i.verifier.reload(), JwksReload::Replaced(1));
    }

    #[tokio::test]
    async fn fetched_keys_arrive_later_and_an_unknown_kid_asks_for_them() {
        let key = ec_key();
        let mut jwk = Jwk::from_encoding_key(&key, Algorithm::ES256).unwrap();
        jwk.common.key_id = Some("k1".into());
        let jwks = serde_json::to_vec(&JwkSet { keys: vec![jwk] }).unwrap();
        let v = JwtVerifier::awaiting_keys(Some("https://idp".into()), Some("tollgate".into()));
        let token = sign(&key, claims("agent-a"));
        // Before the first fetch nothing can be checked: unavailable, not invalid.
        assert!(matches!(
            v.verify(&token),
            Err(IdentityError::Unavailable(_))
        ));
        assert!(matches!(
            v.install(b"{}", "https://idp/keys"),
            JwksReload::Refused(e) if e.to_string().contains("https://idp/keys is not a JWKS")
        ));
        assert_eq!(
            v.install(&jwks, "https://idp/keys"),
            JwksReload::Replaced(1)
        );
        assert_eq!(v.install(&jwks, "https://idp/keys"), JwksReload::Unchanged);
        assert_eq!(v.verify(&token).unwrap(), "agent-a");

        // A kid the set lacks wakes the fetcher (fetched keys only).
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("k2".into());
        let rotated = encode(&header, &claims("agent-a"), &ec_key()).unwrap();
        let woken = v.wanted.notified();
        assert!(v.verify(&rotated).is_err());
        tokio::time::timeout(std::time::Duration::from_secs(1), woken)
            .await
            .expect("the fetcher was asked for the new key");

        let from_file = issuer();
        let woken = from_file.verifier.wanted.notified();
        assert!(from_file.verifier.verify(&rotated).is_err());
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), woken)
                .await
                .is_err(),
            "a file is re-read on its own schedule"
        );
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let i = issuer();
        let forged = sign(&ec_key(), claims("agent-a"));
        let err = i.verifier.verify(&forged).unwrap_err().to_string();
        assert!(err.contains("InvalidSignature"), "{err}");
    }

    #[test]
    fn expired_wrong_issuer_wrong_audience_and_no_expiry_are_refused() {
        let i = issuer();
        let mut early = claims("a");
        early["nbf"] = json!(now() + 600);
        assert!(
            i.verifier
                .verify(&sign(&i.key, early))
                .unwrap_err()
                .to_string()
                .contains("ImmatureSignature")
        );
        let mut expired = claims("a");
        expired["exp"] = json!(now() - 3600);
        let mut issuer = claims("a");
        issuer["iss"] = json!("https://elsewhere");
        let mut audience = claims("a");
        audience["aud"] = json!("someone-else");
        let mut forever = claims("a");
        forever.as_object_mut().unwrap().remove("exp");
        let mut nobody = claims("");
        nobody["sub"] = json!("");
        for (what, c) in [
            ("expired", expired),
            ("issuer", issuer),
            ("audience", audience),
            ("no exp", forever),
            ("empty sub", nobody),
        ] {
            assert!(
                i.verifier.verify(&sign(&i.key, c)).is_err(),
                "{what} was accepted"
            );
        }
    }

    #[test]
    fn the_algorithm_must_be_the_keys() {
        let i = issuer();
        // An HMAC token "signed" with some secret: the EC key is not an
        // HMAC key, whatever the header claims.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let token = encode(&header, &claims("a"), &EncodingKey::from_secret(b"guess")).unwrap();
        let err = i.verifier.verify(&token).unwrap_err().to_string();
        assert!(err.contains("HS256"), "{err}");
        // alg "none" is no JWT the proxy reads.
        let none = format!(
            "{}.{}.",
            base64url(br#"{"alg":"none","kid":"k1"}"#),
            base64url(claims("a").to_string().as_bytes())
        );
        assert!(i.verifier.verify(&none).is_err());
    }

    #[test]
    fn an_unknown_key_id_is_refused() {
        let i = issuer();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some("other".into());
        let token = encode(&header, &claims("a"), &i.key).unwrap();
        assert!(
            i.verifier
                .verify(&token)
                .unwrap_err()
                .to_string()
                .contains("no key")
        );
    }

    #[tokio::test]
    async fn identify_reads_bearer_tokens_and_requires_them_when_asked() {
        let i = issuer();
        let token = sign(&i.key, claims("agent-b"));
        let mut ids = Identities {
            verifier: Some(Verifier::Jwt(Arc::new(i.verifier))),
            required: false,
        };
        let headers = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        assert_eq!(
            ids.identify(&headers(&format!("Bearer {token}")))
                .await
                .unwrap(),
            Some("agent-b".into())
        );
        assert_eq!(ids.identify(&HeaderMap::new()).await.unwrap(), None);
        assert!(matches!(
            ids.identify(&headers("Bearer x.y.z")).await,
            Err(IdentityError::Invalid(_))
        ));
        ids.required = true;
        assert!(matches!(
            ids.identify(&HeaderMap::new()).await,
            Err(IdentityError::Missing)
        ));
        assert!(matches!(
            ids.identify(&headers("Basic dXNlcjpwYXNz")).await,
            Err(IdentityError::Missing)
        ));
    }

    fn base64url(bytes: &[u8]) -> String {
        const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }
}
