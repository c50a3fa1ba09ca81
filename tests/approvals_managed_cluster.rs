//! Managed approvals on a real kube-apiserver: a managed sidecar in front
//! of the real kubernetes-mcp-server keeps each held call as an
//! `McpToolCallApproval` in its namespace; people decide with `kubectl`
//! (impersonated users) or `tollgate approve`; the controller's admission
//! webhook — called by the apiserver over TLS — checks them (SubjectAccessReview
//! for the `approve` verb) and records their votes. The sidecar and the
//! approvers hold exactly the chart's ClusterRoles.

mod support;

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use support::cluster::{Cluster, ControllerProc};
use support::*;

const PATIENCE: Duration = Duration::from_secs(60);

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: approvals}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: kubernetes-mcp-server}
  defaultAction: Deny
  rules:
    - name: listing
      tools: [pods_list_in_namespace]
      action: RequireApproval
      approval: {timeout: 10m, approvers: {groups: [vm-admins]}}
    - name: events
      tools: [events_list]
      action: RequireApproval
      approval: {minApprovals: 2, holdFor: 2m, timeout: 10m}
    - name: quick
      tools: [pods_list]
      action: RequireApproval
      approval: {timeout: 2s}
"#;

/// One namespace with the controller (and its webhook registered with the
/// apiserver), RBAC from the chart, the policy, kubernetes-mcp-server and
/// a managed sidecar that keeps approvals in the cluster.
struct Stage {
    cluster: &'static Cluster,
    ns: String,
    sidecars: Vec<TollgateProc>,
    /// The uid of the sidecars' pod `kms-0`.
    pod_uid: String,
    /// The agent's ServiceAccount token (its caller subject).
    token: String,
    _controller: ControllerProc,
    _kms: Proc,
    dir: tempfile::TempDir,
}

/// The chart's ClusterRoles for approvals (manifests/install.yaml), applied
/// as they ship, once per cluster (tests of this binary run in parallel and
/// concurrent applies of one object conflict).
fn chart_roles(cluster: &Cluster) {
    static APPLIED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    APPLIED.get_or_init(|| apply_chart_roles(cluster));
}

fn apply_chart_roles(cluster: &Cluster) {
    let text = std::fs::read_to_string(repo_file("manifests/install.yaml")).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let roles: Vec<&Value> = docs
        .iter()
        .filter(|d| {
            d["kind"] == "ClusterRole"
                && matches!(
                    d["metadata"]["name"].as_str(),
                    Some("tollgate-sidecar-approvals" | "tollgate-approver")
                )
        })
        .collect();
    assert_eq!(roles.len(), 2, "the chart ships both approval roles");
    for role in roles {
        cluster.apply(&role.to_string()).unwrap();
    }
}

impl Stage {
    fn start(sidecars: usize) -> Stage {
        Stage::start_with(sidecars, &[POLICY])
    }

    /// Like [`Stage::start`], with these policies (each `metadata: {name: …}`).
    fn start_with(sidecars: usize, policies: &[&str]) -> Stage {
        let cluster = Cluster::get();
        chart_roles(cluster);
        let ns = cluster.namespace("mtca");
        let configuration = format!("tollgate-approvals-{ns}");
        let controller = ControllerProc::start_with_webhook(cluster, &ns, "c1", &configuration);
        let webhook = controller
            .webhook
            .expect("the controller serves its webhook");
        let ca = cluster.controller_ca(&ns);
        cluster
            .apply(&format!(
                r#"
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: {configuration}}}
webhooks:
  - name: approvals.tollgate.dev
    clientConfig:
      url: https://{webhook}/mutate/approval
      caBundle: {bundle}
    rules:
      - operations: [UPDATE]
        apiGroups: [tollgate.dev]
        apiVersions: [v1alpha1]
        resources: [mcptoolcallapprovals, mcptoolcallapprovals/status]
        scope: Namespaced
    namespaceSelector:
      matchLabels: {{kubernetes.io/metadata.name: {ns}}}
    sideEffects: None
    admissionReviewVersions: [v1]
    reinvocationPolicy: Never
    failurePolicy: Fail
    timeoutSeconds: 10
"#,
                bundle = base64(ca.as_bytes()),
            ))
            .unwrap();
        // People: ann and carol (vm-admins), the agent `bot` itself, all
        // with the chart's approver role; dave may write status but holds
        // no `approve`; eve holds nothing.
        cluster
            .kubectl(&["-n", &ns, "create", "serviceaccount", "bot"])
            .unwrap();
        cluster
            .apply(&format!(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: approvers, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tollgate-approver}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: ann}}
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: carol}}
  - {{kind: ServiceAccount, name: bot, namespace: {ns}}}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {{name: status-writer, namespace: {ns}}}
