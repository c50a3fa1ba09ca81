//! `tollgate doctor` on a real apiserver: each check fails on what breaks
//! an installation (no caBundle, no ready replica, no Lease holder, a pod
//! created without its sidecar, a refused policy), passes once it is put
//! right, and the exit code says which. Also run as the kubectl plugin
//! `kubectl tollgate doctor`.

mod support;

use std::process::Command;

use support::cluster::Cluster;

/// Runs `tollgate doctor` for the release in `ns`: (exit code, stdout).
fn doctor(cluster: &Cluster, ns: &str) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["doctor", "--namespace", ns, "--kubeconfig"])
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    eprintln!("doctor:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap(), stdout)
}

/// The line of the check `check` that mentions `needle`.
fn line<'a>(report: &'a str, check: &str, needle: &str) -> &'a str {
    report
        .lines()
        .find(|l| l.contains(&format!("] {check}: ")) && l.contains(needle))
        .unwrap_or_else(|| panic!("no {check} line with {needle:?} in:\n{report}"))
}

fn webhook_configuration(ns: &str, ca_bundle: &str) -> String {
    format!(
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata: {{name: tollgate}}
webhooks:
  - name: pods.inject.tollgate.dev
    admissionReviewVersions: [v1]
    sideEffects: None
    failurePolicy: Ignore
    clientConfig:
      service: {{name: tollgate-webhook, namespace: {ns}, path: /mutate/pod}}
      caBundle: "{ca_bundle}"
    rules: [{{operations: [CREATE], apiGroups: [""], apiVersions: [v1], resources: [pods]}}]
    objectSelector: {{matchLabels: {{tollgate.dev/inject: enabled}}}}
"#
    )
}

