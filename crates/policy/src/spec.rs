//! The `McpToolPolicy` spec: the one set of types behind policy files, the
//! CRD schema and `tollgate check`.
//!
//! These structs only describe what a user wrote. They are deliberately dumb:
//! every rule about what is *valid* lives in [`crate::compile`], so a policy
//! read from a file, from the apiserver or from an admission request is judged
//! by the same code. Every struct rejects unknown fields, because a typo such
//! as `rateLimit:` for `rateLimits:` must be an error, never a rule that
//! silently does nothing.

// `KubeSchema` re-emits `Rule` and `RateLimit` in a private scope to derive
// their schemas; `unreachable_pub` fires on those copies, not on these types.
#![allow(unreachable_pub)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The regex every rule name matches (also enforced by `compile`).
pub const RULE_NAME_PATTERN: &str = "^[A-Za-z0-9._-]{1,63}$";

/// What an MCP server's tool calls may do: which tools, with which
/// arguments, how often. See docs/policy.md.
// clippy reads the repeated `printcolumn(...)` arguments of the kube derive
// as duplicated attributes; they are distinct columns.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "McpToolPolicy",
    plural = "mcptoolpolicies",
    singular = "mcptoolpolicy",
    shortname = "mtp",
    category = "tollgate",
    namespaced,
    status = "McpToolPolicyStatus",
    doc = "Which tool calls the MCP servers selected by `spec.selector` may make, with which arguments and how often. Enforced by the tollgate sidecar next to each selected MCP server.",
    printcolumn(
        name = "Mode",
        type_ = "string",
        json_path = ".spec.mode",
        description = "Enforce or Audit"
    ),
    printcolumn(
        name = "Default",
        type_ = "string",
        json_path = ".spec.defaultAction",
        description = "What calls no rule matches get"
    ),
    printcolumn(
        name = "Rules",
        type_ = "integer",
        json_path = ".status.rules",
        description = "Rules in the accepted spec"
    ),
    printcolumn(
        name = "Accepted",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Accepted\")].status",
        description = "Whether the current generation compiled"
    ),
    printcolumn(
        name = "Synced",
        type_ = "string",
        json_path = ".status.synced",
        description = "Selected sidecars enforcing the current generation / selected sidecars"
    ),
    printcolumn(
        name = "Would-Deny",
        type_ = "integer",
        json_path = ".status.audit.wouldDeny",
        description = "Audit mode: calls the selected sidecars let through in the last hour that Enforce would have denied"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct McpToolPolicySpec {
    /// Which MCP server pods in the policy's namespace this policy governs
    /// (Kubernetes only; a policy file read by `tollgate proxy --policy`
    /// applies to the one upstream that proxy fronts and ignores it). An
    /// empty selector selects every pod that runs a tollgate sidecar.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,

    /// `Enforce` blocks denied calls; `Audit` decides and records every call
    /// (metrics, audit log) but lets it through. Defaults to `Enforce`.
    #[serde(default)]
    #[schemars(default = "Mode::default")]
    pub mode: Mode,

    /// What happens to a call that no rule matches by tool name.
    pub default_action: Action,

    /// How denials reach the client when the deciding rule does not say,
    /// and for `defaultAction` denials. Defaults to `ToolError`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_with: Option<DenyWith>,

    /// Remove from `tools/list` the tools this policy denies whatever their
    /// arguments (a `Deny` rule without conditions, or — with
    /// `defaultAction: Deny` — a tool no `Allow` rule names).
    #[serde(default)]
    pub hide_denied: bool,

    /// Rules, evaluated as described in docs/policy.md: every matching `Deny`
    /// rule first, then the first matching `Allow` rule whose argument
    /// conditions hold, then its rate limits. Rule names are unique.
    #[serde(default)]
    #[schemars(length(max = 2000), extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub rules: Vec<Rule>,

    /// How tools of servers that do not describe themselves create
    /// Kubernetes objects (see `resources` on rules).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub resource_mappings: Vec<ResourceMapping>,

    /// The namespace an object without one lands in (the MCP server's
    /// default namespace). Defaults to `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_namespace: Option<String>,

    /// Whether a call may carry arguments the upstream's own `inputSchema`
    /// (from its `tools/list`) does not list. Servers act on such arguments
    /// (kubernetes-mcp-server's `context` selects another cluster) that no
    /// rule reads. `ResourceRules` (the default) refuses them for tools a
    /// resource rule of this policy judges; `Always` for every tool; `Never`
    /// lets them through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strict_arguments: Option<StrictArguments>,
}

/// What the MCP servers of a whole cluster may do: a `McpToolPolicy` that
/// selects pods in every namespace `namespaceSelector` matches. Combined with
/// the namespaced policies on each pod by the same order: every `Enforce`
/// policy must allow a call. See docs/policy.md.
// The printer columns are McpToolPolicy's, copied by `crd::cluster_crd`.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[kube(
    group = "tollgate.dev",
    version = "v1alpha1",
    kind = "ClusterMcpToolPolicy",
    plural = "clustermcptoolpolicies",
    singular = "clustermcptoolpolicy",
    shortname = "cmtp",
    category = "tollgate",
    status = "McpToolPolicyStatus",
    doc = "Which tool calls the MCP servers of the whole cluster may make: the pods `spec.selector` selects in the namespaces `spec.namespaceSelector` selects. Combined with each pod's McpToolPolicies; every policy must allow a call."
)]
#[serde(rename_all = "camelCase")]
pub struct ClusterMcpToolPolicySpec {
    /// The namespaces whose MCP server pods this policy governs, by their
    /// labels (e.g. `matchLabels: {kubernetes.io/metadata.name: vms}`).
    /// Absent or empty: every namespace. `spec.selector` then picks pods in
    /// them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,

