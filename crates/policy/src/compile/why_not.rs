//! Why a compiled rule does not hold for a call, as a value.
//!
//! The checks of a rule (`subjects`, argument conditions, `namespaces`,
//! `clone`, `lifecycle`, in-flight keys, size budgets) say why they fail
//! with a [`WhyNot`] that borrows what it names from the rule and the call.
//! Nothing is formatted while the engine tries rule after rule; only the
//! reason a denial reports is turned into the sentence the model reads
//! (its `Display`, which is the wording tests and docs quote).

use std::time::Duration;

use serde_json::Value;

use crate::compile::condition::Condition;
use crate::duration::Human;
use crate::resources::Op;
use crate::resources::sizes::show;
use crate::spec::SizeResource;

/// Why a rule does not hold for a call (or one object of it).
#[derive(Debug, thiserror::Error)]
pub enum WhyNot<'a> {
    /// An `Allow` rule's `toolSelector` cannot tell whether it selects the
    /// tool; the text is what the server leaves unsaid.
    #[error("{0}; this rule selects tools by what they do, so it cannot allow the call")]
    BehaviourUnknown(String),
    /// The caller is verified but not one of the rule's `subjects`.
    #[error("caller {caller:?} is not one of {}", .patterns.join(", "))]
    CallerNotListed {
        caller: &'a str,
        patterns: &'a [String],
    },
    /// The rule names `subjects` and the call carries no verified identity.
    #[error("this rule is for callers {}, and the call carries no verified identity", .patterns.join(", "))]
    NoIdentity { patterns: &'a [String] },
    /// An argument condition does not hold for `arguments`.
    #[error("{}", .condition.explain(.arguments))]
    Argument {
        condition: &'a Condition,
        arguments: &'a Value,
    },
    /// The object's namespace cannot be known and `namespaces` is set.
    #[error(
        "its namespace cannot be known (cluster-wide or all namespaces), and this rule only allows some namespaces"
    )]
    NamespaceUnknown,
    /// `namespaces.exclude` matches.
    #[error("namespace {namespace:?} is excluded ({})", .patterns.join(", "))]
    NamespaceExcluded {
        namespace: &'a str,
        patterns: &'a [String],
    },
    /// `namespaces.include` does not match.
    #[error("namespace {namespace:?} is not one of {}", .patterns.join(", "))]
    NamespaceNotListed {
        namespace: &'a str,
        patterns: &'a [String],
    },
    /// The clone's source VM cannot be told from the call.
    #[error("its source VM cannot be known")]
    SourceUnknown,
    /// `clone.excludeSources` matches.
    #[error("source VM {source_vm:?} may not be cloned ({})", .patterns.join(", "))]
    SourceExcluded {
        source_vm: &'a str,
        patterns: &'a [String],
    },
    /// `clone.sources` does not match.
    #[error("source VM {source_vm:?} must match {}", .patterns.join(", "))]
    SourceNotListed {
        source_vm: &'a str,
        patterns: &'a [String],
    },
    /// The source VM lacks `clone.sourceLabels`.
    #[error("source VM {namespace}/{source_vm} does not carry the required labels")]
    SourceLabelsMismatch {
        namespace: &'a str,
        source_vm: &'a str,
    },
    /// The source VM's labels are not known (and `whenUnknown` is not `Allow`).
    #[error(
        "the labels of source VM {namespace}/{source_vm} are not known, so it cannot be checked"
    )]
    SourceLabelsUnknown {
        namespace: &'a str,
        source_vm: &'a str,
    },
    /// `clone.targets` does not match.
    #[error("target name {target:?} must match {}", .patterns.join(", "))]
    TargetNotListed {
        target: &'a str,
        patterns: &'a [String],
    },
    /// `clone.targets` is set and the call names no target.
    #[error("the clone needs a target name matching {}", .patterns.join(", "))]
    TargetMissing { patterns: &'a [String] },
    /// `clone.targetDiffersFromSource` and the two are the same.
    #[error("the target must not be the source VM itself")]
    TargetIsSource,
    /// A `lifecycle` rule and a call that is no lifecycle action.
    #[error("it is no VM lifecycle action")]
    NoLifecycleAction,
    /// The lifecycle action is not one of `lifecycle.actions`.
    #[error("{action:?} is not one of {}", .actions.join(", "))]
    ActionNotListed {
        action: &'a str,
        actions: &'a [String],
    },
    /// The VM lacks `lifecycle.vmLabels`.
    #[error("VM {namespace}/{name} does not carry the labels")]
    VmLabelsMismatch { namespace: &'a str, name: &'a str },
    /// The VM's labels are not known (and the rule does not let that pass).
    #[error("the labels of VM {namespace}/{name} are not known, so it cannot be checked")]
    VmLabelsUnknown { namespace: &'a str, name: &'a str },
    /// An `inFlight` cap cannot key the object.
    #[error("{0}, so its in-flight cap cannot be counted")]
    InFlightUncounted(NoKey),
    /// A `runningVMs` cap cannot key the object.
    #[error("{0}, so running VMs cannot be counted")]
    RunningVmsUncounted(NoKey),
    /// A `runningVMs` cap and a controller count that is not current:
    /// this sidecar's own starts say nothing about VMs started elsewhere.
    #[error(
        "the cap of {max} running VMs cannot be checked: the controller's count of running VMs (VirtualMachineInstances) is not current (no controller, KubeVirt not installed, or its watch is re-listing or not heard from lately); retry shortly"
    )]
    RunningVmsNotCurrent { max: u32 },
    /// A size budget with `whenUnknown: Deny` and an object of unknown size.
    #[error(
        "{} (the budget of {} per {} says whenUnknown: Deny)",
        unknown_size(.op, *.resource),
        show(*.resource, u64::from(*.requests)),
        Human(*.window)
    )]
    SizeUnknown {
        op: &'a Op,
        resource: SizeResource,
        requests: u32,
        window: Duration,
    },
}

/// Why an in-flight or running-VM cap has no counter key for an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NoKey {
    /// The cap counts per namespace.
    #[error("its namespace cannot be known")]
    NamespaceUnknown,
    /// The cap counts per source VM.
    #[error("its source VM cannot be known")]
    SourceUnknown,
    /// The cap counts per caller, and the caller has no verified identity
    /// (an MCP session is not one: a new session would be a new caller).
    #[error(
        "the caller has no verified identity (run the sidecar with --identity jwt or kubernetes)"
    )]
    CallerUnknown,
    /// The cap counts per caller, by the VMs it started: the VM must be
    /// named.
    #[error("its VM's name cannot be known")]
    VmUnknown,
}

/// Why the `resource` of `op` cannot be known.
fn unknown_size(op: &Op, resource: SizeResource) -> String {
    let what = resource.as_str();
    if op.is_clone() {
        let ns = op.namespace.as_deref().unwrap_or("?");
        let source = op
            .clone
            .as_ref()
            .and_then(|c| c.source.as_deref())
            .unwrap_or("?");
        return format!(
            "the {what} of source VM {ns}/{source} is not known (the controller has not seen it)"
        );
    }
    match op.demand.as_ref().and_then(|d| d.instancetype.as_ref()) {
        Some(it) if resource != SizeResource::Storage => format!(
            "the {what} of instancetype {:?} is not known (the controller has not seen it)",
            it.name
        ),
        _ => format!("the {what} this object asks for cannot be told from the call"),
    }
}
