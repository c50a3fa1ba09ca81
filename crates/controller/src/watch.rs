//! The watches the index is built from — `McpToolPolicy` and
//! `ClusterMcpToolPolicy` objects, namespaces (their labels) and the pods
//! that run a sidecar — and whether what they delivered is complete.
//!
//! A watcher lists everything at start and again whenever its watch expires
//! ("too old resource version", HTTP 410). [`Listing`] buffers a list until
//! its end and hands it over whole ([`Step::Relist`]), so the index swaps the
//! old picture for the new one at once and no snapshot is built from half a
//! list; objects deleted while the watch was away leave with the swap. It
//! also says whether the watch is current: not before the first list is in,
//! and not from an expired watch until its re-list is in. [`Synced`] joins
//! the watches: the push server serves sidecars, and `/readyz` says ready,
//! only while every one of them is current and its last step is in the index.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use futures_util::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};
use tokio::sync::watch;

use tollgate_policy::snapshot::SIDECAR_LABEL;

use crate::acks::AckBook;
use crate::index::{Index, Key, NamespaceInput, PodInput, PolicyInput, policy_key, policy_name};
use crate::metrics::{ControllerMetrics, WatchEvent, WatchKind};
use crate::object::WatchedPolicy;
use crate::status::Observed;
use crate::traces;

/// What a watcher event asks of whoever keeps the objects.
#[derive(Debug, PartialEq)]
pub(crate) enum Step<K> {
    /// Nothing yet (a list is being buffered).
    Wait,
    /// An object was added or changed.
    Apply(K),
    /// An object was deleted.
    Delete(K),
    /// A complete list: these objects and no others.
    Relist(Vec<K>),
}

/// The state of one watch: the list being buffered, and whether the last
/// complete list is still current.
#[derive(Debug)]
pub(crate) struct Listing<K> {
    buffer: Option<Vec<K>>,
    current: bool,
}

impl<K> Default for Listing<K> {
    fn default() -> Self {
        Listing {
            buffer: None,
            current: false,
        }
    }
}

impl<K> Listing<K> {
    /// Takes one event.
    pub(crate) fn on_event(&mut self, event: watcher::Event<K>) -> Step<K> {
        match event {
            watcher::Event::Init => {
                self.buffer = Some(Vec::new());
                self.current = false;
                Step::Wait
            }
            watcher::Event::InitApply(k) => match self.buffer.as_mut() {
                Some(buffer) => {
                    buffer.push(k);
                    Step::Wait
                }
                // The watcher always starts a list with Init; should it not,
                // the object is still news.
                None => Step::Apply(k),
            },
            watcher::Event::InitDone => {
                self.current = true;
                Step::Relist(self.buffer.take().unwrap_or_default())
            }
            watcher::Event::Apply(k) => Step::Apply(k),
            watcher::Event::Delete(k) => Step::Delete(k),
        }
    }

    /// Takes one error: one after which the watcher lists again makes the
    /// watch stale until that list is in. (Other errors are retried from
    /// where the watch was; nothing is missed.)
    pub(crate) fn on_error(&mut self, e: &watcher::Error) {
        let relists = match e {
            watcher::Error::WatchError(status) => status.code == 410,
            watcher::Error::InitialListFailed(_) | watcher::Error::NoResourceVersion => true,
            watcher::Error::WatchStartFailed(_) | watcher::Error::WatchFailed(_) => false,
        };
        if relists {
            self.current = false;
        }
    }

    /// Whether the last complete list is current.
    pub(crate) fn current(&self) -> bool {
        self.current
    }
}

/// A watcher's events as [`Step`]s, with its readiness published on a
/// channel: `false` as soon as it goes stale, `true` only when the caller
/// says the complete list is applied ([`Watched::applied`]).
pub(crate) struct Watched<S, K> {
    events: S,
    listing: Listing<K>,
    ready: watch::Sender<bool>,
    what: String,
}

