//! The parts of a rule that judge Kubernetes objects rather than tool
//! names: which objects (`resources`), where (`namespaces`), which clones
//! (`clone`), and how many at once (`inFlight`). Compiled here, checked
//! against each [`Op`] a call would perform.

use std::collections::BTreeMap;

use globset::{GlobSet, GlobSetBuilder};
use kube::core::{Selector, SelectorExt};

use crate::compile::condition::Condition;
use crate::compile::matcher::compile_glob;
use crate::compile::pointer::check_pointer;
use crate::compile::why_not::{NoKey, WhyNot};
use crate::problem::Problem;
use crate::resources::sizes::Sizes;
use crate::resources::{CLONE_GROUP, CLONE_KIND, CLONE_RESOURCE, From, Mapping, Op, plural};
use crate::spec::{
    Action, CloneCondition, InFlightLimit, InFlightScope, NamespaceCondition, ResourceMapping,
    ResourceSelector,
};

/// What the cluster knows that rules may ask about.
pub trait ClusterView: Sync {
    /// The labels of VirtualMachine `namespace/name`, if known.
    fn vm_labels(&self, namespace: &str, name: &str) -> Option<BTreeMap<String, String>>;

    /// What VirtualMachine `namespace/name` consumes — CPU and memory (from
    /// its template or instancetype) and the storage of its disks — as a
    /// clone of it would, if known.
    fn vm_size(&self, _namespace: &str, _name: &str) -> Option<Sizes> {
        None
    }

    /// CPU and memory of an instancetype: a VirtualMachineInstancetype in
    /// `namespace`, or the VirtualMachineClusterInstancetype when `None`.
    fn instancetype(&self, _namespace: Option<&str>, _name: &str) -> Option<Sizes> {
        None
    }

    /// Whether the controller's count of running VMs (its
    /// VirtualMachineInstance watch) is current: listed, not re-listing,
    /// and heard from lately. A `runningVMs` cap cannot be checked without
    /// it — this sidecar's own starts say nothing about VMs started
    /// elsewhere — so starts under such a cap are refused until it is.
    fn running_vms_current(&self) -> bool {
        false
    }

    /// Whether VirtualMachine `namespace/name` runs now (it has a
    /// VirtualMachineInstance), as a current VMI watch vouches. `false`
    /// when that is not known: starting it then counts as a start, so a
    /// `runningVMs` cap never undercounts for want of knowledge.
    fn vm_running(&self, _namespace: &str, _name: &str) -> bool {
        false
    }

    /// The storage a DataVolume or PersistentVolumeClaim `namespace/name`
    /// requests now (MiB), if known: re-applying one consumes only what it
    /// grows by.
    fn disk_size(&self, _namespace: &str, _name: &str) -> Option<u64> {
        None
    }
}

/// A view that knows nothing (file mode without a controller).
pub struct NoCluster;

impl ClusterView for NoCluster {
    fn vm_labels(&self, _: &str, _: &str) -> Option<BTreeMap<String, String>> {
        None
    }
}

/// A `resources` entry, checked.
#[derive(Clone, Debug)]
pub struct CompiledSelector {
    group: String,
    /// The plural resource this selector names (from `resource`, or
    /// derived from `kind`).
    resource: String,
    kind: Option<String>,
    verbs: Vec<String>,
}

impl CompiledSelector {
    /// Whether `op` is one of the objects this selector names.
    pub fn matches(&self, op: &Op) -> bool {
        if op.group != self.group || op.subresource.is_some() {
            return false;
        }
        let same_kind = match (&op.kind, &op.resource) {
            (Some(kind), _)
                if self
                    .kind
                    .as_deref()
                    .is_some_and(|k| k.eq_ignore_ascii_case(kind)) =>
            {
                true
            }
            (Some(kind), _) => plural(kind) == self.resource,
            (None, Some(resource)) => resource.eq_ignore_ascii_case(&self.resource),
            (None, None) => false,
        };
        same_kind
            && op
                .verbs
                .iter()
                .any(|v| self.verbs.iter().any(|w| w == v || w == "*"))
    }

