//! The contract between the controller and its sidecars.
//!
//! Each sidecar holds one long-lived HTTP request to the controller,
//! `GET /v1/snapshots/{namespace}/{pod}`, answered as a stream of
//! server-sent events (over HTTP/1.1 or HTTP/2): a `snapshot` event with
//! exactly that pod's policies on connect and on every change, and a
//! `heartbeat` event every few seconds so the sidecar can tell a quiet
//! controller from a lost one. The sidecar compiles the snapshot with the
//! same `compile` function the controller used to accept it, enforces it,
//! and acknowledges with `POST /v1/acks/{namespace}/{pod}`. Both requests
//! carry the pod's projected ServiceAccount token as a bearer token; the
//! controller checks it with a TokenReview and serves a pod's rules only to a
//! token bound to that pod.
//!
//! SSE over plain HTTP was chosen over gRPC: it needs no code generation,
//! passes through any HTTP proxy, can be read with `curl`, and the sidecar
//! already parses SSE for MCP.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::load::LoadedPolicy;
use crate::spec::McpToolPolicySpec;

/// The SSE event name of a snapshot.
pub const SNAPSHOT_EVENT: &str = "snapshot";
/// The SSE event name of a heartbeat.
pub const HEARTBEAT_EVENT: &str = "heartbeat";
/// The SSE event name of cluster state (KubeVirt counts and labels).
pub const STATE_EVENT: &str = "state";
/// The SSE event name of a re-observation of the state last sent on this
/// stream, unchanged but for when it was observed ([`StateFresh`]). Sent
/// only to sidecars that ask for it with [`STREAM_FEATURES_HEADER`]
/// carrying [`FEATURE_STATE_FRESH`]; others get the whole state each time.
pub const STATE_FRESH_EVENT: &str = "state-fresh";
/// The request header in which a sidecar names the stream features it
/// understands (comma-separated).
pub const STREAM_FEATURES_HEADER: &str = "tollgate-stream-features";
/// The feature: unchanged cluster state comes as [`STATE_FRESH_EVENT`].
pub const FEATURE_STATE_FRESH: &str = "state-fresh";
/// The audience sidecar tokens are issued for (`--audience` changes it).
pub const DEFAULT_AUDIENCE: &str = "tollgate";
/// The label that marks a pod as running a tollgate sidecar.
pub const SIDECAR_LABEL: &str = "tollgate.dev/sidecar";

/// Everything one sidecar enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    /// Names this exact content; what the sidecar acknowledges.
    pub version: String,
    /// The pod's namespace.
    pub namespace: String,
    /// The pod's name.
    pub pod: String,
    /// The accepted policies that select the pod, by name. Empty when no
    /// policy selects it.
    pub policies: Vec<SnapshotPolicy>,
}

/// One policy in a snapshot, at the generation the controller accepted.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotPolicy {
    /// `namespace/name` of a `McpToolPolicy`; the name of a
    /// `ClusterMcpToolPolicy`.
    pub name: String,
    /// The accepted generation.
    pub generation: i64,
    /// The spec at that generation.
    pub spec: McpToolPolicySpec,
    /// The keys of the Secrets the policy's `approval.notify.secretRef`s
    /// name, by `secretName/key`, as the controller read them: a policy
    /// carries only the Secret's name, the key travels on this
    /// authenticated channel to the pods the policy selects and nowhere
    /// else. A name missing here was not readable (the policy's status
    /// says why); its rule's notifications are not sent.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub notify_keys: BTreeMap<String, NotifyKey>,
}

/// One signing key read from a Secret.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NotifyKey {
    /// The Secret's `resourceVersion`: what the snapshot version is made
    /// of, so a rotated key is pushed again without the key itself going
    /// into a version string anyone can read.
    pub resource_version: String,
    /// The key (base64 on the wire).
    pub key: k8s_openapi::ByteString,
}

/// Never the key.
impl std::fmt::Debug for NotifyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NotifyKey")
            .field("resource_version", &self.resource_version)
            .field("key", &format_args!("<{} bytes>", self.key.0.len()))
            .finish()
    }
}

/// The `notify_keys` name of a Secret's key.
pub fn notify_key_name(secret: &crate::spec::SecretKeyRef) -> String {
    format!("{}/{}", secret.name, secret.key)
}

impl Snapshot {
    /// A snapshot whose version is computed from its content: the same
    /// policies at the same generations always give the same version.
    pub fn new(namespace: &str, pod: &str, policies: Vec<SnapshotPolicy>) -> Snapshot {
        let mut h = Sha256::new();
        for p in &policies {
            h.update(p.name.as_bytes());
            h.update([0]);
            h.update(p.generation.to_le_bytes());
            h.update(serde_json::to_vec(&p.spec).unwrap_or_default());
            h.update([0]);
            for (name, k) in &p.notify_keys {
                h.update(name.as_bytes());
                h.update([0]);
                h.update(k.resource_version.as_bytes());
                h.update([0]);
            }
        }
        let version = h
            .finalize()
            .iter()
            .take(8)
            .map(|b| format!("{b:02x}"))
            .collect();
        Snapshot {
            version,
            namespace: namespace.to_owned(),
            pod: pod.to_owned(),
            policies,
        }
    }

    /// The policies as the loader would have read them from files, ready
    /// for [`crate::load::compile_set`].
    pub fn loaded(&self) -> Vec<LoadedPolicy> {
        self.policies
            .iter()
            .map(|p| {
                // Cluster policies go by their bare name; what only they
                // have (the namespace selector) was the controller's to use.
                let kind = if p.name.contains('/') {
                    crate::load::KIND
                } else {
                    crate::load::CLUSTER_KIND
                };
                LoadedPolicy {
                    source: format!("{kind} {} (generation {})", p.name, p.generation),
                    name: p.name.clone(),
                    spec: p.spec.clone(),
                    scope: crate::load::Scope::Namespaced,
                }
            })
            .collect()
    }
}

