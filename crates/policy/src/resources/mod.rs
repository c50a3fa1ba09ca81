//! What a tool call would create or change in Kubernetes, whatever the tool
//! is called.
//!
//! A cap on the tool name `vm_clone` is bypassable: kubernetes-mcp-server's
//! `resources_create_or_update` creates VirtualMachineClones too, from
//! multi-document YAML, in either API version, in any namespace. So the
//! engine judges the objects ([`Op`]s) a call would touch, learned from:
//! - the server's own description of its tools — the
//!   `_meta["io.kubernetes-mcp-server/rbac"]` block of each tool in the
//!   upstream's `tools/list` ([`ToolMeta`]; never taken from the client);
//! - the manifests a call carries (each YAML/JSON document is one object);
//! - what kubernetes-mcp-server's `vm_clone` arguments mean (source, target);
//! - explicit `resourceMappings` in the policy, for servers that do not
//!   describe their tools.
//!
//! Pure: parsing only. Manifests are read once per call ([`Payloads`]), and
//! the proxy forwards what was read, not the agent's text (see
//! [`manifest`]). A manifest that cannot be read unambiguously, a namespace
//! that is not a namespace name, is an error, and the engine denies the call
//! when a resource rule could apply.

mod canonical;
pub mod manifest;
pub mod sizes;
mod yaml;

use std::collections::BTreeMap;

use serde_json::Value;

pub use manifest::{Manifest, ManifestError};

use crate::behaviour::Behaviour;
pub use crate::behaviour::RBAC_META;

/// One object a call would create or change.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Op {
    /// API group (`""` for core).
    pub group: String,
    /// Kind, when known (manifests, mappings).
    pub kind: Option<String>,
    /// Plural resource, when known (server metadata).
    pub resource: Option<String>,
    /// Subresource, if the call acts on one.
    pub subresource: Option<String>,
    /// Verbs (`create`, `patch`, ...).
    pub verbs: Vec<String>,
    /// Namespace; `None` when cluster-scoped, all namespaces, or unknown.
    pub namespace: Option<String>,
    /// Object name, when known.
    pub name: Option<String>,
    /// For VirtualMachineClones: source and target.
    pub clone: Option<CloneRef>,
    /// What the object asks for (VMs, DataVolumes, PVCs), for size budgets.
    pub demand: Option<sizes::Demand>,
    /// Whether the call starts this VM (a manifest that runs it,
    /// `vm_create` with `autostart`, `vm_lifecycle` `start`).
    pub starts_vm: bool,
    /// `vm_lifecycle`'s action on this VM.
    pub lifecycle: Option<String>,
}

/// A clone's source VM and target name, when known.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloneRef {
    /// The source VirtualMachine's name (in the clone's namespace).
    pub source: Option<String>,
    /// The new VM's name.
    pub target: Option<String>,
}

impl Op {
    /// Whether this is a KubeVirt VirtualMachine.
    pub(crate) fn is_vm(&self) -> bool {
        self.group == VM_GROUP
            && (self.kind.as_deref() == Some(VM_KIND)
                || self.resource.as_deref() == Some(VM_RESOURCE))
    }

    /// Whether this is a DataVolume or a PersistentVolumeClaim: an object
    /// whose size is its storage request.
    pub(crate) fn is_disk(&self) -> bool {
        let is = |group: &str, kind: &str, resource: &str| {
            self.group == group
                && (self.kind.as_deref() == Some(kind)
                    || self.resource.as_deref() == Some(resource))
        };
        is("", "PersistentVolumeClaim", "persistentvolumeclaims")
            || is("cdi.kubevirt.io", "DataVolume", "datavolumes")
    }

    /// Whether this is a KubeVirt VirtualMachineClone.
    pub(crate) fn is_clone(&self) -> bool {
        self.group == CLONE_GROUP
            && (self.kind.as_deref() == Some(CLONE_KIND)
                || self.resource.as_deref() == Some(CLONE_RESOURCE))
    }
}

/// KubeVirt's core API group.
pub(crate) const VM_GROUP: &str = "kubevirt.io";
/// The VM kind.
pub(crate) const VM_KIND: &str = "VirtualMachine";
/// The VM resource.
pub(crate) const VM_RESOURCE: &str = "virtualmachines";

/// KubeVirt's clone API group.
pub const CLONE_GROUP: &str = "clone.kubevirt.io";
/// The clone kind.
pub const CLONE_KIND: &str = "VirtualMachineClone";
/// The clone resource.
pub const CLONE_RESOURCE: &str = "virtualmachineclones";