    /// Everything a `McpToolPolicy` spec holds.
    #[serde(flatten)]
    pub policy: McpToolPolicySpec,
}

/// Read strictly: `namespaceSelector` here, every other field by
/// [`McpToolPolicySpec`], which refuses fields it does not know (serde's
/// own `flatten` would let them through).
impl<'de> Deserialize<'de> for ClusterMcpToolPolicySpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let mut value = Value::deserialize(d)?;
        let namespace_selector = match value.as_object_mut() {
            Some(fields) => fields.remove("namespaceSelector"),
            None => None,
        };
        let namespace_selector = match namespace_selector {
            Some(Value::Null) | None => None,
            Some(s) => Some(LabelSelector::deserialize(s).map_err(D::Error::custom)?),
        };
        let policy = McpToolPolicySpec::deserialize(value).map_err(D::Error::custom)?;
        Ok(ClusterMcpToolPolicySpec {
            namespace_selector,
            policy,
        })
    }
}

/// When arguments outside the upstream's `inputSchema` are refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum StrictArguments {
    /// For tools a resource rule of the policy judges.
    #[default]
    ResourceRules,
    /// For every tool.
    Always,
    /// Never.
    Never,
}

/// What the controller observed and the sidecars enforce.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct McpToolPolicyStatus {
    /// The generation the conditions describe.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Accepted`: the spec compiled (else the message lists every
    /// problem, and the last accepted generation stays in force).
    /// `Programmed`: every selected sidecar enforces this generation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    /// Rules in the accepted spec.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<i64>,
    /// Pods with a tollgate sidecar that the selector selects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selected_sidecars: Option<i64>,
    /// Of those, how many enforce the current generation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_sidecars: Option<i64>,
    /// `synced/selected`, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced: Option<String>,
    /// The generation in force and its spec, written by the controller so
    /// that a restarted controller, or a new leader, keeps enforcing it
    /// when the current generation is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<AcceptedGeneration>,
    /// Audit mode only: what `Enforce` would have denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audit: Option<AuditResults>,
}

/// What an `Audit`-mode policy would have denied, summed over the selected
/// sidecars: the answer to "what happens if I switch this to Enforce".
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AuditResults {
    /// The window the counts cover, e.g. `1h`.
    pub window: String,
    /// Calls in the window, over every rule.
    pub would_deny: i64,
    /// Per rule (`(default)` for `defaultAction`), largest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleWouldDeny>,
}

/// One rule's would-be denials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleWouldDeny {
    /// The rule's name.
    pub rule: String,
    /// Calls in the window.
    pub would_deny: i64,
}