/// What the controller sees of KubeVirt, for in-flight caps and source-VM
/// label conditions. Sent on connect and whenever it changes; not acked.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClusterReport {
    /// Whether the controller watches VirtualMachineClones (the KubeVirt
    /// CRDs exist and the watch has listed). Until then `clones` means
    /// nothing and sidecars keep counting their own admissions.
    #[serde(default)]
    pub clones_observed: bool,
    /// VirtualMachineClones in flight.
    pub clones: crate::resources::CloneCounts,
    /// Whether the controller watches VirtualMachineInstances (running VMs);
    /// until then the running counts mean nothing.
    #[serde(default)]
    pub vmis_observed: bool,
    /// VirtualMachine labels by `namespace/name`.
    pub vms: std::collections::BTreeMap<String, std::collections::BTreeMap<String, String>>,
    /// What each VirtualMachine consumes (for clones of it), by
    /// `namespace/name`.
    #[serde(default)]
    pub vm_sizes: std::collections::BTreeMap<String, crate::resources::sizes::Sizes>,
    /// VirtualMachineInstancetypes' CPU and memory by `namespace/name`.
    #[serde(default)]
    pub instancetypes: std::collections::BTreeMap<String, crate::resources::sizes::Sizes>,
    /// VirtualMachineClusterInstancetypes' CPU and memory by name.
    #[serde(default)]
    pub cluster_instancetypes: std::collections::BTreeMap<String, crate::resources::sizes::Sizes>,
    /// Running VMs (those with a VirtualMachineInstance) by
    /// `namespace/name`, while `vmis_observed`: starting one of these again
    /// is no new start.
    #[serde(default, skip_serializing_if = "std::collections::BTreeSet::is_empty")]
    pub running_vms: std::collections::BTreeSet<String>,
    /// Storage requested (MiB) by DataVolumes and PersistentVolumeClaims
    /// whose request is known, by `namespace/name`.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub disk_sizes: std::collections::BTreeMap<String, u64>,
    /// When the controller computed this (RFC 3339).
    pub observed_at: String,
}

/// The state last sent on this stream, observed again unchanged: its
/// counts, VMs and sizes stand, vouched for as of `observed_at`. A cluster
/// of 10,000 VMs is a state of megabytes; re-sending it every few seconds
/// to every sidecar only to say "still so" is what this replaces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StateFresh {
    /// Whether the clone watch is current (see [`ClusterReport`]).
    pub clones_observed: bool,
    /// Whether the VirtualMachineInstance watch is current.
    pub vmis_observed: bool,
    /// When the controller observed it (RFC 3339).
    pub observed_at: String,
}

impl ClusterReport {
    /// This report's freshness, to send when only that changed.
    pub fn freshness(&self) -> StateFresh {
        StateFresh {
            clones_observed: self.clones_observed,
            vmis_observed: self.vmis_observed,
            observed_at: self.observed_at.clone(),
        }
    }

    /// Whether `other` says the same as this one but for its freshness.
    pub fn same_content(&self, other: &ClusterReport) -> bool {
        let Self {
            clones_observed: _,
            clones,
            vmis_observed: _,
            vms,
            vm_sizes,
            instancetypes,
            cluster_instancetypes,
            running_vms,
            disk_sizes,
            observed_at: _,
        } = self;
        *clones == other.clones
            && *vms == other.vms
            && *vm_sizes == other.vm_sizes
            && *instancetypes == other.instancetypes
            && *cluster_instancetypes == other.cluster_instancetypes
            && *running_vms == other.running_vms
            && *disk_sizes == other.disk_sizes
    }
}

/// A heartbeat: the version the controller last sent this sidecar.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// The current snapshot version.
    pub version: String,
}

/// A sidecar's acknowledgement of the version it enforces.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    /// The snapshot version now in force.
    pub version: String,
    /// Calls an `Audit`-mode policy let through that `Enforce` would have
    /// denied, per policy and rule, in the last [`AUDIT_WINDOW_SECONDS`]:
    /// what the controller sums into the policy's `status.audit`. The
    /// sidecar acknowledges again when these change. Older sidecars send
    /// none.
    #[serde(default, rename = "wouldDeny", skip_serializing_if = "Vec::is_empty")]
    pub would_deny: Vec<WouldDeny>,
}

/// How long a would-be denial counts in `status.audit`.
pub const AUDIT_WINDOW_SECONDS: u64 = 3600;

/// The most [`WouldDeny`] entries one ack carries (the ack body is small
/// and bounded; a sidecar has that many rules only by accident).
pub const MAX_WOULD_DENY: usize = 32;

/// One rule's would-be denials (see [`Ack::would_deny`]).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct WouldDeny {
    /// The policy (in the pod's namespace).
    pub policy: String,
    /// The rule, or `(default)` for `defaultAction`.
    pub rule: String,
    /// Calls in the window.
    pub count: u64,
}

/// The path of a pod's snapshot stream.
pub fn snapshots_path(namespace: &str, pod: &str) -> String {
    format!("/v1/snapshots/{namespace}/{pod}")
}

/// The path a pod acknowledges on.
pub fn acks_path(namespace: &str, pod: &str) -> String {
    format!("/v1/acks/{namespace}/{pod}")
}
