//! The control plane's promises across restarts, leader changes and
//! incomplete state, against a real kube-apiserver with real controller and
//! sidecar processes:
//!
//! - a policy whose newest generation is refused keeps its last accepted
//!   generation in force after the controller restarts, and after the
//!   leader goes away (it is kept in `status.accepted`) — also when another
//!   policy selects the same pod;
//! - a controller that has not listed everything is not ready and serves no
//!   snapshot (the re-list after an expired watch is covered by the state
//!   machine's unit tests in `crates/controller/src/watch/tests.rs`: an
//!   apiserver cannot be made to expire a watch on demand).

mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc, ManagedSidecar};
use support::upstream::{Framing, Upstream};
use support::*;

const PATIENCE: Duration = Duration::from_secs(30);

/// `cap` forbids `pods_delete`; generation 2 (`broken`) does not compile.
fn cap(ns: &str, broken: bool) -> String {
    let extra = if broken {
        "\n    - {name: bad, tools: [x], action: Allow, arguments: [{pointer: /n, operator: Matches, value: '(unclosed'}]}"
    } else {
        ""
    };
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: cap, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: kms}}}}\n  defaultAction: Allow\n  rules:\n    - {{name: no-delete, tools: [pods_delete], action: Deny}}{extra}\n"
    )
}

/// `open` selects the same pod and allows every tool.
fn open(ns: &str, tools: &str) -> String {
    format!(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: open, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: kms}}}}\n  defaultAction: Allow\n  rules:\n    - {{name: all, tools: [{tools}], action: Allow}}\n"
    )
}

struct Sidecar(ManagedSidecar);

impl Sidecar {
    fn start(cluster: &Cluster, ns: &str, controller: &ControllerProc, up: &Upstream) -> Sidecar {
        Sidecar(ManagedSidecar::start(
            cluster,
            (ns, "kms-0"),
            controller,
            &up.url(),
        ))
    }

    /// Whether the call reached the MCP server (a denial is a JSON-RPC
    /// error or a result with `isError`).
    async fn allows(&self, tool: &str) -> bool {
        let v = post_json(self.0.tg.listen, &[], &call(1, tool, json!({})))
            .await
            .json();
        v["result"].is_object() && v["result"]["isError"].is_null()
    }
}

fn accepted_generation(cluster: &Cluster, ns: &str, name: &str) -> Value {
    cluster.policy(ns, name)["status"]["accepted"]["generation"].clone()
}

fn refused(cluster: &Cluster, ns: &str, name: &str) -> bool {
    let status = &cluster.policy(ns, name)["status"];
    status["observedGeneration"] == 2
        && status["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| c["type"] == "Accepted" && c["status"] == "False")
        })
}

/// Applies `cap` (generation 1) and `open`, waits until the sidecar
/// enforces both and the status keeps generation 1, then refuses `cap`'s
/// generation 2.
async fn accept_then_refuse(cluster: &Cluster, ns: &str, sidecar: &Sidecar) {
    cluster.apply(&cap(ns, false)).unwrap();
    cluster.apply(&open(ns, "\"*\"")).unwrap();
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);
    assert!(!sidecar.allows("pods_delete").await, "cap forbids it");
    assert!(
        eventually(PATIENCE, async || accepted_generation(cluster, ns, "cap")
            == 1)
        .await,
        "status.accepted never kept generation 1: {:#}",
        cluster.policy(ns, "cap")["status"]
    );
    cluster.apply(&cap(ns, true)).unwrap();
    assert!(eventually(PATIENCE, async || refused(cluster, ns, "cap")).await);
}

