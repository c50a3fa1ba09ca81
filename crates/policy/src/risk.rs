//! How risky a tool is, from what its server says about it: read, write,
//! destructive or unknown, and which evidence decided — what `tollgate scan`
//! prints and scaffolds a policy from.
//!
//! The server's own statements decide: the annotation hints, the Kubernetes
//! verbs of kubernetes-mcp-server's rbac `_meta`, and arguments of the input
//! schema that say what the tool does with them (a `command` it runs, a
//! manifest it applies). When they differ the most severe wins. The name is
//! never evidence — catalogues that guess from names call `vm_clone` a
//! read — but where it suggests something else the assessment says so.

use serde_json::Value;

use crate::behaviour::{Behaviour, RBAC_META};

/// A tool's risk class, least severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Risk {
    /// Changes nothing.
    Read,
    /// Creates or changes things, and says it destroys nothing.
    Write,
    /// May delete, overwrite or run arbitrary commands.
    Destructive,
    /// The server says nothing about it.
    Unknown,
}

impl Risk {
    /// `read`, `write`, `destructive`, `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Risk::Read => "read",
            Risk::Write => "write",
            Risk::Destructive => "destructive",
            Risk::Unknown => "unknown",
        }
    }
}

/// Where a piece of evidence comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Source {
    /// `annotations` hints.
    Annotations,
    /// kubernetes-mcp-server's rbac `_meta`.
    Rbac,
    /// The arguments of `inputSchema`.
    Schema,
    /// The tool's name (never decides).
    Name,
}

impl Source {
    /// `annotations`, `rbac`, `inputSchema`, `name`.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Annotations => "annotations",
            Source::Rbac => "rbac",
            Source::Schema => "inputSchema",
            Source::Name => "name",
        }
    }
}

/// One piece of evidence.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Clue {
    /// Where it comes from.
    pub source: Source,
    /// What it suggests.
    pub risk: Risk,
    /// What exactly, e.g. `destructiveHint: true`.
    pub detail: String,
}

/// What a tool is, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Assessment {
    /// The tool's name.
    pub tool: String,
    /// Its class.
    pub risk: Risk,
    /// The sources that decided it (none for `Unknown`).
    pub decided_by: Vec<Source>,
    /// Every piece of evidence, the name's included.
    pub clues: Vec<Clue>,
    /// Where the evidence disagrees.
    pub disagreements: Vec<String>,
}

/// Assesses one `tools/list` entry.
pub fn assess(entry: &Value) -> Assessment {
    let tool = entry
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let mut clues: Vec<Clue> = [annotations(entry), rbac(entry), schema(entry), name(&tool)]
        .into_iter()
        .flatten()
        .collect();
    clues.dedup();
    let stated: Vec<&Clue> = clues.iter().filter(|c| c.source != Source::Name).collect();
    let risk = stated.iter().map(|c| c.risk).max().unwrap_or(Risk::Unknown);
    let decided_by = stated
        .iter()
        .filter(|c| c.risk == risk)
        .map(|c| c.source)
        .collect();
    let mut disagreements = Vec::new();
    for c in &clues {
        if risk != Risk::Unknown && c.risk != risk {
            disagreements.push(format!(
                "{} says {} ({})",
                c.source.as_str(),
                c.risk.as_str(),
                c.detail
            ));
        }
    }
    Assessment {
        tool,
        risk,
        decided_by,
        clues,
        disagreements,
    }
}

fn annotations(entry: &Value) -> Option<Clue> {
    let b = Behaviour::from_tool(entry);
    let h = b.hints();
    if h.read_only.is_none() && h.destructive.is_none() {
        // No annotations, or only a title and hints that say nothing of
        // reading or destroying.
        return None;
    }
    let (risk, detail) = if b.read_only() {
        (Risk::Read, "readOnlyHint: true".to_owned())
    } else if b.destructive() {
        let why = match h.destructive {
            Some(true) => "destructiveHint: true",
            _ => "readOnlyHint: false, destructiveHint not given (it defaults to true)",
        };
        (Risk::Destructive, why.to_owned())
    } else {
        (
            Risk::Write,
            "readOnlyHint: false, destructiveHint: false".to_owned(),
        )
    };
    Some(Clue {
        source: Source::Annotations,
        risk,
        detail,
    })
}

