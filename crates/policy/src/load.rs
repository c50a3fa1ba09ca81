//! Reading `McpToolPolicy` YAML from files and directories, strictly.
//!
//! The documents are the very ones a user would `kubectl apply`; a file may
//! hold several (`---`), a directory is read file by file (top level only,
//! skipping dot-entries, so a Kubernetes ConfigMap mount with its `..data`
//! symlinks reads like a plain directory). Every problem in every file is
//! collected and reported with the file, the document and the field path.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::compile::compile;
use crate::evaluate::PolicySet;
use crate::parse::{explain, parse_spec};
use crate::problem::Problem;
use crate::spec::McpToolPolicySpec;

/// The only `apiVersion` a policy document may have.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";
/// The only `kind` a policy document may have.
pub const KIND: &str = "McpToolPolicy";
/// The largest policy file read.
pub const MAX_FILE_BYTES: u64 = 4 << 20;

/// A policy document that parsed, not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedPolicy {
    /// Where it came from, e.g. `policies.yaml (document 2)`.
    pub source: String,
    /// `namespace/name`, or `name`.
    pub name: String,
    /// The spec.
    pub spec: McpToolPolicySpec,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Document {
    api_version: String,
    kind: String,
    metadata: Metadata,
    /// Parsed by [`parse_spec`], like a policy from the cluster.
    spec: serde_json::Value,
    /// Tolerated so `kubectl get -o yaml` output can be checked; ignored.
    #[serde(default)]
    #[allow(dead_code)]
    status: Option<serde::de::IgnoredAny>,
}

/// The parts of Kubernetes object metadata a file policy uses; the rest of
/// what `kubectl` writes (labels, annotations, uid, ...) is accepted and
/// ignored because it does not change what the policy means.
#[derive(Deserialize)]
struct Metadata {
    #[serde(default)]
    name: String,
    #[serde(default)]
    namespace: Option<String>,
}

/// Reads every policy document under `paths` (files or directories): the
/// documents that parsed, and the problems of those that did not.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<LoadedPolicy>, Vec<Problem>) {
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    if paths.is_empty() {
        problems.push(Problem::at("", "no policy path given"));
    }
    for path in paths {
        match files_under(path) {
            Ok(files) if files.is_empty() => problems.push(
                Problem::at("", "no .yaml, .yml or .json files in this directory")
                    .in_source(&path.display().to_string()),
            ),
            Ok(files) => {
                for file in files {
                    let label = file.display().to_string();
                    match read_file(&file) {
                        Ok(text) => {
                            let (mut docs, mut p) = parse_text(&label, &text);
                            policies.append(&mut docs);
                            problems.append(&mut p);
                        }
                        Err(p) => problems.push(p.in_source(&label)),
                    }
                }
            }
            Err(p) => problems.push(p.in_source(&path.display().to_string())),
        }
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for p in &policies {
        if let Some(first) = seen.insert(&p.name, &p.source) {
            problems.push(
                Problem::at(
                    "metadata.name",
                    format!(
                        "policy {:?} is also defined in {first}; give each policy its own name",
                        p.name
                    ),
                )
                .in_source(&p.source),
            );
        }
    }
    if problems.is_empty() && policies.is_empty() {
        problems.push(Problem::at("", "no McpToolPolicy documents found"));
    }
    (policies, problems)
}

/// Parses the documents of one file's text (`label` names it in problems):
/// the documents that parsed, and the problems of those that did not.
pub fn parse_text(label: &str, text: &str) -> (Vec<LoadedPolicy>, Vec<Problem>) {
    let values: Vec<serde_json::Value> = match serde_saphyr::from_multiple(text) {
        Ok(values) => values,
        Err(e) => {
            let problem = Problem::at("", format!("not valid YAML: {}", one_line(&e.to_string())));
            return (Vec::new(), vec![problem.in_source(label)]);
        }
    };
    let values: Vec<serde_json::Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    let many = values.len() > 1;
    let mut policies = Vec::new();
    let mut problems = Vec::new();
    for (i, value) in values.into_iter().enumerate() {
        let source = if many {
            format!("{label} (document {})", i + 1)
        } else {
            label.to_owned()
        };
        let api_version = value
            .get("apiVersion")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let kind = value
            .get("kind")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        if kind.as_deref() != Some(KIND) || api_version.as_deref() != Some(API_VERSION) {
            problems.push(
                Problem::at(
                    "",
                    format!(
                        "expected `apiVersion: {API_VERSION}` and `kind: {KIND}`, found {} {}; policy files hold only McpToolPolicy documents",
                        api_version.as_deref().unwrap_or("no apiVersion"),
                        kind.as_deref().unwrap_or("no kind"),
                    ),
                )
                .in_source(&source),
            );
            continue;
        }
        let doc: Document = match serde_path_to_error::deserialize(value) {
            Ok(doc) => doc,
            Err(e) => {
                let path = e.path().to_string();
                let path = if path == "." { String::new() } else { path };
                problems.push(Problem::at(path, explain(e.inner())).in_source(&source));
                continue;
            }
        };
        let spec = match parse_spec(doc.spec) {
            Ok(spec) => spec,
            Err(p) => {
                problems.push(p.in_source(&source));
                continue;
            }
        };
        let mut bad_metadata = false;
        if let Err(message) = check_dns_name(&doc.metadata.name, 253, true) {
            problems.push(Problem::at("metadata.name", message).in_source(&source));
            bad_metadata = true;
        }
        if let Some(ns) = doc.metadata.namespace.as_deref()
            && let Err(message) = check_dns_name(ns, 63, false)
        {
            problems.push(Problem::at("metadata.namespace", message).in_source(&source));
            bad_metadata = true;
        }
        if bad_metadata {
            continue;
        }
        let name = match doc.metadata.namespace.as_deref() {
            Some(ns) => format!("{ns}/{}", doc.metadata.name),
            None => doc.metadata.name.clone(),
        };
        let source = if many {
            format!("{label} (document {}, policy {name:?})", i + 1)
        } else {
            source
        };
        debug_assert_eq!(doc.api_version, API_VERSION);
        debug_assert_eq!(doc.kind, KIND);
        policies.push(LoadedPolicy { source, name, spec });
    }
    (policies, problems)
}

