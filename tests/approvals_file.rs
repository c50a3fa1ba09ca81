//! `RequireApproval` in file mode, on the wire: calls held for a person,
//! decided with `tollgate approve|reject --admin`, let through once.

mod support;

use std::net::SocketAddr;

use serde_json::{Value, json};
use support::upstream::{Framing, Upstream};
use support::*;

const POLICY: &str = r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: approvals}
spec:
  defaultAction: Deny
  rules:
    - name: reads
      tools: [pods_list]
      action: Allow
    - name: clones
      tools: [vm_clone]
      action: RequireApproval
      approval: {timeout: 10m}
    - name: deletes
      tools: [pods_delete]
      action: RequireApproval
      approval: {minApprovals: 2, approvers: {groups: [ops]}}
    - name: held
      tools: [secret_tool]
      action: RequireApproval
      approval: {holdFor: 2m, timeout: 5m}
"#;

async fn setup() -> (Upstream, tollgate_sidecar::Running, tempfile::TempDir) {
    let up = Upstream::start(Framing::Json).await;
    let (dir, path) = policy_file(POLICY);
    let proxy = start_proxy(vec![path], &up.url()).await;
    (up, proxy, dir)
}

async fn ask(proxy: &tollgate_sidecar::Running, tool: &str, args: Value) -> Value {
    let resp = post_json(proxy.listen, &[], &call(fresh_id(), tool, args)).await;
    assert_eq!(resp.status, 200, "{}", resp.text());
    resp.json()
}

/// The approval facts of a held call's answer.
fn approval(answer: &Value) -> &Value {
    &answer["result"]["_meta"]["dev.tollgate/approval"]
}

fn approval_id(answer: &Value) -> String {
    approval(answer)["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no approval in {answer}"))
        .to_owned()
}