#[test]
fn doctor_finds_what_is_broken_and_passes_when_it_is_fixed() {
    let cluster = Cluster::get();
    let ns = cluster.namespace("doctor");

    // Nothing but the CRD: every other check fails.
    let (code, report) = doctor(cluster, &ns);
    assert_eq!(code, 1);
    assert!(line(&report, "crd", "established").starts_with("[ok  ]"));
    assert!(line(&report, "webhook", "missing").starts_with("[FAIL]"));
    assert!(line(&report, "controller", "missing").starts_with("[FAIL]"));
    assert!(line(&report, "lease", "no holder").starts_with("[FAIL]"));

    // A webhook configuration the controller has not patched yet.
    cluster.apply(&webhook_configuration(&ns, "")).unwrap();
    let (_, report) = doctor(cluster, &ns);
    assert!(line(&report, "webhook", "no caBundle").starts_with("[FAIL]"));
    // With a CA but no Service to call.
    cluster.apply(&webhook_configuration(&ns, "Y2E=")).unwrap();
    let (_, report) = doctor(cluster, &ns);
    assert!(line(&report, "webhook", "does not exist").starts_with("[FAIL]"));
    cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "service",
            "clusterip",
            "tollgate-webhook",
            "--tcp=443:9444",
        ])
        .unwrap();

    // A Deployment with no ready replica, then one.
    cluster
        .kubectl(&[
            "-n",
            &ns,
            "create",
            "deployment",
            "tollgate",
            "--image=tollgate:dev",
            "--replicas=1",
        ])
        .unwrap();
    let (_, report) = doctor(cluster, &ns);
    assert!(line(&report, "webhook", "calls Service").starts_with("[ok  ]"));
    assert!(line(&report, "controller", "0 of 1 replicas ready").starts_with("[FAIL]"));
    cluster
        .kubectl(&[
            "-n",
            &ns,
            "patch",
            "deployment",
            "tollgate",
            "--subresource=status",
            "--type=merge",
            "-p",
            r#"{"status":{"replicas":1,"readyReplicas":1}}"#,
        ])
        .unwrap();
    // A leader that renews.
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    let now = format!("{}.000000Z", &now[..19]);
    cluster
        .apply(&format!(
            "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata: {{name: tollgate-controller, namespace: {ns}}}\nspec: {{holderIdentity: tollgate-0, leaseDurationSeconds: 15, renewTime: \"{now}\"}}\n"
        ))
        .unwrap();

    // An injected namespace with a pod that has no sidecar (created while
    // the webhook was off), and one that opted out.
    let apps = cluster.namespace("doctor-apps");
    cluster
        .kubectl(&["label", "namespace", &apps, "tollgate.dev/inject=enabled"])
        .unwrap();
    // (No controller-manager here makes the default ServiceAccount.)
    cluster
        .kubectl(&["-n", &apps, "create", "serviceaccount", "default"])
        .unwrap();
    let pod = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {apps}, labels: {labels}}}\nspec: {{containers: [{{name: mcp, image: mcp:dev}}]}}\n"
        )
    };
    cluster.apply(&pod("bare", "{}")).unwrap();
    cluster
        .apply(&pod("out", "{tollgate.dev/inject: disabled}"))
        .unwrap();
    // A policy nobody has accepted (no controller runs here).
    cluster
        .apply(&format!(
            "apiVersion: tollgate.dev/v1alpha1\nkind: McpToolPolicy\nmetadata: {{name: p, namespace: {apps}}}\nspec: {{defaultAction: Deny}}\n"
        ))
        .unwrap();
    let (code, report) = doctor(cluster, &ns);
    assert_eq!(code, 1);
    assert!(line(&report, "controller", "1 of 1 replicas ready").starts_with("[ok  ]"));
    assert!(line(&report, "lease", "tollgate-0 leads").starts_with("[ok  ]"));
    let injection = line(&report, "injection", "without a sidecar");
    assert!(injection.starts_with("[FAIL]"));
    assert!(injection.contains(&format!("{apps}/bare")), "{injection}");
    assert!(!injection.contains(&format!("{apps}/out")), "{injection}");
    assert!(line(&report, "policy", "no status yet").starts_with("[WARN]"));
    // The webhook dialled: a dry-run pod in the injected namespace comes
    // back without its sidecar (the Service has no endpoint to call, and
    // failurePolicy Ignore lets the pod through).
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "doctor",
            "--namespace",
            &ns,
            "--probe-namespace",
            &apps,
            "--kubeconfig",
        ])
        .arg(&cluster.kubeconfig)
        .output()
        .unwrap();
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(line(&report, "admission", "got no sidecar").starts_with("[FAIL]"));

    // A refused policy fails.
    cluster
        .kubectl(&[
            "-n", &apps, "patch", "mtp", "p", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"conditions":[{"type":"Accepted","status":"False","reason":"Invalid","message":"spec.rules[0].name: empty","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
        ])
        .unwrap();
    let (_, report) = doctor(cluster, &ns);
    assert!(line(&report, "policy", "is refused: spec.rules[0].name: empty").starts_with("[FAIL]"));

    // Everything put right: exit 0, as the kubectl plugin too.
    cluster
        .kubectl(&[
            "-n",
            &apps,
            "delete",
            "pod",
            "bare",
            "--wait=false",
            "--grace-period=0",
            "--force",
        ])
        .unwrap();
    cluster
        .kubectl(&[
            "-n", &apps, "patch", "mtp", "p", "--subresource=status", "--type=merge", "-p",
            r#"{"status":{"conditions":[{"type":"Accepted","status":"True","reason":"Accepted","message":"0 rules compiled","lastTransitionTime":"2026-01-01T00:00:00Z"},{"type":"Programmed","status":"False","reason":"NoSidecars","message":"no pod","lastTransitionTime":"2026-01-01T00:00:00Z"}]}}"#,
        ])
        .unwrap();
    let out = cluster.kubectl_tollgate(&["doctor", "--namespace", &ns]);
    let report = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!report.contains("[FAIL]"), "{report}");
    assert!(line(&report, "injection", "all with a sidecar").starts_with("[ok  ]"));
    assert!(line(&report, "policy", "accepted").starts_with("[ok  ]"));
}

#[test]
fn doctor_without_an_apiserver_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters: [{{name: c, cluster: {{server: 'https://127.0.0.1:{}'}}}}]\nusers: [{{name: u, user: {{token: t}}}}]\ncontexts: [{{name: x, context: {{cluster: c, user: u}}}}]\ncurrent-context: x\n",
            support::free_port()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["doctor", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("asking the apiserver"));
}
