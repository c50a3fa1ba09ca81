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
//! [`Index::relist_pods`], [`Index::relist_namespaces`]): each pod's
//! snapshot is recomputed once, after every listed object is in, so no
//! sidecar sees a snapshot built from half a list.
//!
//! `ClusterMcpToolPolicy` objects live here under the namespace `""`: they
//! select the pods of every namespace whose labels their
//! `namespaceSelector` matches (hence the namespaces' labels), and join
//! each such pod's namespaced policies in its snapshot under their bare
//! name; the sidecar combines them all by the same decision order. While
//! any cluster policy exists, a pod whose namespace has not been seen yet
//! keeps the snapshot it has (none, for a new pod) instead of one that may
//! lack a baseline.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::Pod;
use kube::core::{Selector, SelectorExt};
use serde_json::Value;
use tokio::sync::watch;

use tollgate_policy::compile::compile_cluster;
use tollgate_policy::parse::{parse_cluster_spec, parse_spec};
use tollgate_policy::snapshot::{
    NotifyKey, SIDECAR_LABEL, Snapshot, SnapshotPolicy, notify_key_name,
};
use tollgate_policy::spec::{AcceptedGeneration, McpToolPolicySpec, SecretKeyRef};
use tollgate_policy::{Problem, compile};

/// `(namespace, name)`; the namespace of a `ClusterMcpToolPolicy` is `""`.
pub(crate) type Key = (String, String);

/// The name a policy goes by in snapshots, metrics and logs:
/// `namespace/name`, or the bare name of a cluster policy.
pub(crate) fn policy_name(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_owned()
    } else {
        format!("{namespace}/{name}")
    }
}

/// A policy's key: a cluster-scoped object has no namespace, `""` here.
pub(crate) fn policy_key(meta: &kube::api::ObjectMeta) -> Option<Key> {
    Some((
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone()?,
    ))
}

/// A namespace as the index needs it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct NamespaceInput {
    /// Name.
    pub name: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
}

/// A policy as the watcher sees it, spec not yet checked.
#[derive(Clone, Debug)]
pub(crate) struct PolicyInput {
    /// Namespace; `""` for a `ClusterMcpToolPolicy`.
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

impl NamespaceInput {
    /// The namespace as the index needs it (`None` without a name).
    pub(crate) fn of(ns: &k8s_openapi::api::core::v1::Namespace) -> Option<NamespaceInput> {
        Some(NamespaceInput {
            name: ns.metadata.name.clone()?,
            labels: ns.metadata.labels.clone().unwrap_or_default(),
        })
    }
}

impl PolicyInput {
    /// A policy object as the index takes it (`None` without a name).
    pub(crate) fn of<K: crate::object::WatchedPolicy>(obj: &K) -> Option<PolicyInput> {
        let (namespace, name) = policy_key(obj.meta())?;
        Some(PolicyInput {
            namespace,
            name,
            generation: obj.meta().generation.unwrap_or(0),
            spec: obj.spec().clone(),
            persisted: obj.status().and_then(|s| s.accepted.clone()),
        })
    }
}

/// A Secret a policy's `approval.notify.secretRef` names, as the
/// controller last read it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum SecretRead {
    /// Read: each key of its `data` (the resourceVersion with each).
    Found(BTreeMap<String, NotifyKey>),
    /// Not readable, and why, said so in the policy's status.
    Unreadable(String),
}

