//! Which snapshot version each sidecar enforces, across controller replicas.
//!
//! Every replica serves sidecars, but only the leader writes status, so
//! acknowledgements received by one replica must reach the leader. Each
//! replica publishes its own in a ConfigMap (`tollgate-acks-<replica>`,
//! renewed every few seconds) and reads everyone else's; a replica that
//! stopped renewing is ignored after [`STALE_AFTER`]. The leader merges its
//! own acks (fresh, from memory) with the others (from the ConfigMaps),
//! newest first.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use tollgate_policy::snapshot::{MAX_WOULD_DENY, WouldDeny};

use crate::index::Key;

/// The label on every replica's ack ConfigMap.
pub(crate) const ACKS_LABEL: &str = "tollgate.dev/acks";
/// When the ConfigMap was last renewed (RFC 3339).
const RENEWED: &str = "tollgate.dev/renewed";
/// The replica that owns a ConfigMap.
const REPLICA: &str = "tollgate.dev/replica";
/// The data key holding the acks.
const DATA_KEY: &str = "acks.json";
/// How often a replica renews its ConfigMap even without new acks.
pub(crate) const RENEW_EVERY: Duration = Duration::from_secs(10);
/// A replica silent this long is presumed gone.
pub(crate) const STALE_AFTER: Duration = Duration::from_secs(45);

/// One acknowledgement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Ack {
    /// The pod's uid.
    pub uid: String,
    /// The version it enforces.
    pub version: String,
    /// When it was acknowledged (Unix milliseconds).
    pub at: i64,
    /// Its Audit-mode policies' would-be denials of the last hour.
    #[serde(default, rename = "wouldDeny", skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<WouldDeny>,
}

struct Remote {
    renewed: Timestamp,
    acks: BTreeMap<Key, Ack>,
}

/// The acknowledged `(uid, version)` of each sidecar pod: what the status
/// writer counts as "enforcing".
pub(crate) type AckView = HashMap<Key, (String, String)>;

/// The would-be denials each sidecar pod (`uid`) last reported.
pub(crate) type WouldDenyView = HashMap<Key, (String, Vec<WouldDeny>)>;

/// This replica's acks, and the other replicas'.
pub(crate) struct AckBook {
    identity: String,
    local: Mutex<BTreeMap<Key, Ack>>,
    remote: Mutex<BTreeMap<String, Remote>>,
    changed: watch::Sender<u64>,
    local_changed: watch::Sender<u64>,
}

impl AckBook {
    /// An empty book for the replica `identity`.
    pub(crate) fn new(identity: &str) -> Self {
        AckBook {
            identity: identity.to_owned(),
            local: Mutex::default(),
            remote: Mutex::default(),
            changed: watch::Sender::new(0),
            local_changed: watch::Sender::new(0),
        }
    }

    /// Records that the sidecar of `key` (pod `uid`) enforces `version`
    /// and would have denied `would_deny`. True when the pod had not
    /// acknowledged this version before (a repeated ack only updates the
    /// counts).
    pub(crate) fn record(
        &self,
        key: Key,
        uid: &str,
        version: &str,
        mut would_deny: Vec<WouldDeny>,
    ) -> bool {
        would_deny.truncate(MAX_WOULD_DENY);
        let ack = Ack {
            uid: uid.to_owned(),
            version: version.to_owned(),
            at: Timestamp::now().as_millisecond(),
            would_deny,
        };
        let previous = lock(&self.local).insert(key, ack);
        self.changed.send_modify(|n| *n += 1);
        self.local_changed.send_modify(|n| *n += 1);
        previous.is_none_or(|p| p.uid != uid || p.version != version)
    }

    /// Drops acks of pods `keep` rejects (deleted pods).
    pub(crate) fn retain(&self, keep: impl Fn(&Key) -> bool) {
        let mut local = lock(&self.local);
        let before = local.len();
        local.retain(|k, _| keep(k));
        if local.len() != before {
            self.local_changed.send_modify(|n| *n += 1);
        }
    }

