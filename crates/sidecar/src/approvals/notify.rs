//! Telling people an approval waits (and what became of it): a JSON POST,
//! signed with HMAC-SHA256, retried with backoff. Where to: the rule's own
//! `approval.notify` (its key from a Secret the controller hands over, or
//! a file in file mode), else the sidecar's `--approval-webhook` (key in
//! `--approval-webhook-secret-file`). A rule with its own webhook whose key
//! cannot be had sends nothing — never unsigned, and never to the sidecar's
//! webhook, which belongs to somebody else — and counts it `no_key`.
//!
//! Deliveries run beside the call, never in its way: a slow or dead
//! receiver delays no decision. They are bounded (at most [`IN_FLIGHT`] at
//! once; past that one is dropped and counted) so a flood of held calls
//! cannot pile up tasks. The receiver checks `X-Tollgate-Signature-256:
//! sha256=<hex>` over the exact body, and may see a delivery twice (a retry
//! after a lost answer); `X-Tollgate-Delivery` names it.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use http::Uri;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use prometheus::IntCounterVec;
use rustls::RootCertStore;
use serde_json::json;
use sha2::Sha256;
use tokio::sync::Semaphore;

use tollgate_policy::compile::approval::{Notify, NotifySecret};
use tollgate_policy::snapshot::{Snapshot, notify_key_name};
use tollgate_policy::spec::SecretKeyRef;
use tollgate_runtime::label_values;
use tollgate_runtime::labels::LabelValue;

use super::store::Record;

/// Deliveries under way at once, at most.
const IN_FLIGHT: usize = 32;
/// Attempts per delivery.
const ATTEMPTS: u32 = 5;
/// The first wait between attempts; doubled each time.
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// How long one attempt may take.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// The signature header.
pub(crate) const SIGNATURE: &str = "x-tollgate-signature-256";

label_values! {
    /// What became of a notification
    /// (`tollgate_approval_notifications_total{result}`).
    pub enum Delivery {
        /// The receiver answered 2xx.
        Delivered => "delivered",
        /// Every attempt failed.
        Failed => "failed",
        /// Too many deliveries were under way; not sent.
        Dropped => "dropped",
        /// The rule's own webhook has no key to sign with (its Secret or
        /// file is unreadable); not sent.
        NoKey => "no_key",
    }
}

/// What is notified.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    Requested,
    Approved,
    Rejected,
    Expired,
}

impl Event {
    fn as_str(self) -> &'static str {
        match self {
            Event::Requested => "requested",
            Event::Approved => "approved",
            Event::Rejected => "rejected",
            Event::Expired => "expired",
        }
    }
}

/// Where and how notifications go.
#[derive(Clone)]
pub struct NotifyConfig {
    /// The receiver, `http://` or `https://`.
    pub url: Uri,
    /// The HMAC-SHA256 key.
    pub secret: Vec<u8>,
}

/// Never the key.
impl std::fmt::Debug for NotifyConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyConfig")
            .field("url", &self.url)
            .field("secret", &format_args!("<{} bytes>", self.secret.len()))
            .finish()
    }
}

/// The signing keys the controller handed over in the snapshot, by policy
/// and `secretName/key` (see [`tollgate_policy::snapshot::SnapshotPolicy`]).
#[derive(Default)]
pub struct NotifyKeys {
    keys: std::sync::RwLock<HashMap<String, BTreeMap<String, Vec<u8>>>>,
}

/// Never a key.
impl std::fmt::Debug for NotifyKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("NotifyKeys(..)")
    }
}

impl NotifyKeys {
    /// Takes the keys of `snapshot`, dropping any it no longer carries.
    pub fn replace(&self, snapshot: &Snapshot) {
        let keys = snapshot
            .policies
            .iter()
            .filter(|p| !p.notify_keys.is_empty())
            .map(|p| {
                let keys = p
                    .notify_keys
                    .iter()
                    .map(|(name, k)| (name.clone(), k.key.0.trim_ascii().to_vec()))
                    .filter(|(_, k)| !k.is_empty())
                    .collect();
                (p.name.clone(), keys)
            })
            .collect();
        *self.keys.write().unwrap_or_else(|e| e.into_inner()) = keys;
    }

    fn get(&self, policy: &str, secret: &SecretKeyRef) -> Option<Vec<u8>> {
        self.keys
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(policy)?
            .get(&notify_key_name(secret))
            .cloned()
    }
}

/// Where one notification goes, once its key is read.
enum Target {
    /// Here, signed with this key.
    To(NotifyConfig),
    /// The rule's own webhook, whose key could not be had.
    NoKey(String),
}