/// The Secrets a spec's rules name for their notifications.
pub(crate) fn notify_refs(spec: &McpToolPolicySpec) -> impl Iterator<Item = &SecretKeyRef> {
    spec.rules
        .iter()
        .filter_map(|r| r.approval.as_ref()?.notify.as_ref()?.secret_ref.as_ref())
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

/// Which pods a policy selects: by their labels, and — for a cluster
/// policy — by their namespace's labels.
#[derive(Clone, Debug, Default)]
struct Selects {
    pods: Selector,
    /// `None`: the pod's own namespace only (a `McpToolPolicy`).
    namespaces: Option<Selector>,
}

impl Selects {
    fn pod(
        &self,
        policy_namespace: &str,
        pod: &Key,
        labels: &BTreeMap<String, String>,
        namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    ) -> bool {
        let in_scope = match &self.namespaces {
            None => policy_namespace == pod.0,
            Some(sel) => namespaces.get(&pod.0).is_some_and(|l| sel.matches(l)),
        };
        in_scope && self.pods.matches(labels)
    }
}

/// The last accepted generation of a policy.
#[derive(Clone, Debug)]
struct Accepted {
    generation: i64,
    /// What the sidecars enforce (a cluster policy's selectors are the
    /// controller's to use).
    spec: McpToolPolicySpec,
    /// The whole spec as JSON, what `status.accepted` keeps.
    json: Value,
    selects: Selects,
    rules: usize,
}

#[derive(Clone, Debug)]
struct PolicyState {
    generation: i64,
    /// Problems of `generation`; empty when it was accepted.
    problems: Vec<Problem>,
    accepted: Option<Accepted>,
    /// The selectors of `generation`, when they parse, to count selected
    /// pods of a policy that was never accepted.
    selects: Option<Selects>,
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
    /// For a policy in force whose rules name Secrets for their
    /// notifications: `Ok` when every one was read, else why not.
    pub notify: Option<Result<(), Vec<String>>>,
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
    /// Namespace labels, for cluster policies' `namespaceSelector`.
    namespaces: BTreeMap<String, BTreeMap<String, String>>,
    /// The Secrets policies name for their notifications, by
    /// `(namespace, name)`.
    secrets: BTreeMap<Key, SecretRead>,
    changed: watch::Sender<u64>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            policies: BTreeMap::new(),
            pods: BTreeMap::new(),
            namespaces: BTreeMap::new(),
            secrets: BTreeMap::new(),
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

    /// Replaces every policy of one kind (cluster policies when `cluster`)
    /// with `inputs` (that kind's watcher's complete list): policies of that
    /// kind not listed are gone. Snapshots are recomputed once, after all
    /// of it.
    pub(crate) fn relist_policies(&mut self, inputs: Vec<PolicyInput>, cluster: bool) {
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
            .filter(|k| k.0.is_empty() == cluster && !keep.contains(*k))
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
        let name = policy_name(&input.namespace, &input.name);
        let cluster = input.namespace.is_empty();
        if let Some(p) = self.policies.get_mut(&key)
            && p.generation == input.generation
        {
            // Same generation: the spec did not change (status or metadata
            // did). Only a refused policy with nothing in force learns from
            // it: the leader may just have written what it had accepted.
            if p.accepted.is_some() {
                return false;
            }
            p.accepted = restore(&name, cluster, input.generation, input.persisted);
            return p.accepted.is_some();
        }
        let accepted_before = self.policies.get(&key).and_then(|p| p.accepted.clone());
        let (selects, outcome) = check(&name, cluster, input.spec);
        let state = match outcome {
            Ok((spec, json, selects, rules)) => PolicyState {
                generation: input.generation,
                problems: Vec::new(),
                selects: Some(selects.clone()),
                accepted: Some(Accepted {
                    generation: input.generation,
                    spec,
                    json,
                    selects,
                    rules,
                }),
            },
            Err(problems) => PolicyState {
                generation: input.generation,
                problems,
                selects,
                accepted: accepted_before
                    .or_else(|| restore(&name, cluster, input.generation, input.persisted)),
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

    /// Adds or updates a namespace's labels.
    pub(crate) fn apply_namespace(&mut self, input: NamespaceInput) {
        if self.namespaces.get(&input.name) == Some(&input.labels) {
            return;
        }
        let name = input.name.clone();
        self.namespaces.insert(input.name, input.labels);
        self.recompute_namespace(&name);
        self.changed.send_modify(|n| *n += 1);
    }

    /// Forgets a namespace (its pods leave every cluster policy).
    pub(crate) fn delete_namespace(&mut self, name: &str) {
        if self.namespaces.remove(name).is_some() {
            self.recompute_namespace(name);
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// Replaces every namespace with `inputs` (a watcher's complete list);
    /// the pods of each namespace whose labels changed are recomputed once.
    pub(crate) fn relist_namespaces(&mut self, inputs: Vec<NamespaceInput>) {
        let fresh: BTreeMap<String, BTreeMap<String, String>> =
            inputs.into_iter().map(|n| (n.name, n.labels)).collect();
        let touched: BTreeSet<String> = fresh
            .iter()
            .filter(|(name, labels)| self.namespaces.get(*name) != Some(labels))
            .map(|(name, _)| name.clone())
            .chain(
                self.namespaces
                    .keys()
                    .filter(|n| !fresh.contains_key(*n))
                    .cloned(),
            )
            .collect();
        self.namespaces = fresh;
        for namespace in &touched {
            self.recompute_namespace(namespace);
        }
        if !touched.is_empty() {
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

    /// The Secrets the policies in force name for their notifications:
    /// what the controller reads (and nothing else).
    pub(crate) fn secret_refs(&self) -> BTreeSet<Key> {
        self.policies
            .iter()
            .filter(|((ns, _), _)| !ns.is_empty())
            .filter_map(|((ns, _), p)| Some((ns, p.accepted.as_ref()?)))
            .flat_map(|(ns, a)| notify_refs(&a.spec).map(|r| (ns.clone(), r.name.clone())))
            .collect()
    }

    /// Replaces what was read of the Secrets [`Self::secret_refs`] named;
    /// the pods of each namespace whose Secrets changed get new snapshots.
    pub(crate) fn apply_secrets(&mut self, read: BTreeMap<Key, SecretRead>) {
        let touched: BTreeSet<String> = read
            .iter()
            .filter(|(k, v)| self.secrets.get(*k) != Some(v))
            .map(|(k, _)| k.0.clone())
            .chain(
                self.secrets
                    .keys()
                    .filter(|k| !read.contains_key(*k))
                    .map(|k| k.0.clone()),
            )
            .collect();
        self.secrets = read;
        for namespace in &touched {
            self.recompute_namespace(namespace);
        }
        if !touched.is_empty() {
            self.changed.send_modify(|n| *n += 1);
        }
    }

    /// The keys of the Secrets `spec` (in `namespace`) names that were read.
    fn notify_keys(
        &self,
        namespace: &str,
        spec: &McpToolPolicySpec,
    ) -> BTreeMap<String, NotifyKey> {
        notify_refs(spec)
            .filter_map(|r| {
                let key = (namespace.to_owned(), r.name.clone());
                match self.secrets.get(&key)? {
                    SecretRead::Found(data) => {
                        Some((notify_key_name(r), data.get(&r.key)?.clone()))
                    }
                    SecretRead::Unreadable(_) => None,
                }
            })
            .collect()
    }

    /// Why the Secrets `spec` (in `namespace`) names are not all usable;
    /// `None` when it names none.
    fn notify_report(
        &self,
        namespace: &str,
        spec: &McpToolPolicySpec,
    ) -> Option<Result<(), Vec<String>>> {
        let mut any = false;
        let mut problems: Vec<String> = Vec::new();
        for r in notify_refs(spec) {
            any = true;
            let why = match self.secrets.get(&(namespace.to_owned(), r.name.clone())) {
                None => format!("Secret {namespace}/{} has not been read yet", r.name),
                Some(SecretRead::Unreadable(why)) => why.clone(),
                Some(SecretRead::Found(data)) if !data.contains_key(&r.key) => format!(
                    "Secret {namespace}/{} has no key {:?} (it has: {})",
                    r.name,
                    r.key,
                    data.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
                Some(SecretRead::Found(data))
                    if data
                        .get(&r.key)
                        .is_some_and(|k| k.key.0.trim_ascii().is_empty()) =>
                {
                    format!(
                        "Secret {namespace}/{} key {:?} is empty; notifications must be signed with a key",
                        r.name, r.key
                    )
                }
                Some(SecretRead::Found(_)) => continue,
            };
            if !problems.contains(&why) {
                problems.push(why);
            }
        }
        any.then_some(if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        })
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
        let selects = state
            .accepted
            .as_ref()
            .map(|a| &a.selects)
            .or(state.selects.as_ref());
        let candidates: Box<dyn Iterator<Item = (&Key, &PodState)>> = if namespace.is_empty() {
            Box::new(self.pods.iter())
        } else {
            Box::new(self.pods_in(namespace))
        };
        let selected = match selects {
            Some(sel) => candidates
                .filter(|(key, pod)| sel.pod(namespace, key, &pod.labels, &self.namespaces))
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
            notify: state
                .accepted
                .as_ref()
                .and_then(|a| self.notify_report(namespace, &a.spec)),
        })
    }

    fn has_cluster_policies(&self) -> bool {
        self.policies
            .first_key_value()
            .is_some_and(|(k, _)| k.0.is_empty())
    }

    fn pods_in<'a>(&'a self, namespace: &'a str) -> impl Iterator<Item = (&'a Key, &'a PodState)> {
        let start = (namespace.to_owned(), String::new());
        self.pods
            .range(start..)
            .take_while(move |(k, _)| k.0 == namespace)
    }

    /// Recomputes the pods a change in `namespace` can affect: its own, or
    /// every pod for a cluster policy (`""`).
    fn recompute_namespace(&mut self, namespace: &str) {
        let keys: Vec<Key> = if namespace.is_empty() {
            self.pods.keys().cloned().collect()
        } else {
            self.pods_in(namespace).map(|(k, _)| k.clone()).collect()
        };
        for key in keys {
            self.recompute(&key);
        }
    }

    /// Publishes the pod's snapshot if its content changed.
    fn recompute(&mut self, key: &Key) {
        let Some(pod) = self.pods.get(key) else {
            return;
        };
        // Which cluster policies select a pod depends on its namespace's
        // labels: until they are known (the namespace's watch event can
        // trail its pod's), keep what the pod has — for a new pod, no rules,
        // which its sidecar refuses calls under — rather than publish rules
        // that may lack a baseline.
        if !self.namespaces.contains_key(&key.0) && self.has_cluster_policies() {
            return;
        }
        let in_namespace = |ns: &str| {
            let start = (ns.to_owned(), String::new());
            let ns = ns.to_owned();
            self.policies
                .range(start..)
                .take_while(move |(k, _)| k.0 == ns)
        };
        // Cluster policies, then the namespace's (the sidecar orders
        // policies by name itself; the order here only has to be stable).
        let policies: Vec<SnapshotPolicy> = in_namespace("")
            .chain(in_namespace(&key.0))
            .filter_map(|((ns, name), state)| {
                let accepted = state.accepted.as_ref()?;
                accepted
                    .selects
                    .pod(ns, key, &pod.labels, &self.namespaces)
                    .then(|| SnapshotPolicy {
                        name: policy_name(ns, name),
                        generation: accepted.generation,
                        spec: accepted.spec.clone(),
                        notify_keys: self.notify_keys(ns, &accepted.spec),
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
fn restore(
    name: &str,
    cluster: bool,
    generation: i64,
    persisted: Option<AcceptedGeneration>,
) -> Option<Accepted> {
    let persisted = persisted.filter(|p| p.generation < generation)?;
    match check(name, cluster, persisted.spec).1 {
        Ok((spec, json, selects, rules)) => {
            tracing::info!(policy = %name, generation = persisted.generation, "restored the accepted generation from status.accepted");
            Some(Accepted {
                generation: persisted.generation,
                spec,
                json,
                selects,
                rules,
            })
        }
        Err(problems) => {
            tracing::warn!(policy = %name, generation = persisted.generation, problems = %tollgate_policy::Problems(problems), "status.accepted does not compile here; the policy has no generation in force");
            None
        }
    }
}

/// What a policy object may not say about notification keys: a file on
/// the sidecar's disk (any policy author could make a sidecar sign with
/// whatever file it can read), or — in a cluster policy, which has no
/// namespace — a Secret.
fn notify_in_cluster(spec: &McpToolPolicySpec, cluster: bool) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        let Some(n) = rule.approval.as_ref().and_then(|a| a.notify.as_ref()) else {
            continue;
        };
        let at = format!("spec.rules[{i}].approval.notify");
        if n.secret_file.is_some() {
            problems.push(Problem::at(
                format!("{at}.secretFile"),
                "secretFile is for policy files; in a policy object name a Secret in the policy's namespace with secretRef: {name, key}",
            ));
        }
        if cluster && n.secret_ref.is_some() {
            problems.push(Problem::at(
                format!("{at}.secretRef"),
                "a ClusterMcpToolPolicy has no namespace to hold the Secret; put rules with their own notification webhook in a McpToolPolicy",
            ));
        }
    }
    problems
}

/// A label selector as the apiserver stores it, if it parses on its own.
fn selector_at(spec: &Value, field: &str) -> Option<Selector> {
    let s = spec.get(field).cloned()?;
    serde_json::from_value::<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>(s)
        .ok()
        .and_then(|s| Selector::try_from(s).ok())
}

/// Parses and compiles a spec (of a `ClusterMcpToolPolicy` when
/// `cluster`); also returns the selectors when they parse on their own,
/// for counting the pods an invalid policy would select.
#[allow(clippy::type_complexity)]
fn check(
    name: &str,
    cluster: bool,
    spec: Value,
) -> (
    Option<Selects>,
    Result<(McpToolPolicySpec, Value, Selects, usize), Vec<Problem>>,
) {
    let selects_only = Some(Selects {
        pods: selector_at(&spec, "selector").unwrap_or_default(),
        namespaces: cluster.then(|| selector_at(&spec, "namespaceSelector").unwrap_or_default()),
    });
    let parsed = if cluster {
        parse_cluster_spec(spec).and_then(|c| {
            let rules = compile_cluster(name, &c)?.rules().len();
            let json = serde_json::to_value(&c).unwrap_or(Value::Null);
            let namespaces = c.namespace_selector.or_else(|| Some(Default::default()));
            Ok((c.policy, json, namespaces, rules))
        })
    } else {
        parse_spec(spec).and_then(|s| {
            let rules = compile(name, &s)?.rules().len();
            // What the sidecars receive (the parsed spec re-serialised), so
            // a restored copy is exactly what they enforced.
            let json = serde_json::to_value(&s).unwrap_or(Value::Null);
            Ok((s, json, None, rules))
        })
    };
    let (spec, json, namespace_selector, rules) = match parsed {
        Ok(p) => p,
        Err(problems) => return (selects_only, Err(problems)),
    };
    let problems = notify_in_cluster(&spec, cluster);
    if !problems.is_empty() {
        return (selects_only, Err(problems));
    }
    let selects = Selects {
        pods: spec
            .selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok())
            .unwrap_or_default(),
        namespaces: namespace_selector.map(|s| Selector::try_from(s).unwrap_or_default()),
    };
    (Some(selects.clone()), Ok((spec, json, selects, rules)))
}

#[cfg(test)]
mod tests;