/// The plural resource name Kubernetes derives for a kind (lowercase; the
/// English rules the apiserver's defaulting uses for CRDs).
pub fn plural(kind: &str) -> String {
    let k = kind.to_ascii_lowercase();
    if k.ends_with('s')
        || k.ends_with('x')
        || k.ends_with('z')
        || k.ends_with("ch")
        || k.ends_with("sh")
    {
        format!("{k}es")
    } else if k.ends_with('y')
        && !k.ends_with("ay")
        && !k.ends_with("ey")
        && !k.ends_with("oy")
        && !k.ends_with("uy")
    {
        format!("{}ies", &k[..k.len() - 1])
    } else {
        format!("{k}s")
    }
}

/// Where a requirement's namespace comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
enum NamespaceFrom {
    Argument(String),
    All,
    None,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Target {
    Resource {
        group: String,
        resource: String,
        subresource: Option<String>,
    },
    Manifest {
        argument: String,
    },
    Gvk {
        api_version_argument: String,
        kind_argument: String,
        subresource: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Requirement {
    verbs: Vec<String>,
    target: Target,
    namespace: NamespaceFrom,
    name_argument: Option<String>,
}

/// What a server says about one of its tools, from its `tools/list` entry:
/// the arguments its `inputSchema` lists, what it needs in Kubernetes
/// (kubernetes-mcp-server's RBAC block), where it says, and its hints.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolMeta {
    requirements: Vec<Requirement>,
    behaviour: Behaviour,
    /// `inputSchema.properties` names, sorted; `None` without a schema.
    arguments: Option<Vec<String>>,
}

impl ToolMeta {
    /// Reads a `tools/list` entry.
    pub fn from_tool(tool: &Value) -> ToolMeta {
        let arguments = tool
            .get("inputSchema")
            .and_then(|s| s.get("properties"))
            .and_then(Value::as_object)
            .map(|p| {
                let mut names: Vec<String> = p.keys().cloned().collect();
                names.sort();
                names
            });
        ToolMeta {
            requirements: Self::requirements(tool).unwrap_or_default(),
            behaviour: Behaviour::from_tool(tool),
            arguments,
        }
    }

    /// What the server says the tool does (hints, rbac verbs).
    pub fn behaviour(&self) -> &Behaviour {
        &self.behaviour
    }

    /// The argument names the tool's schema lists, if it has a schema.
    pub fn arguments(&self) -> Option<&[String]> {
        self.arguments.as_deref()
    }

    /// The first argument of `args` the schema does not list.
    pub(crate) fn unknown_argument<'a>(&self, args: &'a Value) -> Option<&'a str> {
        let known = self.arguments.as_ref()?;
        args.as_object()?
            .keys()
            .map(String::as_str)
            .find(|k| known.binary_search_by(|n| n.as_str().cmp(k)).is_err())
    }

    fn requirements(tool: &Value) -> Option<Vec<Requirement>> {
        let rbac = tool.get("_meta")?.get(RBAC_META)?;
        let mut requirements = Vec::new();
        for r in rbac.get("bounded")?.get("requirements")?.as_array()? {
            let verbs = r
                .get("verbs")
                .and_then(Value::as_array)
                .map(|v| {
                    v.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default();
            let t = r.get("target");
            let text = |v: Option<&Value>, k: &str| {
                v.and_then(|v| v.get(k))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            };
            let target = if let Some(res) = t.and_then(|t| t.get("resource")) {
                Target::Resource {
                    group: text(Some(res), "apiGroup").unwrap_or_default(),
                    resource: text(Some(res), "resource")?,
                    subresource: text(Some(res), "subresource"),
                }
            } else if let Some(m) = t.and_then(|t| t.get("manifest")) {
                Target::Manifest {
                    argument: text(Some(m), "argument")?,
                }
            } else if let Some(g) = t.and_then(|t| t.get("gvk")) {
                Target::Gvk {
                    api_version_argument: text(Some(g), "apiVersionArgument")?,
                    kind_argument: text(Some(g), "kindArgument")?,
                    subresource: text(Some(g), "subresource"),
                }
            } else {
                continue;
            };
            let ns = r.get("namespace");
            let namespace = match (
                text(ns, "argument"),
                ns.and_then(|n| n.get("all")).and_then(Value::as_bool),
            ) {
                (Some(a), _) => NamespaceFrom::Argument(a),
                (None, Some(true)) => NamespaceFrom::All,
                _ => NamespaceFrom::None,
            };
            requirements.push(Requirement {
                verbs,
                target,
                namespace,
                name_argument: text(r.get("resourceName"), "argument"),
            });
        }
        Some(requirements)
    }

    /// Whether any requirement carries manifests (so any object could come).
    pub(crate) fn carries_manifests(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r.target, Target::Manifest { .. } | Target::Gvk { .. }))
    }

