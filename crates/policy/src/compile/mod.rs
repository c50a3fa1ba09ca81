//! `compile`: the one function that decides whether a policy is valid and
//! turns it into what the evaluator runs.
//!
//! `tollgate check`, the sidecar's file mode, the controller and admission all
//! call this, so the same YAML gets the same verdict everywhere. It collects
//! every problem instead of stopping at the first, because a user fixing a
//! policy wants the whole list in one go.

pub mod approval;
pub mod caps;
pub mod condition;
pub mod matcher;
pub mod pointer;
pub mod resource_rules;
pub mod selector;
pub mod why_not;

use std::collections::HashSet;
use std::sync::Arc;

use caps::{MAX_MESSAGE, MAX_REQUESTS};

use crate::budget::ratelimit::{Limit, LimitId};
use crate::compile::condition::Condition;
use crate::compile::matcher::{ToolMatcher, compile_glob, is_glob};
use crate::compile::pointer::check_pointer;
use crate::compile::resource_rules::{
    CloneTest, CompiledSelector, InFlightCap, LifecycleTest, NamespaceTest, compile_mappings,
    compile_resource_parts,
};
use crate::compile::selector::ToolTest;
use crate::compile::why_not::WhyNot;
use crate::duration;
use crate::problem::Problem;
use crate::resources::Mapping;
use crate::resources::sizes::{in_unit, show};
use crate::resources::{VM_GROUP, VM_KIND, VM_RESOURCE};
use crate::spec::{
    Action, ClusterMcpToolPolicySpec, DenyWith, LimitScope, McpToolPolicySpec, Mode, OnStoreError,
    RateLimit, Rule, RuleAction, SizeBudget, StrictArguments,
};

/// A problem when `list` is longer than `max`.
fn too_long<T>(list: &[T], max: usize, path: String, what: &str, hint: &str) -> Option<Problem> {
    (list.len() > max).then(|| {
        Problem::at(
            path,
            format!("{} {what}; at most {max} are allowed. {hint}", list.len()),
        )
    })
}

/// A policy, checked and ready to evaluate.
#[derive(Debug, Clone)]
pub struct CompiledPolicy {
    /// `namespace/name`, or `name` for a file policy without a namespace.
    pub name: Arc<str>,
    /// Enforce or Audit.
    pub mode: Mode,
    /// What an unmatched call gets.
    pub default_action: Action,
    /// Whether statically denied tools vanish from `tools/list`.
    pub hide_denied: bool,
    /// How denials without a rule of their own are delivered.
    pub deny_with: DenyWith,
    pub(crate) rules: Vec<CompiledRule>,
    pub(crate) matcher: ToolMatcher,
    /// Rules with `resources`, in order.
    pub(crate) resource_rules: Vec<u32>,
    /// How undescribed tools create objects.
    pub(crate) mappings: Vec<Mapping>,
    /// Where objects without a namespace land.
    pub(crate) default_namespace: String,
    /// When arguments the upstream's schema does not list are refused.
    pub(crate) strict_arguments: StrictArguments,
}

/// One rule, checked.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    /// The rule's name.
    pub name: Arc<str>,
    /// Allow or Deny (a `RequireApproval` rule is an `Allow` rule with
    /// [`approval`](Self::approval)).
    pub action: Action,
    /// For `RequireApproval` rules: the call is allowed only with an
    /// approval of this exact call.
    pub approval: Option<Arc<approval::Approval>>,
    /// The user's text for denials.
    pub message: Option<String>,
    /// All must hold.
    pub conditions: Vec<Condition>,
    /// All must have room.
    pub limits: Vec<CompiledLimit>,
    /// How a denial is delivered.
    pub deny_with: DenyWith,
    /// Whether the rule names tools, by pattern or by `toolSelector` (else
    /// it is a pure resource rule).
    pub has_tools: bool,
    /// Its `toolSelector`, if any.
    pub tool_selector: Option<ToolTest>,
    /// The objects it matches.
    pub resources: Vec<CompiledSelector>,
    /// Where they may be.
    pub namespaces: Option<NamespaceTest>,
    /// Which clones.
    pub clone: Option<CloneTest>,
    /// How many may be in flight.
    pub in_flight: Vec<InFlightCap>,
    /// Callers it applies to (globs), if restricted.
    pub subjects: Option<SubjectTest>,
    /// At most this many running VMs when a call starts one.
    pub running_vms: Option<InFlightCap>,
    /// Which VM lifecycle actions on which VMs.
    pub lifecycle: Option<LifecycleTest>,
}

