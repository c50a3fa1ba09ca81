//! The `McpToolPolicy` spec: the one set of types behind policy files, the
//! CRD schema and `tollgate check`.
//!
//! These structs only describe what a user wrote. They are deliberately dumb:
//! every rule about what is *valid* lives in [`super::compile`], so a policy
//! read from a file, from the apiserver or from an admission request is judged
//! by the same code. Every struct rejects unknown fields, because a typo such
//! as `rateLimit:` for `rateLimits:` must be an error, never a rule that
//! silently does nothing.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// What an MCP server's tool calls may do.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
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
    pub mode: Mode,

    /// What happens to a call that no rule matches by tool name.
    pub default_action: Action,

    /// Remove from `tools/list` the tools this policy denies whatever their
    /// arguments (a `Deny` rule without conditions, or — with
    /// `defaultAction: Deny` — a tool no `Allow` rule names).
    #[serde(default)]
    pub hide_denied: bool,

    /// Rules, evaluated as described in docs/policy.md: every matching `Deny`
    /// rule first, then the first matching `Allow` rule whose argument
    /// conditions hold, then its rate limits.
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// A label selector over pods, as in every Kubernetes API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelector {
    /// Labels that must all be present with these values.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub match_labels: std::collections::BTreeMap<String, String>,
    /// Set-based requirements; all must hold.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub match_expressions: Vec<LabelSelectorRequirement>,
}

/// One set-based label requirement.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LabelSelectorRequirement {
    /// The label key.
    pub key: String,
    /// `In`, `NotIn`, `Exists` or `DoesNotExist`.
    pub operator: String,
    /// Values for `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub values: Vec<String>,
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

/// One named rule.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rule {
    /// Unique within the policy; appears in denials, metrics and logs.
    pub name: String,

    /// Tool names this rule matches: exact names or globs (`*`, `?`,
    /// `[abc]`), e.g. `vm_clone`, `*_list`, `pods_*`.
    pub tools: Vec<String>,

    /// `Allow` or `Deny`.
    pub action: Action,

    /// Text added to a denial by this rule, shown to the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// Conditions on the call's `arguments`; all must hold. On a `Deny` rule
    /// they narrow what is denied; on an `Allow` rule they are requirements —
    /// a call that matches the rule's tools but fails them is denied (reason
    /// `arguments`) unless a later `Allow` rule for the same tool accepts it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<ArgumentCondition>,

    /// Sliding-window limits on calls this rule allows; all must have room.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,

    /// How a denial by this rule reaches the client. Defaults to
    /// `ToolError`, a tool result with `isError: true` the model can read.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deny_with: Option<DenyWith>,
}

/// How a denial is delivered.
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

/// A condition on one value inside the call's `arguments`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ArgumentCondition {
    /// A JSON pointer (RFC 6901) into `arguments`, e.g. `/namespace` or
    /// `/spec/replicas`; an empty string means the whole `arguments` object.
    pub pointer: String,

    /// How the value is compared.
    pub operator: Operator,

    /// The operand of `Equals`, `NotEquals`, `Matches` (a regex that must
    /// match the whole string), `Lt`, `Lte`, `Gt`, `Gte` and `MaxLength`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::policy::spec::any_json")]
    pub value: Option<Value>,

    /// The operands of `In` and `NotIn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::policy::spec::any_json_list")]
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
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RateLimit {
    /// How many calls the window admits; at least 1.
    pub requests: i64,

    /// The window length: whole numbers with a unit, `s`, `m`, `h` or `d`,
    /// e.g. `30s`, `1m`, `1h30m`, `1d`.
    pub window: String,

    /// Separate budgets per argument value and/or per MCP session. Without
    /// a key the whole rule shares one budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<LimitKey>,
}

/// What splits a rate limit into separate budgets.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitKey {
    /// JSON pointers into `arguments` whose values select the budget, e.g.
    /// `["/namespace"]` for one budget per namespace. A missing value is a
    /// budget of its own.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,

    /// One budget per MCP session (the `Mcp-Session-Id` the upstream issued;
    /// calls outside a known session share one budget).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub session: bool,
}

/// Schema of a free-form JSON value: Kubernetes needs the
/// `x-kubernetes-preserve-unknown-fields` marker to accept it.
pub(crate) fn any_json(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

/// Schema of a list of free-form JSON values.
pub(crate) fn any_json_list(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "array",
        "items": { "x-kubernetes-preserve-unknown-fields": true }
    })
}
