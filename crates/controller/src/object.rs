//! `McpToolPolicy` and `ClusterMcpToolPolicy` as the watchers read them:
//! the spec left as raw JSON.
//!
//! A typed spec would make one object the controller cannot parse (a field
//! from a newer CRD, say) fail the whole list and stall the watch for every
//! policy. Read leniently here; the index parses each spec strictly, with
//! the same code as policy files, and reports problems per policy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use tollgate_policy::spec::{ClusterMcpToolPolicy, McpToolPolicy, McpToolPolicyStatus};

/// A policy object with an unparsed spec.
#[derive(Resource, Clone, Debug, Deserialize, Serialize)]
#[resource(inherit = "McpToolPolicy")]
pub struct PolicyObject {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The spec, unparsed.
    #[serde(default)]
    pub spec: Value,
    /// The status, if it reads; a status this controller cannot read is
    /// simply rewritten.
    #[serde(default, deserialize_with = "lenient_status")]
    pub status: Option<McpToolPolicyStatus>,
}

/// A cluster policy object with an unparsed spec.
#[derive(Resource, Clone, Debug, Deserialize, Serialize)]
#[resource(inherit = "ClusterMcpToolPolicy")]
pub struct ClusterPolicyObject {
    /// Metadata.
    pub metadata: ObjectMeta,
    /// The spec, unparsed.
    #[serde(default)]
    pub spec: Value,
    /// The status, as for [`PolicyObject`].
    #[serde(default, deserialize_with = "lenient_status")]
    pub status: Option<McpToolPolicyStatus>,
}

/// What the policy watcher needs of either kind.
pub(crate) trait WatchedPolicy:
    Resource<DynamicType = ()>
    + Clone
    + std::fmt::Debug
    + serde::de::DeserializeOwned
    + Send
    + Sync
    + 'static
{
    /// The kind, for logs.
    const KIND: &'static str;
    /// Whether it is cluster-scoped (kept under the namespace `""`).
    const CLUSTER: bool;
    /// The spec, unparsed.
    fn spec(&self) -> &Value;
    /// The status, if it reads.
    fn status(&self) -> Option<&McpToolPolicyStatus>;
}

impl WatchedPolicy for PolicyObject {
    const KIND: &'static str = "McpToolPolicies";
    const CLUSTER: bool = false;
    fn spec(&self) -> &Value {
        &self.spec
    }
    fn status(&self) -> Option<&McpToolPolicyStatus> {
        self.status.as_ref()
    }
}

impl WatchedPolicy for ClusterPolicyObject {
    const KIND: &'static str = "ClusterMcpToolPolicies";
    const CLUSTER: bool = true;
    fn spec(&self) -> &Value {
        &self.spec
    }
    fn status(&self) -> Option<&McpToolPolicyStatus> {
        self.status.as_ref()
    }
}

fn lenient_status<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<McpToolPolicyStatus>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}
