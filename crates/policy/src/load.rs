//! Reading `McpToolPolicy` and `ClusterMcpToolPolicy` YAML from files and
//! directories, strictly.
//!
//! The documents are the very ones a user would `kubectl apply`; a file may
//! hold several (`---`), a directory is read file by file (its top level, or
//! every level with [`ReadOptions::recursive`], skipping dot-entries, so a
//! Kubernetes ConfigMap mount with its `..data` symlinks reads like a plain
//! directory). Every problem of every document is collected and reported
//! with the file, the document and the field path; a YAML syntax error with
//! the line, the column and the lines around it. Documents of other kinds
//! (a `Deployment` beside the policies) are skipped with a note, unless
//! [`OtherKinds::Refuse`]; a document that looks meant as a policy
//! (`apiVersion: tollgate.dev/...`, or a kind one typo away) never is.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::compile::{compile, compile_cluster};
use crate::evaluate::PolicySet;
use crate::parse::{parse_cluster_spec, parse_spec};
use crate::problem::Problem;
use crate::problem::missing_field;
use crate::spec::{ClusterMcpToolPolicySpec, McpToolPolicySpec};
use crate::suggest::nearest;

/// The only `apiVersion` a policy document may have.
pub const API_VERSION: &str = "tollgate.dev/v1alpha1";
/// The kind of a namespaced policy.
pub const KIND: &str = "McpToolPolicy";
/// The kind of a cluster-scoped policy.
pub(crate) const CLUSTER_KIND: &str = "ClusterMcpToolPolicy";
/// The kind of a policy test file (`tollgate test`), which `check` skips.
pub(crate) const TEST_KIND: &str = "McpToolPolicyTest";
/// The largest policy file read.
pub(crate) const MAX_FILE_BYTES: u64 = 4 << 20;

/// Which of the two kinds a policy is.
#[derive(Clone, Debug, PartialEq)]
pub enum Scope {
    /// A `McpToolPolicy`: the pods of its namespace.
    Namespaced,
    /// A `ClusterMcpToolPolicy`: pods in the namespaces it selects (every
    /// namespace without a selector).
    Cluster {
        /// `spec.namespaceSelector`.
        namespace_selector: Option<LabelSelector>,
    },
}

/// A policy document that parsed, not yet compiled.
#[derive(Clone, Debug, PartialEq)]
pub struct LoadedPolicy {
    /// Where it came from, e.g. `policies.yaml (document 2)`.
    pub source: String,
    /// `namespace/name`, or `name` (cluster policies, and file policies
    /// without a namespace).
    pub name: String,
    /// The spec, apart from what only the cluster kind has.
    pub spec: McpToolPolicySpec,
    /// Namespaced or cluster-scoped.
    pub scope: Scope,
}

/// What to do with documents that are not policies.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum OtherKinds {
    /// Skip them, with a note (the default: a directory of manifests).
    #[default]
    Skip,
    /// Refuse them, like a broken policy.
    Refuse,
}

/// How paths are read.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReadOptions {
    /// Read subdirectories too (else they are skipped with a note).
    pub recursive: bool,
    /// Documents of other kinds.
    pub other_kinds: OtherKinds,
}

/// What reading found.
#[derive(Debug, Default)]
pub struct Read {
    /// The documents that parsed.
    pub policies: Vec<LoadedPolicy>,
    /// Everything wrong.
    pub problems: Vec<Problem>,
    /// What was skipped, and why.
    pub notes: Vec<Problem>,
}

/// Reads every policy document under `paths` (files or directories): the
/// documents that parsed, and the problems of those that did not.
pub fn read_paths(paths: &[PathBuf]) -> (Vec<LoadedPolicy>, Vec<Problem>) {
    let read = read_paths_with(paths, ReadOptions::default());
    (read.policies, read.problems)
}

