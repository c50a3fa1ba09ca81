//! On a real kube-apiserver: the `McpToolCallApproval` CRD as the approval
//! queue, and RBAC's custom `approve` verb answered by a
//! SubjectAccessReview for impersonated people — the check the approval
//! webhook makes (docs/approvals.md).

mod support;

use support::cluster::Cluster;
use tollgate_runtime::access_review::{Access, Person, allowed};

const FINGERPRINT: &str = "0123456789abcdef0123456789abcdef";

fn approval(ns: &str, name: &str, fingerprint: &str) -> String {
    format!(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolCallApproval
metadata:
  name: {name}
  namespace: {ns}
  labels: {{tollgate.dev/fingerprint: "{fingerprint}"}}
spec:
  policy: {ns}/approve-clones
  rule: other-clones
  pod: kubernetes-mcp-server-0
  tool: vm_clone
  arguments: {{namespace: vms, name: web-1, targetName: web-copy}}
  argumentsSha256: "{fingerprint}{fingerprint}"
  caller: subject:system:serviceaccount:agents:bot
  requester: system:serviceaccount:agents:bot
  fingerprint: "{fingerprint}"
  minApprovals: 1
  approvers: {{groups: [vm-admins]}}
  expiresAt: "2030-01-01T00:00:00Z"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_approve_verb_is_rbacs_and_the_queue_is_kubectl_get() {
    let cluster = Cluster::get();
    cluster
        .kubectl(&[
            "wait",
            "--for=condition=Established",
            "crd/mcptoolcallapprovals.tollgate.dev",
            "--timeout=30s",
        ])
        .unwrap();
    let ns = cluster.namespace("approvals");
    cluster
        .apply(&format!(
            r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: tool-call-approver, namespace: {ns}}}
rules:
  - apiGroups: [tollgate.dev]
    resources: [mcptoolcallapprovals]
    verbs: [get, list, watch, approve]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tool-call-approvers, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: tool-call-approver}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: ann}}
  - {{apiGroup: rbac.authorization.k8s.io, kind: Group, name: vm-admins}}
"#
        ))
        .unwrap();
    cluster
        .apply(&approval(&ns, "vm-clone-0123456789ab", FINGERPRINT))
        .unwrap();

    // The queue, as an approver sees it.
    let queue = cluster
        .kubectl(&["-n", &ns, "get", "mtca", "--as", "ann"])
        .unwrap();
    let header = queue.lines().next().unwrap_or_default();
    for column in [
        "NAME",
        "PHASE",
        "TOOL",
        "CALLER",
        "APPROVALS",
        "RULE",
        "EXPIRES",
        "AGE",
    ] {
        assert!(header.contains(column), "{queue}");
    }
    assert!(
        queue.contains("vm-clone-0123456789ab") && queue.contains("vm_clone"),
        "{queue}"
    );
    let refused = cluster
        .kubectl(&["-n", &ns, "get", "mtca", "--as", "bob"])
        .unwrap_err();
    assert!(refused.contains("forbidden"), "{refused}");

    // What the webhook asks: may this person approve this object?
    let client = tollgate_runtime::kube_client::client(Some(&cluster.kubeconfig))
        .await
        .unwrap();
    let access = Access {
        verb: "approve",
        group: "tollgate.dev",
        resource: "mcptoolcallapprovals",
        namespace: &ns,
        name: "vm-clone-0123456789ab",
    };
    let may = |user: &str, groups: &[&str]| {
        let person = Person {
            user: user.to_owned(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        };
        let client = client.clone();
        let access = access.clone();
        async move { allowed(&client, &person, &access).await.unwrap() }
    };
    assert!(may("ann", &[]).await, "a user bound to the verb");
    assert!(
        may("carol", &["vm-admins"]).await,
        "a member of a bound group"
    );
    assert!(!may("bob", &["developers"]).await, "anyone else");
    let elsewhere = Access {
        namespace: "default",
        ..access.clone()
    };
    let person = Person {
        user: "ann".into(),
        groups: vec![],
    };
    assert!(
        !allowed(&client, &person, &elsewhere).await.unwrap(),
        "the Role binds in its own namespace only"
    );

    // The schema refuses an approval bound to nothing.
    let bad = cluster
        .apply(&approval(&ns, "bad", "not-a-fingerprint"))
        .unwrap_err();
    assert!(bad.contains("spec.fingerprint"), "{bad}");
}
