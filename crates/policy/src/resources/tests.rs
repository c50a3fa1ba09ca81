//! Extraction against kubernetes-mcp-server 0.0.67's own tool descriptions
//! (tests/peers/fixtures), manifests in every shape, and mappings.

use serde_json::{Value, json};

use super::*;
use crate::spec::ArgumentCondition;

fn fixture_meta(tool: &str) -> ToolMeta {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/peers/fixtures/kubernetes-mcp-server-0.0.67-tools.json"
    );
    let list: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let entry = list["tools"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == tool)
        .unwrap();
    ToolMeta::from_tool(entry)
}

/// Reads the call's manifests once, then extracts: what the engine does.
fn ops_of(
    tool: &str,
    args: &Value,
    meta: Option<&ToolMeta>,
    mappings: &[Mapping],
    default_namespace: &str,
) -> Result<Vec<Op>, ExtractError> {
    let pointers = manifest_pointers(tool, meta, mappings);
    let payloads = Payloads::read(args, pointers.iter().map(String::as_str));
    extract(tool, args, meta, mappings, default_namespace, &payloads)
}

fn clones(ops: &[Op]) -> Vec<(Option<&str>, Option<&str>, Option<&str>)> {
    ops.iter()
        .filter(|o| o.is_clone())
        .map(|o| {
            let c = o.clone.as_ref();
            (
                o.namespace.as_deref(),
                c.and_then(|c| c.source.as_deref()),
                c.and_then(|c| c.target.as_deref()),
            )
        })
        .collect()
}

#[test]
fn vm_clone_creates_one_clone_with_its_source_and_target() {
    let meta = fixture_meta("vm_clone");
    let ops = ops_of(
        "vm_clone",
        &json!({"namespace": "vms", "name": "golden-fedora", "targetName": "copy"}),
        Some(&meta),
        &[],
        "default",
    )
    .unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].verbs, ["create"]);
    assert_eq!(ops[0].resource.as_deref(), Some("virtualmachineclones"));
    assert_eq!(
        clones(&ops),
        [(Some("vms"), Some("golden-fedora"), Some("copy"))]
    );
}

const THREE_CLONES: &str = r#"
apiVersion: clone.kubevirt.io/v1beta1
kind: VirtualMachineClone
metadata: {name: a, namespace: vms}
spec:
  source: {apiGroup: kubevirt.io, kind: VirtualMachine, name: golden-1}
  target: {apiGroup: kubevirt.io, kind: VirtualMachine, name: copy-1}
---
apiVersion: clone.kubevirt.io/v1alpha1
kind: VirtualMachineClone
metadata: {name: b, namespace: other}
spec:
  source: {name: golden-2}
  target: {name: copy-2}
---
# no namespace: the server's default
apiVersion: clone.kubevirt.io/v1beta1
kind: VirtualMachineClone
metadata: {name: c}
spec: {source: {name: golden-3}}
"#;

#[test]
fn every_document_of_a_manifest_counts_in_either_api_version() {
    let meta = fixture_meta("resources_create_or_update");
    let ops = ops_of(
        "resources_create_or_update",
        &json!({"resource": THREE_CLONES}),
        Some(&meta),
        &[],
        "team",
    )
    .unwrap();
    assert_eq!(
        clones(&ops),
        [
            (Some("vms"), Some("golden-1"), Some("copy-1")),
            (Some("other"), Some("golden-2"), Some("copy-2")),
            (Some("team"), Some("golden-3"), None)
        ]
    );
    assert!(ops.iter().all(|o| o.verbs == ["create", "patch"]));
}

#[test]
fn manifests_come_as_json_objects_lists_and_mixed_kinds() {
    let meta = fixture_meta("resources_create_or_update");
    let clone = json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "metadata": {"namespace": "vms"}, "spec": {"source": {"name": "s"}}});
    let as_json_text = json!({"resource": clone.to_string()});
    assert_eq!(
        clones(
            &ops_of(
                "resources_create_or_update",
                &as_json_text,
                Some(&meta),
                &[],
                "d"
            )
            .unwrap()
        )
        .len(),
        1
    );
    let two = json!({"resource": [clone.clone(), {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}}]});
    let ops = ops_of("resources_create_or_update", &two, Some(&meta), &[], "d").unwrap();
    assert_eq!(ops.len(), 2);
    assert_eq!(
        (
            ops[1].group.as_str(),
            ops[1].kind.as_deref(),
            ops[1].namespace.as_deref()
        ),
        ("", Some("ConfigMap"), Some("d"))
    );
    let array = json!({"resource": [clone.clone(), clone]});
    assert_eq!(
        clones(&ops_of("resources_create_or_update", &array, Some(&meta), &[], "d").unwrap()).len(),
        2
    );
}