impl<S, K> Watched<S, K>
where
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Unpin,
{
    /// Follows `events`, naming `what` is watched in logs.
    pub(crate) fn new(events: S, ready: watch::Sender<bool>, what: &str) -> Self {
        Watched {
            events,
            listing: Listing::default(),
            ready,
            what: what.to_owned(),
        }
    }

    /// The next step, or `None` once `shutdown` fires or the stream ends. A
    /// failed watch call is logged and skipped: the watcher backs off and
    /// retries by itself.
    pub(crate) async fn next(&mut self, shutdown: &mut watch::Receiver<bool>) -> Option<Step<K>> {
        loop {
            let event = tokio::select! {
                _ = shutdown.changed() => return None,
                e = self.events.next() => e?,
            };
            match event {
                Ok(e) => match self.listing.on_event(e) {
                    Step::Wait => self.stale_if_not_current(),
                    step => return Some(step),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "watching {} failed; retrying", self.what);
                    self.listing.on_error(&e);
                    self.stale_if_not_current();
                }
            }
        }
    }

    /// The caller has put the last step into its state: publish readiness.
    pub(crate) fn applied(&self) {
        let current = self.listing.current();
        self.ready.send_if_modified(|r| {
            let changed = *r != current;
            *r = current;
            changed
        });
        if current {
            tracing::debug!(watch = %self.what, "listed and indexed");
        }
    }

    fn stale_if_not_current(&self) {
        if !self.listing.current() {
            self.ready.send_if_modified(|r| std::mem::replace(r, false));
        }
    }
}

/// Whether every watch is current and applied: the push server serves
/// snapshots and `/readyz` says ready only then.
#[derive(Clone)]
pub(crate) struct Synced {
    watches: Vec<(&'static str, watch::Receiver<bool>)>,
}

impl Synced {
    /// Joins the readiness channels of the named watches.
    pub(crate) fn new(watches: Vec<(&'static str, watch::Receiver<bool>)>) -> Self {
        Synced { watches }
    }

    /// `Ok` when all are current, else the names of those that are not.
    pub(crate) fn check(&self) -> Result<(), NotSynced> {
        let stale: Vec<&'static str> = self
            .watches
            .iter()
            .filter(|(_, r)| !*r.borrow())
            .map(|(name, _)| *name)
            .collect();
        if stale.is_empty() {
            Ok(())
        } else {
            Err(NotSynced(stale))
        }
    }
}

/// The watches that have not been listed and indexed yet, named in the
/// readiness answer and in the push server's 503.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "the {} not been listed and indexed yet (at start, or again after a watch expired)",
    match .0.as_slice() {
        [one] => format!("{one} watch has"),
        many => format!("{} watches have", many.join(" and ")),
    }
)]
pub(crate) struct NotSynced(Vec<&'static str>);

/// Follows the policies of one kind (`McpToolPolicy`, or
/// `ClusterMcpToolPolicy` under the namespace `""`) into the index.
pub(crate) async fn watch_policies<K: WatchedPolicy>(
    api: Api<K>,
    index: Arc<Mutex<Index>>,
    observed: Arc<Observed>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = if K::CLUSTER {
        WatchKind::ClusterPolicy
    } else {
        WatchKind::Policy
    };
    let events = std::pin::pin!(watcher(api, watcher::Config::default()).default_backoff());
    let mut watched = Watched::new(events, ready, K::KIND);
    while let Some(step) = watched.next(&mut shutdown).await {
        {
            let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Step::Wait => {}
                Step::Apply(obj) => {
                    if let Some(input) = policy_input(&obj, kind, &observed, &metrics) {
                        let started = Instant::now();
                        let key = (input.namespace.clone(), input.name.clone());
                        let _span =
                            traces::reconcile(kind, "apply", Some(policy_name(&key.0, &key.1)));
                        index.apply_policy(input);
                        log_refusal(&index, &key);
                        tracing::debug!(policy = %policy_name(&key.0, &key.1), elapsed = ?started.elapsed(), "policy indexed");
                    }
                }
                Step::Delete(obj) => {
                    if let Some(key) = policy_key(obj.meta()) {
                        let _span =
                            traces::reconcile(kind, "delete", Some(policy_name(&key.0, &key.1)));
                        metrics.watch_event(kind, WatchEvent::Delete);
                        index.delete_policy(&key.0, &key.1);
                        observed.remove(&key);
                    }
                }
                Step::Relist(objs) => {
                    let _span = traces::reconcile(kind, "relist", None);
                    let inputs: Vec<PolicyInput> = objs
                        .iter()
                        .filter_map(|o| policy_input(o, kind, &observed, &metrics))
                        .collect();
                    let keys: BTreeSet<Key> = inputs
                        .iter()
                        .map(|i| (i.namespace.clone(), i.name.clone()))
                        .collect();
                    // Each kind re-lists only its own: namespaced policies
                    // never have the namespace "", cluster policies always.
                    observed.retain(|k| k.0.is_empty() != K::CLUSTER || keys.contains(k));
                    index.relist_policies(inputs, K::CLUSTER);
                    for key in &keys {
                        log_refusal(&index, key);
                    }
                }
            }
            let (accepted, invalid) = index.policy_counts();
            metrics.set_policies(accepted, invalid);
        }
        watched.applied();
    }
}

