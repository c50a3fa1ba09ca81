//! The install guide's RBAC tables say exactly what the chart grants.
//!
//! docs/install.md lists every rule of the controller's ClusterRole and Role
//! with the reason for it; a rule added to (or dropped from) the chart
//! without the table is a permission nobody reviewed, so this test compares
//! the tables with manifests/install.yaml (the chart rendered with its
//! default values; tests/generated.rs keeps that file equal to the chart).

use std::collections::BTreeSet;

use serde_json::Value;

/// One RBAC rule, reduced to what a reader of the table checks.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Rule {
    group: String,
    resource: String,
    verbs: BTreeSet<String>,
    names: BTreeSet<String>,
}

fn root() -> &'static str {
    env!("CARGO_MANIFEST_DIR")
}

/// Every (group, resource) pair of the rendered `kind`'s rules, one
/// [`Rule`] per pair.
fn rendered(kind: &str, name: &str) -> BTreeSet<Rule> {
    let text = std::fs::read_to_string(format!("{}/manifests/install.yaml", root())).unwrap();
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text).unwrap();
    let objects: Vec<&Value> = docs
        .iter()
        .filter(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .collect();
    assert_eq!(
        objects.len(),
        1,
        "exactly one {kind} {name} in the manifest"
    );
    let strings = |v: &Value| -> BTreeSet<String> {
        v.as_array()
            .into_iter()
            .flatten()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut rules = BTreeSet::new();
    for rule in objects[0]["rules"].as_array().unwrap() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                rules.insert(Rule {
                    group: group.clone(),
                    resource,
                    verbs: strings(&rule["verbs"]),
                    names: strings(&rule["resourceNames"]),
                });
            }
        }
    }
    rules
}

/// The rules of the table that follows the line starting with `heading`.
fn documented(doc: &str, heading: &str) -> BTreeSet<Rule> {
    let unquote = |s: &str| s.trim().trim_matches('`').to_owned();
    let start = doc
        .lines()
        .position(|l| l.starts_with(heading))
        .unwrap_or_else(|| panic!("docs/install.md has no line starting with {heading:?}"));
    let rows = doc
        .lines()
        .skip(start + 1)
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // header and separator
    let mut rules = BTreeSet::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
        assert!(cells.len() >= 4, "a short RBAC table row: {row}");
        let group = match unquote(cells[0]).as_str() {
            "core" => String::new(),
            g => g.to_owned(),
        };
        let names = match cells[3].split_once("resourceNames: [") {
            Some((_, rest)) => rest
                .split(']')
                .next()
                .unwrap()
                .split(',')
                .map(unquote)
                .collect(),
            None => BTreeSet::new(),
        };
        // A cell may list several resources with the same verbs.
        for resource in cells[1].split(',').map(unquote) {
            let fresh = rules.insert(Rule {
                group: group.clone(),
                resource,
                verbs: cells[2].split(',').map(unquote).collect(),
                names: names.clone(),
            });
            assert!(fresh, "a repeated row: {row}");
        }
    }
    assert!(!rules.is_empty(), "no table after {heading:?}");
    rules
}

fn compare(kind: &str, name: &str, heading: &str) {
    let doc = std::fs::read_to_string(format!("{}/docs/install.md", root())).unwrap();
    let documented = documented(&doc, heading);
    let rendered = rendered(kind, name);
    let undocumented: Vec<_> = rendered.difference(&documented).collect();
    let not_granted: Vec<_> = documented.difference(&rendered).collect();
    assert!(
        undocumented.is_empty() && not_granted.is_empty(),
        "docs/install.md's {kind} table differs from the chart:\n  granted but not in the table: {undocumented:#?}\n  in the table but not granted: {not_granted:#?}"
    );
}

#[test]
fn the_install_guide_lists_exactly_the_cluster_role_rules() {
    compare("ClusterRole", "tollgate", "ClusterRole `tollgate`:");
}

#[test]
fn the_install_guide_lists_exactly_the_approval_roles() {
    compare(
        "ClusterRole",
        "tollgate-sidecar-approvals",
        "ClusterRole `tollgate-sidecar-approvals`",
    );
    compare(
        "ClusterRole",
        "tollgate-approver",
        "ClusterRole `tollgate-approver`",
    );
}