/// The last generation of a policy the controller accepted, as it accepted it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcceptedGeneration {
    /// `metadata.generation` of the accepted spec.
    pub generation: i64,
    /// The accepted spec, exactly as the sidecars receive it.
    #[schemars(schema_with = "crate::spec::any_object")]
    pub spec: Value,
}

/// Whether a policy blocks or only records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Mode {
    /// Denied calls are refused.
    #[default]
    Enforce,
    /// Denied calls are recorded as `audited` and forwarded anyway.
    Audit,
}

/// Allow or deny.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Action {
    /// Let the call through (subject to the rule's conditions and limits).
    Allow,
    /// Refuse the call.
    Deny,
}

/// What a rule does with the calls it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum RuleAction {
    /// Let the call through (subject to the rule's conditions and limits).
    Allow,
    /// Refuse the call.
    Deny,
    /// Let the call through once a person approved this exact call (same
    /// tool, arguments and caller), then once only; until then it waits up
    /// to `approval.holdFor` or is answered with the approval's id.
    RequireApproval,
}

impl From<Action> for RuleAction {
    fn from(a: Action) -> Self {
        match a {
            Action::Allow => RuleAction::Allow,
            Action::Deny => RuleAction::Deny,
        }
    }
}

/// How a `RequireApproval` rule's approvals work.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApprovalSettings {
    /// How long a request for approval, and then the approval, stays
    /// valid: `15m` by default, at most `7d`. After it the approval is
    /// `Expired` and the call must be asked for again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub timeout: Option<String>,

    /// How long the call itself waits for a decision before it is answered
    /// "approval pending": `0s` by default (answer at once), at most `10m`
    /// and never longer than `timeout`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^(0|([0-9]+[smhd])+)$"))]
    pub hold_for: Option<String>,

    /// Who may approve (Kubernetes users and groups). Empty: whoever RBAC
    /// allows the `approve` verb on `mcptoolcallapprovals`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approvers: Option<Approvers>,

    /// How many distinct people must approve; 1 by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub min_approvals: Option<i64>,

    /// `Show` (default) puts the call's arguments in the approval for the
    /// approver to read; `Digest` puts only their SHA-256, for arguments
    /// that must not be copied anywhere.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arguments: Option<ApprovalArguments>,

    /// Where people are told about this rule's approvals (requested,
    /// approved, rejected, expired): a signed JSON POST. Without it, the
    /// sidecar's `--approval-webhook`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notify: Option<ApprovalNotify>,

    /// How long an approval object is kept once it is final (`Used`,
    /// `Expired`, `Rejected`) before the sidecar deletes it: `24h` by
    /// default, between `1s` and `30d`. A rejection is kept at least 15
    /// minutes whatever this says, so retries keep reading it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub retention: Option<String>,
}

/// A rule's own notification webhook and the key that signs for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("has(self.secretRef) != has(self.secretFile)").message("notify needs exactly one of secretRef (a Secret in the policy's namespace) or secretFile (policy files)")
)]
pub struct ApprovalNotify {
    /// The receiver, `http://` or `https://`.
    #[schemars(length(min = 1, max = 2048))]
    pub url: String,

    /// The HMAC-SHA256 key, in a Secret in the policy's namespace (the
    /// controller reads it and hands it to the sidecars; it needs `get` on
    /// that Secret, see docs/approvals.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_ref: Option<SecretKeyRef>,

    /// The HMAC-SHA256 key, in a file the sidecar reads (policy files
    /// only; refused in a `McpToolPolicy`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    pub secret_file: Option<String>,
}

/// One key of a Secret in the policy's namespace.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(regex(pattern = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"))]
    pub name: String,
    /// The key in its `data`.
    #[schemars(regex(pattern = r"^[-._a-zA-Z0-9]{1,253}$"))]
    pub key: String,
}

/// Who may decide an approval.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Approvers {
    /// User names, exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub users: Vec<String>,
    /// Group names, exact.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub groups: Vec<String>,
}

/// What an approval shows of the call's arguments.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum ApprovalArguments {
    /// The arguments as the agent sent them.
    #[default]
    Show,
    /// Only their SHA-256 (of the canonical JSON).
    Digest,
}

