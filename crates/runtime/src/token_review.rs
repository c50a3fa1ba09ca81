//! Who is asking: sidecars authenticate with their pod's projected
//! ServiceAccount token, checked by a TokenReview with the controller's
//! audience and cached briefly.
//!
//! A projected token is bound to its pod: the review returns the pod's name
//! and uid, and a sidecar gets the rules of exactly that pod — never those of
//! another pod, even one with the same ServiceAccount.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec, TokenReviewStatus};
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};

use crate::expiring::ExpiringCache;

/// How long a successful review is trusted.
const CACHE_OK: Duration = Duration::from_secs(60);
/// How long a refusal is remembered (limits TokenReview load from a
/// misconfigured sidecar).
const CACHE_REFUSED: Duration = Duration::from_secs(5);
/// The most cached reviews; past this the least recently used go.
const CACHE_MAX: usize = 16_384;

/// The pod a token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// The ServiceAccount.
    pub service_account: String,
    /// The pod the token is bound to.
    pub pod_name: String,
    /// That pod's uid.
    pub pod_uid: String,
}

/// Why a request was refused.
#[derive(Clone, Debug, thiserror::Error)]
pub enum AuthError {
    /// No bearer token.
    #[error(
        "missing bearer token: send the pod's projected ServiceAccount token as `Authorization: Bearer ...`"
    )]
    Missing,
    /// The apiserver said no, or the token is not a pod-bound ServiceAccount token.
    #[error("token refused: {0}")]
    Refused(String),
    /// The token is fine but speaks for another pod.
    #[error("{0}")]
    Forbidden(String),
    /// The apiserver could not be asked.
    #[error("cannot review the token right now: {0}")]
    Unavailable(#[source] std::sync::Arc<kube::Error>),
}

impl AuthError {
    /// The metric label value.
    pub fn reason(&self) -> AuthFailure {
        match self {
            AuthError::Missing => AuthFailure::Missing,
            AuthError::Refused(_) => AuthFailure::Refused,
            AuthError::Forbidden(_) => AuthFailure::Forbidden,
            AuthError::Unavailable(_) => AuthFailure::Unavailable,
        }
    }
}

crate::label_values! {
    /// Why a token was refused, as a metric label.
    pub enum AuthFailure {
        /// No token.
        Missing => "missing",
        /// The apiserver says the token is not valid.
        Refused => "refused",
        /// Valid, but not for what it asks.
        Forbidden => "forbidden",
        /// The apiserver could not be asked.
        Unavailable => "unavailable",
    }
}

/// Reviews by token digest: what came back, until it goes stale.
type Cache = ExpiringCache<[u8; 32], Result<TokenReviewStatus, AuthError>>;

/// Reviews tokens, with a cache.
pub struct Authenticator {
    api: Api<TokenReview>,
    audience: String,
    cache: Mutex<Cache>,
}

impl Authenticator {
    /// An authenticator for tokens issued to `audience`.
    pub fn new(client: kube::Client, audience: &str) -> Self {
        Authenticator {
            api: Api::all(client),
            audience: audience.to_owned(),
            cache: Mutex::new(ExpiringCache::new(CACHE_MAX)),
        }
    }

    /// The pod identity behind a sidecar's `token`.
    pub async fn authenticate(&self, token: &str) -> Result<Identity, AuthError> {
        let status = self.review(token).await?;
        identity(Some(&status), &self.audience)
    }