    /// Whether every object `other` names, with every verb, this selector
    /// names too.
    pub fn covers(&self, other: &CompiledSelector) -> bool {
        self.group == other.group
            && self.resource == other.resource
            && (self.verbs.iter().any(|v| v == "*")
                || other.verbs.iter().all(|v| self.verbs.contains(v)))
    }

    /// Whether this selector names VirtualMachineClones.
    pub(crate) fn is_clone(&self) -> bool {
        self.group == CLONE_GROUP && self.resource == CLONE_RESOURCE
    }

    /// `VirtualMachineClone` (or the resource), for messages.
    pub fn describe(&self) -> String {
        self.kind.clone().unwrap_or_else(|| self.resource.clone())
    }
}

/// `namespaces`, checked.
#[derive(Clone, Debug)]
pub struct NamespaceTest {
    include: Option<(GlobSet, Vec<String>)>,
    exclude: Option<(GlobSet, Vec<String>)>,
}

impl NamespaceTest {
    /// `Err` says why `namespace` is refused.
    pub fn check<'a>(&'a self, namespace: Option<&'a str>) -> Result<(), WhyNot<'a>> {
        let Some(ns) = namespace else {
            return Err(WhyNot::NamespaceUnknown);
        };
        if let Some((set, patterns)) = &self.exclude
            && set.is_match(ns)
        {
            return Err(WhyNot::NamespaceExcluded {
                namespace: ns,
                patterns,
            });
        }
        if let Some((set, patterns)) = &self.include
            && !set.is_match(ns)
        {
            return Err(WhyNot::NamespaceNotListed {
                namespace: ns,
                patterns,
            });
        }
        Ok(())
    }
}

/// `clone`, checked.
#[derive(Clone, Debug)]
pub struct CloneTest {
    sources: Option<(GlobSet, Vec<String>)>,
    exclude_sources: Option<(GlobSet, Vec<String>)>,
    source_labels: Option<Selector>,
    unknown_allowed: bool,
    targets: Option<(GlobSet, Vec<String>)>,
    differs: bool,
}

impl CloneTest {
    /// `Err` says why the clone `op` is refused.
    pub fn check<'a>(&'a self, op: &'a Op, view: &dyn ClusterView) -> Result<(), WhyNot<'a>> {
        let clone = op.clone.as_ref();
        let source = clone.and_then(|c| c.source.as_deref());
        if self.sources.is_some()
            || self.exclude_sources.is_some()
            || self.source_labels.is_some()
            || self.differs
        {
            let Some(source) = source else {
                return Err(WhyNot::SourceUnknown);
            };
            if let Some((set, patterns)) = &self.exclude_sources
                && set.is_match(source)
            {
                return Err(WhyNot::SourceExcluded {
                    source_vm: source,
                    patterns,
                });
            }
            if let Some((set, patterns)) = &self.sources
                && !set.is_match(source)
            {
                return Err(WhyNot::SourceNotListed {
                    source_vm: source,
                    patterns,
                });
            }
            if let Some(selector) = &self.source_labels {
                let ns = op.namespace.as_deref().unwrap_or("");
                match view.vm_labels(ns, source) {
                    Some(labels) if selector.matches(&labels) => {}
                    Some(_) => {
                        return Err(WhyNot::SourceLabelsMismatch {
                            namespace: ns,
                            source_vm: source,
                        });
                    }
                    None if self.unknown_allowed => {}
                    None => {
                        return Err(WhyNot::SourceLabelsUnknown {
                            namespace: ns,
                            source_vm: source,
                        });
                    }
                }
            }
        }
        let target = clone.and_then(|c| c.target.as_deref());
        if let Some((set, patterns)) = &self.targets {
            match target {
                Some(t) if set.is_match(t) => {}
                Some(t) => {
                    return Err(WhyNot::TargetNotListed {
                        target: t,
                        patterns,
                    });
                }
                None => return Err(WhyNot::TargetMissing { patterns }),
            }
        }
        if self.differs && target.is_some() && target == source {
            return Err(WhyNot::TargetIsSource);
        }
        Ok(())
    }
}

/// `lifecycle`, checked.
#[derive(Clone, Debug)]
pub struct LifecycleTest {
    actions: Vec<String>,
    labels: Option<Selector>,
    unknown_allowed: bool,
}