/// One named rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("self.action != 'Deny' || !has(self.rateLimits) || size(self.rateLimits) == 0").message("rate limits apply to calls a rule allows; use action: Allow (or RequireApproval) or remove rateLimits"),
    validation = Rule::new("self.action != 'Deny' || !has(self.inFlight) || size(self.inFlight) == 0").message("in-flight limits apply to what a rule allows; use action: Allow (or RequireApproval) or remove inFlight"),
    validation = Rule::new("self.action == 'RequireApproval' || !has(self.approval)").message("approval settings apply to rules with action: RequireApproval"),
    validation = Rule::new("(has(self.tools) && size(self.tools) > 0) || has(self.toolSelector) || (has(self.resources) && size(self.resources) > 0)").message("a rule needs `tools`, `toolSelector` or `resources`")
)]
pub struct Rule {
    /// Unique within the policy; appears in denials, metrics and logs.
    /// 1-63 letters, digits, `-`, `_` or `.`.
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,

    /// Tool names this rule matches: exact names or globs (`*`, `?`,
    /// `[abc]`), e.g. `vm_clone`, `*_list`, `pods_*`. With `resources`, it
    /// narrows them to calls of these tools; without, the rule needs
    /// `resources`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1000))]
    pub tools: Vec<String>,

    /// Tools this rule matches by what the MCP server says they do, learned
    /// from the server's own `tools/list`: e.g. `{readOnly: true}`,
    /// `{destructive: true}`, `{rbacVerbs: [create, delete]}`. With
    /// `tools`, it narrows them. A tool whose description is unknown is
    /// matched by a `Deny` rule and allowed by no `Allow` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_selector: Option<ToolSelector>,

    /// Kubernetes objects a call would create or change that this rule
    /// matches, whichever tool the call uses (see docs/resources.md). A call
    /// creating several objects is judged object by object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub resources: Vec<ResourceSelector>,

    /// For `resources` rules: the namespaces the objects may (or may not)
    /// be in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespaces: Option<NamespaceCondition>,

    /// For `resources` rules on KubeVirt `VirtualMachineClone`: conditions
    /// on the source and target virtual machines.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clone: Option<CloneCondition>,

    /// For `resources` rules on `VirtualMachineClone`: how many clones may
    /// be in flight (exist, and not `Succeeded` or `Failed`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 4))]
    pub in_flight: Vec<InFlightLimit>,

    /// For `resources` rules: budgets on the size of what the objects
    /// create — storage, vCPU or memory per sliding window (see
    /// docs/resources.md). A call's objects are measured from their
    /// manifests, and from the cluster (instancetypes, clone sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub budgets: Vec<SizeBudget>,

    /// For `resources` rules on `VirtualMachine`: at most this many running
    /// VMs (VirtualMachineInstances) when a call would start one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[serde(rename = "runningVMs")]
    pub running_vms: Option<RunningVmCap>,

    /// For `resources` rules on `VirtualMachine`: which lifecycle actions
    /// (`vm_lifecycle`'s `start`, `stop`, `restart`, `pause`, `unpause`) on
    /// which VMs (by label) the rule matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecycleCondition>,

    /// `Allow`, `Deny`, or `RequireApproval`: allow once a person has
    /// approved this exact call (see `approval` and docs/approvals.md).
    pub action: RuleAction,

    /// For `RequireApproval` rules: how long an approval stays valid, how
    /// long a call waits for it, and who must approve.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<ApprovalSettings>,

    /// Text added to a denial by this rule, shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub message: Option<String>,

    /// Callers this rule applies to: subjects of verified tokens (a JWT's
    /// `sub`, or `system:serviceaccount:<ns>:<name>` for Kubernetes
    /// ServiceAccount tokens), exact or globs. On an `Allow` rule, other
    /// callers (and callers without a token) are not allowed by it; on a
    /// `Deny` rule, only these callers are denied.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub subjects: Vec<String>,

    /// Conditions on the call's `arguments`; all must hold. On a `Deny` rule
    /// they narrow what is denied; on an `Allow` rule they are requirements —
    /// a call that matches the rule's tools but fails them is denied (reason
    /// `arguments`) unless a later `Allow` rule for the same tool accepts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub arguments: Vec<ArgumentCondition>,

    /// Sliding-window limits on calls this rule allows; all must have room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rate_limits: Vec<RateLimit>,