/// `subjects`, checked.
#[derive(Debug, Clone)]
pub struct SubjectTest {
    set: globset::GlobSet,
    patterns: Vec<String>,
}

impl SubjectTest {
    /// `Err` says why the caller `subject` is not one of these.
    pub fn check<'a>(&'a self, subject: Option<&'a str>) -> Result<(), WhyNot<'a>> {
        match subject {
            Some(s) if self.set.is_match(s) => Ok(()),
            Some(s) => Err(WhyNot::CallerNotListed {
                caller: s,
                patterns: &self.patterns,
            }),
            None => Err(WhyNot::NoIdentity {
                patterns: &self.patterns,
            }),
        }
    }
}

/// One rate limit of a rule.
#[derive(Debug, Clone)]
pub struct CompiledLimit {
    /// The budget.
    pub limit: Arc<Limit>,
    /// Pointers whose values select the bucket.
    pub key_arguments: Vec<pointer::Pointer>,
    /// Whether the session selects the bucket.
    pub key_session: bool,
    /// Whether the object's namespace selects the bucket.
    pub key_namespace: bool,
    /// Whether the clone's source VM selects the bucket.
    pub key_source: bool,
    /// Whether the caller's subject selects the bucket.
    pub key_subject: bool,
    /// For a size budget: whether an object of unknown size is let through
    /// (counting nothing) rather than denied.
    pub unknown_allowed: bool,
}

impl CompiledPolicy {
    /// The resource rules that apply to a tool, given the rules naming it
    /// (`matched`, from the matcher): those naming it and those naming no
    /// tool at all.
    pub(crate) fn resource_rules_for(&self, matched: &[u32]) -> Vec<&CompiledRule> {
        self.resource_rules
            .iter()
            .filter(|&&i| !self.rules[i as usize].has_tools || matched.contains(&i))
            .map(|&i| &self.rules[i as usize])
            .collect()
    }

    /// Whether a call must keep to the upstream's `inputSchema`, given
    /// whether a resource rule of this policy judges what it creates.
    pub(crate) fn strict_arguments(&self, judges_objects: bool) -> bool {
        match self.strict_arguments {
            StrictArguments::Always => true,
            StrictArguments::ResourceRules => judges_objects,
            StrictArguments::Never => false,
        }
    }

    /// Whether any resource rule of this policy judges what `tool` creates.
    pub(crate) fn judges_objects_of(&self, tool: &str) -> bool {
        if self.resource_rules.is_empty() {
            return false;
        }
        let mut matched = Vec::new();
        self.matcher.rules_for(tool, None, &mut matched);
        !self.resource_rules_for(&matched).is_empty()
    }

    /// Whether a rule selects tools by what the upstream says they do.
    pub(crate) fn selects_by_behaviour(&self) -> bool {
        self.matcher.selects_by_behaviour()
    }

    /// The compiled rules, in evaluation order.
    pub fn rules(&self) -> &[CompiledRule] {
        &self.rules
    }

    /// Whether a rule names `tool` literally (not through a glob).
    pub fn names_tool_exactly(&self, tool: &str) -> bool {
        self.matcher.names_exactly(tool)
    }
}

/// A label selector Kubernetes would refuse, said so.
fn check_selector(
    selector: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector>,
    path: &str,
) -> Option<Problem> {
    let e = kube::core::Selector::try_from(selector?.clone()).err()?;
    Some(Problem::at(
        path,
        format!(
            "not a valid label selector ({}); operators are In, NotIn, Exists and DoesNotExist",
            e.0
        ),
    ))
}