#[test]
fn the_install_guide_lists_exactly_the_role_rules() {
    compare(
        "Role",
        "tollgate",
        "Role `tollgate` in the release namespace:",
    );
}

/// `helm template` of the chart with `--set` values, by the pinned helm
/// (scripts/cluster/build.sh, as scripts/render-manifests.sh uses).
fn helm_template(set: &[&str]) -> Vec<Value> {
    let bin = std::process::Command::new(format!("{}/scripts/cluster/build.sh", root()))
        .output()
        .unwrap();
    assert!(
        bin.status.success(),
        "{}",
        String::from_utf8_lossy(&bin.stderr)
    );
    let helm = format!("{}/helm", String::from_utf8_lossy(&bin.stdout).trim());
    let mut cmd = std::process::Command::new(helm);
    cmd.args([
        "template",
        "tollgate",
        &format!("{}/charts/tollgate", root()),
    ]);
    cmd.args(["--namespace", "tollgate-system"]);
    for s in set {
        cmd.args(["--set", s]);
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_saphyr::from_multiple(&String::from_utf8(out.stdout).unwrap()).unwrap()
}

/// Every shipped alert links its own section of docs/runbooks.md, and every
/// section there is for an alert that exists.
#[test]
fn every_alert_has_a_runbook_section_and_every_section_an_alert() {
    let docs = helm_template(&["metrics.prometheusRule.enabled=true"]);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let runbooks = std::fs::read_to_string(format!("{}/docs/runbooks.md", root())).unwrap();
    // GitHub's anchor of a heading made of one word: the word in lower case.
    let sections: BTreeSet<String> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(|h| h.trim().to_lowercase())
        .collect();
    let mut alerts = BTreeSet::new();
    for group in rule["spec"]["groups"].as_array().unwrap() {
        for r in group["rules"].as_array().unwrap() {
            let alert = r["alert"].as_str().unwrap();
            let url = r["annotations"]["runbook_url"]
                .as_str()
                .unwrap_or_else(|| panic!("{alert} has no runbook_url"));
            assert_eq!(
                url,
                format!("docs/runbooks.md#{}", alert.to_lowercase()),
                "{alert}'s runbook_url"
            );
            alerts.insert(alert.to_lowercase());
        }
    }
    assert_eq!(alerts, sections, "alerts vs docs/runbooks.md sections");

    // The base is a value: a fork points it at its own copy.
    let docs = helm_template(&[
        "metrics.prometheusRule.enabled=true",
        "metrics.prometheusRule.runbookUrl=https://wiki.example/tollgate",
    ]);
    let rule = docs.iter().find(|d| d["kind"] == "PrometheusRule").unwrap();
    assert_eq!(
        rule["spec"]["groups"][0]["rules"][0]["annotations"]["runbook_url"],
        format!(
            "https://wiki.example/tollgate#{}",
            rule["spec"]["groups"][0]["rules"][0]["alert"]
                .as_str()
                .unwrap()
                .to_lowercase()
        )
    );
}

/// The chart ships the repository's dashboard, unchanged, as a ConfigMap
/// labelled for Grafana's sidecar, and only when asked.
#[test]
fn the_chart_ships_the_dashboard_only_when_asked() {
    let is_dashboard =
        |d: &&Value| d["kind"] == "ConfigMap" && d["data"]["tollgate.json"].is_string();
    assert!(!helm_template(&[]).iter().any(|d| is_dashboard(&d)));
    let docs = helm_template(&["grafana.dashboard.enabled=true"]);
    let cm = docs
        .iter()
        .find(is_dashboard)
        .expect("a dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(cm["metadata"]["namespace"], "tollgate-system");
    let file = std::fs::read_to_string(format!(
        "{}/charts/tollgate/dashboards/tollgate.json",
        root()
    ))
    .unwrap();
    let shipped: Value =
        serde_json::from_str(cm["data"]["tollgate.json"].as_str().unwrap()).unwrap();
    assert_eq!(shipped, serde_json::from_str::<Value>(&file).unwrap());
}

/// `helm test`: one hook Pod running the controller's own image as
/// `tollgate probe` against the release's metrics Service (/readyz) and
/// webhook endpoint, trusting only the webhook Secret's `ca.crt`; the
/// Services cannot select it; the plain manifest leaves it out.
#[test]
fn the_helm_test_pod_probes_the_controller_and_the_webhook_with_the_tollgate_image() {
    let is_test =
        |d: &&Value| d["kind"] == "Pod" && d["metadata"]["annotations"]["helm.sh/hook"] == "test";
    let docs = helm_template(&["networkPolicy.enabled=true"]);
    let pod = docs.iter().find(is_test).expect("a helm test Pod");
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "tollgate")
        .unwrap();
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"], deployment["spec"]["template"]["spec"]["containers"][0]["image"],
        "the test runs the controller's own image"
    );
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "probe",
            "--ready=http://tollgate.tollgate-system.svc:9902/readyz",
            "--tls=https://tollgate-webhook.tollgate-system.svc:443/mutate/pod",
            "--ca-file=/etc/tollgate/webhook-ca/ca.crt",
        ]
    );
    let volume = &pod["spec"]["volumes"][0]["secret"];
    assert_eq!(volume["secretName"], "tollgate-webhook-tls");
    assert_eq!(
        volume["items"],
        serde_json::json!([{"key": "ca.crt", "path": "ca.crt"}]),
        "only the CA, never the webhook's private key"
    );
    // No Service selects the test pod.
    let labels = &pod["metadata"]["labels"];
    for svc in docs.iter().filter(|d| d["kind"] == "Service") {
        let selector = svc["spec"]["selector"].as_object().unwrap();
        assert!(
            !selector.iter().all(|(k, v)| &labels[k] == v),
            "Service {} would select the test pod",
            svc["metadata"]["name"]
        );
    }
    // The NetworkPolicy admits it to the admin port.
    let netpol = docs
        .iter()
        .find(|d| d["kind"] == "NetworkPolicy" && d["metadata"]["name"] == "tollgate")
        .unwrap();
    let admin = netpol["spec"]["ingress"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["ports"][0]["port"] == 9902)
        .unwrap();
    assert!(
        admin["from"].as_array().unwrap().iter().any(|f| {
            f["podSelector"]["matchLabels"]
                .as_object()
                .is_some_and(|m| m.iter().all(|(k, v)| &labels[k] == v))
        }),
        "{admin:#}"
    );
    // With webhook.url, the probe dials that URL.
    let docs = helm_template(&["webhook.url=https://127.0.0.1:9444/"]);
    let pod = docs.iter().find(is_test).unwrap();
    assert_eq!(
        pod["spec"]["containers"][0]["args"][2],
        "--tls=https://127.0.0.1:9444/mutate/pod"
    );
    // The plain manifest (`helm template --skip-tests`) has no test pod.
    let plain = std::fs::read_to_string(format!("{}/manifests/install.yaml", root())).unwrap();
    assert!(
        !plain.contains("helm.sh/hook: test"),
        "manifests/install.yaml"
    );
}