/// Verbs that change nothing.
const READ_VERBS: &[&str] = &["get", "list", "watch"];
/// Verbs that remove things.
const DELETE_VERBS: &[&str] = &["delete", "deletecollection"];

fn rbac(entry: &Value) -> Option<Clue> {
    let verbs = Behaviour::from_tool(entry).rbac_verbs()?.to_vec();
    if verbs.is_empty() {
        return Some(Clue {
            source: Source::Rbac,
            risk: Risk::Read,
            detail: "needs no Kubernetes access".to_owned(),
        });
    }
    let requirements = entry
        .pointer(&format!(
            "/_meta/{}/bounded/requirements",
            RBAC_META.replace('/', "~1")
        ))
        .and_then(Value::as_array);
    let mut parts = Vec::new();
    for r in requirements.into_iter().flatten() {
        let verbs: Vec<&str> = r
            .get("verbs")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let target = r.get("target");
        let what = if let Some(res) = target.and_then(|t| t.get("resource")) {
            let resource = res.get("resource").and_then(Value::as_str).unwrap_or("?");
            let sub = res
                .get("subresource")
                .and_then(Value::as_str)
                .map(|s| format!("/{s}"))
                .unwrap_or_default();
            match res.get("apiGroup").and_then(Value::as_str) {
                Some(g) if !g.is_empty() => format!("{resource}{sub}.{g}"),
                _ => format!("{resource}{sub}"),
            }
        } else if let Some(m) = target.and_then(|t| t.get("manifest")) {
            format!(
                "any kind in `{}`",
                m.get("argument").and_then(Value::as_str).unwrap_or("?")
            )
        } else {
            "any kind".to_owned()
        };
        parts.push(format!("{} {what}", verbs.join(",")));
    }
    let risk = if verbs.iter().any(|v| DELETE_VERBS.contains(&v.as_str())) {
        Risk::Destructive
    } else if verbs.iter().all(|v| READ_VERBS.contains(&v.as_str())) {
        Risk::Read
    } else {
        Risk::Write
    };
    // A long list says less than its summary.
    let detail = if parts.len() <= 3 {
        parts.join("; ")
    } else {
        format!("{} on {} kinds", verbs.join(","), parts.len())
    };
    Some(Clue {
        source: Source::Rbac,
        risk,
        detail,
    })
}

/// Argument names that mean "runs what you give it".
const RUNS: &[&str] = &["command", "cmd", "script", "shell", "code", "exec"];
/// Argument names that mean "applies the manifest you give it".
const APPLIES: &[&str] = &["manifest", "resource", "yaml"];

fn schema(entry: &Value) -> Option<Clue> {
    let properties = entry.pointer("/inputSchema/properties")?.as_object()?;
    if let Some(arg) = properties.keys().find(|k| RUNS.contains(&k.as_str())) {
        return Some(Clue {
            source: Source::Schema,
            risk: Risk::Destructive,
            detail: format!("takes `{arg}`, which it runs"),
        });
    }
    let applies = properties.iter().find(|(k, v)| {
        APPLIES.contains(&k.as_str()) && v.get("type").and_then(Value::as_str) == Some("string")
    });
    applies.map(|(arg, _)| Clue {
        source: Source::Schema,
        risk: Risk::Write,
        detail: format!("takes `{arg}`, a manifest it applies"),
    })
}