/// The actions kubernetes-mcp-server's `vm_lifecycle` takes.
pub(crate) const LIFECYCLE_ACTIONS: &[&str] = &["start", "stop", "restart", "pause", "unpause"];

impl LifecycleTest {
    /// Checks `lifecycle` at `path`.
    pub fn compile(
        l: &crate::spec::LifecycleCondition,
        path: &str,
    ) -> Result<LifecycleTest, Vec<Problem>> {
        let mut problems = Vec::new();
        for (i, a) in l.actions.iter().enumerate() {
            if !LIFECYCLE_ACTIONS.contains(&a.as_str()) {
                problems.push(Problem::at(
                    format!("{path}.actions[{i}]"),
                    format!("{a:?} is not one of {}", LIFECYCLE_ACTIONS.join(", ")),
                ));
            }
        }
        let labels = l
            .vm_labels
            .clone()
            .and_then(|s| match Selector::try_from(s) {
                Ok(sel) => Some(sel),
                Err(e) => {
                    problems.push(Problem::at(
                        format!("{path}.vmLabels"),
                        format!("not a valid label selector ({})", e.0),
                    ));
                    None
                }
            });
        if problems.is_empty() {
            Ok(LifecycleTest {
                actions: l.actions.clone(),
                labels,
                unknown_allowed: l.when_unknown == Some(Action::Allow),
            })
        } else {
            Err(problems)
        }
    }

    /// Whether the lifecycle action of `op` is one this test names, on a VM
    /// it names. `Err` says why not; an op that is no lifecycle action never
    /// matches. For a `Deny` rule, unknown labels match unless
    /// `whenUnknown: Allow`; for an `Allow` rule they fail unless it.
    pub fn check<'a>(
        &'a self,
        op: &'a Op,
        view: &dyn ClusterView,
        deny: bool,
    ) -> Result<(), WhyNot<'a>> {
        let Some(action) = op.lifecycle.as_deref() else {
            return Err(WhyNot::NoLifecycleAction);
        };
        if !self.actions.is_empty() && !self.actions.iter().any(|a| a == action) {
            return Err(WhyNot::ActionNotListed {
                action,
                actions: &self.actions,
            });
        }
        let Some(selector) = &self.labels else {
            return Ok(());
        };
        let ns = op.namespace.as_deref().unwrap_or("");
        let name = op.name.as_deref().unwrap_or("");
        match view.vm_labels(ns, name) {
            Some(labels) if selector.matches(&labels) => Ok(()),
            Some(_) => Err(WhyNot::VmLabelsMismatch {
                namespace: ns,
                name,
            }),
            None if deny != self.unknown_allowed => Ok(()),
            None => Err(WhyNot::VmLabelsUnknown {
                namespace: ns,
                name,
            }),
        }
    }
}

/// One `inFlight` entry, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct InFlightCap {
    /// At most this many.
    pub max: u32,
    /// Counted over.
    pub scope: InFlightScope,
}

impl InFlightCap {
    /// The counter key of `op`, in a call by `subject`, under this cap, or
    /// why there is none.
    pub fn key(&self, op: &Op, subject: Option<&str>) -> Result<String, NoKey> {
        match self.scope {
            InFlightScope::Caller => match (subject, &op.name) {
                (None, _) => Err(NoKey::CallerUnknown),
                (_, None) => Err(NoKey::VmUnknown),
                (Some(subject), Some(_)) => Ok(subject.to_owned()),
            },
            InFlightScope::Cluster => Ok(String::new()),
            InFlightScope::Namespace => op.namespace.clone().ok_or(NoKey::NamespaceUnknown),
            InFlightScope::Source => match (
                &op.namespace,
                op.clone.as_ref().and_then(|c| c.source.as_ref()),
            ) {
                (Some(ns), Some(source)) => Ok(format!("{ns}/{source}")),
                _ => Err(NoKey::SourceUnknown),
            },
        }
    }
}