/// `sidecar.env` reaches every injected sidecar through the controller's
/// `--sidecar-env` (how traces are turned on in sidecars).
#[test]
fn sidecar_env_becomes_the_controllers_sidecar_env_flags() {
    let docs = helm_template(&[
        "sidecar.env.OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318",
        "sidecar.env.OTEL_SERVICE_NAME=mcp",
    ]);
    let deployment = docs
        .iter()
        .find(|d| d["kind"] == "Deployment" && d["metadata"]["name"] == "tollgate")
        .unwrap();
    let args = deployment["spec"]["template"]["spec"]["containers"][0]["args"].to_string();
    assert!(
        args.contains("\"--sidecar-env=OTEL_EXPORTER_OTLP_ENDPOINT=http://otel:4318\"")
            && args.contains("\"--sidecar-env=OTEL_SERVICE_NAME=mcp\""),
        "{args}"
    );
    assert!(
        !helm_template(&[])
            .iter()
            .any(|d| d.to_string().contains("--sidecar-env=OTEL"))
    );
}

/// The approval bindings render from the values, each to the right role
/// and subject, and none by default.
#[test]
fn approval_bindings_render_from_the_values_and_only_from_them() {
    let approvals = |d: &Value| {
        let role = d["roleRef"]["name"].as_str().unwrap_or("");
        let kind = d["kind"].as_str().unwrap_or("");
        (kind.ends_with("Binding")
            && (role.ends_with("-sidecar-approvals")
                || role.ends_with("-approver")
                || role.contains("-notify-")))
            || (kind == "Role"
                && d["metadata"]["name"]
                    .as_str()
                    .unwrap_or("")
                    .contains("-notify-"))
    };
    assert!(
        !helm_template(&[]).iter().any(approvals),
        "no approval bindings by default"
    );
    let docs = helm_template(&[
        "approvals.sidecarServiceAccounts[0].namespace=vms",
        "approvals.sidecarServiceAccounts[0].name=kubevirt-mcp",
        "approvals.sidecarServiceAccounts[1].namespace=apps",
        "approvals.sidecarServiceAccounts[1].name=k8s-mcp",
        "approvals.approvers[0].kind=Group",
        "approvals.approvers[0].name=vm-admins",
        "approvals.approvers[0].namespace=vms",
        "approvals.approvers[1].kind=User",
        "approvals.approvers[1].name=ann@example.com",
        "approvals.notifySecrets[0].namespace=vms",
        "approvals.notifySecrets[0].name=approval-hook",
    ]);
    let bindings: Vec<&Value> = docs.iter().filter(|d| approvals(d)).collect();
    let find = |kind: &str, role: &str, ns: Option<&str>| -> &Value {
        let hits: Vec<&&Value> = bindings
            .iter()
            .filter(|d| {
                d["kind"] == kind
                    && d["roleRef"]["name"] == role
                    && d["metadata"]["namespace"].as_str() == ns
            })
            .collect();
        assert_eq!(
            hits.len(),
            1,
            "one {kind} of {role} in {ns:?}: {bindings:#?}"
        );
        hits[0]
    };
    for (ns, sa) in [("vms", "kubevirt-mcp"), ("apps", "k8s-mcp")] {
        let b = find("RoleBinding", "tollgate-sidecar-approvals", Some(ns));
        assert_eq!(b["roleRef"]["kind"], "ClusterRole");
        assert_eq!(
            b["subjects"],
            serde_json::json!([{"kind": "ServiceAccount", "name": sa, "namespace": ns}])
        );
    }
    let group = find("RoleBinding", "tollgate-approver", Some("vms"));
    assert_eq!(
        group["subjects"],
        serde_json::json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "Group", "name": "vm-admins"}])
    );
    let user = find("ClusterRoleBinding", "tollgate-approver", None);
    assert_eq!(user["roleRef"]["kind"], "ClusterRole");
    assert_eq!(
        user["subjects"],
        serde_json::json!([{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ann@example.com"}])
    );
    let role = docs
        .iter()
        .find(|d| d["kind"] == "Role" && d["metadata"]["name"] == "tollgate-notify-approval-hook")
        .expect("a Role for the notification Secret");
    assert_eq!(role["metadata"]["namespace"], "vms");
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["approval-hook"], "verbs": ["get"]}]),
        "get on exactly that Secret"
    );
    let rb = find("RoleBinding", "tollgate-notify-approval-hook", Some("vms"));
    assert_eq!(
        rb["subjects"],
        serde_json::json!([{"kind": "ServiceAccount", "name": "tollgate", "namespace": "tollgate-system"}])
    );
    assert_eq!(bindings.len(), 6, "{bindings:#?}");

    // A kind other than User or Group is refused by the schema.
    let bin = std::process::Command::new(format!("{}/scripts/cluster/build.sh", root()))
        .output()
        .unwrap();
    let helm = format!("{}/helm", String::from_utf8_lossy(&bin.stdout).trim());
    let out = std::process::Command::new(helm)
        .args([
            "template",
            "tollgate",
            &format!("{}/charts/tollgate", root()),
        ])
        .args(["--set", "approvals.approvers[0].kind=ServiceAccount"])
        .args(["--set", "approvals.approvers[0].name=x"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("kind"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