    /// The objects the tool could touch, whatever its arguments (for
    /// deciding whether to hide it).
    pub(crate) fn potential_ops(&self) -> Vec<Op> {
        self.requirements
            .iter()
            .filter_map(|r| match &r.target {
                Target::Resource {
                    group,
                    resource,
                    subresource,
                } => Some(Op {
                    group: group.clone(),
                    resource: Some(resource.clone()),
                    subresource: subresource.clone(),
                    verbs: r.verbs.clone(),
                    ..Default::default()
                }),
                _ => None,
            })
            .collect()
    }
}

/// A `resourceMappings` entry, checked.
#[derive(Clone, Debug)]
pub struct Mapping {
    /// The tool patterns.
    pub tools: globset::GlobSet,
    /// Argument conditions.
    pub conditions: Vec<crate::compile::condition::Condition>,
    /// The object's group.
    pub group: String,
    /// Its kind.
    pub kind: Option<String>,
    /// The verb.
    pub verb: String,
    /// Namespace source.
    pub namespace: Option<From>,
    /// Clone source VM.
    pub source: Option<From>,
    /// Clone target name.
    pub target: Option<From>,
    /// The manifest argument, if the mapping reads manifests.
    pub manifest: Option<String>,
}

/// A value from a pointer into the arguments, or a constant.
#[derive(Clone, Debug)]
pub enum From {
    /// `arguments` at this pointer (a string).
    Pointer(String),
    /// This value.
    Value(String),
}

impl From {
    fn get(&self, args: &Value) -> Option<String> {
        match self {
            From::Pointer(p) => args.pointer(p).and_then(Value::as_str).map(str::to_owned),
            From::Value(v) => Some(v.clone()),
        }
    }
}

impl Mapping {
    /// Whether this mapping describes a call of `tool` with `args`.
    pub fn applies(&self, tool: &str, args: &Value) -> bool {
        self.tools.is_match(tool) && self.conditions.iter().all(|c| c.holds(args))
    }
}

/// Why the objects of a call cannot be told.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExtractError {
    /// A manifest argument cannot be read.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// A namespace that is not a namespace name: it is refused before
    /// anything is counted against it.
    #[error(
        "{0:?} is not a namespace name (at most 63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
    )]
    Namespace(String),
    /// A source VM name that is not an object name.
    #[error(
        "{0:?} is not a VirtualMachine name (at most 253 lowercase letters, digits, '-' and '.')"
    )]
    SourceName(String),
}

/// The manifests of one call, each read once (see [`Manifest::read`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Payloads {
    read: Vec<(String, Result<Manifest, ManifestError>)>,
}

impl Payloads {
    /// No manifests read (no rule judges what this call creates).
    pub fn none() -> Payloads {
        Payloads::default()
    }

    /// Reads the manifest arguments at `pointers` (JSON pointers into `args`)
    /// that are present.
    pub fn read<'p>(args: &Value, pointers: impl IntoIterator<Item = &'p str>) -> Payloads {
        let mut read: Vec<(String, Result<Manifest, ManifestError>)> = Vec::new();
        for pointer in pointers {
            if read.iter().any(|(p, _)| p == pointer) {
                continue;
            }
            let Some(value) = args.pointer(pointer).filter(|v| !v.is_null()) else {
                continue;
            };
            let argument = pointer.trim_start_matches('/');
            read.push((pointer.to_owned(), Manifest::read(value, argument)));
        }
        Payloads { read }
    }

    /// The manifest at `pointer`, if it was read.
    fn get(&self, pointer: &str) -> Option<&Result<Manifest, ManifestError>> {
        self.read.iter().find(|(p, _)| p == pointer).map(|(_, m)| m)
    }

    /// Whether any manifest was read at all.
    pub fn is_empty(&self) -> bool {
        self.read.is_empty()
    }

    /// `args` with every manifest replaced by what was read, to forward in
    /// place of the agent's text; `None` when nothing was read.
    pub fn forwarded(&self, args: &Value) -> Option<Value> {
        if self.read.is_empty() {
            return None;
        }
        let mut out = args.clone();
        for (pointer, manifest) in &self.read {
            if let (Ok(m), Some(slot)) = (manifest, out.pointer_mut(pointer)) {
                *slot = m.forwarded(slot);
            }
        }
        Some(out)
    }
}

