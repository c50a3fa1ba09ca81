//! The `McpToolCallApproval` object: one held tool call waiting for people,
//! in the namespace of the MCP server that holds it. `kubectl get mtca` is
//! the approval queue.
//!
//! Like a CertificateSigningRequest, the object carries what is asked
//! (`spec`: the call, its caller and fingerprint, and the rule's approval
//! settings, copied so a changed policy cannot change what was asked) and
//! what was decided (`status`: who approved or rejected, and when). Who may
//! decide is the apiserver's business: the `approve` verb on
//! `mcptoolcallapprovals` (docs/approvals.md).

// `CustomResource` re-emits the spec in a private scope to derive its
// schema; `unreachable_pub` fires on that copy.
#![allow(unreachable_pub)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::spec::Approvers;

/// The label holding an approval's fingerprint, so a sidecar finds the
/// live approval of a call with a label selector.
pub const FINGERPRINT_LABEL: &str = "tollgate.dev/fingerprint";

/// A tool call held by a `RequireApproval` rule until people approve it.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "McpToolCallApproval",
    plural = "mcptoolcallapprovals",
    singular = "mcptoolcallapproval",
    shortname = "mtca",
    category = "tollgate",
    namespaced,
    status = "McpToolCallApprovalStatus",
    doc = "A tool call a tollgate RequireApproval rule holds until enough people approve it; approve with the `approve` verb on mcptoolcallapprovals (docs/approvals.md).",
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Pending, Approved, Rejected, Expired or Used"
    ),
    printcolumn(name = "Tool", type_ = "string", json_path = ".spec.tool"),
    printcolumn(name = "Caller", type_ = "string", json_path = ".spec.caller"),
    printcolumn(
        name = "Approvals",
        type_ = "string",
        json_path = ".status.summary",
        description = "approvals given / approvals needed"
    ),
    printcolumn(name = "Rule", type_ = "string", json_path = ".spec.rule"),
    printcolumn(name = "Expires", type_ = "date", json_path = ".spec.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpToolCallApprovalSpec {
    /// The policy (`namespace/name`) whose rule holds the call.
    pub policy: String,
    /// The `RequireApproval` rule.
    pub rule: String,
    /// The pod whose sidecar holds the call; only that pod's calls ride on
    /// the approval.
    pub pod: String,
    /// The tool called.
    pub tool: String,
    /// The call's arguments, absent when the rule shows only their digest
    /// (`approval.arguments: Digest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::any_object")]
    pub arguments: Option<Value>,
    /// SHA-256 of the canonical JSON of the arguments.
    pub arguments_sha256: String,
    /// Who asked: `subject:NAME` for a verified caller, else
    /// `session:ID` or `anonymous`.
    pub caller: String,
    /// The verified subject who asked, if any: never an approver of it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester: Option<String>,
    /// What the approval is bound to (policy, rule, tool, arguments,
    /// caller, pod); also the `tollgate.dev/fingerprint` label.
    #[schemars(regex(pattern = "^[0-9a-f]{32}$"))]
    pub fingerprint: String,
    /// Distinct people who must approve.
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: i64,
    /// Who may approve besides what RBAC says, if the rule lists anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Approvers>,
    /// When the approval stops being valid (RFC 3339).
    pub expires_at: String,
    /// How long the object is kept once final before the sidecar deletes
    /// it (the rule's `approval.retention`, e.g. `86400s`), copied like the
    /// other settings so a later policy change does not shorten the life of
    /// an object already asked for. Absent: kept until its pod is gone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub retention: Option<String>,
}

/// Where an approval stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalPhase {
    /// Waiting for people.
    Pending,
    /// Approved by enough people; the next identical call goes through.
    Approved,
    /// Refused by a person; final.
    Rejected,
    /// Not decided, or not used, in time; final.
    Expired,
    /// Let its call through; final.
    Used,
}

/// One person's decision, as the apiserver authenticated them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalVote {
    /// The user, from the admission request's `userInfo`.
    pub user: String,
    /// When (RFC 3339).
    pub time: String,
    /// Their words, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// A person's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalVerdict {
    /// Let the call run (one vote toward `minApprovals`).
    Approve,
    /// Refuse it; final.
    Reject,
}

/// What a person writes to decide, with `kubectl patch --subresource=status`:
/// the controller's webhook checks them (the `approve` verb, not the
/// requester, a listed approver) and turns this into a vote recorded under
/// their authenticated name; the field itself is never stored.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalDecision {
    /// Approve or Reject.
    pub verdict: ApprovalVerdict,
    /// Their words, if any (shown to the agent on rejection).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
}

/// What was decided.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpToolCallApprovalStatus {
    /// Pending, Approved, Rejected, Expired or Used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ApprovalPhase>,
    /// A decision being made (write-only: the webhook records it as a vote
    /// and removes it; an object never keeps one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<ApprovalDecision>,
    /// The approvals given, one per distinct person.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub approvals: Vec<ApprovalVote>,
    /// The rejection, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rejection: Option<ApprovalVote>,
    /// `given/needed`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// When the sidecar marked it `Used` or `Expired` (RFC 3339): where
    /// `spec.retention` counts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    /// `Decided`: whether the approval reached a final answer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
}