/// [`read_paths`], as `options` say, with notes on what was skipped.
pub fn read_paths_with(paths: &[PathBuf], options: ReadOptions) -> Read {
    let mut read = Read::default();
    if paths.is_empty() {
        read.problems.push(Problem::at("", "no policy path given"));
    }
    for path in paths {
        let label = path.display().to_string();
        match files_under_with(path, options.recursive) {
            Ok((files, _)) if files.is_empty() => read.problems.push(
                Problem::at("", "no .yaml, .yml or .json files in this directory")
                    .in_source(&label),
            ),
            Ok((files, skipped)) => {
                for dir in skipped {
                    read.notes.push(
                        Problem::at(
                            "",
                            "a subdirectory with .yaml, .yml or .json files, not read; pass -R (--recursive) to read it",
                        )
                        .in_source(&dir.display().to_string()),
                    );
                }
                for file in files {
                    let label = file.display().to_string();
                    match read_file(&file) {
                        Ok(text) => {
                            let one = parse_text_with(&label, &text, options.other_kinds);
                            read.policies.extend(one.policies);
                            read.problems.extend(one.problems);
                            read.notes.extend(one.notes);
                        }
                        Err(p) => read.problems.push(p.in_source(&label)),
                    }
                }
            }
            Err(p) => read.problems.push(p.in_source(&label)),
        }
    }
    let mut seen: HashMap<&str, &str> = HashMap::new();
    for p in &read.policies {
        if let Some(first) = seen.insert(&p.name, &p.source) {
            read.problems.push(
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
    if read.problems.is_empty() && read.policies.is_empty() {
        read.problems
            .push(Problem::at("", "no McpToolPolicy documents found"));
    }
    read
}

/// Parses the documents of one file's text (`label` names it in problems):
/// the documents that parsed, and the problems of those that did not.
pub fn parse_text(label: &str, text: &str) -> (Vec<LoadedPolicy>, Vec<Problem>) {
    let read = parse_text_with(label, text, OtherKinds::Skip);
    (read.policies, read.problems)
}

/// [`parse_text`], saying what to do with other kinds, with notes.
pub(crate) fn parse_text_with(label: &str, text: &str, other_kinds: OtherKinds) -> Read {
    let mut read = Read::default();
    let values: Vec<Value> = match serde_saphyr::from_multiple(text) {
        Ok(values) => values,
        Err(e) => {
            read.problems.push(yaml_problem(label, text, &e));
            return read;
        }
    };
    let values: Vec<Value> = values.into_iter().filter(|v| !v.is_null()).collect();
    let many = values.len() > 1;
    for (i, value) in values.into_iter().enumerate() {
        let source = if many {
            format!("{label} (document {})", i + 1)
        } else {
            label.to_owned()
        };
        let cluster = match kind_of(&value) {
            Kind::Policy { cluster } => cluster,
            Kind::Other(what) if other_kinds == OtherKinds::Skip => {
                read.notes.push(
                    Problem::at("", format!("skipped {what}: not a policy")).in_source(&source),
                );
                continue;
            }
            Kind::Other(what) | Kind::Wrong(what) => {
                read.problems.push(
                    Problem::at(
                        "",
                        format!(
                            "expected `apiVersion: {API_VERSION}` and `kind: {KIND}` or `{CLUSTER_KIND}`, found {what}; policy files hold only policies"
                        ),
                    )
                    .in_source(&source),
                );
                continue;
            }
        };
        match document(&value, cluster) {
            Ok((name, spec, scope)) => {
                let source = if many {
                    format!("{label} (document {}, policy {name:?})", i + 1)
                } else {
                    source
                };
                read.policies.push(LoadedPolicy {
                    source,
                    name,
                    spec,
                    scope,
                });
            }
            Err(problems) => read
                .problems
                .extend(problems.into_iter().map(|p| p.in_source(&source))),
        }
    }
    read
}

/// What a document is.
enum Kind {
    /// One of the two policy kinds.
    Policy { cluster: bool },
    /// Another Kubernetes kind, e.g. `v1 ConfigMap "c"`.
    Other(String),
    /// Meant as a policy, but not one: a tollgate apiVersion, a kind one
    /// typo from a policy kind, or no kind at all.
    Wrong(String),
}

fn kind_of(value: &Value) -> Kind {
    let text = |key: &str| value.get(key).and_then(Value::as_str);
    let (api_version, kind) = (text("apiVersion"), text("kind"));
    let name = value.pointer("/metadata/name").and_then(Value::as_str);
    let what = format!(
        "{} {}{}",
        api_version.unwrap_or("no apiVersion"),
        kind.unwrap_or("no kind"),
        name.map(|n| format!(" {n:?}")).unwrap_or_default()
    );
    match (api_version, kind) {
        (Some(API_VERSION), Some(KIND)) => Kind::Policy { cluster: false },
        (Some(API_VERSION), Some(CLUSTER_KIND)) => Kind::Policy { cluster: true },
        (Some(API_VERSION), Some(TEST_KIND)) => Kind::Other(what),
        (Some(v), Some(k))
            if !v.starts_with("tollgate.dev/") && nearest(k, [KIND, CLUSTER_KIND]).is_none() =>
        {
            Kind::Other(what)
        }
        _ => {
            let hint = kind
                .and_then(|k| nearest(k, [KIND, CLUSTER_KIND]))
                .map(|k| format!(" (did you mean `{k}`?)"))
                .unwrap_or_default();
            Kind::Wrong(format!("{what}{hint}"))
        }
    }
}

/// Reads one policy document: its name, spec and scope, or every problem.
fn document(
    value: &Value,
    cluster: bool,
) -> Result<(String, McpToolPolicySpec, Scope), Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(fields) = value.as_object() else {
        return Err(vec![Problem::at("", "a policy document must be a map")]);
    };
    const FIELDS: [&str; 5] = ["apiVersion", "kind", "metadata", "spec", "status"];
    for key in fields.keys().filter(|k| !FIELDS.contains(&k.as_str())) {
        let message = match nearest(key, FIELDS) {
            Some(near) => format!("unknown field `{key}`; did you mean `{near}`?"),
            None => format!(
                "unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `spec`, `status`"
            ),
        };
        problems.push(Problem::at(key.as_str(), message));
    }
    let name = match fields.get("metadata") {
        None => {
            problems.push(Problem::at("", missing_field("metadata")));
            None
        }
        Some(metadata) => match name_of(metadata, cluster) {
            Ok(name) => Some(name),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        },
    };
    let parsed = match fields.get("spec") {
        None => {
            problems.push(Problem::at("", missing_field("spec")));
            None
        }
        Some(spec) if cluster => match parse_cluster_spec(spec.clone()) {
            Ok(ClusterMcpToolPolicySpec {
                namespace_selector,
                policy,
            }) => Some((policy, Scope::Cluster { namespace_selector })),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        },
        Some(spec) => match parse_spec(spec.clone()) {
            Ok(spec) => Some((spec, Scope::Namespaced)),
            Err(mut p) => {
                problems.append(&mut p);
                None
            }
        },
    };
    match (name, parsed, problems.is_empty()) {
        (Some(name), Some((spec, scope)), true) => Ok((name, spec, scope)),
        _ => Err(problems),
    }
}

/// The policy name from `metadata`: `namespace/name`, or `name`. Only
/// `name` and `namespace` are read; every other field `kubectl` writes is
/// accepted and ignored, as it changes nothing the policy means.
fn name_of(metadata: &Value, cluster: bool) -> Result<String, Vec<Problem>> {
    let Some(fields) = metadata.as_object() else {
        return Err(vec![Problem::at(
            "metadata",
            "invalid type, expected a map: write `metadata: {name: ...}`",
        )]);
    };
    let mut problems = Vec::new();
    let mut text = |key: &str| match fields.get(key) {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            problems.push(Problem::at(
                format!("metadata.{key}"),
                format!("invalid type: {other}, expected a string"),
            ));
            None
        }
    };
    let name = text("name").unwrap_or_default();
    let namespace = text("namespace");
    if let Err(e) = check_dns_name(&name, ObjectField::Name) {
        problems.push(Problem::at("metadata.name", e.to_string()));
    }
    match namespace.as_deref() {
        Some(_) if cluster => problems.push(Problem::at(
            "metadata.namespace",
            format!("a {CLUSTER_KIND} is cluster-scoped: remove `namespace` (or make it a {KIND})"),
        )),
        Some(ns) => {
            if let Err(e) = check_dns_name(ns, ObjectField::Namespace) {
                problems.push(Problem::at("metadata.namespace", e.to_string()));
            }
        }
        None => {}
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(match namespace {
        Some(ns) => format!("{ns}/{name}"),
        None => name,
    })
}

/// A YAML syntax error: where, what, and the lines around it.
fn yaml_problem(label: &str, text: &str, e: &serde_saphyr::Error) -> Problem {
    let plain = e.without_snippet().to_string();
    // "error: line 6 column 3: duplicate mapping key: ..." → the message.
    let mut what = plain.trim();
    what = what.strip_prefix("error: ").unwrap_or(what);
    if let Some((head, rest)) = what.split_once(": ")
        && head.starts_with("line ")
    {
        what = rest;
    }
    let what = what
        .split(", set DuplicateKeyPolicy")
        .next()
        .unwrap_or(what);
    let what = match what.rsplit_once(" at line ") {
        Some((head, _)) => head,
        None => what,
    }
    .trim();
    let hint = if what.contains("alias") {
        "; an unquoted `*` starts a YAML alias: quote tool globs, e.g. \"*_list\""
    } else {
        ""
    };
    let Some(location) = e.location() else {
        return Problem::at("", format!("not valid YAML: {what}{hint}")).in_source(label);
    };
    let (line, column) = (location.line(), location.column());
    let message = format!(
        "not valid YAML: {what}{hint}\n{}",
        snippet(text, line, column)
    );
    Problem::at("", message)
        .in_source(label)
        .at_location(line, column)
}

/// The lines up to `line` (two before it) with a caret under `column`.
fn snippet(text: &str, line: u64, column: u64) -> String {
    let line = line.max(1) as usize;
    let first = line.saturating_sub(2).max(1);
    let width = line.to_string().len();
    let mut out = format!("{:width$} |", "");
    for (n, content) in text.lines().enumerate().map(|(i, l)| (i + 1, l)) {
        if n < first {
            continue;
        }
        if n > line {
            break;
        }
        out.push_str(&format!("\n{n:width$} | {content}"));
    }
    let pad = " ".repeat(column.saturating_sub(1) as usize);
    out.push_str(&format!("\n{:width$} | {pad}^", ""));
    out
}

/// Compiles loaded documents into one set, collecting every problem.
pub fn compile_set(loaded: &[LoadedPolicy]) -> Result<PolicySet, Vec<Problem>> {
    let mut compiled = Vec::with_capacity(loaded.len());
    let mut problems = Vec::new();
    for p in loaded {
        let outcome = match &p.scope {
            Scope::Namespaced => compile(&p.name, &p.spec),
            Scope::Cluster { namespace_selector } => compile_cluster(
                &p.name,
                &ClusterMcpToolPolicySpec {
                    namespace_selector: namespace_selector.clone(),
                    policy: p.spec.clone(),
                },
            ),
        };
        match outcome {
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
    load_with(paths, ReadOptions::default()).map(|l| (l.set, l.policies))
}

/// A loaded set, with what was skipped.
#[derive(Debug)]
pub struct Loaded {
    /// The compiled policies.
    pub set: PolicySet,
    /// The documents they came from.
    pub policies: Vec<LoadedPolicy>,
    /// What was skipped, and why.
    pub notes: Vec<Problem>,
}

/// [`load`], reading as `options` say.
pub fn load_with(paths: &[PathBuf], options: ReadOptions) -> Result<Loaded, Vec<Problem>> {
    let Read {
        policies,
        mut problems,
        notes,
    } = read_paths_with(paths, options);
    match compile_set(&policies) {
        Ok(set) if problems.is_empty() => Ok(Loaded {
            set,
            policies,
            notes,
        }),
        Ok(_) => Err(problems),
        Err(mut p) => {
            problems.append(&mut p);
            Err(problems)
        }
    }
}

/// A short digest of the policies' names and specs: equal content, equal
/// version, whatever the file layout.
pub(crate) fn version_of(loaded: &[LoadedPolicy]) -> String {
    let mut entries: Vec<(&str, String)> = loaded
        .iter()
        .map(|p| {
            let spec = match &p.scope {
                Scope::Namespaced => serde_json::to_string(&p.spec),
                Scope::Cluster { namespace_selector } => {
                    serde_json::to_string(&ClusterMcpToolPolicySpec {
                        namespace_selector: namespace_selector.clone(),
                        policy: p.spec.clone(),
                    })
                }
            };
            (p.name.as_str(), spec.unwrap_or_default())
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

/// The policy files a path stands for (top level only), sorted.
pub fn files_under(path: &Path) -> Result<Vec<PathBuf>, Problem> {
    files_under_with(path, false).map(|(files, _)| files)
}

/// The policy files a path stands for, sorted, every level deep when
/// `recursive`; else also the subdirectories skipped that hold such files.
pub fn files_under_with(
    path: &Path,
    recursive: bool,
) -> Result<(Vec<PathBuf>, Vec<PathBuf>), Problem> {
    let meta = fs::metadata(path).map_err(|e| Problem::at("", format!("cannot read: {e}")))?;
    if !meta.is_dir() {
        return Ok((vec![path.to_owned()], Vec::new()));
    }
    let (mut files, mut skipped) = (Vec::new(), Vec::new());
    let mut dirs = vec![path.to_owned()];
    while let Some(dir) = dirs.pop() {
        let entries = fs::read_dir(&dir)
            .map_err(|e| Problem::at("", format!("cannot list directory: {e}")))?;
        for entry in entries {
            let entry =
                entry.map_err(|e| Problem::at("", format!("cannot list directory: {e}")))?;
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with('.') {
                continue;
            }
            // `metadata` follows symlinks, as a ConfigMap mount needs.
            let Ok(meta) = fs::metadata(entry.path()) else {
                continue;
            };
            if meta.is_dir() {
                if recursive {
                    dirs.push(entry.path());
                } else if files_under_with(&entry.path(), true)
                    .is_ok_and(|(inner, _)| !inner.is_empty())
                {
                    skipped.push(entry.path());
                }
                continue;
            }
            let is_policy = [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if is_policy && meta.is_file() {
                files.push(entry.path());
            }
        }
    }
    files.sort();
    skipped.sort();
    Ok((files, skipped))
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

/// Which name of a policy object is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ObjectField {
    /// `metadata.name`: a DNS subdomain (dots allowed), up to 253.
    Name,
    /// `metadata.namespace`: a DNS label, up to 63.
    Namespace,
}

impl ObjectField {
    fn max(self) -> usize {
        match self {
            ObjectField::Name => 253,
            ObjectField::Namespace => 63,
        }
    }

    fn dots(self) -> bool {
        self == ObjectField::Name
    }
}

/// Why a policy's `metadata.name` or `metadata.namespace` is refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ObjectNameError {
    /// No `metadata.name`.
    #[error("metadata.name is required")]
    NameMissing,
    /// `namespace: ""`.
    #[error("metadata.namespace must not be empty; leave it out or name a namespace")]
    NamespaceEmpty,
    /// Too long, or characters Kubernetes does not accept there.
    #[error(
        "{value:?} is not a valid Kubernetes name; use at most {} lowercase letters, digits, '-'{} starting and ending with a letter or digit, e.g. \"vm-clone-cap\"",
        .field.max(),
        if .field.dots() { " or '.'" } else { "" }
    )]
    Invalid { value: String, field: ObjectField },
}

/// Kubernetes object names: lowercase RFC 1123 (a subdomain for names,
/// dots allowed; a label for namespaces), so a file policy could be applied
/// as is and `namespace/name` is never ambiguous.
fn check_dns_name(value: &str, field: ObjectField) -> Result<(), ObjectNameError> {
    if value.is_empty() {
        return Err(match field {
            ObjectField::Name => ObjectNameError::NameMissing,
            ObjectField::Namespace => ObjectNameError::NamespaceEmpty,
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
    let labels_ok = if field.dots() {
        value.split('.').all(label_ok)
    } else {
        label_ok(value)
    };
    if value.len() > field.max() || !labels_ok {
        return Err(ObjectNameError::Invalid {
            value: value.to_owned(),
            field,
        });
    }
    Ok(())
}
