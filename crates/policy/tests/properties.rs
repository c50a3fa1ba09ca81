//! Properties of what the policy crate reads from outside: policy text
//! (files, CRDs) and tool-call arguments (manifests). On any input, loading
//! never panics and says what is wrong; extracting the objects of a call
//! never panics; a loaded policy decides any call. Inputs are bounded in
//! size, so each case is bounded in time and memory.
//!
//! `cargo test` runs a few cases of each; `make fuzz` many more.

#[path = "../../mcp/tests/common/cases.rs"]
mod common;

use proptest::prelude::*;
use serde_json::{Value, json};

use tollgate_policy::compile::resource_rules::NoCluster;
use tollgate_policy::load::{compile_set, load, parse_text};
use tollgate_policy::resources::{Manifest, Payloads, ToolMeta, extract, manifest_pointers};
use tollgate_policy::{PolicySet, ToolCall};

/// Policies as users write them: the examples in the repository.
const EXAMPLES: &[&str] = &[
    include_str!("../../../examples/vm-clone-cap.yaml"),
    include_str!("../../../examples/shared-budget.yaml"),
    include_str!("../../../examples/kubevirt/clone-guard.yaml"),
    include_str!("../../../examples/kubernetes-mcp-server/20-policy.yaml"),
];

/// kubernetes-mcp-server 0.0.67's own `tools/list` result.
const TOOLS: &str =
    include_str!("../../../tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json");

const POLICY_LINES: &[&str] = &[
    "apiVersion: tollgate.dev/v1alpha1",
    "kind: McpToolPolicy",
    "metadata: {name: p}",
    "spec:",
    "  defaultAction: Deny",
    "  mode: Audit",
    "  hideDenied: true",
    "  rules:",
    "    - name: r",
    "      tools: [vm_clone, 'pods_*', '[x']",
    "      action: Allow",
    "      action: Deny",
    "      rateLimits:",
    "        - {requests: 5, window: 1m, key: {arguments: [/namespace]}}",
    "        - {requests: 0, window: 99999999999h}",
    "      arguments:",
    "        - {pointer: /namespace, operator: In, values: [a, b]}",
    "        - {pointer: '', operator: Matches, value: '(a+)+$'}",
    "      resources: [{group: clone.kubevirt.io, kind: VirtualMachineClone}]",
    "      inFlight: [{max: 3, per: Namespace}]",
    "  base: &b {action: Allow}",
    "  - <<: *b",
    "  x: *b",
    "!!binary aGk=",
    "---",
    "...",
    "- ",
    "  : ",
    "\t",
    "\"unterminated",
];

/// Lines of the policy language and of YAML's corners: anchors, aliases,
/// merge keys, flow collections, tags, documents, odd indentation.
fn yaml_ish() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(POLICY_LINES).prop_map(str::to_owned),
        "[ -~]{0,24}",
    ];
    prop::collection::vec(line, 0..40).prop_map(|lines| lines.join("\n"))
}

/// A valid policy, damaged: lines dropped, repeated or swapped, text cut
/// off, characters YAML cares about dropped in.
fn mutated_example() -> impl Strategy<Value = String> {
    let edit = (
        0usize..5,
        any::<prop::sample::Index>(),
        any::<prop::sample::Index>(),
        "[-:{}\\[\\],&*!|>'\"%@`# \n]",
    );
    (
        prop::sample::select(EXAMPLES),
        prop::collection::vec(edit, 1..6),
    )
        .prop_map(|(text, edits)| {
            let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
            for (kind, a, b, junk) in edits {
                if lines.is_empty() {
                    break;
                }
                let (i, j) = (a.index(lines.len()), b.index(lines.len()));
                match kind {
                    0 => {
                        lines.remove(i);
                    }
                    1 => {
                        let copy = lines[i].clone();
                        lines.insert(j, copy);
                    }
                    2 => lines.swap(i, j),
                    3 => {
                        let line = &mut lines[i];
                        let at = b.index(line.len() + 1);
                        if line.is_char_boundary(at) {
                            line.insert_str(at, &junk);
                        }
                    }
                    _ => lines.truncate(i),
                }
            }
            lines.join("\n")
        })
}