    /// Wakes on any change, local or remote.
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The merged view: for each pod, the newest ack any live replica has.
    pub(crate) fn view(&self) -> AckView {
        self.view_at(Timestamp::now())
    }

    /// The merged would-be denials: for each pod, those of its newest ack.
    pub(crate) fn would_deny(&self) -> WouldDenyView {
        self.merged_at(Timestamp::now())
            .into_iter()
            .filter(|(_, a)| !a.would_deny.is_empty())
            .map(|(k, a)| (k, (a.uid, a.would_deny)))
            .collect()
    }

    fn view_at(&self, now: Timestamp) -> AckView {
        self.merged_at(now)
            .into_iter()
            .map(|(k, a)| (k, (a.uid, a.version)))
            .collect()
    }

    fn merged_at(&self, now: Timestamp) -> BTreeMap<Key, Ack> {
        let mut newest: BTreeMap<Key, Ack> = lock(&self.local).clone();
        for remote in lock(&self.remote).values() {
            let age = now.duration_since(remote.renewed);
            if age.as_secs() > STALE_AFTER.as_secs() as i64 {
                continue;
            }
            for (key, ack) in &remote.acks {
                if newest.get(key).is_none_or(|n| n.at < ack.at) {
                    newest.insert(key.clone(), ack.clone());
                }
            }
        }
        newest
    }

    fn set_remote(&self, replica: String, renewed: Timestamp, acks: BTreeMap<Key, Ack>) {
        lock(&self.remote).insert(replica, Remote { renewed, acks });
        self.changed.send_modify(|n| *n += 1);
    }

    fn remove_remote(&self, replica: &str) {
        if lock(&self.remote).remove(replica).is_some() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    fn encode_local(&self) -> String {
        let local = lock(&self.local);
        let by_name: BTreeMap<String, &Ack> = local
            .iter()
            .map(|((ns, pod), a)| (format!("{ns}/{pod}"), a))
            .collect();
        serde_json::to_string(&by_name).unwrap_or_default()
    }
}

fn decode(data: &str) -> BTreeMap<Key, Ack> {
    let by_name: BTreeMap<String, Ack> = serde_json::from_str(data).unwrap_or_default();
    by_name
        .into_iter()
        .filter_map(|(name, ack)| {
            let (ns, pod) = name.split_once('/')?;
            Some(((ns.to_owned(), pod.to_owned()), ack))
        })
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ConfigMap name of a replica (a valid object name whatever the identity).
pub(crate) fn configmap_name(identity: &str) -> String {
    format!(
        "tollgate-acks-{}",
        tollgate_runtime::names::dns_part(identity, 200)
    )
}

/// Publishes this replica's acks until `shutdown`, then removes them.
///
/// `owner` is this replica's own Pod, when it runs in one: the ConfigMap is
/// then deleted with the Pod by Kubernetes' garbage collector, also when the
/// replica cannot delete it itself (killed, or its RBAC already gone during
/// `helm uninstall`).
pub(crate) async fn publish(
    book: Arc<AckBook>,
    api: Api<ConfigMap>,
    owner: Option<OwnerReference>,
    mut shutdown: watch::Receiver<bool>,
) {
    let name = configmap_name(&book.identity);
    let mut changes = book.local_changed.subscribe();
    loop {
        let mut body = serde_json::json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "labels": { ACKS_LABEL: "true" },
                "annotations": { RENEWED: Timestamp::now().to_string(), REPLICA: book.identity },
            },
            "data": { DATA_KEY: book.encode_local() },
        });
        if let Some(owner) = &owner {
            body["metadata"]["ownerReferences"] = serde_json::json!([owner]);
        }
        if let Err(e) = api
            .patch(
                &name,
                &PatchParams::apply("tollgate-controller").force(),
                &Patch::Apply(body),
            )
            .await
        {
            tracing::warn!(error = %e, configmap = %name, "cannot publish sidecar acknowledgements");
        }
        tokio::select! {
            _ = shutdown.changed() => break,
            _ = changes.changed() => tokio::time::sleep(Duration::from_millis(100)).await,
            _ = tokio::time::sleep(RENEW_EVERY) => {}
        }
    }
    let _ = api.delete(&name, &DeleteParams::default()).await;
}

