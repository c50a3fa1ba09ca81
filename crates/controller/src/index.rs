//! The controller's picture of the cluster: the policies, the pods that run
//! a tollgate sidecar, and exactly what each of those pods must enforce.
//!
//! Synchronous and free of I/O, like linkerd's policy index: watchers feed
//! it objects, it recompiles what changed with the same `compile` as
//! `tollgate check`, and publishes each pod's [`Snapshot`] on a
//! `watch` channel — only when the content really changed, so an identical
//! recompute sends nothing to the sidecar. A policy whose new generation
//! does not compile keeps its last accepted generation in force — also
//! after a restart or a change of leader, from the copy the status writer
//! keeps in the policy's `status.accepted`.
//!
//! A watcher's re-list is applied as one batch ([`Index::relist_policies`],
//! [`Index::relist_pods`]): each pod's snapshot is recomputed once, after
//! every listed object is in, so no sidecar sees a snapshot built from half
//! a list.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;
use tokio::sync::watch;

use tollgate_policy::parse::parse_spec;
use tollgate_policy::snapshot::{SIDECAR_LABEL, Snapshot, SnapshotPolicy};
use tollgate_policy::spec::{AcceptedGeneration, McpToolPolicySpec};
use tollgate_policy::{Problem, compile};

/// `(namespace, name)`.
pub(crate) type Key = (String, String);

