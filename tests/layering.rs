//! The layering the crates promise, checked: the policy crate pulls in no
//! async runtime, HTTP stack or Kubernetes client, no crate's modules
//! import each other in a loop, and errors are types, not strings.
//!
//! Crates cannot depend on each other in a cycle (cargo refuses); modules
//! inside a crate can, and the first version of tollgate grew such loops
//! (`acks` <-> `status`, `compile` -> `condition` -> `compile`). A loop
//! means neither module can be read, tested or moved without the other.
//!
//! Errors are typed at the boundaries: no production function returns
//! `Result<_, String>` (a thiserror enum whose variants carry the data lets
//! callers match, count and test them), except clap's value parsers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn the_policy_crate_has_no_runtime_http_or_kube_client_dependency() {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .current_dir(root())
        .args([
            "tree",
            "--offline",
            "--locked",
            "-p",
            "tollgate-policy",
            "-e",
            "normal,build",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let crates: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(crates.contains("tollgate-policy") && crates.contains("serde"));
    for forbidden in [
        "tokio",
        "hyper",
        "hyper-util",
        "kube-client",
        "kube-runtime",
        "redis",
        "rustls",
        "tower",
    ] {
        assert!(
            !crates.contains(forbidden),
            "tollgate-policy depends on {forbidden}; the policy engine must stay free of I/O runtimes"
        );
    }
}

/// `a/b.rs` and `a/b/mod.rs` are module `a::b`; `lib.rs`/`main.rs` the root.
fn module_of(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts.join("::")
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a file that is not test code: test files and inline
/// `#[cfg(test)] mod tests` blocks (always last in this code base) are left
/// out, since tests may reach anywhere.
fn production_code(file: &Path, text: &str) -> Option<String> {
    let name = file.file_stem()?.to_str()?;
    if name == "tests" || name == "testing" || name.ends_with("_tests") {
        return None;
    }
    let end = text.find("#[cfg(test)]\nmod tests").unwrap_or(text.len());
    // Comments may name paths without using them.
    Some(
        text[..end]
            .lines()
            .map(|l| l.split("//").next().unwrap_or(""))
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// Every module `module`'s code refers to by path (`crate::a::b`,
/// `super::c`), resolved to the longest module that exists.
fn references(module: &str, code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let path = regex::Regex::new(r"\b((?:crate|super)(?:::[a-z_][a-z0-9_]*)+)").unwrap();
    let mut out = BTreeSet::new();
    for m in path.captures_iter(code) {
        let mut segments: Vec<&str> = m[1].split("::").collect();
        let mut base: Vec<&str> = if module.is_empty() {
            Vec::new()
        } else {
            module.split("::").collect()
        };
        if segments[0] == "crate" {
            base.clear();
            segments.remove(0);
        } else {
            while segments.first() == Some(&"super") {
                segments.remove(0);
                base.pop();
            }
        }
        base.extend(segments);
        let target = (0..=base.len())
            .rev()
            .map(|n| base[..n].join("::"))
            .find(|candidate| modules.contains(candidate))
            .unwrap_or_default();
        if target != module {
            out.insert(target);
        }
    }
    out
}

/// A cycle in `graph`, if there is one, as the modules along it.
fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(node.to_owned(), 1);
        stack.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            match state.get(next.as_str()) {
                Some(1) => {
                    let start = stack.iter().position(|m| m == next).unwrap();
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(next.clone());
                    return Some(cycle);
                }
                Some(_) => {}
                None => {
                    if let Some(c) = visit(next, graph, state, stack) {
                        return Some(c);
                    }
                }
            }
        }
        stack.pop();
        state.insert(node.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for node in graph.keys() {
        if !state.contains_key(node)
            && let Some(c) = visit(node, graph, &mut state, &mut Vec::new())
        {
            return Some(c);
        }
    }
    None
}

fn module_graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let modules: BTreeSet<String> = files.iter().map(|f| module_of(src, f)).collect();
    let mut graph = BTreeMap::new();
    for file in &files {
        let module = module_of(src, file);
        let text = std::fs::read_to_string(file).unwrap();
        if let Some(code) = production_code(file, &text) {
            let refs = references(&module, &code, &modules);
            graph
                .entry(module)
                .or_insert_with(BTreeSet::new)
                .extend(refs);
        }
    }
    graph
}

#[test]
fn no_crate_has_a_module_import_cycle() {
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root().join("crates"))
        .unwrap()
        .map(|e| e.unwrap().path().join("src"))
        .collect();
    crates.push(root().join("src"));
    crates.sort();
    assert!(crates.len() >= 6, "expected the five crates and src/");
    for src in crates {
        let graph = module_graph(&src);
        assert!(graph.len() > 1, "{} has modules", src.display());
        if let Some(cycle) = find_cycle(&graph) {
            panic!(
                "modules of {} import each other in a loop: {}",
                src.display(),
                cycle.join(" -> ")
            );
        }
    }
}

#[test]
fn the_cycle_finder_finds_a_planted_cycle() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::write(src.join("lib.rs"), "mod a;\nmod b;\nmod c;\n").unwrap();
    std::fs::write(src.join("a.rs"), "use crate::b::B;\n").unwrap();
    std::fs::write(src.join("b.rs"), "pub struct B;\nuse super::c::f;\n").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "pub fn f() { let _ = crate::a::A; }\n#[cfg(test)]\nmod tests { use crate::b::B; }\n",
    )
    .unwrap();
    let cycle = find_cycle(&module_graph(src)).expect("a -> b -> c -> a");
    assert_eq!(cycle.len(), 4, "{cycle:?}");
    // Without c's reference back to a, no cycle: test code does not count.
    std::fs::write(
        src.join("c.rs"),
        "pub fn f() {}\n#[cfg(test)]\nmod tests { use crate::a::A; }\n",
    )
    .unwrap();
    assert_eq!(find_cycle(&module_graph(src)), None);
}