const NAME_DESTROYS: &[&str] = &[
    "delete",
    "remove",
    "rm",
    "destroy",
    "drop",
    "purge",
    "kill",
    "terminate",
    "wipe",
    "erase",
    "uninstall",
    "exec",
    "execute",
    "shell",
    "evict",
    "drain",
];
const NAME_WRITES: &[&str] = &[
    "create",
    "update",
    "patch",
    "set",
    "put",
    "post",
    "apply",
    "scale",
    "run",
    "start",
    "stop",
    "restart",
    "clone",
    "copy",
    "add",
    "edit",
    "write",
    "install",
    "upgrade",
    "rollout",
    "label",
    "annotate",
    "deploy",
    "send",
    "move",
    "rename",
    "enable",
    "disable",
    "lifecycle",
    "upload",
];
const NAME_READS: &[&str] = &[
    "get",
    "list",
    "view",
    "read",
    "describe",
    "show",
    "log",
    "logs",
    "top",
    "stats",
    "search",
    "find",
    "query",
    "info",
    "status",
    "watch",
    "troubleshoot",
    "explain",
    "summary",
    "inspect",
    "events",
];

/// What the words of the name suggest (the most severe word).
fn name(tool: &str) -> Option<Clue> {
    let mut words: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut previous_lower = false;
    for c in tool.chars() {
        let boundary = !c.is_ascii_alphanumeric() || (c.is_ascii_uppercase() && previous_lower);
        if boundary && !current.is_empty() {
            words.push(std::mem::take(&mut current));
        }
        if c.is_ascii_alphanumeric() {
            current.push(c.to_ascii_lowercase());
        }
        previous_lower = c.is_ascii_lowercase();
    }
    if !current.is_empty() {
        words.push(current);
    }
    let find = |list: &[&str]| words.iter().find(|w| list.contains(&w.as_str())).cloned();
    let (risk, word) = if let Some(w) = find(NAME_DESTROYS) {
        (Risk::Destructive, w)
    } else if let Some(w) = find(NAME_WRITES) {
        (Risk::Write, w)
    } else {
        (Risk::Read, find(NAME_READS)?)
    };
    Some(Clue {
        source: Source::Name,
        risk,
        detail: format!("\"{word}\""),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn kms(tool: &str) -> Assessment {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json"
        );
        let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assess(
            list["tools"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["name"] == tool)
                .unwrap(),
        )
    }

    #[test]
    fn kubernetes_mcp_server_tools_by_what_the_server_says() {
        let vm_clone = kms("vm_clone");
        assert_eq!(vm_clone.risk, Risk::Destructive);
        assert_eq!(vm_clone.decided_by, [Source::Annotations]);
        // What a catalogue guessing from names gets wrong, said.
        assert_eq!(
            vm_clone.disagreements,
            [
                "rbac says write (create virtualmachineclones.clone.kubevirt.io)",
                "name says write (\"clone\")"
            ]
        );
        let list = kms("pods_list");
        assert_eq!(list.risk, Risk::Read);
        assert_eq!(list.decided_by, [Source::Annotations, Source::Rbac]);
        assert!(list.disagreements.is_empty(), "{:?}", list.disagreements);
        assert_eq!(kms("pods_run").risk, Risk::Write);
        let exec = kms("pods_exec");
        assert_eq!(exec.risk, Risk::Destructive);
        assert!(exec.decided_by.contains(&Source::Schema), "{exec:?}");
        assert_eq!(kms("resources_delete").risk, Risk::Destructive);
        assert_eq!(kms("configuration_view").risk, Risk::Read);
    }

    #[test]
    fn a_tool_the_server_says_nothing_about_is_unknown_whatever_its_name() {
        let a = assess(&json!({"name": "delete_everything", "annotations": {"title": "Delete"}}));
        assert_eq!(a.risk, Risk::Unknown);
        assert!(a.decided_by.is_empty());
        assert_eq!(a.clues[0].source, Source::Name);
        let b = assess(
            &json!({"name": "doIt", "inputSchema": {"properties": {"command": {"type": "array"}}}}),
        );
        assert_eq!(
            (b.risk, b.decided_by),
            (Risk::Destructive, vec![Source::Schema])
        );
        let c = assess(&json!({"name": "listPods", "annotations": {"readOnlyHint": false}}));
        assert_eq!(c.risk, Risk::Destructive);
        assert_eq!(c.disagreements, ["name says read (\"list\")"]);
    }
}