/// The JSON pointer of a manifest argument named in server metadata
/// (`resource`) or a mapping (`resource` or `/spec/resource`).
pub(crate) fn argument_pointer(argument: &str) -> String {
    if argument.starts_with('/') {
        argument.to_owned()
    } else {
        format!("/{argument}")
    }
}

/// The JSON pointers of the arguments of `tool` that carry manifests,
/// according to the server's description and the policies' mappings.
pub fn manifest_pointers<'m>(
    tool: &str,
    meta: Option<&ToolMeta>,
    mappings: impl IntoIterator<Item = &'m Mapping>,
) -> Vec<String> {
    let mut out: Vec<String> = meta
        .into_iter()
        .flat_map(|m| &m.requirements)
        .filter_map(|r| match &r.target {
            Target::Manifest { argument } => Some(argument_pointer(argument)),
            _ => None,
        })
        .collect();
    out.extend(
        mappings
            .into_iter()
            .filter(|m| m.tools.is_match(tool))
            .filter_map(|m| m.manifest.as_deref().map(argument_pointer)),
    );
    out.sort();
    out.dedup();
    out
}

/// A namespace named by a call: the server's default when empty (the server
/// itself defaults an empty namespace), refused when it is no namespace name.
fn namespace(value: Option<String>, default_namespace: &str) -> Result<String, ExtractError> {
    match value.filter(|v| !v.is_empty()) {
        None => Ok(default_namespace.to_owned()),
        Some(v) if is_label(&v) => Ok(v),
        Some(v) => Err(ExtractError::Namespace(bounded(&v))),
    }
}

/// A source VM name, refused when it is no object name.
fn source_name(value: Option<String>) -> Result<Option<String>, ExtractError> {
    match value {
        Some(v) if !is_subdomain(&v) => Err(ExtractError::SourceName(bounded(&v))),
        other => Ok(other),
    }
}

/// A DNS-1123 label: what a namespace name is.
pub(crate) fn is_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// A DNS-1123 subdomain: what most object names are.
pub(crate) fn is_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_label)
}