/// A policy as the watcher sees it, spec not yet checked.
#[derive(Clone, Debug)]
pub(crate) struct PolicyInput {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.generation`.
    pub generation: i64,
    /// `spec`, exactly as stored.
    pub spec: Value,
    /// `status.accepted`: the generation in force when the status was last
    /// written, restored when `spec` is refused and this index never saw
    /// an accepted generation itself.
    pub persisted: Option<AcceptedGeneration>,
}

/// A pod as the index needs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PodInput {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// `metadata.uid`.
    pub uid: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

impl PodInput {
    /// The pod, if it runs a tollgate sidecar.
    pub(crate) fn from_pod(pod: &Pod) -> Option<PodInput> {
        let labels = pod.metadata.labels.clone().unwrap_or_default();
        if labels.get(SIDECAR_LABEL).map(String::as_str) != Some("true") {
            return None;
        }
        Some(PodInput {
            namespace: pod.metadata.namespace.clone()?,
            name: pod.metadata.name.clone()?,
            uid: pod.metadata.uid.clone().unwrap_or_default(),
            labels,
        })
    }
}

/// The last accepted generation of a policy.
#[derive(Clone, Debug)]
struct Accepted {
    generation: i64,
    spec: McpToolPolicySpec,
    /// `spec` as JSON, what `status.accepted` keeps.
    json: Value,
    selector: Selector,
    rules: usize,
}

#[derive(Clone, Debug)]
struct PolicyState {
    generation: i64,
    /// Problems of `generation`; empty when it was accepted.
    problems: Vec<Problem>,
    accepted: Option<Accepted>,
    /// The selector of `generation`, when it parses, to count selected pods
    /// of a policy that was never accepted.
    selector: Option<Selector>,
}

struct PodState {
    uid: String,
    labels: BTreeMap<String, String>,
    tx: watch::Sender<Arc<Published>>,
}

/// A snapshot and when the index produced it (to measure how long it takes
/// to reach and be enforced by the sidecar).
#[derive(Debug, PartialEq)]
pub(crate) struct Published {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// When it was computed.
    pub at: Instant,
}

/// What a sidecar stream subscribes to.
pub(crate) struct Subscription {
    /// The pod's uid when the index learned of it.
    pub uid: String,
    /// The pod's snapshots.
    pub rx: watch::Receiver<Arc<Published>>,
}

/// What the status writer needs to know about one policy.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PolicyReport {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The current generation.
    pub generation: i64,
    /// The generation in force, if any was ever accepted.
    pub accepted_generation: Option<i64>,
    /// Its spec, for `status.accepted`.
    pub accepted_spec: Option<Value>,
    /// Why the current generation was refused; empty if it was accepted.
    pub problems: Vec<Problem>,
    /// Rules of the generation in force.
    pub rules: Option<usize>,
    /// Selected sidecar pods and the snapshot version each must enforce.
    pub selected: Vec<SelectedPod>,
}

/// One selected pod.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct SelectedPod {
    /// `(namespace, name)`.
    pub key: Key,
    /// `metadata.uid`.
    pub uid: String,
    /// The version of the pod's current snapshot.
    pub version: String,
}

/// The index.
pub(crate) struct Index {
    policies: BTreeMap<Key, PolicyState>,
    pods: BTreeMap<Key, PodState>,
    changed: watch::Sender<u64>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            policies: BTreeMap::new(),
            pods: BTreeMap::new(),
            changed: watch::Sender::new(0),
        }
    }
}

impl Index {
    /// An empty index.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Wakes whenever a policy or pod changed (for the status writer).
    pub(crate) fn changes(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Adds or updates a policy.
    pub(crate) fn apply_policy(&mut self, input: PolicyInput) {
        let namespace = input.namespace.clone();
        if self.upsert_policy(input) {
            self.recompute_namespace(&namespace);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Replaces every policy with `inputs` (a watcher's complete list):
    /// policies not listed are gone. Snapshots are recomputed once, after
    /// all of it.
    pub(crate) fn relist_policies(&mut self, inputs: Vec<PolicyInput>) {
        let keep: BTreeSet<Key> = inputs
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect();
        let mut touched = BTreeSet::new();
        for input in inputs {
            let namespace = input.namespace.clone();
            if self.upsert_policy(input) {
                touched.insert(namespace);
            }
        }
        let gone: Vec<Key> = self
            .policies
            .keys()
            .filter(|k| !keep.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.policies.remove(&key);
            touched.insert(key.0);
        }
        for namespace in &touched {
            self.recompute_namespace(namespace);
        }
        if !touched.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Puts `input` in `policies` without recomputing snapshots; false when
    /// nothing changed.
    fn upsert_policy(&mut self, input: PolicyInput) -> bool {
        let key = (input.namespace.clone(), input.name.clone());
        let name = format!("{}/{}", input.namespace, input.name);
        if let Some(p) = self.policies.get_mut(&key)
            && p.generation == input.generation
        {
            // Same generation: the spec did not change (status or metadata
            // did). Only a refused policy with nothing in force learns from
            // it: the leader may just have written what it had accepted.
            if p.accepted.is_some() {
                return false;
            }
            p.accepted = restore(&name, input.generation, input.persisted);
            return p.accepted.is_some();
        }
        let accepted_before = self.policies.get(&key).and_then(|p| p.accepted.clone());
        let (selector, outcome) = check(&name, input.spec);
        let state = match outcome {
            Ok((spec, json, selector, rules)) => PolicyState {
                generation: input.generation,
                problems: Vec::new(),
                selector: Some(selector.clone()),
                accepted: Some(Accepted {
                    generation: input.generation,
                    spec,
                    json,
                    selector,
                    rules,
                }),
            },
            Err(problems) => PolicyState {
                generation: input.generation,
                problems,
                selector,
                accepted: accepted_before
                    .or_else(|| restore(&name, input.generation, input.persisted)),
            },
        };
        self.policies.insert(key, state);
        true
    }

    /// Removes a policy; its rules leave every sidecar.
    pub(crate) fn delete_policy(&mut self, namespace: &str, name: &str) {
        if self
            .policies
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.recompute_namespace(namespace);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Adds or updates a sidecar pod.
    pub(crate) fn apply_pod(&mut self, input: PodInput) {
        if self.apply_pod_quietly(input) {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Adds or updates a sidecar pod and its snapshot; false when nothing
    /// changed.
    fn apply_pod_quietly(&mut self, input: PodInput) -> bool {
        let key = (input.namespace.clone(), input.name.clone());
        match self.pods.get_mut(&key) {
            Some(pod) if pod.uid == input.uid && pod.labels == input.labels => return false,
            Some(pod) if pod.uid == input.uid => pod.labels = input.labels,
            _ => {
                // A new pod, or a new pod under an old name: a fresh channel,
                // so streams of the old pod end.
                let empty = Published {
                    snapshot: Snapshot::new(&input.namespace, &input.name, Vec::new()),
                    at: Instant::now(),
                };
                self.pods.insert(
                    key.clone(),
                    PodState {
                        uid: input.uid,
                        labels: input.labels,
                        tx: watch::Sender::new(Arc::new(empty)),
                    },
                );
            }
        }
        self.recompute(&key);
        true
    }

    /// Removes a pod; its streams end.
    pub(crate) fn delete_pod(&mut self, namespace: &str, name: &str) {
        if self
            .pods
            .remove(&(namespace.to_owned(), name.to_owned()))
            .is_some()
        {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Replaces every sidecar pod with `inputs` (a watcher's complete
    /// list): pods not listed are gone and their streams end.
    pub(crate) fn relist_pods(&mut self, inputs: Vec<PodInput>) {
        let keep: BTreeSet<Key> = inputs
            .iter()
            .map(|i| (i.namespace.clone(), i.name.clone()))
            .collect();
        let before = self.pods.len();
        self.pods.retain(|k, _| keep.contains(k));
        let mut changed = self.pods.len() != before;
        for input in inputs {
            changed |= self.apply_pod_quietly(input);
        }
        if changed {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// A pod's snapshot stream, if the pod is known.
    pub(crate) fn subscribe(&self, namespace: &str, name: &str) -> Option<Subscription> {
        let pod = self.pods.get(&(namespace.to_owned(), name.to_owned()))?;
        Some(Subscription {
            uid: pod.uid.clone(),
            rx: pod.tx.subscribe(),
        })
    }

    /// The current snapshot of a pod.
    #[cfg(test)]
    pub(crate) fn snapshot(&self, namespace: &str, name: &str) -> Option<Arc<Published>> {
        let pod = self.pods.get(&(namespace.to_owned(), name.to_owned()))?;
        Some(pod.tx.borrow().clone())
    }

    /// How many sidecar pods the index knows.
    pub(crate) fn pod_count(&self) -> usize {
        self.pods.len()
    }

    /// Accepted and refused policies, for metrics.
    pub(crate) fn policy_counts(&self) -> (usize, usize) {
        let invalid = self
            .policies
            .values()
            .filter(|p| !p.problems.is_empty())
            .count();
        (self.policies.len() - invalid, invalid)
    }

    /// Reports on every policy.
    pub(crate) fn reports(&self) -> Vec<PolicyReport> {
        self.policies
            .keys()
            .filter_map(|(ns, name)| self.report(ns, name))
            .collect()
    }

    /// The report on one policy.
    pub(crate) fn report(&self, namespace: &str, name: &str) -> Option<PolicyReport> {
        let state = self
            .policies
            .get(&(namespace.to_owned(), name.to_owned()))?;
        let selector = state
            .accepted
            .as_ref()
            .map(|a| &a.selector)
            .or(state.selector.as_ref());
        let selected = match selector {
            Some(sel) => self
                .pods_in(namespace)
                .filter(|(_, pod)| sel.matches(&pod.labels))
                .map(|(key, pod)| SelectedPod {
                    key: key.clone(),
                    uid: pod.uid.clone(),
                    version: pod.tx.borrow().snapshot.version.clone(),
                })
                .collect(),
            None => Vec::new(),
        };
        Some(PolicyReport {
            namespace: namespace.to_owned(),
            name: name.to_owned(),
            generation: state.generation,
            accepted_generation: state.accepted.as_ref().map(|a| a.generation),
            accepted_spec: state.accepted.as_ref().map(|a| a.json.clone()),
            problems: state.problems.clone(),
            rules: state.accepted.as_ref().map(|a| a.rules),
            selected,
        })
    }

    fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a Key, &'a PodState)> {
        let start = (namespace.to_owned(), String::new());
        self.pods
            .range(start..)
            .take_while(move |(k, _)| k.0 == namespace)
    }

    fn recompute_namespace(&mut self, namespace: &str) {
        let keys: Vec<Key> = self.pods_in(namespace).map(|(k, _)| k.clone()).collect();
        for key in keys {
            self.recompute(&key);
        }
    }

    /// Publishes the pod's snapshot if its content changed.
    fn recompute(&mut self, key: &Key) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        let start = (key.0.clone(), String::new());
        let policies: Vec<SnapshotPolicy> = self
            .policies
            .range(start..)
            .take_while(|(k, _)| k.0 == key.0)
            .filter_map(|((ns, name), state)| {
                let accepted = state.accepted.as_ref()?;
                accepted
                    .selector
                    .matches(&pod.labels)
                    .then(|| SnapshotPolicy {
                        name: format!("{ns}/{name}"),
                        generation: accepted.generation,
                        spec: accepted.spec.clone(),
                    })
            })
            .collect();
        let snapshot = Snapshot::new(&key.0, &key.1, policies);
        pod.tx.send_if_modified(|current| {
            if current.snapshot.version == snapshot.version {
                false
            } else {
                *current = Arc::new(Published {
                    snapshot,
                    at: Instant::now(),
                });
                true
            }
        });
    }
}

/// The generation kept in `status.accepted`, if it is older than the
/// refused `generation` and still compiles here.
fn restore(name: &str, generation: i64, persisted: Option<AcceptedGeneration>) -> Option<Accepted> {
    let persisted = persisted.filter(|p| p.generation < generation)?;
    match check(name, persisted.spec).1 {
        Ok((spec, json, selector, rules)) => {
            tracing::info!(policy = %name, generation = persisted.generation, "restored the accepted generation from status.accepted");
            Some(Accepted {
                generation: persisted.generation,
                spec,
                json,
                selector,
                rules,
            })
        }
        Err(problems) => {
            tracing::warn!(policy = %name, generation = persisted.generation, problems = %tollgate_policy::Problems(problems), "status.accepted does not compile here; the policy has no generation in force");
            None
        }
    }
}

/// Parses and compiles a spec; also returns the selector when it parses on
/// its own, for counting the pods an invalid policy would select.
#[allow(clippy::type_complexity)]
fn check(
    name: &str,
    spec: Value,
) -> (
    Option<Selector>,
    Result<(McpToolPolicySpec, Value, Selector, usize), Vec<Problem>>,
) {
    let selector_only = spec
        .get("selector")
        .cloned()
        .and_then(|s| {
            serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(
                s,
            )
            .ok()
        })
        .and_then(|s| Selector::try_from(s).ok());
    let spec: McpToolPolicySpec = match parse_spec(spec) {
        Ok(s) => s,
        Err(problems) => return (selector_only, Err(problems)),
    };
    match compile(name, &spec) {
        Ok(compiled) => {
            let selector = spec
                .selector
                .clone()
                .map(Selector::try_from)
                .transpose()
                .ok()
                .flatten()
                .unwrap_or_default();
            let rules = compiled.rules().len();
            // What the sidecars receive (the parsed spec re-serialised), so
            // a restored copy is exactly what they enforced.
            let json = serde_json::to_value(&spec).unwrap_or(Value::Null);
            (Some(selector.clone()), Ok((spec, json, selector, rules)))
        }
        Err(problems) => (selector_only, Err(problems)),
    }
}

#[cfg(test)]
mod tests;
