//! The two watches the index is built from: `McpToolPolicy` objects and the
//! pods that run a sidecar. Each re-list (at start and after a watch expires)
//! is tracked so objects deleted while the watch was away leave the index too.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::Resource;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use tollgate_policy::snapshot::SIDECAR_LABEL;

use crate::acks::AckBook;
use crate::index::{Index, Key, PodInput, PolicyInput};
use crate::metrics::{ControllerMetrics, WatchEvent, WatchKind};
use crate::object::PolicyObject;
use crate::status::Observed;

/// The next event of a watch, or `None` once `shutdown` fires or the stream
/// ends. A failed watch call is logged (naming `what` is watched) and
/// skipped: the watcher backs off and relists by itself.
pub(crate) async fn next_event<K>(
    events: &mut (impl futures_util::Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin),
    shutdown: &mut watch::Receiver<bool>,
    what: &str,
) -> Option<watcher::Event<K>> {
    loop {
        let event = tokio::select! {
            _ = shutdown.changed() => return None,
            e = events.next() => e?,
        };
        match event {
            Ok(e) => return Some(e),
            Err(e) => tracing::warn!(error = %e, "watching {what} failed; retrying"),
        }
    }
}

pub(crate) async fn watch_policies(
    api: Api<PolicyObject>,
    index: Arc<Mutex<Index>>,
    observed: Arc<Observed>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut listing: Option<BTreeSet<Key>> = None;
    while let Some(event) = next_event(&mut events, &mut shutdown, "McpToolPolicies").await {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(obj) | watcher::Event::Apply(obj) => {
                let Some(key) = key_of(&obj.metadata) else {
                    continue;
                };
                metrics.watch_event(WatchKind::Policy, WatchEvent::Apply);
                let generation = obj.metadata.generation.unwrap_or(0);
                let started = Instant::now();
                index.apply_policy(PolicyInput {
                    namespace: key.0.clone(),
                    name: key.1.clone(),
                    generation,
                    spec: obj.spec.clone(),
                });
                if let Some(report) = index
                    .report(&key.0, &key.1)
                    .filter(|r| !r.problems.is_empty())
                {
                    tracing::warn!(
                        policy = %format!("{}/{}", key.0, key.1),
                        generation,
                        problems = %tollgate_policy::Problems(report.problems),
                        "policy refused; its last accepted generation stays in force"
                    );
                }
                tracing::debug!(policy = %format!("{}/{}", key.0, key.1), elapsed = ?started.elapsed(), "policy indexed");
                observed.set(key.clone(), obj.object_ref(&()), obj.status.clone());
                if let Some(seen) = listing.as_mut() {
                    seen.insert(key);
                }
            }
            watcher::Event::Delete(obj) => {
                let Some(key) = key_of(&obj.metadata) else {
                    continue;
                };
                metrics.watch_event(WatchKind::Policy, WatchEvent::Delete);
                index.delete_policy(&key.0, &key.1);
                observed.remove(&key);
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    index.retain_policies(&seen);
                }
                let _ = ready.send(true);
            }
        }
        let (accepted, invalid) = index.policy_counts();
        metrics.set_policies(accepted, invalid);
    }
}

pub(crate) async fn watch_pods(
    api: Api<Pod>,
    index: Arc<Mutex<Index>>,
    acks: Arc<AckBook>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let config = watcher::Config::default().labels(&format!("{SIDECAR_LABEL}=true"));
    let mut events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut listing: Option<BTreeSet<Key>> = None;
    while let Some(event) = next_event(&mut events, &mut shutdown, "sidecar pods").await {
        let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Init => listing = Some(BTreeSet::new()),
            watcher::Event::InitApply(pod) | watcher::Event::Apply(pod) => {
                metrics.watch_event(WatchKind::Pod, WatchEvent::Apply);
                match PodInput::from_pod(&pod) {
                    Some(input) => {
                        if let Some(seen) = listing.as_mut() {
                            seen.insert((input.namespace.clone(), input.name.clone()));
                        }
                        index.apply_pod(input);
                    }
                    None => {
                        if let Some(key) = key_of(&pod.metadata) {
                            index.delete_pod(&key.0, &key.1);
                        }
                    }
                }
            }
            watcher::Event::Delete(pod) => {
                metrics.watch_event(WatchKind::Pod, WatchEvent::Delete);
                if let Some(key) = key_of(&pod.metadata) {
                    index.delete_pod(&key.0, &key.1);
                    acks.retain(|k| *k != key);
                }
            }
            watcher::Event::InitDone => {
                if let Some(seen) = listing.take() {
                    index.retain_pods(&seen);
                    acks.retain(|k| seen.contains(k));
                }
                let _ = ready.send(true);
            }
        }
        metrics.sidecar_pods.set(index.pod_count() as i64);
    }
}

fn key_of(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}