/// Follows every replica's ack ConfigMap until `shutdown`.
pub(crate) async fn collect(
    book: Arc<AckBook>,
    api: Api<ConfigMap>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().labels(&format!("{ACKS_LABEL}=true"));
    let mut events = std::pin::pin!(watcher(api, config));
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return,
            e = events.next() => e,
        };
        match event {
            Some(Ok(watcher::Event::Apply(cm) | watcher::Event::InitApply(cm))) => {
                let annotations = cm.metadata.annotations.clone().unwrap_or_default();
                let Some(replica) = annotations.get(REPLICA).cloned() else {
                    continue;
                };
                if replica == book.identity {
                    continue;
                }
                let renewed = annotations
                    .get(RENEWED)
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(Timestamp::UNIX_EPOCH);
                let acks = cm
                    .data
                    .as_ref()
                    .and_then(|d| d.get(DATA_KEY))
                    .map(|d| decode(d))
                    .unwrap_or_default();
                book.set_remote(replica, renewed, acks);
            }
            Some(Ok(watcher::Event::Delete(cm))) => {
                if let Some(replica) = cm
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(REPLICA))
                {
                    book.remove_remote(replica);
                }
            }
            Some(Ok(_)) => {}
            Some(Err(e)) => {
                tracing::warn!(error = %e, "watching acknowledgement ConfigMaps failed; retrying");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            None => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(pod: &str) -> Key {
        ("ns".into(), pod.into())
    }

    #[test]
    fn the_newest_ack_wins_and_silent_replicas_are_ignored() {
        let book = AckBook::new("replica-a");
        book.record(key("p1"), "u1", "v1", vec![]);
        let now = Timestamp::now();
        let later = now.as_millisecond() + 1000;
        let remote = BTreeMap::from([
            (
                key("p1"),
                Ack {
                    uid: "u1".into(),
                    version: "v2".into(),
                    at: later,
                    would_deny: vec![],
                },
            ),
            (
                key("p2"),
                Ack {
                    uid: "u2".into(),
                    version: "v9".into(),
                    at: 0,
                    would_deny: vec![],
                },
            ),
        ]);
        book.set_remote("replica-b".into(), now, remote.clone());
        let view = book.view_at(now);
        assert_eq!(view[&key("p1")], ("u1".into(), "v2".into()));
        assert_eq!(view[&key("p2")], ("u2".into(), "v9".into()));
        // Replica b stops renewing.
        let much_later = now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(120))
            .unwrap();
        let view = book.view_at(much_later);
        assert_eq!(view[&key("p1")], ("u1".into(), "v1".into()));
        assert!(!view.contains_key(&key("p2")));
    }

    #[test]
    fn acks_round_trip_through_the_configmap_encoding() {
        let book = AckBook::new("r");
        let counts = vec![WouldDeny {
            policy: "audit".into(),
            rule: "r".into(),
            count: 3,
        }];
        assert!(book.record(key("p"), "u", "v", vec![]));
        // The same version again, with counts: not new, the counts kept.
        assert!(!book.record(key("p"), "u", "v", counts.clone()));
        let decoded = decode(&book.encode_local());
        assert_eq!(decoded[&key("p")].version, "v");
        assert_eq!(decoded[&key("p")].would_deny, counts);
        assert_eq!(book.would_deny()[&key("p")], ("u".into(), counts));
    }

    #[test]
    fn configmap_names_are_valid_whatever_the_identity() {
        assert_eq!(
            configmap_name("Tollgate_Controller.7f9"),
            "tollgate-acks-tollgate-controller-7f9"
        );
    }
}