/// Any JSON value, a few levels deep, with strings that may be manifests.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        "[ -~\n]{0,32}".prop_map(Value::String),
        yaml_ish().prop_map(Value::String),
        manifest_text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![
                    Just("apiVersion".to_owned()),
                    Just("kind".to_owned()),
                    Just("metadata".to_owned()),
                    Just("namespace".to_owned()),
                    Just("name".to_owned()),
                    Just("items".to_owned()),
                    Just("spec".to_owned()),
                    "[a-z]{1,8}",
                ],
                inner,
                0..6
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const MANIFEST_LINES: &[&str] = &[
    "apiVersion: clone.kubevirt.io/v1beta1",
    "apiVersion: v1",
    "kind: VirtualMachineClone",
    "kind: List",
    "kind: Namespace",
    "metadata:",
    "  name: c",
    "  namespace: vms",
    "  namespace: \"\"",
    "  generateName: c-",
    "spec:",
    "  source: {kind: VirtualMachine, name: golden}",
    "items:",
    "- kind: VirtualMachineClone",
    "  apiVersion: clone.kubevirt.io/v1alpha1",
    "m: &m {namespace: a}",
    "<<: *m",
    "---",
    "{\"kind\": \"List\", \"items\": [{}]}",
];

/// Manifest text: Kubernetes objects, lists and YAML's corners.
fn manifest_text() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        prop::sample::select(MANIFEST_LINES).prop_map(str::to_owned),
        "[ -~]{0,16}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|lines| lines.join("\n"))
}

proptest! {
    #![proptest_config(common::cases(64))]

    #[test]
    fn loading_any_text_never_panics_and_names_what_is_wrong(text in yaml_ish()) {
        load_text(&text)?;
    }

    #[test]
    fn loading_a_damaged_policy_never_panics(text in mutated_example()) {
        if let Some(set) = load_text(&text)? {
            let args = json!({"namespace": "vms", "name": "golden", "targetName": "c"});
            let _ = set.evaluate(&ToolCall::new("vm_clone", &args), &NoCluster);
        }
    }

    #[test]
    fn reading_the_objects_of_any_call_never_panics(
        arguments in json_value(),
        resource in prop_oneof![manifest_text().prop_map(Value::String), json_value()],
        tool in prop::sample::select(tool_names()),
    ) {
        let _ = Manifest::read(&arguments, "resource");
        let _ = Manifest::read(&resource, "resource");
        let meta = meta_of(&tool);
        let pointers = manifest_pointers(&tool, meta.as_ref(), &[]);
        for args in [arguments.clone(), json!({"resource": resource, "namespace": arguments})] {
            let payloads = Payloads::read(&args, pointers.iter().map(String::as_str));
            let _ = extract(&tool, &args, meta.as_ref(), &[], "default", &payloads);
            let _ = payloads.forwarded(&args);
        }
    }

    #[test]
    fn the_examples_decide_any_call(
        example in prop::sample::select(EXAMPLES),
        tool in prop::sample::select(tool_names()),
        arguments in json_value(),
    ) {
        let (loaded, problems) = parse_text("example.yaml", example);
        prop_assert!(problems.is_empty(), "{problems:?}");
        let set = compile_set(&loaded).expect("the examples compile");
        let meta = meta_of(&tool);
        let call = ToolCall {
            meta: meta.as_ref(),
            ..ToolCall::new(&tool, &arguments)
        };
        let _ = set.evaluate(&call, &NoCluster);
    }
}

/// Loads `text` as a policy file the way the sidecar and `tollgate check`
/// do: the rules, or problems that say what is wrong.
fn load_text(text: &str) -> Result<Option<PolicySet>, TestCaseError> {
    let dir = tempfile::tempdir().map_err(|e| TestCaseError::fail(e.to_string()))?;
    let path = dir.path().join("policy.yaml");
    std::fs::write(&path, text).map_err(|e| TestCaseError::fail(e.to_string()))?;
    match load(&[path]) {
        Ok((set, _)) => Ok(Some(set)),
        Err(problems) => {
            prop_assert!(!problems.is_empty(), "refused without a reason: {text:?}");
            Ok(None)
        }
    }
}

/// The tools of the fixture, and one nobody knows.
fn tool_names() -> Vec<String> {
    let listed: Value = serde_json::from_str(TOOLS).expect("the fixture is JSON");
    let mut names: Vec<String> = listed["tools"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    names.push("unknown_tool".to_owned());
    names
}

/// What the upstream says about `tool`.
fn meta_of(tool: &str) -> Option<ToolMeta> {
    let listed: Value = serde_json::from_str(TOOLS).ok()?;
    listed["tools"]
        .as_array()?
        .iter()
        .find(|t| t["name"] == tool)
        .map(ToolMeta::from_tool)
}