/// The index's input for a watched policy; records its status for the writer.
fn policy_input<K: WatchedPolicy>(
    obj: &K,
    kind: WatchKind,
    observed: &Observed,
    metrics: &ControllerMetrics,
) -> Option<PolicyInput> {
    let input = PolicyInput::of(obj)?;
    metrics.watch_event(kind, WatchEvent::Apply);
    let key = (input.namespace.clone(), input.name.clone());
    observed.set(key, obj.object_ref(&()), obj.status().cloned());
    Some(input)
}

fn log_refusal(index: &Index, key: &Key) {
    if let Some(report) = index
        .report(&key.0, &key.1)
        .filter(|r| !r.problems.is_empty())
    {
        tracing::warn!(
            policy = %policy_name(&key.0, &key.1),
            generation = report.generation,
            in_force = ?report.accepted_generation,
            problems = %tollgate_policy::Problems(report.problems),
            "policy refused; its last accepted generation stays in force"
        );
    }
}

/// Follows namespaces' labels, which cluster policies' `namespaceSelector`
/// matches, into the index.
pub(crate) async fn watch_namespaces(
    api: Api<Namespace>,
    config: watcher::Config,
    index: Arc<Mutex<Index>>,
    metrics: ControllerMetrics,
    ready: watch::Sender<bool>,
    mut shutdown: watch::Receiver<bool>,
) {
    let events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut watched = Watched::new(events, ready, "namespaces");
    let input = NamespaceInput::of;
    while let Some(step) = watched.next(&mut shutdown).await {
        {
            let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Step::Wait => {}
                Step::Apply(ns) => {
                    metrics.watch_event(WatchKind::Namespace, WatchEvent::Apply);
                    if let Some(input) = input(&ns) {
                        index.apply_namespace(input);
                    }
                }
                Step::Delete(ns) => {
                    metrics.watch_event(WatchKind::Namespace, WatchEvent::Delete);
                    if let Some(name) = &ns.metadata.name {
                        index.delete_namespace(name);
                    }
                }
                Step::Relist(all) => {
                    let inputs = all
                        .iter()
                        .inspect(|_| metrics.watch_event(WatchKind::Namespace, WatchEvent::Apply))
                        .filter_map(input)
                        .collect();
                    index.relist_namespaces(inputs);
                }
            }
        }
        watched.applied();
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
    let events = std::pin::pin!(watcher(api, config).default_backoff());
    let mut watched = Watched::new(events, ready, "sidecar pods");
    while let Some(step) = watched.next(&mut shutdown).await {
        {
            let mut index = index.lock().unwrap_or_else(|e| e.into_inner());
            match step {
                Step::Wait => {}
                Step::Apply(pod) => {
                    metrics.watch_event(WatchKind::Pod, WatchEvent::Apply);
                    match PodInput::from_pod(&pod) {
                        Some(input) => index.apply_pod(input),
                        None => {
                            if let Some(key) = key_of(&pod.metadata) {
                                index.delete_pod(&key.0, &key.1);
                            }
                        }
                    }
                }
                Step::Delete(pod) => {
                    metrics.watch_event(WatchKind::Pod, WatchEvent::Delete);
                    if let Some(key) = key_of(&pod.metadata) {
                        index.delete_pod(&key.0, &key.1);
                        acks.retain(|k| *k != key);
                    }
                }
                Step::Relist(pods) => {
                    let inputs: Vec<PodInput> = pods
                        .iter()
                        .inspect(|_| metrics.watch_event(WatchKind::Pod, WatchEvent::Apply))
                        .filter_map(PodInput::from_pod)
                        .collect();
                    let keys: BTreeSet<Key> = inputs
                        .iter()
                        .map(|i| (i.namespace.clone(), i.name.clone()))
                        .collect();
                    index.relist_pods(inputs);
                    acks.retain(|k| keys.contains(k));
                }
            }
            metrics.sidecar_pods(index.pod_count());
        }
        watched.applied();
    }
}

fn key_of(meta: &ObjectMeta) -> Option<Key> {
    Some((meta.namespace.clone()?, meta.name.clone()?))
}

#[cfg(test)]
mod tests;
