//! `tollgate explain POD` on a real apiserver: the policies of both kinds
//! that select a sidecar pod, in the sidecar's order, each one's rules in
//! judging order; none for a pod without a sidecar or one no policy
//! selects; exit codes 0/1/2, also as `kubectl tollgate explain`. And
//! `tollgate why`: the decision record a sidecar keeps for a denied call,
//! by request id, from its admin listener; through the apiserver's pod
//! proxy the sidecar must be reachable from the apiserver.

mod support;

use std::process::Command;

use serde_json::json;
use support::cluster::Cluster;
use support::upstream::{Framing, Upstream};
use support::{call, fresh_id, policy_file, post_json, start_proxy};

/// `tollgate ARGS --kubeconfig K`: (exit code, stdout, stderr).
fn tollgate(cluster: &Cluster, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .arg("--kubeconfig")
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    eprintln!("tollgate {args:?}:\n{stdout}{stderr}");
    (out.status.code().unwrap(), stdout, stderr)
}

fn position(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
}

#[test]
fn explain_lists_the_governing_policies_and_their_rules_in_judging_order() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("explain");
    cluster
        .kubectl(&["label", "namespace", &ns, "team=explained"])
        .unwrap();
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    cluster.sidecar_pod(&ns, "other-0", &[("app", "other")]);

    // Rules written allow-first: judged deny-first.
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: kms-rules, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: kms}}}}\n  defaultAction: Deny\n  rules:\n    - {{name: reads, tools: [\"*_list\"], action: Allow}}\n    - {{name: no-deletes, tools: [\"*_delete\"], action: Deny}}\n"
        ))
        .unwrap();
    // Selects only the other pod.
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: others-only, namespace: {ns}}}\nspec:\n  selector: {{matchLabels: {{app: other}}}}\n  defaultAction: Allow\n"
        ))
        .unwrap();
    // A cluster baseline for namespaces labelled team=explained, and one
    // for namespaces that do not exist.
    cluster
        .apply(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ClusterMcpToolPolicy\nmetadata: {name: explain-baseline}\nspec:\n  namespaceSelector: {matchLabels: {team: explained}}\n  defaultAction: Allow\n  mode: Audit\n  rules: [{name: no-secrets, tools: [secret_tool], action: Deny}]\n",
        )
        .unwrap();
    cluster
        .apply(
            "apiVersion: tollgate.dev/v1alpha1\nkind: ClusterMcpToolPolicy\nmetadata: {name: explain-elsewhere}\nspec:\n  namespaceSelector: {matchLabels: {team: nobody}}\n  defaultAction: Deny\n",
        )
        .unwrap();

    let (code, out, _) = tollgate(cluster, &["explain", "kms-0", "-n", &ns]);
    assert_eq!(code, 0);
    assert!(
        out.contains(&format!("pod {ns}/kms-0: 2 policies")),
        "{out}"
    );
    position(
        &out,
        "explain-baseline (generation 1, Audit, defaultAction Allow)",
    );
    let kms = position(
        &out,
        &format!("{ns}/kms-rules (generation 1, Enforce, defaultAction Deny)"),
    );
    assert!(
        !out.contains("others-only") && !out.contains("explain-elsewhere"),
        "{out}"
    );
    let deny = position(&out, "1. [step 1] Deny tool rule no-deletes");
    let allow = position(&out, "2. [step 4] Allow tool rule reads");
    assert!(
        kms < deny && deny < allow,
        "deny rules are judged first:\n{out}"
    );
    assert!(
        out.contains("1. [step 1] Deny tool rule no-secrets"),
        "{out}"
    );

    // A pod without a sidecar: exit 1.
    cluster
        .apply(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: bare, namespace: {ns}, labels: {{app: kms}}}}\nspec: {{serviceAccountName: mcp, containers: [{{name: mcp, image: example.invalid/mcp}}]}}\n"
        ))
        .unwrap();
    let (code, out, _) = tollgate(cluster, &["explain", "bare", "-n", &ns]);
    assert_eq!(code, 1);
    assert!(out.contains("runs no tollgate sidecar"), "{out}");

    // A sidecar pod no policy selects: exit 1.
    let lonely = cluster.namespace("explain-lonely");
    cluster.sidecar_pod(&lonely, "kms-0", &[("app", "kms")]);
    let (code, out, _) = tollgate(cluster, &["explain", "kms-0", "-n", &lonely]);
    assert_eq!(code, 1);
    assert!(out.contains("no accepted policy selects it"), "{out}");

    // No such pod: exit 2, and the same as the kubectl plugin.
    let (code, _, err) = tollgate(cluster, &["explain", "nope", "-n", &ns]);
    assert_eq!(code, 2);
    assert!(err.contains(&format!("pod {ns}/nope not found")), "{err}");
    let out = cluster.kubectl_tollgate(&["explain", "kms-0", "-n", &ns]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("Deny tool rule no-deletes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn why_shows_the_decision_record_of_a_denied_call() {
    let upstream = Upstream::start(Framing::Json).await;
    let (_dir, policy) = policy_file(
        "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {name: why, namespace: mcp}\nspec:\n  defaultAction: Allow\n  rules:\n    - {name: no-deletes, tools: [pods_delete], action: Deny, message: deleting pods is not allowed}\n",
    );
    let running = start_proxy(vec![policy], &upstream.url()).await;
    let admin = format!("http://{}", running.admin);
    let denied = fresh_id();
    let allowed = fresh_id();
    for (id, tool) in [(denied, "pods_delete"), (allowed, "pods_list")] {
        let resp = post_json(running.listen, &[], &call(id, tool, json!({}))).await;
        assert_eq!(resp.status, 200, "{}", resp.text());
    }
    let why = |args: Vec<String>| {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("why")
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code().unwrap(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, out, err) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || why(vec!["--admin".into(), admin, denied.to_string()])
    })
    .await
    .unwrap();
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains(&format!("request {denied}: pods_delete denied (rule)")),
        "{out}"
    );
    assert!(out.contains("policy:  mcp/why"), "{out}");
    assert!(out.contains("rule:    no-deletes"), "{out}");
    assert!(
        out.contains("message: Denied by tollgate policy")
            && out.contains("deleting pods is not allowed"),
        "{out}"
    );
    // --json: the record itself.
    let (code, out, _) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || {
            why(vec![
                "--json".into(),
                "--admin".into(),
                admin,
                denied.to_string(),
            ])
        }
    })
    .await
    .unwrap();
    assert_eq!(code, 0);
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(records[0]["rule"], "no-deletes");
    assert_eq!(records[0]["requestId"], denied.to_string());

    // An allowed call is not kept: exit 1, saying where to look.
    let (code, _, err) = tokio::task::spawn_blocking({
        let admin = admin.clone();
        move || why(vec!["--admin".into(), admin, allowed.to_string()])
    })
    .await
    .unwrap();
    assert_eq!(code, 1);
    assert!(err.contains("audit log"), "{err}");
    running.shutdown().await;

    // Nobody to ask: exit 2.
    let (code, _, err) =
        tokio::task::spawn_blocking(move || why(vec!["--admin".into(), admin, denied.to_string()]))
            .await
            .unwrap();
    assert_eq!(code, 2, "{err}");
}

#[test]
fn why_through_the_pod_proxy_names_what_the_apiserver_refused() {
    // The harness's pods never run (no kubelet), so the apiserver cannot
    // proxy to them; `why POD ID` must say so and exit 2, not hang or
    // report "no record".
    let cluster = Cluster::get();
    let ns = cluster.namespace("why");
    cluster.sidecar_pod(&ns, "kms-0", &[("app", "kms")]);
    let (code, _, err) = tollgate(cluster, &["why", "kms-0", "42", "-n", &ns]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("the apiserver refused to proxy to the pod's admin port"),
        "{err}"
    );
}