/// The clap value parsers: clap prints their error after the flag's name,
/// and a `String` is its convention there. Nothing else returns one.
const STRING_ERROR_ALLOWED: &[(&str, &str)] = &[
    ("src/cli/controller.rs", "env_pair"),
    ("src/cli/mod.rs", "flag_duration"),
    ("src/cli/import.rs", "rename"),
];

/// The error type of each `Result<T, E>` in `code` whose `E` is `String`,
/// as the byte offset where it starts. Generic arguments are split at
/// the commas of their own level, so `Result<HashMap<String, String>, E>`
/// is not one.
fn string_results(code: &str) -> Vec<usize> {
    let bytes = code.as_bytes();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = code[from..].find("Result<") {
        let start = from + at;
        from = start + "Result<".len();
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue; // `ParseResult<`, `io_Result<`: another type
        }
        // The start of the last non-empty argument (a trailing comma ends none).
        let (mut depth, mut last, mut end) = (1, None, None);
        let mut comma = None;
        for (i, c) in code[from..].char_indices() {
            match c {
                '<' | '(' | '[' => depth += 1,
                '>' if code[..from + i].ends_with('-') => {} // `->` in an Fn type
                '>' | ')' | ']' => {
                    depth -= 1;
                    if depth == 0 {
                        end = Some(from + i);
                        break;
                    }
                }
                ',' if depth == 1 => comma = Some(from + i + 1),
                c if depth == 1 && !c.is_whitespace() && comma.is_some() => {
                    last = comma.take();
                }
                ';' | '{' => break,
                _ => {}
            }
        }
        if let (Some(last), Some(end)) = (last, end)
            && code[last..end].trim().trim_end_matches(',').trim() == "String"
        {
            found.push(start);
        }
    }
    found
}

/// `path:line (fn name)` of every `Result<_, String>` in the production
/// code under `root`'s `crates/*/src` and `src`, minus the allowlist.
fn string_errors(root: &Path) -> Vec<String> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(root.join("crates"))
        .map(|d| d.map(|e| e.unwrap().path().join("src")).collect())
        .unwrap_or_default();
    dirs.push(root.join("src"));
    let function = regex::Regex::new(r"fn\s+([a-z_][a-z0-9_]*)").unwrap();
    let mut out = Vec::new();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        let mut files = Vec::new();
        rust_files(dir, &mut files);
        files.sort();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let Some(code) = production_code(&file, &text) else {
                continue;
            };
            let rel = file
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .replace('\\', "/");
            for at in string_results(&code) {
                let name = function
                    .captures_iter(&code[..at])
                    .last()
                    .map(|c| c[1].to_owned())
                    .unwrap_or_default();
                if STRING_ERROR_ALLOWED.contains(&(rel.as_str(), name.as_str())) {
                    continue;
                }
                let line = code[..at].matches('\n').count() + 1;
                out.push(format!("{rel}:{line} (fn {name})"));
            }
        }
    }
    out
}

