//! Telling people an approval waits (and what became of it): a JSON POST to
//! `--approval-webhook`, signed with HMAC-SHA256 under the key in
//! `--approval-webhook-secret-file`, retried with backoff.
//!
//! Deliveries run beside the call, never in its way: a slow or dead
//! receiver delays no decision. They are bounded (at most [`IN_FLIGHT`] at
//! once; past that one is dropped and counted) so a flood of held calls
//! cannot pile up tasks. The receiver checks `X-Tollgate-Signature-256:
//! sha256=<hex>` over the exact body, and may see a delivery twice (a retry
//! after a lost answer); `X-Tollgate-Delivery` names it.

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
#[derive(Clone, Debug)]
pub struct NotifyConfig {
    /// The receiver, `http://` or `https://`.
    pub url: Uri,
    /// The HMAC-SHA256 key.
    pub secret: Vec<u8>,
}

/// Sends notifications.
pub(crate) struct Notifier {
    config: NotifyConfig,
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    slots: Arc<Semaphore>,
    counted: IntCounterVec,
}

impl Notifier {
    /// A notifier trusting the public roots for `https://` receivers.
    pub(crate) fn new(config: NotifyConfig, counted: IntCounterVec) -> Result<Self, rustls::Error> {
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
            config,
            client: Client::builder(TokioExecutor::new()).build(connector),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            counted,
        })
    }

    /// Sends `event` about `r` in the background.
    pub(crate) fn send(self: &Arc<Self>, event: Event, r: &Record) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            self.count(Delivery::Dropped);
            tracing::warn!(approval = %r.id, event = event.as_str(), "too many approval notifications under way; this one is dropped");
            return;
        };
        let body = Bytes::from(json!({ "event": event.as_str(), "approval": r }).to_string());
        let delivery = format!("{}-{}", r.id, event.as_str());
        let me = self.clone();
        tokio::spawn(async move {
            let result = me.deliver(&delivery, event, body).await;
            me.count(result);
            drop(permit);
        });
    }

    async fn deliver(&self, delivery: &str, event: Event, body: Bytes) -> Delivery {
        let signature = sign(&self.config.secret, &body);
        let mut wait = FIRST_BACKOFF;
        for attempt in 1..=ATTEMPTS {
            let request = http::Request::post(self.config.url.clone())
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