    /// How a denial by this rule reaches the client. Defaults to the
    /// policy's `denyWith`, else `ToolError`: a tool result with
    /// `isError: true` the model can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_with: Option<DenyWith>,
}

/// Tools by what their server says they do. Every field given must hold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ToolSelector {
    /// `readOnlyHint` (default false): the tool does not change anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only: Option<bool>,
    /// `destructiveHint` of a tool that is not read-only (default true):
    /// it may delete or overwrite. A read-only tool is never destructive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub destructive: Option<bool>,
    /// `idempotentHint` (default false): calling it again with the same
    /// arguments changes nothing more. A read-only tool always is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotent: Option<bool>,
    /// `openWorldHint` (default true): the tool reaches beyond a closed set
    /// of things (the internet, a whole cluster).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_world: Option<bool>,
    /// Kubernetes verbs the tool needs, as kubernetes-mcp-server's rbac
    /// `_meta` states them: the tool needs at least one of these, e.g.
    /// `[create, update, patch, delete]`. A tool whose server states no
    /// verbs is unknown.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub rbac_verbs: Vec<String>,
}

/// The two shapes a denial can take.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum DenyWith {
    /// A `tools/call` result with `isError: true`: the model sees the reason
    /// and can correct itself.
    #[default]
    ToolError,
    /// A JSON-RPC error response: the client library raises it; the model
    /// usually does not see the text.
    JsonRpcError,
}

/// A condition on one value inside the call's `arguments`. (Which operand
/// each operator takes is checked by `compile`, not by the CRD schema: CEL
/// cannot see the untyped `value` fields.)
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentCondition {
    /// A JSON pointer (RFC 6901) into `arguments`, e.g. `/namespace` or
    /// `/spec/replicas`; an empty string means the whole `arguments` object.
    #[schemars(regex(pattern = "^(/.*)?$"))]
    pub pointer: String,

    /// How the value is compared.
    pub operator: Operator,

    /// The operand of `Equals`, `NotEquals`, `Matches` (a regex that must
    /// match the whole string), `Lt`, `Lte`, `Gt`, `Gte` and `MaxLength`.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(schema_with = "crate::spec::any_json")]
    pub value: Option<Value>,

    /// The operands of `In` and `NotIn` (at least one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::spec::any_json_list")]
    pub values: Option<Vec<Value>>,
}

/// Comparison operators of [`ArgumentCondition`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum Operator {
    /// The value equals `value` (JSON equality: `"5"` is not `5`).
    Equals,
    /// The value exists and differs from `value`.
    NotEquals,
    /// The value equals one of `values`.
    In,
    /// The value exists and equals none of `values`.
    NotIn,
    /// The value is a string that `value` (a regex) matches entirely.
    Matches,
    /// The pointer resolves to a value (any, including `null`).
    Exists,
    /// The pointer resolves to nothing.
    NotExists,
    /// The value is a number less than `value`.
    Lt,
    /// The value is a number less than or equal to `value`.
    Lte,
    /// The value is a number greater than `value`.
    Gt,
    /// The value is a number greater than or equal to `value`.
    Gte,
    /// The value is a string of at most `value` characters, or an array of
    /// at most `value` elements.
    MaxLength,
}

/// At most `requests` calls in any `window`-long span.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.onStoreError) || (has(self.scope) && self.scope == 'Shared')").message("onStoreError applies to limits with scope: Shared (a Pod limit has no store to lose)")
)]
pub struct RateLimit {
    /// How many calls the window admits; at least 1.
    #[schemars(range(min = 1, max = 100000))]
    pub requests: i64,

    /// The window length: whole numbers with a unit, `s`, `m`, `h` or `d`,
    /// e.g. `30s`, `1m`, `1h30m`, `1d`.
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub window: String,

    /// Separate budgets per argument value and/or per MCP session. Without
    /// a key the whole rule shares one budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<LimitKey>,

    /// `Pod` (default): the budget lives in each sidecar. `Shared`: one
    /// budget for every sidecar of the policy (all replicas of a server),
    /// kept in Redis (`tollgate proxy --redis-url`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<LimitScope>,

    /// For `Shared` limits, when Redis cannot be reached: `Deny` the calls
    /// the limit covers (the default), or `LocalFallback` to a per-sidecar
    /// budget until Redis is back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreError>,