/// Sends notifications.
pub(crate) struct Notifier {
    /// The sidecar's `--approval-webhook`, for rules without their own.
    default: Option<NotifyConfig>,
    /// The keys of rules' own webhooks, from the controller.
    keys: Arc<NotifyKeys>,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    slots: Arc<Semaphore>,
    counted: IntCounterVec,
}

impl Notifier {
    /// A notifier trusting the public roots for `https://` receivers;
    /// `default` serves the rules without a webhook of their own.
    pub(crate) fn new(
        default: Option<NotifyConfig>,
        keys: Arc<NotifyKeys>,
        counted: IntCounterVec,
    ) -> Result<Self, rustls::Error> {
        let roots = RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(crate::tls::client_config(roots)?)
            .https_or_http()
            .enable_http1()
            .build();
        for d in Delivery::ALL {
            counted.with_label_values(&[d.as_str()]);
        }
        Ok(Notifier {
            default,
            keys,
            client: Client::builder(TokioExecutor::new()).build(connector),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            counted,
        })
    }

    /// Sends `event` about `r` in the background, if it goes anywhere.
    pub(crate) fn send(self: &Arc<Self>, event: Event, r: &Record) {
        if r.settings.notify.is_none() && self.default.is_none() {
            return;
        }
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.count(Delivery::Dropped);
            tracing::warn!(approval = %r.id, event = event.as_str(), "too many approval notifications under way; this one is dropped");
            return;
        };
        let body = Bytes::from(json!({ "event": event.as_str(), "approval": r }).to_string());
        let delivery = format!("{}-{}", r.id, event.as_str());
        let me = self.clone();
        let notify = r.settings.notify.clone();
        let policy = r.call.policy.clone();
        tokio::spawn(async move {
            let result = match me.target(&policy, notify.as_ref()).await {
                Some(Target::To(to)) => me.deliver(&to, &delivery, event, body).await,
                Some(Target::NoKey(why)) => {
                    tracing::warn!(delivery, policy, "approval notification not sent: {why}");
                    Delivery::NoKey
                }
                None => Delivery::Failed,
            };
            me.count(result);
            drop(permit);
        });
    }

    /// The rule's own webhook with its key, else the sidecar's.
    async fn target(&self, policy: &str, notify: Option<&Notify>) -> Option<Target> {
        let Some(n) = notify else {
            return self.default.clone().map(Target::To);
        };
        let Ok(url) = n.url.parse::<Uri>() else {
            return Some(Target::NoKey(format!("{:?} is not a URL", n.url)));
        };
        let secret = match &n.secret {
            NotifySecret::Secret(s) => self.keys.get(policy, s).ok_or_else(|| {
                format!(
                    "the controller has not handed over key {:?} of Secret {:?} (the policy's status, condition NotificationsReady, says why)",
                    s.key, s.name
                )
            }),
            NotifySecret::File(path) => match tokio::fs::read(path).await {
                Ok(k) if !k.trim_ascii().is_empty() => Ok(k.trim_ascii().to_vec()),
                Ok(_) => Err(format!("secretFile {} is empty", path.display())),
                Err(e) => Err(format!("reading secretFile {}: {e}", path.display())),
            },
        };
        Some(match secret {
            Ok(secret) => Target::To(NotifyConfig { url, secret }),
            Err(why) => Target::NoKey(why),
        })
    }

    async fn deliver(
        &self,
        to: &NotifyConfig,
        delivery: &str,
        event: Event,
        body: Bytes,
    ) -> Delivery {
        let signature = sign(&to.secret, &body);
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let request = http::Request::post(to.url.clone())
                .header(http::header::CONTENT_TYPE, "application/json")
                .header(SIGNATURE, &signature)
                .header("x-tollgate-event", event.as_str())
                .header("x-tollgate-delivery", delivery)
                .body(Full::new(body.clone()));
            let Ok(request) = request else {
                return Delivery::Failed;
            };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, self.client.request(request)).await {
                Ok(Ok(resp)) if resp.status().is_success() => return Delivery::Delivered,
                Ok(Ok(resp)) => {
                    tracing::warn!(delivery, attempt, status = %resp.status(), "approval notification refused")
                }
                Ok(Err(e)) => {
                    tracing::warn!(delivery, attempt, error = %e, "approval notification failed")
                }
                Err(_) => tracing::warn!(delivery, attempt, "approval notification timed out"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(wait).await;
                wait *= 2;
            }
        }
        Delivery::Failed
    }

    fn count(&self, d: Delivery) {
        self.counted.with_label_values(&[d.as_str()]).inc();
    }
}

/// `sha256=<hex of HMAC-SHA256(secret, body)>`.
pub(crate) fn sign(secret: &[u8], body: &[u8]) -> String {
    // HMAC accepts keys of any length; this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(body);
    let tag = mac.finalize().into_bytes();
    let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            sign(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