/// Compiles loaded documents into one set, collecting every problem.
pub fn compile_set(loaded: &[LoadedPolicy]) -> Result<PolicySet, Vec<Problem>> {
    let mut compiled = Vec::with_capacity(loaded.len());
    let mut problems = Vec::new();
    for p in loaded {
        match compile(&p.name, &p.spec) {
            Ok(c) => compiled.push(Arc::new(c)),
            Err(ps) => problems.extend(ps.into_iter().map(|pr| pr.in_source(&p.source))),
        }
    }
    if problems.is_empty() {
        Ok(PolicySet::new(compiled, version_of(loaded)))
    } else {
        Err(problems)
    }
}

/// Reads and compiles: what `tollgate check` and the sidecar's file mode
/// run. Any problem anywhere fails the whole load — a policy set is applied
/// entirely or not at all — and every problem is reported.
pub fn load(paths: &[PathBuf]) -> Result<(PolicySet, Vec<LoadedPolicy>), Vec<Problem>> {
    let (loaded, mut problems) = read_paths(paths);
    match compile_set(&loaded) {
        Ok(set) if problems.is_empty() => Ok((set, loaded)),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.append(&mut p);
            Err(problems)
        }
    }
}

/// A short digest of the policies' names and specs: equal content, equal
/// version, whatever the file layout.
pub fn version_of(loaded: &[LoadedPolicy]) -> String {
    let mut entries: Vec<(&str, String)> = loaded
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                serde_json::to_string(&p.spec).unwrap_or_default(),
            )
        })
        .collect();
    entries.sort();
    let mut h = Sha256::new();
    for (name, spec) in entries {
        h.update(name.as_bytes());
        h.update([0]);
        h.update(spec.as_bytes());
        h.update([0]);
    }
    h.finalize()
        .iter()
        .take(6)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The policy files a path stands for, sorted.
pub fn files_under(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    let meta = fs::metadata(path).map_err(|e| Problem::at("", format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok(vec![path.to_owned()]);
    }
    let entries =
        fs::read_dir(path).map_err(|e| Problem::at("", format!("cannot list directory: {e}")))?;
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| Problem::at("", format!("cannot list directory: {e}")))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name.starts_with('.') {
            continue;
        }
        let is_policy = [".yaml", ".yml", ".json"]
            .iter()
            .any(|ext| name.ends_with(ext));
        // `metadata` follows symlinks, as a ConfigMap mount needs.
        let is_file = fs::metadata(entry.path())
            .map(|m| m.is_file())
            .unwrap_or(false);
        if is_policy && is_file {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

fn read_file(path: &Path) -> Result<String, Problem> {
    let meta = fs::metadata(path).map_err(|e| Problem::at("", format!("cannot read: {e}")))?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(Problem::at(
            "",
            format!(
                "the file has {} bytes; policy files are limited to {MAX_FILE_BYTES}",
                meta.len()
            ),
        ));
    }
    let bytes = fs::read(path).map_err(|e| Problem::at("", format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        Problem::at(
            "",
            format!(
                "not UTF-8 text (invalid byte at offset {}); save the file as UTF-8",
                e.utf8_error().valid_up_to()
            ),
        )
    })
}

/// Kubernetes object names: lowercase RFC 1123 (a subdomain for names,
/// dots allowed; a label for namespaces), so a file policy could be applied
/// as is and `namespace/name` is never ambiguous.
fn check_dns_name(value: &str, max: usize, dots: bool) -> Result<(), String> {
    let what = if dots {
        "metadata.name"
    } else {
        "metadata.namespace"
    };
    if value.is_empty() {
        return Err(if dots {
            format!("{what} is required")
        } else {
            format!("{what} must not be empty; leave it out or name a namespace")
        });
    }
    // Each dot-separated label is a DNS label: alphanumerics and '-', not
    // starting or ending with '-'.
    let label_ok = |label: &str| {
        !label.is_empty()
            && label
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let labels_ok = if dots {
        value.split('.').all(label_ok)
    } else {
        label_ok(value)
    };
    if value.len() > max || !labels_ok {
        return Err(format!(
            "{value:?} is not a valid Kubernetes name; use at most {max} lowercase letters, digits, '-'{} starting and ending with a letter or digit, e.g. \"vm-clone-cap\"",
            if dots { " or '.'" } else { "" }
        ));
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim_end)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" | ")
}
