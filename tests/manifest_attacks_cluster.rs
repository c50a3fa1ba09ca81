//! The attacks that took the KubeVirt caps, replayed against the real
//! kubernetes-mcp-server on a real kube-apiserver (KubeVirt CRDs, no
//! KubeVirt), with tollgate in file mode under examples/kubevirt/clone-guard.yaml
//! and the MCP TypeScript SDK as the agent.
//!
//! Before: tollgate read a `resources_create_or_update` manifest with its
//! own YAML reader and forwarded the agent's text, which the server read
//! with yaml.v2 — merge keys and a U+2028 inside a comment made the server
//! apply clones into `kube-system` while tollgate judged a golden clone.
//! Now: those constructs are refused, what is admitted is forwarded as the
//! objects tollgate judged, an empty namespace is the server's default
//! namespace (one budget, not two), a namespace that is no namespace name
//! is refused before anything is counted, and arguments the server's schema
//! does not list (`context`) are refused.

mod support;

use serde_json::{Value, json};
use support::cluster::Cluster;
use support::*;

fn clones(cluster: &Cluster, ns: &str) -> Vec<Value> {
    cluster.get_json(&["-n", ns, "virtualmachineclones.clone.kubevirt.io"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

/// A call the agent made, answered with tollgate's own denial naming `why`.
fn denied_by_tollgate(result: &Value, why: &str) {
    assert_eq!(result["isError"], true, "{result}");
    let text = result["content"][0]["text"].as_str().unwrap_or_default();
    assert!(
        text.starts_with("Denied by tollgate") && text.contains(why),
        "expected tollgate's denial mentioning {why:?}: {result}"
    );
}

/// A call that went through and succeeded at the server (`isError` absent
/// or false, and a result, not a JSON-RPC error).
fn succeeded(result: &Value) {
    assert!(
        result.get("error").is_none()
            && result.get("content").is_some()
            && result.get("isError").is_none_or(|e| e == false),
        "{result}"
    );
}

/// kubernetes-mcp-server on the cluster (KubeVirt CRDs in) behind a
/// tollgate under examples/kubevirt/clone-guard.yaml; the processes, and the
/// MCP URL an agent uses.
fn clone_guard() -> (&'static Cluster, (Proc, TollgateProc), String) {
    let cluster = Cluster::get();
    cluster.kubevirt_crds();
    let (kms, kms_port) = cluster.kubernetes_mcp_server();
    let sidecar = tollgate(&[
        "--policy",
        repo_file("examples/kubevirt/clone-guard.yaml")
            .to_str()
            .unwrap(),
        "--upstream",
        &format!("http://127.0.0.1:{kms_port}"),
    ]);
    let url = format!("http://{}/mcp", sidecar.listen);
    (cluster, (kms, sidecar), url)
}

fn clone_doc(ns: &str, name: &str, source: &str) -> String {
    format!(
        "apiVersion: clone.kubevirt.io/v1beta1\nkind: VirtualMachineClone\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {source}}}\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: {name}-copy}}\n"
    )
}

#[test]
fn manifest_tricks_are_refused_and_what_is_admitted_is_what_is_applied() {
    let (cluster, _stack, url) = clone_guard();
    let ns = cluster.namespace("attacks");
    let create = |text: &str| {
        let args = json!({ "resource": text }).to_string();
        agent(&url, &["call", "resources_create_or_update", &args])
            .pop()
            .unwrap()
    };

    // A merge key: yaml.v2 lets the later merge overwrite the explicit
    // namespace, so the server would clone into kube-system.
    let merge = format!(
        "apiVersion: clone.kubevirt.io/v1beta1\nkind: VirtualMachineClone\nmetadata:\n  name: merged\n  namespace: {ns}\n  <<: {{namespace: kube-system}}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: golden-fedora}}\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: merged-copy}}\n"
    );
    denied_by_tollgate(&create(&merge), "merge");

    // A LINE SEPARATOR ends the comment for yaml.v2 and makes the rest a
    // second `namespace:` line (and a forbidden source).
    let separator = format!(
        "apiVersion: clone.kubevirt.io/v1beta1\nkind: VirtualMachineClone\nmetadata:\n  name: hidden\n  namespace: {ns} # golden\u{2028}  namespace: kube-system\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: golden-fedora}}\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: hidden-copy}}\n"
    );
    denied_by_tollgate(&create(&separator), "LINE SEPARATOR");

    // A YAML 1.1 boolean key, and a separator yaml.v2 reads differently.
    denied_by_tollgate(
        &create(&format!(
            "{}  on: x\n",
            clone_doc(&ns, "boolkey", "golden-fedora")
        )),
        "quote the key",
    );
    denied_by_tollgate(
        &create(&format!(
            "{}--- # more\n{}",
            clone_doc(&ns, "a", "golden-fedora"),
            clone_doc("kube-system", "b", "golden-fedora")
        )),
        "starts with \"---\"",
    );
    assert!(
        clones(cluster, "kube-system").is_empty(),
        "nothing reached kube-system"
    );
    assert!(
        clones(cluster, &ns).is_empty(),
        "no refused call created anything"
    );

    // What is admitted is applied as judged: two documents (comments,
    // quoting, a status the server drops) become exactly two clones of the
    // golden source, with the names tollgate read.
    let admitted = format!(
        "# two golden clones\n{}status: {{phase: Succeeded}}\n---\n{}",
        clone_doc(&ns, "first", "golden-fedora"),
        clone_doc(&ns, "second", "'golden-fedora'").replace("'golden-fedora'", "\"golden-fedora\"")
    );
    succeeded(&create(&admitted));
    let made = clones(cluster, &ns);
    let mut names: Vec<&str> = made
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["first", "second"]);
    assert!(
        made.iter()
            .all(|c| c["spec"]["source"]["name"] == "golden-fedora"
                && c.get("status").is_none_or(|s| s.get("phase").is_none())),
        "{made:?}"
    );
}

#[test]
fn namespaces_are_the_servers_and_arguments_stay_inside_its_schema() {
    let (cluster, _stack, url) = clone_guard();
    let clone = |namespace: &str, target: &str| {
        let args = json!({"namespace": namespace, "name": "golden-fedora", "targetName": target})
            .to_string();
        agent(&url, &["call", "vm_clone", &args]).pop().unwrap()
    };

    // The server's kubeconfig context namespace is `default`, the policy's
    // defaultNamespace too. A manifest with `namespace: ""` lands there
    // (the server defaults it), so "default" and "" are one budget of 5 in
    // flight, not two.
    let manifest = |name: &str| {
        let doc = clone_doc("\"\"", name, "golden-fedora");
        let args = json!({ "resource": doc }).to_string();
        agent(&url, &["call", "resources_create_or_update", &args])
            .pop()
            .unwrap()
    };
    let before = clones(cluster, "default").len();
    for i in 0..3 {
        succeeded(&clone("default", &format!("explicit-{i}")));
    }
    for i in 0..2 {
        succeeded(&manifest(&format!("empty-{i}")));
    }
    assert_eq!(
        clones(cluster, "default").len(),
        before + 5,
        "the empty namespace landed in the server's default namespace"
    );
    denied_by_tollgate(&manifest("one-too-many"), "in flight");
    denied_by_tollgate(&clone("default", "one-too-many"), "in flight");
    denied_by_tollgate(&clone("", "one-too-many"), "in flight");
    assert_eq!(clones(cluster, "default").len(), before + 5);

    // Not a namespace name: refused before anything is counted.
    let long = "x".repeat(5000);
    for bad in ["Kube-System", "a_b", "-x", long.as_str()] {
        denied_by_tollgate(&clone(bad, "t"), "is not a namespace name");
    }

    // `context` selects another cluster in kubernetes-mcp-server, and no
    // rule reads it: refused, as the server's schema does not list it.
    let args =
        json!({"namespace": "vms", "name": "golden-fedora", "targetName": "t", "context": "prod"})
            .to_string();
    denied_by_tollgate(
        &agent(&url, &["call", "vm_clone", &args]).pop().unwrap(),
        "strictArguments",
    );
}

#[tokio::test]
async fn calls_a_resource_rule_judges_wait_for_the_servers_tool_list() {
    // A port with nothing behind it yet.
    let port = free_port();
    let sidecar = tollgate(&[
        "--policy",
        repo_file("examples/kubevirt/clone-guard.yaml")
            .to_str()
            .unwrap(),
        "--upstream",
        &format!("http://127.0.0.1:{port}"),
    ]);
    let ready = raw(
        sidecar.admin,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(ready.status, 503, "{}", ready.text());
    assert!(ready.text().contains("tool list"), "{}", ready.text());
    // The call itself: the proxy answers without asking the upstream (a
    // tools/call needs no session for tollgate's own denial).
    let denied = post_json(
        sidecar.listen,
        &[],
        &call(
            1,
            "vm_clone",
            json!({"namespace": "vms", "name": "golden-x", "targetName": "y"}),
        ),
    )
    .await;
    let body = denied.json();
    assert_eq!(body["result"]["isError"], true, "{body}");
    assert!(
        body["result"]["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("has not yet read the MCP server's tool list"),
        "{body}"
    );

    // The server comes up on that port: the sidecar learns its tools by
    // itself, becomes ready, and judges the call.
    let bin = peers().join(
        "node_modules/kubernetes-mcp-server-linux-amd64/bin/kubernetes-mcp-server-linux-amd64",
    );
    // A kubeconfig whose cluster is not there: the server needs one to
    // start, and lists its tools without reaching it.
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\nusers: [{name: u, user: {token: t}}]\n",
    )
    .unwrap();
    let mut cmd = std::process::Command::new("sh");
    cmd.arg("-c").arg(format!(
        "echo started; exec {} --port {port} --bind-address 127.0.0.1 --toolsets core,config,kubevirt --kubeconfig {} >/dev/null 2>&1",
        bin.display(),
        kubeconfig.display()
    ));
    let (_kms, _) = Proc::spawn(cmd, |l| l == "started");
    assert!(
        eventually(std::time::Duration::from_secs(30), async || {
            raw(
                sidecar.admin,
                b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            )
            .await
            .status
                == 200
        })
        .await,
        "the sidecar never read the server's tool list"
    );
    let url = format!("http://{}/mcp", sidecar.listen);
    let args =
        json!({"namespace": "kube-system", "name": "golden-x", "targetName": "y"}).to_string();
    denied_by_tollgate(
        &agent(&url, &["call", "vm_clone", &args]).pop().unwrap(),
        "no-system-clones",
    );
}