fn globs(
    patterns: &[String],
    path: &str,
    problems: &mut Vec<Problem>,
) -> Option<(GlobSet, Vec<String>)> {
    if patterns.is_empty() {
        return None;
    }
    let mut builder = GlobSetBuilder::new();
    for (i, p) in patterns.iter().enumerate() {
        match compile_glob(p) {
            Ok(g) => {
                builder.add(g);
            }
            Err(e) => problems.push(Problem::at(
                format!("{path}[{i}]"),
                format!("{p:?} is not a valid glob ({})", e.kind()),
            )),
        }
    }
    builder
        .build()
        .ok()
        .map(|set| (set, patterns.iter().map(|p| format!("{p:?}")).collect()))
}

/// Compiles the resource parts of a rule at `path`.
#[allow(clippy::type_complexity)]
pub(crate) fn compile_resource_parts(
    resources: &[ResourceSelector],
    namespaces: Option<&NamespaceCondition>,
    clone: Option<&CloneCondition>,
    in_flight: &[InFlightLimit],
    action: Action,
    path: &str,
) -> Result<
    (
        Vec<CompiledSelector>,
        Option<NamespaceTest>,
        Option<CloneTest>,
        Vec<InFlightCap>,
    ),
    Vec<Problem>,
> {
    let mut problems = Vec::new();
    let mut selectors = Vec::new();
    for (i, r) in resources.iter().enumerate() {
        let at = format!("{path}.resources[{i}]");
        let resource = match (&r.kind, &r.resource) {
            (_, Some(res)) if res.is_empty() || res.chars().any(|c| c.is_ascii_uppercase()) => {
                problems.push(Problem::at(
                    format!("{at}.resource"),
                    format!(
                        "{res:?} is not a plural resource name such as \"virtualmachineclones\""
                    ),
                ));
                continue;
            }
            (_, Some(res)) => res.clone(),
            (Some(kind), None) if !kind.is_empty() => plural(kind),
            _ => {
                problems.push(Problem::at(at, "name the objects with `kind:` (e.g. VirtualMachineClone) or `resource:` (e.g. virtualmachineclones)"));
                continue;
            }
        };
        let verbs = if r.verbs.is_empty() {
            vec!["create".to_owned()]
        } else {
            r.verbs.clone()
        };
        if let Some(v) = verbs
            .iter()
            .find(|v| v.is_empty() || v.chars().any(|c| !c.is_ascii_lowercase() && c != '*'))
        {
            problems.push(Problem::at(
                format!("{at}.verbs"),
                format!("{v:?} is not a verb; use create, update, patch, delete, get, list, ..."),
            ));
        }
        selectors.push(CompiledSelector {
            group: r.group.clone(),
            resource,
            kind: r.kind.clone(),
            verbs,
        });
    }
    let needs_resources = |what: &str, problems: &mut Vec<Problem>| {
        if resources.is_empty() {
            problems.push(Problem::at(
                format!("{path}.{what}"),
                format!("`{what}` judges the objects a call creates; add `resources:` to the rule"),
            ));
        }
    };
    let namespaces = namespaces.map(|n| {
        needs_resources("namespaces", &mut problems);
        NamespaceTest {
            include: globs(
                &n.include,
                &format!("{path}.namespaces.include"),
                &mut problems,
            ),
            exclude: globs(
                &n.exclude,
                &format!("{path}.namespaces.exclude"),
                &mut problems,
            ),
        }
    });
    let all_clones = !selectors.is_empty() && selectors.iter().all(CompiledSelector::is_clone);
    let clone = clone.map(|c| {
        needs_resources("clone", &mut problems);
        if !resources.is_empty() && !selectors.iter().any(CompiledSelector::is_clone) {
            problems.push(Problem::at(format!("{path}.clone"), format!("`clone` conditions apply to {CLONE_KIND} resources ({CLONE_GROUP}); add one to `resources`")));
        }
        let source_labels = c.source_labels.clone().and_then(|s| match Selector::try_from(s) {
            Ok(sel) => Some(sel),
            Err(e) => {
                problems.push(Problem::at(format!("{path}.clone.sourceLabels"), format!("not a valid label selector ({})", e.0)));
                None
            }
        });
        CloneTest {
            sources: globs(&c.source_names, &format!("{path}.clone.sourceNames"), &mut problems),
            exclude_sources: globs(&c.exclude_source_names, &format!("{path}.clone.excludeSourceNames"), &mut problems),
            source_labels,
            unknown_allowed: c.when_source_unknown == Some(Action::Allow),
            targets: globs(&c.target_names, &format!("{path}.clone.targetNames"), &mut problems),
            differs: c.target_differs_from_source,
        }
    });
    let mut caps = Vec::new();
    for (i, f) in in_flight.iter().enumerate() {
        let at = format!("{path}.inFlight[{i}]");
        if action == Action::Deny {
            problems.push(Problem::at(at.clone(), "in-flight limits apply to what a rule allows; use `action: Allow` or remove `inFlight`"));
        }
        if !all_clones {
            problems.push(Problem::at(at.clone(), format!("in-flight counts are kept for {CLONE_KIND}s only; make `resources` exactly {CLONE_KIND}")));
        }
        if f.per == InFlightScope::Caller {
            problems.push(Problem::at(
                format!("{at}.per"),
                "clones in flight are counted per Namespace, Source or Cluster; per Caller is for `runningVMs`",
            ));
            continue;
        }
        if !(1..=100_000).contains(&f.max) {
            problems.push(Problem::at(
                format!("{at}.max"),
                format!("{} is not between 1 and 100000", f.max),
            ));
            continue;
        }
        if caps.iter().any(|c: &InFlightCap| c.scope == f.per) {
            problems.push(Problem::at(
                at,
                format!(
                    "another in-flight limit of this rule is per {:?}; keep only the stricter one",
                    f.per
                ),
            ));
            continue;
        }
        caps.push(InFlightCap {
            max: f.max as u32,
            scope: f.per,
        });
    }
    if problems.is_empty() {
        Ok((selectors, namespaces, clone, caps))
    } else {
        Err(problems)
    }
}