rules:
  - apiGroups: [tollgate.dev]
    resources: [mcptoolcallapprovals, mcptoolcallapprovals/status]
    verbs: [get, patch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: status-writers, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: status-writer}}
subjects:
  - {{apiGroup: rbac.authorization.k8s.io, kind: User, name: dave}}
"#
            ))
            .unwrap();
        let pod_uid = cluster.sidecar_pod(
            &ns,
            "kms-0",
            &[("app.kubernetes.io/name", "kubernetes-mcp-server")],
        );
        // The sidecar runs as the pod's ServiceAccount with the chart's
        // sidecar role, plus TokenReview for the agents' tokens.
        cluster
            .apply(&format!(
                r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {{name: tollgate-sidecar-approvals, namespace: {ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: tollgate-sidecar-approvals}}
subjects: [{{kind: ServiceAccount, name: mcp, namespace: {ns}}}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {{name: tollgate-token-reviews-{ns}}}
roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: system:auth-delegator}}
subjects: [{{kind: ServiceAccount, name: mcp, namespace: {ns}}}]
"#
            ))
            .unwrap();
        for policy in policies {
            let policy = policy.replace(
                "metadata: {name: ",
                &format!("metadata: {{namespace: {ns}, name: "),
            );
            cluster.apply(&policy).unwrap();
        }
        let (kms, kms_port) = cluster.kubernetes_mcp_server();
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = cluster.kubeconfig_for(dir.path(), &ns, "mcp");
        let sidecars = (0..sidecars)
            .map(|i| {
                let own = dir.path().join(format!("sidecar-{i}"));
                std::fs::create_dir(&own).unwrap();
                let mut args = support::cluster::ManagedSidecar::args(
                    &own,
                    cluster,
                    (&ns, "kms-0"),
                    (controller.push, &controller.ca_file),
                    &format!("http://127.0.0.1:{kms_port}"),
                );
                args.extend(
                    [
                        "--approvals",
                        "kubernetes",
                        "--kubeconfig",
                        kubeconfig.to_str().unwrap(),
                        "--identity",
                        "kubernetes",
                        "--pod-uid",
                        pod_uid.as_str(),
                    ]
                    .map(str::to_owned),
                );
                tollgate(&args.iter().map(String::as_str).collect::<Vec<_>>())
            })
            .collect();
        // The agent reads its namespace; kubernetes-mcp-server acts with
        // the caller's token, so it is valid for the apiserver too.
        // (`view` is an aggregated role: empty without a controller-manager.)
        cluster
            .kubectl(&[
                "-n",
                &ns,
                "create",
                "role",
                "reader",
                "--verb=get,list",
                "--resource=pods,events",
            ])
            .unwrap();
        cluster
            .kubectl(&[
                "-n",
                &ns,
                "create",
                "rolebinding",
                "bot-reads",
                "--role=reader",
                &format!("--serviceaccount={ns}:bot"),
            ])
            .unwrap();
        let token = cluster
            .kubectl(&[
                "-n",
                &ns,
                "create",
                "token",
                "bot",
                "--audience",
                "tollgate-agents",
                "--audience",
                "https://kubernetes.default.svc.cluster.local",
            ])
            .unwrap()
            .trim()
            .to_owned();
        Stage {
            cluster,
            ns,
            sidecars,
            pod_uid,
            token,
            _controller: controller,
            _kms: kms,
            dir,
        }
    }

    async fn synced(&self) {
        let n = self.sidecars.len();
        assert!(
            eventually(PATIENCE, async || {
                self.cluster.policy(&self.ns, "approvals")["status"]["synced"] == format!("{n}/{n}")
                    || self.cluster.policy(&self.ns, "approvals")["status"]["synced"] == "1/1"
            })
            .await,
            "the sidecar never enforced the policy"
        );
    }

    /// One call through sidecar `i` as the agent, with the MCP TypeScript SDK.
    fn call(&self, i: usize, tool: &str, args: &Value) -> Value {
        let url = format!("http://{}/mcp", self.sidecars[i].listen);
        let auth = format!("Authorization: Bearer {}", self.token);
        agent(&url, &["--header", &auth, "call", tool, &args.to_string()])
            .pop()
            .unwrap()
    }

    /// One raw JSON-RPC call (no session) as the agent.
    async fn post(&self, i: usize, tool: &str, args: &Value) -> Value {
        let auth = format!("Bearer {}", self.token);
        post_json(
            self.sidecars[i].listen,
            &[("authorization", &auth)],
            &call(fresh_id(), tool, args.clone()),
        )
        .await
        .json()
    }

    fn get(&self, name: &str) -> Value {
        self.cluster.get_json(&["-n", &self.ns, "mtca", name])
    }

    fn names(&self) -> Vec<String> {
        let list = self.cluster.get_json(&["-n", &self.ns, "mtca"]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap().to_owned())
            .collect()
    }

    /// `kubectl patch mtca NAME --subresource=status` as `user`.
    fn decide(
        &self,
        name: &str,
        verdict: &str,
        user: &str,
        groups: &[&str],
    ) -> Result<Value, String> {
        let patch = json!({"status": {"decision": {"verdict": verdict}}}).to_string();
        let mut args = vec![
            "-n",
            &self.ns,
            "patch",
            "mtca",
            name,
            "--subresource=status",
            "--type=merge",
            "-p",
            &patch,
            "--as",
            user,
            "-o",
            "json",
        ];
        for g in groups {
            args.extend(["--as-group", g]);
        }
        self.cluster
            .kubectl(&args)
            .map(|out| serde_json::from_str(&out).unwrap())
    }

    /// `tollgate approve|reject NAME` against the cluster as `user`.
    fn tollgate_decide(
        &self,
        verb: &str,
        name: &str,
        user: &str,
        groups: &[&str],
    ) -> (bool, String) {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"));
        cmd.args([verb, name, "-n", &self.ns, "--as", user])
            .arg("--kubeconfig")
            .arg(&self.cluster.kubeconfig);
        for g in groups {
            cmd.args(["--group", g]);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    fn events(&self, name: &str) -> Vec<String> {
        let list = self.cluster.get_json(&[
            "-n",
            &self.ns,
            "events.events.k8s.io",
            "--field-selector",
            &format!("regarding.name={name}"),
        ]);
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["reason"].as_str().unwrap_or("").to_owned())
            .collect()
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

fn base64(bytes: &[u8]) -> String {
    const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn approval_of(result: &Value) -> String {
    result["_meta"]["dev.tollgate/approval"]["id"]
        .as_str()
        .or_else(|| result["result"]["_meta"]["dev.tollgate/approval"]["id"].as_str())
        .unwrap_or_else(|| panic!("no approval in {result}"))
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_held_call_is_an_object_people_decide_with_kubectl_and_it_passes_once() {
    let stage = Stage::start(1);
    stage.synced().await;
    let ns = stage.ns.clone();
    let args = json!({"namespace": ns});

    // Held: an object in the pod's namespace, pending, bound to the caller.
    let held = stage.call(0, "pods_list_in_namespace", &args);
    assert_eq!(held["isError"], true, "{held}");
    let name = approval_of(&held);
    let text = held["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("kubectl") && text.contains(&name), "{text}");
    let object = stage.get(&name);
    assert_eq!(object["status"]["phase"], "Pending", "{object}");
    let bot = format!("system:serviceaccount:{ns}:bot");
    assert_eq!(object["spec"]["requester"], bot.as_str());
    assert_eq!(object["spec"]["pod"], "kms-0");
    assert!(
        eventually(PATIENCE, async || stage
            .events(&name)
            .contains(&"Requested".to_owned()))
        .await,
        "no Requested Event on {name}: {:?} {:?}",
        stage
            .cluster
            .kubectl(&["-n", &ns, "get", "events.events.k8s.io", "-o", "yaml"]),
        stage.sidecars[0]
            .proc
            .lines
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.contains("Event"))
            .collect::<Vec<_>>()
    );
    // The retry reuses it.
    let again = stage.call(0, "pods_list_in_namespace", &args);
    assert_eq!(approval_of(&again), name);
    assert_eq!(stage.names(), vec![name.clone()]);

    // Refused: eve by RBAC (no patch), dave by the webhook (no `approve`),
    // the requester itself by the webhook, ann outside the listed group.
    let eve = stage.decide(&name, "Approve", "eve", &[]).unwrap_err();
    assert!(eve.contains("forbidden"), "{eve}");
    let dave = stage
        .decide(&name, "Approve", "dave", &["vm-admins"])
        .unwrap_err();
    assert!(
        dave.contains("may not decide") && dave.contains("approve"),
        "{dave}"
    );
    let (ok, own) = stage.tollgate_decide("approve", &name, &bot, &["vm-admins"]);
    assert!(!ok && own.contains("asked for this call"), "{own}");
    let outside = stage.decide(&name, "Approve", "ann", &[]).unwrap_err();
    assert!(outside.contains("not among the approvers"), "{outside}");
    // Nobody writes a vote or a phase by hand.
    let forged = stage
        .cluster
        .kubectl(&[
            "-n", &ns, "patch", "mtca", &name, "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"phase":"Approved","approvals":[{"user":"ann","time":"2026-01-01T00:00:00Z"}]}}"#,
        ])
        .unwrap_err();
    assert!(
        forged.contains("only the webhook records votes"),
        "{forged}"
    );
    assert_eq!(stage.get(&name)["status"]["phase"], "Pending");

    // ann (vm-admins) approves with kubectl: recorded under her name.
    let approved = stage
        .decide(&name, "Approve", "ann", &["vm-admins"])
        .unwrap();
    assert_eq!(approved["status"]["phase"], "Approved", "{approved}");
    assert_eq!(approved["status"]["approvals"][0]["user"], "ann");
    assert!(approved["status"].get("decision").is_none(), "{approved}");

    // Other arguments never ride on it.
    let other = stage.call(
        0,
        "pods_list_in_namespace",
        &json!({"namespace": "default"}),
    );
    assert_eq!(other["isError"], true, "{other}");
    assert_ne!(approval_of(&other), name);

    // The same call passes, once; the object is Used.
    let passed = stage.call(0, "pods_list_in_namespace", &args);
    assert!(passed.get("isError").is_none_or(|e| e == false), "{passed}");
    assert!(
        passed["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("kms-0"),
        "{passed}"
    );
    assert_eq!(stage.get(&name)["status"]["phase"], "Used");
    assert!(
        eventually(PATIENCE, async || stage
            .events(&name)
            .contains(&"Used".to_owned()))
        .await,
        "no Used Event on {name}"
    );
    let next = stage.call(0, "pods_list_in_namespace", &args);
    assert_eq!(next["isError"], true, "{next}");
    let second = approval_of(&next);
    assert_ne!(second, name, "a new approval for the next identical call");
    assert!(second.ends_with("-2"), "{second}");

    // A final phase never changes; rejection is final too.
    let late = stage
        .decide(&name, "Reject", "carol", &["vm-admins"])
        .unwrap_err();
    assert!(late.contains("final"), "{late}");
    let (ok, out) = stage.tollgate_decide("reject", &second, "carol", &["vm-admins"]);
    assert!(ok, "{out}");
    assert_eq!(stage.get(&second)["status"]["phase"], "Rejected");
    assert_eq!(stage.get(&second)["status"]["rejection"]["user"], "carol");
    let rejected = stage.call(0, "pods_list_in_namespace", &args);
    assert_eq!(rejected["isError"], true);
    assert!(
        rejected["content"][0]["text"]
            .as_str()
            .unwrap()
            .contains("rejected"),
        "{rejected}"
    );
    let revived = stage
        .decide(&second, "Approve", "ann", &["vm-admins"])
        .unwrap_err();
    assert!(revived.contains("final"), "{revived}");

    let m = metrics(stage.sidecars[0].admin).await;
    let count = |outcome: &str| {
        sample(
            &m,
            &[
                "tollgate_approvals_total{",
                "rule=\"listing\"",
                &format!("outcome=\"{outcome}\""),
            ],
        )
    };
    assert_eq!(
        (
            count("requested"),
            count("approved"),
            count("used"),
            count("rejected")
        ),
        // Requested: the first call, the other-arguments call, the next one.
        (Some(3.0), Some(1.0), Some(1.0), Some(1.0)),
        "{m}"
    );
    let _ = stage.dir();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_identical_calls_from_two_sidecar_processes_make_one_object() {
    let stage = Stage::start(2);
    stage.synced().await;
    let args = json!({"namespace": stage.ns});
    let calls = (0..50).map(|i| {
        let stage = &stage;
        let args = args.clone();
        async move { stage.post(i % 2, "pods_list_in_namespace", &args).await }
    });
    let answers = futures_util::future::join_all(calls).await;
    let ids: std::collections::BTreeSet<String> = answers.iter().map(approval_of).collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(stage.names(), ids.into_iter().collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_distinct_people_release_a_held_call_and_expiry_is_final() {
    let stage = Stage::start(1);
    stage.synced().await;

    // events_list holds the call up to 2 minutes: it completes once two
    // different people approved while it waits.
    let url = format!("http://{}/mcp", stage.sidecars[0].listen);
    let auth = format!("Authorization: Bearer {}", stage.token);
    let ns = stage.ns.clone();
    let held = tokio::task::spawn_blocking(move || {
        agent(
            &url,
            &[
                "--header",
                &auth,
                "--timeout",
                "150000",
                "--progress",
                "call",
                "events_list",
                &json!({"namespace": ns}).to_string(),
            ],
        )
        .pop()
        .unwrap()
    });
    let mut name = String::new();
    assert!(
        eventually(PATIENCE, async || {
            name = stage.names().into_iter().next().unwrap_or_default();
            !name.is_empty()
        })
        .await
    );
    let one = stage.decide(&name, "Approve", "ann", &[]).unwrap();
    assert_eq!(
        (
            one["status"]["phase"].as_str(),
            one["status"]["summary"].as_str()
        ),
        (Some("Pending"), Some("1/2")),
        "one approval of two is not enough: {one}"
    );
    let twice = stage.decide(&name, "Approve", "ann", &[]).unwrap_err();
    assert!(twice.contains("distinct people"), "{twice}");
    let two = stage.decide(&name, "Approve", "carol", &[]).unwrap();
    assert_eq!(two["status"]["phase"], "Approved", "{two}");
    let result = held.await.unwrap();
    assert!(result.get("isError").is_none_or(|e| e == false), "{result}");
    // While held, the SDK received MCP progress notifications on the
    // call's stream, naming the approval.
    let progress = result["progressNotifications"].as_array().unwrap();
    assert!(!progress.is_empty(), "{result}");
    assert!(
        progress[0]["message"].as_str().unwrap().contains(&name),
        "{result}"
    );
    assert_eq!(stage.get(&name)["status"]["phase"], "Used");

    // pods_list's approval lasts 2 s: the sidecar marks it Expired, and
    // nobody can approve it after.
    let quick = stage.post(0, "pods_list", &json!({})).await;
    let expiring = approval_of(&quick);
    assert!(
        eventually(PATIENCE, async || stage.get(&expiring)["status"]["phase"]
            == "Expired")
        .await,
        "{}",
        stage.get(&expiring)
    );
    let late = stage.decide(&expiring, "Approve", "ann", &[]).unwrap_err();
    assert!(late.contains("final"), "{late}");
    let retried = stage.post(0, "pods_list", &json!({})).await;
    assert_ne!(
        approval_of(&retried),
        expiring,
        "a retry after expiry asks again"
    );
}

/// Two policies with notification webhooks of their own, their keys in
/// Secrets in the namespace.
const NOTIFYING: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: approvals}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: kubernetes-mcp-server}
  defaultAction: Allow
  rules:
    - name: listing
      tools: [pods_list_in_namespace]
      action: RequireApproval
      approval:
        timeout: 10m
        retention: 2s
        notify: {url: "http://RECEIVER_A/a", secretRef: {name: hook-a, key: hmac}}
"#;

const SECOND: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: second}
spec:
  selector:
    matchLabels: {app.kubernetes.io/name: kubernetes-mcp-server}
  defaultAction: Allow
  rules:
    - name: events
      tools: [events_list]
      action: RequireApproval
      approval:
        timeout: 10m
        notify: {url: "http://RECEIVER_B/b", secretRef: {name: hook-b, key: hmac}}
"#;

fn condition(policy: &Value, type_: &str) -> Value {
    policy["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == type_)
        .cloned()
        .unwrap_or(Value::Null)
}

/// Each policy's approvals are notified at its own URL, signed with the key
/// in its own Secret, which the controller reads and hands to the sidecar;
/// a missing Secret is said in the policy's status and nothing is sent
/// until it exists. Approval objects are owned by the sidecar's pod and
/// deleted once final for the rule's retention.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn each_policy_notifies_its_own_webhook_with_its_secret_and_final_approvals_are_deleted() {
    let (a, b) = (hooks::Receiver::default(), hooks::Receiver::default());
    let (at_a, at_b) = (a.start().await, b.start().await);
    let first = NOTIFYING.replace("RECEIVER_A", &at_a.to_string());
    let second = SECOND.replace("RECEIVER_B", &at_b.to_string());
    let stage = Stage::start_with(1, &[&first, &second]);
    let ns = stage.ns.clone();
    let (key_a, key_b) = ("key of policy approvals", "key of policy second");
    stage
        .cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "hook-a",
            &format!("--from-literal=hmac={key_a}"),
        ])
        .unwrap();
    stage.synced().await;

    // hook-b does not exist: said in the status of `second`, not refused.
    assert!(
        eventually(PATIENCE, async || {
            let p = stage.cluster.policy(&ns, "second");
            let c = condition(&p, "NotificationsReady");
            c["status"] == "False"
                && c["message"]
                    .as_str()
                    .unwrap_or("")
                    .contains(&format!("Secret {ns}/hook-b not found"))
                && condition(&p, "Accepted")["status"] == "True"
        })
        .await,
        "{}",
        stage.cluster.policy(&ns, "second")["status"]
    );
    assert!(
        eventually(PATIENCE, async || condition(
            &stage.cluster.policy(&ns, "approvals"),
            "NotificationsReady"
        )["status"]
            == "True")
        .await,
        "{}",
        stage.cluster.policy(&ns, "approvals")["status"]
    );

    // Policy `approvals`: its receiver, its key.
    let args = json!({"namespace": ns});
    let listing = approval_of(&stage.post(0, "pods_list_in_namespace", &args).await);
    // Policy `second`: no key yet, so nothing is sent.
    let events = approval_of(&stage.post(0, "events_list", &args).await);
    assert!(
        eventually(PATIENCE, async || a.of("requested").len() == 2).await,
        "refused once, then delivered: {:?}",
        a.all()
    );
    for (headers, body) in a.all() {
        assert!(hooks::signed_with(key_a.as_bytes(), &headers, &body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["approval"]["id"], listing.as_str());
    }

    // With its Secret, `second`'s approvals go to its own receiver.
    stage
        .cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "secret",
            "generic",
            "hook-b",
            &format!("--from-literal=hmac={key_b}"),
        ])
        .unwrap();
    assert!(
        eventually(PATIENCE, async || condition(
            &stage.cluster.policy(&ns, "second"),
            "NotificationsReady"
        )["status"]
            == "True")
        .await,
        "{}",
        stage.cluster.policy(&ns, "second")["status"]
    );
    // The sidecar got the key with the next snapshot; wait for it to enforce it.
    assert!(
        eventually(PATIENCE, async || {
            stage.cluster.policy(&ns, "second")["status"]["synced"] == "1/1"
        })
        .await
    );
    stage.decide(&events, "Reject", "ann", &[]).unwrap();
    // The sidecar notices the rejection when the call comes back.
    let rejected = stage.post(0, "events_list", &args).await;
    assert_eq!(approval_of(&rejected), events);
    assert!(
        eventually(PATIENCE, async || b.of("rejected").len() == 2).await,
        "{:?}",
        b.all()
    );
    assert!(
        b.of("requested").is_empty(),
        "nothing was sent without the key"
    );
    for (headers, body) in b.all() {
        assert!(hooks::signed_with(key_b.as_bytes(), &headers, &body));
        assert!(!hooks::signed_with(key_a.as_bytes(), &headers, &body));
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["approval"]["id"], events.as_str());
    }
    assert!(
        a.all()
            .iter()
            .all(|(_, body)| !String::from_utf8_lossy(body).contains(&events)),
        "policy approvals' receiver never hears of second's approvals"
    );

    // The keys appear in no status and no sidecar log line.
    for name in ["approvals", "second"] {
        let text = stage.cluster.policy(&ns, name).to_string();
        assert!(!text.contains(key_a) && !text.contains(key_b), "{text}");
    }
    let logs = stage.sidecars[0].proc.lines.lock().unwrap().join("\n");
    assert!(!logs.contains(key_a) && !logs.contains(key_b));

    // Owned by the pod: deleting the pod would take it (the garbage
    // collector runs in kube-controller-manager, which this test control
    // plane has not; only the reference is checked here).
    let object = stage.get(&listing);
    assert_eq!(
        object["metadata"]["ownerReferences"],
        json!([{"apiVersion": "v1", "kind": "Pod", "name": "kms-0", "uid": stage.pod_uid}]),
        "{object}"
    );
    assert_eq!(object["spec"]["retention"], "2s");

    // Approved, used, then deleted by the sidecar after 2 s of retention.
    stage.decide(&listing, "Approve", "ann", &[]).unwrap();
    let passed = stage.call(0, "pods_list_in_namespace", &args);
    assert!(passed.get("isError").is_none_or(|e| e == false), "{passed}");
    let used = stage.get(&listing);
    assert_eq!(used["status"]["phase"], "Used", "{used}");
    assert!(used["status"]["finishedAt"].is_string(), "{used}");
    assert!(
        eventually(PATIENCE, async || !stage.names().contains(&listing)).await,
        "a used approval past its retention is deleted: {:?}",
        stage.names()
    );
    // The rejected one is kept (a rejection stays at least 15 minutes).
    assert!(stage.names().contains(&events), "{:?}", stage.names());
}
