//! `McpToolPolicy` as the watcher reads it: the spec left as raw JSON.
//!
//! A typed spec would make one object the controller cannot parse (a field
//! from a newer CRD, say) fail the whole list and stall the watch for every
//! policy. Read leniently here; the index parses each spec strictly, with
//! the same code as policy files, and reports problems per policy.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use tollgate_policy::spec::{McpToolPolicy, McpToolPolicyStatus};

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

fn lenient_status<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<McpToolPolicyStatus>, D::Error> {
    let value = Option::<Value>::deserialize(d)?;
    Ok(value.and_then(|v| serde_json::from_value(v).ok()))
}