#[test]
fn unreadable_manifests_are_errors() {
    let meta = fixture_meta("resources_create_or_update");
    for bad in [
        json!({"resource": "kind: [unclosed"}),
        json!({"resource": "apiVersion: v1\nkind: ConfigMap\nkind: Secret\n"}),
        json!({"resource": "apiVersion: v1\nmetadata: {name: x}\n"}),
        json!({"resource": "- just\n- a list\n"}),
        json!({"resource": 42}),
        json!({"resource": "apiVersion: v1\nkind: List\nitems: [{kind: ConfigMap}]\n"}),
        json!({"resource": {"apiVersion": "v1", "kind": "List", "items": []}}),
    ] {
        let err = ops_of("resources_create_or_update", &bad, Some(&meta), &[], "d")
            .expect_err(&bad.to_string())
            .to_string();
        assert!(err.contains("`resource` argument"), "{err}");
    }
    // No manifest at all is no object (the server will refuse the call).
    assert_eq!(
        ops_of(
            "resources_create_or_update",
            &json!({}),
            Some(&meta),
            &[],
            "d"
        )
        .unwrap(),
        Vec::new()
    );
}

#[test]
fn server_metadata_describes_reads_deletes_and_gvk_tools() {
    let ops = ops_of(
        "pods_list",
        &json!({}),
        Some(&fixture_meta("pods_list")),
        &[],
        "d",
    )
    .unwrap();
    assert_eq!(
        (
            ops[0].resource.as_deref(),
            ops[0].namespace.as_deref(),
            ops[0].verbs.clone()
        ),
        (Some("pods"), None, vec!["list".to_owned()])
    );
    let ops = ops_of(
        "resources_delete",
        &json!({"apiVersion": "clone.kubevirt.io/v1beta1", "kind": "VirtualMachineClone", "namespace": "vms", "name": "x"}),
        Some(&fixture_meta("resources_delete")),
        &[],
        "d",
    )
    .unwrap();
    assert_eq!(
        (
            ops[0].group.as_str(),
            ops[0].kind.as_deref(),
            ops[0].name.as_deref()
        ),
        ("clone.kubevirt.io", Some("VirtualMachineClone"), Some("x"))
    );
    assert!(ops[0].is_clone());
    // A tool without metadata and without a mapping touches nothing we know of.
    assert!(
        ops_of("vm_clone", &json!({"name": "x"}), None, &[], "d")
            .unwrap()
            .is_empty()
    );
}

fn truenas_mapping() -> Mapping {
    let mut tools = globset::GlobSetBuilder::new();
    tools.add(globset::Glob::new("truenas").unwrap());
    let condition = ArgumentCondition {
        pointer: "/action".into(),
        operator: crate::spec::Operator::Equals,
        value: Some(json!("vm_clone")),
        values: None,
    };
    Mapping {
        tools: tools.build().unwrap(),
        conditions: vec![crate::compile::condition::Condition::compile(&condition, "x").unwrap()],
        group: CLONE_GROUP.into(),
        kind: Some(CLONE_KIND.into()),
        verb: "create".into(),
        namespace: Some(From::Value("truenas".into())),
        source: Some(From::Pointer("/params/id".into())),
        target: Some(From::Pointer("/params/name".into())),
        manifest: None,
    }
}

#[test]
fn mappings_describe_servers_that_do_not_describe_themselves() {
    let m = [truenas_mapping()];
    let ops = ops_of("truenas", &json!({"category": "vm", "action": "vm_clone", "params": {"id": "golden", "name": "copy"}}), None, &m, "d").unwrap();
    assert_eq!(
        clones(&ops),
        [(Some("truenas"), Some("golden"), Some("copy"))]
    );
    assert!(
        ops_of("truenas", &json!({"action": "vm_list"}), None, &m, "d")
            .unwrap()
            .is_empty()
    );
    assert!(
        ops_of("other", &json!({"action": "vm_clone"}), None, &m, "d")
            .unwrap()
            .is_empty()
    );
}

#[test]
fn plurals_follow_kubernetes() {
    for (kind, plural_name) in [
        ("VirtualMachineClone", "virtualmachineclones"),
        ("Policy", "policies"),
        ("Ingress", "ingresses"),
        ("Gateway", "gateways"),
        ("Pod", "pods"),
        ("Box", "boxes"),
    ] {
        assert_eq!(plural(kind), plural_name);
    }
}