async fn acks(controller: &ControllerProc) -> f64 {
    sample(
        &metrics(controller.admin).await,
        &["tollgate_controller_acks_total "],
    )
    .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_controller_keeps_the_last_accepted_generation_in_force() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("restart");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let mut first = ControllerProc::start(cluster, &ns, "c1");
    let push = first.push;
    let up = Upstream::start(Framing::Json).await;
    let sidecar = Sidecar::start(cluster, &ns, &first, &up);
    accept_then_refuse(cluster, &ns, &sidecar).await;
    assert!(!sidecar.allows("pods_delete").await);

    // Restarted where the sidecar expects it, knowing nothing but the cluster.
    first.proc.terminate();
    let second = ControllerProc::start_on(cluster, &ns, "c1", &push.to_string());
    assert!(
        eventually(PATIENCE, async || acks(&second).await >= 1.0).await,
        "the sidecar never acknowledged a snapshot from the restarted controller"
    );
    assert!(
        !sidecar.allows("pods_delete").await,
        "cap's generation 1 must stay in force (and not vanish behind `open`)"
    );
    assert!(sidecar.allows("vm_clone").await);
    // The restarted controller (the leader) keeps saying so.
    let status = cluster.policy(&ns, "cap")["status"].clone();
    assert_eq!(status["accepted"]["generation"], 1, "{status:#}");
    let programmed = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Programmed")
        .unwrap();
    assert_eq!(
        programmed["message"],
        "generation 2 was refused; sidecars keep enforcing generation 1"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_leader_serves_the_persisted_generation() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("leader");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let mut leader = ControllerProc::start(cluster, &ns, "replica-a");
    let up = Upstream::start(Framing::Json).await;
    let on_leader = Sidecar::start(cluster, &ns, &leader, &up);
    accept_then_refuse(cluster, &ns, &on_leader).await;

    // A second replica starts after the refusal: it never saw generation 1
    // except in the status. Its sidecar gets cap's generation 1.
    let follower = ControllerProc::start(cluster, &ns, "replica-b");
    let sidecar = Sidecar::start(cluster, &ns, &follower, &up);
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);
    assert!(!sidecar.allows("pods_delete").await);

    // The leader goes; the other replica takes the lease and keeps the
    // persisted generation, in force and in status.
    leader.proc.terminate();
    let took_over = eventually(Duration::from_secs(60), async || {
        sample(
            &metrics(follower.admin).await,
            &["tollgate_controller_leader "],
        ) == Some(1.0)
    })
    .await;
    assert!(took_over, "replica-b never became leader");
    // A change to the other policy after the leader change: pushed with cap
    // generation 1 still in.
    cluster.apply(&open(&ns, "vm_clone, pods_list")).unwrap();
    assert!(
        eventually(
            PATIENCE,
            async || cluster.policy(&ns, "open")["status"]["observedGeneration"] == 2
                && cluster.policy(&ns, "open")["status"]["synced"] == "1/1"
        )
        .await,
        "{:#}",
        cluster.policy(&ns, "open")["status"]
    );
    assert!(!sidecar.allows("pods_delete").await);
    assert!(sidecar.allows("pods_list").await);
    assert_eq!(accepted_generation(cluster, &ns, "cap"), 1);
}

/// A kubeconfig that acts as ServiceAccount `sa` of `ns`.
fn impersonating(cluster: &Cluster, dir: &Path, ns: &str, sa: &str) -> PathBuf {
    let text = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    let mut kc: Value = serde_saphyr::from_str(&text).unwrap();
    for user in kc["users"].as_array_mut().unwrap() {
        user["user"]["as"] = json!(format!("system:serviceaccount:{ns}:{sa}"));
        user["user"]["as-groups"] = json!(["system:serviceaccounts", "system:authenticated"]);
    }
    let path = dir.join("kubeconfig.json");
    std::fs::write(&path, kc.to_string()).unwrap();
    path
}