/// Compiles the policy's `resourceMappings`.
pub(crate) fn compile_mappings(mappings: &[ResourceMapping]) -> Result<Vec<Mapping>, Vec<Problem>> {
    let mut problems = Vec::new();
    let mut out = Vec::new();
    for (i, m) in mappings.iter().enumerate() {
        let path = format!("spec.resourceMappings[{i}]");
        let tools = globs(&m.tools, &format!("{path}.tools"), &mut problems);
        if m.tools.is_empty() {
            problems.push(Problem::at(
                format!("{path}.tools"),
                "list the tools this mapping describes",
            ));
        }
        let mut conditions = Vec::new();
        for (j, c) in m.arguments.iter().enumerate() {
            match Condition::compile(c, &format!("{path}.arguments[{j}]")) {
                Ok(c) => conditions.push(c),
                Err(mut p) => problems.append(&mut p),
            }
        }
        let from = |v: &Option<crate::spec::ValueFrom>,
                    field: &str,
                    problems: &mut Vec<Problem>|
         -> Option<From> {
            let v = v.as_ref()?;
            match (&v.pointer, &v.value) {
                (Some(p), None) => match check_pointer(p) {
                    Ok(()) => Some(From::Pointer(p.clone())),
                    Err(e) => {
                        problems.push(Problem::at(
                            format!("{path}.{field}.pointer"),
                            e.to_string(),
                        ));
                        None
                    }
                },
                (None, Some(value)) => Some(From::Value(value.clone())),
                _ => {
                    problems.push(Problem::at(
                        format!("{path}.{field}"),
                        "give exactly one of `pointer` and `value`",
                    ));
                    None
                }
            }
        };
        let namespace = from(&m.namespace, "namespace", &mut problems);
        let source = from(&m.source, "source", &mut problems);
        let target = from(&m.target, "target", &mut problems);
        if m.manifest.is_none() && m.kind.as_deref().is_none_or(str::is_empty) {
            problems.push(Problem::at(path.clone(), "give the object's `kind` (and `group`), or `manifest:` naming the argument that holds manifests"));
        }
        if let Some(manifest) = &m.manifest
            && manifest.is_empty()
        {
            problems.push(Problem::at(
                format!("{path}.manifest"),
                "name the argument holding the manifests",
            ));
        }
        if let Some((tools, _)) = tools {
            out.push(Mapping {
                tools,
                conditions,
                group: m.group.clone(),
                kind: m.kind.clone(),
                verb: m.verb.clone().unwrap_or_else(|| "create".into()),
                namespace,
                source,
                target,
                manifest: m.manifest.clone(),
            });
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(problems)
    }
}
