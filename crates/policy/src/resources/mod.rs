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
//! Pure: parsing only. A manifest that cannot be read unambiguously is an
//! error, and the engine denies the call when a resource rule could apply.

use std::collections::BTreeMap;

use serde_json::Value;

/// The `_meta` key kubernetes-mcp-server describes its tools' RBAC needs in.
pub const RBAC_META: &str = "io.kubernetes-mcp-server/rbac";

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
    /// Whether this is a KubeVirt VirtualMachineClone.
    pub fn is_clone(&self) -> bool {
        self.group == CLONE_GROUP
            && (self.kind.as_deref() == Some(CLONE_KIND)
                || self.resource.as_deref() == Some(CLONE_RESOURCE))
    }
}

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

/// What a server says one of its tools needs, from its `tools/list` entry.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ToolMeta {
    requirements: Vec<Requirement>,
}

impl ToolMeta {
    /// Reads the RBAC description of a `tools/list` entry, if it has one.
    pub fn from_tool(tool: &Value) -> Option<ToolMeta> {
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
        Some(ToolMeta { requirements })
    }

    /// Whether any requirement carries manifests (so any object could come).
    pub fn carries_manifests(&self) -> bool {
        self.requirements
            .iter()
            .any(|r| matches!(r.target, Target::Manifest { .. } | Target::Gvk { .. }))
    }

    /// The objects the tool could touch, whatever its arguments (for
    /// deciding whether to hide it).
    pub fn potential_ops(&self) -> Vec<Op> {
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

/// The objects `tool` with `args` would touch. `default_namespace` is where
/// a manifest without a namespace lands.
pub fn extract(
    tool: &str,
    args: &Value,
    meta: Option<&ToolMeta>,
    mappings: &[Mapping],
    default_namespace: &str,
) -> Result<Vec<Op>, String> {
    let mut ops = Vec::new();
    let arg = |name: &str| args.get(name).and_then(Value::as_str).map(str::to_owned);
    if let Some(meta) = meta {
        for r in &meta.requirements {
            let namespace = match &r.namespace {
                NamespaceFrom::Argument(a) => {
                    Some(arg(a).unwrap_or_else(|| default_namespace.to_owned()))
                }
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
                            source: arg("name"),
                            target: arg("targetName"),
                        });
                        op.name = None;
                    }
                    ops.push(op);
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
                    let docs = manifests(args.get(argument), argument)?;
                    for doc in docs {
                        ops.push(from_document(&doc, &r.verbs, default_namespace));
                    }
                }
            }
        }
    }
    for m in mappings.iter().filter(|m| m.applies(tool, args)) {
        let verbs = vec![m.verb.clone()];
        if let Some(argument) = &m.manifest {
            let pointer = if argument.starts_with('/') {
                argument.clone()
            } else {
                format!("/{argument}")
            };
            for doc in manifests(args.pointer(&pointer), argument)? {
                ops.push(from_document(&doc, &verbs, default_namespace));
            }
            continue;
        }
        let mut op = Op {
            group: m.group.clone(),
            kind: m.kind.clone(),
            verbs,
            namespace: Some(
                m.namespace
                    .as_ref()
                    .and_then(|n| n.get(args))
                    .unwrap_or_else(|| default_namespace.to_owned()),
            ),
            ..Default::default()
        };
        if m.source.is_some() || m.target.is_some() || op.is_clone() {
            op.clone = Some(CloneRef {
                source: m.source.as_ref().and_then(|s| s.get(args)),
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

/// The documents of a manifest argument: a YAML/JSON string (several
/// `---`-separated documents allowed), an object, or a list of objects;
/// `kind: List` documents are expanded.
pub fn manifests(value: Option<&Value>, argument: &str) -> Result<Vec<Value>, String> {
    let docs: Vec<Value> = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::String(text)) => serde_saphyr::from_multiple::<Value>(text)
            .map_err(|e| {
                format!(
                    "the `{argument}` argument is not valid YAML or JSON ({})",
                    first_line(&e.to_string())
                )
            })?
            .into_iter()
            .filter(|d| !d.is_null())
            .collect(),
        Some(Value::Array(items)) => items.clone(),
        Some(obj @ Value::Object(_)) => vec![obj.clone()],
        Some(_) => {
            return Err(format!(
                "the `{argument}` argument is neither a manifest string nor an object"
            ));
        }
    };
    let mut out = Vec::new();
    for doc in docs {
        match doc.get("kind").and_then(Value::as_str) {
            Some("List") => out.extend(
                doc.get("items")
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default(),
            ),
            _ => out.push(doc),
        }
    }
    for (i, doc) in out.iter().enumerate() {
        let has = |k: &str| {
            doc.get(k)
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty())
        };
        if !has("apiVersion") || !has("kind") {
            return Err(format!(
                "object {} of the `{argument}` argument is not a Kubernetes object with apiVersion and kind",
                i + 1
            ));
        }
    }
    Ok(out)
}

fn from_document(doc: &Value, verbs: &[String], default_namespace: &str) -> Op {
    let s = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
    let metadata = doc.get("metadata");
    let mut op = Op {
        group: group_of(doc.get("apiVersion").and_then(Value::as_str).unwrap_or("")),
        kind: s(doc.get("kind")),
        verbs: verbs.to_vec(),
        namespace: Some(
            s(metadata.and_then(|m| m.get("namespace")))
                .unwrap_or_else(|| default_namespace.to_owned()),
        ),
        name: s(metadata.and_then(|m| m.get("name"))),
        ..Default::default()
    };
    if op.is_clone() {
        let spec = doc.get("spec");
        op.clone = Some(CloneRef {
            source: s(spec.and_then(|s| s.pointer("/source/name"))),
            target: s(spec.and_then(|s| s.pointer("/target/name"))),
        });
    }
    op
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").to_owned()
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
}

#[cfg(test)]
mod tests;