/// Runs the tollgate CLI; its exit status and what it printed.
async fn cli(args: &[&str]) -> (bool, String, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .env_remove("USER")
        .output()
        .await
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn decide(
    admin: SocketAddr,
    verdict: &str,
    id: &str,
    by: &str,
    extra: &[&str],
) -> (bool, String, String) {
    let url = format!("http://{admin}");
    let mut args = vec![verdict, "--admin", &url, "--as", by, id];
    args.extend_from_slice(extra);
    cli(&args).await
}

async fn admin_get(admin: SocketAddr, path: &str) -> Value {
    let req = format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n");
    raw(admin, req.as_bytes()).await.json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approved_call_passes_once_and_only_with_its_own_arguments() {
    let (up, proxy, _dir) = setup().await;
    let a = json!({"namespace": "vms", "name": "web", "targetName": "web-copy"});
    let b = json!({"namespace": "vms", "name": "db", "targetName": "db-copy"});

    let first = ask(&proxy, "vm_clone", a.clone()).await;
    assert_eq!(first["result"]["isError"], true, "{first}");
    let text = first["result"]["content"][0]["text"].as_str().unwrap();
    let id = approval_id(&first);
    assert!(
        text.contains("Approval required") && text.contains(&id),
        "{text}"
    );
    assert!(text.contains("retry exactly the same call"), "{text}");
    assert_eq!(approval(&first)["phase"], "Pending");
    assert_eq!(
        first["result"]["_meta"]["dev.tollgate/denial"]["reason"],
        "approval"
    );
    // A retry before any decision reuses the approval.
    let again = ask(&proxy, "vm_clone", a.clone()).await;
    assert_eq!(approval_id(&again), id);
    let other = ask(&proxy, "vm_clone", b.clone()).await;
    let other_id = approval_id(&other);
    assert_ne!(other_id, id);
    assert!(up.calls().is_empty(), "nothing runs before approval");

    let listed = admin_get(proxy.admin, "/approvals").await;
    assert_eq!(listed["approvals"].as_array().unwrap().len(), 2, "{listed}");

    let (ok, out, err) = decide(proxy.admin, "approve", &id, "ann", &["--reason", "fine"]).await;
    assert!(ok, "{out}{err}");
    let decided: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(decided["phase"], "Approved");
    assert_eq!(decided["approvals"][0]["by"], "ann");

    // The other call does not ride on it.
    let still = ask(&proxy, "vm_clone", b).await;
    assert_eq!(approval_id(&still), other_id);
    assert!(up.calls().is_empty());

    // The approved call runs, once.
    let passed = ask(&proxy, "vm_clone", a.clone()).await;
    assert_eq!(
        passed["result"]["content"][0]["text"], "called \"vm_clone\"",
        "{passed}"
    );
    assert_eq!(up.calls(), vec!["vm_clone"]);
    let twice = ask(&proxy, "vm_clone", a).await;
    let next_id = approval_id(&twice);
    assert_ne!(
        next_id, id,
        "a used approval never lets a second call through"
    );
    assert_eq!(up.calls(), vec!["vm_clone"]);
    assert_eq!(
        admin_get(proxy.admin, &format!("/approvals/{id}")).await["phase"],
        "Used"
    );
    // A used approval is final.
    let (ok, _, err) = decide(proxy.admin, "approve", &id, "bob", &[]).await;
    assert!(!ok && err.contains("final"), "{err}");

    let m = metrics(proxy.admin).await;
    let count = |outcome: &str| {
        sample(
            &m,
            &[
                "tollgate_approvals_total{",
                &format!("outcome=\"{outcome}\""),
                "rule=\"clones\"",
            ],
        )
    };
    assert_eq!(count("requested"), Some(3.0), "{m}");
    assert_eq!(count("approved"), Some(1.0));
    assert_eq!(count("used"), Some(1.0));
    assert_eq!(
        sample(&m, &["tollgate_approvals_pending"]),
        Some(2.0),
        "{m}"
    );
    assert_eq!(
        sample(
            &m,
            &[
                "tollgate_tool_calls_total{",
                "decision=\"approval_required\"",
                "tool=\"vm_clone\""
            ]
        ),
        Some(5.0)
    );
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_approvals_need_two_listed_people_and_a_rejection_is_final() {
    let (up, proxy, _dir) = setup().await;
    let args = json!({"namespace": "vms", "name": "web-1"});
    let id = approval_id(&ask(&proxy, "pods_delete", args.clone()).await);

    let (ok, _, err) = decide(proxy.admin, "approve", &id, "eve", &[]).await;
    assert!(!ok && err.contains("not among the approvers"), "{err}");
    let (ok, out, err) = decide(proxy.admin, "approve", &id, "ann", &["--group", "ops"]).await;
    assert!(ok, "{out}{err}");
    let one = ask(&proxy, "pods_delete", args.clone()).await;
    assert_eq!(
        approval(&one)["phase"],
        "Pending",
        "one of two is not enough"
    );
    assert_eq!(approval(&one)["approvals"], 1);
    let (ok, _, err) = decide(proxy.admin, "approve", &id, "ann", &["--group", "ops"]).await;
    assert!(!ok && err.contains("distinct people"), "{err}");
    assert!(up.calls().is_empty());
    let (ok, out, err) = decide(proxy.admin, "approve", &id, "bob", &["--group", "ops"]).await;
    assert!(ok, "{out}{err}");
    let passed = ask(&proxy, "pods_delete", args).await;
    assert_eq!(passed["result"]["isError"], Value::Null, "{passed}");
    assert_eq!(up.calls(), vec!["pods_delete"]);

    // Rejected: the agent is told so, and nobody can approve it after.
    let other = json!({"namespace": "vms", "name": "web-2"});
    let id = approval_id(&ask(&proxy, "pods_delete", other.clone()).await);
    let (ok, out, err) = decide(
        proxy.admin,
        "reject",
        &id,
        "ann",
        &["--reason", "not today"],
    )
    .await;
    assert!(ok, "{out}{err}");
    let refused = ask(&proxy, "pods_delete", other).await;
    let text = refused["result"]["content"][0]["text"].as_str().unwrap();
    assert!(
        text.contains("rejected") && text.contains("not today"),
        "{text}"
    );
    assert_eq!(approval(&refused)["phase"], "Rejected");
    let (ok, _, err) = decide(proxy.admin, "approve", &id, "bob", &["--group", "ops"]).await;
    assert!(!ok && err.contains("final"), "{err}");
    assert_eq!(up.calls(), vec!["pods_delete"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_call_completes_when_approved_while_held() {
    let (up, proxy, _dir) = setup().await;
    let listen = proxy.listen;
    let held = tokio::spawn(async move {
        post_json(
            listen,
            &[],
            &call(fresh_id(), "secret_tool", json!({"k": 1})),
        )
        .await
    });
    // Wait (bounded) for the held call's approval to appear, then approve it.
    let mut id = None;
    for _ in 0..200 {
        let listed = admin_get(proxy.admin, "/approvals").await;
        if let Some(a) = listed["approvals"].as_array().and_then(|a| a.first()) {
            id = a["id"].as_str().map(str::to_owned);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let id = id.expect("the held call asked for an approval");
    assert!(!held.is_finished(), "the call is held, not answered");
    let (ok, out, err) = decide(proxy.admin, "approve", &id, "ann", &[]).await;
    assert!(ok, "{out}{err}");
    let resp = held.await.unwrap();
    assert_eq!(
        resp.json()["result"]["content"][0]["text"],
        "called \"secret_tool\"",
        "{}",
        resp.text()
    );
    assert_eq!(up.calls(), vec!["secret_tool"]);
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_identical_calls_ask_for_one_approval() {
    let (up, proxy, _dir) = setup().await;
    let listen = proxy.listen;
    let calls: Vec<_> = (0..50)
        .map(|_| {
            tokio::spawn(async move {
                post_json(
                    listen,
                    &[],
                    &call(
                        fresh_id(),
                        "vm_clone",
                        json!({"namespace": "vms", "name": "x"}),
                    ),
                )
                .await
                .json()
            })
        })
        .collect();
    let mut ids = std::collections::BTreeSet::new();
    for c in calls {
        ids.insert(approval_id(&c.await.unwrap()));
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    let listed = admin_get(proxy.admin, "/approvals").await;
    assert_eq!(listed["approvals"].as_array().unwrap().len(), 1);
    assert!(up.calls().is_empty());
    proxy.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_routes_refuse_what_they_cannot_do() {
    let (_up, proxy, _dir) = setup().await;
    let (ok, _, err) = decide(proxy.admin, "approve", "nope-1", "ann", &[]).await;
    assert!(
        !ok && err.contains("404") && err.contains("no approval"),
        "{err}"
    );
    let body = b"{\"who\": \"ann\"}";
    let req = format!(
        "POST /approvals/x/approve HTTP/1.1\r\nHost: t\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let mut bytes = req.into_bytes();
    bytes.extend_from_slice(body);
    let resp = raw(proxy.admin, &bytes).await;
    assert_eq!(resp.status, 400, "{}", resp.text());
    let error = resp.json()["error"].as_str().unwrap_or("").to_owned();
    assert!(error.contains("unknown field `who`"), "{error}");
    proxy.shutdown().await;
}

async fn metrics(admin: SocketAddr) -> String {
    let req = b"GET /metrics HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    raw(admin, req).await.text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_are_notified_with_signed_retried_webhooks() {
    let receiver = hooks::Receiver::default();
    let at = receiver.start().await;
    let up = Upstream::start(Framing::Json).await;
    let (_dir, path) = policy_file(POLICY);
    let key = b"a key only tollgate and the receiver know".to_vec();
    let secret = key.clone();
    let proxy = start_proxy_with(vec![path], &up.url(), move |c| {
        c.approval_webhook = Some(tollgate_sidecar::NotifyConfig {
            url: format!("http://{at}/hook").parse().unwrap(),
            secret,
        });
    })
    .await;
    let id = approval_id(&ask(&proxy, "vm_clone", json!({"name": "web"})).await);
    let (ok, out, err) = decide(proxy.admin, "approve", &id, "ann", &[]).await;
    assert!(ok, "{out}{err}");

    // Each event is refused once by the receiver and delivered on a retry
    // (backoff 0.5 s); wait for both, bounded.
    let delivered = |m: &str| {
        sample(
            m,
            &[
                "tollgate_approval_notifications_total{",
                "result=\"delivered\"",
            ],
        )
    };
    for _ in 0..200 {
        if delivered(&metrics(proxy.admin).await) == Some(2.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    for event in ["requested", "approved"] {
        let got = receiver.of(event);
        assert_eq!(got.len(), 2, "{event}: refused once, then delivered");
        for (headers, body) in &got {
            assert!(hooks::signed_with(&key, headers, body), "{headers:?}");
            let v: Value = serde_json::from_slice(body).unwrap();
            assert_eq!(
                (v["event"].as_str(), v["approval"]["id"].as_str()),
                (Some(event), Some(id.as_str()))
            );
        }
    }
    let m = metrics(proxy.admin).await;
    assert_eq!(delivered(&m), Some(2.0), "{m}");
    proxy.shutdown().await;
}

/// Two policies, each rule with its own webhook and key file: each rule's
/// events reach only its own receiver, signed with its own key; a rule
/// without one uses the sidecar's `--approval-webhook`; a rule whose key
/// file is unreadable sends nothing anywhere (counted `no_key`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_policys_webhook_gets_its_own_signed_notifications() {
    let (a, b, fallback) = (
        hooks::Receiver::default(),
        hooks::Receiver::default(),
        hooks::Receiver::default(),
    );
    let (at_a, at_b, at_fallback) = (a.start().await, b.start().await, fallback.start().await);
    let dir = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (b"policy a's key".to_vec(), b"policy b's key".to_vec());
    std::fs::write(dir.path().join("a.key"), [&key_a[..], b"\n"].concat()).unwrap();
    std::fs::write(dir.path().join("b.key"), &key_b).unwrap();
    let write = |name: &str, text: String| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    };
    let a_path = write(
        "a.yaml",
        format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: hooks-a}}
spec:
  defaultAction: Allow
  rules:
    - name: clones
      tools: [vm_clone]
      action: RequireApproval
      approval: {{notify: {{url: "http://{at_a}/a", secretFile: "{dir}/a.key"}}}}
    - name: plain
      tools: [pods_create]
      action: RequireApproval
    - name: lost
      tools: [pods_exec]
      action: RequireApproval
      approval: {{notify: {{url: "http://{at_a}/a", secretFile: "{dir}/missing.key"}}}}
"#,
            dir = dir.path().display()
        ),
    );
    let b_path = write(
        "b.yaml",
        format!(
            r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {{name: hooks-b}}
spec:
  defaultAction: Allow
  rules:
    - name: deletes
      tools: [pods_delete]
      action: RequireApproval
      approval: {{notify: {{url: "http://{at_b}/b", secretFile: "{dir}/b.key"}}}}
"#,
            dir = dir.path().display()
        ),
    );
    let fallback_key = b"the sidecar's own key".to_vec();
    let secret = fallback_key.clone();
    let up = Upstream::start(Framing::Json).await;
    let proxy = start_proxy_with(vec![a_path, b_path], &up.url(), move |c| {
        c.approval_webhook = Some(tollgate_sidecar::NotifyConfig {
            url: format!("http://{at_fallback}/fallback").parse().unwrap(),
            secret,
        });
    })
    .await;
    let clone = approval_id(&ask(&proxy, "vm_clone", json!({"name": "web"})).await);
    let delete = approval_id(&ask(&proxy, "pods_delete", json!({"name": "db"})).await);
    let plain = approval_id(&ask(&proxy, "pods_create", json!({"name": "x"})).await);
    let lost = approval_id(&ask(&proxy, "pods_exec", json!({"name": "y"})).await);

    // Three `requested` events, each refused once then delivered; one not
    // sent for want of a key.
    let count = |m: &str, result: &str| {
        sample(
            m,
            &[
                "tollgate_approval_notifications_total{",
                &format!("result=\"{result}\""),
            ],
        )
    };
    for _ in 0..200 {
        let m = metrics(proxy.admin).await;
        if count(&m, "delivered") == Some(3.0) && count(&m, "no_key") == Some(1.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let m = metrics(proxy.admin).await;
    assert_eq!(
        (count(&m, "delivered"), count(&m, "no_key")),
        (Some(3.0), Some(1.0)),
        "{m}"
    );
    let ids = |r: &hooks::Receiver| -> Vec<(String, String)> {
        r.all()
            .iter()
            .map(|(h, body)| {
                let v: Value = serde_json::from_slice(body).unwrap();
                (
                    h["x-tollgate-event"].to_str().unwrap().to_owned(),
                    v["approval"]["id"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    };
    let requested = |id: &str| vec![("requested".to_owned(), id.to_owned()); 2];
    assert_eq!(
        ids(&a),
        requested(&clone),
        "policy a's receiver: its clone rule only"
    );
    assert_eq!(
        ids(&b),
        requested(&delete),
        "policy b's receiver: its rule only"
    );
    assert_eq!(
        ids(&fallback),
        requested(&plain),
        "the sidecar's webhook: the rule without its own, never the one without a key ({lost})"
    );
    for (receiver, key, other) in [(&a, &key_a, &key_b), (&b, &key_b, &key_a)] {
        for (headers, body) in receiver.all() {
            assert!(
                hooks::signed_with(key, &headers, &body),
                "signed with its policy's key"
            );
            assert!(!hooks::signed_with(other, &headers, &body));
            assert!(!hooks::signed_with(&fallback_key, &headers, &body));
        }
    }
    for (headers, body) in fallback.all() {
        assert!(hooks::signed_with(&fallback_key, &headers, &body));
    }
    // The key is in no answer and no record the admin listener shows.
    let listed = admin_get(proxy.admin, "/approvals").await.to_string();
    assert!(
        !listed.contains("policy a's key") && !listed.contains("a.key"),
        "{listed}"
    );
    proxy.shutdown().await;
}

/// A policy file naming a Kubernetes Secret for its notification key is
/// refused when the sidecar loads it: only the controller reads Secrets.
#[tokio::test]
async fn a_policy_file_naming_a_secret_for_its_key_is_refused_at_load() {
    let (_dir, path) = policy_file(
        r#"
apiVersion: tollgate.dev/v1alpha1
kind: McpToolPolicy
metadata: {name: refs}
spec:
  defaultAction: Deny
  rules:
    - name: clones
      tools: [vm_clone]
      action: RequireApproval
      approval: {notify: {url: "https://hooks.example/a", secretRef: {name: hook, key: hmac}}}
"#,
    );
    let config = tollgate_sidecar::ProxyConfig::new(
        tollgate_sidecar::RuleSource::Files(vec![path]),
        "http://127.0.0.1:9".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    );
    let err = tollgate_sidecar::start(config, Default::default())
        .await
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("approval.notify.secretRef") && err.contains("secretFile"),
        "{err}"
    );
}