    /// The ServiceAccount user behind `token` (any ServiceAccount token for
    /// the audience, pod-bound or not) — how a sidecar identifies agents.
    pub async fn service_account(&self, token: &str) -> Result<String, AuthError> {
        let status = self.review(token).await?;
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(AuthError::Refused(format!(
                "the token is not issued for audience {:?}",
                self.audience
            )));
        }
        status
            .user
            .and_then(|u| u.username)
            .filter(|u| !u.is_empty())
            .ok_or_else(|| AuthError::Refused("no user in the review".into()))
    }

    /// An authenticated TokenReview status for `token`, cached.
    async fn review(&self, token: &str) -> Result<TokenReviewStatus, AuthError> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let now = Instant::now();
        if let Some(result) = self.lock().get(&digest, now) {
            return result;
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let result = match self.api.create(&PostParams::default(), &review).await {
            Ok(r) => match r.status {
                Some(s) if s.authenticated == Some(true) => Ok(s),
                Some(s) => Err(AuthError::Refused(
                    s.error.unwrap_or_else(|| "not authenticated".into()),
                )),
                None => Err(AuthError::Refused("the TokenReview has no status".into())),
            },
            // Not cached: the next request asks again.
            Err(e) => return Err(AuthError::Unavailable(std::sync::Arc::new(e))),
        };
        let keep = if result.is_ok() {
            CACHE_OK
        } else {
            CACHE_REFUSED
        };
        self.lock().insert(digest, result.clone(), now + keep);
        result
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Reads a TokenReview status: the token must be authenticated for our
/// audience and bound to a pod.
pub fn identity(status: Option<&TokenReviewStatus>, audience: &str) -> Result<Identity, AuthError> {
    let status =
        status.ok_or_else(|| AuthError::Refused("the TokenReview has no status".into()))?;
    if status.authenticated != Some(true) {
        return Err(AuthError::Refused(
            status
                .error
                .clone()
                .unwrap_or_else(|| "not authenticated".into()),
        ));
    }
    if !status
        .audiences
        .as_ref()
        .is_some_and(|a| a.iter().any(|x| x == audience))
    {
        return Err(AuthError::Refused(format!(
            "the token is not issued for audience {audience:?}"
        )));
    }
    let user = status
        .user
        .as_ref()
        .ok_or_else(|| AuthError::Refused("no user in the review".into()))?;
    let username = user.username.as_deref().unwrap_or("");
    let Some(rest) = username.strip_prefix("system:serviceaccount:") else {
        return Err(AuthError::Refused(format!(
            "{username:?} is not a ServiceAccount"
        )));
    };
    let (namespace, service_account) = rest
        .split_once(':')
        .ok_or_else(|| AuthError::Refused(format!("malformed ServiceAccount user {username:?}")))?;
    let extra = |k: &str| {
        user.extra
            .as_ref()
            .and_then(|e| e.get(k))
            .and_then(|v| v.first())
            .cloned()
    };
    let (Some(pod_name), Some(pod_uid)) = (
        extra("authentication.kubernetes.io/pod-name"),
        extra("authentication.kubernetes.io/pod-uid"),
    ) else {
        return Err(AuthError::Refused(
            "the token is not bound to a pod; mount a projected ServiceAccount token (the injected sidecar does)".into(),
        ));
    };
    Ok(Identity {
        namespace: namespace.to_owned(),
        service_account: service_account.to_owned(),
        pod_name,
        pod_uid,
    })
}

/// Whether `who` may have the rules of pod `namespace/pod` (uid `pod_uid`).
pub fn authorize(
    who: &Identity,
    namespace: &str,
    pod: &str,
    pod_uid: &str,
) -> Result<(), AuthError> {
    if who.namespace != namespace || who.pod_name != pod {
        return Err(AuthError::Forbidden(format!(
            "a token bound to pod {}/{} cannot read the rules of pod {namespace}/{pod}",
            who.namespace, who.pod_name
        )));
    }
    if !pod_uid.is_empty() && who.pod_uid != pod_uid {
        return Err(AuthError::Forbidden(format!(
            "the token is bound to an earlier pod named {namespace}/{pod}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::authentication::v1::UserInfo;
    use std::collections::BTreeMap;

    fn status(username: &str, audiences: &[&str], pod: Option<(&str, &str)>) -> TokenReviewStatus {
        let mut extra = BTreeMap::new();
        if let Some((name, uid)) = pod {
            extra.insert(
                "authentication.kubernetes.io/pod-name".to_owned(),
                vec![name.to_owned()],
            );
            extra.insert(
                "authentication.kubernetes.io/pod-uid".to_owned(),
                vec![uid.to_owned()],
            );
        }
        TokenReviewStatus {
            authenticated: Some(true),
            audiences: Some(audiences.iter().map(|s| s.to_string()).collect()),
            user: Some(UserInfo {
                username: Some(username.to_owned()),
                extra: Some(extra),
                ..Default::default()
            }),
            error: None,
        }
    }

    #[test]
    fn a_pod_bound_token_speaks_for_its_pod_only() {
        let s = status(
            "system:serviceaccount:team:kms",
            &["tollgate"],
            Some(("kms-0", "uid-0")),
        );
        let who = identity(Some(&s), "tollgate").unwrap();
        assert_eq!(
            (
                who.namespace.as_str(),
                who.service_account.as_str(),
                who.pod_name.as_str()
            ),
            ("team", "kms", "kms-0")
        );
        assert!(authorize(&who, "team", "kms-0", "uid-0").is_ok());
        assert!(matches!(
            authorize(&who, "team", "kms-1", "uid-1"),
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            authorize(&who, "other", "kms-0", "uid-0"),
            Err(AuthError::Forbidden(_))
        ));
        assert!(matches!(
            authorize(&who, "team", "kms-0", "uid-of-new-pod"),
            Err(AuthError::Forbidden(_))
        ));
    }

    #[test]
    fn other_tokens_are_refused() {
        let wrong_audience = status(
            "system:serviceaccount:team:kms",
            &["https://kubernetes.default.svc"],
            Some(("p", "u")),
        );
        assert!(
            matches!(identity(Some(&wrong_audience), "tollgate"), Err(AuthError::Refused(m)) if m.contains("audience"))
        );
        let unbound = status("system:serviceaccount:team:kms", &["tollgate"], None);
        assert!(
            matches!(identity(Some(&unbound), "tollgate"), Err(AuthError::Refused(m)) if m.contains("not bound to a pod"))
        );
        let user = status("alice", &["tollgate"], Some(("p", "u")));
        assert!(matches!(
            identity(Some(&user), "tollgate"),
            Err(AuthError::Refused(_))
        ));
        let mut failed = status("system:serviceaccount:a:b", &["tollgate"], Some(("p", "u")));
        failed.authenticated = Some(false);
        assert!(identity(Some(&failed), "tollgate").is_err());
        assert!(identity(None, "tollgate").is_err());
    }
}
