//! The motivating case end to end on a real kube-apiserver: the MCP
//! TypeScript SDK as the agent, the tollgate sidecar (managed by the
//! controller) in front of kubernetes-mcp-server, which creates real
//! VirtualMachineClone objects; the KubeVirt CRDs without KubeVirt.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::cluster::{Cluster, ControllerProc};
use support::*;

const PATIENCE: Duration = Duration::from_secs(30);

fn clones(cluster: &Cluster, ns: &str) -> Vec<Value> {
    cluster.get_json(&["-n", ns, "virtualmachineclones.clone.kubevirt.io"])["items"]
        .as_array()
        .unwrap()
        .clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn clones_stay_capped_on_a_real_cluster_and_finished_ones_free_slots() {
    let cluster = Cluster::get();
    cluster
        .kubectl(&[
            "apply",
            "-f",
            repo_file("tests/fixtures/kubevirt-crds.yaml")
                .to_str()
                .unwrap(),
        ])
        .unwrap();
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/virtualmachineclones.clone.kubevirt.io",
            "--timeout=30s",
        ])
        .unwrap();
    let ns = cluster.namespace("kubevirt");
    cluster
        .apply(&format!("apiVersion: kubevirt.io/v1\nkind: VirtualMachine\nmetadata: {{name: golden-fedora, namespace: {ns}, labels: {{golden: \"true\"}}}}\nspec: {{runStrategy: Halted}}\n"))
        .unwrap();

    let (_kms, kms_port) = cluster.kubernetes_mcp_server();
    let controller = ControllerProc::start(cluster, &ns, "c1");
    let (sidecar, _token) = controller.managed_sidecar(
        cluster,
        &ns,
        "kms-0",
        &[("app.kubernetes.io/name", "kubernetes-mcp-server")],
        &format!("http://127.0.0.1:{kms_port}"),
        &[],
    );
    cluster
        .kubectl(&[
            "-n",
            &ns,
            "apply",
            "-f",
            repo_file("examples/kubevirt/clone-guard.yaml")
                .to_str()
                .unwrap(),
        ])
        .unwrap();
    assert!(
        eventually(
            PATIENCE,
            async || cluster.policy(&ns, "clone-guard")["status"]["synced"] == "1/1"
        )
        .await,
        "the sidecar never enforced the policy"
    );
    let url = format!("http://{}/mcp", sidecar.listen);
    let args = format!(r#"{{"namespace":"{ns}","name":"golden-fedora","targetName":"copy"}}"#);

    // 100 clones from a looping agent: exactly 5 objects exist.
    let summary = &agent(
        &url,
        &[
            "repeat",
            "100",
            "vm_clone",
            &args,
            "--concurrency",
            "8",
            "--no-results",
        ],
    )[0];
    assert_eq!(
        (summary["ok"].as_u64(), summary["isError"].as_u64()),
        (Some(5), Some(95)),
        "{summary}"
    );
    assert_eq!(clones(cluster, &ns).len(), 5);
    // The 95 were tollgate's in-flight refusals, not failures of the server.
    let in_flight_denials = async || {
        sample(
            &metrics(sidecar.admin).await,
            &[
                "tollgate_tool_calls_total{",
                "decision=\"denied\"",
                "reason=\"in_flight\"",
            ],
        )
    };
    assert_eq!(in_flight_denials().await, Some(95.0));

    // Ten more in one multi-document manifest: none get through.
    let docs: Vec<String> = (0..10)
        .map(|i| {
            format!(
                "apiVersion: clone.kubevirt.io/{}\nkind: VirtualMachineClone\nmetadata: {{name: bulk-{i}, namespace: {ns}}}\nspec:\n  source: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: golden-fedora}}\n  target: {{apiGroup: kubevirt.io, kind: VirtualMachine, name: bulk-copy-{i}}}\n",
                if i % 2 == 0 { "v1beta1" } else { "v1alpha1" }
            )
        })
        .collect();
    let bulk_args = serde_json::json!({ "resource": docs.join("---\n") }).to_string();
    let bulk = &agent(&url, &["call", "resources_create_or_update", &bulk_args])[0];
    let bulk = Answer::of_result(bulk);
    assert_eq!(bulk.reason(), Some("in_flight"), "{bulk:?}");
    assert!(
        bulk.text()
            .contains("5 VirtualMachineClones in flight per namespace"),
        "{bulk:?}"
    );
    assert_eq!(clones(cluster, &ns).len(), 5);

    // Two clones finish: exactly two slots free up.
    for c in clones(cluster, &ns).iter().take(2) {
        let name = c["metadata"]["name"].as_str().unwrap();
        cluster
            .kubectl(&[
                "-n",
                &ns,
                "patch",
                "virtualmachineclones.clone.kubevirt.io",
                name,
                "--subresource=status",
                "--type=merge",
                "-p",
                r#"{"status":{"phase":"Succeeded"}}"#,
            ])
            .unwrap();
    }
    let mut admitted = 0;
    assert!(
        eventually(PATIENCE, async || {
            let s = &agent(&url, &["repeat", "3", "vm_clone", &args, "--no-results"])[0];
            admitted += s["ok"].as_u64().unwrap_or(0);
            admitted >= 2
        })
        .await,
        "finished clones never freed their slots"
    );
    assert_eq!(admitted, 2, "exactly the freed slots");
    assert_eq!(clones(cluster, &ns).len(), 7);
    let last = Answer::of_result(&agent(&url, &["call", "vm_clone", &args])[0]);
    assert_eq!(last.reason(), Some("in_flight"), "{last:?}");
}