    /// A name that makes this limit one budget with every other limit of
    /// the policy that gives the same name, in any rule: their calls count
    /// together (e.g. one clone budget for two tools that clone). Limits
    /// sharing a budget must agree on `requests`, `window`, `key` and
    /// `scope`. Without it each limit is a budget of its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9._-]{1,63}$"))]
    pub budget: Option<String>,
}

/// Where a rate limit's budget lives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum LimitScope {
    /// In each sidecar's memory.
    #[default]
    Pod,
    /// In Redis, shared by every sidecar enforcing the policy.
    Shared,
}

/// What a shared limit does without its store.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
pub enum OnStoreError {
    /// Deny the calls (fail closed).
    #[default]
    Deny,
    /// Count in the sidecar's memory instead (each replica its own budget).
    LocalFallback,
}

/// What splits a rate limit into separate budgets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitKey {
    /// JSON pointers into `arguments` whose values select the budget, e.g.
    /// `["/namespace"]` for one budget per namespace. A missing value is a
    /// budget of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub arguments: Vec<String>,

    /// One budget per MCP session (the `Mcp-Session-Id` the upstream issued;
    /// calls outside a known session share one budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,

    /// For `resources` rules: one budget per namespace of the objects.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub namespace: bool,

    /// For `resources` rules on clones: one budget per source VM.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub source: bool,

    /// One budget per caller (the subject of the caller's verified token;
    /// calls without one share a budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub subject: bool,
}

impl LimitKey {
    /// The same key with its pointers in a canonical order (their order
    /// does not change what a budget means).
    pub(crate) fn normalized(mut self) -> Self {
        self.arguments.sort();
        self
    }
}

/// Reads a field that is present as `Some`, even when it is `null`, so
/// `value: null` compares with null instead of reading as "no operand".
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(d).map(Some)
}

/// Schema of a free-form JSON value: Kubernetes needs the
/// `x-kubernetes-preserve-unknown-fields` marker to accept it.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    // `nullable` keeps an explicit `value: null` (compared with null) from
    // being dropped by the apiserver.
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true, "nullable": true })
}

/// Schema of a free-form JSON object (a copy of a spec kept in status: its
/// own schema and CEL rules already held when it was the spec).
pub(crate) fn any_object(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "type": "object", "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a list of free-form JSON values.
pub(crate) fn any_json_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": 1000,
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}

/// Which Kubernetes objects a resource rule matches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceSelector {
    /// The API group, `""` for the core group, e.g. `clone.kubevirt.io`.
    pub group: String,
    /// The kind, e.g. `VirtualMachineClone` (or give `resource`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The plural resource name, e.g. `virtualmachineclones` (or give `kind`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// The verbs: `create`, `update`, `patch`, `delete`, `get`, `list`, ...
    /// Defaults to `[create]`. A server-side apply counts as `create`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub verbs: Vec<String>,
}

/// Namespaces the objects of a call may be in: in `include` (if given) and
/// not in `exclude`. Globs allowed (`openshift-*`). An object whose
/// namespace cannot be known fails both.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NamespaceCondition {
    /// Allowed namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub include: Vec<String>,
    /// Refused namespaces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude: Vec<String>,
}

/// Conditions on a `VirtualMachineClone`'s source and target.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CloneCondition {
    /// Source VM names that may be cloned (globs, e.g. `golden-*`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub source_names: Vec<String>,
    /// Source VM names that must not be cloned (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub exclude_source_names: Vec<String>,
    /// Labels the source VM must carry. The controller knows the VMs'
    /// labels; see `whenSourceUnknown`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_labels: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// What `sourceLabels` decides when the source VM's labels are not known
    /// (no controller, or the VM does not exist): `Deny` (default) or `Allow`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_source_unknown: Option<Action>,
    /// Names the clone may be given (globs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    pub target_names: Vec<String>,
    /// The target must not be the source VM itself.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub target_differs_from_source: bool,
}

/// A cap on objects in flight.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InFlightLimit {
    /// At most this many in flight.
    #[schemars(range(min = 1, max = 100000))]
    pub max: i64,
    /// Counted per `Namespace`, per source VM (`Source`), over the whole
    /// `Cluster`, or (for `runningVMs`) per `Caller`.
    pub per: InFlightScope,
}