/// What a namespaced controller needs, with or without reading pods.
fn rbac(ns: &str, pods: bool) -> String {
    let pods = if pods {
        "  - {apiGroups: [\"\"], resources: [pods], verbs: [get, list, watch]}\n"
    } else {
        ""
    };
    format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: limited, namespace: {ns}}}\nrules:\n  - {{apiGroups: [tollgate.dev], resources: [mcptoolpolicies], verbs: [get, list, watch]}}\n  - {{apiGroups: [tollgate.dev], resources: [mcptoolpolicies/status], verbs: [patch]}}\n  - {{apiGroups: [\"\"], resources: [configmaps, secrets], verbs: [get, list, watch, create, update, patch]}}\n  - {{apiGroups: [coordination.k8s.io], resources: [leases], verbs: [get, create, update]}}\n  - {{apiGroups: [\"\", events.k8s.io], resources: [events], verbs: [create, patch]}}\n{pods}---\napiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: limited, namespace: {ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: limited}}\nsubjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: limited-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}\nsubjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: limited-{ns}}}\nrules:\n  - {{apiGroups: [tollgate.dev], resources: [clustermcptoolpolicies], verbs: [get, list, watch]}}\n  - {{apiGroups: [\"\"], resources: [namespaces], verbs: [get, list, watch]}}\n---\napiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRoleBinding\nmetadata: {{name: limited-cluster-{ns}}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: limited-{ns}}}\nsubjects: [{{kind: ServiceAccount, name: limited, namespace: {ns}}}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn no_snapshot_and_not_ready_until_every_list_is_indexed() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("ready");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    cluster.apply(&cap(&ns, false)).unwrap();
    cluster
        .kubectl(&["-n", &ns, "create", "serviceaccount", "limited"])
        .unwrap();
    // The pod list fails (forbidden) until the permission is granted: the
    // policies are listed, the pods are not.
    cluster.apply(&rbac(&ns, false)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = impersonating(cluster, dir.path(), &ns, "limited");
    let controller = ControllerProc::start_with(cluster, &ns, "c1", "127.0.0.1:0", &kubeconfig);
    let failing = eventually(PATIENCE, async || {
        controller
            .proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .any(|l| l.contains("watching sidecar pods failed"))
    })
    .await;
    assert!(failing, "the pod watch never failed");
    let readyz = raw(
        controller.admin,
        b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(readyz.status, 503, "{}", readyz.text());
    assert!(readyz.text().contains("pod watch"), "{}", readyz.text());
    // A sidecar asking now gets no snapshot (an empty one would take its
    // rules away), but a retry.
    let token = cluster.pod_token(&ns, "kms-0");
    let get = format!(
        "GET /v1/snapshots/{ns}/kms-0 HTTP/1.1\r\nHost: t\r\nConnection: close\r\nAuthorization: Bearer {token}\r\n\r\n"
    );
    let early = controller.raw(get.as_bytes()).await;
    assert_eq!(early.status, 503, "{}", early.text());
    assert_eq!(early.header("retry-after"), Some("1"));
    let up = Upstream::start(Framing::Json).await;
    let sidecar = Sidecar::start(cluster, &ns, &controller, &up);
    let v = post_json(sidecar.0.tg.listen, &[], &call(1, "vm_clone", json!({})))
        .await
        .json();
    assert_eq!(v["error"]["code"], -31004, "still fail-closed: {v}");

    // Granted: the watcher's retry lists the pods, and only then is the
    // controller ready and the sidecar served.
    cluster.apply(&rbac(&ns, true)).unwrap();
    let ready = eventually(Duration::from_secs(90), async || {
        raw(
            controller.admin,
            b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .await
        .status
            == 200
    })
    .await;
    assert!(ready, "never ready after the permission was granted");
    assert!(eventually(PATIENCE, async || sidecar.allows("vm_clone").await).await);
    assert!(!sidecar.allows("pods_delete").await);
    let _ = cluster.kubectl(&[
        "delete",
        "clusterrolebinding",
        &format!("limited-{ns}"),
        &format!("limited-cluster-{ns}"),
    ]);
    let _ = cluster.kubectl(&["delete", "clusterrole", &format!("limited-{ns}")]);
}