/// Checks a `ClusterMcpToolPolicy` spec: its `namespaceSelector`, and the
/// rest as [`compile`] does for every policy.
pub fn compile_cluster(
    name: &str,
    spec: &ClusterMcpToolPolicySpec,
) -> Result<CompiledPolicy, Vec<Problem>> {
    let selector = check_selector(spec.namespace_selector.as_ref(), "spec.namespaceSelector");
    match (compile(name, &spec.policy), selector) {
        (Ok(compiled), None) => Ok(compiled),
        (Ok(_), Some(p)) => Err(vec![p]),
        (Err(mut problems), p) => {
            problems.extend(p);
            Err(problems)
        }
    }
}

/// Checks `spec` and compiles it under the policy name `name`.
pub fn compile(name: &str, spec: &McpToolPolicySpec) -> Result<CompiledPolicy, Vec<Problem>> {
    let mut problems = Vec::new();
    problems.extend(too_long(
        &spec.rules,
        caps::RULES,
        "spec.rules".into(),
        "rules",
        "Split the policy into several.",
    ));
    problems.extend(check_selector(spec.selector.as_ref(), "spec.selector"));
    let policy_deny_with = spec.deny_with.unwrap_or_default();
    let mut names = HashSet::new();
    let mut rules = Vec::with_capacity(spec.rules.len());
    for (i, rule) in spec.rules.iter().enumerate() {
        let path = format!("spec.rules[{i}]");
        if !names.insert(rule.name.as_str()) {
            problems.push(Problem::at(
                format!("{path}.name"),
                format!(
                    "rule name {:?} is used twice; give every rule a unique name",
                    rule.name
                ),
            ));
        }
        match compile_rule(name, rule, policy_deny_with, &path) {
            Ok(r) => rules.push(r),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let mappings = compile_mappings(&spec.resource_mappings).unwrap_or_else(|mut p| {
        problems.append(&mut p);
        Vec::new()
    });
    let default_namespace = spec
        .default_namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    if default_namespace.is_empty()
        || default_namespace.len() > 63
        || !default_namespace
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        problems.push(Problem::at(
            "spec.defaultNamespace",
            format!("{default_namespace:?} is not a namespace name"),
        ));
    }
    problems.extend(check_budgets(spec));
    if !problems.is_empty() {
        return Err(problems);
    }
    let resource_rules = rules
        .iter()
        .enumerate()
        .filter(|(_, r)| !r.resources.is_empty())
        .map(|(i, _)| i as u32)
        .collect();
    let patterns = spec
        .rules
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.tools.iter().map(move |t| (i as u32, t.as_str())));
    let selectors = rules
        .iter()
        .enumerate()
        .filter_map(|(i, r)| {
            let test = r.tool_selector.clone()?;
            Some((i as u32, test, !spec.rules[i].tools.is_empty()))
        })
        .collect();
    let matcher = ToolMatcher::build(patterns)
        .map_err(|e| {
            // Every glob was validated one by one above; a failure here is a
            // limit of the combined set (e.g. its size).
            vec![Problem::at(
                "spec.rules",
                format!("the tool patterns cannot be combined: {e}"),
            )]
        })?
        .with_selectors(selectors);
    Ok(CompiledPolicy {
        name: name.into(),
        mode: spec.mode,
        default_action: spec.default_action,
        hide_denied: spec.hide_denied,
        deny_with: policy_deny_with,
        rules,
        matcher,
        resource_rules,
        mappings,
        default_namespace,
        strict_arguments: spec.strict_arguments.unwrap_or_default(),
    })
}