/// What an in-flight cap is counted over.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum InFlightScope {
    /// Each namespace.
    Namespace,
    /// Each source virtual machine (fan-out).
    Source,
    /// Everything the sidecar's server can reach.
    Cluster,
    /// Each caller, by its verified identity (`runningVMs` only): the VMs
    /// this sidecar let the caller start that still run.
    Caller,
}

/// A budget on what a rule's objects consume: e.g. 500Gi of new storage
/// per hour per namespace.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, KubeSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[x_kube(
    validation = Rule::new("!has(self.onStoreError) || (has(self.scope) && self.scope == 'Shared')").message("onStoreError applies to budgets with scope: Shared")
)]
pub struct SizeBudget {
    /// `storage` (new disks: DataVolumes, PVCs, a VM's dataVolumeTemplates,
    /// a clone's source disks), `cpu` (vCPUs) or `memory` (guest memory).
    pub resource: SizeResource,
    /// The budget per window, as a Kubernetes quantity: `500Gi`, `64`
    /// (vCPUs), `500m`.
    #[schemars(length(max = 32))]
    pub amount: String,
    /// The window length, as for rate limits: `1h`, `30m`, `1d`.
    #[schemars(regex(pattern = r"^([0-9]+[smhd])+$"))]
    pub window: String,
    /// Separate budgets per namespace, source VM, caller, session or argument.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<LimitKey>,
    /// `Pod` (default) or `Shared` (Redis), as for rate limits.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<LimitScope>,
    /// For `Shared` budgets, when Redis cannot be reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_store_error: Option<OnStoreError>,
    /// When the size of an object cannot be known (no size in the manifest,
    /// an instancetype or source VM the controller has not seen): `Deny`
    /// the call (the default) or `Allow` it, counting nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_unknown: Option<Action>,
}

/// What a size budget measures.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum SizeResource {
    /// Storage requested by new disks (counted in MiB).
    Storage,
    /// Virtual CPUs (counted in millicores).
    Cpu,
    /// Guest memory (counted in MiB).
    Memory,
}

impl SizeResource {
    /// The name users write.
    pub fn as_str(self) -> &'static str {
        match self {
            SizeResource::Storage => "storage",
            SizeResource::Cpu => "cpu",
            SizeResource::Memory => "memory",
        }
    }
}

/// A cap on running VMs, counted from VirtualMachineInstances.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunningVmCap {
    /// At most this many running.
    #[schemars(range(min = 1, max = 100000))]
    pub max: i64,
    /// Counted per `Namespace` or over the whole `Cluster`.
    pub per: InFlightScope,
}

/// Which VM lifecycle actions on which VMs a rule matches.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LifecycleCondition {
    /// `start`, `stop`, `restart`, `pause`, `unpause`; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 5))]
    pub actions: Vec<String>,
    /// Labels the VM carries (known from the controller).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vm_labels: Option<k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    /// When the VM's labels are not known: `Deny` rules match it (the
    /// default, `Deny`), or not (`Allow`). On an `Allow` rule, `Deny`
    /// refuses the call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when_unknown: Option<Action>,
}

/// How a server's tool creates objects, for servers that do not describe
/// their tools (kubernetes-mcp-server does, in `_meta`): e.g. TrueNAS's one
/// `truenas` tool clones a VM when its `action` argument is `vm_clone`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceMapping {
    /// The tools (names or globs).
    #[schemars(length(min = 1, max = 100))]
    pub tools: Vec<String>,
    /// When the call's arguments meet these conditions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub arguments: Vec<ArgumentCondition>,
    /// The object's API group.
    #[serde(default)]
    pub group: String,
    /// The object's kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// The verb. Defaults to `create`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verb: Option<String>,
    /// Where the namespace is: an argument, or a fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<ValueFrom>,
    /// Where a clone's source VM name is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ValueFrom>,
    /// Where a clone's target name is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ValueFrom>,
    /// Instead of one object: the argument holding Kubernetes manifests
    /// (YAML or JSON, several documents allowed), one object per document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manifest: Option<String>,
}

/// A value taken from the call's arguments, or given.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ValueFrom {
    /// A JSON pointer into `arguments`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pointer: Option<String>,
    /// A fixed value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}
