//! On a real kube-apiserver: in-cluster agents identified by their
//! ServiceAccount tokens (TokenReview), and the CRD's checks of shared limits.

mod support;

use serde_json::json;
use support::cluster::Cluster;
use support::upstream::{Framing, Upstream};
use support::{Answer, call, metrics, policy_file, post_json, sample, start_proxy_with};
use tollgate_sidecar::IdentitySource;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_account_tokens_identify_agents() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("identity");
    for sa in ["agent-a", "agent-b"] {
        cluster
            .kubectl(&["-n", &ns, "create", "serviceaccount", sa])
            .unwrap();
    }
    let token = |sa: &str, audience: &str| {
        cluster
            .kubectl(&[
                "-n",
                &ns,
                "create",
                "token",
                sa,
                "--audience",
                audience,
                "--duration",
                "1h",
            ])
            .unwrap()
            .trim()
            .to_owned()
    };
    let policy = format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: agents, namespace: {ns}}}
spec:
  defaultAction: Deny
  rules:
    - name: agent-a-clones
      tools: [vm_clone]
      subjects: ["system:serviceaccount:{ns}:agent-a"]
      action: Allow
      rateLimits:
        - {{requests: 1, window: 1m, key: {{subject: true}}}}
    - name: reads
      tools: [pods_list]
      subjects: ["system:serviceaccount:{ns}:*"]
      action: Allow
"#
    );
    let (_dir, path) = policy_file(&policy);
    let upstream = Upstream::start(Framing::Json).await;
    let kubeconfig = cluster.kubeconfig.clone();
    let proxy = start_proxy_with(vec![path], &upstream.url(), |c| {
        c.identity = IdentitySource::Kubernetes {
            audience: "tollgate-agents".into(),
            kubeconfig: Some(kubeconfig),
        };
        c.require_identity = true;
    })
    .await;
    let addr = proxy.listen;
    let send = |id: u64, tool: &'static str, token: String| async move {
        let auth = format!("Bearer {token}");
        post_json(
            addr,
            &[("Authorization", &auth)],
            &call(id, tool, json!({})),
        )
        .await
    };

    let a = token("agent-a", "tollgate-agents");
    let b = token("agent-b", "tollgate-agents");
    let v = Answer::of(&send(1, "vm_clone", a.clone()).await);
    assert!(v.is_allowed(), "agent-a may clone: {v:?}");
    let v = send(2, "vm_clone", a.clone()).await.json();
    assert_eq!(
        v["result"]["_meta"]["dev.tollgate/denial"]["reason"], "rate_limit",
        "{v}"
    );
    let v = send(3, "vm_clone", b.clone()).await.json();
    let text = v["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains(&format!(
            "\"system:serviceaccount:{ns}:agent-b\" is not one of"
        )),
        "{text}"
    );
    let v = Answer::of(&send(4, "pods_list", b.clone()).await);
    assert!(v.is_allowed(), "any agent of the namespace may read: {v:?}");

    // A token for another audience, or no Kubernetes token at all: refused
    // before the MCP server sees anything.
    let before = upstream.seen().len();
    for (what, t) in [
        ("other audience", token("agent-a", "some-other-service")),
        ("not a token", "abc.def.ghi".to_owned()),
    ] {
        let resp = send(5, "pods_list", t).await;
        assert_eq!(resp.status, 401, "{what}: {}", resp.text());
        assert_eq!(resp.json()["error"]["code"], -31005, "{what}");
    }
    assert_eq!(upstream.seen().len(), before);
    let m = metrics(proxy.admin).await;
    assert_eq!(
        sample(
            &m,
            &["tollgate_identity_failures_total", "reason=\"invalid\""]
        ),
        Some(2.0)
    );
    assert_eq!(upstream.calls(), ["vm_clone", "pods_list"]);
    proxy.shutdown().await;
}

#[test]
fn the_apiserver_accepts_the_shared_budget_example_and_checks_store_settings() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("shared");
    let example = support::repo_file("examples/shared-budget.yaml");
    cluster
        .kubectl(&["-n", &ns, "apply", "-f", example.to_str().unwrap()])
        .expect("examples/shared-budget.yaml is a valid McpToolPolicy");
    let stored = cluster.policy(&ns, "shared-budget");
    let clone_rule = stored["spec"]["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "vm-clone")
        .expect("the vm-clone rule");
    assert_eq!(clone_rule["rateLimits"][0]["scope"], "Shared");
    let err = cluster
        .apply(&format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: pod-fallback, namespace: {ns}}}
spec:
  defaultAction: Deny
  rules:
    - name: r
      tools: [vm_clone]
      action: Allow
      rateLimits: [{{requests: 1, window: 1m, onStoreError: LocalFallback}}]
"#
        ))
        .expect_err("onStoreError without scope: Shared");
    assert!(
        err.contains("onStoreError applies to limits with scope: Shared"),
        "{err}"
    );
}