fn compile_rule(
    policy: &str,
    rule: &Rule,
    policy_deny_with: DenyWith,
    path: &str,
) -> Result<CompiledRule, Vec<Problem>> {
    let mut problems = Vec::new();
    if let Err(e) = check_name(&rule.name, NameOf::Rule) {
        problems.push(Problem::at(format!("{path}.name"), e.to_string()));
    }
    problems.extend(too_long(
        &rule.tools,
        caps::TOOLS,
        format!("{path}.tools"),
        "tool patterns",
        "Use globs.",
    ));
    problems.extend(too_long(
        &rule.arguments,
        caps::ARGUMENTS,
        format!("{path}.arguments"),
        "conditions",
        "Split the rule.",
    ));
    problems.extend(too_long(
        &rule.rate_limits,
        caps::RATE_LIMITS,
        format!("{path}.rateLimits"),
        "rate limits",
        "Split the rule.",
    ));
    if rule.tools.is_empty() && rule.tool_selector.is_none() && rule.resources.is_empty() {
        problems.push(Problem::at(
            format!("{path}.tools"),
            "list at least one tool name or glob, e.g. `tools: [vm_clone]` or `tools: [\"*\"]`, select tools by what they do in `toolSelector`, or name the objects it governs in `resources`",
        ));
    }
    let tool_selector = match &rule.tool_selector {
        Some(s) => ToolTest::compile(s, &format!("{path}.toolSelector"))
            .map_err(|mut p| problems.append(&mut p))
            .ok(),
        None => None,
    };
    let action = match rule.action {
        RuleAction::Allow | RuleAction::RequireApproval => Action::Allow,
        RuleAction::Deny => Action::Deny,
    };
    let approval = match rule.action {
        RuleAction::RequireApproval => approval::compile(rule.approval.as_ref(), path)
            .map_err(|mut p| problems.append(&mut p))
            .ok()
            .map(Arc::new),
        _ if rule.approval.is_some() => {
            problems.push(Problem::at(
                format!("{path}.approval"),
                "approval settings apply to rules with `action: RequireApproval`",
            ));
            None
        }
        _ => None,
    };
    let resource_parts = compile_resource_parts(
        &rule.resources,
        rule.namespaces.as_ref(),
        rule.clone.as_ref(),
        &rule.in_flight,
        action,
        path,
    )
    .map_err(|mut p| problems.append(&mut p))
    .ok();
    for (j, tool) in rule.tools.iter().enumerate() {
        if tool.is_empty() {
            problems.push(Problem::at(
                format!("{path}.tools[{j}]"),
                "a tool pattern cannot be empty",
            ));
        } else if is_glob(tool)
            && let Err(e) = compile_glob(tool)
        {
            problems.push(Problem::at(
                format!("{path}.tools[{j}]"),
                format!("{tool:?} is not a valid glob ({}); use `*`, `?`, `[abc]` or `{{a,b}}`, or escape a literal with `\\`", e.kind()),
            ));
        }
    }
    if let Some(message) = &rule.message
        && message.chars().count() > MAX_MESSAGE
    {
        problems.push(Problem::at(
            format!("{path}.message"),
            format!("the message is longer than {MAX_MESSAGE} characters; shorten it"),
        ));
    }
    if action == Action::Deny && !rule.rate_limits.is_empty() {
        problems.push(Problem::at(
            format!("{path}.rateLimits"),
            "rate limits apply to calls a rule allows; a Deny rule denies every call it matches. Use `action: Allow` or remove `rateLimits`",
        ));
    }
    let mut conditions = Vec::with_capacity(rule.arguments.len());
    for (j, c) in rule.arguments.iter().enumerate() {
        match Condition::compile(c, &format!("{path}.arguments[{j}]")) {
            Ok(c) => conditions.push(c),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let mut limits: Vec<CompiledLimit> = Vec::with_capacity(rule.rate_limits.len());
    for (j, l) in rule.rate_limits.iter().enumerate() {
        let at = format!("{path}.rateLimits[{j}]");
        match compile_limit(policy, &rule.name, l, &at) {
            Ok(l) if limits.iter().any(|o| o.limit.id == l.limit.id) => problems.push(Problem::at(
                at,
                "another limit of this rule has the same window and key; keep only the stricter one",
            )),
            Ok(l) => limits.push(l),
            Err(mut p) => problems.append(&mut p),
        }
    }
    for (j, l) in rule.rate_limits.iter().enumerate() {
        let key = l.key.clone().unwrap_or_default();
        if (key.namespace || key.source) && rule.resources.is_empty() {
            problems.push(Problem::at(
                format!("{path}.rateLimits[{j}].key"),
                "`namespace` and `source` keys count the objects a call creates; add `resources:` to the rule (or key tool calls by `arguments`)",
            ));
        }
    }
    for (j, b) in rule.budgets.iter().enumerate() {
        let at = format!("{path}.budgets[{j}]");
        if rule.resources.is_empty() {
            problems.push(Problem::at(
                at.clone(),
                "size budgets count what a call's objects consume; add `resources:` to the rule",
            ));
        }
        if rule.action == RuleAction::Deny {
            problems.push(Problem::at(
                at.clone(),
                "budgets apply to what a rule allows; use `action: Allow` or remove `budgets`",
            ));
        }
        match compile_budget(policy, &rule.name, b, &at) {
            Ok(l) if limits.iter().any(|o| o.limit.id == l.limit.id) => problems.push(Problem::at(
                at,
                "another budget of this rule has the same resource, window and key; keep only the stricter one",
            )),
            Ok(l) => limits.push(l),
            Err(mut p) => problems.append(&mut p),
        }
    }
    let running_vms = rule.running_vms.as_ref().and_then(|cap| {
        let at = format!("{path}.runningVMs");
        if rule.action == RuleAction::Deny {
            problems.push(Problem::at(at.clone(), "a running-VM cap applies to what a rule allows; use `action: Allow`"));
        }
        if !rule.resources.iter().any(|r| r.group == VM_GROUP && (r.kind.as_deref() == Some(VM_KIND) || r.resource.as_deref() == Some(VM_RESOURCE))) {
            problems.push(Problem::at(at.clone(), format!("running VMs are counted for {VM_KIND}s; add {{group: {VM_GROUP}, kind: {VM_KIND}}} to `resources`")));
        }
        if cap.per == crate::spec::InFlightScope::Source {
            problems.push(Problem::at(format!("{at}.per"), "running VMs are counted per Namespace, per Caller or per Cluster"));
            return None;
        }
        if !(1..=100_000).contains(&cap.max) {
            problems.push(Problem::at(format!("{at}.max"), format!("{} is not between 1 and 100000", cap.max)));
            return None;
        }
        Some(InFlightCap { max: cap.max as u32, scope: cap.per })
    });
    let lifecycle = rule.lifecycle.as_ref().and_then(|l| {
        LifecycleTest::compile(l, &format!("{path}.lifecycle"))
            .map_err(|mut p| problems.append(&mut p))
            .ok()
    });
    let subjects = if rule.subjects.is_empty() {
        None
    } else {
        let mut builder = globset::GlobSetBuilder::new();
        for (j, s) in rule.subjects.iter().enumerate() {
            match compile_glob(s) {
                Ok(g) if !s.is_empty() => {
                    builder.add(g);
                }
                Ok(_) => problems.push(Problem::at(
                    format!("{path}.subjects[{j}]"),
                    "a subject cannot be empty",
                )),
                Err(e) => problems.push(Problem::at(
                    format!("{path}.subjects[{j}]"),
                    format!("{s:?} is not a valid glob ({})", e.kind()),
                )),
            }
        }
        builder.build().ok().map(|set| SubjectTest {
            set,
            patterns: rule.subjects.iter().map(|s| format!("{s:?}")).collect(),
        })
    };
    let (Some((resources, namespaces, clone, in_flight)), true) =
        (resource_parts, problems.is_empty())
    else {
        return Err(problems);
    };
    Ok(CompiledRule {
        name: rule.name.as_str().into(),
        action,
        approval,
        message: rule.message.clone(),
        conditions,
        limits,
        deny_with: rule.deny_with.unwrap_or(policy_deny_with),
        has_tools: !rule.tools.is_empty() || tool_selector.is_some(),
        tool_selector,
        resources,
        namespaces,
        clone,
        in_flight,
        subjects,
        running_vms,
        lifecycle,
    })
}

/// A size budget: a rate limit over amounts (see [`crate::budget::weighted`]).
fn compile_budget(
    policy: &str,
    rule: &str,
    b: &SizeBudget,
    path: &str,
) -> Result<CompiledLimit, Vec<Problem>> {
    let mut problems = Vec::new();
    let amount = match in_unit(b.resource, &b.amount) {
        Ok(0) => {
            problems.push(Problem::at(
                format!("{path}.amount"),
                format!(
                    "{:?} admits nothing; to refuse every object, use `action: Deny`",
                    b.amount
                ),
            ));
            None
        }
        Ok(a) if a > u64::from(u32::MAX) => {
            problems.push(Problem::at(
                format!("{path}.amount"),
                format!(
                    "{:?} is above the largest budget ({})",
                    b.amount,
                    show(b.resource, u64::from(u32::MAX))
                ),
            ));
            None
        }
        Ok(a) => Some(a as u32),
        Err(e) => {
            problems.push(Problem::at(format!("{path}.amount"), e.to_string()));
            None
        }
    };
    let as_limit = RateLimit {
        requests: 1,
        window: b.window.clone(),
        key: b.key.clone(),
        scope: b.scope,
        on_store_error: b.on_store_error,
        budget: None,
    };
    let compiled = compile_limit(
        policy,
        &format!("{rule}/{}", b.resource.as_str()),
        &as_limit,
        path,
    );
    let (Some(amount), Ok(mut l)) = (amount, compiled.map_err(|mut p| problems.append(&mut p)))
    else {
        return Err(problems);
    };
    let limit = Arc::make_mut(&mut l.limit);
    limit.requests = amount;
    limit.size = Some(b.resource);
    l.unknown_allowed = b.when_unknown == Some(Action::Allow);
    Ok(l)
}

fn compile_limit(
    policy: &str,
    rule: &str,
    l: &RateLimit,
    path: &str,
) -> Result<CompiledLimit, Vec<Problem>> {
    let mut problems = Vec::new();
    if l.requests < 1 {
        problems.push(Problem::at(
            format!("{path}.requests"),
            format!("{} admits nothing; a limit needs `requests: 1` or more (to refuse every call, use `action: Deny`)", l.requests),
        ));
    } else if l.requests > MAX_REQUESTS {
        problems.push(Problem::at(
            format!("{path}.requests"),
            format!("{} is above the maximum of {MAX_REQUESTS} per window; use a shorter window with a smaller count", l.requests),
        ));
    }
    let window = match duration::parse(&l.window) {
        Ok(w) => Some(w),
        Err(e) => {
            problems.push(Problem::at(format!("{path}.window"), e.to_string()));
            None
        }
    };
    let mut key = l.key.clone().unwrap_or_default();
    problems.extend(too_long(
        &key.arguments,
        caps::KEY_ARGUMENTS,
        format!("{path}.key.arguments"),
        "key pointers",
        "",
    ));
    let mut seen = HashSet::new();
    for (k, pointer) in key.arguments.iter().enumerate() {
        if let Err(e) = check_pointer(pointer) {
            problems.push(Problem::at(
                format!("{path}.key.arguments[{k}]"),
                e.to_string(),
            ));
        } else if !seen.insert(pointer) {
            problems.push(Problem::at(
                format!("{path}.key.arguments[{k}]"),
                format!("{pointer:?} is listed twice"),
            ));
        }
    }
    let (Some(window), true) = (window, problems.is_empty()) else {
        return Err(problems);
    };
    // Key order does not change what a budget means.
    key.arguments.sort();
    // The identity covers what gives a bucket its meaning (policy, rule,
    // window, key shape) but not the count: tightening "30 per 1m" to "10
    // per 1m" keeps the admissions already made; adding or reordering limits
    // moves no history from one to another.
    // JSON-encoded pointers: a pointer may itself contain ',' or ']'.
    let shared = l.scope == Some(LimitScope::Shared);
    if l.on_store_error.is_some() && !shared {
        problems.push(Problem::at(
            format!("{path}.onStoreError"),
            "onStoreError applies to limits with `scope: Shared` (a Pod limit has no store to lose)",
        ));
        return Err(problems);
    }
    if let Some(name) = &l.budget
        && let Err(e) = check_name(name, NameOf::Budget)
    {
        problems.push(Problem::at(format!("{path}.budget"), e.to_string()));
        return Err(problems);
    }
    // A named budget is the policy's, not the rule's: every limit naming
    // it draws on the same buckets (compile_budgets checks they agree).
    let owner = match &l.budget {
        Some(name) => format!("@budget:{name}"),
        None => rule.to_owned(),
    };
    let id = format!(
        "{policy}/{owner}/{}{}{}{}{}{}",
        duration::Human(window),
        serde_json::to_string(&key.arguments).unwrap_or_default(),
        if key.session { "+session" } else { "" },
        if key.namespace { "+namespace" } else { "" },
        if key.source { "+source" } else { "" },
        if key.subject { "+subject" } else { "" }
    );
    Ok(CompiledLimit {
        limit: Arc::new(Limit {
            id: LimitId(id.into()),
            requests: l.requests as u32,
            window,
            shared,
            local_fallback: l.on_store_error == Some(OnStoreError::LocalFallback),
            size: None,
        }),
        // Checked above: every one parses.
        key_arguments: key
            .arguments
            .iter()
            .filter_map(|p| pointer::Pointer::parse(p).ok())
            .collect(),
        key_session: key.session,
        key_namespace: key.namespace,
        key_source: key.source,
        key_subject: key.subject,
        unknown_allowed: false,
    })
}

/// Limits that name one budget must describe it alike: one size, one
/// window, one key, one scope.
fn check_budgets(spec: &McpToolPolicySpec) -> Vec<Problem> {
    let mut first: std::collections::HashMap<&str, (&RateLimit, String)> = Default::default();
    let mut problems = Vec::new();
    for (i, rule) in spec.rules.iter().enumerate() {
        for (j, l) in rule.rate_limits.iter().enumerate() {
            let Some(name) = l.budget.as_deref() else {
                continue;
            };
            let path = format!("spec.rules[{i}].rateLimits[{j}]");
            match first.get(name) {
                None => {
                    first.insert(name, (l, path));
                }
                Some((other, at)) => {
                    let same = other.requests == l.requests
                        && duration::parse(&other.window).ok() == duration::parse(&l.window).ok()
                        && other.key.clone().unwrap_or_default().normalized()
                            == l.key.clone().unwrap_or_default().normalized()
                        && other.scope.unwrap_or_default() == l.scope.unwrap_or_default()
                        && other.on_store_error == l.on_store_error;
                    if !same {
                        problems.push(Problem::at(
                            format!("{path}.budget"),
                            format!(
                                "budget {name:?} is also declared at {at} with another size, window, key or scope; limits that share a budget must declare it alike"
                            ),
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// What a checked name names, for the message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NameOf {
    /// `rules[].name`.
    Rule,
    /// `rateLimits[].budget`.
    Budget,
}

impl std::fmt::Display for NameOf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameOf::Rule => "rule name",
            NameOf::Budget => "budget name",
        })
    }
}

/// A rule or budget name that is empty, too long or has other characters.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{name:?} is not a valid {of}; use 1-63 letters, digits, '-', '_' or '.', e.g. \"allow-reads\""
)]
pub(crate) struct InvalidName {
    name: String,
    of: NameOf,
}

/// Rule names appear in metrics labels and denials: keep them short and
/// plain. Budget names share the rule.
fn check_name(name: &str, of: NameOf) -> Result<(), InvalidName> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(InvalidName {
            name: name.to_owned(),
            of,
        })
    }
}