/// An agent's value, cut short for a message.
pub(crate) fn bounded(s: &str) -> String {
    match s.char_indices().nth(64) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// The objects `tool` with `args` would touch. `default_namespace` is where
/// an object without a namespace (or with an empty one) lands; `payloads`
/// holds the call's manifests, read once.
pub fn extract(
    tool: &str,
    args: &Value,
    meta: Option<&ToolMeta>,
    mappings: &[Mapping],
    default_namespace: &str,
    payloads: &Payloads,
) -> Result<Vec<Op>, ExtractError> {
    let mut ops = Vec::new();
    let arg = |name: &str| args.get(name).and_then(Value::as_str).map(str::to_owned);
    let objects = |pointer: String| -> Result<&[Value], ExtractError> {
        match payloads.get(&pointer) {
            Some(Ok(m)) => Ok(m.objects()),
            Some(Err(e)) => Err(e.clone().into()),
            None => Ok(&[]),
        }
    };
    if let Some(meta) = meta {
        for r in &meta.requirements {
            let namespace = match &r.namespace {
                NamespaceFrom::Argument(a) => Some(namespace(arg(a), default_namespace)?),
                NamespaceFrom::All | NamespaceFrom::None => None,
            };
            let name = r.name_argument.as_deref().and_then(arg);
            match &r.target {
                Target::Resource {
                    group,
                    resource,
                    subresource,
                } => {
                    let mut op = Op {
                        group: group.clone(),
                        resource: Some(resource.clone()),
                        subresource: subresource.clone(),
                        verbs: r.verbs.clone(),
                        namespace,
                        name,
                        ..Default::default()
                    };
                    // kubernetes-mcp-server's vm_clone: name is the source VM,
                    // targetName the clone (its own arguments, in its own words).
                    if op.is_clone() {
                        op.kind = Some(CLONE_KIND.into());
                    }
                    if tool == "vm_clone" && op.is_clone() {
                        op.clone = Some(CloneRef {
                            source: source_name(arg("name"))?,
                            target: arg("targetName"),
                        });
                        op.name = None;
                    }
                    if op.is_vm() && op.subresource.is_none() {
                        op.kind = Some(VM_KIND.into());
                        // kubernetes-mcp-server's own VM tools, in their words.
                        match tool {
                            "vm_create" => {
                                op.demand = Some(sizes::vm_create_demand(args));
                                op.starts_vm =
                                    args.get("autostart").and_then(Value::as_bool) == Some(true);
                            }
                            "vm_lifecycle" => {
                                op.lifecycle = Some(arg("action").unwrap_or_default());
                                op.starts_vm = op.lifecycle.as_deref() == Some("start");
                            }
                            _ => {}
                        }
                    }
                    // vm_create_from_template creates a VM the server
                    // renders from a template: what it weighs is unknown.
                    let from_template = tool == "vm_create_from_template"
                        && op.subresource.as_deref() == Some("create");
                    let namespace = op.namespace.clone();
                    ops.push(op);
                    if from_template {
                        ops.push(Op {
                            group: VM_GROUP.into(),
                            kind: Some(VM_KIND.into()),
                            resource: Some(VM_RESOURCE.into()),
                            verbs: vec!["create".into()],
                            namespace,
                            demand: Some(sizes::Demand::default()),
                            ..Default::default()
                        });
                    }
                }
                Target::Gvk {
                    api_version_argument,
                    kind_argument,
                    subresource,
                } => {
                    let api_version = arg(api_version_argument).unwrap_or_default();
                    ops.push(Op {
                        group: group_of(&api_version),
                        kind: arg(kind_argument),
                        subresource: subresource.clone(),
                        verbs: r.verbs.clone(),
                        namespace,
                        name,
                        ..Default::default()
                    });
                }
                Target::Manifest { argument } => {
                    for doc in objects(argument_pointer(argument))? {
                        ops.push(from_document(doc, &r.verbs, default_namespace)?);
                    }
                }
            }
        }
    }
    for m in mappings.iter().filter(|m| m.applies(tool, args)) {
        let verbs = vec![m.verb.clone()];
        if let Some(argument) = &m.manifest {
            for doc in objects(argument_pointer(argument))? {
                ops.push(from_document(doc, &verbs, default_namespace)?);
            }
            continue;
        }
        let mut op = Op {
            group: m.group.clone(),
            kind: m.kind.clone(),
            verbs,
            namespace: Some(namespace(
                m.namespace.as_ref().and_then(|n| n.get(args)),
                default_namespace,
            )?),
            ..Default::default()
        };
        if m.source.is_some() || m.target.is_some() || op.is_clone() {
            op.clone = Some(CloneRef {
                source: source_name(m.source.as_ref().and_then(|s| s.get(args)))?,
                target: m.target.as_ref().and_then(|t| t.get(args)),
            });
        }
        ops.push(op);
    }
    Ok(ops)
}

/// The group of an `apiVersion` (`apps/v1` → `apps`, `v1` → core).
fn group_of(api_version: &str) -> String {
    api_version
        .rsplit_once('/')
        .map(|(g, _)| g.to_owned())
        .unwrap_or_default()
}

fn from_document(
    doc: &Value,
    verbs: &[String],
    default_namespace: &str,
) -> Result<Op, ExtractError> {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let metadata = doc.get("metadata");
    let mut op = Op {
        group: group_of(doc.get("apiVersion").and_then(Value::as_str).unwrap_or("")),
        kind: s(doc.get("kind")),
        verbs: verbs.to_vec(),
        namespace: Some(namespace(
            s(metadata.and_then(|m| m.get("namespace"))),
            default_namespace,
        )?),
        name: s(metadata.and_then(|m| m.get("name"))),
        ..Default::default()
    };
    if let (Some(kind), Some(spec)) = (op.kind.as_deref(), doc.get("spec")) {
        op.demand = sizes::demand_of_document(&op.group, kind, doc);
        op.starts_vm = op.is_vm() && sizes::vm_runs(spec);
    }
    if op.is_clone() {
        let spec = doc.get("spec");
        op.clone = Some(CloneRef {
            source: source_name(s(spec.and_then(|s| s.pointer("/source/name"))))?,
            target: s(spec.and_then(|s| s.pointer("/target/name"))),
        });
    }
    Ok(op)
}

/// Counts of clones in flight, as the controller sees the cluster.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneCounts {
    /// In flight per namespace.
    pub by_namespace: BTreeMap<String, u32>,
    /// In flight per `namespace/source`.
    pub by_source: BTreeMap<String, u32>,
    /// In flight overall.
    pub total: u32,
    /// Running VMs (VirtualMachineInstances) per namespace.
    #[serde(default)]
    pub running_by_namespace: BTreeMap<String, u32>,
    /// Running VMs overall.
    #[serde(default)]
    pub running_total: u32,
}

#[cfg(test)]
mod tests;