#[test]
fn no_production_code_returns_a_string_error() {
    let found = string_errors(&root());
    assert!(
        found.is_empty(),
        "Result<_, String> in production code; return a thiserror enum whose variants carry \
         the data (the message goes in #[error]) instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn the_string_error_finder_finds_a_planted_one() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("crates/demo/src");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::create_dir_all(dir.path().join("src/cli")).unwrap();
    std::fs::write(
        src.join("lib.rs"),
        "pub fn typed() -> Result<HashMap<String, String>, Error> { todo!() }\n\
         pub fn f(\n    x: u8,\n) -> Result<\n    Vec<u8>,\n    String,\n> {\n    todo!()\n}\n\
         fn g() { let c = |k: &str| -> Result<Option<String>, String> { todo!() }; }\n\
         #[cfg(test)]\nmod tests {\n    fn h() -> Result<(), String> { Ok(()) }\n}\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("src/cli/mod.rs"),
        "fn flag_duration(s: &str) -> Result<Duration, String> { todo!() }\n",
    )
    .unwrap();
    assert_eq!(
        string_errors(dir.path()),
        [
            "crates/demo/src/lib.rs:4 (fn f)",
            "crates/demo/src/lib.rs:10 (fn g)"
        ]
    );
}

/// The state types every handler shares, by file: their fields are private,
/// reached through methods named for what callers do, so the rules that
/// tie fields together (a session table and its gauge, a body and its
/// limits, approvals and their sweeps) live in one place.
const ENCAPSULATED: &[(&str, &str)] = &[
    ("crates/sidecar/src/gate/mod.rs", "Gate"),
    ("crates/sidecar/src/proxy.rs", "Proxy"),
    ("crates/sidecar/src/identity/mod.rs", "Identities"),
    ("crates/sidecar/src/rules/catalog.rs", "Catalog"),
    ("crates/sidecar/src/rules/controller.rs", "Follower"),
    ("crates/sidecar/src/metrics.rs", "Metrics"),
    ("crates/sidecar/src/approvals/metrics.rs", "ApprovalMetrics"),
    ("crates/controller/src/metrics.rs", "ControllerMetrics"),
    (
        "crates/sidecar/src/transport/open_streams.rs",
        "LegacySession",
    ),
    ("crates/sidecar/src/identity/mod.rs", "JwtVerifier"),
];

/// The fields of `struct name { .. }` in `code` that have any `pub`
/// visibility (`pub`, `pub(crate)`, `pub(super)`, `pub(in ..)`), or `None`
/// when `code` defines no such struct.
fn public_fields(code: &str, name: &str) -> Option<Vec<String>> {
    let head = regex::Regex::new(&format!(r"\bstruct\s+{name}\b[^;{{]*\{{")).unwrap();
    let start = head.find(code)?.end();
    let field = regex::Regex::new(r"^pub(\s|\()").unwrap();
    let ident = regex::Regex::new(r"([a-z_][a-z0-9_]*)\s*:").unwrap();
    let mut depth = 1;
    let mut found = Vec::new();
    for line in code[start..].lines() {
        let line = line.split("//").next().unwrap_or("").trim();
        if depth == 1 && field.is_match(line) {
            let name = ident
                .captures(line)
                .map_or(line.to_owned(), |c| c[1].to_owned());
            found.push(name);
        }
        depth += line.matches('{').count() as i32 - line.matches('}').count() as i32;
        if depth <= 0 {
            return Some(found);
        }
    }
    Some(found)
}

#[test]
fn shared_state_types_keep_their_fields_private() {
    for (file, name) in ENCAPSULATED {
        let text = std::fs::read_to_string(root().join(file)).unwrap();
        let fields = public_fields(&text, name).unwrap_or_else(|| {
            panic!("{file} no longer defines struct {name}; update ENCAPSULATED")
        });
        assert!(
            fields.is_empty(),
            "{name} in {file} has public fields {fields:?}; keep them private and give \
             callers a method named for what they need"
        );
    }
}

#[test]
fn the_public_field_finder_finds_planted_ones() {
    let code = "/// doc\npub(crate) struct Gate {\n    store: Arc<Store>,\n    /// pub in a comment\n    \
                inner: Inner<{ 3 }>,\n    pub(crate) approvals: Arc<Approvals>,\n    #[allow(dead_code)]\n    \
                pub recent: Recent, // why\n    pub(super)\n        split: u8,\n}\n\
                struct Other {\n    pub x: u8,\n}\n";
    assert_eq!(
        public_fields(code, "Gate").unwrap(),
        ["approvals", "recent", "pub(super)"]
    );
    assert_eq!(public_fields(code, "Other").unwrap(), ["x"]);
    assert_eq!(
        public_fields("pub struct Proxy {\n    gate: Gate,\n}\n", "Proxy").unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(public_fields(code, "Proxy"), None);
}
